"""Regularized evolution: the oldest dies, the best of a sample breeds, feasibility first, exact resume."""

import numpy as np
import pytest

from search.problem import Constraint, Evaluation, Objective, Problem, SpaceProblem
from search.problems import ZDT1
from search.strategies.base import load_checkpoint, run
from search.strategies.evolution import EvolutionError, RegularizedEvolution
from tests.search.test_nsga2 import enumerated, small_space_problem


class Tagged(Problem):
    """Rows ``[f, violation, tag]``: F = f, G = violation; mutation only bumps the tag.

    A child therefore carries its parent's F and G, so a test can see which member bred.
    """

    objectives = (Objective("f"),)
    n_var = 3

    def __init__(self, rows):
        self.rows = np.asarray(rows, dtype=float)

    def sample(self, n, rng):
        return self.rows[:n].copy()

    def mutate(self, X, rate, rng):
        out = np.array(X, dtype=float)
        out[:, 2] += 1 + rng.integers(0, 1000, len(out))
        return out

    def crossover(self, A, B, rng):
        return A.copy()

    def evaluate(self, X):
        X = np.asarray(X, dtype=float)
        return Evaluation(X[:, [0]], X[:, [1]], {"f": X[:, 0]})


def test_oldest_dies_and_children_join_young():
    rows = [[5, 0, 0], [3, 0, 1], [9, 0, 2], [1, 0, 3]]
    s = RegularizedEvolution(Tagged(rows), seed=0, population_size=4, sample_size=2, batch=2, distinct=False)
    X = s.ask()
    np.testing.assert_array_equal(X, rows)  # the initial population is sampled whole
    s.tell(X, s.problem.evaluate(X))
    children = s.ask()
    assert children.shape == (2, 3)
    s.tell(children, s.problem.evaluate(children))
    # the two oldest (f = 5 and f = 3) died, whatever their fitness; the children are the youngest
    np.testing.assert_array_equal(s.X, np.concatenate([np.array(rows[2:], dtype=float), children]))


def test_the_best_of_the_sample_breeds():
    rows = [[5, 0, 0], [3, 0, 1], [9, 0, 2], [1, 0, 3], [7, 0, 4]]
    # sample = whole population: every parent is the global best (f = 1)
    s = RegularizedEvolution(Tagged(rows), population_size=5, sample_size=5, batch=50, distinct=False)
    s.tell(s.ask(), s.problem.evaluate(np.array(rows, dtype=float)))
    assert set(s.ask()[:, 0]) == {1.0}
    # sample of one: parents are uniform over the population
    s1 = RegularizedEvolution(Tagged(rows), population_size=5, sample_size=1, batch=5000, distinct=False)
    s1.tell(s1.ask(), s1.problem.evaluate(np.array(rows, dtype=float)))
    counts = np.unique(s1.ask()[:, 0], return_counts=True)[1]
    assert len(counts) == 5 and counts.min() > 900


def test_feasibility_first_beats_a_better_infeasible_score():
    rows = [[1, 0.5, 0], [4, 0, 1], [2, 0, 2], [0, 2.0, 3]]  # the two lowest f are infeasible
    s = RegularizedEvolution(Tagged(rows), population_size=4, sample_size=4, batch=10, distinct=False)
    s.tell(s.ask(), s.problem.evaluate(np.array(rows, dtype=float)))
    assert set(s.ask()[:, 0]) == {2.0}
    assert s.best()[1][0] == 2.0
    all_infeasible = [[1, 0.5, 0], [0, 2.0, 1], [3, 0.1, 2]]  # then the smallest violation wins
    s = RegularizedEvolution(Tagged(all_infeasible), population_size=3, sample_size=3, batch=5, distinct=False)
    s.tell(s.ask(), s.problem.evaluate(np.array(all_infeasible, dtype=float)))
    assert set(s.ask()[:, 0]) == {3.0}


def test_weights_and_fitness_scalarise_multiple_objectives():
    p = ZDT1(n_var=3)
    X = p.sample(8, np.random.default_rng(0))
    ev = p.evaluate(X)
    s = RegularizedEvolution(p, population_size=8, sample_size=8, weights=(1.0, 0.0))
    s.tell(X, ev)
    np.testing.assert_array_equal(s.best()[0], X[np.argmin(ev.F[:, 0])])
    s = RegularizedEvolution(p, population_size=8, sample_size=8, fitness=lambda F: -F[:, 1])
    s.tell(X, ev)
    np.testing.assert_array_equal(s.best()[0], X[np.argmax(ev.F[:, 1])])
    with pytest.raises(EvolutionError, match="weights"):
        RegularizedEvolution(p)
    with pytest.raises(EvolutionError, match="sample_size"):
        RegularizedEvolution(p, weights=(1, 1), population_size=10, sample_size=11)


def test_finds_the_enumerated_optimum_of_a_constrained_space():
    # maximise parameters with latency under the 30 % quantile of the space (16,000 networks)
    base = small_space_problem()
    _, ev = enumerated(base)
    limit = float(np.quantile(ev.metrics["latency_ms"], 0.3))
    problem = SpaceProblem(base.space, base.evaluators, [Objective("params", "max")], [Constraint("latency_ms", limit)])
    _, every = enumerated(problem)
    optimum = every.F[every.feasible, 0].min()
    result = run(RegularizedEvolution(problem, seed=0, population_size=50, sample_size=10, batch=10), max_evals=1500)
    feasible = np.all(result.G <= 0, axis=1)
    assert result.F[feasible, 0].min() == optimum
    assert len(result.X) == 1500


def test_batch_children_are_distinct_from_the_living():
    problem = small_space_problem()
    s = RegularizedEvolution(problem, seed=1, population_size=30, sample_size=5, batch=16, weights=(1.0, 0.0))
    run(s, max_generations=5)
    children = s.ask()
    assert len(children) == 16
    joined = np.concatenate([s.X, children])
    assert len(np.unique(joined, axis=0)) == len(joined)


def test_resume_is_bit_identical(tmp_path):
    def make():
        return RegularizedEvolution(small_space_problem(), seed=5, population_size=20, sample_size=4, batch=8,
                                    weights=(1.0, 1e-7))

    whole = run(make(), max_generations=10, checkpoint=tmp_path / "a.npz", checkpoint_every_s=0)
    path = tmp_path / "b.npz"
    run(make(), max_generations=4, checkpoint=path, checkpoint_every_s=0)
    resumed = run(make(), max_generations=10, checkpoint=path, resume=True)
    for a, b in zip(whole.history.X, resumed.history.X, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(whole.F, resumed.F)
    restored = make()
    load_checkpoint(path, restored)
    assert restored.generation == 10 and len(restored.X) == 20
