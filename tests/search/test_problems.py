"""Benchmark problems agree with pymoo's definitions, and our SBX / PM match pymoo's operators in distribution."""

import math

import numpy as np
import pytest

from search.problem import ProblemError
from search.problems import DTLZ2, ZDT1, ZDT2, benchmark, polynomial_mutation, sbx_crossover, simplex_lattice

pymoo = pytest.importorskip("pymoo")

from pymoo.operators.crossover.sbx import cross_sbx  # noqa: E402
from pymoo.operators.mutation.pm import mut_pm  # noqa: E402
from pymoo.problems import get_problem  # noqa: E402


@pytest.mark.parametrize(
    ("ours", "name", "kwargs"),
    [(ZDT1(), "zdt1", {}), (ZDT2(), "zdt2", {}), (DTLZ2(), "dtlz2", {"n_var": 12, "n_obj": 3})],
)
def test_objectives_equal_pymoo(ours, name, kwargs):
    theirs = get_problem(name, **kwargs)
    assert (ours.n_var, ours.n_obj) == (theirs.n_var, theirs.n_obj)
    X = ours.sample(200, np.random.default_rng(3))
    ev = ours.evaluate(X)
    np.testing.assert_allclose(ev.F, theirs.evaluate(X), rtol=1e-12, atol=1e-12)
    assert ev.G.shape == (200, 0) and ev.feasible.all()
    np.testing.assert_array_equal(ev.metrics["f2"], ev.F[:, 1])


def test_sampling_is_uniform_in_the_box():
    X = ZDT1(n_var=5).sample(20000, np.random.default_rng(0))
    assert X.shape == (20000, 5) and X.min() >= 0 and X.max() <= 1
    np.testing.assert_allclose(X.mean(axis=0), 0.5, atol=0.01)
    np.testing.assert_allclose(X.var(axis=0), 1 / 12, atol=0.003)


def test_zdt_fronts_are_optimal_and_match_pymoo():
    for ours, name in ((ZDT1(), "zdt1"), (ZDT2(), "zdt2")):
        np.testing.assert_allclose(ours.pareto_front(50), get_problem(name).pareto_front(50))
        # x_2..x_n = 0 (g = 1) are the Pareto-optimal solutions: they land on the front
        X = np.zeros((11, 30))
        X[:, 0] = np.linspace(0, 1, 11)
        F = ours.evaluate(X).F
        expected = 1 - np.sqrt(X[:, 0]) if name == "zdt1" else 1 - X[:, 0] ** 2
        np.testing.assert_allclose(F[:, 1], expected, atol=1e-12)


def test_dtlz2_front_is_the_das_dennis_sphere():
    p = DTLZ2()
    front = p.pareto_front(100)
    assert len(front) == math.comb(12 + 2, 2) == 91  # 12 partitions: the largest lattice with <= 100 points
    np.testing.assert_allclose(np.linalg.norm(front, axis=1), 1.0)
    assert front.min() >= 0
    theirs = get_problem("dtlz2", n_var=12).pareto_front()  # pymoo: 15 partitions, 136 points
    np.testing.assert_allclose(np.sort(p.pareto_front(136), axis=0), np.sort(theirs, axis=0), atol=1e-12)
    # distance variables at 0.5 (g = 0) put any position on the sphere
    X = np.random.default_rng(1).random((50, 12))
    X[:, 2:] = 0.5
    np.testing.assert_allclose(np.linalg.norm(p.evaluate(X).F, axis=1), 1.0)


def test_simplex_lattice_by_hand():
    np.testing.assert_allclose(simplex_lattice(2, 2), [[0, 1], [0.5, 0.5], [1, 0]])
    W = simplex_lattice(3, 4)
    assert W.shape == (15, 3)
    np.testing.assert_allclose(W.sum(axis=1), 1.0)
    assert len({tuple(w) for w in W}) == 15


def test_unknown_benchmark_names_the_allowed_ones():
    assert isinstance(benchmark("ZDT2"), ZDT2)
    with pytest.raises(ProblemError, match="zdt1, zdt2, dtlz2"):
        benchmark("zdt9")


def _same_moments(ours, theirs, std_rtol):
    """Means within 5 standard errors of their difference, standard deviations within ``std_rtol``."""
    n = len(ours)
    m1, s1, m2, s2 = ours.mean(axis=0), ours.std(axis=0), theirs.mean(axis=0), theirs.std(axis=0)
    assert np.all(np.abs(m1 - m2) <= 5 * s2 * math.sqrt(2 / n) + 1e-12), (m1, m2)
    np.testing.assert_allclose(s1, s2, rtol=std_rtol)


def test_sbx_matches_pymoo_in_distribution():
    n = 100_000
    a = np.array([0.2, 0.5, 0.9, 0.01, 0.3])
    b = np.array([0.6, 0.55, 0.3, 0.02, 0.3])  # last variable: equal parents, never crossed
    lo, hi = np.zeros(5), np.ones(5)
    ours = sbx_crossover(np.tile(a, (n, 1)), np.tile(b, (n, 1)), lo, hi, np.random.default_rng(1))
    # pymoo's SBX(eta=15, prob_var=0.5, prob_bin=0.5, n_offsprings=1), called at function level
    # (its Population objects are too slow for 10^5 draws): both children, then one kept at random
    rng = np.random.default_rng(2)
    col = np.ones((n, 1))
    Q = cross_sbx(np.stack([np.tile(a, (n, 1)), np.tile(b, (n, 1))]), lo, hi, 15.0 * col, 0.5 * col, 0.5 * col,
                  random_state=rng)
    theirs = np.where((rng.random(n) < 0.5)[:, None], Q[1], Q[0])
    _same_moments(ours, theirs, std_rtol=0.01)
    # the share of variables left at parent a's value (not crossed, and a's slot kept) and the
    # correlation between variables (uncrossed ones come from the same parent) agree too
    np.testing.assert_allclose((ours == a).mean(axis=0)[:4], (theirs == a).mean(axis=0)[:4], atol=0.01)
    np.testing.assert_allclose(np.corrcoef(ours[:, 0], ours[:, 2])[0, 1], np.corrcoef(theirs[:, 0], theirs[:, 2])[0, 1],
                               atol=0.01)
    assert ours.min() >= 0 and ours.max() <= 1
    assert set(np.unique(ours[:, 4])) == {0.3}


def test_pm_matches_pymoo_in_distribution():
    n, rate = 100_000, 0.5
    x = np.array([0.2, 0.5, 0.99, 0.0])  # interior, centre, near the upper bound, on the lower bound
    X = np.tile(x, (n, 1))
    ours = polynomial_mutation(X, np.zeros(4), np.ones(4), rate, np.random.default_rng(1))
    theirs = mut_pm(X, np.zeros(4), np.ones(4), np.full(n, 20.0), np.full(n, rate), at_least_once=False,
                    random_state=np.random.default_rng(2))
    _same_moments(ours, theirs, std_rtol=0.02)
    np.testing.assert_allclose((ours != x).mean(axis=0), (theirs != x).mean(axis=0), atol=0.01)
    assert ours.min() >= 0 and ours.max() <= 1
    # mutation only moves variables with probability rate (x = 0 moves only upward: half the time)
    np.testing.assert_allclose((ours != x).mean(axis=0), [0.5, 0.5, 0.5, 0.25], atol=0.01)


def test_problem_operators_use_the_box_and_return_one_child_per_pair():
    p = ZDT1(n_var=6)
    rng = np.random.default_rng(0)
    A, B = p.sample(40, rng), p.sample(40, rng)
    C = p.crossover(A, B, rng)
    assert C.shape == (40, 6) and C.min() >= 0 and C.max() <= 1
    M = p.mutate(C, 1.0, rng)
    assert M.shape == C.shape and (M != C).mean() > 0.9
