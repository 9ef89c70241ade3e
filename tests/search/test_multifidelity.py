import math

import numpy as np
import pytest

from search.strategies.multifidelity import (
    MedianPruner,
    MultiFidelityError,
    SuccessiveHalving,
    extrapolate,
    fit_learning_curve,
    hyperband,
    hyperband_brackets,
    should_stop,
)


def _curve(a, b, c, epochs, noise=0.0, seed=0):
    t = np.asarray(epochs, dtype=float)
    return t, a - b * t ** (-c) + noise * np.random.default_rng(seed).standard_normal(len(t))


# ---- learning curves -------------------------------------------------------------------------
@pytest.mark.parametrize(("a", "b", "c"), [(0.92, 0.5, 0.8), (0.75, 0.3, 0.35), (0.2, -1.5, 1.2)])
def test_curve_fit_recovers_parameters_from_noisy_data(a, b, c):
    t, y = _curve(a, b, c, range(1, 41), noise=0.002, seed=1)
    fit = fit_learning_curve(t, y)
    assert fit.a == pytest.approx(a, abs=0.01)
    assert fit.b == pytest.approx(b, abs=0.03 * abs(b))
    assert fit.c == pytest.approx(c, rel=0.05)
    # the prediction's uncertainty covers the truth far beyond the data
    mean, std = fit.predict(200.0)
    assert abs(mean - (a - b * 200.0 ** (-c))) < 3 * std + 1e-3


def test_curve_fit_matches_scipy_curve_fit():
    optimize = pytest.importorskip("scipy.optimize")
    t, y = _curve(0.9, 0.6, 0.7, range(1, 25), noise=0.004, seed=2)
    fit = fit_learning_curve(t, y)
    (a, b, c), pcov = optimize.curve_fit(lambda t, a, b, c: a - b * t ** (-c), t, y, p0=[0.8, 0.5, 0.5])
    np.testing.assert_allclose([fit.a, fit.b, fit.c], [a, b, c], rtol=1e-5)
    np.testing.assert_allclose(fit.cov, pcov, rtol=1e-3)


def test_curve_fit_is_exact_on_noise_free_data_and_uncertainty_shrinks_with_data():
    t, y = _curve(0.8, 0.4, 0.6, range(1, 16))
    fit = fit_learning_curve(t, y)
    np.testing.assert_allclose([fit.a, fit.b, fit.c], [0.8, 0.4, 0.6], rtol=1e-7)
    short = fit_learning_curve(*_curve(0.8, 0.4, 0.6, range(1, 8), noise=0.003, seed=3))
    long = fit_learning_curve(*_curve(0.8, 0.4, 0.6, range(1, 40), noise=0.003, seed=3))
    assert long.predict(100.0)[1] < short.predict(100.0)[1]
    three = fit_learning_curve([1, 2, 3], [0.5, 0.6, 0.65])
    assert np.isnan(three.predict(10.0)[1])


def test_curve_fit_rejects_bad_input():
    with pytest.raises(MultiFidelityError, match="at least 3"):
        fit_learning_curve([1, 2], [0.1, 0.2])
    with pytest.raises(MultiFidelityError, match="> 0"):
        fit_learning_curve([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(MultiFidelityError, match="2 values"):
        fit_learning_curve([1, 2, 3], [0.1, 0.2])


def test_should_stop():
    hopeless = dict(zip(*_curve(0.70, 0.4, 0.8, range(1, 9), noise=0.002, seed=4), strict=True))
    promising = dict(zip(*_curve(0.95, 0.6, 0.5, range(1, 9), noise=0.002, seed=5), strict=True))
    assert extrapolate(hopeless, 50)[0] == pytest.approx(0.70 - 0.4 * 50 ** -0.8, abs=0.02)
    assert should_stop(hopeless, best_so_far=0.85, target_epoch=50)
    assert not should_stop(promising, best_so_far=0.85, target_epoch=50)  # heads for 0.865
    assert should_stop(promising, best_so_far=0.90, target_epoch=50)
    assert not should_stop(dict(list(hopeless.items())[:3]), best_so_far=0.85, target_epoch=50)  # too few points
    assert not should_stop(hopeless, best_so_far=None, target_epoch=50)
    # minimisation (a loss curve falling towards 0.4, best so far 0.2)
    loss = list(zip(*_curve(0.4, -1.0, 0.9, range(1, 10), noise=0.002, seed=6), strict=True))
    assert should_stop(loss, best_so_far=0.2, target_epoch=30, maximise=False)
    assert not should_stop(loss, best_so_far=0.5, target_epoch=30, maximise=False)


# ---- median pruning --------------------------------------------------------------------------
def test_median_pruning_by_hand():
    pruner = MedianPruner(epochs=[1, 3])
    assert not pruner.should_prune(1, 0.0)  # nothing completed yet
    pruner.complete({1: 0.50, 2: 0.55, 3: 0.70})
    pruner.complete({1: 0.40, 2: 0.50, 3: 0.60})
    pruner.complete([(1, 0.60), (2, 0.62), (3, 0.65)])
    assert pruner.median_at(1) == pytest.approx(0.50)
    assert pruner.median_at(3) == pytest.approx(0.65)
    assert pruner.should_prune(1, 0.45)
    assert not pruner.should_prune(1, 0.50)  # equal to the median survives
    assert not pruner.should_prune(2, 0.10)  # not a check epoch
    assert pruner.should_prune(3, 0.64)
    assert not pruner.should_prune(3, 0.66)
    assert pruner.should_prune(3, float("nan"))
    pruner.complete({1: 0.55})  # even count: mean of the middle two, 0.50 and 0.55
    assert pruner.median_at(1) == pytest.approx(0.525)
    assert pruner.should_prune(1, 0.52)

    loss = MedianPruner(epochs=[2], maximise=False, min_completed=2)
    loss.complete({2: 1.0})
    assert not loss.should_prune(2, 5.0)  # only one completed trial so far
    loss.complete({2: 2.0})
    assert loss.should_prune(2, 1.6) and not loss.should_prune(2, 1.4)


# ---- successive halving ----------------------------------------------------------------------
def test_successive_halving_by_hand():
    # nine candidates; metric = base + slope·budget, so the ranking changes with budget
    base = {"a": 0.50, "b": 0.45, "c": 0.40, "d": 0.35, "e": 0.30, "f": 0.25, "g": 0.20, "h": 0.15, "i": 0.10}
    slope = {"a": 0.00, "b": 0.01, "c": 0.02, "d": 0.00, "e": 0.00, "f": 0.00, "g": 0.00, "h": 0.00, "i": 0.10}
    calls = []

    def train(candidate, budget):
        calls.append((candidate, budget))
        return base[candidate] + slope[candidate] * budget

    sh = SuccessiveHalving(9, 1, 9, eta=3)
    assert [(r.n, r.budget, r.keep) for r in sh.rungs] == [(9, 1, 3), (3, 3, 1), (1, 9, 1)]
    result = sh.run(list("abcdefghi"), train)
    # rung 1 (budget 1): a .50, b .46, c .42, d .35, ... i .20 -> a, b, c promoted
    # rung 2 (budget 3): a .50, b .48, c .46 -> a promoted
    # rung 3 (budget 9): a .50
    assert [r.promoted for r in result.rungs] == [(0, 1, 2), (0,), (0,)]
    assert result.survivors == ("a",) and result.metrics == (pytest.approx(0.50),)
    assert result.budget_spent == 27 == sh.planned_budget()
    assert len(calls) == 13 and calls[-1] == ("a", 9)
    resumed = sh.run(list("abcdefghi"), train, resumes=True)
    assert resumed.budget_spent == 21 == sh.planned_budget(resumes=True)  # 9·1 + 3·2 + 1·6

    # with a large slope, the late bloomer wins once it gets budget: minimise −metric instead
    late = SuccessiveHalving(9, 3, 27, eta=3)
    res = late.run(list("abcdefghi"), lambda c, b: -(base[c] + slope[c] * b), maximise=False)
    # (minimising −metric ranks like maximising the metric)
    # budget 3: a .50, b .48, c .46, ... i .40 -> a, b, c; budget 9: a .50, b .54, c .58 -> c; budget 27: c
    assert [r.promoted for r in res.rungs] == [(0, 1, 2), (2,), (2,)]
    assert res.survivors == ("c",)


def test_successive_halving_rungs_for_uneven_settings():
    assert [(r.n, r.budget) for r in SuccessiveHalving(10, 1, 9).rungs] == [(10, 1), (3, 3), (1, 9)]
    assert [r.budget for r in SuccessiveHalving(5, 2, 20).rungs] == [2, 7, 20]  # 20/9, 20/3, 20 rounded
    fractions = SuccessiveHalving(8, 0.125, 1.0, eta=2).rungs
    assert [(r.n, r.budget) for r in fractions] == [(8, 0.125), (4, 0.25), (2, 0.5), (1, 1.0)]
    assert [r.n for r in SuccessiveHalving(2, 1, 27).rungs] == [2, 1, 1, 1]  # one survivor keeps training
    nan_last = SuccessiveHalving(3, 1, 3).run(["x", "y", "z"], lambda c, b: {"x": float("nan"), "y": 1.0, "z": 2.0}[c])
    assert nan_last.survivors == ("z",)


def test_hyperband_brackets_match_the_paper():
    # Li et al. 2018, Table 1: R = 81, η = 3
    brackets = hyperband_brackets(1, 81, 3)
    table = [[(r.n, r.budget) for r in b.rungs] for b in brackets]
    assert table == [
        [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
        [(34, 3), (11, 9), (3, 27), (1, 81)],
        [(15, 9), (5, 27), (1, 81)],
        [(8, 27), (2, 81)],
        [(5, 81)],
    ]


def test_hyperband_returns_the_best_fully_trained_candidate():
    counter = iter(range(10**6))

    def sample(n):
        return [next(counter) for _ in range(n)]

    def train(c, budget):
        return math.sin(c) + 0.001 * budget

    result = hyperband(sample, train, 1, 9, 3)
    seen = [c for b in result.brackets for r in b.rungs for c in r.indices]
    assert len(result.brackets) == 3
    assert result.metric == max(b.metrics[0] for b in result.brackets)
    assert train(result.best, 9) == pytest.approx(result.metric)
    assert result.budget_spent == sum(b.budget_spent for b in result.brackets)
    assert seen  # every bracket trained something


def test_invalid_settings_name_the_field():
    for kwargs, field in [({"n": 0}, "'n'"), ({"min_budget": 5, "max_budget": 1}, "'min_budget'"),
                          ({"eta": 1}, "'eta'")]:
        args = {"n": 4, "min_budget": 1, "max_budget": 9, **kwargs}
        with pytest.raises(MultiFidelityError, match=field):
            SuccessiveHalving(**args)
    with pytest.raises(MultiFidelityError, match="'n' is 3 but 2"):
        SuccessiveHalving(3, 1, 9).run(["a", "b"], lambda c, b: 0.0)
    with pytest.raises(MultiFidelityError, match="'epochs'"):
        MedianPruner(epochs=[])
