"""Elastic layers of the Once-for-All supernet: one stored tensor, many smaller layers cut from it.

Every layer stores the largest choice and runs a part of it, following Once-for-All (Cai et al.,
ICLR 2020) and its reference implementation:

- **channels**: a layer with fewer channels uses the *leading* ones — the first output channels of
  a conv's weight, the first input channels (the input tensor says how many), the first entries
  of a BatchNorm's affine parameters and running statistics. ``ElasticInvertedResidual.
  reorder_by_importance`` moves the most important expanded channels to the front, so the
  smaller expand ratios keep the best ones.
- **kernel**: a depthwise conv stores the 7×7 kernel; the 5×5 is the centre 5×5 of it mapped by a
  learned 25×25 matrix, the 3×3 the centre 3×3 *of that 5×5* mapped by a learned 9×9 matrix
  (the 7→5→3 chain), each matrix shared by all channels of the layer and initialised to the
  identity (so at initialisation a small kernel is the centre crop of the large one).

Leaf layers read how many input channels they get from the input tensor and keep the number of
output channels (``active_out``) or the kernel size (``active_kernel``) they should produce as an
attribute, which the supernet sets for the active architecture. Nothing here knows about
architectures or search spaces.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ElasticBatchNorm2d",
    "ElasticConv2d",
    "ElasticConvBN",
    "ElasticDepthwiseConv",
    "ElasticInvertedResidual",
    "ElasticLinear",
    "ElasticPointwiseConv",
    "ElasticSqueezeExcite",
    "make_act",
]


def make_act(kind: str | None) -> nn.Module:
    """The PyTorch module of a NetSpec activation name (``nn.Identity`` for None)."""
    acts: dict[str | None, type[nn.Module]] = {
        None: nn.Identity,
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "hswish": nn.Hardswish,
        "hsigmoid": nn.Hardsigmoid,
        "sigmoid": nn.Sigmoid,
    }
    if kind not in acts:
        allowed = ", ".join(k for k in acts if k is not None)
        raise ValueError(f"unknown activation {kind!r}; allowed: {allowed}")
    return acts[kind]()


def _check_fits(what: str, asked: int, stored: int) -> None:
    # A request beyond the stored tensor would silently slice fewer channels than asked for.
    if not 1 <= asked <= stored:
        raise ValueError(f"{what}: {asked} channels requested, the layer stores {stored}")


class ElasticConv2d(nn.Module):
    """A dense conv with a fixed kernel that runs the leading input and output channels."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, bias: bool = False):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel, self.stride = kernel, stride
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel, kernel))
        self.bias: nn.Parameter | None = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.active_out = out_channels

    def weight_for(self, in_channels: int, out_channels: int) -> tuple[Tensor, Tensor | None]:
        """The (weight, bias) of the sub-layer with these channel counts (views, not copies)."""
        _check_fits("in_channels", in_channels, self.in_channels)
        _check_fits("out_channels", out_channels, self.out_channels)
        bias = None if self.bias is None else self.bias[:out_channels]
        return self.weight[:out_channels, :in_channels], bias

    def forward(self, x: Tensor, out_channels: int | None = None) -> Tensor:
        """The conv of ``x`` to ``out_channels`` (default ``active_out``) channels."""
        weight, bias = self.weight_for(x.shape[1], self.active_out if out_channels is None else out_channels)
        return F.conv2d(x, weight, bias, self.stride, self.kernel // 2)


class ElasticPointwiseConv(ElasticConv2d):
    """A 1×1 conv running the leading channels (expand, project, SE FCs, head conv)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel=1, stride=1, bias=bias)


class ElasticDepthwiseConv(nn.Module):
    """Depthwise conv with an elastic kernel (OFA's transform chain) and elastic channels.

    ``weight`` holds the largest kernel; ``transforms["7to5"]`` (25×25), ``transforms["5to3"]``
    (9×9) etc. map each centre crop in the chain from the largest kernel down, one pair per
    consecutive pair of ``kernels``.
    """

    def __init__(self, channels: int, kernels: Sequence[int], stride: int = 1):
        super().__init__()
        ks = sorted(set(kernels), reverse=True)
        if not ks or any(k < 1 or k % 2 == 0 for k in ks):
            raise ValueError(f"kernels: need odd positive sizes, got {list(kernels)}")
        self.channels, self.stride = channels, stride
        self.kernels: tuple[int, ...] = tuple(ks)  # largest first: the order of the chain
        self.weight = nn.Parameter(torch.empty(channels, 1, ks[0], ks[0]))
        # He init over one channel's k×k taps: kaiming_normal_ ignores groups and would use C·k²,
        # shrinking each depthwise output ~√C-fold until BatchNorm statistics catch up.
        nn.init.normal_(self.weight, 0.0, (2.0 / (ks[0] * ks[0])) ** 0.5)
        self.transforms = nn.ParameterDict(
            {f"{big}to{small}": nn.Parameter(torch.eye(small * small)) for big, small in pairwise(ks)}
        )
        self.active_kernel = ks[0]

    def kernel_weight(self, kernel: int, channels: int | None = None) -> Tensor:
        """The ``(channels, 1, kernel, kernel)`` weight of the sub-layer (leading channels)."""
        if kernel not in self.kernels:
            raise ValueError(f"kernel: {kernel} is not an option; allowed: {', '.join(map(str, self.kernels))}")
        c = self.channels if channels is None else channels
        _check_fits("channels", c, self.channels)
        # The transforms are shared across channels, so slicing channels first is exact and cheaper.
        w = self.weight[:c]
        for big, small in pairwise(self.kernels):
            if big == kernel:
                break
            start = (big - small) // 2
            crop = w[:, :, start : start + small, start : start + small]
            flat = F.linear(crop.reshape(-1, small * small), self.transforms[f"{big}to{small}"])
            w = flat.reshape(c, 1, small, small)
        return w

    def forward(self, x: Tensor) -> Tensor:
        """The depthwise conv of ``x`` (its channel count) with the active kernel, 'same' padding."""
        c = x.shape[1]
        k = self.active_kernel
        return F.conv2d(x, self.kernel_weight(k, c), None, self.stride, k // 2, 1, c)


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the leading channels: their affine parameters and running statistics.

    In training mode only the leading entries of the running statistics move (the slices are
    views, updated in place); ``momentum=None`` gives a cumulative average, as ``nn.BatchNorm2d``.
    """

    def forward(self, x: Tensor) -> Tensor:
        """``x`` normalised with the statistics and affine parameters of its leading channels."""
        c = x.shape[1]
        _check_fits("channels", c, self.num_features)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        mean = self.running_mean[:c] if self.running_mean is not None and track else None
        var = self.running_var[:c] if self.running_var is not None and track else None
        weight = self.weight[:c] if self.weight is not None else None
        bias = self.bias[:c] if self.bias is not None else None
        return F.batch_norm(x, mean, var, weight, bias, use_batch_stats, factor, self.eps)

    def sliced_state(self, channels: int) -> dict[str, Tensor]:
        """``nn.BatchNorm2d(channels)``'s state dict for the leading channels (views)."""
        _check_fits("channels", channels, self.num_features)
        state: dict[str, Tensor] = {}
        for name in ("weight", "bias", "running_mean", "running_var"):
            value = getattr(self, name)
            if value is not None:
                state[name] = value[:channels]
        if self.num_batches_tracked is not None:
            state["num_batches_tracked"] = self.num_batches_tracked
        return state

    def permute_(self, order: Tensor) -> None:
        """Reorder all channels in place (``order[i]`` is the old index of new channel ``i``)."""
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                value = getattr(self, name)
                if value is not None:
                    value.copy_(value[order])


class ElasticLinear(nn.Module):
    """A fully connected layer (+ activation) running the leading input and output features."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, act: str | None = None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias: nn.Parameter | None = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.normal_(self.weight, 0.0, 0.01)
        self.act = make_act(act)
        self.act_kind = act
        self.active_out = out_features

    def weight_for(self, in_features: int, out_features: int) -> tuple[Tensor, Tensor | None]:
        """The (weight, bias) of the sub-layer with these feature counts (views)."""
        _check_fits("in_features", in_features, self.in_features)
        _check_fits("out_features", out_features, self.out_features)
        bias = None if self.bias is None else self.bias[:out_features]
        return self.weight[:out_features, :in_features], bias

    def forward(self, x: Tensor) -> Tensor:
        """act(x W^T + b) for the flattened ``x`` and ``active_out`` outputs."""
        x = x.flatten(1)
        weight, bias = self.weight_for(x.shape[1], self.active_out)
        return self.act(F.linear(x, weight, bias))


class ElasticConvBN(nn.Module):
    """Elastic conv → elastic BatchNorm → activation (one NetSpec ``conv`` layer)."""

    def __init__(self, conv: ElasticConv2d | ElasticDepthwiseConv, act: str | None):
        super().__init__()
        self.conv = conv
        channels = conv.channels if isinstance(conv, ElasticDepthwiseConv) else conv.out_channels
        self.bn = ElasticBatchNorm2d(channels)
        self.act = make_act(act)
        self.act_kind = act

    def forward(self, x: Tensor) -> Tensor:
        """act(bn(conv(x))) over the active channels and kernel."""
        return self.act(self.bn(self.conv(x)))


class ElasticSqueezeExcite(nn.Module):
    """Squeeze-excite with elastic channels and an elastic reduced width (``active_reduced``).

    Global average pool → 1×1 conv to the reduced width + ReLU → 1×1 conv back + hsigmoid →
    channel-wise scale, as NetSpec's ``se`` layer.
    """

    def __init__(self, channels: int, reduced: int, gate: str = "hsigmoid"):
        super().__init__()
        self.fc1 = ElasticPointwiseConv(channels, reduced, bias=True)
        self.fc2 = ElasticPointwiseConv(reduced, channels, bias=True)
        self.relu = nn.ReLU()
        self.gate = make_act(gate)
        self.gate_kind = gate
        self.active_reduced = reduced

    def forward(self, x: Tensor) -> Tensor:
        """``x`` scaled per channel by its excitation."""
        s = F.adaptive_avg_pool2d(x, 1)
        s = self.relu(self.fc1(s, self.active_reduced))
        s = self.gate(self.fc2(s, x.shape[1]))
        return x * s


class ElasticInvertedResidual(nn.Module):
    """MobileNetV3 block with elastic kernel, expand ratio (expanded channels) and output width.

    Runs as ``search.builder.NetBuilder.inverted_residual`` describes: the 1×1 expand conv is
    skipped when the active expanded width equals the input channels, the residual is added when
    the stride is 1 and the input and output channel counts agree (both decided per forward, so
    any width the block runs at matches its NetSpec).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mid_channels: int,
        kernels: Sequence[int],
        stride: int,
        act: str,
        se_reduced: int | None,
        has_expand: bool = True,
    ):
        super().__init__()
        self.stride = stride
        self.expand: ElasticConvBN | None = (
            ElasticConvBN(ElasticPointwiseConv(in_channels, mid_channels), act) if has_expand else None
        )
        self.dw = ElasticConvBN(ElasticDepthwiseConv(mid_channels, kernels, stride), act)
        self.se: ElasticSqueezeExcite | None = ElasticSqueezeExcite(mid_channels, se_reduced) if se_reduced else None
        self.project = ElasticConvBN(ElasticPointwiseConv(mid_channels, out_channels), None)
        self.active_mid = mid_channels

    def set_active(self, kernel: int, mid: int, reduced: int | None, out: int) -> None:
        """Choose the sub-block: depthwise kernel, expanded width, SE width, output channels."""
        dw = cast(ElasticDepthwiseConv, self.dw.conv)
        if kernel not in dw.kernels:
            raise ValueError(f"kernel: {kernel} is not an option; allowed: {', '.join(map(str, dw.kernels))}")
        _check_fits("mid", mid, dw.channels)
        if self.expand is not None:
            cast(ElasticConv2d, self.expand.conv).active_out = mid
        dw.active_kernel = kernel
        if self.se is not None:
            if reduced is None:
                raise ValueError("reduced: this block has squeeze-excite, give its reduced width")
            _check_fits("reduced", reduced, self.se.fc1.out_channels)
            self.se.active_reduced = reduced
        cast(ElasticConv2d, self.project.conv).active_out = out
        self.active_mid = mid

    def forward(self, x: Tensor) -> Tensor:
        """The active sub-block applied to ``x``."""
        h = x
        if self.active_mid != x.shape[1]:
            if self.expand is None:
                raise RuntimeError(f"block has no expand conv but runs {self.active_mid} of {x.shape[1]} channels")
            h = self.expand(h)
        h = self.dw(h)
        if self.se is not None:
            h = self.se(h)
        h = self.project(h)
        if self.stride == 1 and h.shape[1] == x.shape[1]:
            h = h + x
        return h

    def reorder_by_importance(self) -> Tensor | None:
        """Sort the expanded channels by importance; returns the order (None without expand conv).

        Importance is Once-for-All's: the L1 norm of each expanded channel's slice of the project
        conv's weight. Every tensor indexed by those channels is permuted the same way (expand
        conv outputs + BN, depthwise + BN, SE fc1 inputs / fc2 outputs, project inputs), so the
        full block computes the same function; smaller expand ratios then keep the most
        important channels. The SE's reduced channels are sorted too, by the L1 norm of fc2's
        input slices. A block without an expand conv reads its input's channels directly, so
        reordering them would need the previous layer reordered too; it is left alone.
        """
        if self.expand is None:
            return None
        project, dw, expand = self.project.conv, self.dw.conv, self.expand.conv
        with torch.no_grad():
            importance = project.weight.abs().sum(dim=(0, 2, 3))
            order = torch.argsort(importance, descending=True, stable=True)
            project.weight.copy_(project.weight[:, order])
            dw.weight.copy_(dw.weight[order])
            self.dw.bn.permute_(order)
            expand.weight.copy_(expand.weight[order])
            self.expand.bn.permute_(order)
            if self.se is not None:
                fc1, fc2 = self.se.fc1, self.se.fc2
                b1, b2 = cast(Tensor, fc1.bias), cast(Tensor, fc2.bias)  # SE FCs are built with biases
                fc1.weight.copy_(fc1.weight[:, order])
                fc2.weight.copy_(fc2.weight[order])
                b2.copy_(b2[order])
                se_order = torch.argsort(fc2.weight.abs().sum(dim=(0, 2, 3)), descending=True, stable=True)
                fc2.weight.copy_(fc2.weight[:, se_order])
                fc1.weight.copy_(fc1.weight[se_order])
                b1.copy_(b1[se_order])
        return order
