"""Peak activation memory under static memory planning, and the critical path of a NetSpec.

Peak memory follows MCUNet's definition: at batch 1, for each execution step the sum of the
tensors live at that step — the step's inputs and output, plus every tensor produced earlier and
still needed later (a residual input waiting for its add) — maximised over steps. Weights are
excluded (they live in flash / a separate arena).
"""

from __future__ import annotations

import numpy as np

from runtime.netspec import DTYPE_BYTES, NetSpec


def tensor_elems(net: NetSpec) -> np.ndarray:
    """Elements of every tensor: index 0 is the network input, i + 1 is layer i's output."""
    shapes = [net.input_shape, *net.shapes]
    return np.array([c * h * w for c, h, w in shapes], dtype=np.int64)


def live_bytes_per_step(net: NetSpec, dtype: str | None = None) -> np.ndarray:
    """Bytes of live activations at each execution step (one entry per layer)."""
    n = len(net.layers)
    sizes = tensor_elems(net) * DTYPE_BYTES[dtype or net.dtype]
    first = np.arange(-1, n)  # tensor t is produced at step t - 1 (the input "at" step -1)
    first[0] = 0  # ...but it only occupies memory from the first step on
    last = net.last_use()
    # difference array: +size at the first step a tensor is live, -size after its last
    delta = np.zeros(n + 1, dtype=np.int64)
    np.add.at(delta, first, sizes)
    np.add.at(delta, last + 1, -sizes)
    return np.cumsum(delta)[:n]


def peak_activation_bytes(net: NetSpec, dtype: str | None = None) -> int:
    """Peak live activation bytes over the execution (MCUNet's peak SRAM, weights excluded)."""
    return int(live_bytes_per_step(net, dtype).max())


def critical_path(net: NetSpec, weights: np.ndarray | None = None) -> float:
    """Length of the longest input→output path: layer count, or the sum of ``weights`` along it."""
    w = np.ones(len(net.layers)) if weights is None else np.asarray(weights, dtype=float)
    longest = np.zeros(len(net.layers))
    for i, ins in enumerate(net.layer_inputs):
        before = max((longest[j] for j in ins if j >= 0), default=0.0)
        longest[i] = before + w[i]
    return float(longest[-1])
