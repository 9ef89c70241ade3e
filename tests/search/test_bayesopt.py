import itertools
import math

import numpy as np
import pytest

from search.pareto import hypervolume
from search.problem import Constraint, Evaluation, Objective, Problem, SpaceProblem
from search.space.mobilenetv3 import MobileNetV3Config, MobileNetV3Space
from search.strategies.base import run
from search.strategies.bayesopt import (
    BayesOpt,
    FeatureMap,
    _tri_solve,
    augmented_chebyshev,
    correlation,
    expected_hypervolume_improvement_2d,
    expected_improvement,
    fit_gp,
    hypervolume_improvement_2d,
    log_expected_improvement,
    normal_cdf,
)
from search.strategies.random_search import RandomSearch


def _scipy(name):
    # scipy is the oracle of the reference tests only; the rest runs without it
    return pytest.importorskip(f"scipy.{name}")


# ---- test problems ---------------------------------------------------------------------------
class GridProblem(Problem):
    """Integer genes 0..k-1 with quadratic objectives Σ (x − t)² (one target per objective)."""

    integer = True

    def __init__(self, targets, k, constraint_limit=None):
        self.targets = np.atleast_2d(np.asarray(targets))
        self.n_var = self.targets.shape[1]
        self.cardinalities = np.full(self.n_var, k)
        self.objectives = tuple(Objective(f"f{i}") for i in range(len(self.targets)))
        # optional constraint x0 <= limit, as a metric "x0"
        self.constraints = () if constraint_limit is None else (Constraint("x0", constraint_limit),)

    def sample(self, n, rng):
        return rng.integers(0, self.cardinalities, (n, self.n_var))

    def mutate(self, X, rate, rng):
        hit = rng.random(X.shape) < rate
        shift = 1 + rng.integers(0, self.cardinalities - 1, X.shape)
        return np.where(hit, (X + shift) % self.cardinalities, X)

    def crossover(self, A, B, rng):
        return np.where(rng.random(A.shape) < 0.5, A, B)

    def evaluate(self, X):
        X = np.asarray(X)
        F = np.column_stack([((X - t) ** 2).sum(axis=1) for t in self.targets]).astype(float)
        metrics = {f"f{i}": F[:, i] for i in range(F.shape[1])}
        metrics["x0"] = X[:, 0].astype(float) + 1.0  # +1 keeps the normalised violation well defined
        G = np.column_stack([c.violation(metrics[c.metric]) for c in self.constraints]) if self.constraints \
            else np.zeros((len(X), 0))
        return Evaluation(F, G, metrics)


class FidelityProblem(GridProblem):
    """Like GridProblem, but each evaluation reports 'epochs' and low fidelity reads 3 higher."""

    def __init__(self, targets, k, epochs_of):
        super().__init__(targets, k)
        self.epochs_of = epochs_of

    def evaluate(self, X):
        ev = super().evaluate(X)
        epochs = np.asarray(self.epochs_of(np.asarray(X)), dtype=float)
        F = ev.F + np.where(epochs < 9, 3.0, 0.0)[:, None]
        return Evaluation(F, ev.G, {**ev.metrics, "epochs": epochs})


class Branin(Problem):
    """The Branin function on [-5, 10] x [0, 15]; minimum 0.397887 at three points."""

    objectives = (Objective("f"),)
    n_var = 2
    lower = np.array([-5.0, 0.0])
    upper = np.array([10.0, 15.0])

    def sample(self, n, rng):
        return self.lower + rng.random((n, 2)) * (self.upper - self.lower)

    def mutate(self, X, rate, rng):
        hit = rng.random(X.shape) < max(rate, 0.5)
        step = 0.05 * (self.upper - self.lower) * rng.standard_normal(X.shape)
        return np.clip(np.where(hit, X + step, X), self.lower, self.upper)

    def crossover(self, A, B, rng):
        return np.where(rng.random(A.shape) < 0.5, A, B)

    def evaluate(self, X):
        x1, x2 = np.asarray(X, dtype=float).T
        f = (x2 - 5.1 / (4 * np.pi**2) * x1**2 + 5 / np.pi * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * np.pi)) * np.cos(x1) + 10
        return Evaluation(f[:, None], np.zeros((len(f), 0)), {"f": f})


def _reference_matern52(A, B, ell):
    # the general Matérn form with the modified Bessel function, at ν = 5/2
    special = _scipy("special")
    nu = 2.5
    r = _scipy("spatial.distance").cdist(A, B) / ell
    arg = np.sqrt(2 * nu) * np.where(r > 0, r, 1.0)
    k = 2 ** (1 - nu) / special.gamma(nu) * arg**nu * special.kv(nu, arg)
    return np.where(r > 0, k, 1.0)


# ---- Gaussian process ------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", ["matern52", "rbf"])
def test_gp_posterior_and_likelihood_match_reference_formulas(kernel):
    linalg, stats, cdist = _scipy("linalg"), _scipy("stats"), _scipy("spatial.distance").cdist
    rng = np.random.default_rng(3)
    Z = rng.random((9, 3))
    y = np.sin(4 * Z[:, 0]) + Z[:, 1] ** 2 + 0.05 * rng.standard_normal(9)
    Zs = rng.random((5, 3))
    ell, g = 0.7, 1e-2
    gp = fit_gp(Z, y, kernel, lengthscales=np.array([ell]), noise_ratios=np.array([g]))

    def ref_corr(A, B):
        if kernel == "matern52":
            return _reference_matern52(A, B, ell)
        return np.exp(-0.5 * cdist(A, B, "sqeuclidean") / ell**2)

    C_ref, Cs_ref = ref_corr(Z, Z), ref_corr(Zs, Z)
    np.testing.assert_allclose(correlation(Z, Z, ell, kernel), C_ref, rtol=1e-10, atol=1e-12)

    m, s = y.mean(), y.std()
    ys = (y - m) / s
    s2 = ys @ linalg.solve(C_ref + g * np.eye(9), ys) / 9  # profiled signal variance
    K = s2 * (C_ref + g * np.eye(9))
    Ks = s2 * Cs_ref
    mean_ref = Ks @ linalg.solve(K, ys) * s + m
    var_ref = (s2 - np.einsum("ij,ji->i", Ks, linalg.solve(K, Ks.T))) * s**2
    mean, var = gp.predict(Zs)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(var, var_ref, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(gp.predict(Zs, noisy=True)[1], var_ref + s2 * g * s**2, rtol=1e-7)
    assert gp.signal == pytest.approx(s2, rel=1e-10)
    assert gp.noise == pytest.approx(s2 * g * s**2, rel=1e-10)

    lml_ref = stats.multivariate_normal(np.zeros(9), K).logpdf(ys)
    assert gp.log_marginal_likelihood == pytest.approx(lml_ref, rel=1e-9)
    # the profiled signal variance is the maximiser: scaling it either way lowers the likelihood
    for f in (0.8, 1.25):
        assert stats.multivariate_normal(np.zeros(9), K * f).logpdf(ys) < lml_ref


def test_gp_grid_picks_the_most_likely_hyperparameters():
    rng = np.random.default_rng(5)
    Z = rng.random((60, 2))
    y = np.cos(3 * Z.sum(axis=1)) + 0.2 * rng.standard_normal(60)
    ells, gs = np.geomspace(0.1, 5, 7), np.array([1e-4, 1e-2, 0.1, 0.5])
    gp = fit_gp(Z, y, lengthscales=ells, noise_ratios=gs)
    brute = max((fit_gp(Z, y, lengthscales=[e], noise_ratios=[g]).log_marginal_likelihood, e, g)
                for e in ells for g in gs)
    assert (gp.lengthscale, gp.noise_ratio) == (brute[1], brute[2])
    assert gp.log_marginal_likelihood == pytest.approx(brute[0], rel=1e-9)
    # the fitted noise variance is close to the true one (0.04)
    assert 0.02 < gp.noise < 0.08


def test_gp_survives_duplicate_inputs_and_conditioning_collapses_variance():
    Z = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.5], [0.3, 0.9]])
    y = np.array([1.0, 1.0, 2.0, 0.5])
    gp = fit_gp(Z, y)
    assert np.isfinite(gp.log_marginal_likelihood)
    z = np.array([[0.6, 0.6]])
    mu, var = gp.predict(z)
    after = gp.condition(z, mu)
    assert after.predict(z)[1][0] < 1e-3 * var[0]
    assert after.predict(z)[0][0] == pytest.approx(mu[0], abs=1e-6)


def test_blocked_triangular_solve_matches_scipy():
    linalg = _scipy("linalg")
    rng = np.random.default_rng(4)
    for n in (1, 63, 64, 150):
        A = rng.random((n, n))
        L = np.linalg.cholesky(A @ A.T + n * np.eye(n))
        for B in (rng.random(n), rng.random((n, 7))):
            np.testing.assert_allclose(_tri_solve(L, B), linalg.solve_triangular(L, B, lower=True), rtol=1e-10)
            np.testing.assert_allclose(_tri_solve(L, B, lower=False), linalg.solve_triangular(L.T, B, lower=False),
                                       rtol=1e-10)


# ---- acquisitions ----------------------------------------------------------------------------
@pytest.mark.parametrize(("mu", "sigma", "best", "xi"), [
    (0.0, 1.0, 0.0, 0.0), (1.3, 0.4, 0.2, 0.0), (-0.5, 2.0, 0.1, 0.3), (2.0, 0.3, 0.0, 0.0), (0.0, 0.05, 1.0, 0.1),
])
def test_expected_improvement_matches_numerical_integration(mu, sigma, best, xi):
    integrate, stats = _scipy("integrate"), _scipy("stats")
    target = best - xi
    ref, _ = integrate.quad(lambda y: (target - y) * stats.norm.pdf(y, mu, sigma), -np.inf, target,
                            epsabs=1e-13, epsrel=1e-11)
    ei = expected_improvement(np.array([mu]), np.array([sigma]), best, xi)[0]
    assert ei == pytest.approx(ref, rel=1e-7, abs=1e-14)
    assert math.exp(log_expected_improvement(np.array([mu]), np.array([sigma]), best, xi)[0]) == pytest.approx(
        ref, rel=1e-7, abs=1e-300)


def test_expected_improvement_without_uncertainty_is_the_improvement():
    ei = expected_improvement(np.array([0.2, 1.5]), np.array([0.0, 0.0]), 1.0)
    np.testing.assert_allclose(ei, [0.8, 0.0])
    # Φ(−40) = erfc(40/√2)/2 ≈ 3.655893540915e-350 underflows; Φ(−30) ≈ 4.906713927148187e-198
    np.testing.assert_allclose(normal_cdf(np.array([-30.0, 0.0, 40.0])), [4.906713927148187e-198, 0.5, 1.0],
                               rtol=1e-12)


def test_log_expected_improvement_is_accurate_in_the_far_tail():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 60
    zs = np.array([-5.0, -20.0, -24.9, -25.1, -30.0, -45.0])
    # EI(μ = −z, σ = 1, best = 0) = φ(z) + zΦ(z)
    got = log_expected_improvement(-zs, np.ones_like(zs), 0.0)
    for z, value in zip(zs, got, strict=True):
        zm = mpmath.mpf(float(z))
        exact = mpmath.npdf(zm) + zm * mpmath.ncdf(zm)
        assert value == pytest.approx(float(mpmath.log(exact)), rel=1e-9)
    assert np.all(np.diff(got) < 0)  # still ranks candidates where EI itself underflows to 0
    assert expected_improvement(np.array([45.0]), np.array([1.0]), 0.0)[0] == 0.0


def test_hypervolume_improvement_matches_pareto_hypervolume():
    rng = np.random.default_rng(0)
    front = np.array([[0.1, 0.8], [0.4, 0.4], [0.7, 0.15], [0.5, 0.6]])  # last one dominated
    ref = np.array([1.1, 1.1])
    P = rng.uniform(-0.1, 1.2, (200, 2))
    got = hypervolume_improvement_2d(P, front, ref)
    base = hypervolume(front, ref)
    want = [hypervolume(np.vstack([front, p]), ref) - base for p in P]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_expected_hypervolume_improvement_matches_monte_carlo():
    rng = np.random.default_rng(1)
    front = np.array([[0.1, 0.8], [0.4, 0.4], [0.7, 0.15]])
    ref = np.array([1.1, 1.1])
    mu = np.array([[0.3, 0.3], [0.9, 0.9], [0.05, 1.0], [0.5, 0.5]])
    sd = np.array([[0.1, 0.2], [0.3, 0.1], [0.05, 0.05], [0.0, 0.0]])
    exact = expected_hypervolume_improvement_2d(mu, sd, front, ref)
    for i in range(len(mu)):
        draws = mu[i] + sd[i] * rng.standard_normal((200_000, 2))
        hvi = hypervolume_improvement_2d(draws, front, ref)
        se = hvi.std() / math.sqrt(len(hvi))
        assert abs(exact[i] - hvi.mean()) <= 4 * se + 1e-12
    # empty front: the box below the reference point
    box = expected_hypervolume_improvement_2d(np.array([[0.5, 0.5]]), np.array([[0.0, 0.0]]), np.zeros((0, 2)), ref)
    assert box[0] == pytest.approx(0.36)


def test_augmented_chebyshev():
    F = np.array([[0.2, 0.6], [1.0, 0.0]])
    np.testing.assert_allclose(augmented_chebyshev(F, np.array([0.5, 0.5]), rho=0.05),
                               [0.3 + 0.05 * 0.4, 0.5 + 0.05 * 0.5])


# ---- features --------------------------------------------------------------------------------
def test_feature_maps():
    problem = GridProblem([[0, 0, 0]], 5)
    problem.cardinalities = np.array([5, 3, 1])
    X = np.array([[0, 0, 0], [4, 2, 0], [2, 1, 0]])
    np.testing.assert_allclose(FeatureMap.for_problem(problem).transform(X),
                               [[0, 0, 0], [1, 1, 0], [0.5, 0.5, 0]])
    onehot = FeatureMap.for_problem(problem, "onehot")
    Z = onehot.transform(X)
    assert Z.shape == (3, 9) and onehot.n_features == 9
    # changing one gene moves a point by exactly 1, as in the ordinal map's largest step
    assert np.linalg.norm(Z[0] - onehot.transform(np.array([[3, 0, 0]]))[0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'features'"):
        FeatureMap.for_problem(problem, "binary")


# ---- the strategy: does it optimise? ---------------------------------------------------------
def _evals_to_hit(F, target=0.0):
    hit = np.flatnonzero(F[:, 0] <= target)
    return int(hit[0]) + 1 if len(hit) else None


def test_bo_finds_the_optimum_in_far_fewer_evaluations_than_random(capsys):
    # 6 genes x 6 options (46 656 candidates), one optimum: Σ (x − t)² = 0
    problem = GridProblem([[1, 4, 2, 0, 5, 3]], 6)
    bo_evals, rs_evals = [], []
    for seed in range(5):
        bo = BayesOpt(problem, seed=seed, init=10, pool=1000)
        n = 0
        while n < 60:  # stop at the optimum
            X = bo.ask()
            ev = problem.evaluate(X)
            bo.tell(X, ev)
            if (k := _evals_to_hit(ev.F)) is not None:
                n += k
                break
            n += len(X)
        bo_evals.append(n if _evals_to_hit(bo.F) is not None else 10**9)
        rs = RandomSearch(problem, seed=seed, batch=4096)
        seen = 0
        while True:
            X = rs.ask()
            ev = problem.evaluate(X)
            rs.tell(X, ev)
            if (k := _evals_to_hit(ev.F)) is not None:
                rs_evals.append(seen + k)
                break
            seen += len(X)
    bo_med, rs_med = float(np.median(bo_evals)), float(np.median(rs_evals))
    with capsys.disabled():
        print(f"\n[bayesopt] evaluations to the optimum, 5 seeds: BO {bo_evals} (median {bo_med:.0f}), "
              f"random {rs_evals} (median {rs_med:.0f}), ratio {rs_med / bo_med:.0f}x")
    assert bo_med <= 45
    assert rs_med >= 50 * bo_med


def test_bo_on_a_real_valued_problem_beats_random(capsys):
    problem = Branin()
    assert np.array_equal(FeatureMap.for_problem(problem).hi, problem.upper)  # bounds from lower/upper
    bo, rs = [], []
    for seed in range(5):
        bo.append(run(BayesOpt(problem, seed=seed, init=8, pool=500), max_evals=40).F.min())
        rs.append(run(RandomSearch(problem, seed=seed, batch=40), max_evals=40).F.min())
    with capsys.disabled():
        print(f"\n[bayesopt] Branin (min 0.3979), best after 40 evaluations, median of 5 seeds: "
              f"BO {np.median(bo):.4f}, random {np.median(rs):.4f}")
    assert np.median(bo) < 0.42 and np.median(rs) > 2 * np.median(bo)


def test_bo_respects_a_constraint_whose_boundary_holds_the_optimum():
    # unconstrained optimum at x0 = 4; the constraint x0 + 1 <= 3 moves it to x0 = 2 (f = 4)
    problem = GridProblem([[4, 1, 3]], 6, constraint_limit=3.0)
    found = []
    for seed in range(3):
        r = run(BayesOpt(problem, seed=seed, init=8, pool=500), max_evals=35)
        feasible = np.all(r.G <= 0, axis=1)
        found.append(r.F[feasible, 0].min())
    assert np.median(found) == 4.0


def test_cost_aware_ei_ranks_a_cheap_candidate_above_an_equally_good_expensive_one():
    problem = GridProblem([[4, 4]], 9)
    # observations symmetric under x0 -> 8 - x0, so the mirror candidates (3, 4) and (5, 4) are equally good
    X = np.array([[0, 4], [8, 4], [4, 0], [4, 8], [2, 2], [6, 6], [2, 6], [6, 2], [1, 7], [7, 7]])
    X = np.vstack([X, np.column_stack([8 - X[:, 0], X[:, 1]])])
    cands = np.array([[3, 4], [5, 4]])

    def cost(Xc):
        return 1.0 + Xc[:, 0]  # cheap left, expensive right

    for acquisition in ("ei", "ucb"):
        plain = BayesOpt(problem, acquisition=acquisition)
        plain.tell(X, problem.evaluate(X))
        s0 = plain.scores(cands)
        assert s0[0] == pytest.approx(s0[1], rel=1e-8, abs=1e-10)
        aware = BayesOpt(problem, acquisition=acquisition, cost_fn=cost, alpha=1.0)
        aware.tell(X, problem.evaluate(X))
        s1 = aware.scores(cands)
        assert s1[0] > s1[1]
        if acquisition == "ei":  # log(EI / cost): the gap is exactly log(cost ratio)
            assert s1[0] - s1[1] == pytest.approx(math.log(6 / 4), rel=1e-6)


def test_fidelity_is_an_input_feature_and_predictions_are_at_the_target_fidelity():
    # every point observed at 1 epoch (reads +3) and half of them also at 9 epochs (exact)
    problem = FidelityProblem([[2, 2]], 5, epochs_of=lambda X: np.ones(len(X)))
    grid = np.array(list(itertools.product(range(5), repeat=2)))
    strategy = BayesOpt(problem, fidelity="epochs")
    strategy.tell(grid, problem.evaluate(grid))
    high = grid[::2]
    ev = GridProblem([[2, 2]], 5).evaluate(high)
    strategy.tell(high, Evaluation(ev.F, ev.G, {**ev.metrics, "epochs": np.full(len(high), 9.0)}))
    Z = strategy._features(grid[1::2])
    assert Z.shape[1] == 3 and np.all(Z[:, -1] == 1.0)  # log-scaled fidelity, target = the largest seen
    ctx = strategy._context(sample=False)
    gp, _ = strategy._fit_scalar(ctx, ctx.Fn[:, 0])
    mu = gp.predict(Z)[0]
    truth = GridProblem([[2, 2]], 5).evaluate(grid[1::2]).F[:, 0]
    # the unseen-at-high-fidelity points are predicted near their high-fidelity value, not +3
    assert np.abs(mu - truth).mean() < 0.5
    plain = GridProblem([[2, 2]], 5)
    with pytest.raises(ValueError, match=r"'fidelity'.*'epochs'"):
        BayesOpt(plain, fidelity="epochs").tell(grid[:2], plain.evaluate(grid[:2]))


def test_multi_fidelity_run_finds_the_optimum():
    problem = FidelityProblem([[1, 3, 2]], 5, epochs_of=lambda X: np.where(X.sum(axis=1) % 2 == 0, 9, 1))
    r = run(BayesOpt(problem, seed=0, init=8, pool=400, fidelity="epochs"), max_evals=40)
    assert _evals_to_hit(r.F) is not None


def _front_hv(problem, ref):
    grid = np.array(list(itertools.product(range(int(problem.cardinalities[0])), repeat=problem.n_var)))
    return hypervolume(problem.evaluate(grid).F, ref)


@pytest.mark.parametrize("scalarisation", ["parego", "ehvi"])
def test_multi_objective_bo_covers_a_known_front_better_than_random(scalarisation, capsys):
    problem = GridProblem([[1, 6, 2, 5], [6, 1, 5, 2]], 8)  # front: the grid points between the two targets
    ref = np.array([73.2, 73.2])
    true_hv = _front_hv(problem, ref)
    bo_hv, rs_hv = [], []
    for seed in range(5):
        r = run(BayesOpt(problem, seed=seed, scalarisation=scalarisation, pool=500), max_evals=40)
        bo_hv.append(hypervolume(r.F, ref) / true_hv)
        rr = run(RandomSearch(problem, seed=seed, batch=40), max_evals=40)
        rs_hv.append(hypervolume(rr.F, ref) / true_hv)
    with capsys.disabled():
        print(f"\n[bayesopt] {scalarisation}: HV / true-front HV at 40 evaluations, median of 5 seeds: "
              f"BO {np.median(bo_hv):.3f}, random {np.median(rs_hv):.3f}")
    assert np.median(bo_hv) > np.median(rs_hv) + 0.1
    assert np.median(bo_hv) > 0.93


# ---- batches, checkpoints, validation --------------------------------------------------------
@pytest.mark.parametrize("scalarisation", ["parego", "ehvi"])
def test_batches_are_distinct_and_new(scalarisation):
    problems = [GridProblem([[1, 2, 3], [3, 2, 1]], 5)]
    if scalarisation == "parego":
        problems.append(GridProblem([[1, 2, 3]], 5))
    for problem in problems:
        s = BayesOpt(problem, seed=1, batch=4, init=6, scalarisation=scalarisation, pool=300)
        X = s.ask()
        s.tell(X, problem.evaluate(X))
        Q = s.ask()
        assert Q.shape == (4, 3)
        assert len(np.unique(Q, axis=0)) == 4
        assert not any((Q[i] == X).all(axis=1).any() for i in range(4))


@pytest.mark.parametrize(("kwargs", "targets"), [
    ({"acquisition": "ei"}, [[1, 2, 3]]),
    ({"acquisition": "ucb", "batch": 3}, [[1, 2, 3]]),
    ({"scalarisation": "parego", "batch": 2}, [[1, 2, 3], [3, 2, 1]]),
    ({"scalarisation": "ehvi", "batch": 2}, [[1, 2, 3], [3, 2, 1]]),
])
def test_checkpoint_resume_is_bit_identical(tmp_path, kwargs, targets):
    problem = GridProblem(targets, 5)
    common = {"seed": 7, "init": 6, "pool": 300, "max_obs": 10, **kwargs}  # max_obs small: subsampling too
    full = run(BayesOpt(problem, **common), max_evals=20)
    path = tmp_path / "bo.npz"
    run(BayesOpt(problem, **common), max_evals=12, checkpoint=path)
    resumed = run(BayesOpt(problem, **common), max_evals=20, checkpoint=path, resume=True)
    assert np.array_equal(full.X, resumed.X)
    assert np.array_equal(full.F, resumed.F)


def test_beyond_max_obs_the_fit_keeps_the_best_quarter_and_a_random_rest():
    problem = GridProblem([[1, 2, 3]], 5)
    s = BayesOpt(problem, seed=0, max_obs=40)
    X = np.array(list(itertools.product(range(5), repeat=3)))  # 125 observations
    s.tell(X, problem.evaluate(X))
    idx = s._context(sample=True).idx
    assert len(idx) == 40 and len(np.unique(idx)) == 40
    best_ten = np.argsort(problem.evaluate(X).F[:, 0], kind="stable")[:10]
    assert set(best_ten) <= set(idx)
    assert len(s._context(sample=False).idx) == 125  # scores() fits on everything and draws nothing


def test_state_roundtrip_gives_the_same_next_batch():
    problem = GridProblem([[1, 2, 3]], 5, constraint_limit=3.0)
    a = BayesOpt(problem, seed=2, init=6, pool=200)
    for _ in range(3):
        X = a.ask()
        a.tell(X, problem.evaluate(X))
    scalars, arrays = a.state()
    b = BayesOpt(problem, seed=99, init=6, pool=200)
    b.load_state(scalars, {k: v.copy() for k, v in arrays.items()})
    assert np.array_equal(a.ask(), b.ask())


def test_works_on_a_space_problem():
    space = MobileNetV3Space(MobileNetV3Config.preset("mnist"))

    def flops_like(codes):
        active = space.active_slots(codes).sum(axis=(1, 2))
        return {"size": active.astype(float) + codes[:, space.expand_offset:].sum(axis=1) * 0.1}

    problem = SpaceProblem(space, [flops_like], [Objective("size")])
    s = BayesOpt(problem, seed=0, init=5, pool=200, features="onehot")
    r = run(s, max_evals=9)
    space.check_codes(r.X)
    assert np.array_equal(space.canonicalise(r.X), r.X)


def test_invalid_parameters_name_the_field():
    p1, p3 = GridProblem([[1, 2]], 4), GridProblem([[1, 2], [2, 1], [0, 0]], 4)
    for kwargs, field in [({"acquisition": "pi"}, "acquisition"), ({"batch": 0}, "batch"), ({"init": 1}, "init"),
                          ({"scalarisation": "nsga"}, "scalarisation"), ({"kernel": "linear"}, "kernel"),
                          ({"alpha": -1.0}, "alpha"), ({"target_fidelity": 0.0}, "target_fidelity")]:
        with pytest.raises(ValueError, match=f"'{field}'"):
            BayesOpt(p1, **kwargs)
    with pytest.raises(ValueError, match="'ehvi' needs 2 objectives"):
        BayesOpt(p3, scalarisation="ehvi")
    s = BayesOpt(p1, init=2, cost_fn=lambda X: -np.ones(len(X)))
    X = np.array([[0, 0], [3, 3]])
    s.tell(X, p1.evaluate(X))
    with pytest.raises(ValueError, match="'cost_fn'"):
        s.ask()
