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
from search.space.mobilenetv3 import MobileNetV3Config, MobileNetV3Space

__all__ = ["FederationError", "app", "config_from_run_config", "grid_send", "make_server_app", "wait_for_nodes"]

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
               "battery-floor", "supernet", "noise-seed")


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


def grid_send(grid: Grid, space: MobileNetV3Space) -> Send:
    """A ``Send`` over ``grid``: requests become Messages, replies (or their absence) become values or Failures."""

    def send(mtype: str, requests: Mapping[int, Any], timeout: float | None) -> dict[int, Any]:
        messages = []
        sent_arrays: dict[int, Any] = {}  # train: the arrays sent, decoded once per (shared) RecordDict
        for node, req in requests.items():
            if isinstance(req, ProposeRequest):
                content, round_ = encode_propose_request(req), req.round
            elif isinstance(req, ScoreRequest):
                content, round_ = encode_score_request(req), req.round
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


def make_server_app(
    config: FederationConfig | None = None,
    out_dir: str | Path | None = None,
    on_finish: Callable[[FederatedSearch, dict[str, Any]], None] | None = None,
    resume: bool = False,
    noise_seed: int | None = None,
    on_round: Callable[[Any], None] | None = None,
) -> ServerApp:
    """A ServerApp running ``config`` (or the run_config's, when ``config`` is None) and writing to ``out_dir``."""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg, run_out = config_from_run_config(dict(context.run_config or {})) if config is None else (config, None)
        out = Path(out_dir) if out_dir is not None else run_out
        search = FederatedSearch(cfg, out_dir=out, rng_seed=noise_seed, resume=resume)
        nodes = wait_for_nodes(grid, cfg.min_nodes, cfg.wait_s)
        _log.info("federated search: %d nodes connected, %d rounds", len(nodes), cfg.rounds)
        send = grid_send(grid, search.space)
        summary = search.run(send, lambda: sorted(int(n) for n in grid.get_node_ids()), progress=on_round)
        if on_finish is not None:
            on_finish(search, summary)

    return server_app


app = make_server_app()
