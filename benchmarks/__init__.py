"""One script per performance claim; each prints one JSON document.

This package's ``__init__`` must not import numpy: scripts call ``pin_one_core`` before numpy
starts its BLAS threads.
"""

from __future__ import annotations

import os


def pin_one_core() -> None:
    """Run on one core, as the one-core claims say. Call before numpy is imported: BLAS threads
    started earlier keep the process's original affinity and would use the second core."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
