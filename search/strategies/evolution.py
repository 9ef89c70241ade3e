"""Regularized (aging) evolution (Real et al., AAAI 2019): tournament selection where the oldest dies.

The population is a queue of ``population_size`` individuals in order of birth. The first
``ask`` returns ``population_size`` random candidates. Every later ``ask`` returns ``batch``
children; each comes from its own tournament: ``sample_size`` members drawn uniformly without
replacement, the best of them is copied and mutated. ``tell`` appends the children at the young
end and removes as many of the *oldest* members — not the worst — so every individual lives a
bounded time and good architectures have to be rediscovered through their descendants, which
regularises the search toward robust regions (the paper's argument).

"Best" is single-objective: a scalar score to minimise, ``F @ weights`` (F in minimisation form
after the constraint handler) or ``fitness(F)`` from the user, compared feasibility first
(Deb's rules via ``constrained_order``: feasible by score, infeasible by total violation).

With ``distinct`` (default), a child equal to a living member (its parent included) or to a
sibling is replaced by another mutant of the same parent (up to ``max_attempts`` rounds; a child
still stale after that is kept): an unchanged copy would waste an evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from search.constraints import ConstraintHandler, FeasibilityFirst, constrained_order
from search.problem import Evaluation, Problem
from search.strategies.base import Strategy
from search.strategies.nsga2 import fresh_rows

Fitness = Callable[[np.ndarray], np.ndarray]
# Mutants tried at once for a child that repeated a living member (see ``_refresh``).
_CANDIDATES = 4


class EvolutionError(ValueError):
    """A regularized-evolution parameter a user got wrong."""


class RegularizedEvolution(Strategy):
    """Aging evolution with tournament size ``sample_size`` and ``batch`` children per ask.

    ``mutation_rate`` defaults to ``1/n_var``. ``weights`` (one per objective) or ``fitness``
    (``F -> (n,)`` scores to minimise) define the single objective; a one-objective problem needs
    neither. ``constraints`` is the constraint handler (Deb's rules by default).
    """

    name = "evolution"

    def __init__(
        self,
        problem: Problem,
        seed: int = 0,
        population_size: int = 100,
        sample_size: int = 25,
        mutation_rate: float | None = None,
        batch: int = 1,
        *,
        weights: Sequence[float] | None = None,
        fitness: Fitness | None = None,
        constraints: ConstraintHandler | None = None,
        distinct: bool = True,
        max_attempts: int = 20,
    ) -> None:
        super().__init__(problem, seed)
        if population_size < 2:
            raise EvolutionError(f"evolution: field 'population_size': need >= 2, got {population_size}")
        if not 1 <= sample_size <= population_size:
            raise EvolutionError(
                f"evolution: field 'sample_size': need 1..population_size ({population_size}), got {sample_size}"
            )
        if batch < 1:
            raise EvolutionError(f"evolution: field 'batch': need >= 1, got {batch}")
        if max_attempts < 1:
            raise EvolutionError(f"evolution: field 'max_attempts': need >= 1, got {max_attempts}")
        rate = 1.0 / problem.n_var if mutation_rate is None else float(mutation_rate)
        if not 0 < rate <= 1:
            raise EvolutionError(f"evolution: field 'mutation_rate': need 0 < rate <= 1, got {rate}")
        self.handler = constraints or FeasibilityFirst()
        n_obj = len(self.handler.objectives(problem.objectives))
        if weights is not None and fitness is not None:
            raise EvolutionError("evolution: give 'weights' or 'fitness', not both")
        if weights is None and fitness is None:
            if n_obj != 1:
                raise EvolutionError(
                    f"evolution: the problem has {n_obj} objectives; give 'weights' (one per objective) or 'fitness'"
                )
            weights = (1.0,)
        if weights is not None and len(weights) != n_obj:
            raise EvolutionError(
                f"evolution: field 'weights': need {n_obj} values (one per objective), got {len(weights)}"
            )
        self.population_size = int(population_size)
        self.sample_size = int(sample_size)
        self.mutation_rate = rate
        self.batch = int(batch)
        self.weights = None if weights is None else np.asarray(weights, dtype=float)
        self.fitness = fitness
        self.distinct = bool(distinct)
        self.max_attempts = int(max_attempts)
        # The living population, oldest first (row 0 dies next).
        self.X: np.ndarray | None = None
        self.F = np.zeros((0, problem.n_obj))
        self.G = np.zeros((0, 0))

    def params(self) -> dict[str, Any]:
        return {
            "seed": self.seed, "population_size": self.population_size, "sample_size": self.sample_size,
            "mutation_rate": self.mutation_rate, "batch": self.batch,
            "weights": None if self.weights is None else self.weights.tolist(),
            "fitness": None if self.fitness is None else getattr(self.fitness, "__qualname__", "callable"),
            "constraints": self.handler.params(), "distinct": self.distinct,
        }

    # ---- scoring ----------------------------------------------------------------------------
    def scores(self, F: np.ndarray, G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(score to minimise, handler's violations) of rows with raw ``F``/``G`` at this generation."""
        Fh, Gh = self.handler.transform(F, G, self.generation)
        if self.fitness is not None:
            score = np.asarray(self.fitness(Fh), dtype=float).reshape(len(Fh))
        else:
            assert self.weights is not None  # set in __init__ whenever fitness is None
            score = Fh @ self.weights
        return score, Gh

    def best(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, F row, G row) of the best living individual (feasibility first, then score)."""
        if self.X is None or len(self.X) == 0:
            raise EvolutionError("evolution: no population yet (ask and tell first)")
        score, Gh = self.scores(self.F, self.G)
        i = int(np.argmin(constrained_order(score, Gh)))
        return self.X[i], self.F[i], self.G[i]

    # ---- ask / tell -------------------------------------------------------------------------
    def ask(self) -> np.ndarray:
        P = self.problem
        if self.X is None or len(self.X) < self.population_size:
            have = 0 if self.X is None else len(self.X)
            X = P.canonical(P.sample(self.population_size - have, self.rng))
            if self.distinct:
                existing = self.X if self.X is not None else X[:0]
                X = X[fresh_rows(existing, X)]
            return X
        score, Gh = self.scores(self.F, self.G)
        position = constrained_order(score, Gh)
        # One tournament per child: sample_size distinct members (the smallest of random keys).
        keys = self.rng.random((self.batch, self.population_size))
        sampled = np.argpartition(keys, self.sample_size - 1, axis=1)[:, : self.sample_size]
        parents = sampled[np.arange(self.batch), position[sampled].argmin(axis=1)]
        children = P.canonical(P.mutate(self.X[parents], self.mutation_rate, self.rng))
        if self.distinct:
            children = self._refresh(children, parents)
        return children

    def _refresh(self, children: np.ndarray, parents: np.ndarray) -> np.ndarray:
        """``children`` with each copy of a living member or of a sibling replaced by a new mutant."""
        assert self.X is not None  # children exist only once there is a population
        P = self.problem
        stale = ~fresh_rows(self.X, children)
        for _ in range(self.max_attempts):
            if not stale.any():
                break
            # At a per-gene rate of 1/L about a third of mutants equal their parent, so each stale
            # child gets several candidates at once: one de-duplication pass instead of a handful.
            idx = np.flatnonzero(stale)
            candidates = P.canonical(P.mutate(np.repeat(self.X[parents[idx]], _CANDIDATES, axis=0),
                                              self.mutation_rate, self.rng))
            ok = fresh_rows(np.concatenate([self.X, children[~stale]]), candidates).reshape(len(idx), _CANDIDATES)
            found = ok.any(axis=1)
            chosen = candidates.reshape(len(idx), _CANDIDATES, -1)[np.arange(len(idx)), ok.argmax(axis=1)]
            children[idx[found]] = chosen[found]
            stale[idx[found]] = False
        return children

    def tell(self, X: np.ndarray, evaluation: Evaluation) -> None:
        X = np.asarray(X)
        F = np.asarray(evaluation.F, dtype=float)
        G = np.asarray(evaluation.G, dtype=float).reshape(len(F), -1)
        if self.X is None:
            self.X, self.F, self.G = X.copy(), F.copy(), G.copy()
        else:
            self.X = np.concatenate([self.X, X.astype(self.X.dtype, copy=False)])
            self.F = np.concatenate([self.F, F])
            self.G = np.concatenate([self.G, G])
        excess = len(self.X) - self.population_size
        if excess > 0:  # the oldest die, whatever their fitness
            self.X, self.F, self.G = self.X[excess:], self.F[excess:], self.G[excess:]
        self.generation += 1

    # ---- checkpoint -------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        scalars, arrays = super().state()
        scalars["initialised"] = self.X is not None
        if self.X is not None:
            arrays.update(X=self.X, F=self.F, G=self.G)
        return scalars, arrays

    def load_state(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super().load_state(scalars, arrays)
        if scalars["initialised"]:
            self.X = np.array(arrays["X"])
            self.F, self.G = np.array(arrays["F"], dtype=float), np.array(arrays["G"], dtype=float)
        else:
            self.X = None
