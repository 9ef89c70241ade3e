"""Early stopping for evaluators that train: learning-curve extrapolation, median pruning,
successive halving and Hyperband.

These decide how much training a candidate gets before its score is trusted. An evaluator that
stops a trial early can report how far it got (e.g. an ``epochs`` metric) and ``BayesOpt(...,
fidelity="epochs")`` then models the partial result as a low-fidelity observation.

- **Learning-curve extrapolation** fits the power law ``y(t) = a − b·t^(−c)`` (``a`` = the asymptote,
  ``c > 0``; accuracy curves have ``b > 0``, loss curves ``b < 0``) by Levenberg–Marquardt with
  ``c`` kept in bounds. Initial values come from variable projection: for fixed ``c`` the model is
  linear in (a, b), so a 1-D grid over ``c`` with a linear least-squares solve at each point gives
  the global optimum in ``c`` to grid resolution, and LM only polishes. The uncertainty of a
  prediction is the delta method on the parameter covariance ``s²(JᵀJ)⁻¹``.
- **Median pruning** (as in Google Vizier / Optuna's ``MedianPruner``): at configured epochs a trial
  is stopped when its value is worse than the median of the completed trials at that epoch.
- **Successive halving** (Jamieson & Talwalkar 2016) with the rung budgets of Hyperband (Li et al.
  2018): rung ``i`` of ``s + 1`` trains ``⌊n/ηⁱ⌋`` candidates with budget ``max_budget·η^(i−s)`` and
  promotes the best ``1/η``. ``hyperband_brackets`` builds Hyperband's brackets.

Why hand-written: numpy only on devices (DESIGN.md). The curve fit is checked against
``scipy.optimize.curve_fit`` in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")
Curve = Mapping[float, float] | Sequence[tuple[float, float]] | np.ndarray

_C_BOUNDS = (1e-3, 10.0)
_C_GRID = 64


class MultiFidelityError(ValueError):
    """A multi-fidelity setting or curve a user got wrong (budgets, eta, epochs)."""


def _curve_arrays(curve: Curve) -> tuple[np.ndarray, np.ndarray]:
    # (epochs, values) from a mapping epoch -> value, a sequence of pairs or an (n, 2) array
    if isinstance(curve, Mapping):
        pairs = sorted((float(k), float(v)) for k, v in curve.items())
        arr = np.array(pairs, dtype=float).reshape(-1, 2)
    else:
        arr = np.asarray(curve, dtype=float).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


# ---- learning-curve extrapolation ------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CurveFit:
    """A fitted ``y(t) = a − b·t^(−c)`` with its parameter covariance (NaN when n ≤ 3)."""

    a: float
    b: float
    c: float
    rss: float
    n: int
    cov: np.ndarray  # (3, 3) covariance of (a, b, c)

    def predict(self, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """(mean, standard deviation) of the curve at epochs ``t`` (std NaN when it cannot be estimated)."""
        tt = np.asarray(t, dtype=float)
        p = tt ** (-self.c)
        mean = self.a - self.b * p
        grad = np.stack([np.ones_like(tt), -p, self.b * p * np.log(tt)], axis=-1)
        var = np.einsum("...i,ij,...j->...", grad, self.cov, grad)
        return mean, np.sqrt(np.maximum(var, 0.0))


def _model(theta: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.asarray(theta[0] - theta[1] * t ** (-theta[2]))


def _jacobian(theta: np.ndarray, t: np.ndarray) -> np.ndarray:
    p = t ** (-theta[2])
    return np.column_stack([np.ones_like(t), -p, theta[1] * p * np.log(t)])


def fit_learning_curve(
    epochs: np.ndarray | Sequence[float],
    values: np.ndarray | Sequence[float],
    c_bounds: tuple[float, float] = _C_BOUNDS,
    max_iter: int = 200,
) -> CurveFit:
    """The least-squares fit of ``a − b·t^(−c)`` to (epoch, value) points (epochs > 0, ≥ 3 points).

    ``c`` stays within ``c_bounds`` (the power law degenerates as c → 0, where only a − b and b·c
    are identifiable). Variable-projection grid over c for the start, then Levenberg–Marquardt.
    """
    t = np.asarray(epochs, dtype=float).ravel()
    y = np.asarray(values, dtype=float).ravel()
    if t.shape != y.shape:
        raise MultiFidelityError(f"learning curve: {len(t)} epochs but {len(y)} values")
    if len(t) < 3:
        raise MultiFidelityError(f"learning curve: need at least 3 points to fit 3 parameters, got {len(t)}")
    if not (np.all(np.isfinite(t)) and np.all(t > 0)):
        raise MultiFidelityError("learning curve: epochs must be finite and > 0 (count epochs from 1)")
    if not np.all(np.isfinite(y)):
        raise MultiFidelityError("learning curve: values must be finite")
    c_lo, c_hi = c_bounds
    if not 0 < c_lo < c_hi:
        raise MultiFidelityError(f"learning curve: field 'c_bounds': need 0 < low < high, got {c_bounds}")

    def rss_of(theta: np.ndarray) -> float:
        r = _model(theta, t) - y
        return float(r @ r)

    # variable projection: for each c on a log grid, (a, b) by linear least squares
    best_theta, best_rss = np.array([float(y[-1]), 0.0, 1.0]), math.inf
    for c in np.geomspace(c_lo, c_hi, _C_GRID):
        design = np.column_stack([np.ones_like(t), -(t ** (-c))])
        (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
        theta = np.array([a, b, c])
        rss = rss_of(theta)
        if rss < best_rss:
            best_theta, best_rss = theta, rss
    theta, rss = best_theta, best_rss
    lam = 1e-3
    for _ in range(max_iter):
        J = _jacobian(theta, t)
        r = _model(theta, t) - y
        A = J.T @ J
        grad = J.T @ r
        step = np.linalg.lstsq(A + lam * np.diag(np.diag(A) + 1e-12), -grad, rcond=None)[0]
        trial = theta + step
        trial[2] = min(max(trial[2], c_lo), c_hi)
        trial_rss = rss_of(trial)
        if trial_rss < rss:
            converged = rss - trial_rss <= 1e-15 * rss or bool(
                np.all(np.abs(trial - theta) <= 1e-12 * (1 + np.abs(theta)))
            )
            theta, rss = trial, trial_rss
            lam = max(lam / 10.0, 1e-12)
            if converged:
                break
        else:
            lam *= 10.0
            if lam > 1e12:
                break
    n = len(t)
    if n > 3:
        J = _jacobian(theta, t)
        cov = rss / (n - 3) * np.linalg.pinv(J.T @ J)
    else:
        cov = np.full((3, 3), np.nan)
    return CurveFit(float(theta[0]), float(theta[1]), float(theta[2]), float(rss), n, cov)


def extrapolate(curve: Curve, target_epoch: float) -> tuple[float, float]:
    """(predicted value, its standard deviation) of ``curve`` at ``target_epoch``."""
    t, y = _curve_arrays(curve)
    fit = fit_learning_curve(t, y)
    mean, std = fit.predict(float(target_epoch))
    return float(mean), float(std)


def should_stop(
    curve: Curve,
    best_so_far: float | None,
    target_epoch: float,
    *,
    maximise: bool = True,
    z: float = 1.645,
    min_points: int = 4,
) -> bool:
    """True when even an optimistic extrapolation of ``curve`` to ``target_epoch`` cannot beat ``best_so_far``.

    Optimistic = predicted value + ``z`` standard deviations in the good direction (z = 1.645: a
    one-sided 95 % bound). Never stops with fewer than ``min_points`` points (≥ 4, so the
    uncertainty can be estimated), without a finite ``best_so_far``, or when the fit's
    uncertainty is not finite.
    """
    if min_points < 4:
        raise MultiFidelityError(f"should_stop: field 'min_points': must be >= 4, got {min_points}")
    t, y = _curve_arrays(curve)
    if len(t) < min_points or best_so_far is None or not math.isfinite(best_so_far):
        return False
    mean, std = extrapolate(np.column_stack([t, y]), target_epoch)
    if not (math.isfinite(mean) and math.isfinite(std)):
        return False
    if maximise:
        return mean + z * std < best_so_far
    return mean - z * std > best_so_far


# ---- median pruning --------------------------------------------------------------------------
class MedianPruner:
    """Stops a trial whose value at a check epoch is worse than the median of completed trials there.

    ``epochs``: the epochs at which trials are checked; ``min_completed``: completed trials that
    must have reported at an epoch before anything is pruned there. Ties with the median survive;
    a NaN value at a check epoch (a diverged trial) is pruned once a median exists.
    """

    def __init__(self, epochs: Iterable[float], *, maximise: bool = True, min_completed: int = 1) -> None:
        self.epochs = tuple(sorted({float(e) for e in epochs}))
        if not self.epochs:
            raise MultiFidelityError("median pruner: field 'epochs': need at least one check epoch")
        if min_completed < 1:
            raise MultiFidelityError(f"median pruner: field 'min_completed': must be >= 1, got {min_completed}")
        self.maximise = maximise
        self.min_completed = min_completed
        self.completed: list[dict[float, float]] = []

    def complete(self, curve: Curve) -> None:
        """Record the curve of a trial that ran to the end."""
        t, y = _curve_arrays(curve)
        self.completed.append(dict(zip(t.tolist(), y.tolist(), strict=True)))

    def median_at(self, epoch: float) -> float | None:
        """Median of the completed trials' values at ``epoch`` (None with fewer than ``min_completed``)."""
        values = [c[float(epoch)] for c in self.completed if float(epoch) in c and not math.isnan(c[float(epoch)])]
        if len(values) < self.min_completed:
            return None
        return float(np.median(values))

    def should_prune(self, epoch: float, value: float) -> bool:
        """True when the trial reporting ``value`` at ``epoch`` should stop (only at check epochs)."""
        if float(epoch) not in self.epochs:
            return False
        median = self.median_at(epoch)
        if median is None:
            return False
        if math.isnan(value):
            return True
        return value < median if self.maximise else value > median


# ---- successive halving and Hyperband --------------------------------------------------------
@dataclass(frozen=True)
class Rung:
    """One rung: how many candidates train, with what budget, and how many are promoted."""

    n: int
    budget: float
    keep: int


@dataclass(frozen=True)
class RungResult:
    """What happened at one rung: candidate indices (into the input), their metrics, the promoted ones."""

    budget: float
    indices: tuple[int, ...]
    metrics: tuple[float, ...]
    promoted: tuple[int, ...]


@dataclass(frozen=True)
class HalvingResult(Generic[T]):
    """Survivors of the last rung (best first) with their metrics, the budget spent, and every rung."""

    survivors: tuple[T, ...]
    metrics: tuple[float, ...]
    budget_spent: float
    rungs: tuple[RungResult, ...]


def _n_halvings(min_budget: float, max_budget: float, eta: float) -> int:
    # largest s with max_budget / eta^s >= min_budget (with a little slack for float ratios)
    s = 0
    while max_budget / eta ** (s + 1) >= min_budget * (1 - 1e-9):
        s += 1
    return s


@dataclass(frozen=True)
class SuccessiveHalving:
    """Successive halving of ``n`` candidates between ``min_budget`` and ``max_budget`` (factor ``eta``).

    Rung budgets are anchored at ``max_budget`` (``max_budget·η^(i−s)``, s = the number of times η
    fits into max/min), so the last rung always trains with the full budget and the first with at
    least ``min_budget``. ``integer`` rounds budgets (default: when both budgets are ints, e.g. epochs).
    """

    n: int
    min_budget: float
    max_budget: float
    eta: float = 3
    integer: bool | None = field(default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise MultiFidelityError(f"successive halving: field 'n': must be an integer >= 1, got {self.n!r}")
        if not 0 < self.min_budget <= self.max_budget:
            raise MultiFidelityError(
                f"successive halving: fields 'min_budget'/'max_budget': need 0 < min <= max, "
                f"got {self.min_budget} and {self.max_budget}"
            )
        if not self.eta > 1:
            raise MultiFidelityError(f"successive halving: field 'eta': must be > 1, got {self.eta}")

    @property
    def integer_budgets(self) -> bool:
        """Whether budgets are rounded to integers."""
        if self.integer is not None:
            return self.integer
        return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.min_budget, self.max_budget))

    @property
    def rungs(self) -> tuple[Rung, ...]:
        """The rungs, first (cheapest) to last (full budget)."""
        s = _n_halvings(self.min_budget, self.max_budget, self.eta)
        out = []
        alive = self.n
        for i in range(s + 1):
            budget: float = self.max_budget / self.eta ** (s - i)
            if self.integer_budgets:
                budget = max(1, round(budget))
            keep = max(1, int(alive // self.eta)) if i < s else alive
            out.append(Rung(alive, budget, keep))
            alive = keep
        return tuple(out)

    def planned_budget(self, resumes: bool = False) -> float:
        """Total budget of a full run: Σ nᵢ·rᵢ, or Σ nᵢ·(rᵢ − rᵢ₋₁) when training resumes between rungs."""
        total = 0.0
        previous = 0.0
        for rung in self.rungs:
            total += rung.n * (rung.budget - previous if resumes else rung.budget)
            previous = rung.budget
        return total

    def run(
        self,
        candidates: Sequence[T],
        train_fn: Callable[[T, float], float],
        *,
        maximise: bool = True,
        resumes: bool = False,
    ) -> HalvingResult[T]:
        """Train and promote rung by rung; ``train_fn(candidate, budget) -> metric``.

        ``resumes``: ``train_fn`` continues a candidate's training from its previous rung, so a
        promotion costs only the budget difference (otherwise every rung trains from scratch).
        NaN metrics rank last; ties keep the earlier candidate.
        """
        if len(candidates) != self.n:
            raise MultiFidelityError(
                f"successive halving: field 'n' is {self.n} but {len(candidates)} candidates were given"
            )
        alive = list(range(self.n))
        spent = 0.0
        previous = 0.0
        results: list[RungResult] = []
        metrics: list[float] = []
        for rung in self.rungs:
            metrics = [float(train_fn(candidates[i], rung.budget)) for i in alive]
            spent += len(alive) * (rung.budget - previous if resumes else rung.budget)
            previous = rung.budget
            signed = np.array([(-m if maximise else m) if not math.isnan(m) else math.inf for m in metrics])
            order = np.argsort(signed, kind="stable")
            ranked = [alive[k] for k in order]
            promoted = ranked[: rung.keep]
            results.append(RungResult(rung.budget, tuple(alive), tuple(metrics), tuple(promoted)))
            metrics = [metrics[k] for k in order[: rung.keep]]
            alive = promoted
        return HalvingResult(tuple(candidates[i] for i in alive), tuple(metrics), spent, tuple(results))


def hyperband_brackets(min_budget: float, max_budget: float, eta: float = 3) -> tuple[SuccessiveHalving, ...]:
    """Hyperband's brackets, most exploratory first: for s = s_max … 0, ``⌈(s_max+1)·ηˢ/(s+1)⌉``
    candidates starting at budget ``max_budget·η^(−s)``."""
    probe = SuccessiveHalving(1, min_budget, max_budget, eta)  # validates the arguments
    s_max = _n_halvings(min_budget, max_budget, eta)
    brackets = []
    for s in range(s_max, -1, -1):
        if isinstance(eta, int):
            n = -(-((s_max + 1) * eta**s) // (s + 1))  # exact integer ceiling
        else:
            n = math.ceil((s_max + 1) * eta**s / (s + 1) - 1e-9)
        brackets.append(SuccessiveHalving(n, max_budget / eta**s, max_budget, eta, probe.integer_budgets))
    return tuple(brackets)


@dataclass(frozen=True)
class HyperbandResult(Generic[T]):
    """The best candidate over all brackets (trained with the full budget), its metric, the budget spent."""

    best: T
    metric: float
    budget_spent: float
    brackets: tuple[HalvingResult[T], ...]


def hyperband(
    sample_fn: Callable[[int], Sequence[T]],
    train_fn: Callable[[T, float], float],
    min_budget: float,
    max_budget: float,
    eta: float = 3,
    *,
    maximise: bool = True,
    resumes: bool = False,
) -> HyperbandResult[T]:
    """Run every Hyperband bracket on fresh candidates from ``sample_fn(n)`` and return the best."""
    results = []
    for sh in hyperband_brackets(min_budget, max_budget, eta):
        results.append(sh.run(sample_fn(sh.n), train_fn, maximise=maximise, resumes=resumes))
    finals = [(r.metrics[0], k) for k, r in enumerate(results)]
    signed = [((-m if maximise else m) if not math.isnan(m) else math.inf, k) for m, k in finals]
    k_best = min(signed)[1]
    best = results[k_best]
    return HyperbandResult(best.survivors[0], best.metrics[0], sum(r.budget_spent for r in results), tuple(results))
