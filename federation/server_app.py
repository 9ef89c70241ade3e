"""The Flower ServerApp of federated search: a Grid loop around ``federation.server.FederatedSearch``.

``app`` is what ``flwr run`` / the deployment engine loads (``federation.server_app:app``); it reads
its configuration from ``context.run_config`` (flat keys, see ``config_from_run_config``). The
simulation builds its own with ``make_server_app(config, out_dir, on_finish)``, because under
``run_simulation`` the run config is empty.

``main`` waits until ``min-nodes`` nodes are connected (``Grid.get_node_ids()`` is empty at first)
or fails after ``wait-s`` with a message saying how many it saw, then runs the rounds. The
``send`` it hands to ``FederatedSearch`` turns requests into Messages, waits with the configured
timeout, and turns error replies, malformed replies and missing replies into ``Failure`` values —
the round logic decides about quorum. ``train`` requests arrive already as the RecordDict Flower's
``DifferentialPrivacyClientSideFixedClipping`` built (``federation.server.dp_fedavg_round``) and go
out as they are; their replies are checked against the arrays sent.

Weight rounds (run_config ``weight-rounds``) need the initial global supernet on the ServerApp's
machine: ``supernet-weights`` names either a ``fleetnas supernet train`` output directory (read
with torch) or a weights ``.npz`` (``fleetnas federate export-weights``; read without torch, so
a torch-free server can coordinate weight rounds). The clients need no supernet file for weight
rounds: the weights travel in the ``train`` messages (and, in ``supernet`` accuracy rounds, with
the propose/score messages). With torch on the server the global supernet is measured before and
after each weight round (``federation.weights.SupernetProbe``), and at the end it is saved to
``<out-dir>/supernet/`` as a trained-supernet directory (``TrainedSupernet.load`` reads it).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from federation.protocol import (
    PROPOSE,
    SCORE,
    TRAIN,
    ProposeRequest,
    ProtocolError,
    ScoreRequest,
    decode_propose_reply,
    decode_score_reply,
    decode_train_reply,
    decode_train_request,
    encode_propose_request,
    encode_score_request,
)
from federation.server import Failure, FederatedSearch, FederationConfig, FederationConfigError, Send
from federation.weights import SUPERNET_META, SUPERNET_RECORD, SupernetWeights, WeightsError, attach_supernet
from search.space.mobilenetv3 import MobileNetV3Config, MobileNetV3Space

__all__ = [
    "FederationError",
    "app",
    "config_from_run_config",
    "grid_send",
    "make_server_app",
    "prepare_supernet",
    "save_supernet",
    "wait_for_nodes",
]

_log = logging.getLogger(__name__)

# run_config key -> (FederationConfig field or dp.<field>, converter)
_RUN_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "rounds": ("rounds", int),
    "budget": ("budget", int),
    "top-k": ("top_k", int),
    "seed-pool": ("seed_pool", int),
    "fraction": ("fraction", float),
    "min-nodes": ("min_nodes", int),
    "quorum": ("quorum", float),
    "timeout-s": ("timeout_s", float),
    "wait-s": ("wait_s", float),
    "source": ("source", str),
    "seed": ("seed", int),
    "train-steps": ("train_steps", int),
    "train-lr": ("train_lr", float),
    "weight-clip": ("weight_clip", float),
    "baseline-predictor": ("baseline_predictor", str),
    "final-pool": ("final_pool", int),
    "budget-ramp": ("budget_ramp", float),
    "union-budget-share": ("dp.union_budget_share", float),
    "dp-mode": ("dp.mode", str),
    "epsilon": ("dp.epsilon", float),
    "delta": ("dp.delta", float),
    "clip": ("dp.clip", float),
    "noise-multiplier": ("dp.noise_multiplier", float),
    "union-threshold": ("dp.union_threshold", float),
}
# Read by the ClientApp or by main itself, not by FederationConfig.
_OTHER_KEYS = ("out-dir", "space", "weight-rounds", "tier-deadlines", "predictor", "alpha", "data-seed",
               "battery-floor", "supernet", "noise-seed", "supernet-weights")


class FederationError(RuntimeError):
    """The federation could not run (e.g. too few nodes connected in time)."""


def config_from_run_config(run_config: Mapping[str, Any]) -> tuple[FederationConfig, Path | None]:
    """(FederationConfig, output dir) from Flower's flat run_config; unknown keys are errors naming the allowed ones."""
    unknown = sorted(set(run_config) - set(_RUN_KEYS) - set(_OTHER_KEYS))
    if unknown:
        raise FederationConfigError(
            f"run_config: unknown key(s) {unknown}; allowed: {', '.join(sorted([*_RUN_KEYS, *_OTHER_KEYS]))}"
        )
    top: dict[str, Any] = {}
    dp: dict[str, Any] = {}
    for key, (name, conv) in _RUN_KEYS.items():
        if key not in run_config or run_config[key] == "":
            continue
        try:
            value = conv(run_config[key])
        except (TypeError, ValueError):
            raise FederationConfigError(
                f"run_config: key {key!r}: cannot read {run_config[key]!r} as {conv.__name__}"
            ) from None
        if name.startswith("dp."):
            dp[name[3:]] = value
        else:
            top[name] = value
    if dp:
        top["dp"] = dp
    if "space" in run_config:
        text = str(run_config["space"])
        top["space"] = json.loads(text) if text.lstrip().startswith("{") else MobileNetV3Config.preset(text)
    if "weight-rounds" in run_config:
        top["weight_rounds"] = [int(r) for r in str(run_config["weight-rounds"]).split(",") if r.strip()]
    if "tier-deadlines" in run_config:
        top["tier_deadlines"] = json.loads(str(run_config["tier-deadlines"]))
    out = run_config.get("out-dir")
    return FederationConfig.from_dict(top, source="run_config"), Path(str(out)) if out else None


def wait_for_nodes(grid: Grid, minimum: int, wait_s: float, poll_s: float = 0.5) -> list[int]:
    """The connected node ids once at least ``minimum`` are there; FederationError after ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        nodes = sorted(int(n) for n in grid.get_node_ids())
        if len(nodes) >= minimum:
            return nodes
        if time.monotonic() >= deadline:
            raise FederationError(
                f"only {len(nodes)} of the {minimum} expected nodes connected within {wait_s:.0f} s "
                "(run_config 'min-nodes', 'wait-s'); are the SuperNodes running and pointed at this SuperLink?"
            )
        time.sleep(poll_s)


def grid_send(grid: Grid, space: MobileNetV3Space, supernet: Callable[[], Any] | None = None) -> Send:
    """A ``Send`` over ``grid``: requests become Messages, replies (or their absence) become values or Failures.

    ``supernet()`` (e.g. ``FederatedSearch.global_supernet``) gives the current global weights;
    propose/score requests of ``supernet`` accuracy rounds carry them (``attach_supernet``).
    """

    def send(mtype: str, requests: Mapping[int, Any], timeout: float | None) -> dict[int, Any]:
        messages = []
        sent_arrays: dict[int, Any] = {}  # train: the arrays sent, decoded once per (shared) RecordDict
        shared: RecordDict | None = None  # the global weights' records, built once per call
        for node, req in requests.items():
            if isinstance(req, ProposeRequest | ScoreRequest):
                encode = encode_propose_request if isinstance(req, ProposeRequest) else encode_score_request
                content, round_ = encode(req), req.round
                if shared is None and supernet is not None and req.source == "supernet":
                    weights = supernet()
                    shared = attach_supernet(RecordDict(), weights) if weights is not None else None
                if shared is not None and req.source == "supernet":
                    content[SUPERNET_RECORD] = shared[SUPERNET_RECORD]
                    content[SUPERNET_META] = shared[SUPERNET_META]
            elif isinstance(req, RecordDict):
                if id(req) not in sent_arrays:
                    sent_arrays[id(req)] = decode_train_request(req).arrays
                content, round_ = req, req["config"]["round"]
            else:  # pragma: no cover - the round logic only builds the three
                raise TypeError(f"unknown request {type(req).__name__}")
            messages.append(Message(content, dst_node_id=int(node), message_type=mtype, group_id=str(round_)))
        out: dict[int, Any] = {}
        for rep in grid.send_and_receive(messages, timeout=timeout):
            node = int(rep.metadata.src_node_id)
            if node not in requests:
                continue
            if rep.has_error():
                out[node] = Failure(node, f"error {rep.error.code}: {rep.error.reason}")
                continue
            req = requests[node]
            try:
                if mtype == PROPOSE:
                    out[node] = decode_propose_reply(rep.content, space, node)
                elif mtype == SCORE:
                    local = req.dp_mode == "local"
                    out[node] = decode_score_reply(rep.content, req.reply_width, node, randomized=local)
                elif mtype == TRAIN:
                    out[node] = decode_train_reply(rep.content, sent_arrays[id(req)], node)
            except ProtocolError as exc:
                out[node] = Failure(node, str(exc))
        for node in requests:
            out.setdefault(node, Failure(node, f"no reply within {timeout} s (timeout)"))
        return out

    return send


def prepare_supernet(
    search: FederatedSearch, weights: SupernetWeights | str | Path | None, measure: bool = True
) -> None:
    """Attach the initial global supernet (weights or a path for ``load_weights``) to ``search`` for its weight rounds.

    No-op without weight rounds or weights (a run with weight rounds but no weights, not resumed
    with its own, is a FederationConfigError naming ``supernet-weights``). ``measure``: attach a
    ``SupernetProbe`` when the weights carry their training configuration and torch imports.
    """
    cfg = search.config
    needed = bool(cfg.weight_rounds) or cfg.source == "supernet"
    if not needed:
        return
    if weights is None:
        if search.supernet_state is None and cfg.weight_rounds:
            raise FederationConfigError(
                "run_config: key 'supernet-weights' is needed for 'weight-rounds' (a trained supernet directory "
                "or a weights .npz on the ServerApp's machine)"
            )
        weights = search.global_supernet()
        if weights is None:
            return
    if not isinstance(weights, SupernetWeights):
        from federation.weights import load_weights

        try:
            weights = load_weights(weights)
        except WeightsError as exc:
            raise FederationConfigError(f"run_config: key 'supernet-weights': {exc}") from None
    probe = None
    if measure and weights.train_config is not None:
        try:
            from federation.weights import SupernetProbe

            probe = SupernetProbe(weights.train_config)
        except ImportError:
            _log.info("weight rounds: no torch on the server, the global supernet's accuracy is not measured")
    search.attach_supernet(weights, probe)


def save_supernet(search: FederatedSearch, out: Path | None, summary: dict[str, Any]) -> Path | None:
    """Write the global supernet to ``out/supernet`` (``export_supernet``), noted in ``summary``; returns the dir."""
    weights = search.global_supernet()
    if out is None or weights is None or not search.config.weight_rounds or weights.train_config is None:
        return None
    from federation.weights import export_supernet
    from runtime.fileio import write_text_atomic

    path = export_supernet(weights, out / "supernet")
    if summary.get("weights") is not None:
        summary["weights"]["supernet_dir"] = str(path)
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return path


def make_server_app(
    config: FederationConfig | None = None,
    out_dir: str | Path | None = None,
    on_finish: Callable[[FederatedSearch, dict[str, Any]], None] | None = None,
    resume: bool = False,
    noise_seed: int | None = None,
    on_round: Callable[[Any], None] | None = None,
    supernet: SupernetWeights | str | Path | None = None,
    measure_supernet: bool = True,
) -> ServerApp:
    """A ServerApp running ``config`` (or the run_config's, when ``config`` is None) and writing to ``out_dir``.

    ``supernet``: the initial global weights of weight rounds (else run_config ``supernet-weights``).
    """
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        run_config = dict(context.run_config or {})
        cfg, run_out = config_from_run_config(run_config) if config is None else (config, None)
        out = Path(out_dir) if out_dir is not None else run_out
        search = FederatedSearch(cfg, out_dir=out, rng_seed=noise_seed, resume=resume)
        initial = supernet if supernet is not None else (str(run_config.get("supernet-weights") or "") or None)
        prepare_supernet(search, initial, measure_supernet)
        nodes = wait_for_nodes(grid, cfg.min_nodes, cfg.wait_s)
        _log.info("federated search: %d nodes connected, %d rounds", len(nodes), cfg.rounds)
        send = grid_send(grid, search.space, search.global_supernet)
        summary = search.run(send, lambda: sorted(int(n) for n in grid.get_node_ids()), progress=on_round)
        save_supernet(search, out, summary)
        if on_finish is not None:
            on_finish(search, summary)

    return server_app


app = make_server_app()
