"""Constraint handling shared by every strategy, and constraint-shaped metrics for hardware search.

A problem returns objectives ``F`` (minimisation form) and constraint violations ``G``
(≤ 0 satisfied; see ``search.problem``). How a strategy *uses* them is a separate choice, made
by a ``ConstraintHandler``: a pure transform ``(F, G, generation) -> (F', G')`` applied to the
values a strategy ranks. Strategies store the problem's raw ``F``/``G`` and re-apply the handler
whenever they rank, so a handler that changes with the generation (progressive tightening) never
leaves stale violations in a population, and the run history always holds the real values.

- ``FeasibilityFirst`` — Deb's rules (identity transform; the strategy ranks with
  ``feasibility_first``): feasible beats infeasible, two infeasible compare by total violation,
  two feasible by Pareto rank (then crowding). NSGA-II's default.
- ``QuadraticPenalty`` — ``F + weight · Σ max(0, g)²`` on every objective, no constraints left.
- ``EpsilonConstraint`` — optimise one objective; every other objective ``i`` becomes the
  constraint ``f_i ≤ ε_i``.
- ``ProgressiveTightening`` — each ``ProgressiveConstraint`` moves its limit from a loose
  ``ε_init`` to the problem's ``ε_final`` as ``ε_t = ε_final + (ε_init − ε_final)·e^(−t/τ)``.
- ``Chain`` — apply several in order (e.g. tightening, then a penalty).

``HandledProblem`` wraps a problem so its ``evaluate`` already returns the transformed values
(for strategies that take no handler, or to score a fixed generation's view).

Metrics: ``weighted_latency`` combines several devices' latency tables into ``Σ w_d·lat_d``
(one network for a fleet of platforms), and ``mnas_reward_metric`` adds MnasNet's single-objective
reward ``ACC·(LAT/TARGET)^w``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from runtime.metrics import mnas_reward
from search.pareto import nondominated_rank
from search.problem import Constraint, Evaluation, MetricFn, Objective, Problem, ProblemError


class ConstraintError(ValueError):
    """A constraint-handling configuration a user got wrong."""


# ---- Deb's feasibility rules ------------------------------------------------------------------
def total_violation(G: np.ndarray) -> np.ndarray:
    """(n,) sum of the positive violations of every row (0 when feasible or unconstrained)."""
    G = np.asarray(G, dtype=float)
    if G.ndim != 2 or G.shape[1] == 0:
        return np.zeros(len(G))
    return np.clip(G, 0.0, None).sum(axis=1)


def feasibility_first(F: np.ndarray, G: np.ndarray) -> np.ndarray:
    """(n,) int ranks under Deb's constraint-domination (0 = best front).

    Feasible rows get their non-dominated rank among the feasible rows; infeasible rows come
    after the last feasible front, one front per distinct total violation, smallest first. This
    is exactly the front structure of constraint-domination (an infeasible row dominates another
    iff its total violation is smaller), so NSGA-II's sort and tournament can use it unchanged.
    """
    F = np.asarray(F, dtype=float)
    cv = total_violation(G)
    feasible = cv <= 0.0
    ranks = np.empty(len(F), dtype=np.int64)
    if feasible.all():
        return nondominated_rank(F)
    n_feasible_fronts = 0
    if feasible.any():
        ranks[feasible] = nondominated_rank(F[feasible])
        n_feasible_fronts = int(ranks[feasible].max()) + 1
    _, level = np.unique(cv[~feasible], return_inverse=True)
    ranks[~feasible] = n_feasible_fronts + level.ravel()
    return ranks


def constrained_order(score: np.ndarray, G: np.ndarray) -> np.ndarray:
    """(n,) int position of every row in Deb's total order for a scalar ``score`` (0 = best).

    Feasible rows first, by score (smaller is better); then infeasible rows by total violation,
    ties by score. Ties that remain keep index order. Single-objective strategies compare a
    sample by taking the row with the smallest position.
    """
    score = np.asarray(score, dtype=float)
    order = np.lexsort((score, total_violation(G)))
    pos = np.empty(len(order), dtype=np.int64)
    pos[order] = np.arange(len(order))
    return pos


def quadratic_penalty(F: np.ndarray, G: np.ndarray, weight: float) -> np.ndarray:
    """Penalised objectives ``F + weight · Σ_j max(0, g_j)²`` (the same penalty on every column)."""
    F = np.asarray(F, dtype=float)
    G = np.asarray(G, dtype=float)
    if G.ndim != 2 or G.shape[1] == 0:
        return F.copy()
    penalty = weight * np.square(np.clip(G, 0.0, None)).sum(axis=1)
    return F + penalty[:, None]


def epsilon_constraint(
    F: np.ndarray, G: np.ndarray, objective: int, epsilons: Sequence[float | None]
) -> tuple[np.ndarray, np.ndarray]:
    """``(F', G')``: column ``objective`` of ``F`` alone, and ``G`` plus one violation per bounded objective.

    ``epsilons[i]`` bounds objective ``i`` (minimisation form: for a maximised metric the bound
    is on its negation); ``None`` or ±inf leaves it free, and the optimised objective's entry is
    ignored. The added violations are normalised like ``Constraint.violation``:
    ``(f_i − ε_i) / |ε_i|`` (``/ 1`` when ε_i = 0).
    """
    F = np.asarray(F, dtype=float)
    G = np.asarray(G, dtype=float).reshape(len(F), -1)
    cols = _epsilon_columns(F.shape[1], objective, epsilons)
    extra = [(F[:, i] - eps) / (abs(eps) if eps else 1.0) for i, eps in cols]
    G2 = np.column_stack([G, *extra]) if extra else G
    return F[:, [objective]], G2


def _epsilon_columns(n_obj: int, objective: int, epsilons: Sequence[float | None]) -> list[tuple[int, float]]:
    if not 0 <= objective < n_obj:
        raise ConstraintError(f"epsilon constraint: field 'objective': {objective}; allowed: 0..{n_obj - 1}")
    if len(epsilons) != n_obj:
        raise ConstraintError(
            f"epsilon constraint: field 'epsilons': need one entry per objective ({n_obj}), got {len(epsilons)}"
        )
    return [
        (i, float(eps))
        for i, eps in enumerate(epsilons)
        if i != objective and eps is not None and math.isfinite(float(eps))
    ]


# ---- progressive tightening -------------------------------------------------------------------
def tightening_schedule(t: float, initial: float, final: float, tau: float) -> float:
    """The limit at generation ``t``: ``final + (initial − final)·e^(−t/τ)``."""
    return final + (initial - final) * math.exp(-t / tau)


@dataclass(frozen=True)
class ProgressiveConstraint:
    """A ``Constraint`` whose limit starts at ``initial`` and tightens toward ``constraint.limit``.

    At generation ``t`` the limit is ``ε_t = ε_final + (ε_init − ε_final)·e^(−t/τ)`` with
    ``ε_final = constraint.limit``: early generations may explore beyond the final budget, later
    ones are held to it. ``initial`` must be on the loose side of the final limit.
    """

    constraint: Constraint
    initial: float
    tau: float

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise ConstraintError(f"progressive constraint {self.constraint.metric!r}: field 'tau': need > 0")
        final = self.constraint.limit
        loose = self.initial >= final if self.constraint.upper else self.initial <= final
        if not loose:
            side = ">=" if self.constraint.upper else "<="
            raise ConstraintError(
                f"progressive constraint {self.constraint.metric!r}: field 'initial': {self.initial} must be "
                f"{side} the final limit {final} (it starts loose and tightens)"
            )

    def limit(self, t: float) -> float:
        """ε_t, the limit in force at generation ``t``."""
        return tightening_schedule(t, self.initial, self.constraint.limit, self.tau)

    def at(self, t: float) -> Constraint:
        """The plain ``Constraint`` in force at generation ``t``."""
        return replace(self.constraint, limit=self.limit(t))

    def retarget(self, g: np.ndarray, t: float) -> np.ndarray:
        """Violations against ``limit(t)`` from violations ``g`` against the final limit.

        ``Constraint.violation`` is affine in the metric, so the metric value is recovered
        exactly (up to rounding) and re-scored; no re-evaluation is needed.
        """
        c = self.constraint
        scale = abs(c.limit) if c.limit else 1.0
        g = np.asarray(g, dtype=float)
        value = g * scale + c.limit if c.upper else c.limit - g * scale
        return self.at(t).violation(value)


# ---- handlers ---------------------------------------------------------------------------------
class ConstraintHandler(ABC):
    """How a strategy turns a problem's ``(F, G)`` into the values it ranks, at a generation."""

    name: str = "handler"

    @abstractmethod
    def transform(self, F: np.ndarray, G: np.ndarray, generation: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(F', G')`` for ranking: F' minimisation form, G' violations (≤ 0 feasible)."""

    def objectives(self, objectives: Sequence[Objective]) -> tuple[Objective, ...]:
        """The objectives F' stands for (the same ones unless the handler drops some)."""
        return tuple(objectives)

    def params(self) -> dict[str, Any]:
        """JSON-ready description (recorded in checkpoints and compared on resume)."""
        return {"name": self.name}


@dataclass(frozen=True)
class FeasibilityFirst(ConstraintHandler):
    """Deb's rules: ``F`` and ``G`` unchanged; strategies rank with ``feasibility_first``."""

    name = "feasibility_first"

    def transform(self, F: np.ndarray, G: np.ndarray, generation: int = 0) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(F, dtype=float), np.asarray(G, dtype=float)


@dataclass(frozen=True)
class QuadraticPenalty(ConstraintHandler):
    """Constraints folded into the objectives: ``F + weight · Σ max(0, g)²``; no violations left."""

    weight: float = 1e3
    name = "quadratic_penalty"

    def __post_init__(self) -> None:
        if not self.weight >= 0:
            raise ConstraintError(f"quadratic penalty: field 'weight': need >= 0, got {self.weight}")

    def transform(self, F: np.ndarray, G: np.ndarray, generation: int = 0) -> tuple[np.ndarray, np.ndarray]:
        F2 = quadratic_penalty(F, G, self.weight)
        return F2, np.zeros((len(F2), 0))

    def params(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight}


@dataclass(frozen=True)
class EpsilonConstraint(ConstraintHandler):
    """Optimise objective ``objective``; objective ``i`` must satisfy ``f_i ≤ epsilons[i]``."""

    objective: int
    epsilons: tuple[float | None, ...]
    name = "epsilon_constraint"

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilons", tuple(self.epsilons))
        _epsilon_columns(len(self.epsilons), self.objective, self.epsilons)

    def transform(self, F: np.ndarray, G: np.ndarray, generation: int = 0) -> tuple[np.ndarray, np.ndarray]:
        return epsilon_constraint(F, G, self.objective, self.epsilons)

    def objectives(self, objectives: Sequence[Objective]) -> tuple[Objective, ...]:
        return (objectives[self.objective],)

    def params(self) -> dict[str, Any]:
        return {"name": self.name, "objective": self.objective, "epsilons": list(self.epsilons)}


class ProgressiveTightening(ConstraintHandler):
    """Constraints of ``problem`` whose limits tighten with the generation (see ``ProgressiveConstraint``).

    Every schedule's ``constraint`` must be one of ``problem.constraints`` (the final limit is
    what the problem evaluates against, so the run history reports the real target); its column
    of ``G`` is re-scored against ``ε_t``. Other columns pass through.
    """

    name = "progressive_tightening"

    def __init__(self, problem: Problem, schedules: Sequence[ProgressiveConstraint]) -> None:
        constraints = tuple(problem.constraints)
        self.schedules = tuple(schedules)
        cols = []
        for s in self.schedules:
            if s.constraint not in constraints:
                have = ", ".join(f"{c.metric}<={c.limit}" if c.upper else f"{c.metric}>={c.limit}" for c in constraints)
                raise ConstraintError(
                    f"progressive tightening: constraint on {s.constraint.metric!r} (limit {s.constraint.limit}) "
                    f"is not one of the problem's constraints: {have or 'none'}"
                )
            cols.append(constraints.index(s.constraint))
        self.columns: tuple[int, ...] = tuple(cols)

    def limits(self, generation: int) -> list[float]:
        """ε_t of every schedule at ``generation``."""
        return [s.limit(generation) for s in self.schedules]

    def transform(self, F: np.ndarray, G: np.ndarray, generation: int = 0) -> tuple[np.ndarray, np.ndarray]:
        G2 = np.array(G, dtype=float, copy=True)
        for col, s in zip(self.columns, self.schedules, strict=True):
            G2[:, col] = s.retarget(G2[:, col], generation)
        return np.asarray(F, dtype=float), G2

    def params(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "schedules": [
                {"metric": s.constraint.metric, "final": s.constraint.limit, "upper": s.constraint.upper,
                 "initial": s.initial, "tau": s.tau, "column": c}
                for s, c in zip(self.schedules, self.columns, strict=True)
            ],
        }


class Chain(ConstraintHandler):
    """Several handlers applied in order (e.g. ``ProgressiveTightening`` then ``QuadraticPenalty``)."""

    name = "chain"

    def __init__(self, *handlers: ConstraintHandler) -> None:
        if not handlers:
            raise ConstraintError("chain: need at least one handler")
        self.handlers = handlers

    def transform(self, F: np.ndarray, G: np.ndarray, generation: int = 0) -> tuple[np.ndarray, np.ndarray]:
        for h in self.handlers:
            F, G = h.transform(F, G, generation)
        return F, G

    def objectives(self, objectives: Sequence[Objective]) -> tuple[Objective, ...]:
        out = tuple(objectives)
        for h in self.handlers:
            out = h.objectives(out)
        return out

    def params(self) -> dict[str, Any]:
        return {"name": self.name, "handlers": [h.params() for h in self.handlers]}


class HandledProblem(Problem):
    """``problem`` whose ``evaluate`` returns the handler's view at ``generation``.

    Representation (sample, mutate, crossover, canonical) is the wrapped problem's. ``F``/``G``
    are transformed; ``metrics`` stay the raw ones. ``generation`` is a plain attribute a driver
    sets to move a progressive schedule along.
    """

    def __init__(self, problem: Problem, handler: ConstraintHandler, generation: int = 0) -> None:
        self.problem = problem
        self.handler = handler
        self.generation = generation
        self.n_var = problem.n_var
        self.integer = problem.integer
        self.objectives = handler.objectives(problem.objectives)
        # Constraint objects describe limits on metrics; the transformed G no longer maps to them.
        self.constraints = ()

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.problem.sample(n, rng)

    def mutate(self, X: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
        return self.problem.mutate(X, rate, rng)

    def crossover(self, A: np.ndarray, B: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.problem.crossover(A, B, rng)

    def canonical(self, X: np.ndarray) -> np.ndarray:
        return self.problem.canonical(X)

    def evaluate(self, X: np.ndarray) -> Evaluation:
        ev = self.problem.evaluate(X)
        F, G = self.handler.transform(ev.F, ev.G, self.generation)
        return Evaluation(F, G, ev.metrics)


# ---- hardware metrics -------------------------------------------------------------------------
def weighted_latency(
    evaluators: Mapping[str, MetricFn],
    weights: Mapping[str, float],
    metric: str = "latency_ms",
    name: str = "weighted_latency_ms",
) -> MetricFn:
    """An evaluator returning ``Σ_d w_d·lat_d`` as ``name`` plus each device's ``{metric}@{device}``.

    ``evaluators`` maps a device name to a metric function (e.g. ``SpaceCostTable(space,
    device).evaluate``); ``weights`` gives each device's share (≥ 0, not all 0; not normalised,
    so weights summing to 1 keep milliseconds). The other metrics of the first device are passed
    through, so macs/params stay available to objectives.
    """
    if set(evaluators) != set(weights):
        raise ConstraintError(
            f"weighted latency: field 'weights': devices {sorted(weights)} must match the evaluators "
            f"{sorted(evaluators)}"
        )
    if not evaluators:
        raise ConstraintError("weighted latency: need at least one device")
    if any(not w >= 0 for w in weights.values()) or not sum(weights.values()) > 0:
        raise ConstraintError(f"weighted latency: field 'weights': need >= 0 and not all 0, got {dict(weights)}")
    devices = tuple(evaluators)
    w = {d: float(weights[d]) for d in devices}

    def evaluate(codes: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        parts = []
        for i, device in enumerate(devices):
            metrics = evaluators[device](codes)
            if metric not in metrics:
                raise ProblemError(
                    f"weighted latency: device {device!r} provides no {metric!r}; it provides: "
                    f"{', '.join(sorted(metrics))}"
                )
            if i == 0:
                out.update(metrics)
            lat = np.asarray(metrics[metric], dtype=float)
            out[f"{metric}@{device}"] = lat
            parts.append(w[device] * lat)
        out[name] = np.sum(parts, axis=0)
        return out

    return evaluate


def mnas_reward_metric(
    evaluators: Sequence[MetricFn],
    target: float,
    w: float = -0.07,
    accuracy: str = "accuracy",
    latency: str = "latency_ms",
    name: str = "mnas_reward",
) -> MetricFn:
    """An evaluator adding MnasNet's reward ``ACC·(LAT/TARGET)^w`` as ``name`` to ``evaluators``' metrics.

    ``w = −0.07`` is the paper's soft constraint (a network twice as slow as the target pays
    ~5 % of its accuracy). Maximise it: ``Objective(name, "max")``. ``latency`` may be a
    ``weighted_latency`` output to target a fleet.
    """
    if not target > 0:
        raise ConstraintError(f"mnas reward: field 'target': need > 0, got {target}")
    fns = tuple(evaluators)

    def evaluate(codes: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for fn in fns:
            out.update(fn(codes))
        missing = [k for k in (accuracy, latency) if k not in out]
        if missing:
            raise ProblemError(f"mnas reward: missing metric(s) {missing}; the evaluators provide: "
                               f"{', '.join(sorted(out))}")
        out[name] = np.asarray(mnas_reward(out[accuracy], out[latency], target, w), dtype=float)
        return out

    return evaluate
