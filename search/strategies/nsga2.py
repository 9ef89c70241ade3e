"""NSGA-II (Deb et al. 2002) over any ``Problem``, with adaptive selection pressure and mutation.

One generation: pick parents by tournament, cross pairs (probability ``crossover_prob``) with the
problem's crossover, mutate with the problem's mutation, drop offspring that duplicate the
population or each other (canonical rows compared exactly, as pymoo's
``eliminate_duplicates=True``), evaluate, and keep the best ``pop_size`` of parents ∪ offspring
by constrained non-dominated rank, then crowding distance. The first ``tell`` receives the
initial, uniformly sampled population.

Ranking follows Deb's constraint-domination on the values the ``ConstraintHandler`` produces
(default ``FeasibilityFirst``): feasible before infeasible, infeasible by total violation, feasible
by Pareto rank, then by crowding distance (larger wins); remaining ties are broken at random.
The handler sees the generation counter (0 when the initial population is told, then 1, 2, …) and
is re-applied to the stored raw F/G at every survival, so a tightening limit re-ranks the whole
population, not just the newcomers.

Adaptive parts (``t`` = offspring generations produced so far, 0 for the first mating):

- **Tournament size** ``k_t = k_min + (k_max − k_min)·(1 − e^(−t/τ))``, rounded half up: selection
  pressure grows from ``k_min`` (exploration) to ``k_max``. ``(2, 2)`` is NSGA-II's binary
  tournament.
- **Mutation rate** from the population's normalised objective variance
  ``s_t = mean_j Var_t(F_j) / Var_0(F_j)`` (``Var_0``: the initial population's, objectives with
  ``Var_0 = 0`` skipped; ``s_t = 1`` if none is left). After each survival, if ``s_t < collapse``
  the population has stagnated and the rate grows, ``r ← min(r_max, growth·r)``; otherwise it
  relaxes toward the base rate, ``r ← r_base + relax·(r − r_base)``. See ``MutationSchedule``.
- **Convergence**: after each survival, ``front_change`` between the previous and the new
  population's first (feasible) front, against a reference point fixed from the initial
  population (its worst value per objective plus 10 % of its range). ``converged`` once the
  change has stayed below ``tol`` for ``patience`` consecutive generations.

The whole state — population X/F/G and its ranks/crowding, the generator, the adaptive rate,
the normalisation and reference point, the convergence counter — is checkpointed, so a resumed
run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from search.constraints import ConstraintHandler, FeasibilityFirst, feasibility_first, total_violation
from search.pareto import crowding_distance, front_change
from search.problem import Evaluation, Problem
from search.strategies.base import Strategy


class NSGA2Error(ValueError):
    """An NSGA-II parameter a user got wrong."""


# ---- schedules (pure, so they can be checked by hand) -----------------------------------------
def tournament_size(t: float, k_min: int, k_max: int, tau: float) -> float:
    """``k_min + (k_max − k_min)·(1 − e^(−t/τ))``: the (real) tournament size at generation ``t``."""
    return k_min + (k_max - k_min) * (1.0 - math.exp(-t / tau))


def tournament_k(t: float, k_min: int, k_max: int, tau: float) -> int:
    """The tournament size used at generation ``t``: ``tournament_size`` rounded half up."""
    return math.floor(tournament_size(t, k_min, k_max, tau) + 0.5)


def population_spread(F: np.ndarray, reference_var: np.ndarray) -> float:
    """``mean_j Var(F_j) / reference_var_j`` over objectives with ``reference_var_j > 0`` (1.0 if none)."""
    F = np.asarray(F, dtype=float)
    ref = np.asarray(reference_var, dtype=float)
    use = ref > 0
    if not use.any() or len(F) == 0:
        return 1.0
    return float(np.mean(F[:, use].var(axis=0) / ref[use]))


@dataclass(frozen=True)
class MutationSchedule:
    """Variance-driven mutation rate: grow on collapse (stagnation), relax toward ``base`` otherwise."""

    base: float
    maximum: float
    collapse: float = 0.01
    growth: float = 2.0
    relax: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.maximum <= 1:
            raise NSGA2Error(f"mutation: need 0 < mutation_rate ({self.base}) <= mutation_max ({self.maximum}) <= 1")
        if not (self.collapse >= 0 and self.growth >= 1 and 0 <= self.relax <= 1):
            raise NSGA2Error(
                f"mutation: need collapse >= 0, growth >= 1, 0 <= relax <= 1; got {self.collapse}, "
                f"{self.growth}, {self.relax}"
            )

    def next_rate(self, rate: float, spread: float) -> float:
        """The rate for the next generation given the current ``rate`` and the spread ``s_t``."""
        if spread < self.collapse:
            return min(self.maximum, rate * self.growth)
        return self.base + self.relax * (rate - self.base)


# ---- rows ------------------------------------------------------------------------------------
def row_keys(X: np.ndarray) -> np.ndarray:
    """(n,) opaque keys, equal exactly when the rows of ``X`` are equal (compare keys of one call only)."""
    A = np.asarray(X)
    if np.issubdtype(A.dtype, np.integer) and A.size and A.min() >= 0:
        # Architecture genes are small option indices: narrowing to the smallest unsigned type
        # shrinks the bytes np.unique compares (uint8: 8x fewer than int64, ~5x faster).
        top = int(A.max())
        for narrow in (np.uint8, np.uint16, np.uint32):
            if top <= np.iinfo(narrow).max:
                A = A.astype(narrow)
                break
    A = np.ascontiguousarray(A)
    return A.view(np.dtype((np.void, A.dtype.itemsize * A.shape[1]))).ravel()


def fresh_rows(existing: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Boolean mask of ``candidates`` rows equal to no ``existing`` row and to no earlier candidate."""
    if len(candidates) == 0:
        return np.zeros(0, dtype=bool)
    keys = row_keys(np.concatenate([existing, candidates.astype(existing.dtype, copy=False)]))
    # np.unique's first-occurrence indices are stable: an existing row always wins over a copy.
    _, first = np.unique(keys, return_index=True)
    is_first = np.zeros(len(keys), dtype=bool)
    is_first[first] = True
    return is_first[len(existing) :]


def reference_point(F: np.ndarray) -> np.ndarray:
    """Worst value per objective plus 10 % of the range (10 % of max(|worst|, 1) for a zero range)."""
    F = np.asarray(F, dtype=float)
    hi, lo = F.max(axis=0), F.min(axis=0)
    span = hi - lo
    return hi + 0.1 * np.where(span > 0, span, np.maximum(np.abs(hi), 1.0))


def _digest(X: np.ndarray) -> str:
    """A short, stable fingerprint of an array (for checkpoint parameter checks)."""
    import hashlib

    arr = np.ascontiguousarray(X)
    return hashlib.sha256(arr.tobytes() + str((arr.dtype, arr.shape)).encode()).hexdigest()[:16]


class NSGA2(Strategy):
    """NSGA-II with adaptive tournament size, adaptive mutation and convergence detection.

    ``mutation_rate`` defaults to ``min(0.5, 1/n_var)`` (pymoo's). ``mutation_max`` bounds the
    adaptive rate (default ``min(1, 4·mutation_rate)``). ``tournament=(k_min, k_max)`` with time
    constant ``tau`` (generations). ``constraints`` is the constraint handler (Deb's rules by
    default). ``tol``/``patience`` drive ``converged``. ``initial`` seeds the first population (e.g. a
    screening stage's survivors; topped up with samples).
    """

    name = "nsga2"

    def __init__(
        self,
        problem: Problem,
        seed: int = 0,
        pop_size: int = 100,
        crossover_prob: float = 0.9,
        mutation_rate: float | None = None,
        adaptive_mutation: bool = True,
        tournament: tuple[int, int] = (2, 2),
        tau: float = 20.0,
        *,
        mutation_max: float | None = None,
        collapse: float = 0.01,
        tol: float = 1e-4,
        patience: int = 10,
        constraints: ConstraintHandler | None = None,
        max_mating_attempts: int = 100,
        initial: np.ndarray | None = None,
    ) -> None:
        super().__init__(problem, seed)
        if pop_size < 2:
            raise NSGA2Error(f"nsga2: field 'pop_size': need >= 2, got {pop_size}")
        if not 0 <= crossover_prob <= 1:
            raise NSGA2Error(f"nsga2: field 'crossover_prob': need 0..1, got {crossover_prob}")
        k_min, k_max = (int(k) for k in tournament)
        if not 1 <= k_min <= k_max:
            raise NSGA2Error(f"nsga2: field 'tournament': need 1 <= k_min <= k_max, got {tuple(tournament)}")
        if not tau > 0:
            raise NSGA2Error(f"nsga2: field 'tau': need > 0, got {tau}")
        if max_mating_attempts < 1:
            raise NSGA2Error(f"nsga2: field 'max_mating_attempts': need >= 1, got {max_mating_attempts}")
        if patience < 1 or not tol >= 0:
            raise NSGA2Error(f"nsga2: fields 'tol'/'patience': need tol >= 0, patience >= 1; got {tol}, {patience}")
        base = min(0.5, 1.0 / problem.n_var) if mutation_rate is None else float(mutation_rate)
        self.pop_size = int(pop_size)
        self.crossover_prob = float(crossover_prob)
        self.adaptive_mutation = bool(adaptive_mutation)
        self.k_min, self.k_max, self.tau = k_min, k_max, float(tau)
        self.schedule = MutationSchedule(
            base, min(1.0, 4.0 * base) if mutation_max is None else float(mutation_max), collapse=collapse
        )
        self.tol, self.patience = float(tol), int(patience)
        self.handler = constraints or FeasibilityFirst()
        self.max_mating_attempts = int(max_mating_attempts)
        self.mutation_rate = base
        # Filled by the first tell; until then ask() samples the initial population.
        self.X: np.ndarray | None = None
        self.F = np.zeros((0, problem.n_obj))
        self.G = np.zeros((0, 0))
        self.rank = np.zeros(0, dtype=np.int64)
        self.crowding = np.zeros(0)
        self.var_ref = np.zeros(0)
        self.ref_point = np.zeros(0)
        self.stall = 0
        self.last_change = math.inf
        # Seed candidates for the first population (a screening stage's survivors); topped up
        # with samples. Only the first ask uses them, so checkpoints record just their digest.
        self.initial = None if initial is None else problem.canonical(np.asarray(initial))

    def params(self) -> dict[str, Any]:
        s = self.schedule
        return {
            "seed": self.seed,
            "pop_size": self.pop_size,
            "crossover_prob": self.crossover_prob,
            "mutation_rate": s.base,
            "mutation_max": s.maximum,
            "collapse": s.collapse,
            "adaptive_mutation": self.adaptive_mutation,
            "tournament": [self.k_min, self.k_max],
            "tau": self.tau,
            "tol": self.tol,
            "patience": self.patience,
            "constraints": self.handler.params(),
            "initial": None if self.initial is None else _digest(self.initial),
        }

    # ---- views ------------------------------------------------------------------------------
    @property
    def t(self) -> int:
        """Offspring generations produced so far (0 until the initial population is told)."""
        return max(self.generation - 1, 0)

    @property
    def tournament_size(self) -> int:
        """The tournament size the next mating uses."""
        return tournament_k(self.t, self.k_min, self.k_max, self.tau)

    @property
    def converged(self) -> bool:
        return self.stall >= self.patience

    def front(self) -> tuple[np.ndarray, np.ndarray]:
        """(X, F) of the population's rank-0 rows: its first feasible front (or, with nothing feasible,
        its least-violating rows); raw F, minimisation form."""
        if self.X is None:
            return np.zeros((0, self.problem.n_var)), np.zeros((0, self.problem.n_obj))
        first = self.rank == 0
        return self.X[first], self.F[first]

    # ---- ask --------------------------------------------------------------------------------
    def ask(self) -> np.ndarray:
        if self.X is None:
            return self._initial()
        pop = self.X
        kept = pop[:0]
        for attempt in range(self.max_mating_attempts):
            need = self.pop_size - len(kept)
            # A few percent of children repeat a parent (no crossover, no mutation); making 10 %
            # more up front usually saves a second round of mating and de-duplication.
            C = self._mate(need + need // 10 + 1 if attempt == 0 else need)
            fresh = fresh_rows(np.concatenate([pop, kept]), C)
            kept = np.concatenate([kept, C[fresh][:need]])
            if len(kept) == self.pop_size:
                break
        if len(kept) == 0:
            # Every mating reproduced the population (a tiny, exhausted space): evaluate the last
            # offspring anyway rather than stall the loop with an empty batch.
            kept = C[: self.pop_size]
        return kept

    def _initial(self) -> np.ndarray:
        P = self.problem
        if self.initial is not None and len(self.initial):
            seeds = self.initial[: self.pop_size]
            X = seeds[fresh_rows(seeds[:0], seeds)]
        else:
            X = P.canonical(P.sample(self.pop_size, self.rng))
            X = X[fresh_rows(X[:0], X)]
        for _ in range(self.max_mating_attempts):
            if len(X) >= self.pop_size:
                break
            more = P.canonical(P.sample(self.pop_size - len(X), self.rng))
            X = np.concatenate([X, more[fresh_rows(X, more)]])
        return X

    def _tournament(self, n: int, k: int) -> np.ndarray:
        """Indices of ``n`` tournament winners of size ``k`` (vectorised; competitors by permutations)."""
        N = len(self.rank)
        # Best first: constrained rank, then larger crowding, then a fresh random tie-break.
        order = np.lexsort((self.rng.random(N), -self.crowding, self.rank))
        position = np.empty(N, dtype=np.int64)
        position[order] = np.arange(N)
        # Concatenated permutations (as pymoo) give every member the same number of tournaments.
        draws = n * k
        perms = -(-draws // N)
        competitors = self.rng.permuted(np.tile(np.arange(N), (perms, 1)), axis=1).ravel()[:draws].reshape(n, k)
        best = position[competitors].argmin(axis=1)
        return competitors[np.arange(n), best]

    def _mate(self, n: int) -> np.ndarray:
        assert self.X is not None  # only called after the initial population
        P, rng = self.problem, self.rng
        parents = self._tournament(2 * n, self.tournament_size)
        A, B = self.X[parents[:n]], self.X[parents[n:]]
        cross = rng.random(n) < self.crossover_prob
        C = A.copy()
        if cross.any():
            C[cross] = P.crossover(A[cross], B[cross], rng)
        return P.canonical(P.mutate(C, self.mutation_rate, rng))

    # ---- tell -------------------------------------------------------------------------------
    def tell(self, X: np.ndarray, evaluation: Evaluation) -> None:
        F = np.asarray(evaluation.F, dtype=float)
        G = np.asarray(evaluation.G, dtype=float).reshape(len(F), -1)
        X = np.asarray(X)
        initial = self.X is None
        if self.X is not None:
            prev_front = self._handled_front()
            X = np.concatenate([self.X, X.astype(self.X.dtype, copy=False)])
            F = np.concatenate([self.F, F])
            G = np.concatenate([self.G, G])
        keep, rank, crowd = self._survive(F, G)
        self.X, self.F, self.G = X[keep], F[keep], G[keep]
        self.rank, self.crowding = rank, crowd
        Fh, Gh = self.handler.transform(self.F, self.G, self.generation)
        if initial:
            feasible = total_violation(Gh) <= 0
            self.var_ref = Fh.var(axis=0)
            self.ref_point = reference_point(Fh[feasible] if feasible.any() else Fh)
        else:
            if self.adaptive_mutation:
                self.mutation_rate = self.schedule.next_rate(self.mutation_rate, population_spread(Fh, self.var_ref))
            new_front = self._handled_front()
            if len(prev_front) and len(new_front):
                self.last_change = front_change(prev_front, new_front, self.ref_point)
                self.stall = self.stall + 1 if self.last_change < self.tol else 0
            else:
                self.last_change, self.stall = math.inf, 0
        self.generation += 1

    def _handled_front(self) -> np.ndarray:
        """The handler's F of the population's feasible first front (empty if nothing is feasible)."""
        Fh, Gh = self.handler.transform(self.F, self.G, self.generation)
        first = (self.rank == 0) & (total_violation(Gh) <= 0)
        return Fh[first]

    def _survive(self, F: np.ndarray, G: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(survivor indices, their ranks, their crowding) — the best ``pop_size`` rows."""
        Fh, Gh = self.handler.transform(F, G, self.generation)
        ranks = feasibility_first(Fh, Gh)
        feasible = total_violation(Gh) <= 0
        n, N = len(F), self.pop_size
        order = np.argsort(ranks, kind="stable")
        counts = np.bincount(ranks)
        ends = np.cumsum(counts)
        split = int(np.searchsorted(ends, min(N, n)))  # the front that fills the population
        crowd = np.zeros(n)
        n_feasible_fronts = int(ranks[feasible].max()) + 1 if feasible.any() else 0
        # Crowding only matters within feasible fronts (infeasible ones are ordered by violation)
        # and only for fronts that survive, so later fronts are never measured.
        for r in range(min(split + 1, n_feasible_fronts)):
            members = order[ends[r] - counts[r] : ends[r]]
            crowd[members] = crowding_distance(Fh[members])
        if n <= N:
            keep = np.arange(n)
        else:
            full = order[: ends[split] - counts[split]]
            tied = order[ends[split] - counts[split] : ends[split]]
            need = N - len(full)
            pick = np.lexsort((self.rng.random(len(tied)), -crowd[tied]))[:need]
            keep = np.sort(np.concatenate([full, tied[pick]]))
        return keep, ranks[keep], crowd[keep]

    # ---- checkpoint -------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        scalars, arrays = super().state()
        # JSON has no infinity: "no change measured yet" is stored as null.
        change = self.last_change if math.isfinite(self.last_change) else None
        scalars.update(
            mutation_rate=self.mutation_rate, stall=self.stall, last_change=change, initialised=self.X is not None
        )
        if self.X is not None:
            arrays.update(
                X=self.X,
                F=self.F,
                G=self.G,
                rank=self.rank,
                crowding=self.crowding,
                var_ref=self.var_ref,
                ref_point=self.ref_point,
            )
        return scalars, arrays

    def load_state(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super().load_state(scalars, arrays)
        self.mutation_rate = float(scalars["mutation_rate"])
        self.stall = int(scalars["stall"])
        change = scalars["last_change"]
        self.last_change = math.inf if change is None else float(change)
        if scalars["initialised"]:
            self.X = np.array(arrays["X"])
            self.F, self.G = np.array(arrays["F"], dtype=float), np.array(arrays["G"], dtype=float)
            self.rank, self.crowding = np.array(arrays["rank"], dtype=np.int64), np.array(arrays["crowding"])
            self.var_ref, self.ref_point = np.array(arrays["var_ref"]), np.array(arrays["ref_point"])
        else:
            self.X = None
