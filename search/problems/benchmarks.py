"""Continuous benchmark problems (ZDT1, ZDT2, DTLZ2) with pymoo's real-valued operators.

These exist so our strategies can be compared with pymoo's on the problems everyone reports:
same definitions, same variation operators, same reference fronts. The operators are our own
vectorised code written to match pymoo 0.6's ``SBX`` and ``PM`` in distribution (not draw for
draw: the random numbers are consumed in a different order).

- **Sampling**: uniform in ``[lower, upper]``.
- **SBX** (simulated binary crossover, Deb & Agrawal 1995) with pymoo's NSGA-II settings:
  ``eta = 15``; each variable is crossed with probability ``0.5``; the two SBX children are
  exchanged per variable with probability 0.5. ``crossover`` returns *one* child per parent
  pair, as pymoo's ``SBX(n_offsprings=1)``: a coin picks which offspring slot is kept, so the
  variables that were not crossed come from one parent, chosen at random per pair. Whether a
  pair is crossed at all (pymoo's ``prob = 0.9``) is the strategy's decision.
- **Polynomial mutation** (Deb & Goyal 1996), ``eta = 20``, each variable mutated with
  probability ``rate`` (strategies default to pymoo's ``min(0.5, 1 / n_var)``), the bounded
  variant that never leaves the box.
"""

from __future__ import annotations

import itertools
import math
from abc import abstractmethod
from collections.abc import Callable, Sequence

import numpy as np

from search.problem import Evaluation, Objective, Problem, ProblemError

# pymoo's NSGA-II defaults (SBX(eta=15, prob_var=0.5), PM(eta=20)).
SBX_ETA = 15.0
SBX_VAR_PROB = 0.5
PM_ETA = 20.0
# SBX leaves a variable alone when the parents agree on it to within this (as pymoo).
SBX_EPS = 1.0e-14


def _bounds(lower: np.ndarray | float, upper: np.ndarray | float, n_var: int) -> tuple[np.ndarray, np.ndarray]:
    lo = np.broadcast_to(np.asarray(lower, dtype=float), (n_var,)).copy()
    hi = np.broadcast_to(np.asarray(upper, dtype=float), (n_var,)).copy()
    if np.any(hi < lo) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ProblemError("fields 'lower'/'upper': need finite bounds with lower <= upper")
    return lo, hi


def _sbx_spread(beta: np.ndarray, rand: np.ndarray, eta: float) -> np.ndarray:
    """SBX spread factor beta_q for the bounded variant (``beta`` = distance-to-bound term)."""
    alpha = 2.0 - np.power(beta, -(eta + 1.0))
    inner = np.where(rand <= 1.0 / alpha, rand * alpha, 1.0 / (2.0 - rand * alpha))
    return np.power(inner, 1.0 / (eta + 1.0))


def sbx_crossover(
    A: np.ndarray,
    B: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    rng: np.random.Generator,
    eta: float = SBX_ETA,
    var_prob: float = SBX_VAR_PROB,
) -> np.ndarray:
    """One SBX child per row pair of ``A`` and ``B`` (pymoo's ``SBX(n_offsprings=1)``), clipped to the box."""
    A = np.asarray(A, dtype=float)
    B = np.asarray(B, dtype=float)
    n, d = A.shape
    cross: np.ndarray = (rng.random((n, d)) < var_prob) & (np.abs(A - B) > SBX_EPS) & (upper > lower)
    keep_b = np.asarray(rng.random(n)) < 0.5
    child = np.where(keep_b[:, None], B, A)
    if not cross.any():
        return child
    # Only the crossed variables are transformed: at pop 100 × 30 variables this halves the work
    # and avoids computing spreads for parents that coincide (delta = 0).
    a, b = A[cross], B[cross]
    lo = np.broadcast_to(lower, (n, d))[cross]
    hi = np.broadcast_to(upper, (n, d))[cross]
    y1, y2 = np.minimum(a, b), np.maximum(a, b)
    delta = y2 - y1
    rand = rng.random(a.shape[0])  # one draw serves both children, as in pymoo
    c1 = 0.5 * ((y1 + y2) - _sbx_spread(1.0 + 2.0 * (y1 - lo) / delta, rand, eta) * delta)
    c2 = 0.5 * ((y1 + y2) + _sbx_spread(1.0 + 2.0 * (hi - y2) / delta, rand, eta) * delta)
    upper_child = rng.random(a.shape[0]) < 0.5
    child[cross] = np.clip(np.where(upper_child, c2, c1), lo, hi)
    return child


def polynomial_mutation(
    X: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    rate: float,
    rng: np.random.Generator,
    eta: float = PM_ETA,
) -> np.ndarray:
    """Copies of ``X`` with each variable polynomially mutated with probability ``rate`` (pymoo's ``PM``)."""
    Y = np.array(X, dtype=float, copy=True)
    n, d = Y.shape
    mut: np.ndarray = (rng.random((n, d)) < rate) & (upper > lower)
    if not mut.any():
        return Y
    x = Y[mut]
    lo = np.broadcast_to(lower, (n, d))[mut]
    hi = np.broadcast_to(upper, (n, d))[mut]
    span = hi - lo
    delta1 = (x - lo) / span
    delta2 = (hi - x) / span
    power = 1.0 / (eta + 1.0)
    rand = rng.random(x.shape[0])
    left = rand <= 0.5
    # The bounded variant: the perturbation's distribution is squeezed by the distance to the
    # nearer bound, so a mutant never leaves the box (clip only guards against rounding).
    val_left = 2.0 * rand + (1.0 - 2.0 * rand) * np.power(1.0 - delta1, eta + 1.0)
    val_right = 2.0 * (1.0 - rand) + 2.0 * (rand - 0.5) * np.power(1.0 - delta2, eta + 1.0)
    deltaq = np.where(left, np.power(val_left, power) - 1.0, 1.0 - np.power(val_right, power))
    Y[mut] = np.clip(x + deltaq * span, lo, hi)
    return Y


class RealProblem(Problem):
    """A box-bounded continuous problem: uniform sampling, SBX crossover, polynomial mutation.

    Subclasses implement ``objectives_of(X) -> F`` (and may override ``evaluate`` to add
    constraints) and ``pareto_front(n)``.
    """

    integer = False

    def __init__(
        self,
        n_var: int,
        n_obj: int,
        lower: np.ndarray | float = 0.0,
        upper: np.ndarray | float = 1.0,
        *,
        sbx_eta: float = SBX_ETA,
        sbx_var_prob: float = SBX_VAR_PROB,
        pm_eta: float = PM_ETA,
    ) -> None:
        if n_var < 1 or n_obj < 1:
            raise ProblemError(f"fields 'n_var'/'n_obj': need >= 1, got {n_var}, {n_obj}")
        self.n_var = int(n_var)
        self.objectives = tuple(Objective(f"f{i + 1}") for i in range(n_obj))
        self.constraints = ()
        self.lower, self.upper = _bounds(lower, upper, self.n_var)
        self.sbx_eta = float(sbx_eta)
        self.sbx_var_prob = float(sbx_var_prob)
        self.pm_eta = float(pm_eta)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.lower + rng.random((n, self.n_var)) * (self.upper - self.lower)

    def mutate(self, X: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
        return polynomial_mutation(X, self.lower, self.upper, rate, rng, self.pm_eta)

    def crossover(self, A: np.ndarray, B: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return sbx_crossover(A, B, self.lower, self.upper, rng, self.sbx_eta, self.sbx_var_prob)

    @abstractmethod
    def objectives_of(self, X: np.ndarray) -> np.ndarray:
        """``(n, n_obj)`` objective values (minimised) of every row of ``X``."""

    @abstractmethod
    def pareto_front(self, n: int = 100) -> np.ndarray:
        """Points of the true Pareto front, shape ``(≈n, n_obj)``."""

    def evaluate(self, X: np.ndarray) -> Evaluation:
        F = self.objectives_of(np.asarray(X, dtype=float))
        return Evaluation(F, np.zeros((len(F), 0)), {o.name: F[:, i] for i, o in enumerate(self.objectives)})


class ZDT1(RealProblem):
    """ZDT1 (Zitzler, Deb & Thiele 2000): convex front ``f2 = 1 − √f1``, x ∈ [0, 1]^n."""

    def __init__(self, n_var: int = 30) -> None:
        if n_var < 2:
            raise ProblemError(f"ZDT1: field 'n_var': need >= 2, got {n_var}")
        super().__init__(n_var, 2)

    def _g(self, X: np.ndarray) -> np.ndarray:
        return 1.0 + 9.0 / (self.n_var - 1) * X[:, 1:].sum(axis=1)

    def objectives_of(self, X: np.ndarray) -> np.ndarray:
        f1 = X[:, 0]
        g = self._g(X)
        return np.column_stack([f1, g * (1.0 - np.sqrt(f1 / g))])

    def pareto_front(self, n: int = 100) -> np.ndarray:
        """``n`` points evenly spaced in f1 on ``f2 = 1 − √f1``."""
        f1 = np.linspace(0.0, 1.0, n)
        return np.column_stack([f1, 1.0 - np.sqrt(f1)])


class ZDT2(ZDT1):
    """ZDT2: the concave counterpart, front ``f2 = 1 − f1²``."""

    def objectives_of(self, X: np.ndarray) -> np.ndarray:
        f1 = X[:, 0]
        g = self._g(X)
        return np.column_stack([f1, g * (1.0 - (f1 / g) ** 2)])

    def pareto_front(self, n: int = 100) -> np.ndarray:
        """``n`` points evenly spaced in f1 on ``f2 = 1 − f1²``."""
        f1 = np.linspace(0.0, 1.0, n)
        return np.column_stack([f1, 1.0 - f1**2])


def simplex_lattice(n_obj: int, partitions: int) -> np.ndarray:
    """Das–Dennis points: every ``(n_obj,)`` vector of multiples of ``1/partitions`` summing to 1."""
    if partitions == 0:
        return np.full((1, n_obj), 1.0 / n_obj)
    # Stars and bars: choose where the n_obj − 1 bars go among partitions + n_obj − 1 slots.
    rows = []
    for bars in itertools.combinations(range(partitions + n_obj - 1), n_obj - 1):
        edges = np.array((-1, *bars, partitions + n_obj - 1))
        rows.append(np.diff(edges) - 1)
    return np.array(rows, dtype=float) / partitions


class DTLZ2(RealProblem):
    """DTLZ2 (Deb, Thiele, Laumanns & Zitzler 2002): front on the unit sphere's positive orthant.

    ``n_var = n_obj − 1 + k`` (k = 10 by default, so 12 for 3 objectives).
    """

    def __init__(self, n_obj: int = 3, n_var: int | None = None) -> None:
        if n_obj < 2:
            raise ProblemError(f"DTLZ2: field 'n_obj': need >= 2, got {n_obj}")
        n_var = n_obj + 9 if n_var is None else n_var
        if n_var < n_obj:
            raise ProblemError(f"DTLZ2: field 'n_var': need >= n_obj ({n_obj}), got {n_var}")
        super().__init__(n_var, n_obj)

    def objectives_of(self, X: np.ndarray) -> np.ndarray:
        m = self.n_obj
        head = X[:, : m - 1] * (np.pi / 2.0)
        g = np.square(X[:, m - 1 :] - 0.5).sum(axis=1)
        # f_i = (1+g) · cos(θ_0)…cos(θ_{m−2−i}) · sin(θ_{m−1−i}) (no sine for i = 0).
        cos_prod = np.concatenate([np.ones((len(X), 1)), np.cumprod(np.cos(head), axis=1)], axis=1)
        sines = np.concatenate([np.ones((len(X), 1)), np.sin(head)[:, ::-1]], axis=1)
        return (1.0 + g)[:, None] * cos_prod[:, ::-1] * sines

    def pareto_front(self, n: int = 100) -> np.ndarray:
        """The largest Das–Dennis lattice with at most ``n`` points, projected onto the unit sphere."""
        m = self.n_obj
        p = 0
        while math.comb(p + 1 + m - 1, m - 1) <= n:
            p += 1
        W = simplex_lattice(m, p)
        return W / np.linalg.norm(W, axis=1, keepdims=True)


def benchmark(name: str) -> RealProblem:
    """The benchmark problem called ``name`` (zdt1, zdt2, dtlz2) with its standard size."""
    known: dict[str, Callable[[], RealProblem]] = {"zdt1": ZDT1, "zdt2": ZDT2, "dtlz2": DTLZ2}
    try:
        return known[name.lower()]()
    except KeyError:
        raise ProblemError(f"unknown benchmark {name!r}; allowed: {', '.join(known)}") from None


BENCHMARKS: Sequence[str] = ("zdt1", "zdt2", "dtlz2")
