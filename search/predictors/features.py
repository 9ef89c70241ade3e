"""Per-fragment features of a MobileNetV3 space and their vectorised sum over many architectures.

A latency predictor here is a function of per-block quantities summed over the blocks a network
runs (nn-Meter's kernel-level idea: predict kernels, add them up). ``FragmentFeatures`` computes
those quantities for one NetSpec fragment; ``FeatureTable`` arranges per-fragment vectors in the
``(R, W, S, D, K, E)`` layout of ``search.profiling.blocks.SpaceBlocks`` and sums them for a
batch of encodings with one gather (the same indexing as ``search.cost.table.SpaceCostTable``),
so 10,000 architectures take milliseconds.

ONNX Runtime fusion rules (checked on onnxruntime 1.32, x86-64 AVX2, ``ORT_ENABLE_ALL``, by
reading the graph ``SessionOptions.optimized_model_filepath`` writes; ``tests/search/
test_latency_predictors.py`` re-checks them on the installed version):

- BatchNorm is already folded into the conv bias by ``runtime.onnx_builder``.
- Every conv becomes an NCHWc ``Conv`` with its activation fused — Relu, Clip (relu6),
  HardSigmoid and HardSwish alike — and, inside a network, a residual ``Add`` is fused into the
  projection conv as its ``Sum`` input.
- Squeeze-excite is not fused: its ``Mul`` runs in NCHW, so ONNX Runtime adds two
  ``ReorderOutput`` and one ``ReorderInput`` around it (four extra passes over the block's
  expanded tensor).
- A block timed in isolation pays what it does not pay inside a network: a ``ReorderInput``
  of its input and a ``ReorderOutput`` of its output, and an unfused residual ``Add``. The
  features ``boundary_elems`` and ``add_elems`` let a model learn that difference.
- After ``Gemm`` (the classifier head) HardSwish is not fused (HardSigmoid + Mul).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from runtime.hardware.workload import layer_class
from runtime.netspec import Activation, Add, Conv, Linear, NetSpec, SqueezeExcite
from search.profiling.blocks import SpaceBlocks

# Activations ONNX Runtime fuses into a (NCHWc) Conv on this version; after a Gemm only Relu is.
CONV_FUSED_ACTS = frozenset({"relu", "relu6", "hswish", "hsigmoid", "sigmoid"})
GEMM_FUSED_ACTS = frozenset({"relu"})
NODES_PER_SE = 7  # GlobalAveragePool, 2 fused convs, Mul, 2 ReorderOutput, 1 ReorderInput

FEATURES: tuple[str, ...] = (
    "fragments",  # 1 per fragment: per-call fixed costs
    "macs_conv",  # dense convs (stem 3x3, 1x1 expand/project), in millions
    "macs_dw",  # depthwise convs
    "macs_linear",  # squeeze-excite FCs and Gemm layers
    "act_melems",  # activation elements read + written by the layers, in millions
    "weight_melems",  # weight elements, in millions
    "boundary_melems",  # fragment input + output elements (reorders paid only in isolation)
    "add_melems",  # residual-add elements (fused in a network, not in isolation)
    "se_melems",  # elements scaled by squeeze-excite (unfused Mul + reorders)
    "unfused_act_melems",  # activation elements ONNX Runtime does not fuse (in a network)
    "ort_nodes",  # nodes ONNX Runtime runs for the fragment inside a network
)


class MissingBlockError(LookupError):
    """A latency table lacks a block configuration the space needs; the message names key and table."""

    def __str__(self) -> str:  # LookupError would quote the message like a dict key
        return str(self.args[0]) if self.args else ""


def fragment_features(net: NetSpec) -> np.ndarray:
    """float64 ``(len(FEATURES),)``: the features of one fragment, in ``FEATURES`` order."""
    costs = net.cost_arrays()
    f = dict.fromkeys(FEATURES, 0.0)
    f["fragments"] = 1.0
    nodes = 0
    for i, layer in enumerate(net.layers):
        cin = net.input_shapes_of(i)[0][0]
        out_elems = float(np.prod(net.shapes[i]))
        macs = float(costs["macs"][i]) / 1e6
        if isinstance(layer, Conv):
            cls = layer_class(layer, cin)
            f["macs_dw" if cls == "depthwise" else "macs_conv"] += macs
            nodes += 1
            if layer.act is not None and layer.act not in CONV_FUSED_ACTS:
                f["unfused_act_melems"] += out_elems / 1e6
                nodes += 1
        elif isinstance(layer, Linear):
            f["macs_linear"] += macs
            nodes += 1
            if layer.act is not None and layer.act not in GEMM_FUSED_ACTS:
                f["unfused_act_melems"] += out_elems / 1e6
                nodes += 2  # HardSigmoid + Mul
        elif isinstance(layer, SqueezeExcite):
            f["macs_linear"] += macs
            f["se_melems"] += out_elems / 1e6
            nodes += NODES_PER_SE
        elif isinstance(layer, Add):
            f["add_melems"] += out_elems / 1e6
        elif isinstance(layer, Activation):
            f["unfused_act_melems"] += out_elems / 1e6
            nodes += 1
        else:  # pooling
            nodes += 1
    f["act_melems"] = float((costs["input_elems"] + costs["output_elems"]).sum()) / 1e6
    f["weight_melems"] = float(costs["weight_elems"].sum()) / 1e6
    f["boundary_melems"] = (float(np.prod(net.input_shape)) + float(np.prod(net.output_shape))) / 1e6
    f["ort_nodes"] = float(nodes)
    return np.array([f[name] for name in FEATURES], dtype=np.float64)


class FeatureTable:
    """Per-fragment vectors laid out per block slot, summed over architectures in one gather.

    ``values`` maps a fragment key to a ``(F,)`` vector; every key the space needs must be there,
    else ``MissingBlockError`` names the first missing key and ``source`` (the table's file).
    """

    def __init__(self, blocks: SpaceBlocks, values: Mapping[str, Sequence[float] | np.ndarray], source: str) -> None:
        self.blocks = blocks
        sp = blocks.space
        missing = [k for k in blocks.fragments if k not in values]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise MissingBlockError(
                f"{source}: no entry for block {missing[0]!r}{more}; the table has {len(values)} entries but "
                f"space {sp.name!r} needs {len(blocks.fragments)} — profile this space on this device "
                "(fleetnas profile --space ...) or use a table measured for it"
            )
        width = len(np.atleast_1d(np.asarray(next(iter(values.values())), dtype=np.float64))) if values else 1
        self.width = width
        shape = blocks.block_keys.shape
        flat_keys = blocks.block_keys.reshape(-1)
        self._flat = np.array([np.atleast_1d(np.asarray(values[k], dtype=np.float64)) for k in flat_keys]).reshape(
            -1, width
        )
        R, W = shape[0], shape[1]
        self.fixed = np.zeros((R, W, width))
        for r in range(R):
            for w in range(W):
                for key in blocks.fixed_keys[r][w]:
                    self.fixed[r, w] += np.atleast_1d(np.asarray(values[key], dtype=np.float64))
        self._shape = shape

    def sum(self, codes: np.ndarray, chunk: int = 16384) -> np.ndarray:
        """float64 ``(n, F)``: each encoding's vectors summed over the fragments it runs."""
        sp = self.blocks.space
        arr = sp.check_codes(codes)
        n = arr.shape[0]
        S, D, K, E = self._shape[2], self._shape[3], self._shape[4], self._shape[5]
        slot = np.arange(S * D)
        out = np.empty((n, self.width))
        for start in range(0, n, chunk):
            rows = arr[start : start + chunk]
            r, w = rows[:, 0], rows[:, 1]
            k = rows[:, sp.kernel_offset : sp.kernel_offset + S * D]
            e = rows[:, sp.expand_offset : sp.expand_offset + S * D]
            base = ((r * self._shape[1] + w) * (S * D))[:, None] + slot[None, :]
            flat = (base * K + k) * E + e
            active = sp.active_slots(rows).reshape(rows.shape[0], S * D)
            if self.width == 1:
                out[start : start + chunk, 0] = (self._flat[flat, 0] * active).sum(axis=1) + self.fixed[r, w, 0]
            else:
                out[start : start + chunk] = (self._flat[flat] * active[:, :, None]).sum(axis=1) + self.fixed[r, w]
        return out


def space_features(blocks: SpaceBlocks) -> dict[str, np.ndarray]:
    """``FEATURES`` vectors of every fragment of ``blocks``, by key."""
    return {key: fragment_features(f.net) for key, f in blocks.fragments.items()}


__all__ = [
    "CONV_FUSED_ACTS",
    "FEATURES",
    "GEMM_FUSED_ACTS",
    "FeatureTable",
    "MissingBlockError",
    "fragment_features",
    "space_features",
]
