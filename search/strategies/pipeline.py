"""The hierarchical pipeline: screen cheaply, evolve the survivors, confirm at high fidelity.

1. Screen ``screen`` random candidates with a cheap problem (predictors, analytic costs).
2. Keep the best ``pop_size`` of them by non-dominated rank (feasibility first) as NSGA-II's
   first population, and evolve it on the refinement problem (by default the screening one).
3. Re-evaluate the final population's front with the expensive problem (supernet accuracy,
   measured latency…) and re-rank it there: the front that is reported is the high-fidelity one.

High-fidelity evaluations are the costly part, so they are spent only on the final front.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from search.constraints import feasibility_first
from search.pareto import crowding_distance, pareto_front
from search.problem import Evaluation, Problem
from search.strategies.base import GenerationStats, SearchResult, run
from search.strategies.nsga2 import NSGA2


@dataclass(frozen=True)
class PipelineResult:
    """Every stage's outcome; ``X``/``evaluation`` are the final high-fidelity front."""

    screened: int
    seeds: np.ndarray  # the screening survivors that seeded NSGA-II
    search: SearchResult
    candidates: np.ndarray  # the evolved front sent to high fidelity
    X: np.ndarray
    evaluation: Evaluation
    high_fidelity_evaluations: int


def screen_survivors(X: np.ndarray, ev: Evaluation, keep: int) -> np.ndarray:
    """The best ``keep`` rows of ``X`` as NSGA-II's survival would pick them: constraint-domination
    rank first (feasible fronts, then by violation), larger crowding distance within a front."""
    ranks = feasibility_first(ev.F, ev.G)
    order = np.argsort(ranks, kind="stable")
    cut = ranks[order[min(keep, len(order)) - 1]]  # the front that the cut falls in
    crowd = np.zeros(len(X))
    for r in range(int(cut) + 1):
        members = ranks == r
        if members.any():
            crowd[members] = crowding_distance(ev.F[members])
    return X[np.lexsort((-crowd, ranks))[:keep]]


def hierarchical_search(
    screen_problem: Problem,
    final_problem: Problem,
    *,
    refine_problem: Problem | None = None,
    screen: int = 10_000,
    pop_size: int = 100,
    generations: int = 50,
    seed: int = 0,
    progress: Callable[[GenerationStats], None] | None = None,
    **nsga2_options: Any,
) -> PipelineResult:
    """Run the three stages (see the module docstring); returns the high-fidelity front."""
    rng = np.random.default_rng(seed)
    refine = refine_problem or screen_problem
    X0 = screen_problem.canonical(screen_problem.sample(screen, rng))
    X0 = np.unique(X0, axis=0)
    ev0 = screen_problem.evaluate(X0)
    seeds = screen_survivors(X0, ev0, pop_size)
    strategy = NSGA2(refine, seed=seed, pop_size=pop_size, initial=seeds, **nsga2_options)
    result = run(strategy, max_generations=generations, progress=progress, stop_on_convergence=True)
    candidates, _ = strategy.front()
    ev = final_problem.evaluate(candidates)
    feasible = ev.feasible
    # nothing feasible at high fidelity: report the least-violating candidates' front
    pool = (
        np.flatnonzero(feasible) if feasible.any() else np.flatnonzero(ev.total_violation == ev.total_violation.min())
    )
    front = pool[pareto_front(ev.F[pool])]
    return PipelineResult(
        screened=len(X0),
        seeds=seeds,
        search=result,
        candidates=candidates,
        X=candidates[front],
        evaluation=ev.take(front),
        high_fidelity_evaluations=len(candidates),
    )
