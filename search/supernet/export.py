"""Export extracted subnets: ONNX files (TorchScript exporter) and NetSpec-named folded weights.

``export_onnx`` writes what a device runs: one self-contained ``.onnx`` file, BatchNorm folded into
the convolutions (the graph has no ``BatchNormalization`` node), input ``input`` ``(N, C, H, W)``,
output ``logits`` ``(N, classes)``, batch axis dynamic. It uses ``torch.onnx.export(...,
dynamo=False)``: the TorchScript exporter takes ~0.3 s where the dynamo one takes ~20 s on its first
call and writes external data by default.

``folded_weights`` gives an extracted subnet's weights under ``runtime.onnx_builder``'s names and
shapes, so ``runtime.onnx_builder.build_model(net, folded_weights(sub))`` — the torch-free graph
builder that bundles use — builds the same network with the trained weights.
"""

from __future__ import annotations

import copy
import json
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from runtime.netspec import Conv, Linear, SqueezeExcite
from runtime.onnx_builder import save_model
from search.supernet.model import ConvBNAct, LinearAct, MobileNetV3Supernet, NetSpecModule, SqueezeExciteModule

__all__ = ["export_onnx", "fold_batchnorm", "folded_weights"]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """(weight, bias) of ``conv`` followed by ``bn`` in eval mode, as one conv."""
    mean, var = cast(Tensor, bn.running_mean), cast(Tensor, bn.running_var)
    gamma = bn.weight if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    bias = beta - mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return conv.weight * scale[:, None, None, None], bias


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of ``module`` in eval mode with each ``ConvBNAct``'s BatchNorm folded into its conv.

    The copy's convs gain a bias and its BatchNorms become ``nn.Identity``; ``module`` is untouched.
    """
    folded = copy.deepcopy(module).eval()
    with torch.no_grad():
        for m in folded.modules():
            if isinstance(m, ConvBNAct) and isinstance(m.bn, nn.BatchNorm2d):
                old = m.conv
                weight, bias = _fold(old, m.bn)
                conv = nn.Conv2d(
                    old.in_channels,
                    old.out_channels,
                    cast(tuple[int, int], old.kernel_size),
                    cast(tuple[int, int], old.stride),
                    cast(tuple[int, int], old.padding),
                    cast(tuple[int, int], old.dilation),
                    old.groups,
                    bias=True,
                )
                conv.weight.copy_(weight)
                cast(Tensor, conv.bias).copy_(bias)
                m.conv, m.bn = conv, nn.Identity()
    return folded


def folded_weights(module: NetSpecModule) -> dict[str, np.ndarray]:
    """The subnet's float32 weights by ``runtime.onnx_builder.weight_shapes`` name, BatchNorm folded."""
    if not isinstance(module, NetSpecModule):
        raise TypeError(f"module: need a NetSpecModule (from MobileNetV3Supernet.extract), got {type(module).__name__}")
    out: dict[str, np.ndarray] = {}

    def put(name: str, value: Tensor) -> None:
        out[name] = value.detach().cpu().numpy().astype(np.float32, copy=True)

    with torch.no_grad():
        for key, layer in zip(module.keys, module.net.layers, strict=True):
            sub = module.get_submodule(key)
            if isinstance(layer, Conv):
                conv_bn = cast(ConvBNAct, sub)
                if isinstance(conv_bn.bn, nn.BatchNorm2d):
                    weight, bias = _fold(conv_bn.conv, conv_bn.bn)
                    put(f"{key}.weight", weight)
                    put(f"{key}.bias", bias)
                else:
                    put(f"{key}.weight", conv_bn.conv.weight)
                    if conv_bn.conv.bias is not None:
                        put(f"{key}.bias", conv_bn.conv.bias)
            elif isinstance(layer, Linear):
                linear = cast(LinearAct, sub).linear
                put(f"{key}.weight", linear.weight)
                if linear.bias is not None:
                    put(f"{key}.bias", linear.bias)
            elif isinstance(layer, SqueezeExcite):
                se = cast(SqueezeExciteModule, sub)
                for fc in ("fc1", "fc2"):
                    conv = cast(nn.Conv2d, getattr(se, fc))
                    put(f"{key}.{fc}.weight", conv.weight)
                    put(f"{key}.{fc}.bias", cast(Tensor, conv.bias))
    return out


def _drop_identities(model: onnx.ModelProto) -> None:
    """Remove ``Identity`` nodes in place, rewiring their readers to the node's input.

    The exporter de-duplicates equal initializers (e.g. the all-zero folded biases of an
    untrained subnet) into one tensor plus an Identity per copy; a deployed graph needs neither.
    """
    graph = model.graph
    outputs = {o.name for o in graph.output}
    alias: dict[str, str] = {}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            source = node.input[0]
            alias[node.output[0]] = alias.get(source, source)
        else:
            keep.append(node)
    if not alias:
        return
    for node in keep:
        for k, name in enumerate(node.input):
            if name in alias:
                node.input[k] = alias[name]
    del graph.node[:]
    graph.node.extend(keep)


def _dummy_input(input_shape: Sequence[int]) -> Tensor:
    shape = tuple(input_shape)
    if len(shape) not in (3, 4) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ValueError(f"input_shape: need (C, H, W) or (N, C, H, W) positive integers, got {input_shape!r}")
    if len(shape) == 3:
        shape = (1, *shape)
    # Deterministic and non-zero, so a trace-time branch on values (there should be none) is visible.
    return torch.linspace(-1.0, 1.0, int(np.prod(shape))).reshape(shape)


def export_onnx(module: nn.Module, input_shape: Sequence[int], path: str | Path, *, opset: int = 17) -> Path:
    """Write ``module`` as one ONNX file at ``path`` (atomically); returns the path.

    ``module`` is an extracted subnet (a supernet exports its active subnet), exported in eval
    mode with BatchNorm folded. ``input_shape`` is ``(C, H, W)`` or ``(N, C, H, W)``; the batch
    axis is dynamic either way. A ``NetSpecModule``'s NetSpec is stored in the model's metadata
    (``fleetnas.netspec``), as ``runtime.onnx_builder`` does. Raises ValueError if the graph
    still holds a ``BatchNormalization`` node (a BatchNorm not after a conv).
    """
    if isinstance(module, MobileNetV3Supernet):
        module = module.extract()
    dummy = _dummy_input(input_shape)
    if isinstance(module, NetSpecModule) and tuple(dummy.shape[1:]) != module.net.input_shape:
        # Tracing skips the module's own shape check, and the stored NetSpec would not match.
        want = ", ".join(map(str, module.net.input_shape))
        raise ValueError(f"input_shape: {tuple(input_shape)} does not match the subnet's input ({want})")
    folded = fold_batchnorm(module)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The TorchScript exporter is chosen on purpose (fast, single file): its deprecation
        # notices, the second raised from inside the exporter itself, are not actionable here.
        for message in (r".*legacy TorchScript-based ONNX export", r"The feature will be removed"):
            warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
        # Exported to a scratch file, checked, then written atomically to ``path``.
        scratch = Path(tmp) / "model.onnx"
        torch.onnx.export(
            folded,
            (dummy,),
            scratch,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
            training=torch.onnx.TrainingMode.EVAL,
        )
        model = onnx.load(scratch)
    norms = [node.name or node.output[0] for node in model.graph.node if node.op_type == "BatchNormalization"]
    if norms:
        raise ValueError(f"module: BatchNormalization left in the exported graph at {norms}; only conv+BN folds")
    _drop_identities(model)
    onnx.checker.check_model(model)
    if isinstance(module, NetSpecModule):
        netspec = json.dumps(module.net.to_json(), separators=(",", ":"))
        onnx.helper.set_model_props(model, {"fleetnas.netspec": netspec})
    return save_model(model, path)
