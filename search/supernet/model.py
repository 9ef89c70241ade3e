"""The Once-for-All weight-sharing supernet over ``MobileNetV3Space``, and plain subnets cut from it.

``MobileNetV3Supernet`` holds one network with the largest choices of every gene — the deepest
stages, 7×7 kernels (or the space's largest), the largest expand ratio and the widest width —
built from the elastic layers of ``search.supernet.elastic``. ``set_active(arch)`` picks a subnet;
``forward`` runs it:

- **elastic depth**: stage ``s`` runs its first ``arch["depths"][s]`` blocks;
- **elastic kernel / expand / width**: each layer runs its leading channels and the kernel the
  arch gives it (see ``elastic``);
- **elastic resolution**: the network is fully convolutional, so the *caller* feeds the input at
  the arch's resolution (``resize_input(x, arch["resolution"])``); ``forward`` runs whatever
  size it gets.

``extract(arch)`` returns a ``NetSpecModule``: a plain PyTorch module (Conv2d, BatchNorm2d,
Linear, Hardswish…; no elastic machinery) built from ``space.to_netspec(arch, alignment)``, one
submodule per NetSpec layer under the layer's name (``stage1.block0.dw`` holds ``conv``, ``bn`` and
``act``), holding *copies* of exactly the weights the subnet uses. Its parameter count is the
NetSpec's ``params`` total, so the cost models count the network that is deployed.

The supernet's modules carry the same names as the NetSpec layers (``stem``, ``first.dw``,
``stage2.block3.se``, ``head.conv``, ``head.hidden``, ``head.classifier``), so extraction walks
the NetSpec and copies from the supernet module of the same name; a NetSpec layer the supernet
cannot supply raises instead of being guessed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from runtime.netspec import Activation, Add, Conv, Layer, Linear, NetSpec, Pool, SqueezeExcite
from runtime.onnx_builder import layer_key
from search.arch import Arch
from search.space.base import SpaceError
from search.space.mobilenetv3 import MobileNetV3Space
from search.supernet.elastic import (
    ElasticConv2d,
    ElasticConvBN,
    ElasticDepthwiseConv,
    ElasticInvertedResidual,
    ElasticLinear,
    ElasticPointwiseConv,
    ElasticSqueezeExcite,
    make_act,
)

__all__ = [
    "ConvBNAct",
    "LinearAct",
    "MobileNetV3Supernet",
    "NetSpecModule",
    "SqueezeExciteModule",
    "recalibrate_bn",
    "resize_input",
]


# ---- plain layers of an extracted subnet ------------------------------------------------------
def _to_4d(x: Tensor) -> Tensor:
    # A Linear layer's (N, F) output is NetSpec's (F, 1, 1) vector; spatial ops need it back.
    return x[:, :, None, None] if x.dim() == 2 else x


class ConvBNAct(nn.Module):
    """NetSpec ``conv``: ``conv`` (nn.Conv2d) → ``bn`` (nn.BatchNorm2d or Identity) → ``act``."""

    def __init__(self, layer: Conv, in_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            layer.out_channels,
            layer.kernel,
            layer.stride,
            layer.pad,
            groups=layer.groups,
            bias=layer.bias,
        )
        self.bn: nn.Module = nn.BatchNorm2d(layer.out_channels) if layer.bn else nn.Identity()
        self.act = make_act(layer.act)
        self.act_kind = layer.act

    def forward(self, x: Tensor) -> Tensor:
        """act(bn(conv(x)))."""
        return cast(Tensor, self.act(self.bn(self.conv(_to_4d(x)))))


class LinearAct(nn.Module):
    """NetSpec ``linear``: flatten → ``linear`` (nn.Linear) → ``act``; output ``(N, F)``."""

    def __init__(self, layer: Linear, in_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, layer.out_channels, bias=layer.bias)
        self.act = make_act(layer.act)
        self.act_kind = layer.act

    def forward(self, x: Tensor) -> Tensor:
        """act(linear(flatten(x)))."""
        return cast(Tensor, self.act(self.linear(x.flatten(1))))


class SqueezeExciteModule(nn.Module):
    """NetSpec ``se``: global average pool → ``fc1`` + ReLU → ``fc2`` + gate → channel-wise scale.

    The FCs are 1×1 convs with biases, shaped as ``runtime.onnx_builder`` names them
    (``{key}.fc1.weight`` is ``(reduced, C, 1, 1)``).
    """

    def __init__(self, layer: SqueezeExcite, channels: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, layer.reduced, 1, bias=True)
        self.fc2 = nn.Conv2d(layer.reduced, channels, 1, bias=True)
        self.relu = nn.ReLU()
        self.gate = make_act(layer.gate)
        self.gate_kind = layer.gate

    def forward(self, x: Tensor) -> Tensor:
        """``x`` scaled per channel by its excitation."""
        x = _to_4d(x)
        s = F.adaptive_avg_pool2d(x, 1)
        s = self.gate(self.fc2(self.relu(self.fc1(s))))
        return x * s


class _PoolModule(nn.Module):
    """NetSpec ``pool``: global or windowed average/max pooling with NetSpec's padding rules."""

    def __init__(self, layer: Pool):
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        """The pooled ``x``."""
        x, p = _to_4d(x), self.layer
        if p.global_pool:
            return F.adaptive_avg_pool2d(x, 1) if p.kind == "avg" else F.adaptive_max_pool2d(x, 1)
        k, s, pad = p.kernel, p.stride or p.kernel, p.padding
        if pad <= k // 2:  # what PyTorch's pooling accepts
            if p.kind == "max":
                return F.max_pool2d(x, k, s, pad)
            return F.avg_pool2d(x, k, s, pad, count_include_pad=p.count_include_pad)
        # NetSpec allows pads up to kernel - 1: pad by hand (−∞ for max, zeros + a count for avg).
        if p.kind == "max":
            return F.max_pool2d(F.pad(x, (pad,) * 4, value=-math.inf), k, s)
        total = F.avg_pool2d(F.pad(x, (pad,) * 4), k, s) * (k * k)
        if p.count_include_pad:
            return total / (k * k)
        ones = F.pad(torch.ones_like(x[:1, :1]), (pad,) * 4)
        return total / (F.avg_pool2d(ones, k, s) * (k * k))


class _AddModule(nn.Module):
    """NetSpec ``add``: element-wise sum (mixed 2-D/4-D inputs are lifted to 4-D first)."""

    def forward(self, *xs: Tensor) -> Tensor:
        """The sum of the inputs."""
        if any(x.dim() == 4 for x in xs):
            xs = tuple(_to_4d(x) for x in xs)
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class NetSpecModule(nn.Module):
    """A plain PyTorch network built from a NetSpec, one submodule per layer, named by the layer.

    Layer ``stage0.block1.expand`` is the submodule at that dotted path (so its weights are
    ``stage0.block1.expand.conv.weight`` etc.); an unnamed layer gets ``runtime.onnx_builder``'s
    key ``f"{op}{index}"``. ``forward`` follows the NetSpec's DAG; a final ``(N, C, 1, 1)`` output
    is flattened to ``(N, C)`` as in ``runtime.onnx_builder``. Layers are looked up by name on
    every call, so a tool that swaps a submodule (fusion, quantisation) is honoured.
    """

    def __init__(self, net: NetSpec):
        super().__init__()
        self.net = net
        self.keys: tuple[str, ...] = tuple(layer_key(net, i) for i in range(len(net.layers)))
        containers: set[str] = {""}
        layers: set[str] = set()
        for i, (key, layer) in enumerate(zip(self.keys, net.layers, strict=True)):
            parts = key.split(".")
            where = f"layers[{i}] ({key!r})"
            if key in layers or key in containers or any(not part for part in parts):
                raise ValueError(f"{where}: layer names must be unique, non-empty dotted paths")
            parent: nn.Module = self
            for depth in range(1, len(parts)):
                path = ".".join(parts[:depth])
                if path in layers:
                    raise ValueError(f"{where}: {path!r} is a layer, it cannot also contain layers")
                if path not in containers:
                    self._register(parent, parts[depth - 1], nn.Module(), where)
                    containers.add(path)
                parent = parent.get_submodule(parts[depth - 1])
            self._register(parent, parts[-1], self._make(layer, net.input_shapes_of(i)[0]), where)
            layers.add(key)
        # Which layer reads each tensor last (index 0 = the input): lets forward drop dead ones.
        self._last_use: tuple[int, ...] = tuple(int(v) for v in net.last_use())

    @staticmethod
    def _register(parent: nn.Module, name: str, module: nn.Module, where: str) -> None:
        try:
            parent.add_module(name, module)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{where}: cannot be a module name ({exc})") from None

    @staticmethod
    def _make(layer: Layer, in_shape: tuple[int, int, int]) -> nn.Module:
        c, h, w = in_shape
        if isinstance(layer, Conv):
            return ConvBNAct(layer, c)
        if isinstance(layer, Linear):
            return LinearAct(layer, c * h * w)  # NetSpec flattens a spatial input
        if isinstance(layer, SqueezeExcite):
            return SqueezeExciteModule(layer, c)
        if isinstance(layer, Pool):
            return _PoolModule(layer)
        if isinstance(layer, Activation):
            return make_act(layer.kind)
        if isinstance(layer, Add):
            return _AddModule()
        raise ValueError(f"layer op {layer.op!r} has no PyTorch module")  # pragma: no cover - closed set

    def forward(self, x: Tensor) -> Tensor:
        """The network's output for the NCHW batch ``x``."""
        # Under tracing (ONNX export) shapes are traced values; the tracer checks them itself.
        if not torch.jit.is_tracing() and (x.dim() != 4 or tuple(x.shape[1:]) != self.net.input_shape):
            want = ", ".join(map(str, self.net.input_shape))
            raise ValueError(f"x: shape {tuple(x.shape)} does not match (N, {want})")
        values: list[Tensor | None] = [x]  # index 0 = input, i + 1 = layer i's output
        for i, key in enumerate(self.keys):
            ins = [cast(Tensor, values[j + 1]) for j in self.net.layer_inputs[i]]
            values.append(self.get_submodule(key)(*ins))
            for j in self.net.layer_inputs[i]:
                if self._last_use[j + 1] == i:
                    values[j + 1] = None
        out = cast(Tensor, values[-1])
        if out.dim() == 4 and self.net.output_shape[1:] == (1, 1):
            out = out.flatten(1)
        return out


# ---- the supernet -------------------------------------------------------------------------------
class MobileNetV3Supernet(nn.Module):
    """Once-for-All supernet over a ``MobileNetV3Space``: every subnet shares one set of weights.

    ``alignment`` is the channel rounding of ``space.to_netspec`` (``make_divisible``); the
    supernet and the NetSpecs it is compared with must use the same one. Every width, kernel,
    expand ratio, depth and resolution of the space is supported. After construction the
    largest subnet (``max_arch()``) is active.
    """

    def __init__(self, space: MobileNetV3Space, alignment: int = 8):
        super().__init__()
        if not isinstance(space, MobileNetV3Space):
            raise TypeError(f"space: need a MobileNetV3Space, got {type(space).__name__}")
        if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment < 1:
            raise ValueError(f"alignment: need a positive integer, got {alignment!r}")
        self.space, self.alignment = space, alignment
        c = space.config
        per_width = [space.channels(w, alignment) for w in c.widths]
        top = space.channels(max(c.widths), alignment)
        self.stem = ElasticConvBN(ElasticConv2d(c.in_channels, top["stem"], 3, c.stem_stride), "hswish")
        # The fixed first block expands by 1 (mid = its input), so it never has an expand conv.
        self.first: ElasticInvertedResidual | None = None
        if top["first"]:
            self.first = ElasticInvertedResidual(top["stem"], top["first"], top["stem"], (3,), 1, "relu", None, False)
        ins = [ch["first"] or ch["stem"] for ch in per_width]  # each width's input to the current block
        cin = top["first"] or top["stem"]
        for s in range(space.num_stages):
            stage = nn.ModuleDict()
            cout = top["stages"][s]
            for j in range(space.max_depth):
                mid, reduced = space.block_mid(cin, max(c.expands), alignment)
                # NetBuilder skips the expand conv when mid == cin; keep one if any choice needs it.
                block_ins = ins if j == 0 else [ch["stages"][s] for ch in per_width]
                has_expand = any(space.block_mid(x, e, alignment)[0] != x for x in block_ins for e in c.expands)
                stage[f"block{j}"] = ElasticInvertedResidual(
                    cin,
                    cout,
                    mid,
                    c.kernels,
                    c.stage_strides[s] if j == 0 else 1,
                    c.stage_acts[s],
                    reduced if c.stage_se[s] else None,
                    has_expand,
                )
                cin = cout
            ins = [ch["stages"][s] for ch in per_width]
            self.add_module(f"stage{s}", stage)
        self.head = nn.ModuleDict(
            {
                "conv": ElasticConvBN(ElasticPointwiseConv(cin, top["head"]), "hswish"),
                "hidden": ElasticLinear(top["head"], top["feature"], act="hswish"),
                "classifier": ElasticLinear(top["feature"], c.num_classes),
            }
        )
        self._active = self.max_arch()
        self.set_active(self._active)

    # ---- choosing the subnet ------------------------------------------------------------------
    @property
    def active_arch(self) -> Arch:
        """The architecture ``forward`` runs."""
        return self._active

    def stage(self, s: int) -> nn.ModuleDict:
        """Stage ``s``'s blocks (``block0`` … ``block{D-1}``)."""
        return cast(nn.ModuleDict, self.get_submodule(f"stage{s}"))

    def set_active(self, arch: Arch) -> None:
        """Make ``arch`` the subnet ``forward`` runs; raises SpaceError if it is not in the space."""
        if not isinstance(arch, Arch):
            raise SpaceError(f"arch: need an Arch of space {self.space.name!r}, got {type(arch).__name__}")
        self.space.encode(arch)  # validates every field against the options
        c = self.space.config
        ch = self.space.channels(arch["width"], self.alignment)
        cast(ElasticConv2d, self.stem.conv).active_out = ch["stem"]
        cin = ch["stem"]
        if self.first is not None:
            self.first.set_active(3, cin, None, ch["first"])
            cin = ch["first"]
        for s in range(self.space.num_stages):
            blocks = self.stage(s)
            for j in range(arch["depths"][s]):
                mid, reduced = self.space.block_mid(cin, arch["expands"][s][j], self.alignment)
                block = cast(ElasticInvertedResidual, blocks[f"block{j}"])
                block.set_active(arch["kernels"][s][j], mid, reduced if c.stage_se[s] else None, ch["stages"][s])
                cin = ch["stages"][s]
        cast(ElasticConv2d, self.head["conv"].conv).active_out = ch["head"]
        cast(ElasticLinear, self.head["hidden"]).active_out = ch["feature"]
        self._active = arch

    def sample_active(self, rng: np.random.Generator) -> Arch:
        """Activate a uniformly sampled architecture (each gene uniform); returns it."""
        arch = self.space.decode(self.space.sample(1, rng)[0])
        self.set_active(arch)
        return arch

    def _extreme(self, pick: Callable[[Sequence[Any]], Any]) -> Arch:
        c, n = self.space.config, self.space.num_stages
        d = pick(c.depths)
        return Arch.create(
            self.space.name,
            resolution=pick(c.resolutions),
            width=pick(c.widths),
            depths=[d] * n,
            kernels=[[pick(c.kernels)] * d for _ in range(n)],
            expands=[[pick(c.expands)] * d for _ in range(n)],
        )

    def max_arch(self) -> Arch:
        """The largest subnet: top resolution and width, deepest stages, largest kernels and expands."""
        return self._extreme(max)

    def min_arch(self) -> Arch:
        """The smallest subnet: lowest resolution and width, shallowest stages, smallest choices."""
        return self._extreme(min)

    def netspec(self, arch: Arch | None = None) -> NetSpec:
        """The NetSpec of ``arch`` (default: the active one) at this supernet's alignment."""
        return self.space.to_netspec(self._active if arch is None else arch, self.alignment)

    # ---- running --------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes)`` of the active subnet for ``x`` (fed at the arch's resolution)."""
        c = self.space.config
        if x.dim() != 4 or x.shape[1] != c.in_channels:
            # The stem slices its input channels, so a wrong channel count would run silently.
            raise ValueError(f"x: need (N, {c.in_channels}, H, W), got {tuple(x.shape)}")
        x = self.stem(x)
        if self.first is not None:
            x = self.first(x)
        for s, depth in enumerate(self._active["depths"]):
            blocks = self.stage(s)
            for j in range(depth):
                x = blocks[f"block{j}"](x)
        x = self.head["conv"](x)
        x = F.adaptive_avg_pool2d(x, 1)
        return cast(Tensor, self.head["classifier"](self.head["hidden"](x)))

    def reorder_by_importance(self) -> int:
        """Sort every block's expanded channels by importance (OFA); returns how many blocks changed.

        The largest subnet computes the same function afterwards; smaller expand ratios then use
        the most important channels. Call it between training phases (as Once-for-All does before
        training each new expand ratio) and rebuild the optimizer: its state is not permuted.
        """
        count = 0
        for s in range(self.space.num_stages):
            for block in self.stage(s).values():
                if cast(ElasticInvertedResidual, block).reorder_by_importance() is not None:
                    count += 1
        return count

    sort_channels = reorder_by_importance

    # ---- extraction -----------------------------------------------------------------------------
    def extract(self, arch: Arch | None = None) -> NetSpecModule:
        """A standalone plain module of ``arch`` (default: the active one) with copies of its weights.

        The module is built from ``self.netspec(arch)``, layer for layer, and is in the supernet's
        train/eval mode. Kernel transforms are applied and channels sliced at copy time.
        """
        net = self.netspec(arch)  # validates ``arch``
        sub = NetSpecModule(net)
        with torch.no_grad():
            for i, layer in enumerate(net.layers):
                if isinstance(layer, Pool | Add | Activation):
                    continue  # no weights
                key = layer_key(net, i)
                try:
                    source = self.get_submodule(key)
                except AttributeError:
                    raise RuntimeError(f"NetSpec layer {key!r} has no counterpart in the supernet") from None
                _copy_layer(source, sub.get_submodule(key), key)
        sub.train(self.training)
        return sub


def _copy_layer(source: nn.Module, target: nn.Module, key: str) -> None:
    """Copy the part of an elastic layer that the plain ``target`` layer's shapes ask for."""

    def mismatch(why: str) -> RuntimeError:
        return RuntimeError(f"layer {key!r}: the supernet's {type(source).__name__} cannot supply it ({why})")

    if isinstance(source, ElasticConvBN) and isinstance(target, ConvBNAct):
        conv = target.conv
        out, in_per_group, k, _ = conv.weight.shape
        if source.act_kind != target.act_kind:
            raise mismatch(f"activation {source.act_kind} vs {target.act_kind}")
        if conv.stride != (source.conv.stride, source.conv.stride) or conv.bias is not None:
            raise mismatch(f"stride {conv.stride} / bias {conv.bias is not None}")
        if isinstance(source.conv, ElasticDepthwiseConv):
            if conv.groups != out or in_per_group != 1:
                raise mismatch(f"a depthwise conv cannot make groups={conv.groups}")
            conv.weight.copy_(source.conv.kernel_weight(k, out))
        else:
            if conv.groups != 1 or k != source.conv.kernel:
                raise mismatch(f"groups={conv.groups}, kernel {k} vs {source.conv.kernel}")
            conv.weight.copy_(source.conv.weight_for(in_per_group, out)[0])
        if not isinstance(target.bn, nn.BatchNorm2d):
            raise mismatch("the NetSpec conv has no BatchNorm")
        target.bn.load_state_dict(source.bn.sliced_state(out))
        target.bn.eps, target.bn.momentum = source.bn.eps, source.bn.momentum
    elif isinstance(source, ElasticSqueezeExcite) and isinstance(target, SqueezeExciteModule):
        if source.gate_kind != target.gate_kind:
            raise mismatch(f"gate {source.gate_kind} vs {target.gate_kind}")
        reduced, channels = target.fc1.weight.shape[:2]
        pairs = ((source.fc1, target.fc1, channels, reduced), (source.fc2, target.fc2, reduced, channels))
        for fc_src, fc_dst, cin, cout in pairs:
            weight, bias = fc_src.weight_for(cin, cout)
            fc_dst.weight.copy_(weight)
            cast(Tensor, fc_dst.bias).copy_(cast(Tensor, bias))
    elif isinstance(source, ElasticLinear) and isinstance(target, LinearAct):
        if source.act_kind != target.act_kind:
            raise mismatch(f"activation {source.act_kind} vs {target.act_kind}")
        out, fin = target.linear.weight.shape
        weight, bias = source.weight_for(fin, out)
        if (bias is None) != (target.linear.bias is None):
            raise mismatch("bias")
        target.linear.weight.copy_(weight)
        if bias is not None:
            cast(Tensor, target.linear.bias).copy_(bias)
    else:
        raise mismatch(f"NetSpec wants a {type(target).__name__}")


# ---- helpers ------------------------------------------------------------------------------------
def resize_input(x: Tensor, resolution: int) -> Tensor:
    """``x`` (NCHW) resized to ``resolution``² by bilinear interpolation (``x`` itself if it fits)."""
    if x.dim() != 4:
        raise ValueError(f"x: need an NCHW batch, got shape {tuple(x.shape)}")
    if not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution: need a positive integer, got {resolution!r}")
    if x.shape[2] == resolution and x.shape[3] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


def recalibrate_bn(
    module: nn.Module,
    batches: Iterable[Tensor | Sequence[Tensor]],
    num_images: int = 2000,
    resolution: int | None = None,
) -> int:
    """Recompute every BatchNorm's running statistics from training images; returns images used.

    Weights change in no way a gradient could: the statistics are reset, then the module runs in
    train mode under ``torch.no_grad`` over ``batches`` (tensors, or ``(images, labels)`` pairs)
    until ``num_images`` images were seen (the last batch is cut), with ``momentum=None`` — a
    cumulative average in which every batch counts equally, so use equal batches. Once-for-All
    does this with 2,000 images per subnet, since the supernet's statistics belong to no single
    subnet. ``resolution`` resizes each batch first (``resize_input``). The module's mode and
    momenta are restored afterwards. On a supernet every channel's statistics are reset and only
    the active subnet's are recomputed, so recalibrate an ``extract``-ed subnet, or recalibrate
    the supernet right before extracting or evaluating that one subnet.
    """
    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images: need a positive integer, got {num_images!r}")
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    was_training = module.training
    momenta = [bn.momentum for bn in norms]
    seen = 0
    try:
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None
        module.train()
        with torch.no_grad():
            for batch in batches:
                x = batch if isinstance(batch, Tensor) else batch[0]
                x = x[: num_images - seen]
                if resolution is not None:
                    x = resize_input(x, resolution)
                module(x)
                seen += int(x.shape[0])
                if seen >= num_images:
                    break
    finally:
        for bn, momentum in zip(norms, momenta, strict=True):
            bn.momentum = momentum
        module.train(was_training)
    if seen == 0:
        raise ValueError("batches: no images to recalibrate BatchNorm with")
    return seen
