"""The federated search protocol on the wire: message types and the records each message carries.

One round (see ``federation.server``): the server sends ``query.propose`` (space, round, budget,
top-K, the current public global fronts, the accuracy source); each client answers with its top-K
architectures and their local scores. The server forms the candidate pool and sends
``query.score``; each client answers with one score in [0, 1] per candidate. ``train`` messages
carry supernet weights (FedNAS-style weight rounds) in the shape Flower's ``FedAvg`` and its
``DifferentialPrivacyClientSideFixedClipping`` wrapper expect: the request one ArrayRecord (the
state's floating arrays, ``federated_arrays``) + one ConfigRecord holding the clip under Flower's own
key ``CLIPPING_NORM`` (what ``fixedclipping_mod`` reads on the client); the reply one ArrayRecord
(same keys, same order) + one MetricRecord with ``num-examples``.

Flower records hold flat values only (MetricRecord: numbers and lists of numbers; ConfigRecord
also strings, bytes and booleans), so nested data — the space configuration, integer encodings,
per-tier fronts — travels as JSON strings in a ConfigRecord, and per-candidate numbers as lists in
a MetricRecord. Every decoder validates what it reads and raises ``ProtocolError`` naming the node
and the field, so a malformed reply is reported as "node 17: field 'scores': ...", not as a
``KeyError`` deep in the aggregation.

The request/reply values are plain frozen dataclasses (numpy arrays inside), so the round logic
in ``federation.server`` and the local search in ``federation.client`` never touch Flower types.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from search.space.base import SpaceError
from search.space.mobilenetv3 import MobileNetV3Config, MobileNetV3Space

__all__ = [
    "ACCURACY_SOURCES",
    "ARRAYS",
    "CLIPPING_NORM",
    "CONFIG",
    "DP_MODES",
    "METRICS",
    "NUM_EXAMPLES",
    "PROPOSE",
    "SCORE",
    "TRAIN",
    "ProposeReply",
    "ProposeRequest",
    "ProtocolError",
    "ScoreReply",
    "ScoreRequest",
    "TrainReply",
    "TrainRequest",
    "decode_codes",
    "decode_propose_reply",
    "decode_propose_request",
    "decode_score_reply",
    "decode_score_request",
    "decode_space",
    "decode_train_reply",
    "decode_train_request",
    "encode_codes",
    "encode_propose_reply",
    "encode_propose_request",
    "encode_score_reply",
    "encode_score_request",
    "encode_space",
    "encode_train_reply",
    "encode_train_request",
    "federated_arrays",
]

PROPOSE = "query.propose"
SCORE = "query.score"
TRAIN = "train"
ACCURACY_SOURCES = ("predictor", "supernet")
DP_MODES = ("off", "central", "local")

CONFIG = "config"
METRICS = "metrics"
ARRAYS = "arrays"
NUM_EXAMPLES = "num-examples"
# The key Flower's DifferentialPrivacyClientSideFixedClipping writes the clip under and
# fixedclipping_mod reads it from: one source for both sides.
CLIPPING_NORM = KEY_CLIPPING_NORM


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the message names the node and the field."""


# ---- values ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProposeRequest:
    """``query.propose``: search locally and return the top-K architectures."""

    space: MobileNetV3Config
    round: int
    budget: int
    top_k: int
    source: str = "predictor"
    fronts: Mapping[str, np.ndarray] = field(default_factory=dict)  # tier -> (n, L) public codes
    seed: int = 0


@dataclass(frozen=True)
class ProposeReply:
    """A client's top-K codes with its local scores, its data size and its (public) device tier."""

    codes: np.ndarray  # (k, L) int64
    accuracy: np.ndarray  # (k,) local accuracy estimate in %
    latency_ms: np.ndarray  # (k,) on the client's own device
    n_examples: int
    tier: str
    deadline_ms: float


@dataclass(frozen=True)
class ScoreRequest:
    """``query.score``: score every pool candidate; in ``local`` DP mode also clip and noise the row."""

    space: MobileNetV3Config
    round: int
    pool: np.ndarray  # (m, L) int64
    source: str = "predictor"
    dp_mode: str = "off"
    clip: float = 1.0
    noise_multiplier: float = 0.0
    weight: float = 1.0  # the client's aggregation weight (needed for the local DP variant)
    seed: int = 0
    # The local mechanism's shape (federation.dp.DPConfig): the server decodes the sum with the same.
    centre: bool = True
    count_scale: float = 0.1
    offset_scale: float = 0.1

    @property
    def reply_width(self) -> int:
        """Numbers a reply carries: one per candidate, plus the offset and count coordinates in local mode."""
        return len(self.pool) + ((2 if self.centre else 1) if self.dp_mode == "local" else 0)


@dataclass(frozen=True)
class ScoreReply:
    """One score per pool candidate (already weighted, clipped and noised when ``randomized``)."""

    scores: np.ndarray  # (m,)
    n_examples: int
    tier: str
    randomized: bool = False


@dataclass(frozen=True)
class TrainRequest:
    """``train``: fine-tune the shared supernet for ``steps`` steps; the update is clipped to ``clip`` (L2).

    ``arrays`` are what is federated: the state's floating arrays (``federated_arrays``). ``clip`` is
    ∞ with DP off (Flower's clipping mod then leaves the update as it is).
    """

    space: MobileNetV3Config
    round: int
    arrays: Mapping[str, np.ndarray]
    alignment: int = 8
    steps: int = 5
    lr: float = 0.01
    clip: float = math.inf  # inf: no clipping (DP off)
    seed: int = 0


@dataclass(frozen=True)
class TrainReply:
    """The fine-tuned supernet state and how many local examples produced it."""

    arrays: Mapping[str, np.ndarray]
    n_examples: int
    update_norm: float = 0.0  # L2 norm of the update before clipping


# ---- helpers -----------------------------------------------------------------------------------
def _who(node: int | str | None) -> str:
    return "message" if node is None else f"node {node}"


def encode_space(config: MobileNetV3Config) -> str:
    """The space configuration as a JSON string."""
    return json.dumps(asdict(config), sort_keys=True)


def decode_space(text: Any, node: int | str | None = None) -> MobileNetV3Config:
    """The MobileNetV3Config of a JSON string; ProtocolError names the node and field 'space'."""
    if not isinstance(text, str):
        raise ProtocolError(f"{_who(node)}: field 'space': need a JSON string, got {type(text).__name__}")
    try:
        return MobileNetV3Config.from_dict(json.loads(text), source="space")
    except (json.JSONDecodeError, SpaceError) as exc:
        raise ProtocolError(f"{_who(node)}: field 'space': {exc}") from None


def encode_codes(codes: np.ndarray) -> str:
    """``(n, L)`` integer codes as a JSON list of lists of ints."""
    arr = np.asarray(codes, dtype=np.int64)
    return json.dumps(arr.reshape(len(arr), -1).tolist() if arr.size else [])


def decode_codes(text: Any, space: MobileNetV3Space, node: int | str | None = None, name: str = "codes") -> np.ndarray:
    """``(n, L)`` int64 canonical codes of ``space`` from a JSON string; ProtocolError names node and field."""
    if not isinstance(text, str):
        raise ProtocolError(f"{_who(node)}: field {name!r}: need a JSON string, got {type(text).__name__}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"{_who(node)}: field {name!r}: not valid JSON ({exc})") from None
    if data == []:
        return np.zeros((0, space.encoding_length), dtype=np.int64)
    def is_row(row: Any) -> bool:
        return isinstance(row, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in row)

    if not (isinstance(data, list) and all(is_row(row) for row in data)):
        raise ProtocolError(f"{_who(node)}: field {name!r}: need a JSON list of lists of integers")
    try:
        return space.canonicalise(space.check_codes(np.array(data, dtype=np.int64)))
    except (SpaceError, ValueError) as exc:
        raise ProtocolError(f"{_who(node)}: field {name!r}: {exc}") from None


def _record(content: RecordDict, key: str, kind: type, node: int | str | None) -> Any:
    try:
        rec = content[key]
    except KeyError:
        raise ProtocolError(f"{_who(node)}: record {key!r} is missing; the message has {sorted(content)}") from None
    if not isinstance(rec, kind):
        raise ProtocolError(f"{_who(node)}: record {key!r}: need a {kind.__name__}, got {type(rec).__name__}")
    return rec


def _get(rec: Mapping[str, Any], key: str, node: int | str | None, kinds: tuple[type, ...], what: str) -> Any:
    if key not in rec:
        raise ProtocolError(f"{_who(node)}: field {key!r} is missing")
    value = rec[key]
    if isinstance(value, bool) and bool not in kinds:
        raise ProtocolError(f"{_who(node)}: field {key!r}: need {what}, got {value!r}")
    if not isinstance(value, kinds):
        raise ProtocolError(f"{_who(node)}: field {key!r}: need {what}, got {value!r}")
    return value


def _int(rec: Mapping[str, Any], key: str, node: int | str | None, minimum: int = 0) -> int:
    value = _get(rec, key, node, (int,), "an integer")
    if value < minimum:
        raise ProtocolError(f"{_who(node)}: field {key!r}: need an integer >= {minimum}, got {value}")
    return int(value)


def _float(rec: Mapping[str, Any], key: str, node: int | str | None, minimum: float = -math.inf) -> float:
    value = float(_get(rec, key, node, (int, float), "a number"))
    if not math.isfinite(value) or value < minimum:
        raise ProtocolError(f"{_who(node)}: field {key!r}: need a finite number >= {minimum}, got {value}")
    return value


def _choice(rec: Mapping[str, Any], key: str, node: int | str | None, allowed: tuple[str, ...]) -> str:
    value = _get(rec, key, node, (str,), "a string")
    if value not in allowed:
        raise ProtocolError(f"{_who(node)}: field {key!r}: {value!r}; allowed: {', '.join(allowed)}")
    return str(value)


def _vector(
    rec: Mapping[str, Any], key: str, node: int | str | None, n: int, lo: float = -math.inf, hi: float = math.inf
) -> np.ndarray:
    if key not in rec:
        raise ProtocolError(f"{_who(node)}: field {key!r} is missing")
    value = rec[key]
    if isinstance(value, int | float) and not isinstance(value, bool) and n == 1:
        value = [value]
    if not isinstance(value, list):
        raise ProtocolError(f"{_who(node)}: field {key!r}: need a list of {n} numbers, got {type(value).__name__}")
    arr = np.asarray(value, dtype=np.float64) if value else np.zeros(0)
    if arr.shape != (n,):
        raise ProtocolError(f"{_who(node)}: field {key!r}: need {n} numbers (one per candidate), got {arr.size}")
    if not np.all(np.isfinite(arr)) or (arr.size and (arr.min() < lo or arr.max() > hi)):
        raise ProtocolError(f"{_who(node)}: field {key!r}: values must be finite and within [{lo}, {hi}]")
    return arr


# ---- query.propose -----------------------------------------------------------------------------
def encode_propose_request(req: ProposeRequest) -> RecordDict:
    """The RecordDict of a ``query.propose`` message."""
    fronts = {tier: np.asarray(codes, dtype=np.int64).tolist() for tier, codes in req.fronts.items()}
    return RecordDict(
        {
            CONFIG: ConfigRecord(
                {
                    "space": encode_space(req.space),
                    "round": int(req.round),
                    "budget": int(req.budget),
                    "top-k": int(req.top_k),
                    "source": req.source,
                    "fronts": json.dumps(fronts, sort_keys=True),
                    "seed": int(req.seed),
                }
            )
        }
    )


def decode_propose_request(content: RecordDict, node: int | str | None = None) -> ProposeRequest:
    """The ProposeRequest in ``content``; ProtocolError names the field."""
    cfg = _record(content, CONFIG, ConfigRecord, node)
    space_cfg = decode_space(cfg.get("space"), node)
    space = MobileNetV3Space(space_cfg)
    raw = _get(cfg, "fronts", node, (str,), "a JSON string")
    try:
        fronts_data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"{_who(node)}: field 'fronts': not valid JSON ({exc})") from None
    if not isinstance(fronts_data, dict):
        raise ProtocolError(f"{_who(node)}: field 'fronts': need a JSON object tier -> codes")
    fronts = {
        str(t): decode_codes(json.dumps(c), space, node, name=f"fronts[{t}]") for t, c in sorted(fronts_data.items())
    }
    return ProposeRequest(
        space=space_cfg,
        round=_int(cfg, "round", node),
        budget=_int(cfg, "budget", node, 1),
        top_k=_int(cfg, "top-k", node, 1),
        source=_choice(cfg, "source", node, ACCURACY_SOURCES),
        fronts=fronts,
        seed=_int(cfg, "seed", node),
    )


def encode_propose_reply(reply: ProposeReply) -> RecordDict:
    """The RecordDict of a reply to ``query.propose``."""
    return RecordDict(
        {
            CONFIG: ConfigRecord(
                {"codes": encode_codes(reply.codes), "tier": reply.tier, "deadline-ms": float(reply.deadline_ms)}
            ),
            METRICS: MetricRecord(
                {
                    "accuracy": [float(v) for v in reply.accuracy],
                    "latency-ms": [float(v) for v in reply.latency_ms],
                    NUM_EXAMPLES: int(reply.n_examples),
                }
            ),
        }
    )


def decode_propose_reply(content: RecordDict, space: MobileNetV3Space, node: int | str | None = None) -> ProposeReply:
    """The ProposeReply in ``content``, codes checked against ``space``; ProtocolError names node and field."""
    cfg = _record(content, CONFIG, ConfigRecord, node)
    met = _record(content, METRICS, MetricRecord, node)
    codes = decode_codes(cfg.get("codes"), space, node)
    n = len(codes)
    return ProposeReply(
        codes=codes,
        accuracy=_vector(met, "accuracy", node, n, 0.0, 100.0),
        latency_ms=_vector(met, "latency-ms", node, n, 0.0),
        n_examples=_int(met, NUM_EXAMPLES, node, 0),
        tier=str(_get(cfg, "tier", node, (str,), "a device tier name")),
        deadline_ms=_float(cfg, "deadline-ms", node, 0.0),
    )


# ---- query.score -------------------------------------------------------------------------------
def encode_score_request(req: ScoreRequest) -> RecordDict:
    """The RecordDict of a ``query.score`` message."""
    return RecordDict(
        {
            CONFIG: ConfigRecord(
                {
                    "space": encode_space(req.space),
                    "round": int(req.round),
                    "pool": encode_codes(req.pool),
                    "source": req.source,
                    "dp-mode": req.dp_mode,
                    "clip": float(req.clip),
                    "noise-multiplier": float(req.noise_multiplier),
                    "weight": float(req.weight),
                    "seed": int(req.seed),
                    "centre": bool(req.centre),
                    "count-scale": float(req.count_scale),
                    "offset-scale": float(req.offset_scale),
                }
            )
        }
    )


def decode_score_request(content: RecordDict, node: int | str | None = None) -> ScoreRequest:
    """The ScoreRequest in ``content``; ProtocolError names the field."""
    cfg = _record(content, CONFIG, ConfigRecord, node)
    space_cfg = decode_space(cfg.get("space"), node)
    return ScoreRequest(
        space=space_cfg,
        round=_int(cfg, "round", node),
        pool=decode_codes(cfg.get("pool"), MobileNetV3Space(space_cfg), node, name="pool"),
        source=_choice(cfg, "source", node, ACCURACY_SOURCES),
        dp_mode=_choice(cfg, "dp-mode", node, DP_MODES),
        clip=_float(cfg, "clip", node, 0.0),
        noise_multiplier=_float(cfg, "noise-multiplier", node, 0.0),
        weight=_float(cfg, "weight", node, 0.0),
        seed=_int(cfg, "seed", node),
        centre=bool(_get(cfg, "centre", node, (bool,), "a boolean")),
        count_scale=_float(cfg, "count-scale", node, 0.0),
        offset_scale=_float(cfg, "offset-scale", node, 0.0),
    )


def encode_score_reply(reply: ScoreReply) -> RecordDict:
    """The RecordDict of a reply to ``query.score``."""
    return RecordDict(
        {
            CONFIG: ConfigRecord({"tier": reply.tier, "randomized": bool(reply.randomized)}),
            METRICS: MetricRecord({"scores": [float(v) for v in reply.scores], NUM_EXAMPLES: int(reply.n_examples)}),
        }
    )


def decode_score_reply(
    content: RecordDict, n_values: int, node: int | str | None = None, randomized: bool = False
) -> ScoreReply:
    """The ScoreReply in ``content`` with exactly ``n_values`` numbers (scores in [0, 1] unless ``randomized``).

    ``n_values`` is ``ScoreRequest.reply_width``: the pool size, plus the local mechanism's extra
    coordinates when the client randomised its row.
    """
    cfg = _record(content, CONFIG, ConfigRecord, node)
    met = _record(content, METRICS, MetricRecord, node)
    was_randomized = bool(_get(cfg, "randomized", node, (bool,), "a boolean"))
    if was_randomized != randomized:
        raise ProtocolError(
            f"{_who(node)}: field 'randomized': {was_randomized}, but the round asked for "
            f"{'locally randomised' if randomized else 'raw'} scores"
        )
    lo, hi = (-math.inf, math.inf) if randomized else (0.0, 1.0)
    return ScoreReply(
        scores=_vector(met, "scores", node, n_values, lo, hi),
        n_examples=_int(met, NUM_EXAMPLES, node, 0),
        tier=str(_get(cfg, "tier", node, (str,), "a device tier name")),
        randomized=was_randomized,
    )


# ---- train -------------------------------------------------------------------------------------
BN_STATISTICS = ("running_mean", "running_var")  # BatchNorm buffers recalibrated, not federated


def federated_arrays(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The learned floating arrays of ``state``, in its order: what a weight round trains, clips, averages and noises.

    BatchNorm's running statistics and its integer ``num_batches_tracked`` stay out. The statistics
    are not learned: every place a subnet is evaluated or exported recalibrates them for that subnet
    (``search.supernet``), and a client's fine-tuning drifts them far more than the weights (on the
    demo supernet they were most of an update's L2 norm), so clipping would spend the norm budget and
    the noise on numbers that are thrown away (FedBN keeps them local for the same reason). The
    counters would also be counted by Flower's clipping and rounded under its noise.
    """
    return {
        k: v
        for k, v in state.items()
        if np.issubdtype(np.asarray(v).dtype, np.floating) and not k.endswith(BN_STATISTICS)
    }


def _arrays(state: Mapping[str, np.ndarray]) -> ArrayRecord:
    # np.array, not np.ascontiguousarray: the latter turns 0-d arrays (BatchNorm counters) into 1-d.
    return ArrayRecord(array_dict={k: Array(np.array(v, order="C")) for k, v in state.items()})


def _state(rec: ArrayRecord, node: int | str | None) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, arr in rec.items():
        try:
            out[key] = arr.numpy()
        except Exception as exc:  # a foreign serialisation: report which array
            raise ProtocolError(f"{_who(node)}: array {key!r}: cannot deserialise ({exc})") from None
    return out


def encode_train_request(req: TrainRequest) -> RecordDict:
    """The RecordDict of a ``train`` message: one ArrayRecord (``req.arrays``) + one ConfigRecord (with the clip)."""
    return RecordDict(
        {
            ARRAYS: _arrays(req.arrays),
            CONFIG: ConfigRecord(
                {
                    "space": encode_space(req.space),
                    "alignment": int(req.alignment),
                    "round": int(req.round),
                    "steps": int(req.steps),
                    "lr": float(req.lr),
                    CLIPPING_NORM: float(req.clip),
                    "seed": int(req.seed),
                }
            ),
        }
    )


def decode_train_request(content: RecordDict, node: int | str | None = None) -> TrainRequest:
    """The TrainRequest in ``content``; ProtocolError names the field."""
    cfg = _record(content, CONFIG, ConfigRecord, node)
    return TrainRequest(
        space=decode_space(cfg.get("space"), node),
        round=_int(cfg, "round", node),
        arrays=_state(_record(content, ARRAYS, ArrayRecord, node), node),
        alignment=_int(cfg, "alignment", node, 1),
        steps=_int(cfg, "steps", node, 1),
        lr=_float(cfg, "lr", node, 0.0),
        clip=_clip(cfg, node),
        seed=_int(cfg, "seed", node),
    )


def _clip(cfg: Mapping[str, Any], node: int | str | None) -> float:
    value = float(_get(cfg, CLIPPING_NORM, node, (int, float), "a number"))
    if math.isnan(value) or value <= 0:
        raise ProtocolError(f"{_who(node)}: field {CLIPPING_NORM!r}: need a number > 0 (inf: no clipping), got {value}")
    return value


def encode_train_reply(reply: TrainReply) -> RecordDict:
    """The RecordDict of a reply to ``train``: one ArrayRecord and one MetricRecord with num-examples."""
    return RecordDict(
        {
            ARRAYS: _arrays(reply.arrays),
            METRICS: MetricRecord({NUM_EXAMPLES: int(reply.n_examples), "update-norm": float(reply.update_norm)}),
        }
    )


def decode_train_reply(
    content: RecordDict, reference: Mapping[str, np.ndarray], node: int | str | None = None
) -> TrainReply:
    """The TrainReply in ``content``; its arrays must match ``reference`` in names, shapes and dtypes."""
    met = _record(content, METRICS, MetricRecord, node)
    state = _state(_record(content, ARRAYS, ArrayRecord, node), node)
    if set(state) != set(reference):
        missing, extra = sorted(set(reference) - set(state)), sorted(set(state) - set(reference))
        raise ProtocolError(f"{_who(node)}: record 'arrays': missing {missing[:3]}, unexpected {extra[:3]}")
    for key, ref in reference.items():
        if state[key].shape != ref.shape:
            raise ProtocolError(f"{_who(node)}: array {key!r}: shape {state[key].shape}, expected {ref.shape}")
        if np.issubdtype(ref.dtype, np.floating) and not np.all(np.isfinite(state[key])):
            raise ProtocolError(f"{_who(node)}: array {key!r}: contains NaN or infinity")
    return TrainReply(state, _int(met, NUM_EXAMPLES, node, 0), _float(met, "update-norm", node, 0.0))
