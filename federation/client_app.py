"""The Flower ClientApp of federated search: ``query.propose``, ``query.score`` and ``train`` handlers.

``app`` is what ``flwr run`` / ``flower-supernode`` load (``federation.client_app:app``); the
simulation builds its own with ``make_client_app(ClientSettings(...))``, because under
``run_simulation`` the run config is empty and each node only gets ``partition-id`` and
``num-partitions``.

Where a node's settings come from, first match wins:

- ``context.node_config``: ``partition-id``, ``num-partitions``, ``hardware`` (a catalogue name),
  ``deadline-ms``, ``battery-trace`` (a trace file, ``runtime.telemetry.load_trace``);
- ``context.run_config``: ``predictor`` (per-class AccuracyPredictor ``.npz``), ``alpha``,
  ``data-seed``, ``battery-floor``, ``supernet`` (a trained supernet directory, for
  ``supernet`` accuracy rounds);
- the factory's ``ClientSettings`` — which also derives a node's tier, deadline and battery
  trace deterministically from its partition id and the seed when nothing above names them.

The node's data is its Dirichlet(α) partition of the embedded MNIST-5k digits
(``search.data.dirichlet_partition``; every node computes the same partition from the same
seed, so no data moves). A node whose battery (from its trace, at trace time = round number)
is below the floor and not charging refuses the round with an error reply: that is how
offline devices reach the server's quorum logic.

The ``train`` handler runs behind Flower's ``fixedclipping_mod`` (attached to that handler only:
the query handlers carry no ArrayRecord, which the mod would refuse): the handler returns the
unclipped fine-tuned arrays, the mod clips their update to the ``clipping_norm`` the server's
``DifferentialPrivacyClientSideFixedClipping`` put in the config, and the reply leaves in FedAvg's
shape (one ArrayRecord + one MetricRecord with ``num-examples``). In local DP mode the config also
carries ``federation.weights.LOCAL_NOISE``: an outer mod (``federation.weights.local_noise_mod``)
then adds the client's own Gaussian noise to the clipped update (OS CSPRNG unless the run config's
``noise-seed`` fixes it). ``train_reply`` is the same chain without Flower (the in-process fleet).

In ``supernet`` accuracy rounds the server attaches its current global supernet to the propose and
score messages (``federation.weights.attach_supernet``): a node then scores with those weights
(rebuilt once per digest) instead of its own ``supernet`` directory, so rounds after a weight round
use the updated global weights.

Per-process caches (``functools.lru_cache`` keyed by configuration values) hold the dataset,
partitions, cost tables and predictors, so a Ray worker that plays many nodes loads each once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod

from federation.client import (
    client_seed,
    clip_update,
    fine_tune,
    label_histogram,
    local_search,
    predictor_accuracy,
    score_candidates,
    supernet_accuracy,
    supernet_from_arrays,
)
from federation.protocol import (
    ProposeReply,
    ProposeRequest,
    ProtocolError,
    ScoreReply,
    ScoreRequest,
    TrainReply,
    TrainRequest,
    decode_propose_request,
    decode_score_request,
    decode_train_request,
    encode_propose_reply,
    encode_score_reply,
    encode_space,
    encode_train_reply,
)
from federation.weights import SupernetWeights, WeightsError, add_local_noise, local_noise_mod, read_supernet
from search.space.mobilenetv3 import MobileNetV3Config, MobileNetV3Space

if TYPE_CHECKING:
    from search.cost.table import SpaceCostTable
    from search.data import Dataset
    from search.predictors.mlp import AccuracyPredictor

__all__ = [
    "ERROR_OFFLINE",
    "ERROR_PROTOCOL",
    "ClientSettings",
    "ClientSettingsError",
    "NodeSettings",
    "Offline",
    "Trainer",
    "answer_propose",
    "answer_score",
    "answer_train",
    "app",
    "battery_at",
    "local_data",
    "make_client_app",
    "node_settings",
    "settings_for",
    "train_reply",
]

_log = logging.getLogger(__name__)

ERROR_OFFLINE = 1001  # the device is offline this round (battery below the floor)
ERROR_PROTOCOL = 1002  # the request did not follow the protocol


class ClientSettingsError(ValueError):
    """A node/run/factory setting that does not fit; the message names the key and the allowed values."""


@dataclass(frozen=True)
class ClientSettings:
    """Factory-level defaults of every node (simulation) — overridden by node_config / run_config."""

    predictor: str | None = None
    alpha: float = 0.5
    data_seed: int = 0
    tiers: tuple[str, ...] = ("cortex_a76", "jetson_nano", "orin_nx", "rk3399_big", "rpi4")
    tier_deadlines: Mapping[str, float] = field(default_factory=dict)  # ms per tier
    default_deadline_ms: float = 2.0
    battery_floor: float = 15.0
    battery_dir: str | None = None  # battery_<partition>.csv per node (the simulation writes them)
    supernet: str | None = None
    noise_seed: int | None = None  # local-DP noise: None = OS entropy (tests may fix it)


@dataclass(frozen=True)
class NodeSettings:
    """One node's resolved settings."""

    partition_id: int
    num_partitions: int
    hardware: str
    deadline_ms: float
    predictor: str | None
    alpha: float
    data_seed: int
    battery_trace: str | None
    battery_floor: float
    supernet: str | None
    noise_seed: int | None


def _pick(key: str, *sources: Mapping[str, Any]) -> Any:
    for src in sources:
        if key in src and src[key] not in (None, ""):
            return src[key]
    return None


def node_settings(context: Context, defaults: ClientSettings) -> NodeSettings:
    """The node's settings from node_config, then run_config, then ``defaults`` (see module docstring)."""
    return settings_for(dict(context.node_config or {}), dict(context.run_config or {}), defaults)


def settings_for(node: Mapping[str, Any], run: Mapping[str, Any], defaults: ClientSettings) -> NodeSettings:
    """The settings of a node with this node_config and run_config (``node_settings`` without a Context)."""
    try:
        pid = int(node["partition-id"])
        n = int(node["num-partitions"])
    except (KeyError, TypeError, ValueError):
        raise ClientSettingsError(
            f"node_config: need integer 'partition-id' and 'num-partitions', got {sorted(node)}"
        ) from None
    if not 0 <= pid < n:
        raise ClientSettingsError(f"node_config: 'partition-id' {pid} must lie in 0..{n - 1} ('num-partitions')")
    seed = int(_pick("data-seed", run) if _pick("data-seed", run) is not None else defaults.data_seed)
    tier = _pick("hardware", node)
    if tier is None:
        if not defaults.tiers:
            raise ClientSettingsError("node_config: 'hardware' is missing and no default tiers are configured")
        tier = defaults.tiers[int(np.random.default_rng([seed, pid, 11]).integers(len(defaults.tiers)))]
    deadline = _pick("deadline-ms", node)
    if deadline is None:
        deadline = defaults.tier_deadlines.get(str(tier), defaults.default_deadline_ms)
    trace = _pick("battery-trace", node)
    if trace is None and defaults.battery_dir:
        trace = str(Path(defaults.battery_dir) / f"battery_{pid:05d}.csv")
    floor = _pick("battery-floor", run)
    alpha = _pick("alpha", run)
    noise_seed = _pick("noise-seed", run)
    return NodeSettings(
        partition_id=pid,
        num_partitions=n,
        hardware=str(tier),
        deadline_ms=float(deadline),
        predictor=_pick("predictor", run) or defaults.predictor,
        alpha=float(alpha) if alpha is not None else defaults.alpha,
        data_seed=seed,
        battery_trace=str(trace) if trace else None,
        battery_floor=float(floor) if floor is not None else defaults.battery_floor,
        supernet=_pick("supernet", run) or defaults.supernet,
        noise_seed=int(noise_seed) if noise_seed is not None else defaults.noise_seed,
    )


# ---- per-process caches (keyed by configuration values) ----------------------------------------
@lru_cache(maxsize=2)
def _dataset() -> Dataset:
    from search.data import load_mnist5k

    return load_mnist5k()


@lru_cache(maxsize=4)
def _partitions(n: int, alpha: float, seed: int) -> tuple[np.ndarray, ...]:
    from search.data import DataError, dirichlet_partition

    y = _dataset().y
    try:
        return tuple(dirichlet_partition(y, n, alpha, seed=seed, min_size=1, max_attempts=100))
    except DataError:
        # Many clients and a strong skew (e.g. 1,000 clients, α = 0.5 over 5,000 digits): some
        # devices simply hold no data. They answer every round with an error (``Offline``).
        return tuple(dirichlet_partition(y, n, alpha, seed=seed, min_size=0))


@lru_cache(maxsize=8)
def _space(space_json: str) -> MobileNetV3Space:
    return MobileNetV3Space(MobileNetV3Config.from_dict(json.loads(space_json)))


@lru_cache(maxsize=32)
def _cost_table(space_json: str, hardware: str) -> SpaceCostTable:
    from runtime.hardware import load_device
    from search.cost.table import SpaceCostTable

    return SpaceCostTable(_space(space_json), load_device(hardware))


@lru_cache(maxsize=4)
def _predictor(path: str, space_json: str) -> AccuracyPredictor:
    from search.predictors.mlp import AccuracyPredictor

    return AccuracyPredictor.load(path, _space(space_json))


@lru_cache(maxsize=2)
def _supernet(path: str) -> Any:
    from search.supernet.trained import TrainedSupernet

    return TrainedSupernet.load(path).net


@dataclass(frozen=True)
class _ByDigest:
    """Global weights keyed by their digest and alignment (hashable, for the per-process network cache)."""

    digest: str
    alignment: int
    weights: SupernetWeights = field(compare=False, hash=False)


@lru_cache(maxsize=2)
def _global_net(key: _ByDigest, space_json: str) -> Any:
    net = supernet_from_arrays(_space(space_json), key.alignment, key.weights.arrays, "record 'supernet'")
    net.eval()
    return net


@lru_cache(maxsize=1024)
def _trace(path: str) -> tuple[Any, ...]:
    from runtime.telemetry import load_trace

    return load_trace(path)


def local_data(s: NodeSettings) -> Dataset:
    """The node's own partition of the embedded digits."""
    return _dataset().take(_partitions(s.num_partitions, s.alpha, s.data_seed)[s.partition_id])


def battery_at(trace: tuple[Any, ...], t: float) -> tuple[float | None, bool | None]:
    """(battery %, plugged) of the latest trace sample with ``sample.t <= t`` (the first sample before it)."""
    current = trace[0]
    for sample in trace:
        if sample.t > t:
            break
        current = sample
    return current.battery_percent, current.plugged


def offline_reason(s: NodeSettings, round_: int) -> str | None:
    """Why the node sits this round out (no local data, or battery below the floor and not charging), or None."""
    if len(_partitions(s.num_partitions, s.alpha, s.data_seed)[s.partition_id]) == 0:
        return "no local data in this node's partition"
    if s.battery_trace is None:
        return None
    battery, plugged = battery_at(_trace(s.battery_trace), float(round_))
    if battery is not None and battery < s.battery_floor and not plugged:
        return f"battery {battery:.0f} % below the floor {s.battery_floor:.0f} % in round {round_}"
    return None


def _accuracy_fn(
    s: NodeSettings, space_cfg: MobileNetV3Config, source: str, seed: int, supernet: SupernetWeights | None = None
) -> Any:
    space_json = encode_space(space_cfg)
    data = local_data(s)
    if source == "supernet":
        if supernet is not None:  # the server's current global weights (attached to the request)
            net = _global_net(_ByDigest(supernet.digest, supernet.alignment, supernet), space_json)
            return supernet_accuracy(net, _space(space_json), data, seed=seed)
        if s.supernet is None:
            raise ClientSettingsError(
                "run_config: 'supernet' (a trained supernet directory) is needed for supernet rounds"
            )
        return supernet_accuracy(_supernet(s.supernet), _space(space_json), data, seed=seed)
    if s.predictor is None:
        raise ClientSettingsError("run_config: 'predictor' (a per-class AccuracyPredictor .npz) is missing")
    hist = label_histogram(data.y, space_cfg.num_classes)
    return predictor_accuracy(_predictor(str(s.predictor), space_json), hist)


def _error(msg: Message, code: int, reason: str) -> Message:
    return Message(Error(code=code, reason=reason), reply_to=msg)


class Offline(Exception):
    """The node sits this round out (its reason is the error reply's text)."""


def answer_propose(s: NodeSettings, req: ProposeRequest, supernet: SupernetWeights | None = None) -> ProposeReply:
    """The node's reply to ``query.propose``: its local search's top-K; raises Offline when its battery is low.

    ``supernet``: the global weights the server attached (``supernet`` rounds), else the node's own.
    """
    why = offline_reason(s, req.round)
    if why:
        raise Offline(why)
    space_json = encode_space(req.space)
    seed = client_seed(s.partition_id, req.round, req.seed)
    fronts = [f for f in req.fronts.values() if len(f)]
    result = local_search(
        _space(space_json),
        _accuracy_fn(s, req.space, req.source, seed, supernet),
        _cost_table(space_json, s.hardware),
        s.deadline_ms,
        req.budget,
        req.top_k,
        seed,
        initial=np.concatenate(fronts) if fronts else None,
    )
    return ProposeReply(result.codes, result.accuracy, result.latency_ms, len(local_data(s)), s.hardware, s.deadline_ms)


def answer_score(s: NodeSettings, req: ScoreRequest, supernet: SupernetWeights | None = None) -> ScoreReply:
    """The node's reply to ``query.score`` (randomised in local DP mode); raises Offline when its battery is low.

    ``supernet``: the global weights the server attached (``supernet`` rounds), else the node's own.
    """
    why = offline_reason(s, req.round)
    if why:
        raise Offline(why)
    space_json = encode_space(req.space)
    seed = client_seed(s.partition_id, req.round, req.seed)
    scores = score_candidates(
        req.pool, _accuracy_fn(s, req.space, req.source, seed, supernet), _cost_table(space_json, s.hardware),
        s.deadline_ms,
    )
    randomized = req.dp_mode == "local"
    if randomized:
        from federation.dp import DPConfig, local_randomize, noise_rng

        cfg = DPConfig(
            mode="local",
            clip=req.clip,
            noise_multiplier=req.noise_multiplier,
            centre=req.centre,
            count_scale=req.count_scale,
            offset_scale=req.offset_scale,
        )
        rng = noise_rng(None if s.noise_seed is None else client_seed(s.partition_id, req.round, s.noise_seed))
        scores = np.asarray(local_randomize(scores, req.weight, cfg, req.noise_multiplier, rng), dtype=float)
    return ScoreReply(scores, len(local_data(s)), s.hardware, randomized)


def answer_train(s: NodeSettings, req: TrainRequest) -> TrainReply:
    """The node's reply to ``train``: the fine-tuned arrays, *unclipped* (torch), and the update norm; Offline when low.

    Unclipped because the ``train`` handler's ``fixedclipping_mod`` clips the reply to
    ``req.clip`` — Flower's own client-side clipping, so it is done exactly once.
    """
    why = offline_reason(s, req.round)
    if why:
        raise Offline(why)
    data = local_data(s)
    state, norm = fine_tune(
        req.arrays,
        _space(encode_space(req.space)),
        data,
        req.steps,
        req.lr,
        0.0,
        client_seed(s.partition_id, req.round, req.seed),
        alignment=req.alignment,
    )
    return TrainReply(state, len(data), norm)


Trainer = Callable[[NodeSettings, TrainRequest], TrainReply]


def weight_noise_seed(s: NodeSettings, round_: int) -> int | None:
    """Seed of the node's local-DP weight noise in ``round_`` (None: OS CSPRNG); a stream apart from its score noise."""
    if s.noise_seed is None:
        return None
    return (client_seed(s.partition_id, round_, s.noise_seed) + 1) % (2**63)


def train_reply(s: NodeSettings, req: TrainRequest, local_noise: float = 0.0, trainer: Trainer | None = None
                ) -> TrainReply:
    """The reply the ``train`` handler's mod chain sends, computed without Flower (the in-process fleet).

    ``trainer`` (default ``answer_train``), then the update clipped to ``req.clip`` by Flower's
    ``compute_clip_model_update`` (what ``fixedclipping_mod`` calls), then with ``local_noise`` σ > 0
    N(0, (σ·clip)²) added and the reported update norm zeroed (what ``local_noise_mod`` does).
    """
    raw = (trainer or answer_train)(s, req)
    clipped, _ = clip_update(raw.arrays, req.arrays, req.clip)
    arrays = {k: clipped[k] for k in req.arrays}
    if not local_noise > 0:
        return TrainReply(arrays, raw.n_examples, raw.update_norm)
    noised = add_local_noise(arrays.values(), req.clip, local_noise, weight_noise_seed(s, req.round))
    return TrainReply(dict(zip(arrays, noised, strict=True)), raw.n_examples, 0.0)


def make_client_app(defaults: ClientSettings | None = None, trainer: Trainer | None = None) -> ClientApp:
    """A ClientApp whose nodes fall back to ``defaults`` for settings node_config/run_config do not give.

    ``trainer`` answers ``train`` before Flower's clipping mod (default ``answer_train``: torch fine-tuning).
    """
    settings_default = defaults or ClientSettings()
    train_answer = trainer or answer_train
    client_app = ClientApp()

    def handle(msg: Message, context: Context, decode: Any, answer: Any, encode: Any, weights: bool = False
               ) -> Message:
        s = node_settings(context, settings_default)
        try:
            req = decode(msg.content, node=s.partition_id)
            extra = {"supernet": read_supernet(msg.content, node=s.partition_id)} if weights else {}
        except (ProtocolError, WeightsError) as exc:
            return _error(msg, ERROR_PROTOCOL, str(exc))
        try:
            reply = answer(s, req, **extra)
        except Offline as exc:
            return _error(msg, ERROR_OFFLINE, str(exc))
        return Message(encode(reply), reply_to=msg)

    def weight_noise(msg: Message, context: Context) -> int | None:
        round_ = next(iter(msg.content.config_records.values())).get("round", 0)
        return weight_noise_seed(node_settings(context, settings_default), int(round_))

    @client_app.query("propose")
    def propose(msg: Message, context: Context) -> Message:
        return handle(msg, context, decode_propose_request, answer_propose, encode_propose_reply, weights=True)

    @client_app.query("score")
    def score(msg: Message, context: Context) -> Message:
        return handle(msg, context, decode_score_request, answer_score, encode_score_reply, weights=True)

    # mods[0] is the outermost: the local-DP noise is added after fixedclipping_mod clipped the update.
    @client_app.train(mods=[local_noise_mod(weight_noise), fixedclipping_mod])
    def train(msg: Message, context: Context) -> Message:
        return handle(msg, context, decode_train_request, train_answer, encode_train_reply)

    return client_app


app = make_client_app()
