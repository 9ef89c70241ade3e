"""The federated search round logic, without Flower: ``FederatedSearch.run_round(send, node_ids)``.

One round (the agreed protocol, see ``federation.protocol``):

1. PROPOSE — ``query.propose`` to the sampled nodes; each returns its top-K local architectures.
2. CANDIDATE POOL — round 1: the public seed pool (data-independent samples of the space) ∪
   the global fronts (already released) ∪ a *private set union* of the proposals (Gaussian noise
   on per-arch counts, thresholded; ``federation.dp.private_set_union``). DP off: the plain union.
   Later rounds (successive halving, ``final_pool`` > 0): the best ``pool_sizes(...)[r-1]`` of the
   last pool by their noisy pooled means ∪ this round's union release, shrinking geometrically to
   ``final_pool`` in the last round — post-processing of released values, so free. The union is
   run only if it can release at this fleet size (``plan_noise``; otherwise it is not charged).
3. SCORE — ``query.score`` with the pool; each client returns Score_i(A) ∈ [0, 1]. The round's
   clip scales with √(pool size) (``round_clip``), so a halved pool carries less noise.
4. AGGREGATE — weights from data size and reliability, per-client clipping, Gaussian noise on the
   sums and the counts (central) or on each client's row before it leaves the device (local);
   one grouped release for all tiers per round (``tiered_release``: each client's vector carries
   its tier's count coordinate, so the sensitivity stays one clip and the noise is that of one
   release, not one per tier); A_global = argmax of the mean (``federation.aggregate``).
   Noisy releases are pooled per candidate across rounds, weighted by inverse noise variance.
5. FRONTS AND PLANS — per device tier present, a Pareto front over (aggregated accuracy, the
   tier's latency and energy from the public catalogue) of *every* candidate scored so far (its
   current estimate), and a ModePlan per tier.
6. ACCOUNTING — every noisy release is charged to one ``PrivacyLedger`` (Flower's RdpAccountant)
   with the σ fixed for it before the first release (``NoisePlan``: union share or skipped,
   per-round score σ with ``budget_ramp``); before a round the server asks ``would_exceed`` and
   stops cleanly when the next round would pass the budget.

Weight rounds (``weight_rounds``, FedNAS-style, after the round's scores) are one Flower ``FedAvg``
round wrapped in Flower's ``DifferentialPrivacyClientSideFixedClipping`` (``dp_fedavg_round``;
our subclass ``federation.weights.SecureClientSideFixedClipping`` only swaps its NumPy-global noise
for the CSPRNG): the wrapper's ``configure_train`` builds the ``train`` messages (it writes the
clip ``weight_clip`` into their config for the clients' ``fixedclipping_mod``), our ``send``
carries them, and its ``aggregate_train`` averages the clipped replies and adds N(0, (σ·clip/n)²).
In local DP mode the clients noise their own clipped updates and the server only averages. The
release is charged to the same ledger (``weight_round`` says at which σ and sampling rate). The
global supernet (``attach_supernet``; ``global_supernet``) is saved next to ``state.json`` as a
content-addressed ``.npz`` whose SHA-256 ``state.json`` records, so a resumed run continues from
the same weights or refuses a mismatched file.

``send(message_type, requests, timeout) -> {node: reply | Failure}`` is the only link to the
transport: ``federation.server_app`` implements it on a Flower Grid, tests with a plain function.
Requests are our protocol values, except ``train`` requests: the RecordDict Flower's strategy built.
A round proceeds when at least ``quorum`` of the asked nodes answer a phase, and is skipped (and
says so) otherwise. The server's state (round, fronts, reliability, ledger) is written after every
round to ``state.json`` so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Message, MetricRecord, RecordDict

from federation.accounting import PrivacyLedger
from federation.aggregate import (
    ClientScores,
    aggregate_scores,
    report_weights,
    runnable_accuracy,
    score_matrix,
    tier_fronts,
)
from federation.dp import (
    DPConfig,
    charged_noise_multiplier,
    noise_rng,
    offset_scale,
    private_set_union,
    rdp_delta,
    split_noise_multipliers,
    sum_local,
    union_can_release,
    union_delta,
    union_threshold,
)
from federation.protocol import (
    ACCURACY_SOURCES,
    ARRAYS,
    CONFIG,
    METRICS,
    PROPOSE,
    SCORE,
    TRAIN,
    ProposeReply,
    ProposeRequest,
    ScoreReply,
    ScoreRequest,
    TrainReply,
    TrainRequest,
    encode_train_reply,
    encode_train_request,
    federated_arrays,
)
from runtime.fileio import load_json, write_text_atomic
from runtime.hardware import load_device
from search.cost.table import SpaceCostTable
from search.space.mobilenetv3 import MobileNetV3Config, MobileNetV3Space
from search.strategies.nsga2 import fresh_rows

__all__ = [
    "STATE_FILE",
    "UNIFORM_WEIGHT",
    "Failure",
    "FederatedSearch",
    "FederationConfig",
    "FederationConfigError",
    "NoisePlan",
    "RoundResult",
    "ScoredRound",
    "Send",
    "WeightRound",
    "accumulate",
    "dp_fedavg_round",
    "fixed_clipping_fedavg",
    "plan_noise",
    "pool_sizes",
    "releases_per_round",
    "round_clip",
    "survivors",
    "tiered_release",
]

_log = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_FORMAT = "fleetnas.federated-search-state/1"


class FederationConfigError(ValueError):
    """A federation option a user got wrong; the message names the field and the allowed values."""


@dataclass(frozen=True)
class Failure:
    """A node that did not answer usefully: an error reply, a malformed reply or a timeout."""

    node: int
    reason: str


Request = ProposeRequest | ScoreRequest | RecordDict  # train: the content Flower's configure_train built
Reply = ProposeReply | ScoreReply | TrainReply
Send = Callable[[str, Mapping[int, Request], "float | None"], Mapping[int, "Reply | Failure"]]


@dataclass(frozen=True)
class FederationConfig:
    """Everything the server needs (every field has a default; see ``from_dict`` for the flat form)."""

    space: MobileNetV3Config = field(default_factory=lambda: MobileNetV3Config.preset("mnist"))
    rounds: int = 5
    budget: int = 200  # local NSGA-II evaluations per client per round
    top_k: int = 4
    seed_pool: int = 24  # public, data-independent candidates scored every round
    fraction: float = 1.0  # of the available nodes asked per round
    min_nodes: int = 2  # nodes to wait for before the first round
    quorum: float = 0.5  # fraction of asked nodes that must answer a phase
    timeout_s: float | None = 600.0
    wait_s: float = 120.0  # how long to wait for min_nodes
    source: str = "predictor"
    dp: DPConfig = field(default_factory=DPConfig)
    seed: int = 0
    tier_deadlines: Mapping[str, float] = field(default_factory=dict)  # ms; else the clients' median
    weight_rounds: tuple[int, ...] = ()  # rounds that also run a supernet `train` round
    train_steps: int = 5
    train_lr: float = 0.01
    baseline_predictor: str | None = None  # per-class predictor .npz for the public score baseline
    final_pool: int = 5  # successive halving: candidates scored in the last round (0: no halving)
    budget_ramp: float = 1.0  # score release of round r gets budget_ramp**(r-1) of the Gaussian budget (relative)
    # L2 clip of a client's supernet update in weight rounds (its own, not the score clip ``dp.clip``).
    # 3.0: about the median norm of the federated arrays' update (BatchNorm statistics excluded,
    # ``federated_arrays``) measured on the demo supernet: 10 MNIST clients, α = 0.5, 5 steps at
    # lr 0.003 gave 2.5-3.1 (3.8-5.9 with the statistics), so typical updates pass nearly unclipped.
    weight_clip: float = 3.0

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> FederationConfigError:
            return FederationConfigError(f"federation config: field {name!r}: {why}")

        if isinstance(self.final_pool, bool) or not isinstance(self.final_pool, int) or self.final_pool < 0:
            raise bad("final_pool", f"need an integer >= 0 (0: no successive halving), got {self.final_pool!r}")
        if not (isinstance(self.budget_ramp, int | float) and math.isfinite(self.budget_ramp) and self.budget_ramp > 0):
            raise bad("budget_ramp", f"need a number > 0 (1: the same budget every round), got {self.budget_ramp!r}")
        for name in ("rounds", "budget", "top_k", "min_nodes", "train_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(name, f"need an integer >= 1, got {v!r}")
        if isinstance(self.seed_pool, bool) or not isinstance(self.seed_pool, int) or self.seed_pool < 0:
            raise bad("seed_pool", f"need an integer >= 0, got {self.seed_pool!r}")
        if not 0 < self.fraction <= 1:
            raise bad("fraction", f"need 0 < fraction <= 1, got {self.fraction!r}")
        if not 0 < self.quorum <= 1:
            raise bad("quorum", f"need 0 < quorum <= 1, got {self.quorum!r}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise bad("timeout_s", f"need a positive number of seconds or null, got {self.timeout_s!r}")
        if self.source not in ACCURACY_SOURCES:
            raise bad("source", f"{self.source!r}; allowed: {', '.join(ACCURACY_SOURCES)}")
        for tier, ms in self.tier_deadlines.items():
            if not (isinstance(ms, int | float) and ms > 0):
                raise bad(f"tier_deadlines.{tier}", f"need a positive number of ms, got {ms!r}")
        if any(r < 1 for r in self.weight_rounds):
            raise bad("weight_rounds", f"round numbers start at 1, got {list(self.weight_rounds)}")
        wc = self.weight_clip
        if isinstance(wc, bool) or not (isinstance(wc, int | float) and math.isfinite(wc) and wc > 0):
            raise bad("weight_clip", f"need a finite L2 norm > 0 (the clip of a client's supernet update), got {wc!r}")
        if not (isinstance(self.train_lr, int | float) and math.isfinite(self.train_lr) and self.train_lr > 0):
            raise bad("train_lr", f"need a learning rate > 0, got {self.train_lr!r}")
        if self.dp.rounds != self.rounds:
            # The union's δ share is spread over the DP config's rounds: keep them the run's rounds.
            object.__setattr__(self, "dp", replace(self.dp, rounds=self.rounds))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "federation config") -> FederationConfig:
        """Validate a mapping (keys as the field names, ``-`` or ``_``); unknown keys are errors."""
        if not isinstance(data, Mapping):
            raise FederationConfigError(f"{source}: need a mapping, got {type(data).__name__}")
        allowed = {f.name for f in fields(cls)}
        norm = {str(k).replace("-", "_"): v for k, v in data.items()}
        unknown = sorted(set(norm) - allowed)
        if unknown:
            raise FederationConfigError(f"{source}: unknown field(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
        out: dict[str, Any] = {}
        for key, value in norm.items():
            if key == "space":
                if isinstance(value, MobileNetV3Config):
                    out[key] = value
                elif isinstance(value, str):
                    out[key] = MobileNetV3Config.preset(value)
                else:
                    out[key] = MobileNetV3Config.from_dict(value, source=f"{source}: space")
            elif key == "dp":
                out[key] = value if isinstance(value, DPConfig) else DPConfig.from_dict(value, f"{source}: dp")
            elif key == "weight_rounds":
                out[key] = tuple(int(r) for r in value)
            elif key == "tier_deadlines":
                out[key] = dict(value)
            else:
                out[key] = value
        try:
            return cls(**out)
        except TypeError as exc:
            raise FederationConfigError(f"{source}: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        """JSON form (``from_dict`` reads it back)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["space"] = asdict(self.space)
        d["dp"] = self.dp.to_dict()
        d["tier_deadlines"] = dict(self.tier_deadlines)
        d["weight_rounds"] = list(self.weight_rounds)
        return json.loads(json.dumps(d, default=list))


def releases_per_round(mode: str, union: bool = True) -> int:
    """Gaussian releases one search round charges: the union's noisy counts (when run) and the scores' joint release.

    (``federation.dp.private_weighted_mean`` releases sums, offset and count as one mechanism.)
    With DP off nothing is released noisily (0).
    """
    return 0 if mode == "off" else (2 if union else 1)


@dataclass(frozen=True)
class NoisePlan:
    """The σ of every release of a run, fixed before its first release (``plan_noise``).

    ``union``: whether the set union runs (and is charged) at all; ``union_sigma`` its σ (0 if not).
    ``score_sigmas[r-1]``: the σ of round r's score noise (local mode: the clients' σ, charged at σ/2).
    ``weight_sigma``: σ of a supernet weight round. ``clients``: the number asked it was planned for.
    """

    union: bool
    union_sigma: float
    score_sigmas: tuple[float, ...]
    weight_sigma: float
    clients: int

    def charged_score_sigma(self, dp: DPConfig, round_: int) -> float:
        """The noise multiplier round ``round_``'s score release is charged with."""
        return charged_noise_multiplier(dp, self.score_sigmas[round_ - 1])

    def accumulation_weight(self, round_: int) -> float:
        """Relative inverse-variance weight of round ``round_``'s release when pooled across rounds (max 1)."""
        sig = self.score_sigmas[round_ - 1]
        return (min(self.score_sigmas) / sig) ** 2 if sig > 0 else 1.0

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {**asdict(self), "score_sigmas": list(self.score_sigmas)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> NoisePlan:
        """The plan ``to_json`` wrote."""
        return cls(bool(d["union"]), float(d["union_sigma"]), tuple(float(x) for x in d["score_sigmas"]),
                   float(d["weight_sigma"]), int(d["clients"]))


def plan_noise(config: FederationConfig, clients: int) -> NoisePlan:
    """The σ of every release of the run when ``clients`` nodes are asked per round (public), within the budget.

    Budget: all releases are unsampled Gaussians, so the run spends ε(Σ 1/σ²) (RDP) and the budget
    Σ 1/σ² can be split freely (``federation.dp.split_noise_multipliers``). The set union gets
    ``dp.union_budget_share`` of it, spread over the rounds — *unless* ``union_can_release`` says
    that with that σ even a proposal of every asked client would fall 3σ short of the threshold:
    then it is skipped in every round (never charged) and its share goes to the scores. The score
    release of round r gets ``budget_ramp**(r-1)`` (relative), a weight round as much as an average
    score round. A configured ``dp.noise_multiplier`` is used for every release as it is.
    """
    dp, rounds = config.dp, config.rounds
    weight_rounds = len([r for r in set(config.weight_rounds) if r <= rounds])
    if dp.mode == "off":
        return NoisePlan(False, 0.0, (0.0,) * rounds, 0.0, int(clients))
    local = 2.0 if dp.mode == "local" else 1.0  # local mode charges σ/2: plan the charged σ, send twice it

    def can_release(sigma: float) -> bool:
        t = dp.union_threshold if dp.union_threshold is not None else union_threshold(
            sigma, config.top_k, union_delta(dp))
        return union_can_release(int(clients), config.top_k, sigma, t)

    if dp.noise_multiplier is not None:
        nm = float(dp.noise_multiplier)
        union = can_release(nm)
        return NoisePlan(union, nm if union else 0.0, (nm,) * rounds, nm, int(clients))
    ramp = np.asarray([config.budget_ramp ** r for r in range(rounds)], dtype=np.float64)
    ramp = ramp / ramp.mean()  # mean 1: a weight round weighs as much as an average score round
    rest = [*ramp, *([1.0] * weight_rounds)]
    for union in (True, False):
        shares = rest
        if union:
            total = float(np.sum(rest)) / (1.0 - dp.union_budget_share)
            shares = [*rest, *([total * dp.union_budget_share / rounds] * rounds)]
        sig = split_noise_multipliers(dp.epsilon, rdp_delta(dp), shares)
        if union and not can_release(sig[-1]):
            continue
        scores = tuple(local * s for s in sig[:rounds])
        weight = sig[rounds] if weight_rounds else 0.0
        return NoisePlan(union, sig[-1] if union else 0.0, scores, weight, int(clients))
    raise AssertionError("unreachable")  # the second pass always returns


def pool_sizes(first: int, final: int, rounds: int) -> list[int]:
    """Candidates to score in rounds 1..R under successive halving: geometric from ``first`` down to ``final``."""
    if final <= 0 or first <= final or rounds <= 1:
        return [first] * rounds
    return [max(final, math.ceil(first * (final / first) ** (r / (rounds - 1)) - 1e-9)) for r in range(rounds)]


def round_clip(clip: float, pool_size: int, first_pool_size: int | None, final_pool: int) -> float:
    """The L2 clip of a round's score vectors: ``clip`` · √(pool / first pool) under successive halving, else ``clip``.

    A client's centred residual vector has norm ∝ √(candidates), so a fixed clip that fits round
    1's pool is far above the norm of a halved pool's vector and only adds noise (σ·clip per
    candidate); scaling it with √(pool size) keeps the same per-candidate clipping and cuts the
    noise. Pool sizes are public (released), so this costs no privacy: sensitivity is the round's clip.
    """
    if final_pool <= 0 or not first_pool_size or pool_size >= first_pool_size:
        return float(clip)
    return float(clip) * math.sqrt(pool_size / first_pool_size)


def survivors(pool: np.ndarray, means: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` candidates of ``pool`` with the highest (noisy) means, best first (ties: pool order)."""
    order = np.argsort(-np.asarray(means, dtype=np.float64), kind="stable")
    return np.asarray(pool)[order[:size]]


@dataclass(frozen=True)
class ScoredRound:
    """One aggregated central-DP round as the server saw it (kept in memory only, for the privacy–utility replay)."""

    round: int
    pool: np.ndarray
    reports: list[ClientScores]
    baselines: dict[str, np.ndarray] | None
    union: np.ndarray  # the proposals the (private) union released this round
    deadlines: dict[str, float]


@dataclass(frozen=True)
class RoundResult:
    """What one round produced (JSON-ready through ``to_json``)."""

    round: int
    status: str  # "ok", "skipped" (no quorum) or "stopped" (privacy budget)
    asked: tuple[int, ...]
    failures: Mapping[int, str]
    pool_size: int = 0
    proposed: int = 0  # distinct proposals received
    union_size: int = 0  # proposals that passed the (private) union; -1: union skipped (cannot release, not charged)
    chosen: Mapping[str, Any] | None = None
    fronts: Mapping[str, Any] = field(default_factory=dict)
    plans: Mapping[str, Any] = field(default_factory=dict)
    epsilon: float = 0.0
    delta: float = 0.0
    seconds: float = 0.0
    note: str = ""
    train: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        d = asdict(self)
        d["asked"] = list(self.asked)
        d["failures"] = {str(k): v for k, v in self.failures.items()}
        return d


class FederatedSearch:
    """The server side of federated architecture search: state across rounds and one round at a time."""

    def __init__(
        self,
        config: FederationConfig,
        out_dir: str | Path | None = None,
        rng_seed: int | None = None,
        resume: bool = False,
    ) -> None:
        self.config = config
        self.space = MobileNetV3Space(config.space)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        dp = config.dp
        # The noise stream is secure (OS entropy) unless a seed is given (tests, benchmarks).
        self.noise = noise_rng(rng_seed if rng_seed is not None else dp.seed)
        self.sampler = np.random.default_rng(config.seed)
        self.plan: NoisePlan | None = None  # fixed at the first round, from the number of nodes asked
        self.first_pool_size: int | None = None
        self.ledger = PrivacyLedger(rdp_delta(dp), dp.epsilon if dp.mode != "off" else None)
        self.round = 0
        self.fronts: dict[str, np.ndarray] = {}
        self.asked: dict[int, int] = {}
        self.answered: dict[int, int] = {}
        self.history: list[RoundResult] = []
        self.stopped = False
        self.best: dict[str, Any] | None = None
        self.supernet_state: dict[str, np.ndarray] | None = None
        self._tables: dict[str, SpaceCostTable] = {}
        self._baseline_fn: Callable[[np.ndarray], Mapping[str, np.ndarray]] | None = None
        self.last_pool: np.ndarray | None = None
        self.last_mean: np.ndarray | None = None
        # The current estimate of every candidate ever scored (the noisy pooled mean, or with DP off
        # the exact mean of the last round that scored it): the per-tier fronts are taken over all of
        # them, so successive halving shrinks what is scored, not what the fronts can hold.
        self.estimates: dict[bytes, float] = {}
        # Every noisy release of per-candidate sums and counts, summed per candidate across rounds
        # (post-processing, free): a candidate scored in several rounds gets the average of several
        # independent noises. Keyed by the canonical code's bytes.
        self.accumulated: dict[bytes, tuple[float, float]] = {}
        # Kept in memory only (never written): the raw per-client scores of every aggregated round
        # (central mode), which the simulation's privacy-utility curve re-noises with many seeds.
        self.score_history: list[ScoredRound] = []
        if resume and self.out_dir is not None and (self.out_dir / STATE_FILE).exists():
            self._load_state(self.out_dir / STATE_FILE)

    # ---- privacy ---------------------------------------------------------------------------
    @property
    def noise_multiplier(self) -> float:
        """σ of the last planned score release (0 before the plan is fixed or with DP off); see ``plan``."""
        return float(self.plan.score_sigmas[-1]) if self.plan is not None else 0.0

    def _round_charges(self, round_: int, weight_rate: float = 1.0) -> list[tuple[float, float, str]]:
        """(noise multiplier, sampling rate, label) of every Gaussian release round ``round_`` makes, in order.

        ``weight_rate``: the weight round's sampling rate (the nodes it may ask / the available ones);
        in local mode a weight round is charged at rate 1 (``weight_round``), so the projection is too.
        """
        dp, plan = self.config.dp, self.plan
        if dp.mode == "off" or plan is None:
            return []
        if dp.mode == "local":
            weight_rate = 1.0
        charges = []
        if plan.union:
            charges.append((plan.union_sigma, 1.0, f"round {round_}: set union"))
        charges.append((plan.charged_score_sigma(dp, round_), 1.0, f"round {round_}: scores"))
        if round_ in self.config.weight_rounds and self.supernet_state is not None:
            charges.append((plan.weight_sigma, weight_rate, f"round {round_}: supernet weights"))
        return charges

    def _would_exceed(self, round_: int, weight_rate: float = 1.0) -> bool:
        charges = self._round_charges(round_, weight_rate)
        if not charges or self.ledger.max_epsilon is None:
            return False
        projected = PrivacyLedger.from_json(self.ledger.to_json())
        projected.max_epsilon = None
        for nm, rate, label in charges:
            projected.charge(nm, sampling_rate=rate, label=label)
        # Calibration keeps ε(σ) at or just under the budget; allow float noise in the composition.
        return projected.epsilon > self.ledger.max_epsilon * (1 + 1e-9)

    @property
    def epsilon(self) -> float:
        """ε spent so far (0 with DP off)."""
        return float(self.ledger.epsilon) if self.config.dp.mode != "off" else 0.0

    # ---- bookkeeping -----------------------------------------------------------------------
    def reliability(self, node: int) -> float:
        """Fraction of the rounds a node was asked in that it answered (1.0 before it was first asked)."""
        asked = self.asked.get(node, 0)
        return self.answered.get(node, 0) / asked if asked else 1.0

    def _sample(self, node_ids: Sequence[int]) -> list[int]:
        nodes = sorted(int(n) for n in node_ids)
        k = max(1, math.ceil(self.config.fraction * len(nodes)))
        if k >= len(nodes):
            return nodes
        return sorted(int(n) for n in self.sampler.choice(nodes, size=k, replace=False))

    def _quorum(self, asked: int) -> int:
        return max(1, math.ceil(self.config.quorum * asked))

    def public_seed_pool(self) -> np.ndarray:
        """Data-independent candidates (server seed samples + the space's extremes): they cost no privacy."""
        n = self.config.seed_pool
        if n == 0:
            return np.zeros((0, self.space.encoding_length), dtype=np.int64)
        rng = np.random.default_rng([self.config.seed, 7919])
        card = self.space.cardinalities
        extremes = np.stack([np.zeros_like(card), card - 1])
        return self._unique(np.concatenate([self.space.canonicalise(extremes), self.space.sample(n, rng)]))

    def _unique(self, codes: np.ndarray) -> np.ndarray:
        if len(codes) == 0:
            return np.zeros((0, self.space.encoding_length), dtype=np.int64)
        arr = self.space.canonicalise(np.asarray(codes, dtype=np.int64))
        return arr[fresh_rows(np.zeros((0, arr.shape[1]), dtype=arr.dtype), arr)]

    # ---- one round -------------------------------------------------------------------------
    def run_round(self, send: Send, node_ids: Sequence[int]) -> RoundResult:
        """Run the next round over ``node_ids`` (the nodes currently available); returns and records its result."""
        cfg, dp = self.config, self.config.dp
        r = self.round + 1
        started = time.perf_counter()
        if self.stopped or r > cfg.rounds:
            raise FederationConfigError(f"run_round: the search is finished (round {self.round} of {cfg.rounds})")
        nodes = self._sample(node_ids)
        available = max(len(set(node_ids)), len(nodes))
        if self.plan is None:
            # Fixed once, before the first release, from public facts only (the number asked, K, ε, δ).
            self.plan = plan_noise(cfg, len(nodes))
        # A weight round asks at most this round's sampled nodes: its charge is at most this rate.
        if self._would_exceed(r, len(nodes) / available):
            self.stopped = True
            result = RoundResult(
                r, "stopped", (), {}, epsilon=self.epsilon, delta=self._delta(),
                note=f"round {r} would exceed the privacy budget ε = {dp.epsilon} (spent {self.epsilon:.4g}); "
                "stopped with the result so far",
            )
            return self._finish(result, advance=False)
        failures: dict[int, str] = {}
        for n in nodes:
            self.asked[n] = self.asked.get(n, 0) + 1

        # 1. PROPOSE
        propose = ProposeRequest(
            cfg.space, r, cfg.budget, cfg.top_k, cfg.source, {t: f for t, f in self.fronts.items()}, cfg.seed
        )
        replies = send(PROPOSE, {n: propose for n in nodes}, cfg.timeout_s)
        proposals: dict[int, ProposeReply] = {}
        for n in nodes:
            rep = replies.get(n, Failure(n, "no reply (timeout)"))
            if isinstance(rep, ProposeReply):
                proposals[n] = rep
            else:
                failures[n] = f"propose: {rep.reason if isinstance(rep, Failure) else type(rep).__name__}"
        if len(proposals) < self._quorum(len(nodes)):
            return self._skip(r, nodes, failures, "propose", len(proposals), started)

        # 2. CANDIDATE POOL
        proposed_codes = [p.codes for p in proposals.values()]
        distinct = self._unique(np.concatenate(proposed_codes)) if proposed_codes else self._unique(np.zeros((0, 1)))
        plan = self.plan
        if dp.mode == "off":
            union = distinct
        elif plan.union:
            self.ledger.charge(plan.union_sigma, label=f"round {r}: set union")
            self.ledger.charge_delta(union_delta(dp), label=f"round {r}: set union threshold")
            released = private_set_union(proposed_codes, dp, plan.union_sigma, self.noise, max_per_client=cfg.top_k)
            union = self._unique(released) if released.size else self._unique(np.zeros((0, 1)))
        else:  # plan_noise found it cannot release at this fleet size: not run, not charged
            union = self._unique(np.zeros((0, 1)))
        halving = cfg.final_pool > 0 and self.first_pool_size is not None and self.last_pool is not None
        if halving:
            # Successive halving: the best of the last pool by its (noisy, pooled) means, plus what
            # the union released now — post-processing of released values, so it costs nothing.
            size = pool_sizes(self.first_pool_size, cfg.final_pool, cfg.rounds)[r - 1]
            kept = survivors(self.last_pool, self.last_mean, size)
            pool = self._unique(np.concatenate([kept, union]) if len(union) else kept)
        else:
            # The public seed pool is scored: it costs no privacy and keeps the pool from collapsing
            # to a few noisy front members when DP noise is large.
            public = [self.public_seed_pool(), *(f for f in self.fronts.values() if len(f))]
            pool = self._unique(np.concatenate([*public, union]) if public or len(union) else union)
            if len(pool) == 0:
                pool = self.public_seed_pool()
            self.first_pool_size = len(pool)
        tiers_seen = {p.tier: p.deadline_ms for p in proposals.values()}

        clip = round_clip(dp.clip, len(pool), self.first_pool_size, cfg.final_pool)
        rdp = replace(dp, clip=clip)

        # 3. SCORE
        # The weights aggregate_scores will use (the local variant needs each client's own up front).
        stub = [ClientScores(n, p.tier, p.n_examples, self.reliability(n), np.zeros(0)) for n, p in proposals.items()]
        weights = dict(zip(proposals, report_weights(stub, dp), strict=True))
        score_nodes = list(proposals)
        requests = {
            n: ScoreRequest(
                cfg.space, r, pool, cfg.source, dp.mode, clip, plan.score_sigmas[r - 1], float(weights[n]), cfg.seed,
                centre=dp.centre, count_scale=dp.count_scale, offset_scale=offset_scale(dp, baseline=False),
            )
            for n in score_nodes
        }
        replies = send(SCORE, requests, cfg.timeout_s)
        scored: dict[int, ScoreReply] = {}
        for n in score_nodes:
            rep = replies.get(n, Failure(n, "no reply (timeout)"))
            if isinstance(rep, ScoreReply) and len(rep.scores) == requests[n].reply_width:
                scored[n] = rep
            else:
                failures[n] = f"score: {rep.reason if isinstance(rep, Failure) else 'wrong reply'}"
        for n in scored:
            self.answered[n] = self.answered.get(n, 0) + 1
        if len(scored) < self._quorum(len(nodes)):
            return self._skip(r, nodes, failures, "score", len(scored), started)

        # 4. AGGREGATE (charged before the release)
        if dp.mode != "off":
            self.ledger.charge(plan.charged_score_sigma(dp, r), label=f"round {r}: scores")
        reports = [
            ClientScores(n, rep.tier, rep.n_examples, self.reliability(n), rep.scores) for n, rep in scored.items()
        ]
        sigma = plan.score_sigmas[r - 1]
        if dp.mode == "off":  # the exact weighted mean of this round
            mean = np.asarray(aggregate_scores(pool, reports, dp, 0.0, None).mean_scores, dtype=float)
        else:
            if dp.mode == "local":
                local = sum_local([rep.scores for rep in scored.values()], rdp, sigma)
                sums, count = np.asarray(local.noisy_sums), float(local.noisy_count)
            else:
                baselines = self.baselines(pool, sorted({rep.tier for rep in reports}), tiers_seen)
                sums, count = tiered_release(pool, reports, rdp, sigma, self.noise, baselines)
                self.score_history.append(ScoredRound(r, pool, reports, baselines, union, dict(tiers_seen)))
            mean = accumulate(self.accumulated, pool, sums, count, plan.accumulation_weight(r))
        best = int(np.argmax(mean))
        self.last_pool, self.last_mean = pool, mean
        for code, value in zip(pool, mean, strict=True):
            self.estimates[np.asarray(code, dtype=np.int64).tobytes()] = float(value)

        # 5. FRONTS AND PLANS
        deadlines = {t: float(cfg.tier_deadlines.get(t, d)) for t, d in tiers_seen.items()}
        for rep in proposals.values():  # median of the reported deadlines when the config has none
            if rep.tier not in cfg.tier_deadlines:
                same = [p.deadline_ms for p in proposals.values() if p.tier == rep.tier]
                deadlines[rep.tier] = float(np.median(same))
        known, known_mean = self.known()
        per_tier: dict[str, float] = {}
        for report, w in zip(reports, report_weights(reports, dp), strict=True):
            per_tier[report.tier] = per_tier.get(report.tier, 0.0) + float(w)  # the server's weights, per tier
        fronts_json, plans_json = self._fronts_and_plans(known, known_mean, sorted(deadlines), deadlines, per_tier)
        chosen = {
            "index": best,
            "code": pool[best].tolist(),
            "arch": self.space.decode(pool[best]).to_json(),
            "score": float(mean[best]),
        }
        self.best = chosen
        train_info = None
        if r in cfg.weight_rounds and self.supernet_state is not None:
            train_info = self.weight_round(send, list(scored), r, available)
        result = RoundResult(
            r, "ok", tuple(nodes), failures, pool_size=len(pool), proposed=len(distinct),
            union_size=len(union) if dp.mode == "off" or plan.union else -1,
            chosen=chosen, fronts=fronts_json, plans=plans_json, epsilon=self.epsilon, delta=self._delta(),
            seconds=time.perf_counter() - started, train=train_info,
        )
        return self._finish(result)

    def known(self) -> tuple[np.ndarray, np.ndarray]:
        """(codes, current estimates) of every candidate scored so far, in first-scored order."""
        if not self.estimates:
            return np.zeros((0, self.space.encoding_length), dtype=np.int64), np.zeros(0)
        codes = np.stack([np.frombuffer(k, dtype=np.int64) for k in self.estimates])
        return codes, np.fromiter(self.estimates.values(), dtype=np.float64, count=len(self.estimates))

    def baselines(
        self, pool: np.ndarray, tiers: Sequence[str], reported: Mapping[str, float]
    ) -> dict[str, np.ndarray] | None:
        """Per tier, the public score baseline of every candidate, or None without a baseline predictor.

        b_t(A) = accuracy of A on a uniform label mix (the central per-class predictor) / 100, and 0
        where A misses tier t's deadline (public catalogue latency, configured deadline): what a
        client of tier t would score with a balanced label mix. All of it is public, so subtracting
        it costs no privacy; what is left for the noise to carry is each client's deviation from
        it — small, so a small clip suffices (``federation.dp``, "Why centre").
        """
        path = self.config.baseline_predictor
        if path is None:
            return None
        if self._baseline_fn is None:
            from search.predictors.mlp import AccuracyPredictor, class_mix_evaluator

            pred = AccuracyPredictor.load(path, self.space)
            self._baseline_fn = class_mix_evaluator(pred, np.ones(pred.n_outputs))
        acc = np.asarray(self._baseline_fn(pool)["accuracy"], dtype=float) / 100.0
        out = {}
        for tier in tiers:
            if tier not in self._tables:
                self._tables[tier] = SpaceCostTable(self.space, load_device(tier))
            deadline = float(self.config.tier_deadlines.get(tier, reported.get(tier, np.inf)))
            lat = self._tables[tier].evaluate(pool)["latency_ms"]
            out[tier] = np.where(lat <= deadline, np.clip(acc, 0.0, 1.0), 0.0)
        return out

    def _delta(self) -> float:
        return float(self.ledger.delta_total) if self.config.dp.mode != "off" else 0.0

    def _fronts_and_plans(
        self,
        pool: np.ndarray,
        mean: np.ndarray,
        tiers: list[str],
        deadlines: Mapping[str, float],
        weight_per_tier: Mapping[str, float],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        for tier in {*tiers, *weight_per_tier}:
            if tier not in self._tables:
                self._tables[tier] = SpaceCostTable(self.space, load_device(tier))
        costs = {tier: self._tables[tier].evaluate(pool) for tier in {*tiers, *weight_per_tier}}
        # the fleet mean counts a 0 for every client too slow for a candidate: rescale to those who can run it
        latency = {tier: c["latency_ms"] for tier, c in costs.items()}
        accuracy = runnable_accuracy(mean, weight_per_tier, deadlines, latency)
        fronts = tier_fronts(pool, accuracy, self.space, tiers, costs=costs)
        fronts_json: dict[str, Any] = {}
        plans_json: dict[str, Any] = {}
        for tier, front in fronts.items():
            self.fronts[tier] = np.asarray(front.codes, dtype=np.int64)
            fronts_json[tier] = {
                "codes": self.fronts[tier].tolist(),
                "archs": front.archs(),
                **{k: [float(v) for v in np.asarray(vals)] for k, vals in front.metrics.items()},
                "deadline_ms": deadlines.get(tier),
            }
            plan = front.modeplan(deadlines.get(tier))
            plans_json[tier] = plan.to_json() if plan is not None else None
        return fronts_json, plans_json

    def _skip(
        self, r: int, nodes: list[int], failures: dict[int, str], phase: str, got: int, started: float
    ) -> RoundResult:
        note = (
            f"round {r} skipped: only {got} of {len(nodes)} nodes answered {phase} "
            f"(quorum {self._quorum(len(nodes))})"
        )
        result = RoundResult(
            r, "skipped", tuple(nodes), failures, epsilon=self.epsilon, delta=self._delta(),
            seconds=time.perf_counter() - started, note=note,
        )
        return self._finish(result)

    def _finish(self, result: RoundResult, advance: bool = True) -> RoundResult:
        if advance:
            self.round = result.round
        self.history.append(result)
        line = f"round {result.round}/{self.config.rounds}: {result.status}"
        if result.status == "ok" and result.chosen is not None:
            line += (
                f", {len(result.asked) - len(result.failures)}/{len(result.asked)} answered, pool {result.pool_size}, "
                f"best {'noisy ' if self.config.dp.mode != 'off' else ''}score {result.chosen['score']:.4f}"
            )
        line += f", ε = {result.epsilon:.4g}" + (f" ({result.note})" if result.note else "")
        _log.info(line)
        if self.out_dir is not None:
            write_text_atomic(self.out_dir / f"round_{result.round:03d}.json", json.dumps(result.to_json(), indent=1))
            self._save_state(self.out_dir / STATE_FILE)
        return result

    # ---- weight rounds ---------------------------------------------------------------------
    # The global supernet's alignment and training configuration (``federation.weights``) and an
    # optional probe measuring it (torch): class-level defaults, set per instance by ``attach_supernet``.
    supernet_alignment: int = 8
    supernet_train_config: Mapping[str, Any] | None = None
    supernet_probe: Callable[[Mapping[str, np.ndarray]], Mapping[str, float]] | None = None

    def attach_supernet(self, weights: Any, probe: Callable[[Mapping[str, np.ndarray]], Mapping[str, float]] | None
                        = None) -> bool:
        """Give the search its initial global supernet (``federation.weights.SupernetWeights``); returns whether used.

        A run resumed from ``state.json`` keeps the weights it saved (returns False): the file
        given now is only the *initial* state. The space must be the run's. ``probe`` measures
        the global supernet before and after each weight round (``federation.weights.SupernetProbe``).
        """
        space_cfg = weights.space_config()
        if space_cfg is not None:
            from search.supernet.schedule import make_space

            if make_space(space_cfg).config != self.config.space:
                raise FederationConfigError(
                    "supernet: the initial weights belong to another space than the run's field 'space' "
                    "(use the supernet the predictor was fitted on)"
                )
        self.supernet_alignment = int(weights.alignment)
        self.supernet_probe = probe
        resumed = self.supernet_state is not None
        if self.supernet_train_config is None:
            self.supernet_train_config = weights.train_config
        if not resumed:
            self.supernet_state = {k: np.asarray(v) for k, v in weights.arrays.items()}
        return not resumed

    def global_supernet(self) -> Any:
        """The current global weights as ``federation.weights.SupernetWeights`` (None before ``attach_supernet``)."""
        if self.supernet_state is None:
            return None
        from federation.weights import SupernetWeights

        return SupernetWeights(dict(self.supernet_state), self.supernet_alignment, self.supernet_train_config)

    def _measure_supernet(self) -> dict[str, float] | None:
        if self.supernet_probe is None or self.supernet_state is None:
            return None
        return {k: float(v) for k, v in self.supernet_probe(self.supernet_state).items()}

    def weight_round(self, send: Send, nodes: list[int], r: int, available: int | None = None) -> dict[str, Any]:
        """One DP FedAvg round of the supernet's weights (``dp_fedavg_round``), charged to the ledger; returns its info.

        Central DP: clients clip their update to ``weight_clip`` (Flower's ``fixedclipping_mod``);
        the server averages with equal weights and adds N(0, (σ·clip/n)²) from its CSPRNG
        (``federation.weights.SecureClientSideFixedClipping``), σ the plan's ``weight_sigma``,
        charged at sampling rate len(nodes) / ``available`` right before the release.
        Local DP: each client clips *and* adds N(0, (σ_c·clip)²) itself (σ_c = 2·``weight_sigma``)
        before its reply leaves the device; the server only averages. Each reply is a Gaussian
        mechanism on one client's data with replace-one sensitivity 2·clip, i.e. noise multiplier
        σ_c/2 = ``weight_sigma``, charged once per round (parallel composition over the clients)
        at sampling rate 1 (the server knows whom it asked: no amplification against it).
        DP off: plain FedAvg (unweighted), no clipping, no noise.
        The info holds the top-1 of the largest and smallest subnet on the validation split
        before and after (when a probe is attached), the mean update norm the clients reported (a
        diagnostic outside the DP guarantee, not collected in local mode), the noise std on the
        averaged weights and the ε this round's release cost.
        """
        from federation.accounting import PrivacyBudgetExceeded

        assert self.supernet_state is not None  # checked by the caller
        dp, cfg = self.config.dp, self.config
        private, local = dp.mode != "off", dp.mode == "local"
        sigma = self.plan.weight_sigma if private and self.plan is not None else 0.0
        clip = float(cfg.weight_clip) if private else math.inf
        rate = 1.0 if local else len(nodes) / max(available or len(nodes), len(nodes), 1)
        req = TrainRequest(cfg.space, r, federated_arrays(self.supernet_state), alignment=self.supernet_alignment,
                           steps=cfg.train_steps, lr=cfg.train_lr, clip=clip, seed=cfg.seed)
        before = self._measure_supernet()
        eps_before = self.epsilon

        def charge(answered: int) -> None:
            if private:
                self.ledger.charge(sigma, sampling_rate=rate, label=f"round {r}: supernet weights")

        info: dict[str, Any] = {"mode": dp.mode, "asked": len(nodes), "accuracy_before": before}
        try:
            out = dp_fedavg_round(send, nodes, req, 0.0 if local else sigma, cfg.timeout_s,
                                  self._quorum(len(nodes)), charge, noise=self.noise,
                                  local_noise_multiplier=2.0 * sigma if local else 0.0)
        except PrivacyBudgetExceeded as exc:
            info.update(status="over budget", answered=0, failures={}, note=str(exc))
            return info
        if out.state is not None:
            self.supernet_state = {k: out.state.get(k, v) for k, v in self.supernet_state.items()}
        info.update(status=out.status, answered=out.answered, failures=dict(out.failures))
        if out.status == "ok":
            info.update(
                accuracy_after=self._measure_supernet(),
                mean_update_norm=None if local else out.mean_update_norm,
                noise_std=out.noise_std,
                noise_multiplier=2.0 * sigma if local else sigma,
                charged_noise_multiplier=sigma,
                clip=clip if math.isfinite(clip) else None,
                sampling_rate=rate,
                epsilon_charged=self.epsilon - eps_before,
            )
        return info

    # ---- the whole run ---------------------------------------------------------------------
    def run(
        self,
        send: Send,
        node_ids: Callable[[], Sequence[int]],
        progress: Callable[[RoundResult], None] | None = None,
    ) -> dict[str, Any]:
        """Run the remaining rounds (stopping early on the privacy budget); returns ``summary()``."""
        while not self.stopped and self.round < self.config.rounds:
            result = self.run_round(send, node_ids())
            if progress is not None:
                progress(result)
        summary = self.summary()
        if self.out_dir is not None:
            write_text_atomic(self.out_dir / "summary.json", json.dumps(summary, indent=1))
        return summary

    def summary(self) -> dict[str, Any]:
        """JSON-ready result so far: chosen arch, per-tier plans, ε per round, failures."""
        last_ok = next((h for h in reversed(self.history) if h.status == "ok"), None)
        return {
            "rounds_run": self.round,
            "rounds_planned": self.config.rounds,
            "stopped_by_budget": self.stopped,
            "dp": {
                "mode": self.config.dp.mode,
                "epsilon_budget": self.config.dp.epsilon,
                "delta": self.config.dp.delta,
                "noise_multiplier": self.noise_multiplier,
                "noise_plan": self.plan.to_json() if self.plan is not None else None,
                "epsilon_spent": self.epsilon,
                "delta_spent": self._delta(),
            },
            "chosen": self.best,
            "plans": dict(last_ok.plans) if last_ok else {},
            "weights": self._weights_summary(),
            "rounds": [
                {
                    "round": h.round,
                    "status": h.status,
                    "epsilon": h.epsilon,
                    "pool_size": h.pool_size,
                    "union_size": h.union_size,  # -1: the union was skipped (could not release; not charged)
                    "failures": len(h.failures),
                    "best_score": h.chosen["score"] if h.chosen else None,
                    "seconds": h.seconds,
                    "note": h.note,
                }
                for h in self.history
            ],
        }

    def _weights_summary(self) -> dict[str, Any] | None:
        """The weight rounds so far: one row per round that ran one, the first "before" and last "after" accuracy."""
        rows = [{"round": h.round, **h.train} for h in self.history if h.train is not None]
        if not rows and not self.config.weight_rounds:
            return None
        done = [row for row in rows if row.get("status") == "ok"]
        return {
            "weight_rounds": list(self.config.weight_rounds),
            "weight_clip": self.config.weight_clip if self.config.dp.mode != "off" else None,
            "attached": self.supernet_state is not None,
            "accuracy_initial": rows[0].get("accuracy_before") if rows else None,
            "accuracy_final": done[-1].get("accuracy_after") if done else None,
            "epsilon_charged": float(sum(row.get("epsilon_charged", 0.0) for row in done)),
            "rounds": rows,
        }

    # ---- state -----------------------------------------------------------------------------
    def _save_state(self, path: Path) -> None:
        state = {
            "format": STATE_FORMAT,
            "config": self.config.to_json(),
            "round": self.round,
            "stopped": self.stopped,
            "fronts": {t: f.tolist() for t, f in self.fronts.items()},
            "asked": {str(k): v for k, v in self.asked.items()},
            "answered": {str(k): v for k, v in self.answered.items()},
            "ledger": self.ledger.to_json(),
            "best": self.best,
            "plan": self.plan.to_json() if self.plan is not None else None,
            "first_pool_size": self.first_pool_size,
            "last_pool": self.last_pool.tolist() if self.last_pool is not None else None,
            "last_mean": self.last_mean.tolist() if self.last_mean is not None else None,
            "estimates": [[np.frombuffer(k, dtype=np.int64).tolist(), v] for k, v in self.estimates.items()],
            "accumulated": [
                [np.frombuffer(k, dtype=np.int64).tolist(), total, count]
                for k, (total, count) in self.accumulated.items()
            ],
            "history": [h.to_json() for h in self.history],
            "sampler": self.sampler.bit_generator.state,
            "supernet": self._save_supernet(path.parent),
        }
        write_text_atomic(path, json.dumps(state))
        self._prune_supernet_files(path.parent, state["supernet"])

    # The global weights live next to state.json in ``supernet_<sha256[:16]>.npz`` (content-addressed,
    # written before state.json names it, older ones removed after): a crash between the two writes
    # leaves the previous state.json and its file intact.
    def _save_supernet(self, folder: Path) -> dict[str, Any] | None:
        weights = self.global_supernet()
        if weights is None:
            return None
        from federation.weights import save_weights

        digest = weights.digest
        name = f"supernet_{digest[:16]}.npz"
        if not (folder / name).is_file():
            save_weights(folder / name, weights)
        return {"file": name, "sha256": digest}

    @staticmethod
    def _prune_supernet_files(folder: Path, keep: Mapping[str, Any] | None) -> None:
        for old in folder.glob("supernet_*.npz"):
            if keep is None or old.name != keep["file"]:
                old.unlink(missing_ok=True)

    def _load_state(self, path: Path) -> None:
        state = load_json(path, FederationConfigError)
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise FederationConfigError(f"{path}: field 'format': not a {STATE_FORMAT} file")
        if state["config"] != self.config.to_json():
            raise FederationConfigError(f"{path}: field 'config': the saved run used a different configuration")
        self.round = int(state["round"])
        self.stopped = bool(state["stopped"])
        self.fronts = {t: np.asarray(f, dtype=np.int64).reshape(-1, self.space.encoding_length)
                       for t, f in state["fronts"].items()}
        self.asked = {int(k): int(v) for k, v in state["asked"].items()}
        self.answered = {int(k): int(v) for k, v in state["answered"].items()}
        self.ledger = PrivacyLedger.from_json(state["ledger"])
        self.best = state["best"]
        self.plan = NoisePlan.from_json(state["plan"]) if state.get("plan") else None
        self.first_pool_size = state.get("first_pool_size")
        if state.get("last_pool") is not None:
            self.last_pool = np.asarray(state["last_pool"], dtype=np.int64).reshape(-1, self.space.encoding_length)
            self.last_mean = np.asarray(state["last_mean"], dtype=np.float64)
        self.estimates = {np.asarray(c, dtype=np.int64).tobytes(): float(v) for c, v in state.get("estimates", [])}
        self.accumulated = {
            np.asarray(code, dtype=np.int64).tobytes(): (float(total), float(count))
            for code, total, count in state.get("accumulated", [])
        }
        self.history = [_round_from_json(h) for h in state["history"]]
        self.sampler.bit_generator.state = state["sampler"]
        saved = state.get("supernet")
        if saved is not None:
            from federation.weights import WeightsError, read_weights

            try:
                weights = read_weights(path.parent / str(saved["file"]), expect_digest=str(saved["sha256"]))
            except WeightsError as exc:
                raise FederationConfigError(f"{path}: field 'supernet': {exc}") from None
            self.supernet_state = dict(weights.arrays)
            self.supernet_alignment = weights.alignment
            self.supernet_train_config = weights.train_config


def _round_from_json(d: Mapping[str, Any]) -> RoundResult:
    data = dict(d)
    data["asked"] = tuple(data["asked"])
    data["failures"] = {int(k): v for k, v in data["failures"].items()}
    return RoundResult(**data)


def tiered_release(
    pool: np.ndarray,
    reports: Sequence[ClientScores],
    dp: DPConfig,
    noise_multiplier: float,
    rng: Any,
    baselines: Mapping[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, float]:
    """(noisy per-candidate weighted score sums, noisy weight total) of one central-DP round: one Gaussian release.

    Every client subtracts its own tier's public baseline, and its weight goes to its tier's count
    coordinate (``federation.dp.private_weighted_mean`` with ``groups``): one vector per client,
    clipped to ``clip``, one noise draw on the sum — sensitivity ``clip``, charged once. The sums are
    decoded with each tier's noisy weight total (sums = residual sums + Σ_t b_t·W_t). Why not one
    release per tier (parallel composition, the same ε): the sum of T releases carries T independent
    noises, √T times the noise on every candidate's sum (with the 5 tiers of the benchmark's fleet,
    that alone took the within-1 % share at 100 clients from ~99 % to ~90 %, see ``federation.dp``).
    Tiers are the baselines' keys (sorted); without baselines, one count and no baseline.
    """
    from federation.dp import private_weighted_mean

    codes = np.atleast_2d(np.asarray(pool))
    scores = score_matrix(codes, reports)
    weights = report_weights(reports, dp)
    if baselines is None:
        pm = private_weighted_mean(scores, weights, dp, noise_multiplier, rng)
        return np.asarray(pm.noisy_sums), float(pm.noisy_count)
    tiers = sorted(baselines)
    missing = sorted({rep.tier for rep in reports} - set(tiers))
    if missing:
        raise FederationConfigError(f"tiered_release: no public baseline for tier(s) {missing}; have {tiers}")
    index = {t: i for i, t in enumerate(tiers)}
    groups = np.array([index[rep.tier] for rep in reports], dtype=np.int64)
    base = np.stack([np.asarray(baselines[t], dtype=np.float64) for t in tiers])
    pm = private_weighted_mean(scores, weights, dp, noise_multiplier, rng, base, groups)
    return np.asarray(pm.noisy_sums), float(pm.noisy_count)


def accumulate(
    acc: dict[bytes, tuple[float, float]], pool: np.ndarray, sums: np.ndarray, count: float, weight: float = 1.0
) -> np.ndarray:
    """Add one release's per-candidate noisy sums and its noisy count to ``acc``; returns the pool's pooled means.

    mean_j = Σ_rounds v_r sums_j / Σ_rounds v_r count over the rounds that scored candidate j (the
    pooled count is floored at 1 before dividing), v_r = ``weight`` — the release's inverse noise
    variance (relative), so rounds with more budget count more: post-processing, costs no privacy.
    """
    codes = np.asarray(pool, dtype=np.int64)
    out = np.empty(len(codes))
    for j, code in enumerate(codes):
        key = code.tobytes()
        total, n = acc.get(key, (0.0, 0.0))
        total, n = total + weight * float(sums[j]), n + weight * float(count)
        acc[key] = (total, n)
        out[j] = total / max(n, 1.0)
    return out


UNIFORM_WEIGHT = "dp-uniform-weight"


class _Nodes:
    """The part of a Flower ``Grid`` a strategy's ``configure_train`` reads: the nodes to sample from (ours)."""

    def __init__(self, nodes: Sequence[int]) -> None:
        self._nodes = [int(n) for n in nodes]

    def get_node_ids(self) -> list[int]:
        """The node ids the round was given."""
        return list(self._nodes)


def fixed_clipping_fedavg(noise_multiplier: float, clip: float, clients: int, noise: Any = None) -> Any:
    """Flower's ``FedAvg`` (unweighted) in the client-side fixed-clipping DP wrapper; plain FedAvg for clip ∞.

    The wrapper is ``federation.weights.SecureClientSideFixedClipping``: Flower's
    ``DifferentialPrivacyClientSideFixedClipping`` with its noise drawn from ``noise`` (a
    ``federation.dp.NoiseSource``; None: the OS CSPRNG) instead of NumPy's global generator.
    FedAvg asks every node it is given (our server samples) and weighs replies by
    ``UNIFORM_WEIGHT``, which the server sets to 1 on every reply: with a per-client clip C the
    mean's sensitivity is C/n only when every client counts equally (Flower's own accounted mode
    insists on equal weights too). The wrapper has no accountant: the release is charged to our
    ``PrivacyLedger`` (its Poisson accounting takes our sampling rate; the wrapper's only accepts
    no amplification).
    """
    from flwr.serverapp.strategy import FedAvg

    from federation.weights import SecureClientSideFixedClipping

    n = max(int(clients), 1)
    fedavg = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n,
                    weighted_by_key=UNIFORM_WEIGHT, arrayrecord_key=ARRAYS, configrecord_key=CONFIG)
    if math.isinf(clip):
        return fedavg
    return SecureClientSideFixedClipping(fedavg, float(noise_multiplier), float(clip), n, noise=noise)


@dataclass(frozen=True)
class WeightRound:
    """What one ``dp_fedavg_round`` did: the new (noised) floating arrays or None when skipped, and its figures.

    ``noise_std``: std of the noise on each coordinate of the averaged state — σ·clip/n (central)
    or σ_c·clip/√n (local: n clients' independent noises averaged). ``mean_update_norm``: the
    mean of the update norms the clients reported (before clipping).
    """

    status: str  # "ok" or "skipped" (no quorum)
    state: dict[str, np.ndarray] | None
    answered: int
    failures: Mapping[int, str]
    mean_update_norm: float = 0.0
    noise_std: float = 0.0


def dp_fedavg_round(
    send: Send,
    nodes: Sequence[int],
    request: TrainRequest,
    noise_multiplier: float,
    timeout: float | None,
    quorum: int,
    before_release: Callable[[int], None] | None = None,
    noise: Any = None,
    local_noise_multiplier: float = 0.0,
) -> WeightRound:
    """One FedAvg round of ``request.arrays`` in the client-side fixed-clipping DP wrapper; returns the result.

    ``configure_train`` of ``fixed_clipping_fedavg(σ, request.clip, len(nodes), noise)`` builds the
    ``train`` messages (one ArrayRecord + one ConfigRecord with Flower's ``clipping_norm``);
    ``send`` carries their contents; replies that fail, time out or come back with an update
    larger than the clip (a client that skipped clipping would break the guarantee) are dropped.
    With a quorum, ``before_release(answered)`` runs (charge the ledger there; raising stops the
    release), the wrapper's noise is set for the clients that answered (std σ·clip/n), and its
    ``aggregate_train`` returns the unweighted mean + N(0, (σ·clip/n)²) per coordinate, drawn from
    ``noise`` (``federation.dp.NoiseSource``; None: the OS CSPRNG), never from NumPy's global
    generator. ``local_noise_multiplier`` σ_c > 0 (local DP): the config also carries
    ``federation.weights.LOCAL_NOISE`` = σ_c, each client adds N(0, (σ_c·clip)²) to its clipped
    update, the clip check is skipped (a noised update is longer than the clip by design) and
    ``noise_multiplier`` should be 0 (the server only averages).
    """
    from federation.weights import LOCAL_NOISE

    local = local_noise_multiplier > 0
    if local and not math.isfinite(request.clip):
        raise FederationConfigError("dp_fedavg_round: local noise needs a finite clip (field 'weight_clip')")
    arrays = federated_arrays(request.arrays)
    content = encode_train_request(replace(request, arrays=arrays))
    if local:
        content[CONFIG][LOCAL_NOISE] = float(local_noise_multiplier)
    strategy = fixed_clipping_fedavg(noise_multiplier, request.clip, len(nodes), noise)
    messages = list(strategy.configure_train(request.round, content[ARRAYS], content[CONFIG], _Nodes(nodes)))
    by_node = {int(m.metadata.dst_node_id): m for m in messages}
    replies = send(TRAIN, {n: m.content for n, m in by_node.items()}, timeout)
    good: dict[int, TrainReply] = {}
    failures: dict[int, str] = {}
    for n in sorted(by_node):
        rep = replies.get(n, Failure(n, "no reply (timeout)"))
        if not isinstance(rep, TrainReply):
            failures[n] = f"train: {rep.reason if isinstance(rep, Failure) else type(rep).__name__}"
            continue
        norm = _update_norm(rep.arrays, arrays)
        if not local and norm > request.clip * (1 + 1e-4) + 1e-7:
            failures[n] = f"train: update norm {norm:.4g} exceeds the clip {request.clip:.4g} (not clipped)"
            continue
        good[n] = rep
    if len(good) < quorum:
        return WeightRound("skipped", None, len(good), failures)
    if before_release is not None:
        before_release(len(good))
    std = 0.0
    if hasattr(strategy, "num_sampled_clients"):
        # The wrapper's noise is σ·clip/num_sampled_clients: calibrate it to the mean it noises.
        strategy.num_sampled_clients = len(good)
        std = float(noise_multiplier) * float(request.clip) / len(good)
    if local:
        std = float(local_noise_multiplier) * float(request.clip) / math.sqrt(len(good))
    answers = []
    for n, rep in good.items():
        reply = encode_train_reply(TrainReply({k: rep.arrays[k] for k in arrays}, rep.n_examples, rep.update_norm))
        metrics = MetricRecord({**reply[METRICS], UNIFORM_WEIGHT: 1.0})
        answers.append(Message(RecordDict({ARRAYS: reply[ARRAYS], METRICS: metrics}), reply_to=by_node[n]))
    aggregated, _ = strategy.aggregate_train(request.round, answers)
    if aggregated is None:  # pragma: no cover - only on replies Flower finds inconsistent, which we checked
        return WeightRound("skipped", None, len(good), failures)
    state = {k: np.asarray(a.numpy(), dtype=np.asarray(arrays[k]).dtype) for k, a in aggregated.items()}
    norms = [rep.update_norm for rep in good.values()]
    return WeightRound("ok", state, len(good), failures, float(np.mean(norms)), std)


def _update_norm(new: Mapping[str, np.ndarray], old: Mapping[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(float(np.sum((np.asarray(new[k], np.float64) - np.asarray(v, np.float64)) ** 2))
                             for k, v in old.items())))
