"""Bayesian optimisation over encodings: a numpy Gaussian process, EI/UCB, cost-aware, multi-fidelity,
multi-objective (ParEGO or closed-form 2-D EHVI), behind the ask/tell ``Strategy`` interface.

Why hand-written: the predictor-driven search runs on devices with numpy only (DESIGN.md), so no
scikit-learn/BoTorch GP and no scipy (not a base dependency). The pieces are small and each is tested
against a reference: the GP posterior and log marginal likelihood against the textbook formulas
evaluated with scipy, EI against ``scipy.integrate.quad``, EHVI against Monte Carlo with
``search.pareto.hypervolume``. The normal CDF uses ``math.erfc`` (full double precision in the tails,
where a rational approximation of Φ would destroy EI's ranking of poor candidates).

Model
- **Features.** Integer encodings map to *normalised ordinals* by default: gene ``i`` with ``c_i``
  options becomes ``x_i / (c_i − 1)`` in [0, 1]. The genes of our spaces are ordered numeric options
  (resolution, depth, kernel size, expand ratio) whose effects on accuracy and latency are monotone,
  so "3 is closer to 5 than to 7" is true information, and one feature per gene keeps an isotropic
  kernel meaningful. ``features="onehot"`` is there for genuinely categorical genes (one column per
  option, scaled by 1/√2 so that changing one gene moves a point by 1, as in the ordinal map).
  Real-valued problems use their raw variables scaled to [0, 1] by the problem's bounds (``lower``/
  ``upper``, or pymoo's ``xl``/``xu``; without them, by the range of a fixed-seed sample of 4096 points).
- **Kernel.** Matérn-5/2 (default) or RBF on the features, one lengthscale for all features (no ARD:
  with tens of genes and tens of observations ARD lengthscales are not identifiable), a signal
  variance and a noise variance. Targets are standardised (zero mean, unit variance).
- **Hyperparameters** maximise the log marginal likelihood over a grid of lengthscales (12 values,
  log-spaced, relative to √d) × noise-to-signal ratios (6 values), one Cholesky factorisation each.
  For each grid point the signal variance has a closed-form maximiser (``σf² = yᵀ(C + gI)⁻¹y / n``
  for correlation matrix ``C`` and ratio ``g``), so the grid is over two dimensions only. A grid is
  deterministic, cannot diverge, and its ratio (1.6× in lengthscale) is finer than the acquisition
  is sensitive to.
- **Cholesky with jitter:** if a factorisation fails, jitter grows from 1e-10 to 1e-4 (relative).
- **Cost:** O(n³) per fit with n observations. Beyond ``max_obs`` (1000) the fit uses a subsample:
  the best quarter of the observations (feasible first, then by objective or equal-weight
  scalarisation) plus a uniform random draw of the rest, because the acquisition's value lies near
  the incumbents but the model still needs coverage.

Acquisitions (all in units of the standardised target, so ``xi`` and ``kappa`` are scale-free)
- ``"ei"``: ``EI = (μ* − μ − ξ)Φ(z) + σφ(z)``, ``z = (μ* − μ − ξ)/σ`` (minimisation). The incumbent
  ``μ*`` is the smallest posterior mean over the observed feasible points (plug-in EI: it is the best
  observation for noise-free data and robust to noise and to low-fidelity observations). Candidates
  are ranked by log EI computed stably in the far tail (see ``log_expected_improvement``).
- ``"ucb"``: the lower confidence bound ``μ − κσ``; ranked by ``μ* − (μ − κσ)``.
- **Constraints** (``Evaluation.G``): one extra GP on the largest violation; the acquisition is
  multiplied by the probability of feasibility Φ(−μ_g/σ_g) (Gardner et al. 2014). Objective GPs are
  fitted on all observations (an infeasible point still says something about the objective).
- **Cost-aware** (``cost_fn``): ``cost_fn(X) -> (n,)`` positive predicted costs (e.g. training time);
  the score is ``EI / cost^α`` ("EI per second", Snoek et al. 2012; α = 0 ignores cost). For UCB a
  positive optimistic improvement is divided by ``cost^α`` and a non-positive one multiplied by it,
  so the order stays monotone in both improvement and cost (P(feasible) enters the same way).
- **Multi-fidelity** (``fidelity="epochs"``): evaluations report a fidelity metric (e.g. the epochs an
  early-stopped evaluator trained for, see ``search.strategies.multifidelity``). It enters the GP as
  one extra input feature, ``log(f/f_min) / log(f_max/f_min)`` (learning curves are close to power
  laws in epochs, so log spacing makes equal feature steps roughly equal changes), sharing the
  single lengthscale. Candidates are predicted at the target fidelity (default: the largest seen),
  so cheap low-fidelity observations inform the full-fidelity prediction through the kernel.
- **Several objectives:** ``"parego"`` (any number of objectives): objectives normalised to [0, 1] by
  the observed range, scalarised by the augmented Chebyshev function ``max λ_i f_i + 0.05 Σ λ_i f_i``
  with a fresh weight vector λ ~ Dirichlet(1) for every proposed point; one GP on the scalarisation;
  EI. ``"ehvi"`` (exactly two objectives): independent GPs per objective and the *closed-form* expected
  hypervolume improvement (exact for independent Gaussians, no Monte Carlo; see
  ``expected_hypervolume_improvement_2d``) in the normalised space with reference point 1.1.
- **Optimising the acquisition:** no gradients (encodings are integers): a pool of ``pool``
  candidates, half uniform samples and half mutations (1, 2 or 3 expected gene changes) of up to 10
  incumbents, de-duplicated and without already evaluated rows, scored at once.
- **Batches** (``batch = q > 1``): for EI/UCB and EHVI, kriging believer — each chosen point is added
  to the GPs with its posterior mean as a fake observation (and to the front, for EHVI) before the
  next choice, hyperparameters fixed. For ParEGO, each point gets its own random scalarisation.

State is the observations (X, F, G, fidelity) and the generator: every ask refits from them, so a
resumed run proposes exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from search.pareto import hypervolume, pareto_front
from search.problem import Evaluation, Problem
from search.strategies.base import Strategy

KERNELS = ("matern52", "rbf")
ACQUISITIONS = ("ei", "ucb")
SCALARISATIONS = ("parego", "ehvi")
FEATURES = ("ordinal", "onehot")

# Lengthscale grid relative to sqrt(d): features live in [0, 1]^d, so typical distances scale with sqrt(d).
_LENGTHSCALE_FACTORS = np.geomspace(0.03, 5.0, 12)
# Noise-to-signal variance ratios; the smallest still keeps C + gI well conditioned for duplicate rows.
_NOISE_RATIOS = np.array([1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 0.5])
_JITTERS = (1e-10, 1e-8, 1e-6, 1e-4)
_BLOCK = 64  # block size of the triangular solves
_PAREGO_RHO = 0.05
_EHVI_REF = 1.1
_N_INCUMBENTS = 10
_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)

CostFn = Callable[[np.ndarray], np.ndarray]

_erfc = np.frompyfunc(math.erfc, 1, 1)


# ---- normal distribution and acquisition functions ------------------------------------------
def normal_cdf(z: np.ndarray | float) -> np.ndarray:
    """Φ(z), elementwise, accurate to double precision in both tails."""
    arr = np.asarray(z, dtype=float)
    return 0.5 * np.asarray(_erfc(-arr / _SQRT2), dtype=float).reshape(arr.shape)


def normal_pdf(z: np.ndarray | float) -> np.ndarray:
    """φ(z), elementwise."""
    arr = np.asarray(z, dtype=float)
    return np.exp(-0.5 * arr * arr - _LOG_SQRT_2PI)


def expected_improvement(
    mu: np.ndarray, sigma: np.ndarray, best: float, xi: float = 0.0
) -> np.ndarray:
    """Closed-form EI for minimisation: ``(best − μ − ξ)Φ(z) + σφ(z)``, ``z = (best − μ − ξ)/σ``.

    σ = 0 gives the improvement ``max(best − μ − ξ, 0)``.
    """
    mu, sigma = np.asarray(mu, dtype=float), np.asarray(sigma, dtype=float)
    imp = best - xi - mu
    safe = np.where(sigma > 0, sigma, 1.0)
    z = imp / safe
    ei = imp * normal_cdf(z) + safe * normal_pdf(z)
    return np.where(sigma > 0, np.maximum(ei, 0.0), np.maximum(imp, 0.0))


def log_expected_improvement(
    mu: np.ndarray, sigma: np.ndarray, best: float, xi: float = 0.0
) -> np.ndarray:
    """log EI, finite far into the tail where EI itself underflows (−inf only where EI is exactly 0).

    EI = σ·h(z) with h(z) = φ(z) + zΦ(z). The direct form is accurate (relative error ~z²·ε) down to
    z = −25; below, h uses the asymptotic series φ(z)/z²·(1 − 3/z² + 15/z⁴ − 105/z⁶), whose truncation
    error there is < 1e-9 relative. Ranking by log EI keeps candidates ordered late in a run, when
    every EI is below 1e-300.
    """
    mu, sigma = np.asarray(mu, dtype=float), np.asarray(sigma, dtype=float)
    imp = best - xi - mu
    pos = sigma > 0
    safe = np.where(pos, sigma, 1.0)
    z = imp / safe
    tail = z < -25.0
    zd = np.where(tail, 0.0, z)
    with np.errstate(divide="ignore"):
        direct = np.log(np.maximum(normal_pdf(zd) + zd * normal_cdf(zd), 0.0))
        zt = np.where(tail, z, -30.0)
        inv2 = 1.0 / (zt * zt)
        asym = -0.5 * zt * zt - _LOG_SQRT_2PI - np.log(zt * zt) + np.log1p(inv2 * (-3.0 + inv2 * (15.0 - 105.0 * inv2)))
        log_h = np.where(tail, asym, direct)
        out = np.where(pos, np.log(safe) + log_h, np.log(np.maximum(imp, 0.0)))
    return out


def lower_confidence_bound(mu: np.ndarray, sigma: np.ndarray, kappa: float) -> np.ndarray:
    """``μ − κσ``: an optimistic value of a minimised target (smaller is more promising)."""
    return np.asarray(mu, dtype=float) - kappa * np.asarray(sigma, dtype=float)


def augmented_chebyshev(F_norm: np.ndarray, weights: np.ndarray, rho: float = _PAREGO_RHO) -> np.ndarray:
    """ParEGO's scalarisation of normalised objectives: ``max_i λ_i f_i + ρ Σ_i λ_i f_i``, shape (n,)."""
    weighted = np.asarray(F_norm, dtype=float) * np.asarray(weights, dtype=float)[None, :]
    return np.asarray(weighted.max(axis=1) + rho * weighted.sum(axis=1))


def _staircase(front: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # The region a new point p adds to a 2-D front, split into vertical strips [a_j, b_j) in f1;
    # in strip j everything above c_j in f2 is already dominated. p adds (b_j − max(a_j, p1))+ ×
    # (c_j − p2)+ per strip.
    pts = np.asarray(front, dtype=float).reshape(-1, 2)
    pts = pts[np.all(pts < ref[None, :], axis=1) & ~np.isnan(pts).any(axis=1)]
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
    if len(pts):
        best_before = np.minimum.accumulate(np.concatenate(([np.inf], pts[:-1, 1])))
        pts = pts[pts[:, 1] < best_before]
    a = np.concatenate(([-np.inf], pts[:, 0]))
    b = np.concatenate((pts[:, 0], [ref[0]]))
    c = np.concatenate(([ref[1]], pts[:, 1]))
    return a, b, c


def hypervolume_improvement_2d(points: np.ndarray, front: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Exact hypervolume each row of ``points`` (n, 2) would add to ``front`` (minimisation), shape (n,)."""
    ref = np.asarray(ref, dtype=float)
    a, b, c = _staircase(front, ref)
    P = np.asarray(points, dtype=float).reshape(-1, 2)
    width = np.maximum(b[None, :] - np.maximum(a[None, :], P[:, :1]), 0.0)
    height = np.maximum(c[None, :] - P[:, 1:2], 0.0)
    return np.asarray((width * height).sum(axis=1))


def _partial_mean(t: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    # ψ(t) = E[(t − Y)+] for Y ~ N(μ, σ²); ψ(−inf) = 0; σ = 0 gives (t − μ)+.
    t, mu, sigma = np.broadcast_arrays(np.asarray(t, float), np.asarray(mu, float), np.asarray(sigma, float))
    finite = np.isfinite(t)
    d = np.where(finite, t - mu, 0.0)
    pos = sigma > 0
    safe = np.where(pos, sigma, 1.0)
    z = d / safe
    val = np.where(pos, d * normal_cdf(z) + safe * normal_pdf(z), np.maximum(d, 0.0))
    return np.where(finite, val, 0.0)


def expected_hypervolume_improvement_2d(
    mu: np.ndarray, sigma: np.ndarray, front: np.ndarray, ref: np.ndarray
) -> np.ndarray:
    """Exact EHVI of independent Gaussian predictions (n, 2) over a 2-D ``front``, shape (n,).

    The improvement is a sum over strips of ``(b_j − max(a_j, p1))+ · (c_j − p2)+`` (see
    ``_staircase``). With p1, p2 independent the expectation of each product is the product of
    expectations, and ``E[(b − max(a, p1))+] = ψ1(b) − ψ1(a)``, ``E[(c − p2)+] = ψ2(c)`` with
    ``ψ(t) = E[(t − p)+] = (t − μ)Φ((t − μ)/σ) + σφ((t − μ)/σ)``. O(n·k) for k front points.
    """
    ref = np.asarray(ref, dtype=float)
    a, b, c = _staircase(front, ref)
    mu = np.asarray(mu, dtype=float).reshape(-1, 2)
    sigma = np.asarray(sigma, dtype=float).reshape(-1, 2)
    m1, s1 = mu[:, :1], sigma[:, :1]
    m2, s2 = mu[:, 1:], sigma[:, 1:]
    width = _partial_mean(b[None, :], m1, s1) - _partial_mean(a[None, :], m1, s1)
    height = _partial_mean(c[None, :], m2, s2)
    return np.asarray(np.maximum(width * height, 0.0).sum(axis=1))


# ---- features --------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class FeatureMap:
    """Encodings → GP inputs in [0, 1]: ordinal/real ``(x − lo)/(hi − lo)``, or one-hot per gene."""

    lo: np.ndarray
    hi: np.ndarray
    onehot: bool = False

    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        if self.onehot:
            return int(np.sum(self.hi - self.lo + 1))
        return len(self.lo)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Features of every row of ``X``, shape (n, n_features)."""
        A = np.asarray(X, dtype=float)
        if A.ndim == 1:
            A = A[None, :]
        if not self.onehot:
            span = np.where(self.hi > self.lo, self.hi - self.lo, 1.0)
            return np.asarray((A - self.lo) / span)
        card = (self.hi - self.lo + 1).astype(np.int64)
        offsets = np.concatenate(([0], np.cumsum(card)[:-1]))
        Z = np.zeros((len(A), int(card.sum())))
        idx = np.clip(np.rint(A - self.lo).astype(np.int64), 0, card - 1) + offsets
        np.put_along_axis(Z, idx, 1.0 / _SQRT2, axis=1)
        return Z

    @staticmethod
    def for_problem(problem: Problem, kind: str = "ordinal") -> FeatureMap:
        """The feature map of ``problem``'s encodings (``kind`` = "ordinal" or "onehot")."""
        if kind not in FEATURES:
            raise ValueError(f"bayesopt: field 'features': {kind!r}; allowed: {', '.join(FEATURES)}")
        card = getattr(getattr(problem, "space", None), "cardinalities", None)
        if card is None:
            card = getattr(problem, "cardinalities", None)
        if card is not None:
            card = np.asarray(card, dtype=np.int64)
            return FeatureMap(np.zeros(len(card)), (card - 1).astype(float), onehot=kind == "onehot")
        if kind == "onehot":
            raise ValueError("bayesopt: field 'features': 'onehot' needs a problem with gene cardinalities")
        for low, high in (("lower", "upper"), ("xl", "xu")):  # ours, then pymoo's names
            xl, xu = getattr(problem, low, None), getattr(problem, high, None)
            if xl is None or xu is None:
                continue
            lo = np.broadcast_to(np.asarray(xl, dtype=float), (problem.n_var,)).copy()
            hi = np.broadcast_to(np.asarray(xu, dtype=float), (problem.n_var,)).copy()
            return FeatureMap(lo, hi)
        # No declared bounds: the range of a fixed-seed sample (a separate generator, so building
        # the map never shifts the strategy's random stream).
        S = np.asarray(problem.sample(4096, np.random.default_rng(0)), dtype=float)
        return FeatureMap(S.min(axis=0), S.max(axis=0))


# ---- Gaussian process ------------------------------------------------------------------------
def correlation(A: np.ndarray, B: np.ndarray, lengthscale: float, kernel: str = "matern52") -> np.ndarray:
    """Kernel matrix with unit signal variance between rows of ``A`` and ``B``, shape (len(A), len(B))."""
    return _corr_from_sqdist(_sqdist(A, B), lengthscale, kernel)


def _sqdist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    d = (A * A).sum(axis=1)[:, None] + (B * B).sum(axis=1)[None, :] - 2.0 * A @ B.T
    return np.asarray(np.maximum(d, 0.0))


def _corr_from_sqdist(d2: np.ndarray, lengthscale: float, kernel: str) -> np.ndarray:
    if kernel == "rbf":
        return np.asarray(np.exp(-0.5 * d2 / lengthscale**2))
    r = math.sqrt(5.0) * np.sqrt(d2) / lengthscale
    return np.asarray((1.0 + r + r * r / 3.0) * np.exp(-r))


def _cholesky(A: np.ndarray) -> tuple[np.ndarray, float]:
    # Returns (L, jitter actually added); jitter is relative to the mean diagonal.
    try:
        return np.linalg.cholesky(A), 0.0
    except np.linalg.LinAlgError:
        pass
    scale = float(np.mean(np.diag(A)))
    eye = np.eye(len(A))
    for j in _JITTERS:
        try:
            return np.linalg.cholesky(A + j * scale * eye), j * scale
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError("GP covariance is not positive definite even with jitter 1e-4")


def _tri_solve(L: np.ndarray, B: np.ndarray, lower: bool = True) -> np.ndarray:
    # Solves L·X = B (lower) or Lᵀ·X = B for lower-triangular L. numpy has no triangular solver
    # and np.linalg.solve would redo an O(n³) LU; blocked substitution costs O(n²·m) matmuls
    # plus n/64 tiny dense solves.
    n = len(L)
    Bf = np.asarray(B, dtype=float)
    X = np.empty_like(Bf)
    if lower:
        for i in range(0, n, _BLOCK):
            j = min(i + _BLOCK, n)
            X[i:j] = np.linalg.solve(L[i:j, i:j], Bf[i:j] - L[i:j, :i] @ X[:i])
    else:
        for j in range(n, 0, -_BLOCK):
            i = max(j - _BLOCK, 0)
            X[i:j] = np.linalg.solve(L[i:j, i:j].T, Bf[i:j] - L[j:, i:j].T @ X[j:])
    return X


@dataclass(frozen=True, eq=False)
class GaussianProcess:
    """A fitted GP: training inputs, Cholesky factor, hyperparameters, target standardisation.

    The covariance is ``signal · (C_ℓ + noise_ratio·I)`` on standardised targets; ``signal`` and
    ``noise_ratio`` are in standardised units. Build it with ``fit_gp``.
    """

    Z: np.ndarray
    y: np.ndarray  # standardised targets
    L: np.ndarray  # Cholesky factor of C + (noise_ratio + jitter)·I
    alpha: np.ndarray  # (C + gI)^-1 y
    y_mean: float
    y_std: float
    lengthscale: float
    signal: float
    noise_ratio: float
    kernel: str
    log_marginal_likelihood: float

    @property
    def noise(self) -> float:
        """Observation-noise variance in target units."""
        return self.signal * self.noise_ratio * self.y_std**2

    def predict(self, Zs: np.ndarray, noisy: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(mean, variance) of the latent function at rows of ``Zs`` in target units (+ noise if ``noisy``)."""
        Cs = correlation(np.asarray(Zs, dtype=float), self.Z, self.lengthscale, self.kernel)
        mean = Cs @ self.alpha
        V = _tri_solve(self.L, Cs.T)
        var = self.signal * np.maximum(1.0 - (V * V).sum(axis=0), 0.0)
        if noisy:
            var = var + self.signal * self.noise_ratio
        return mean * self.y_std + self.y_mean, var * self.y_std**2

    def condition(self, Z_new: np.ndarray, y_new: np.ndarray) -> GaussianProcess:
        """The same GP (hyperparameters and standardisation kept) with extra observations added."""
        Z = np.vstack([self.Z, np.asarray(Z_new, dtype=float)])
        ys = np.concatenate([self.y, (np.asarray(y_new, dtype=float) - self.y_mean) / self.y_std])
        L, alpha, lml = _factor(Z, ys, self.lengthscale, self.noise_ratio, self.kernel, self.signal)
        return GaussianProcess(Z, ys, L, alpha, self.y_mean, self.y_std, self.lengthscale, self.signal,
                               self.noise_ratio, self.kernel, lml)


def _factor(
    Z: np.ndarray, ys: np.ndarray, lengthscale: float, g: float, kernel: str, signal: float | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    C = correlation(Z, Z, lengthscale, kernel)
    L, _ = _cholesky(C + g * np.eye(len(Z)))
    alpha = _tri_solve(L, _tri_solve(L, ys), lower=False)
    n = len(ys)
    s2 = max(float(ys @ alpha) / n, 1e-300) if signal is None else signal
    lml = -0.5 * float(ys @ alpha) / s2 - 0.5 * n * math.log(2 * math.pi * s2) - float(np.log(np.diag(L)).sum())
    return L, alpha, lml


def fit_gp(
    Z: np.ndarray,
    y: np.ndarray,
    kernel: str = "matern52",
    lengthscales: np.ndarray | None = None,
    noise_ratios: np.ndarray | None = None,
) -> GaussianProcess:
    """A GP on features ``Z`` (n, d) and targets ``y`` (n,) with hyperparameters of maximal marginal likelihood.

    Grid over ``lengthscales`` (default: 12 values, 0.03·√d … 5·√d) × ``noise_ratios`` (noise/signal
    variance); the signal variance is profiled out in closed form at each grid point. Give a single
    value of each to fix the hyperparameters.
    """
    if kernel not in KERNELS:
        raise ValueError(f"bayesopt: field 'kernel': {kernel!r}; allowed: {', '.join(KERNELS)}")
    Z = np.asarray(Z, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(Z) != len(y) or len(y) == 0:
        raise ValueError(f"fit_gp: need as many targets as inputs (> 0), got {len(y)} and {len(Z)}")
    y_mean = float(y.mean())
    y_std = float(y.std())
    if not y_std > 0:
        y_std = 1.0
    ys = (y - y_mean) / y_std
    ells = (np.asarray(lengthscales, dtype=float) if lengthscales is not None
            else _LENGTHSCALE_FACTORS * math.sqrt(max(Z.shape[1], 1)))
    gs = np.asarray(noise_ratios, dtype=float) if noise_ratios is not None else _NOISE_RATIOS
    d2 = _sqdist(Z, Z)
    n = len(ys)
    if len(ells) == 0 or len(gs) == 0 or np.any(ells <= 0) or np.any(gs <= 0):
        raise ValueError("fit_gp: lengthscales and noise_ratios must be non-empty and > 0")
    eye = np.eye(n)
    best = (-math.inf, float(ells[0]), float(gs[0]))
    for ell in ells:
        C = _corr_from_sqdist(d2, float(ell), kernel)
        for g in gs:
            try:
                L, _ = _cholesky(C + g * eye)
            except np.linalg.LinAlgError:
                continue
            w = _tri_solve(L, ys)
            s2 = max(float(w @ w) / n, 1e-300)  # the profiled signal variance
            lml = -0.5 * n * (math.log(2 * math.pi * s2) + 1.0) - float(np.log(np.diag(L)).sum())
            if lml > best[0]:
                best = (lml, float(ell), float(g))
    _, ell, g = best
    L, alpha, lml = _factor(Z, ys, ell, g, kernel)
    signal = max(float(ys @ alpha) / n, 1e-300)
    return GaussianProcess(Z, ys, L, alpha, y_mean, y_std, ell, signal, g, kernel, lml)


# ---- the strategy ----------------------------------------------------------------------------
def _row_keys(X: np.ndarray) -> set[bytes]:
    A = np.ascontiguousarray(X)
    return {row.tobytes() for row in A}


def _discount(utility: np.ndarray, log_weight: np.ndarray) -> np.ndarray:
    # Scale a signed utility by a positive weight (P(feasible) / cost^α): positive utilities are
    # multiplied, non-positive ones divided, so the score rises with both utility and weight.
    w = np.exp(np.clip(log_weight, -700.0, 700.0))
    return np.where(utility > 0, utility * w, utility / w)


class BayesOpt(Strategy):
    """Bayesian optimisation with a numpy GP (see the module docstring for every choice)."""

    name = "bayesopt"

    def __init__(
        self,
        problem: Problem,
        seed: int = 0,
        batch: int = 1,
        init: int = 10,
        acquisition: str = "ei",
        kappa: float = 2.0,
        xi: float = 0.0,
        scalarisation: str = "parego",
        pool: int = 2000,
        cost_fn: CostFn | None = None,
        alpha: float = 1.0,
        *,
        kernel: str = "matern52",
        features: str = "ordinal",
        fidelity: str | None = None,
        target_fidelity: float | None = None,
        max_obs: int = 1000,
    ) -> None:
        super().__init__(problem, seed)
        for key, value, low in (("batch", batch, 1), ("init", init, 2), ("pool", pool, 1), ("max_obs", max_obs, 8)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"bayesopt: field '{key}': must be an integer >= {low}, got {value!r}")
        if acquisition not in ACQUISITIONS:
            raise ValueError(f"bayesopt: field 'acquisition': {acquisition!r}; allowed: {', '.join(ACQUISITIONS)}")
        if scalarisation not in SCALARISATIONS:
            raise ValueError(
                f"bayesopt: field 'scalarisation': {scalarisation!r}; allowed: {', '.join(SCALARISATIONS)}"
            )
        if scalarisation == "ehvi" and problem.n_obj != 2:
            raise ValueError(
                f"bayesopt: field 'scalarisation': 'ehvi' needs 2 objectives, the problem has {problem.n_obj}; "
                "use 'parego'"
            )
        if kernel not in KERNELS:
            raise ValueError(f"bayesopt: field 'kernel': {kernel!r}; allowed: {', '.join(KERNELS)}")
        for key, v in (("kappa", kappa), ("xi", xi), ("alpha", alpha)):
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"bayesopt: field '{key}': must be a finite number >= 0, got {v!r}")
        if target_fidelity is not None and not target_fidelity > 0:
            raise ValueError(f"bayesopt: field 'target_fidelity': must be > 0, got {target_fidelity!r}")
        self.batch = batch
        self.init = init
        self.acquisition = acquisition
        self.kappa = float(kappa)
        self.xi = float(xi)
        self.scalarisation = scalarisation
        self.pool = pool
        self.cost_fn = cost_fn
        self.alpha = float(alpha)
        self.kernel = kernel
        self.features = features
        self.fidelity = fidelity
        self.target_fidelity = target_fidelity
        self.max_obs = max_obs
        self.feature_map = FeatureMap.for_problem(problem, features)
        self.X = np.zeros((0, problem.n_var), dtype=np.int64 if problem.integer else float)
        self.F = np.zeros((0, problem.n_obj))
        self.G = np.zeros((0, len(problem.constraints)))
        self.fid = np.zeros(0)

    # ---- interface ---------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        cost = None if self.cost_fn is None else getattr(self.cost_fn, "__qualname__", type(self.cost_fn).__name__)
        return {
            "seed": self.seed, "batch": self.batch, "init": self.init, "acquisition": self.acquisition,
            "kappa": self.kappa, "xi": self.xi, "scalarisation": self.scalarisation, "pool": self.pool,
            "cost_fn": cost, "alpha": self.alpha, "kernel": self.kernel, "features": self.features,
            "fidelity": self.fidelity, "target_fidelity": self.target_fidelity, "max_obs": self.max_obs,
        }

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        scalars, _ = super().state()
        return scalars, {"X": self.X, "F": self.F, "G": self.G, "fidelity": self.fid}

    def load_state(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super().load_state(scalars, arrays)
        self.X = np.array(arrays["X"])
        self.F = np.array(arrays["F"], dtype=float)
        self.G = np.array(arrays["G"], dtype=float)
        self.fid = np.array(arrays["fidelity"], dtype=float)

    def tell(self, X: np.ndarray, evaluation: Evaluation) -> None:
        X = np.asarray(X)
        if self.fidelity is not None:
            if self.fidelity not in evaluation.metrics:
                raise ValueError(
                    f"bayesopt: field 'fidelity': metric {self.fidelity!r} is not in the evaluation; "
                    f"it provides: {', '.join(sorted(evaluation.metrics)) or 'nothing'}"
                )
            fid = np.asarray(evaluation.metrics[self.fidelity], dtype=float).reshape(len(X))
            if not np.all(fid > 0):
                raise ValueError(f"bayesopt: field 'fidelity': metric {self.fidelity!r} must be > 0, got {fid}")
        else:
            fid = np.ones(len(X))
        self.X = np.concatenate([self.X, X.astype(self.X.dtype, copy=False)])
        self.F = np.concatenate([self.F, np.asarray(evaluation.F, dtype=float).reshape(len(X), -1)])
        G = np.asarray(evaluation.G, dtype=float).reshape(len(X), -1)
        self.G = np.concatenate([self.G if len(self.G) else np.zeros((0, G.shape[1])), G])
        self.fid = np.concatenate([self.fid, fid])
        self.generation += 1

    def ask(self) -> np.ndarray:
        """``init`` uniform samples until that many are observed, then ``batch`` model-chosen candidates."""
        if len(self.X) < self.init:
            return np.asarray(self.problem.canonical(self.problem.sample(self.init - len(self.X), self.rng)))
        return self._propose()

    # ---- model -------------------------------------------------------------------------------
    @property
    def _feasible(self) -> np.ndarray:
        return np.all(self.G <= 0, axis=1) if self.G.shape[1] else np.ones(len(self.X), dtype=bool)

    def _target_fid(self) -> float:
        return float(self.target_fidelity) if self.target_fidelity is not None else float(self.fid.max())

    def _features(self, X: np.ndarray, fid: np.ndarray | None = None) -> np.ndarray:
        # fid=None: at the target fidelity (how candidates and incumbents are judged)
        Z = self.feature_map.transform(X)
        if self.fidelity is None:
            return Z
        f_lo = float(self.fid.min())
        f_hi = max(float(self.fid.max()), self._target_fid())
        f = np.broadcast_to(np.asarray(self._target_fid() if fid is None else fid, dtype=float), (len(Z),))
        col = np.log(f / f_lo) / math.log(f_hi / f_lo) if f_hi > f_lo else np.ones(len(Z))
        return np.column_stack([Z, col])

    def _objectives(self) -> np.ndarray:
        # single objective: F as is; several: normalised to [0, 1] by the feasible observed range
        if self.problem.n_obj == 1:
            return self.F
        finite = np.all(np.isfinite(self.F), axis=1)
        rows = self.F[finite & self._feasible] if (finite & self._feasible).any() else self.F[finite]
        if len(rows) == 0:
            return np.full_like(self.F, np.nan)
        lo, hi = rows.min(axis=0), rows.max(axis=0)
        return (self.F - lo) / np.where(hi > lo, hi - lo, 1.0)

    def _quality(self, Fn: np.ndarray) -> np.ndarray:
        # A total order of observations, best first: feasible before infeasible (by violation),
        # then by objective (single) or equal-weight scalarisation (several); used to pick
        # incumbents and the subsample kept beyond max_obs.
        finite = np.all(np.isfinite(Fn), axis=1)
        value = np.full(len(Fn), np.inf)
        if finite.any():
            value[finite] = Fn[finite, 0] if Fn.shape[1] == 1 else augmented_chebyshev(
                Fn[finite], np.full(Fn.shape[1], 1.0 / Fn.shape[1]))
        violation = np.clip(self.G, 0, None).sum(axis=1) if self.G.shape[1] else np.zeros(len(Fn))
        violation = np.nan_to_num(violation, nan=np.inf)
        order = np.lexsort((value, violation))
        rank = np.empty(len(Fn), dtype=np.int64)
        rank[order] = np.arange(len(Fn))
        return rank

    def _subset(self, rank: np.ndarray, sample: bool) -> np.ndarray:
        # All rows, or beyond max_obs the best quarter plus a uniform draw of the rest (sorted,
        # so the fit does not depend on the draw's order).
        n = len(rank)
        if n <= self.max_obs or not sample:
            return np.arange(n)
        order = np.argsort(rank, kind="stable")
        n_best = self.max_obs // 4
        rest = self.rng.choice(order[n_best:], self.max_obs - n_best, replace=False)
        return np.sort(np.concatenate([order[:n_best], rest]))

    def _context(self, sample: bool) -> _Context:
        Fn = self._objectives()
        rank = self._quality(Fn)
        idx = self._subset(rank, sample)
        Z_fit = self._features(self.X, self.fid)
        cgp = None
        if self.G.shape[1]:
            gmax = self.G.max(axis=1)
            ok = idx[np.isfinite(gmax[idx])]
            cgp = fit_gp(Z_fit[ok], gmax[ok], self.kernel) if len(ok) >= 2 else None
        return _Context(Fn, rank, idx, Z_fit, self._features(self.X), self._feasible, cgp)

    def _fit_scalar(self, ctx: _Context, y: np.ndarray) -> tuple[GaussianProcess, float]:
        # (GP on y, incumbent μ*): μ* = smallest posterior mean at the target fidelity over the
        # feasible observations (over all when none is feasible yet)
        fit = ctx.idx[np.isfinite(y[ctx.idx])]
        gp = fit_gp(ctx.Z_fit[fit], y[fit], self.kernel)
        finite = np.isfinite(y)
        rows = finite & ctx.feasible if (finite & ctx.feasible).any() else finite
        return gp, float(gp.predict(ctx.Z_target[rows])[0].min())

    def _fit_pair(self, ctx: _Context) -> tuple[list[GaussianProcess], np.ndarray]:
        # (one GP per normalised objective, the model's front: posterior means at the feasible points)
        finite = np.all(np.isfinite(ctx.Fn), axis=1)
        fit = ctx.idx[finite[ctx.idx]]
        gps = [fit_gp(ctx.Z_fit[fit], ctx.Fn[fit, j], self.kernel) for j in range(2)]
        ok = finite & ctx.feasible
        front = np.column_stack([gp.predict(ctx.Z_target[ok])[0] for gp in gps]) if ok.any() else np.zeros((0, 2))
        return gps, front

    def _costs(self, X: np.ndarray) -> np.ndarray:
        # log of the cost discount cost^-α (0 without a cost model)
        if self.cost_fn is None or self.alpha == 0:
            return np.zeros(len(X))
        cost = np.asarray(self.cost_fn(X), dtype=float).reshape(-1)
        if cost.shape != (len(X),) or not np.all(np.isfinite(cost) & (cost > 0)):
            raise ValueError("bayesopt: field 'cost_fn': must return one finite cost > 0 per candidate")
        return np.asarray(-self.alpha * np.log(cost))

    @staticmethod
    def _log_pf(cgp: GaussianProcess | None, Zc: np.ndarray) -> np.ndarray:
        if cgp is None:
            return np.zeros(len(Zc))
        m, v = cgp.predict(Zc)
        s = np.sqrt(v)
        with np.errstate(divide="ignore"):
            return np.asarray(np.log(normal_cdf(-m / np.where(s > 0, s, 1e-300))))

    def _scalar_scores(
        self, gp: GaussianProcess, best: float, Zc: np.ndarray, log_w: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        # (scores, predictive std) in units of the standardised target
        mu, var = gp.predict(Zc)
        mu_s, sd_s = (mu - gp.y_mean) / gp.y_std, np.sqrt(var) / gp.y_std
        best_s = (best - gp.y_mean) / gp.y_std
        if self.acquisition == "ei":
            return log_expected_improvement(mu_s, sd_s, best_s, self.xi) + log_w, sd_s
        return _discount(best_s - lower_confidence_bound(mu_s, sd_s, self.kappa), log_w), sd_s

    @staticmethod
    def _ehvi_scores(
        gps: list[GaussianProcess], front: np.ndarray, Zc: np.ndarray, log_w: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # (log EHVI + log_w, predictive means, predictive stds) in the normalised objective space
        preds = [gp.predict(Zc) for gp in gps]
        mu = np.column_stack([p[0] for p in preds])
        sd = np.sqrt(np.column_stack([p[1] for p in preds]))
        with np.errstate(divide="ignore"):
            score = np.log(expected_hypervolume_improvement_2d(mu, sd, front, np.full(2, _EHVI_REF)))
        return score + log_w, mu, sd

    # ---- candidate pool ----------------------------------------------------------------------
    def _candidate_pool(self, incumbents: np.ndarray) -> np.ndarray:
        n_rand = self.pool - self.pool // 2
        parts = [np.asarray(self.problem.sample(n_rand, self.rng))]
        n_mut = self.pool - n_rand
        if len(incumbents) and n_mut:
            # three groups mutating 1, 2 and 3 genes on average: local steps of several sizes
            for k, group in enumerate(np.array_split(np.arange(n_mut), 3)):
                if len(group) == 0:
                    continue
                parents = incumbents[self.rng.integers(0, len(incumbents), len(group))]
                rate = min(1.0, (k + 1) / self.problem.n_var)
                parts.append(np.asarray(self.problem.mutate(parents, rate, self.rng)))
        C = np.asarray(self.problem.canonical(np.concatenate(parts))).astype(self.X.dtype, copy=False)
        C = np.unique(C, axis=0)
        seen = _row_keys(self.X)
        return C[[row.tobytes() not in seen for row in np.ascontiguousarray(C)]]

    def _incumbents(self, ctx: _Context) -> np.ndarray:
        if self.problem.n_obj > 1 and self.scalarisation == "ehvi":
            ok = ctx.feasible & np.all(np.isfinite(ctx.Fn), axis=1)
            if ok.any():
                front = np.flatnonzero(ok)[pareto_front(ctx.Fn[ok])]
                if len(front) > _N_INCUMBENTS:
                    front = np.sort(self.rng.choice(front, _N_INCUMBENTS, replace=False))
                return self.X[front]
        return self.X[np.argsort(ctx.rank, kind="stable")[:_N_INCUMBENTS]]

    # ---- proposals ---------------------------------------------------------------------------
    def _propose(self) -> np.ndarray:
        if np.all(np.isfinite(self.F), axis=1).sum() < 2:  # nothing to model yet (failed evaluations)
            return np.asarray(self.problem.canonical(self.problem.sample(self.batch, self.rng)))
        ctx = self._context(sample=True)
        cands = self._candidate_pool(self._incumbents(ctx))
        if len(cands) < self.batch:  # space (nearly) exhausted: top up with uniform samples
            extra = np.asarray(self.problem.canonical(self.problem.sample(self.batch - len(cands), self.rng)))
            return np.concatenate([cands, extra.astype(cands.dtype, copy=False)])[: self.batch]
        Zc = self._features(cands)
        log_cost = self._costs(cands)
        if self.problem.n_obj == 1:
            chosen = self._propose_believer(ctx, Zc, log_cost)
        elif self.scalarisation == "parego":
            chosen = self._propose_parego(ctx, Zc, log_cost)
        else:
            chosen = self._propose_ehvi(ctx, Zc, log_cost)
        return cands[np.asarray(chosen, dtype=np.int64)]

    @staticmethod
    def _pick(score: np.ndarray, spread: np.ndarray, taken: list[int]) -> int:
        # best score; ties (e.g. all −inf) go to the most uncertain candidate, then the first
        score = np.nan_to_num(score, nan=-np.inf)
        spread = spread.copy()
        score[taken] = -np.inf
        spread[taken] = -np.inf
        return int(np.lexsort((-spread, -score))[0])

    def _propose_believer(self, ctx: _Context, Zc: np.ndarray, log_cost: np.ndarray) -> list[int]:
        gp, best = self._fit_scalar(ctx, ctx.Fn[:, 0])
        cgp = ctx.cgp
        taken: list[int] = []
        for _ in range(self.batch):
            score, sd = self._scalar_scores(gp, best, Zc, log_cost + self._log_pf(cgp, Zc))
            j = self._pick(score, sd, taken)
            taken.append(j)
            if len(taken) < self.batch:
                # kriging believer: pretend the choice returned its posterior mean
                z = Zc[j : j + 1]
                gp = gp.condition(z, gp.predict(z)[0])
                cgp = cgp.condition(z, cgp.predict(z)[0]) if cgp is not None else None
        return taken

    def _propose_parego(self, ctx: _Context, Zc: np.ndarray, log_cost: np.ndarray) -> list[int]:
        log_w = log_cost + self._log_pf(ctx.cgp, Zc)
        finite = np.all(np.isfinite(ctx.Fn), axis=1)
        taken: list[int] = []
        for _ in range(self.batch):
            weights = self.rng.dirichlet(np.ones(ctx.Fn.shape[1]))
            y = np.full(len(ctx.Fn), np.nan)
            y[finite] = augmented_chebyshev(ctx.Fn[finite], weights)
            gp, best = self._fit_scalar(ctx, y)
            score, sd = self._scalar_scores(gp, best, Zc, log_w)
            taken.append(self._pick(score, sd, taken))
        return taken

    def _propose_ehvi(self, ctx: _Context, Zc: np.ndarray, log_cost: np.ndarray) -> list[int]:
        gps, front = self._fit_pair(ctx)
        cgp = ctx.cgp
        taken: list[int] = []
        for _ in range(self.batch):
            score, mu, sd = self._ehvi_scores(gps, front, Zc, log_cost + self._log_pf(cgp, Zc))
            j = self._pick(score, sd.sum(axis=1), taken)
            taken.append(j)
            if len(taken) < self.batch:
                z = Zc[j : j + 1]
                front = np.vstack([front, mu[j]])
                gps = [gp.condition(z, mu[j : j + 1, k]) for k, gp in enumerate(gps)]
                cgp = cgp.condition(z, cgp.predict(z)[0]) if cgp is not None else None
        return taken

    # ---- inspection --------------------------------------------------------------------------
    def scores(self, X: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Ranking scores of candidates ``X`` under the current observations (larger = proposed first).

        'ei': log(EI · P(feasible) / cost^α); 'ucb': the discounted optimistic improvement; 'ehvi':
        log(EHVI · P(feasible) / cost^α). ParEGO scalarises with ``weights`` (default: equal). Fits on
        every observation and draws no random numbers, so inspecting never changes a run.
        """
        if len(self.X) < 2:
            raise ValueError("bayesopt: scores need at least 2 observations")
        ctx = self._context(sample=False)
        Zc = self._features(np.asarray(X))
        log_w = self._costs(np.asarray(X)) + self._log_pf(ctx.cgp, Zc)
        if self.problem.n_obj > 1 and self.scalarisation == "ehvi":
            gps, front = self._fit_pair(ctx)
            return self._ehvi_scores(gps, front, Zc, log_w)[0]
        if self.problem.n_obj == 1:
            y = ctx.Fn[:, 0]
        else:
            m = ctx.Fn.shape[1]
            w = np.full(m, 1.0 / m) if weights is None else np.asarray(weights, dtype=float)
            y = np.full(len(ctx.Fn), np.nan)
            finite = np.all(np.isfinite(ctx.Fn), axis=1)
            y[finite] = augmented_chebyshev(ctx.Fn[finite], w)
        gp, best = self._fit_scalar(ctx, y)
        return self._scalar_scores(gp, best, Zc, log_w)[0]

    def front_hypervolume(self, ref: np.ndarray) -> float:
        """Hypervolume of the feasible observations' objectives (minimisation form) against ``ref``."""
        return hypervolume(self.F[self._feasible], ref)


@dataclass(frozen=True, eq=False)
class _Context:
    """What one ask derives from the observations before scoring candidates."""

    Fn: np.ndarray  # objectives (normalised when several)
    rank: np.ndarray  # quality order of the observations, 0 = best
    idx: np.ndarray  # rows the GPs are fitted on
    Z_fit: np.ndarray  # features at the observed fidelities
    Z_target: np.ndarray  # features at the target fidelity
    feasible: np.ndarray
    cgp: GaussianProcess | None  # GP of the largest constraint violation
