"""Server-side aggregation of client scores: weights, the global choice, per-tier fronts and mode plans.

``A_global = argmax_A Σ_i w_i Score_i(A) / Σ_i w_i`` over the round's candidate pool, computed
exactly (DP off, equal to ``centralised_choice`` on the union of all scores) or through one
Gaussian release (``federation.dp.private_weighted_mean``). Fronts and mode plans per device tier
use the (noisy) aggregated accuracy with latency and energy from the *public* catalogue profiles,
so they cost no privacy beyond the score release itself. A client scores 0 where an architecture
misses its own deadline, so the fleet mean understates the accuracy of an architecture only the
fast tiers can run; ``runnable_accuracy`` rescales it to the clients able to run it (public
deadlines and latencies, the server's own count of who answered) before the fronts are taken.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from federation.dp import DPConfig, DPError, NoiseSource, PrivateMean, private_weighted_mean
from runtime.hardware import load_device
from search.cost.table import SpaceCostTable
from search.modes import ModePlan, ModeRules, ModeSelectionError, select_modes
from search.pareto import pareto_front
from search.space.mobilenetv3 import MobileNetV3Space

__all__ = [
    "Aggregate",
    "ClientScores",
    "TierFront",
    "aggregate_scores",
    "aggregation_weights",
    "centralised_choice",
    "regret",
    "relative_regret",
    "report_weights",
    "runnable_accuracy",
    "score_matrix",
    "tier_fronts",
]

FRONT_METRICS = ("latency_ms", "energy_mj", "peak_activation_bytes", "macs", "params")


@dataclass(frozen=True)
class ClientScores:
    """One client's scores for the round's pool: Score_i(A) in [0, 1] per candidate (0 = misses its deadline)."""

    node_id: int
    tier: str
    n_examples: int
    reliability: float
    scores: np.ndarray


def aggregation_weights(
    n_examples: np.ndarray, reliability: np.ndarray, cap: float = 1.0, reference: float | None = None
) -> np.ndarray:
    """Weights w_i ∝ n_i·r_i, at most ``cap``: ``cap·min(1, n_i r_i / reference)``, or scaled so max = cap.

    Why bounded: a client's contribution to the weighted sums is w_i·s_i, so the sensitivity of a
    release is bounded only if every weight is (then clipping to ``clip`` is not what bounds it on
    its own). Why ``reference``: scaling by the round's largest n_i r_i makes every weight depend on
    every client (adding one big client rescales all the others), which breaks the sensitivity
    analysis; a *public* reference count keeps each weight a function of its own client only. Use
    ``reference=None`` (max-scaling, w exactly ∝ n·r) only without DP.
    """
    n = np.asarray(n_examples, dtype=np.float64).ravel()
    r = np.asarray(reliability, dtype=np.float64).ravel()
    if n.shape != r.shape:
        raise DPError(f"aggregation_weights: {n.size} example counts but {r.size} reliabilities")
    if np.any(~np.isfinite(n) | (n < 0)):
        raise DPError("aggregation_weights: field 'n_examples': need finite counts >= 0")
    if np.any(~np.isfinite(r) | (r < 0) | (r > 1)):
        raise DPError("aggregation_weights: field 'reliability': need fractions in [0, 1]")
    if not 0 < cap <= 1:
        raise DPError(f"aggregation_weights: field 'cap': {cap!r}; need a number in (0, 1]")
    raw = n * r
    if reference is not None:
        if not reference > 0:
            raise DPError(f"aggregation_weights: field 'reference': {reference!r}; need a number > 0")
        return cap * np.minimum(1.0, raw / reference)
    top = raw.max() if raw.size else 0.0
    return cap * raw / top if top > 0 else np.zeros_like(raw)


def report_weights(reports: Sequence[ClientScores], cfg: DPConfig, cap: float = 1.0) -> np.ndarray:
    """The weights ``aggregate_scores`` uses for ``reports`` under ``cfg``.

    With ``cfg.reference_examples`` set: ``cap·min(1, n r / reference)`` in every mode. Without it:
    mode off scales n·r by the round's maximum (w ∝ n·r exactly); the DP modes use ``cap·r`` alone
    (data sizes ignored), because max-scaling is not DP-sound (see ``aggregation_weights``).
    """
    n = np.array([rep.n_examples for rep in reports], dtype=np.float64)
    r = np.array([rep.reliability for rep in reports], dtype=np.float64)
    if cfg.reference_examples is None and cfg.mode != "off":
        return aggregation_weights(np.ones_like(n), r, cap, reference=1.0)
    return aggregation_weights(n, r, cap, reference=cfg.reference_examples)


def score_matrix(pool: np.ndarray, reports: Sequence[ClientScores]) -> np.ndarray:
    """float64 (n_clients, n_cand): the reports' scores, checked against the pool's size."""
    n_cand = len(np.atleast_2d(pool)) if np.size(pool) else 0
    if not reports:
        raise DPError("reports: no client scores to aggregate")
    rows = []
    for rep in reports:
        s = np.asarray(rep.scores, dtype=np.float64).ravel()
        if s.size != n_cand:
            raise DPError(f"client {rep.node_id}: {s.size} scores for a pool of {n_cand} candidates")
        rows.append(s)
    return np.vstack(rows)


@dataclass(frozen=True)
class Aggregate:
    """A round's aggregation: the pool (n_cand, L), mean scores, the argmax and the private release (if any)."""

    pool: np.ndarray
    mean_scores: np.ndarray
    best_index: int
    private: PrivateMean | None
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def best_code(self) -> np.ndarray:
        """The chosen architecture's encoding."""
        return np.asarray(self.pool)[self.best_index]


def aggregate_scores(
    pool: np.ndarray,
    reports: Sequence[ClientScores],
    cfg: DPConfig,
    noise_multiplier: float,
    rng: NoiseSource | np.random.Generator | int | None,
    baseline: np.ndarray | None = None,
) -> Aggregate:
    """A_global = argmax of the weighted mean score over ``pool`` (exact when off, one Gaussian release otherwise).

    ``baseline`` is an optional *public* score per candidate (see ``federation.dp``); it changes
    nothing when DP is off. In central mode charge the ledger once with ``noise_multiplier``.
    """
    pool = np.atleast_2d(np.asarray(pool))
    s = score_matrix(pool, reports)
    w = report_weights(reports, cfg)
    pm = private_weighted_mean(s, w, cfg, noise_multiplier, rng, baseline)
    best = int(np.argmax(pm.mean))
    return Aggregate(pool, pm.mean, best, None if cfg.mode == "off" else pm, w)


def centralised_choice(pool: np.ndarray, reports: Sequence[ClientScores], reference: float | None = None) -> int:
    """Index of the best candidate computed directly on the union of all clients' scores (no DP, no clipping)."""
    s = score_matrix(np.atleast_2d(np.asarray(pool)), reports)
    n = np.array([rep.n_examples for rep in reports], dtype=np.float64)
    r = np.array([rep.reliability for rep in reports], dtype=np.float64)
    w = aggregation_weights(n, r, reference=reference)
    # Stack every (client, candidate) score with its client's weight and average per candidate.
    client_idx, cand_idx = np.indices(s.shape)
    totals = np.bincount(cand_idx.ravel(), weights=(w[client_idx] * s).ravel(), minlength=s.shape[1])
    return int(np.argmax(totals / w.sum()))


def regret(chosen_index: int, true_scores: np.ndarray) -> float:
    """True best score − true score of ``chosen_index`` (score units, ≥ 0)."""
    t = np.asarray(true_scores, dtype=np.float64).ravel()
    if not 0 <= chosen_index < t.size:
        raise DPError(f"regret: chosen_index {chosen_index} outside the pool of {t.size}")
    return float(t.max() - t[chosen_index])


def relative_regret(chosen_index: int, true_scores: np.ndarray) -> float:
    """``regret`` as a percentage of the true best score (0 when the best score is 0)."""
    t = np.asarray(true_scores, dtype=np.float64).ravel()
    best = float(t.max()) if t.size else 0.0
    return 100.0 * regret(chosen_index, t) / best if best > 0 else 0.0


# ---- per-tier fronts ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TierFront:
    """The global Pareto front for one device tier over (accuracy max, latency_ms min, energy_mj min).

    ``indices`` point into the round's pool; ``codes`` are those rows; ``metrics`` hold accuracy
    (as aggregated) and the tier's catalogue costs, one value per front member.
    """

    tier: str
    indices: np.ndarray
    codes: np.ndarray
    metrics: Mapping[str, np.ndarray]
    space: MobileNetV3Space = field(repr=False, compare=False)

    def archs(self) -> list[dict[str, Any]]:
        """Arch JSON of every front member."""
        return [self.space.decode(c).to_json() for c in self.codes]

    def modeplan(
        self,
        deadline_ms: float | None,
        memory_limit_bytes: float | None = None,
        accuracy_floor: float | None = None,
        balanced: str = "knee",
    ) -> ModePlan | None:
        """high / balanced / low for this tier from its front (``search.modes.select_modes``); None if none fits."""
        rules = ModeRules(
            deadline_ms=deadline_ms,
            memory_limit_bytes=memory_limit_bytes,
            accuracy_floor=accuracy_floor,
            balanced=balanced,
        )
        if len(self.indices) == 0:
            return None
        try:
            return select_modes(self.metrics, rules, archs=self.archs(), device=self.tier)
        except ModeSelectionError:
            return None


def runnable_accuracy(
    mean: np.ndarray,
    weight_per_tier: Mapping[str, float],
    deadlines: Mapping[str, float],
    latency_ms: Mapping[str, np.ndarray],
) -> np.ndarray:
    """Per candidate, the fleet mean rescaled to the clients whose tier meets its deadline, clipped to [0, 1].

    The fleet mean ``Σ_i w_i Score_i(A) / Σ_i w_i`` counts a 0 for every client that cannot run A in
    time; A's accuracy among the clients that can is that mean times ``W / W_runnable(A)``, with
    ``W_t`` the summed aggregation weights of tier t's clients and ``latency_ms[t]`` the catalogue
    latency of each candidate on tier t. Everything used is public or the server's own. Post-
    processing of the released mean, so no privacy cost; the clip only removes values noise pushed
    out of range. A candidate no tier can run keeps its mean (0 up to noise).
    """
    mean = np.asarray(mean, dtype=np.float64).ravel()
    total = float(sum(weight_per_tier.values()))
    runnable = np.zeros(len(mean))
    for tier, w in weight_per_tier.items():
        if tier in deadlines and tier in latency_ms:
            runnable += w * (np.asarray(latency_ms[tier]) <= deadlines[tier])
        else:  # a tier without a deadline or latencies runs everything: its zeros are real scores
            runnable += w
    scale = np.divide(total, runnable, out=np.ones_like(runnable), where=runnable > 0)
    return np.clip(mean * scale, 0.0, 1.0)


def tier_fronts(
    pool: np.ndarray,
    accuracy: np.ndarray,
    space: MobileNetV3Space,
    tiers: Sequence[str],
    tables: Mapping[str, SpaceCostTable] | None = None,
    costs: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> dict[str, TierFront]:
    """Per tier (catalogue device name), the Pareto front of ``pool`` over (accuracy, latency_ms, energy_mj).

    ``tables`` may hold prebuilt ``SpaceCostTable``s by tier (building one costs a few hundred ms);
    ``costs`` the pool's already evaluated costs by tier (``SpaceCostTable.evaluate``).
    """
    codes = np.atleast_2d(np.asarray(pool))
    acc = np.asarray(accuracy, dtype=np.float64).ravel()
    if acc.size != len(codes):
        raise DPError(f"tier_fronts: {acc.size} accuracies for a pool of {len(codes)} candidates")
    out: dict[str, TierFront] = {}
    for tier in dict.fromkeys(tiers):  # distinct, in order
        cost = (costs or {}).get(tier)
        if cost is None:
            cost = ((tables or {}).get(tier) or SpaceCostTable(space, load_device(tier))).evaluate(codes)
        F = np.column_stack([-acc, cost["latency_ms"], cost["energy_mj"]])
        idx = pareto_front(F)
        metrics = {"accuracy": acc[idx], **{m: np.asarray(cost[m])[idx] for m in FRONT_METRICS}}
        out[tier] = TierFront(tier, idx, codes[idx], metrics, space)
    return out
