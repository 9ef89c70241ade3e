"""Problems: what a search strategy optimises (one interface, pymoo-style problems as objects).

A ``Problem`` owns its representation — how to sample, mutate and cross candidates encoded as
rows of a 2-D array — and its evaluation: objective values, constraint violations and any extra
metrics, for a whole batch at once. Strategies only ever see arrays, so the same NSGA-II runs
over architecture encodings (integers) and over continuous benchmark problems (ZDT, DTLZ).

Conventions (every strategy relies on them):
- ``Evaluation.F`` is in *minimisation form*: each objective declares its direction and
  ``Objective.to_min`` flips maximised ones (accuracy → −accuracy). ``Evaluation.raw`` keeps the
  values in their natural direction for reports.
- ``Evaluation.G`` holds constraint *violations*: ≤ 0 is satisfied, > 0 is how far over the
  limit (in the constraint's units, normalised by its limit so several constraints compare).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search.space.base import SearchSpace

DIRECTIONS = ("min", "max")


class ProblemError(ValueError):
    """A problem definition a user got wrong (objective, constraint, metric names)."""


@dataclass(frozen=True)
class Objective:
    """One objective: the metric it reads and whether smaller or larger is better."""

    name: str
    direction: str = "min"

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ProblemError(f"objective {self.name!r}: field 'direction': {self.direction!r}; allowed: min, max")

    def to_min(self, values: np.ndarray) -> np.ndarray:
        """Values in minimisation form."""
        v = np.asarray(values, dtype=float)
        return v if self.direction == "min" else -v


@dataclass(frozen=True)
class Constraint:
    """A hard limit on a metric: ``metric <= limit`` (``upper``) or ``metric >= limit``."""

    metric: str
    limit: float
    upper: bool = True

    def violation(self, values: np.ndarray) -> np.ndarray:
        """Normalised violation: ≤ 0 satisfied, > 0 = relative excess over the limit."""
        v = np.asarray(values, dtype=float)
        scale = abs(self.limit) if self.limit else 1.0
        return (v - self.limit) / scale if self.upper else (self.limit - v) / scale


@dataclass(frozen=True)
class Evaluation:
    """A batch's results: F (n, m) minimisation form, G (n, k) violations, raw metrics by name."""

    F: np.ndarray
    G: np.ndarray
    metrics: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def feasible(self) -> np.ndarray:
        """Boolean (n,): every constraint satisfied."""
        return np.all(self.G <= 0, axis=1) if self.G.size else np.ones(len(self.F), dtype=bool)

    @property
    def total_violation(self) -> np.ndarray:
        """(n,): sum of positive violations (0 when feasible)."""
        return np.clip(self.G, 0, None).sum(axis=1) if self.G.size else np.zeros(len(self.F))

    def take(self, index: np.ndarray) -> Evaluation:
        """The rows ``index``."""
        return Evaluation(self.F[index], self.G[index], {k: v[index] for k, v in self.metrics.items()})

    @staticmethod
    def concat(parts: Sequence[Evaluation]) -> Evaluation:
        """Rows of several evaluations, in order."""
        keys = parts[0].metrics.keys()
        return Evaluation(
            np.concatenate([p.F for p in parts]),
            np.concatenate([p.G for p in parts]),
            {k: np.concatenate([p.metrics[k] for p in parts]) for k in keys},
        )


class Problem(ABC):
    """A batch-evaluated optimisation problem with its own representation."""

    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...] = ()
    n_var: int
    integer: bool = False

    @property
    def n_obj(self) -> int:
        """Number of objectives."""
        return len(self.objectives)

    @abstractmethod
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` random candidates, shape ``(n, n_var)``."""

    @abstractmethod
    def mutate(self, X: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
        """Mutated copies of ``X`` (each variable changed with probability ``rate``)."""

    @abstractmethod
    def crossover(self, A: np.ndarray, B: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One child per row pair of ``A`` and ``B``."""

    def canonical(self, X: np.ndarray) -> np.ndarray:
        """Canonical form (equal candidates → equal rows); identity unless the encoding has slack."""
        return X

    @abstractmethod
    def evaluate(self, X: np.ndarray) -> Evaluation:
        """Objectives, violations and metrics of every row of ``X``."""


MetricFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]


class SpaceProblem(Problem):
    """Architecture search over a ``SearchSpace``: evaluators turn encodings into named metrics.

    ``evaluators`` are functions ``codes -> {metric: (n,) array}`` (the cost tables, an accuracy
    predictor, a supernet evaluator, measured latency…); objectives and constraints pick metrics
    by name, and an unknown name is an error listing what the evaluators provide.
    """

    integer = True

    def __init__(
        self,
        space: SearchSpace,
        evaluators: Sequence[MetricFn],
        objectives: Sequence[Objective],
        constraints: Sequence[Constraint] = (),
    ) -> None:
        if not objectives:
            raise ProblemError("a problem needs at least one objective")
        self.space = space
        self.evaluators = tuple(evaluators)
        self.objectives = tuple(objectives)
        self.constraints = tuple(constraints)
        self.n_var = space.encoding_length

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.space.sample(n, rng)

    def mutate(self, X: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
        return self.space.mutate(X, rate, rng)

    def crossover(self, A: np.ndarray, B: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.space.crossover(A, B, rng)

    def canonical(self, X: np.ndarray) -> np.ndarray:
        return self.space.canonicalise(X)

    def metrics(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Every evaluator's metrics for ``X``, merged."""
        out: dict[str, np.ndarray] = {}
        for fn in self.evaluators:
            out.update(fn(X))
        return out

    def evaluate(self, X: np.ndarray) -> Evaluation:
        metrics = self.metrics(X)
        needed = [o.name for o in self.objectives] + [c.metric for c in self.constraints]
        missing = [n for n in needed if n not in metrics]
        if missing:
            raise ProblemError(f"unknown metric(s) {missing}; the evaluators provide: {', '.join(sorted(metrics))}")
        F = np.column_stack([o.to_min(metrics[o.name]) for o in self.objectives])
        G = (
            np.column_stack([c.violation(metrics[c.metric]) for c in self.constraints])
            if self.constraints
            else np.zeros((len(X), 0))
        )
        return Evaluation(F, G, metrics)


def describe(problem: Problem) -> dict[str, Any]:
    """A JSON-ready summary."""
    return {
        "n_var": problem.n_var,
        "objectives": [{"name": o.name, "direction": o.direction} for o in problem.objectives],
        "constraints": [{"metric": c.metric, "limit": c.limit, "upper": c.upper} for c in problem.constraints],
    }
