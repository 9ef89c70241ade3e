"""Gaussian mechanisms for federated architecture scores: clipped, noised sums and a private set union.

Flower's DP wrappers clip and noise model arrays (ArrayRecords) only; the architecture *scores*
and *proposals* a client sends are ours to protect, so the mechanisms are written here (numpy only).
Privacy unit: one client (add/remove one client's whole contribution, Flower's
``NeighboringRelation.ADD_OR_REMOVE_ONE``).

Score aggregation (``private_weighted_mean``). Client ``i`` with weight ``w_i <= 1`` and scores
``s_i`` (one per candidate, in [0, 1]) contributes one vector

    v_i = [ w_i (s_i - b_i - m_i),  κ_o·C·w_i m_i,  κ_c·C·w_i e_g(i) ]

where ``C`` is ``clip``, ``b_i`` an optional *public* baseline per candidate (e.g. the central
predictor's score on a uniform label mix, 0 where the candidate misses the client's tier deadline;
default 0), ``m_i`` the client's mean residual over the candidates when ``centre`` is on (else 0 and
the offset coordinate is left out), κ_o = ``offset_scale(cfg, …)`` and κ_c = ``count_scale``
(fractions of the clip, so a round's smaller clip — ``federation.server.round_clip`` — keeps the
same split). With ``groups`` (each client's group in a list fixed by the server, e.g. its device
tier) the client subtracts its group's baseline row and its weight goes to its group's count
coordinate (one-hot e_g: the norm is the same as with one count). The list (the vector's layout)
must not depend on the data; the server uses the tiers that answered, which the per-tier fronts
reveal anyway (a caveat of the agreed protocol, not of this mechanism). ``v_i`` is clipped to L2
norm ``C`` and the server adds N(0, (σC)²) to every coordinate of the sum: sums, offset and the
(per-group) weight totals are *one* Gaussian mechanism with L2 sensitivity ``C`` and noise
multiplier σ, one charge to the ledger. Everything after the noise is post-processing: ``sums_j =
S_j + M + Σ_g b_gj W_g``, ``mean_j = sums_j / Σ_g W_g`` with the noisy residual sums S, offset M and
group totals W_g (each floored at 0, the total at 1).

Why one release for all tiers, not one per tier: per-tier releases compose in parallel (a client is
in one tier) to the same ε, but their sum carries T independent noises — √T times the noise on every
candidate's sum. Measured on the benchmark's fleets (``benchmarks/federated_scale.py``, 5 tiers, 100
clients, ε = 1 at δ = 1e-5 over 5 rounds, clip 0.1): the within-1 % share on tuning fleets 100–129
went from 89.7 % (per-tier releases) to 99.4 % (one grouped release). On the benchmark's own fleets
0–9 (10 fleets × 50 noise seeds, ``--clip 0.1``): 98.8 % within 1 % at 100 clients (was 82.6 %;
relative regret median 0, p90 0.35 %, p99 1.07 %, max 1.82 %; worst fleet 94 %) and 100 % at 200
clients (was 94.8 %; max 0.84 %), every run spending ε = 0.999999 at δ = 1e-5.

Why centre: the argmax only needs the *differences* between candidates; subtracting the public
baseline and each client's own mean (neither changes the sensitivity: they are public or computed
from the client's own row before clipping) leaves small residuals (norm ≈ 0.1 over 26 candidates),
so a small ``clip`` keeps most of them unclipped and the noise σC is small too. The offset and the
counts shift and scale every mean together; they matter for the reported *level* of the means (and
the fronts, which mix candidates estimated in different rounds), not for the argmax. Their noise in
client units is σ/κ: κ_c = 0.3 takes 9 % of the squared norm; κ_o·|m| stays ≲ 0.35 C both with a
baseline (|m| ≲ 0.07, κ_o = 5, level error of the chosen candidate ≈ 0.015 rms at 100 clients) and
without (m ≈ the score level 0.8, κ_o = 0.3).

Choosing ``clip``: once a client's vector is clipped, its signal no longer grows with ``clip`` while
the noise σC does; a clip far below the typical norm reweights clients. On the benchmark's tuning
fleets the share is flat for clip 0.07–0.14 (99.3–98.9 %) and drops at 0.03 (98.3 %) and 0.2
(96.3 %). A public rule lands in that range: the median centred-residual norm of simulated clients
(Dirichlet(α) label mixes through the public central per-class predictor, over the public round-1
pool) is 0.08 / 0.11 / 0.13 for α = 1 / 0.5 / 0.3; the default 0.1 is that rule at α = 0.5.

What else was measured (tuning fleets, one grouped release, 40 seeds each; the default first):
successive halving to 5 candidates 99.4 %, to 3 99.0 %, none 97.9 %; a fixed clip instead of one
scaled with √(pool) 98.6 %; budget ramp ×2 per round 98.8 %; a quarter of the budget in rounds
1–4 99.3 %; exact (noise-free) counts 99.5 % — the counts' noise costs ≈ 0.1 point. Noise on the
counts is needed: under add/remove-one-client neighbours a count has sensitivity 1 (Flower's
client-side fixed clipping divides by the number of replies as if it were public, which holds only
for replace-one neighbours or a fixed public denominator).

Local variant (``local_randomize`` + ``sum_local``): each client clips and noises its own vector
before it leaves the device; the server only sums. The server's sum then has noise σ·clip·√N.
Against the server each message is a Gaussian mechanism whose replace-one sensitivity is 2·clip,
i.e. noise multiplier σ/2: ``charged_noise_multiplier`` returns what the ledger must be charged and
``plan_noise_multiplier`` doubles the calibrated σ in local mode accordingly.

Private set union (``private_set_union``): each client's ≤ K distinct proposals count 1/√K each
(L2 sensitivity 1); Gaussian noise N(0, σ²) on every count; an arch is released only if its noisy
count reaches the threshold T = 1/√K + σ·Φ⁻¹(1 − δ_u/K). An arch proposed by one client alone has
count 1/√K, so each of that client's ≤ K private archs is released with probability ≤ δ_u/K and
all of them together with probability ≤ δ_u (union bound): the mechanism is (ε_gauss(σ), δ_rdp +
δ_u)-DP (Korolova et al. 2009; Gopi et al. 2020, "Differentially private set union"). δ_u is
``union_delta(cfg)`` per release, charged with ``PrivacyLedger.charge_delta``. The union gets its
own σ from ``union_budget_share`` of the run's Gaussian budget (``split_noise_multipliers``), and
``union_can_release`` tells when even a proposal of every asked client (count n/√K) would fall 3σ
short of T: the server then skips it (no release, no charge; the decision reads only n, K and σ,
never a proposal, so it is data-independent) and gives its share to the scores. With 100 clients,
K = 4, ε = 1 the threshold is ≈ 150 against a best possible count of 50: skipped.

Randomness and the floating-point caveat. Mironov (2012, "On significance of the least significant
bits for differential privacy") showed that textbook floating-point Laplace noise leaks the input
through which doubles an output can take. What we do: with ``seed=None`` noise comes from the OS
CSPRNG (``os.urandom``; not numpy's PCG64, whose state can be recovered from outputs), uniforms
with 53 random bits feed Box–Muller, and every released noisy value is *snapped* to a power-of-two
grid about 2⁻¹² of the noise std (``snap``; post-processing, costs no privacy and moves a value by
far less than its noise), which removes the low-order-bit lattice effects the attack reads. This is
a mitigation, not a proof for the Gaussian; the proven fix is integer-scaled values with an exact
discrete Gaussian (Canonne, Kamath, Steinke 2020), not implemented here. Seeded sources (tests,
reproducible simulations) are marked ``secure = False``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = [
    "MODES",
    "DPConfig",
    "DPError",
    "NoiseSource",
    "PrivateMean",
    "as_noise_source",
    "calibrate_noise_multiplier",
    "charged_noise_multiplier",
    "clip_rows",
    "contribution_vectors",
    "local_randomize",
    "noise_rng",
    "offset_scale",
    "plan_noise_multiplier",
    "private_set_union",
    "private_weighted_mean",
    "rdp_delta",
    "snap",
    "split_noise_multipliers",
    "sum_local",
    "union_can_release",
    "union_delta",
    "union_threshold",
]

MODES = ("central", "local", "off")
# A noisy weight total below this is treated as this (post-processing): one full-weight client.
MIN_COUNT = 1.0
# The set union is skipped (and not charged) when a proposal shared by *every* asked client would
# still fall this many σ short of the threshold (``union_can_release``).
UNION_SKIP_MARGIN = 3.0
# Default offset scales (× clip) with and without a public baseline (``offset_scale``).
OFFSET_SCALE_BASELINE = 5.0
OFFSET_SCALE_RAW = 0.3
# Released values are snapped to a grid of (noise std) * 2**-SNAP_BITS, rounded down to a power of two.
SNAP_BITS = 12


class DPError(ValueError):
    """A DP option or input a user got wrong; the message names the field and the allowed values."""


# ---- configuration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DPConfig:
    """How scores and proposals are protected (every field has a default).

    ``mode``: central (the server adds the noise), local (each client does) or off (exact).
    ``epsilon``/``delta``: the run's total budget. ``clip``: L2 bound of one client's score vector.
    ``noise_multiplier``: σ; None calibrates it from the budget for ``rounds`` rounds.
    ``union_threshold``: the set union's count threshold; None derives it from ``union_delta``.
    ``seed``: None draws noise from the OS CSPRNG; an int makes it reproducible (not secure).
    Added beyond the agreed fields: ``centre`` (subtract each client's mean residual),
    ``count_scale``/``offset_scale`` (the count and offset coordinates as fractions of ``clip``;
    ``offset_scale`` None: ``offset_scale()`` picks 5 with a public baseline, 0.3 without),
    ``union_delta_share`` (share of ``delta`` given to the set union's thresholding over the run)
    ``reference_examples`` (public example count at which a client gets full weight; see
    ``federation.aggregate.aggregation_weights``) and ``union_budget_share`` (share of the run's
    Gaussian budget, Σ 1/σ², given to the set union's noisy counts when the union can release at all;
    a skipped union's share goes to the scores — see ``federation.server.plan_noise``).
    """

    mode: str = "central"
    epsilon: float = 1.0
    delta: float = 1e-5
    clip: float = 0.1
    noise_multiplier: float | None = None
    rounds: int = 5
    union_threshold: float | None = None
    seed: int | None = None
    centre: bool = True
    count_scale: float = 0.3
    offset_scale: float | None = None
    union_delta_share: float = 0.1
    reference_examples: float | None = None
    union_budget_share: float = 0.1

    def __post_init__(self) -> None:
        _check_config(self, "DPConfig")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, source: str = "dp config") -> DPConfig:
        """A config from a mapping (YAML/JSON); unknown keys and bad values raise DPError naming ``source``."""
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise DPError(f"{source}: need a mapping of options, got {type(d).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise DPError(f"{source}: unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(known)}")
        values = dict(d)
        for name in ("epsilon", "delta", "clip", "count_scale", "union_delta_share", "union_budget_share"):
            if name in values:
                values[name] = _number(values[name], name, source)
        for name in ("noise_multiplier", "union_threshold", "reference_examples", "offset_scale"):
            if values.get(name) is not None:
                values[name] = _number(values[name], name, source)
        for name in ("rounds", "seed"):
            v = values.get(name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise DPError(f"{source}: field {name!r}: need an integer, got {v!r}")
        if "centre" in values and not isinstance(values["centre"], bool):
            raise DPError(f"{source}: field 'centre': need true or false, got {values['centre']!r}")
        obj = object.__new__(cls)
        for f in fields(cls):
            object.__setattr__(obj, f.name, values.get(f.name, f.default))
        _check_config(obj, source)
        return obj

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``from_dict`` reads it back)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _number(value: Any, name: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DPError(f"{source}: field {name!r}: need a number, got {value!r}")
    return float(value)


def _check_config(c: DPConfig, source: str) -> None:
    def bad(name: str, why: str) -> DPError:
        return DPError(f"{source}: field {name!r}: {getattr(c, name)!r}; {why}")

    if c.mode not in MODES:
        raise bad("mode", f"allowed: {', '.join(MODES)}")
    if not (isinstance(c.epsilon, int | float) and math.isfinite(c.epsilon) and c.epsilon > 0):
        raise bad("epsilon", "need a finite number > 0")
    if not (isinstance(c.delta, int | float) and 0 < c.delta < 1):
        raise bad("delta", "need a number in (0, 1)")
    if not (isinstance(c.clip, int | float) and math.isfinite(c.clip) and c.clip > 0):
        raise bad("clip", "need a finite number > 0")
    if c.noise_multiplier is not None and not (math.isfinite(c.noise_multiplier) and c.noise_multiplier > 0):
        raise bad("noise_multiplier", "need a finite number > 0, or null to calibrate from the budget")
    if isinstance(c.rounds, bool) or not isinstance(c.rounds, int) or c.rounds < 1:
        raise bad("rounds", "need an integer >= 1")
    if c.union_threshold is not None and not math.isfinite(c.union_threshold):
        raise bad("union_threshold", "need a finite number, or null to derive it from delta")
    if c.seed is not None and (isinstance(c.seed, bool) or not isinstance(c.seed, int) or c.seed < 0):
        raise bad("seed", "need an integer >= 0, or null for OS entropy")
    if not isinstance(c.centre, bool):
        raise bad("centre", "allowed: true, false")
    if not (isinstance(c.count_scale, int | float) and 0 < c.count_scale < 1):
        raise bad("count_scale", "need a number in (0, 1): the count coordinate is count_scale·clip·w")
    v = c.offset_scale
    if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
        raise bad("offset_scale", "need a finite number > 0, or null for the default (see offset_scale())")
    if not (isinstance(c.union_delta_share, int | float) and 0 < c.union_delta_share < 1):
        raise bad("union_delta_share", "need a number in (0, 1)")
    if not (isinstance(c.union_budget_share, int | float) and 0 < c.union_budget_share < 1):
        raise bad("union_budget_share", "need a number in (0, 1)")
    if c.reference_examples is not None and not (math.isfinite(c.reference_examples) and c.reference_examples > 0):
        raise bad("reference_examples", "need a number > 0, or null")


def offset_scale(cfg: DPConfig, baseline: bool) -> float:
    """The offset coordinate's scale (× clip): ``cfg.offset_scale``, or by default 5 with a public baseline, else 0.3.

    The coordinate carries offset_scale·clip·w·m with m the client's mean residual: ≲ 0.07 after a
    public baseline, ≈ 0.8 (the score level) without one; both defaults keep it ≲ 0.35·clip, and the
    larger the scale the less noise on the decoded level (σ/offset_scale in client units).
    """
    if cfg.offset_scale is not None:
        return float(cfg.offset_scale)
    return OFFSET_SCALE_BASELINE if baseline else OFFSET_SCALE_RAW


def rdp_delta(cfg: DPConfig) -> float:
    """The δ at which the RDP ledger reports ε: ``delta`` minus the set union's share."""
    return cfg.delta * (1.0 - cfg.union_delta_share)


def union_delta(cfg: DPConfig) -> float:
    """δ_u spent by one set-union release's thresholding (the union's share spread over ``rounds``)."""
    return cfg.delta * cfg.union_delta_share / cfg.rounds


# ---- noise ------------------------------------------------------------------------------------
class NoiseSource:
    """Gaussian noise from the OS CSPRNG (``seed`` None, ``secure``) or a seeded numpy generator."""

    def __init__(self, seed: int | None = None, generator: np.random.Generator | None = None) -> None:
        self._gen = generator if generator is not None else (None if seed is None else np.random.default_rng(seed))
        self.secure = self._gen is None

    def standard_normal(self, size: int | tuple[int, ...]) -> np.ndarray:
        """float64 standard normal draws of ``size``."""
        if self._gen is not None:
            return self._gen.standard_normal(size)
        shape = (size,) if isinstance(size, int) else tuple(size)
        n = math.prod(shape)
        pairs = (n + 1) // 2
        raw = np.frombuffer(os.urandom(16 * pairs), dtype=np.uint64).reshape(2, pairs)
        # 53 random bits each, centred in their cell: uniforms strictly inside (0, 1), so log() is finite.
        u = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
        radius = np.sqrt(-2.0 * np.log(u[0]))
        angle = 2.0 * math.pi * u[1]
        z = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]
        return z.reshape(shape)

    def normal(self, scale: float, size: int | tuple[int, ...]) -> np.ndarray:
        """float64 N(0, scale²) draws of ``size``."""
        return float(scale) * self.standard_normal(size)


def noise_rng(seed: int | None) -> NoiseSource:
    """A Gaussian noise source: OS CSPRNG when ``seed`` is None, else seeded (reproducible, not secure)."""
    return NoiseSource(seed)


def as_noise_source(rng: NoiseSource | np.random.Generator | int | None) -> NoiseSource:
    """``rng`` as a NoiseSource (None: OS CSPRNG; int: seeded; a numpy Generator is wrapped, not secure)."""
    if isinstance(rng, NoiseSource):
        return rng
    if isinstance(rng, np.random.Generator):
        return NoiseSource(generator=rng)
    if rng is None or (isinstance(rng, int) and not isinstance(rng, bool)):
        return NoiseSource(rng)
    raise DPError(f"rng: need a NoiseSource, numpy Generator, int seed or None, got {type(rng).__name__}")


def snap(values: np.ndarray, noise_std: float) -> np.ndarray:
    """``values`` rounded to a power-of-two grid ≈ ``noise_std``·2⁻¹² (post-processing; see the module doc)."""
    if not noise_std > 0:
        return np.asarray(values, dtype=np.float64)
    grid = 2.0 ** math.floor(math.log2(noise_std) - SNAP_BITS)
    return np.round(np.asarray(values, dtype=np.float64) / grid) * grid


# ---- calibration ------------------------------------------------------------------------------
def _epsilon_for(sigma: float, delta: float, releases: int, sampling_rate: float) -> float:
    from federation.accounting import PrivacyLedger

    ledger = PrivacyLedger(delta=delta, max_epsilon=None)
    ledger.charge(sigma, sampling_rate=sampling_rate, count=releases, label="calibration")
    return ledger.epsilon


def calibrate_noise_multiplier(epsilon: float, delta: float, releases: int, sampling_rate: float = 1.0) -> float:
    """Smallest σ (to 1e-6 relative) with which ``releases`` Gaussian releases compose to ε ≤ ``epsilon`` at δ.

    Uses the same RDP accountant (Flower's ``RdpAccountant`` over dp-accounting) as the ledger, so a
    ledger charged with the result reports at most ``epsilon``.
    """
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise DPError(f"calibrate_noise_multiplier: field 'epsilon': {epsilon!r}; need a finite number > 0")
    if not 0 < delta < 1:
        raise DPError(f"calibrate_noise_multiplier: field 'delta': {delta!r}; need a number in (0, 1)")
    if isinstance(releases, bool) or not isinstance(releases, int) or releases < 1:
        raise DPError(f"calibrate_noise_multiplier: field 'releases': {releases!r}; need an integer >= 1")
    if not 0 < sampling_rate <= 1:
        raise DPError(f"calibrate_noise_multiplier: field 'sampling_rate': {sampling_rate!r}; need a number in (0, 1]")
    lo, hi = 1e-3, 1.0
    while _epsilon_for(hi, delta, releases, sampling_rate) > epsilon:
        lo, hi = hi, hi * 2.0
        if hi > 1e7:
            raise DPError(f"calibrate_noise_multiplier: no σ ≤ 1e7 reaches ε = {epsilon} at δ = {delta}")
    # ε(σ) is decreasing in σ; keep ε(hi) <= target throughout.
    while (hi - lo) > 1e-6 * hi:
        mid = 0.5 * (lo + hi)
        if _epsilon_for(mid, delta, releases, sampling_rate) > epsilon:
            lo = mid
        else:
            hi = mid
    return hi


def split_noise_multipliers(epsilon: float, delta: float, shares: Sequence[float]) -> list[float]:
    """σ_i of releases that together spend ε at δ, release i getting ``shares[i]`` of the Gaussian budget Σ 1/σ².

    Unsampled Gaussian releases compose in RDP as α/2 · Σ 1/σ_i², so any σ_i with Σ 1/σ_i² = 1/σ_1²
    (σ_1 the single release that spends the whole ε) spends the same ε: σ_i = σ_1 / √(share_i / Σ shares).
    A relative 1e-9 is added to each σ so float rounding never takes the composition past ε.
    """
    s = np.asarray(shares, dtype=np.float64)
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise DPError(f"split_noise_multipliers: field 'shares': {list(shares)!r}; need one or more numbers > 0")
    sigma_1 = calibrate_noise_multiplier(epsilon, delta, 1)
    return [float(sigma_1 / math.sqrt(x) * (1 + 1e-9)) for x in s / s.sum()]


def plan_noise_multiplier(cfg: DPConfig, releases_per_round: int = 1, sampling_rate: float = 1.0) -> float:
    """σ for every release of a run of ``cfg.rounds`` rounds: ``cfg.noise_multiplier`` or calibrated (0 when off).

    Local mode doubles the calibrated σ, because the ledger charges σ/2 there (``charged_noise_multiplier``).
    """
    if cfg.mode == "off":
        return 0.0
    if cfg.noise_multiplier is not None:
        return float(cfg.noise_multiplier)
    sigma = calibrate_noise_multiplier(cfg.epsilon, rdp_delta(cfg), cfg.rounds * releases_per_round, sampling_rate)
    return 2.0 * sigma if cfg.mode == "local" else sigma


def charged_noise_multiplier(cfg: DPConfig, noise_multiplier: float) -> float:
    """The noise multiplier a score release must be charged with: σ (central) or σ/2 (local, replace-one)."""
    return noise_multiplier / 2.0 if cfg.mode == "local" else noise_multiplier


# ---- clipping and contributions --------------------------------------------------------------
def clip_rows(contributions: np.ndarray, clip: float) -> np.ndarray:
    """A copy of ``contributions`` (n, d) with every row scaled down to L2 norm ≤ ``clip``."""
    if not (math.isfinite(clip) and clip > 0):
        raise DPError(f"clip_rows: field 'clip': {clip!r}; need a finite number > 0")
    x = np.atleast_2d(np.asarray(contributions, dtype=np.float64))
    if not np.all(np.isfinite(x)):
        raise DPError("clip_rows: contributions contain NaN or infinity")
    norms = np.linalg.norm(x, axis=1)
    factor = np.minimum(1.0, clip / np.maximum(norms, np.finfo(np.float64).tiny))
    return x * factor[:, None]


def _check_scores(scores: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    w = np.asarray(weights, dtype=np.float64).ravel()
    if s.ndim != 2 or s.shape[0] != w.size:
        raise DPError(f"scores: need shape (n_clients, n_cand) with n_clients = {w.size} weights, got {s.shape}")
    if s.shape[1] == 0:
        raise DPError("scores: need at least one candidate")
    if not np.all(np.isfinite(s)) or np.any((s < 0) | (s > 1)):
        raise DPError("scores: every score must be in [0, 1] (accuracy / 100, 0 where the deadline is missed)")
    if not np.all(np.isfinite(w)) or np.any((w < 0) | (w > 1)):
        raise DPError("weights: every weight must be in [0, 1] (bounded weights keep the sensitivity at 'clip')")
    return s, w


def _baseline(baseline: np.ndarray | None, n_cand: int) -> np.ndarray:
    if baseline is None:
        return np.zeros(n_cand)
    b = np.asarray(baseline, dtype=np.float64).ravel()
    if b.size != n_cand or not np.all(np.isfinite(b)):
        raise DPError(f"baseline: need {n_cand} finite public values (one per candidate), got {b.size}")
    return b


def _groups(groups: Sequence[int] | np.ndarray | None, baseline: np.ndarray | None, n_clients: int, n_cand: int
            ) -> tuple[np.ndarray | None, np.ndarray]:
    """(group index per client or None, baseline rows (n_groups, n_cand)) checked against each other."""
    if groups is None:
        return None, _baseline(baseline, n_cand)[None, :]
    g = np.asarray(groups).ravel()
    if g.size != n_clients or not np.issubdtype(g.dtype, np.integer):
        raise DPError(f"groups: need one integer group index per client ({n_clients}), got {g.dtype} of {g.size}")
    if baseline is None:
        raise DPError("groups: need a public baseline per group, shape (n_groups, n_cand); got none")
    b = np.atleast_2d(np.asarray(baseline, dtype=np.float64))
    if b.ndim != 2 or b.shape[1] != n_cand or not np.all(np.isfinite(b)):
        raise DPError(f"baseline: need (n_groups, {n_cand}) finite public values with groups, got {b.shape}")
    if g.size and (g.min() < 0 or g.max() >= b.shape[0]):
        raise DPError(f"groups: every index must be in [0, {b.shape[0]}) (one baseline row per group)")
    return g.astype(np.int64), b


def contribution_vectors(
    scores: np.ndarray,
    weights: np.ndarray,
    cfg: DPConfig,
    baseline: np.ndarray | None = None,
    groups: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Unclipped (n_clients, n_cand [+ 1 with ``centre``] + n_groups) vectors, the layout in the module doc.

    [w(s−b−m), offset_scale·clip·w·m, count_scale·clip·w·e_g]: without ``groups`` one count
    coordinate (e_g = 1) and ``baseline`` (n_cand,); with ``groups`` (a public group index per
    client) ``baseline`` is (n_groups, n_cand), client i subtracts row groups[i] and its weight goes
    to count coordinate groups[i] (one-hot, so the vector's norm is the same as with one count).
    """
    s, w = _check_scores(scores, weights)
    g, b = _groups(groups, baseline, len(w), s.shape[1])
    resid = s - (b[g] if g is not None else b)
    parts = []
    if cfg.centre:
        m = resid.mean(axis=1)
        scale = offset_scale(cfg, baseline is not None)
        parts = [w[:, None] * (resid - m[:, None]), (scale * cfg.clip * w * m)[:, None]]
    else:
        parts = [w[:, None] * resid]
    onehot = np.ones((len(w), 1)) if g is None else np.eye(b.shape[0])[g]
    parts.append(cfg.count_scale * cfg.clip * w[:, None] * onehot)
    return np.hstack(parts)


@dataclass(frozen=True)
class PrivateMean:
    """A (noisy) weighted mean of client scores.

    ``mean`` (n_cand,) is the estimate of Σ w_i s_i / Σ w_i; ``noisy_sums`` (n_cand,) of Σ w_i s_i;
    ``noisy_count`` of Σ w_i (floored at MIN_COUNT); ``sigma`` is the noise std on each released
    coordinate (0 when off); ``clipped_fraction`` the share of clients whose vector was scaled down
    (NaN when the server cannot know, in local mode). ``clipped_fraction`` is computed from the raw
    contributions and is *not* private: a server-side diagnostic for tuning ``clip``, never to be
    published or sent to clients (Flower's adaptive clipping noises that count for this reason).
    ``group_counts``: the noisy weight total of every group (floored at 0; one entry without groups).
    """

    mean: np.ndarray
    noisy_sums: np.ndarray
    noisy_count: float
    sigma: float
    clipped_fraction: float
    group_counts: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _decode(
    total: np.ndarray, n_cand: int, cfg: DPConfig, b: np.ndarray, sigma: float, clipped: float, baseline: bool
) -> PrivateMean:
    """Post-processing of one released vector; ``b`` is (n_groups, n_cand), one row per count coordinate."""
    resid_sums = total[:n_cand].copy()
    if cfg.centre:
        resid_sums += total[n_cand] / (offset_scale(cfg, baseline) * cfg.clip)
    raw_counts = np.asarray(total[-len(b):], dtype=np.float64) / (cfg.count_scale * cfg.clip)
    # One count: floored at one full-weight client; per group: at 0 (their total is floored below).
    counts = np.maximum(raw_counts, MIN_COUNT if len(b) == 1 else 0.0)
    count = max(float(counts.sum()), MIN_COUNT)
    sums = resid_sums + counts @ b
    return PrivateMean(sums / count, sums, count, sigma, clipped, counts)


def private_weighted_mean(
    scores: np.ndarray,
    weights: np.ndarray,
    cfg: DPConfig,
    noise_multiplier: float,
    rng: NoiseSource | np.random.Generator | int | None,
    baseline: np.ndarray | None = None,
    groups: Sequence[int] | np.ndarray | None = None,
) -> PrivateMean:
    """The weighted mean of ``scores`` (n_clients, n_cand): exact when off, else one clipped Gaussian release.

    Central mode: one Gaussian mechanism, L2 sensitivity ``cfg.clip``, noise multiplier
    ``noise_multiplier`` (charge it once). ``baseline`` must be public (not derived from client data):
    (n_cand,), or (n_groups, n_cand) with ``groups`` (a public group index per client, e.g. its device
    tier), see ``contribution_vectors``. Local mode takes no groups.
    """
    s, w = _check_scores(scores, weights)
    n_cand = s.shape[1]
    if cfg.mode == "off":
        total = float(w.sum())
        if total <= 0:
            raise DPError("weights: all zero; nothing to average")
        sums = w @ s
        return PrivateMean(sums / total, sums, total, 0.0, 0.0, np.array([total]))
    if cfg.mode == "local":
        if groups is not None:
            raise DPError("groups: the local variant takes no groups (each client sends one count coordinate)")
        src = as_noise_source(rng)  # one source for all clients: an int seed must not repeat the same noise
        rows = [local_randomize(s[i], float(w[i]), cfg, noise_multiplier, src, baseline) for i in range(len(w))]
        return sum_local(rows, cfg, noise_multiplier, baseline)
    if not noise_multiplier > 0:
        raise DPError(f"noise_multiplier: {noise_multiplier!r}; central mode needs σ > 0")
    _, b = _groups(groups, baseline, len(w), n_cand)
    raw = contribution_vectors(s, w, cfg, baseline, groups)
    clipped = clip_rows(raw, cfg.clip)
    clipped_fraction = float(np.mean(np.linalg.norm(raw, axis=1) > cfg.clip)) if len(raw) else 0.0
    std = noise_multiplier * cfg.clip
    noisy = snap(clipped.sum(axis=0) + as_noise_source(rng).normal(std, clipped.shape[1]), std)
    return _decode(noisy, n_cand, cfg, b, std, clipped_fraction, baseline is not None)


def local_randomize(
    scores_row: np.ndarray,
    weight: float,
    cfg: DPConfig,
    noise_multiplier: float,
    rng: NoiseSource | np.random.Generator | int | None,
    baseline: np.ndarray | None = None,
) -> np.ndarray:
    """The client's message in local mode: its contribution vector clipped to ``cfg.clip`` plus N(0, (σ·clip)²)."""
    if not noise_multiplier > 0:
        raise DPError(f"noise_multiplier: {noise_multiplier!r}; local mode needs σ > 0")
    row = np.asarray(scores_row, dtype=np.float64).ravel()
    v = clip_rows(contribution_vectors(row[None, :], np.array([weight]), cfg, baseline), cfg.clip)[0]
    std = noise_multiplier * cfg.clip
    return snap(v + as_noise_source(rng).normal(std, v.size), std)


def sum_local(
    rows: Sequence[np.ndarray] | np.ndarray,
    cfg: DPConfig | None = None,
    noise_multiplier: float = 0.0,
    baseline: np.ndarray | None = None,
) -> PrivateMean:
    """The server's mean from local-mode messages (their sum, decoded; ``cfg``/``baseline`` as the clients used)."""
    cfg = cfg or DPConfig(mode="local")
    arr = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    if arr.shape[0] == 0:
        raise DPError("sum_local: no client messages")
    n_cand = arr.shape[1] - (2 if cfg.centre else 1)
    if n_cand < 1:
        raise DPError(f"sum_local: messages of width {arr.shape[1]} carry no candidates")
    sigma = noise_multiplier * cfg.clip * math.sqrt(arr.shape[0])
    return _decode(arr.sum(axis=0), n_cand, cfg, _baseline(baseline, n_cand)[None, :], sigma, math.nan,
                   baseline is not None)


# ---- private set union -------------------------------------------------------------------------
def union_threshold(noise_multiplier: float, max_per_client: int, delta_u: float) -> float:
    """T = 1/√K + σ·Φ⁻¹(1 − δ_u/K): a single client's ≤ K archs pass it with total probability ≤ δ_u."""
    if not noise_multiplier > 0 or max_per_client < 1 or not 0 < delta_u < 1:
        raise DPError(
            f"union_threshold: need σ > 0, K >= 1 and δ_u in (0, 1), got {noise_multiplier}, {max_per_client}, "
            f"{delta_u}"
        )
    z = -NormalDist().inv_cdf(delta_u / max_per_client)  # upper tail, accurate for tiny probabilities
    return 1.0 / math.sqrt(max_per_client) + noise_multiplier * z


def union_can_release(
    n_clients: int, max_per_client: int, noise_multiplier: float, threshold: float, margin: float = UNION_SKIP_MARGIN
) -> bool:
    """False when even a proposal of all ``n_clients`` (count n/√K) falls ``margin`` σ short of ``threshold``.

    Then every arch's noisy count passes with probability ≤ Φ̄(margin) (0.13 % at 3σ, and only if
    every client proposed the same arch), so skipping the release loses (almost) nothing. The test
    reads only the number of clients asked (public: it is in every round record and the quorum rule),
    K and σ — never a proposal — so skipping is data-independent and costs no privacy; the release
    is then not made and not charged.
    """
    if isinstance(max_per_client, bool) or not isinstance(max_per_client, int) or max_per_client < 1:
        raise DPError(f"union_can_release: field 'max_per_client': {max_per_client!r}; need an integer >= 1")
    return n_clients / math.sqrt(max_per_client) >= threshold - margin * noise_multiplier


def private_set_union(
    proposals: Sequence[np.ndarray],
    cfg: DPConfig,
    noise_multiplier: float,
    rng: NoiseSource | np.random.Generator | int | None,
    threshold: float | None = None,
    max_per_client: int | None = None,
) -> np.ndarray:
    """Released proposals (m, L), sorted: the plain union when off, else the noisy-count thresholded union.

    ``max_per_client`` is K, the public top-K the server asked for (None: the largest number of
    distinct proposals any client sent); a client's extra rows beyond K are dropped, in its order.
    ``threshold`` overrides ``cfg.union_threshold`` which overrides ``union_threshold(σ, K, union_delta(cfg))``.
    Charge the ledger once with σ and ``charge_delta(union_delta(cfg))`` for a DP release.
    """
    per_client: list[np.ndarray] = []
    width: int | None = None
    for i, p in enumerate(proposals):
        arr = np.asarray(p)
        if arr.size == 0:
            continue
        arr = np.atleast_2d(arr)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
            raise DPError(
                f"proposals[{i}]: need an integer array (k, L) of architecture codes, got {arr.dtype} {arr.shape}"
            )
        if width is None:
            width = arr.shape[1]
        elif arr.shape[1] != width:
            raise DPError(f"proposals[{i}]: codes of length {arr.shape[1]}, earlier clients sent length {width}")
        _, first = np.unique(arr, axis=0, return_index=True)
        per_client.append(arr[np.sort(first)].astype(np.int64))  # distinct, in the client's order
    if width is None:
        return np.zeros((0, 0), dtype=np.int64)
    if cfg.mode == "off":
        return np.unique(np.vstack(per_client), axis=0)
    k = max_per_client if max_per_client is not None else max(len(p) for p in per_client)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise DPError(f"max_per_client: {k!r}; need an integer >= 1 (the top-K the server asked for)")
    if not noise_multiplier > 0:
        raise DPError(f"noise_multiplier: {noise_multiplier!r}; a private set union needs σ > 0")
    rows = np.vstack([p[:k] for p in per_client])
    uniq, inverse = np.unique(rows, axis=0, return_inverse=True)
    counts = np.bincount(inverse.ravel(), minlength=len(uniq)) / math.sqrt(k)
    t = threshold if threshold is not None else cfg.union_threshold
    if t is None:
        t = union_threshold(noise_multiplier, k, union_delta(cfg))
    noisy = counts + as_noise_source(rng).normal(noise_multiplier, len(uniq))
    return uniq[noisy >= t]
