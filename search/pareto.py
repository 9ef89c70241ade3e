"""Pareto tools (the 2-objective front used by the cost demo; the full toolkit grows here)."""

from __future__ import annotations

import numpy as np


def front_2d(cost: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Indices of points not dominated when minimising ``cost`` and maximising ``value``.

    Sorted by increasing cost. A point is dominated when another has cost ≤ and value ≥ with one
    strict; exact duplicates keep only their first occurrence. O(n log n): sort by cost (ties by
    larger value first) and keep each point that beats the best value seen so far.
    """
    cost = np.asarray(cost, dtype=float)
    value = np.asarray(value, dtype=float)
    order = np.lexsort((-value, cost))
    best_before = np.maximum.accumulate(np.concatenate(([-np.inf], value[order][:-1])))
    return order[value[order] > best_before]
