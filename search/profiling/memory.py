"""ONNX Runtime's measured peak activation memory of a model, for checking the analytic peak.

What is measured: the growth of the process's resident set during one steady-state inference —
``VmHWM`` (the peak resident set, reset just before the run by writing ``5`` to
``/proc/self/clear_refs``) minus ``VmRSS`` before the run — in a fresh subprocess, per model:

- the session runs with the runtime's options but ``enable_cpu_mem_arena = False``: ONNX
  Runtime's arena keeps and rounds up what it allocated, so with it an allocation shows once,
  at its power-of-two size; without it every buffer is a ``malloc`` that returns on ``free``;
- the subprocess sets ``MALLOC_MMAP_THRESHOLD_`` to 16 KiB (which also stops glibc from raising
  the threshold dynamically), so every tensor buffer is its own ``mmap``, counted while it lives
  and unmapped when freed — not recycled from a free list, which would hide it;
- two runs before the measured one: ONNX Runtime plans its memory pattern on the first run.

So the figure is what the inference itself allocates and touches — intermediate tensors under
ONNX Runtime's memory plan (one block for the planned peak), the output, and scratch buffers —
and excludes the weights and the caller's input, which are resident before the run. It is
rounded to 4 KiB pages. Linux only (``/proc``); elsewhere ``measure_peak_memory`` raises
``OSError``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

MMAP_THRESHOLD = 16384


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def _measure_in_this_process(paths: Sequence[str]) -> list[int]:
    import numpy as np
    import onnxruntime as ort

    from runtime.engine import ThreadingConfig, session_options
    from search.profiling.timing import prepare

    out = []
    for path in paths:
        so = session_options(ThreadingConfig())
        so.enable_cpu_mem_arena = False
        session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        timed = prepare(session)
        for _ in range(2):
            timed.run()
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        before = _status_kb("VmRSS")
        timed.run()
        peak = _status_kb("VmHWM")
        out.append(max(0, peak - before) * 1024)
        del session, timed
        np.empty(0)  # keep numpy imported in the measured state
    return out


def measure_peak_memory(model_paths: Sequence[str | Path], timeout_s: float | None = None) -> list[int]:
    """Measured peak bytes of one inference of each ONNX model file (see the module docstring)."""
    if not Path("/proc/self/clear_refs").exists():
        raise OSError("measure_peak_memory needs Linux /proc/self/clear_refs")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": "0"}
    args = [sys.executable, "-m", "search.profiling.memory", *map(str, model_paths)]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise OSError(f"memory measurement subprocess failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return [int(v) for v in json.loads(done.stdout)]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the measuring subprocess: prints a JSON list of peak bytes, one per model path."""
    paths = list(sys.argv[1:] if argv is None else argv)
    print(json.dumps(_measure_in_this_process(paths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["MMAP_THRESHOLD", "measure_peak_memory"]
