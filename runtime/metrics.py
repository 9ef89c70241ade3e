"""Seed objective metrics for hardware-aware search, vectorised over candidates.

Arrays in, arrays out (numpy broadcasting); scalars in give numpy scalars. Inputs that must be
positive (energy, latency, target) raise ``ValueError`` when they are not, since a zero there
means a broken cost model rather than a very good network.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ArrayLike = Any  # a number or anything np.asarray accepts


def _out(value: np.ndarray) -> Any:
    return value[()] if value.ndim == 0 else value


def _positive(value: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if np.any(~(arr > 0)):
        raise ValueError(f"{name} must be > 0 everywhere (got min {np.nanmin(arr) if arr.size else arr!r})")
    return arr


def weighted_cost(
    flops: ArrayLike, memory_access: ArrayLike, latency: ArrayLike, alpha: float, beta: float, gamma: float
) -> Any:
    """``alpha * FLOPs + beta * memory_access + gamma * latency`` (a linear cost to minimise)."""
    return _out(
        alpha * np.asarray(flops, dtype=np.float64)
        + beta * np.asarray(memory_access, dtype=np.float64)
        + gamma * np.asarray(latency, dtype=np.float64)
    )


def efficiency_score(
    acc: ArrayLike, energy: ArrayLike, latency: ArrayLike, a: float = 1.0, b: float = 1.0, c: float = 1.0
) -> Any:
    """``Acc^a / (E^b * L^c)``: accuracy per unit energy and latency (higher is better)."""
    e = _positive(energy, "energy")
    lat = _positive(latency, "latency")
    return _out(np.asarray(acc, dtype=np.float64) ** a / (e**b * lat**c))


def edp(energy: ArrayLike, latency: ArrayLike) -> Any:
    """Energy-delay product ``E * L`` (J*s when given joules and seconds; lower is better)."""
    return _out(np.asarray(energy, dtype=np.float64) * np.asarray(latency, dtype=np.float64))


def mnas_reward(acc: ArrayLike, latency: ArrayLike, target: ArrayLike, w: float = -0.07) -> Any:
    """MnasNet's soft-constrained reward ``ACC * (LAT / TARGET)^w`` (w = -0.07 in the paper)."""
    lat = _positive(latency, "latency")
    tgt = _positive(target, "target")
    return _out(np.asarray(acc, dtype=np.float64) * (lat / tgt) ** w)


__all__ = ["edp", "efficiency_score", "mnas_reward", "weighted_cost"]
