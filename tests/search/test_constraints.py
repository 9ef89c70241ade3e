"""Constraint handling: Deb's rules, penalties, ε-constraints, progressive tightening, fleet metrics."""

import math

import numpy as np
import pytest

from runtime.hardware import load_device
from runtime.metrics import mnas_reward
from search.constraints import (
    Chain,
    ConstraintError,
    EpsilonConstraint,
    FeasibilityFirst,
    HandledProblem,
    ProgressiveConstraint,
    ProgressiveTightening,
    QuadraticPenalty,
    constrained_order,
    epsilon_constraint,
    feasibility_first,
    mnas_reward_metric,
    quadratic_penalty,
    tightening_schedule,
    total_violation,
    weighted_latency,
)
from search.cost.table import SpaceCostTable
from search.problem import Constraint, Evaluation, Objective, ProblemError, SpaceProblem
from search.problems import ZDT1
from search.strategies.evolution import RegularizedEvolution
from search.strategies.nsga2 import NSGA2
from tests.search.test_nsga2 import enumerated, evolve, small_space, small_space_problem


# ---- Deb's rules ----------------------------------------------------------------------------
def test_feasibility_first_ranks_by_hand():
    F = np.array([[1, 4], [2, 2], [3, 3], [0, 0], [5, 5], [9, 9], [4, 1]], dtype=float)
    G = np.array([[0], [-1], [0], [0.5], [2.0], [0.5], [0]], dtype=float)
    # feasible rows 0, 1, 2, 6: fronts {0, 1, 6}, {2}; infeasible by violation: {3, 5} (0.5), {4} (2.0)
    np.testing.assert_array_equal(feasibility_first(F, G), [0, 0, 1, 2, 3, 2, 0])
    np.testing.assert_array_equal(total_violation(G), [0, 0, 0, 0.5, 2.0, 0.5, 0])
    assert total_violation(np.zeros((3, 0))).tolist() == [0, 0, 0]
    # unconstrained: plain non-dominated ranks ((0, 0) dominates everyone)
    np.testing.assert_array_equal(feasibility_first(F, np.zeros((7, 0))), [1, 1, 2, 0, 3, 4, 1])


def test_constrained_order_by_hand():
    score = np.array([3.0, 1.0, 2.0, 0.0, -5.0])
    G = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, -1.0], [0.2, 0.0], [0.1, 0.3]])
    # feasible by score: 1, 2, 0; then infeasible by total violation: 3 (0.2), 4 (0.4)
    np.testing.assert_array_equal(constrained_order(score, G), [2, 0, 1, 3, 4])


def test_infeasible_region_is_avoided():
    # ZDT1 with f1 >= 0.5 required: the front's left half is forbidden
    class HalfZDT1(ZDT1):
        def evaluate(self, X):
            ev = super().evaluate(X)
            return Evaluation(ev.F, (0.5 - ev.F[:, [0]]) / 0.5, ev.metrics)

    s = evolve(NSGA2(HalfZDT1(n_var=10), seed=0, pop_size=60), 40)
    assert (s.F[:, 0] >= 0.5).all()
    assert s.F[s.rank == 0, 0].min() == pytest.approx(0.5, abs=0.02)  # pushed against the boundary


# ---- penalty --------------------------------------------------------------------------------
def test_quadratic_penalty_by_hand_and_its_ordering():
    F = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [0.0, 0.0]])
    G = np.array([[-1.0, 0.0], [0.5, 0.0], [1.0, 2.0], [0.1, 0.0]])
    P = quadratic_penalty(F, G, weight=10.0)
    np.testing.assert_allclose(P, [[1, 2], [3.5, 4.5], [51, 52], [0.1, 0.1]])
    # more violation, larger penalty; feasible rows untouched
    assert P[0, 0] < P[1, 0] < P[2, 0]
    handler = QuadraticPenalty(weight=10.0)
    F2, G2 = handler.transform(F, G)
    np.testing.assert_allclose(F2, P)
    assert G2.shape == (4, 0)
    with pytest.raises(ConstraintError, match="weight"):
        QuadraticPenalty(weight=-1)


def test_a_large_penalty_drives_the_search_feasible():
    problem = small_space_problem()
    _, ev = enumerated(problem)
    limit = float(np.quantile(ev.metrics["latency_ms"], 0.25))
    constrained = small_space_problem([Constraint("latency_ms", limit)])
    s = evolve(NSGA2(constrained, seed=0, pop_size=60, constraints=QuadraticPenalty(weight=1e9)), 30)
    assert s.G.max() <= 0  # raw violations: the penalised search ended up feasible


# ---- ε-constraint ---------------------------------------------------------------------------
def test_epsilon_constraint_by_hand():
    F = np.array([[1.0, 4.0, 10.0], [2.0, 1.0, -2.0]])
    G = np.array([[0.0], [0.3]])
    F2, G2 = epsilon_constraint(F, G, objective=0, epsilons=(None, 2.0, 0.0))
    np.testing.assert_array_equal(F2, [[1.0], [2.0]])
    # (f2 − 2) / 2 and (f3 − 0) / 1 appended after the existing violations
    np.testing.assert_allclose(G2, [[0.0, 1.0, 10.0], [0.3, -0.5, -2.0]])
    _, G3 = epsilon_constraint(F, G, objective=1, epsilons=(math.inf, None, None))
    np.testing.assert_array_equal(G3, G)
    with pytest.raises(ConstraintError, match="epsilons"):
        epsilon_constraint(F, G, 0, (1.0, 2.0))  # 3 objectives, 2 bounds
    with pytest.raises(ConstraintError, match="objective"):
        EpsilonConstraint(3, (1.0, 2.0))


def test_epsilon_constraint_finds_the_constrained_optimum():
    # minimise ZDT1's f2 subject to f1 <= 0.25: the optimum is the front point (0.25, 0.5)
    handler = EpsilonConstraint(objective=1, epsilons=(0.25, None))
    s = evolve(NSGA2(ZDT1(n_var=10), seed=1, pop_size=40, constraints=handler), 80)
    F, G = handler.transform(s.F, s.G)
    best = s.F[np.argmin(np.where(total_violation(G) <= 0, F[:, 0], np.inf))]
    assert best[0] <= 0.25 and best[1] == pytest.approx(0.5, abs=0.02)


def test_epsilon_constraint_through_a_wrapped_problem():
    # maximise parameters with latency <= ε: ε-constraint on objective 0 of a 2-objective problem,
    # solved by a single-objective strategy through HandledProblem; optimum known by enumeration
    problem = small_space_problem()
    _, ev = enumerated(problem)
    eps = float(np.quantile(ev.metrics["latency_ms"], 0.3))
    handler = EpsilonConstraint(objective=1, epsilons=(eps, None))
    wrapped = HandledProblem(problem, handler)
    assert [o.name for o in wrapped.objectives] == ["params"]
    optimum = ev.F[ev.metrics["latency_ms"] <= eps, 1].min()
    r = RegularizedEvolution(wrapped, seed=0, population_size=50, sample_size=10, batch=10)
    best = min(
        (float(f[0]) for f, g in _best_per_generation(r, 150) if g.max() <= 0), default=math.inf
    )
    assert best == optimum


def _best_per_generation(strategy, generations):
    for _ in range(generations):
        X = strategy.ask()
        strategy.tell(X, strategy.problem.evaluate(X))
        yield strategy.best()[1:]


# ---- progressive tightening -----------------------------------------------------------------
def test_tightening_schedule_by_hand():
    assert tightening_schedule(0, 2.0, 1.0, 10.0) == 2.0
    assert tightening_schedule(10, 2.0, 1.0, 10.0) == pytest.approx(1 + math.exp(-1))  # 1.3679
    assert tightening_schedule(20, 2.0, 1.0, 10.0) == pytest.approx(1 + math.exp(-2))  # 1.1353
    assert tightening_schedule(1e6, 2.0, 1.0, 10.0) == pytest.approx(1.0)
    pc = ProgressiveConstraint(Constraint("latency_ms", 40.0), initial=100.0, tau=5.0)
    assert pc.limit(5) == pytest.approx(40 + 60 * math.exp(-1))  # 62.07
    assert pc.at(0) == Constraint("latency_ms", 100.0)
    lower = ProgressiveConstraint(Constraint("accuracy", 0.8, upper=False), initial=0.5, tau=2.0)
    assert lower.limit(2) == pytest.approx(0.8 - 0.3 * math.exp(-1))
    with pytest.raises(ConstraintError, match="initial"):
        ProgressiveConstraint(Constraint("latency_ms", 40.0), initial=30.0, tau=5.0)
    with pytest.raises(ConstraintError, match="tau"):
        ProgressiveConstraint(Constraint("latency_ms", 40.0), initial=50.0, tau=0.0)


def test_retargeted_violations_equal_a_fresh_evaluation():
    values = np.array([10.0, 40.0, 55.0, 100.0, 130.0])
    for pc in (ProgressiveConstraint(Constraint("lat", 40.0), initial=100.0, tau=5.0),
               ProgressiveConstraint(Constraint("acc", 80.0, upper=False), initial=20.0, tau=3.0)):
        g_final = pc.constraint.violation(values)
        for t in (0, 1, 7, 50):
            np.testing.assert_allclose(pc.retarget(g_final, t), pc.at(t).violation(values), atol=1e-12)


def test_progressive_tightening_in_a_run():
    problem = small_space_problem()
    _, ev = enumerated(problem)
    final = float(np.quantile(ev.metrics["latency_ms"], 0.2))
    constrained = small_space_problem([Constraint("latency_ms", final)])
    schedule = ProgressiveConstraint(constrained.constraints[0], initial=float(ev.metrics["latency_ms"].max()), tau=4.0)
    handler = ProgressiveTightening(constrained, [schedule])
    assert handler.limits(0) == [schedule.initial] and handler.limits(4) == [pytest.approx(schedule.limit(4))]
    s = NSGA2(constrained, seed=0, pop_size=60, constraints=handler)
    evolve(s, 2)
    lat = s.F[:, 0]
    assert lat.max() > final  # early generations may hold networks over the final budget
    evolve(s, 38)
    assert s.G.max() <= 0 and (s.F[:, 0] <= final).all()  # by the end everyone meets it
    with pytest.raises(ConstraintError, match="not one of the problem's constraints"):
        ProgressiveTightening(problem, [schedule])


def test_handled_problem_and_chain():
    problem = small_space_problem([Constraint("latency_ms", 5.0)])
    X = problem.space.sample(20, np.random.default_rng(0))
    raw = problem.evaluate(X)
    sched = ProgressiveConstraint(problem.constraints[0], initial=50.0, tau=3.0)
    chain = Chain(ProgressiveTightening(problem, [sched]), QuadraticPenalty(weight=2.0))
    wrapped = HandledProblem(problem, chain, generation=3)
    ev = wrapped.evaluate(X)
    g3 = sched.retarget(raw.G[:, 0], 3)
    np.testing.assert_allclose(ev.F, raw.F + 2.0 * np.clip(g3, 0, None)[:, None] ** 2)
    assert ev.G.shape == (20, 0)
    np.testing.assert_array_equal(ev.metrics["latency_ms"], raw.metrics["latency_ms"])
    assert chain.params()["handlers"][1] == {"name": "quadratic_penalty", "weight": 2.0}
    F1, G1 = FeasibilityFirst().transform(raw.F, raw.G, 7)  # Deb's rules rank the raw values
    np.testing.assert_array_equal(F1, raw.F)
    np.testing.assert_array_equal(G1, raw.G)


# ---- fleet metrics --------------------------------------------------------------------------
def test_weighted_multi_platform_latency():
    space, rpi = small_space()
    orin = SpaceCostTable(space, load_device("orin_nx"))
    metric = weighted_latency({"rpi4": rpi.evaluate, "orin_nx": orin.evaluate}, {"rpi4": 0.75, "orin_nx": 0.25})
    X = space.sample(50, np.random.default_rng(0))
    out = metric(X)
    a, b = rpi.evaluate(X)["latency_ms"], orin.evaluate(X)["latency_ms"]
    np.testing.assert_allclose(out["weighted_latency_ms"], 0.75 * a + 0.25 * b)
    np.testing.assert_array_equal(out["latency_ms@orin_nx"], b)
    problem = SpaceProblem(space, [metric], [Objective("weighted_latency_ms"), Objective("params", "max")])
    assert problem.evaluate(X).F.shape == (50, 2)
    with pytest.raises(ConstraintError, match="weights"):
        weighted_latency({"rpi4": rpi.evaluate}, {"orin_nx": 1.0})
    with pytest.raises(ProblemError, match="provides no 'lat'"):
        weighted_latency({"rpi4": rpi.evaluate}, {"rpi4": 1.0}, metric="lat")(X)


def test_mnas_reward_objective():
    space, rpi = small_space()

    def accuracy(codes):  # a stand-in predictor: bigger networks are more accurate
        return {"accuracy": 0.6 + 0.3 * np.tanh(rpi.evaluate(codes)["params"] / 3e6)}

    metric = mnas_reward_metric([rpi.evaluate, accuracy], target=20.0)
    X = space.sample(30, np.random.default_rng(1))
    out = metric(X)
    expected = out["accuracy"] * (out["latency_ms"] / 20.0) ** -0.07
    np.testing.assert_allclose(out["mnas_reward"], expected)
    np.testing.assert_allclose(out["mnas_reward"], mnas_reward(out["accuracy"], out["latency_ms"], 20.0))
    problem = SpaceProblem(space, [metric], [Objective("mnas_reward", "max")])
    r = evolve(RegularizedEvolution(problem, seed=0, population_size=30, sample_size=6, batch=10), 20)
    every = problem.evaluate(np.concatenate(list(space.enumerate())))
    assert r.best()[1][0] <= np.quantile(every.F[:, 0], 0.01)  # within the best 1 % of the space
    with pytest.raises(ProblemError, match="accuracy"):
        mnas_reward_metric([rpi.evaluate], target=20.0)(X)
    with pytest.raises(ConstraintError, match="target"):
        mnas_reward_metric([rpi.evaluate], target=0.0)
