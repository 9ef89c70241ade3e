"""The machine's roofline as ONNX Runtime sees it: peak FLOP/s from a GEMM, bandwidth from a large copy.

Both are measured through ONNX Runtime with the runtime's session options (not with numpy's BLAS
or a STREAM binary), because the predictors model what ONNX Runtime attains:

- peak: ``MatMul`` of an ``(n, n)`` input by an ``(n, n)`` constant (prepacked by ONNX Runtime),
  ``2 n^3`` FLOPs per run; the best of the robust medians over a few sizes;
- bandwidth: ``Add`` of a constant to a large tensor (read once, written once: 2 x its bytes per
  run). The constant is 1, not 0, because ONNX Runtime's NoopElimination removes ``x + 0``.
  The tensor is several times the last-level cache, so the copy streams from DRAM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.engine import ThreadingConfig
from search.profiling.timing import create_session, prepare, robust_stats, time_interleaved


@dataclass(frozen=True)
class Roofline:
    """Measured peak compute (GFLOP/s, fp32) and sustained copy bandwidth (GB/s, read + write)."""

    peak_gflops: float
    bandwidth_gbps: float
    gemm_sizes: tuple[int, ...]
    copy_mbytes: float

    def to_json(self) -> dict[str, Any]:
        """JSON form (the two figures the profile stores plus how they were measured)."""
        return {
            "peak_gflops": self.peak_gflops,
            "bandwidth_gbps": self.bandwidth_gbps,
            "gemm_sizes": list(self.gemm_sizes),
            "copy_mbytes": self.copy_mbytes,
        }


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any], initializers: list[Any]) -> Any:
    from onnx import helper

    graph = helper.make_graph(nodes, "roofline", inputs, outputs, initializer=initializers)
    opsets = [helper.make_opsetid("", 17)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))


def gemm_model(n: int, seed: int = 0) -> Any:
    """An ONNX model computing ``input (n, n) @ W (n, n)`` with a constant W."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).standard_normal((n, n)).astype(np.float32)
    return _model(
        [helper.make_node("MatMul", ["input", "W"], ["output"])],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(w, "W")],
    )


def copy_model(elems: int) -> Any:
    """An ONNX model computing ``input + 1`` over a 1-D tensor of ``elems`` floats."""
    from onnx import TensorProto, helper, numpy_helper

    return _model(
        [helper.make_node("Add", ["input", "one"], ["output"])],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [elems])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [elems])],
        [numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")],
    )


def measure_roofline(threading_config: ThreadingConfig | None = None, quick: bool = False, seed: int = 0) -> Roofline:
    """The measured ``Roofline`` (GEMM sizes 256-1024 and a 256 MiB copy; ``quick``: smaller GEMMs, fewer runs)."""
    sizes = (256, 512) if quick else (256, 512, 1024)
    copy_bytes = 256 * 2**20
    rounds = 5 if quick else 9
    gflops = []
    for n in sizes:
        timed = prepare(create_session(gemm_model(n, seed), threading_config), seed)
        samples = time_interleaved({"gemm": timed}, rounds=rounds, runs_per_visit=4, warmup=2, seed=seed)
        gflops.append(2.0 * n**3 / (robust_stats(samples["gemm"]).median_ms * 1e-3) / 1e9)
    elems = copy_bytes // 4
    timed = prepare(create_session(copy_model(elems), threading_config), seed)
    samples = time_interleaved({"copy": timed}, rounds=rounds, runs_per_visit=3, warmup=1, seed=seed)
    seconds = robust_stats(samples["copy"]).median_ms * 1e-3
    return Roofline(
        peak_gflops=float(max(gflops)),
        bandwidth_gbps=float(2.0 * elems * 4 / seconds / 1e9),
        gemm_sizes=tuple(sizes),
        copy_mbytes=copy_bytes / 2**20,
    )


__all__ = ["Roofline", "copy_model", "gemm_model", "measure_roofline"]
