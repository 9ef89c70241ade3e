"""NSGA-II: recovers known fronts, beats the ZDT1 bar, resumes bit-identically, adapts as documented."""

import math
from functools import cache

import numpy as np
import pytest

from runtime.hardware import load_device
from search.cost.table import SpaceCostTable
from search.pareto import hypervolume, pareto_front
from search.problem import Constraint, Evaluation, Objective, SpaceProblem
from search.problems import DTLZ2, ZDT1
from search.space import MobileNetV3Config, MobileNetV3Space
from search.strategies.base import load_checkpoint, run
from search.strategies.nsga2 import (
    NSGA2,
    MutationSchedule,
    NSGA2Error,
    fresh_rows,
    population_spread,
    reference_point,
    tournament_k,
    tournament_size,
)


@cache
def small_space() -> tuple[MobileNetV3Space, SpaceCostTable]:
    """A 16,000-network MobileNetV3 space (small enough to enumerate) and its rpi4 cost table."""
    cfg = MobileNetV3Config(
        resolutions=(128, 160), depths=(1, 2), kernels=(3, 5), expands=(3, 6), stage_channels=(24, 40, 80),
        stage_strides=(2, 2, 2), stage_se=(False, True, True), stage_acts=("relu", "hswish", "hswish"),
    )
    space = MobileNetV3Space(cfg)
    return space, SpaceCostTable(space, load_device("rpi4"))


def small_space_problem(constraints=()) -> SpaceProblem:
    """Latency (min) vs parameters (max, a capacity proxy) over ``small_space``: 149 Pareto-optimal networks."""
    space, table = small_space()
    return SpaceProblem(space, [table.evaluate], [Objective("latency_ms"), Objective("params", "max")], constraints)


def enumerated(problem: SpaceProblem) -> tuple[np.ndarray, Evaluation]:
    """Every network of the problem's space and its evaluation."""
    X = np.concatenate(list(problem.space.enumerate()))
    return X, problem.evaluate(X)


def evolve(strategy, generations):
    for _ in range(generations):
        X = strategy.ask()
        strategy.tell(X, strategy.problem.evaluate(X))
    return strategy


# ---- schedules by hand ----------------------------------------------------------------------
def test_tournament_schedule_by_hand():
    assert tournament_size(0, 2, 6, 10) == 2
    assert tournament_size(10, 2, 6, 10) == pytest.approx(2 + 4 * (1 - math.exp(-1)))  # 4.528
    assert tournament_k(10, 2, 6, 10) == 5
    assert tournament_k(2, 2, 6, 10) == 3  # 2 + 4·(1 − e^−0.2) = 2.725 → 3
    assert tournament_k(1, 2, 6, 10) == 2  # 2.381 → 2
    assert tournament_k(1000, 2, 6, 10) == 6
    assert all(tournament_k(t, 2, 2, 5) == 2 for t in range(50))  # (2, 2): binary tournament
    s = NSGA2(ZDT1(), tournament=(2, 6), tau=10)
    assert s.tournament_size == 2
    evolve(s, 12)  # initial population + 11 offspring generations
    assert s.t == 11 and s.tournament_size == tournament_k(11, 2, 6, 10) == 5


def test_mutation_schedule_by_hand():
    m = MutationSchedule(base=0.1, maximum=0.4, collapse=0.01, growth=2.0, relax=0.5)
    rates = [0.1]
    for spread in (0.005, 0.001, 0.0, 0.009):  # collapsed: doubles, capped at 0.4
        rates.append(m.next_rate(rates[-1], spread))
    assert rates == pytest.approx([0.1, 0.2, 0.4, 0.4, 0.4])
    for spread in (0.5, 0.01, 3.0):  # spread again: halves the distance to the base each time
        rates.append(m.next_rate(rates[-1], spread))
    assert rates[-3:] == pytest.approx([0.25, 0.175, 0.1375])
    with pytest.raises(NSGA2Error, match="mutation_max"):
        MutationSchedule(base=0.5, maximum=0.2)


def test_population_spread_by_hand():
    F = np.array([[0.0, 0.0], [2.0, 4.0]])  # variances 1 and 4
    assert population_spread(F, np.array([1.0, 16.0])) == pytest.approx((1 + 0.25) / 2)
    assert population_spread(F, np.array([0.0, 4.0])) == pytest.approx(1.0)  # zero reference: skipped
    assert population_spread(F, np.zeros(2)) == 1.0
    np.testing.assert_allclose(reference_point(np.array([[0.0, 5.0], [10.0, 5.0]])), [11.0, 5.5])


# ---- adaptive mutation in a run --------------------------------------------------------------
class Sphere(ZDT1):
    """One objective, ‖x − 0.3‖²: the population collapses onto the optimum."""

    def __init__(self):
        super().__init__(n_var=4)
        self.objectives = self.objectives[:1]

    def objectives_of(self, X):
        return np.square(X - 0.3).sum(axis=1, keepdims=True)


def test_adaptive_mutation_rises_when_the_population_collapses():
    fixed = evolve(NSGA2(Sphere(), pop_size=40, adaptive_mutation=False), 30)
    assert fixed.mutation_rate == 0.25  # min(0.5, 1/4): never moves
    s = NSGA2(Sphere(), pop_size=40)
    rates, spreads = [], []
    for _ in range(30):
        X = s.ask()
        s.tell(X, s.problem.evaluate(X))
        rates.append(s.mutation_rate)
        spreads.append(population_spread(s.F, s.var_ref))
    # the rule, replayed from the recorded spreads
    replay = [0.25]
    for spread in spreads[1:]:
        replay.append(s.schedule.next_rate(replay[-1], spread))
    assert rates == pytest.approx(replay)
    assert spreads[-1] < 0.01 and max(rates) == s.schedule.maximum == 1.0


def test_adaptive_mutation_stays_at_base_while_the_front_is_spread():
    s = evolve(NSGA2(ZDT1()), 30)
    assert population_spread(s.F, s.var_ref) > 0.1
    assert s.mutation_rate == pytest.approx(1 / 30)


# ---- search quality --------------------------------------------------------------------------
def test_recovers_the_enumerated_front_of_a_small_space():
    problem = small_space_problem()
    _, ev = enumerated(problem)
    true_front = np.unique(ev.F[pareto_front(ev.F)], axis=0)
    assert len(true_front) == 147
    s = evolve(NSGA2(problem, seed=0, pop_size=200), 40)
    found = np.unique(s.front()[1], axis=0)
    hit = (true_front[:, None, :] == found[None, :, :]).all(axis=2).any(axis=1)
    assert hit.mean() >= 0.95
    assert len(np.unique(s.X, axis=0)) == len(s.X) == 200  # no duplicates survive


def test_zdt1_hypervolume_after_100_generations():
    # pymoo's NSGA-II reaches ~0.849 with 100 × 100; 200 × 100 with a growing tournament passes 0.86
    s = evolve(NSGA2(ZDT1(), seed=0, pop_size=200, tournament=(2, 4)), 100)
    assert hypervolume(s.front()[1], [1.1, 1.1]) >= 0.86


def test_offspring_are_new_rows():
    problem = small_space_problem()
    s = evolve(NSGA2(problem, seed=1, pop_size=60), 5)
    for _ in range(5):
        X = s.ask()
        assert len(X) == 60
        assert fresh_rows(s.X, X).all()  # not in the population, not repeated
        s.tell(X, problem.evaluate(X))
    np.testing.assert_array_equal(fresh_rows(np.array([[1, 2]]), np.array([[1, 2], [3, 4], [3, 4]])),
                                  [False, True, False])


def test_survival_keeps_feasible_fronts_first():
    # latency must stay under the median of the space: constraint-domination keeps infeasible
    # networks out of the population as soon as enough feasible ones exist
    problem = small_space_problem()
    _, ev = enumerated(problem)
    limit = float(np.median(ev.metrics["latency_ms"]))
    constrained = small_space_problem([Constraint("latency_ms", limit)])
    s = evolve(NSGA2(constrained, seed=2, pop_size=100), 15)
    assert s.G.max() <= 0
    assert (s.rank == 0).sum() == len(s.front()[0])


# ---- convergence -----------------------------------------------------------------------------
def test_convergence_fires_on_a_converged_run_only():
    problem = small_space_problem()
    fresh = evolve(NSGA2(problem, seed=0, pop_size=200), 3)
    assert not fresh.converged
    zdt = evolve(NSGA2(ZDT1(), seed=0), 30)
    assert not zdt.converged and zdt.last_change > zdt.tol
    result = run(NSGA2(problem, seed=0, pop_size=200, patience=5), max_generations=200)
    assert result.stopped_by == "converged"
    assert result.history.generations[-1]["generation"] < 60


# ---- checkpoints ----------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: NSGA2(ZDT1(), seed=3, pop_size=30, tournament=(2, 5), tau=3),
                                  lambda: NSGA2(small_space_problem(), seed=3, pop_size=30),
                                  lambda: NSGA2(DTLZ2(), seed=4, pop_size=24),
                                  lambda: NSGA2(Sphere(), seed=1, pop_size=20, tol=1e-3, patience=2)])
def test_resume_is_bit_identical(tmp_path, make):
    whole = run(make(), max_generations=10, checkpoint=tmp_path / "a.npz", stop_on_convergence=False,
                checkpoint_every_s=0)
    path = tmp_path / "b.npz"
    run(make(), max_generations=4, checkpoint=path, stop_on_convergence=False, checkpoint_every_s=0)
    resumed_strategy = make()
    load_checkpoint(path, resumed_strategy)
    assert resumed_strategy.generation == 4
    resumed = run(resumed_strategy, max_generations=10, checkpoint=path, resume=True, stop_on_convergence=False)
    assert len(resumed.history.X) == len(whole.history.X) == 10
    for a, b in zip(whole.history.X, resumed.history.X, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(whole.history.F, resumed.history.F, strict=True):
        np.testing.assert_array_equal(a, b)
    s_whole, s_resumed = make(), make()
    load_checkpoint(tmp_path / "a.npz", s_whole)
    load_checkpoint(path, s_resumed)
    assert s_whole.mutation_rate == s_resumed.mutation_rate and s_whole.stall == s_resumed.stall
    np.testing.assert_array_equal(s_whole.X, s_resumed.X)


def test_bad_parameters_name_the_field():
    for kwargs, field in (({"pop_size": 1}, "pop_size"), ({"tournament": (3, 2)}, "tournament"),
                          ({"crossover_prob": 1.5}, "crossover_prob"), ({"tau": 0}, "tau")):
        with pytest.raises(NSGA2Error, match=field):
            NSGA2(ZDT1(), **kwargs)
