"""Evaluators for ``SpaceProblem``: functions ``codes -> {metric: (n,) array}`` beyond the cost models.

``tabular``: NAS-Bench-201 as a benchmark — accuracies looked up from its CSV (with query
counting), exact per-cell costs, and the true Pareto front over all 15,625 cells.
"""

from __future__ import annotations

from search.evaluators.tabular import (
    SPLITS,
    TABULAR_DATASETS,
    NasBench201CostTable,
    QueryCount,
    TabularError,
    TabularEvaluator,
    TrueFront,
    true_front,
)

__all__ = [
    "SPLITS",
    "TABULAR_DATASETS",
    "NasBench201CostTable",
    "QueryCount",
    "TabularError",
    "TabularEvaluator",
    "TrueFront",
    "true_front",
]
