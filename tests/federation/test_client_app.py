"""The ClientApp handlers, called in Flower's unit-test style with ``Mock(spec=Message)`` / ``Mock(spec=Context)``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import numpy as np
import pytest
from flwr.app import Context, Message, Metadata, RecordDict

from federation.client_app import (
    ERROR_OFFLINE,
    ERROR_PROTOCOL,
    ClientSettings,
    ClientSettingsError,
    local_data,
    make_client_app,
    node_settings,
)
from federation.protocol import (
    CLIPPING_NORM,
    PROPOSE,
    SCORE,
    TRAIN,
    ProposeRequest,
    ScoreRequest,
    TrainReply,
    TrainRequest,
    decode_propose_reply,
    decode_score_reply,
    decode_train_reply,
    encode_propose_request,
    encode_score_request,
    encode_train_request,
    federated_arrays,
)
from federation.server_app import config_from_run_config
from runtime.telemetry import Signals, write_trace
from tests.federation.conftest import SMALL_SPACE


def message(content: RecordDict, mtype: str, dst: int = 5) -> Message:
    msg = Mock(spec=Message)
    msg.content = content
    msg.metadata = Metadata(
        run_id=1, message_id="m1", src_node_id=0, dst_node_id=dst, reply_to_message_id="", group_id="1",
        created_at=time.time(), ttl=600.0, message_type=mtype,
    )
    return msg


def context(node_config: dict[str, Any], run_config: dict[str, Any] | None = None) -> Context:
    ctx = Mock(spec=Context)
    ctx.node_config = node_config
    ctx.run_config = run_config or {}
    ctx.state = RecordDict()
    return ctx


NODE = {"partition-id": 3, "num-partitions": 8, "hardware": "rpi4", "deadline-ms": 0.5}


def test_node_settings_precedence_and_errors(tmp_path: Path) -> None:
    defaults = ClientSettings(predictor="default.npz", tiers=("orin_nx",), tier_deadlines={"orin_nx": 0.2})
    s = node_settings(context(NODE, {"predictor": "run.npz", "alpha": 0.3}), defaults)
    assert (s.hardware, s.deadline_ms, s.predictor, s.alpha) == ("rpi4", 0.5, "run.npz", 0.3)
    # simulation: only the partition is given; tier and deadline come from the factory defaults
    s = node_settings(context({"partition-id": 1, "num-partitions": 4}), defaults)
    assert (s.hardware, s.deadline_ms, s.predictor) == ("orin_nx", 0.2, "default.npz")
    # a node's derived tier is deterministic in (seed, partition id)
    many = ClientSettings(tiers=("a", "b", "c", "d"))
    tiers = [node_settings(context({"partition-id": i, "num-partitions": 40}), many).hardware for i in range(40)]
    assert tiers == [node_settings(context({"partition-id": i, "num-partitions": 40}), many).hardware
                     for i in range(40)]
    assert len(set(tiers)) == 4
    with pytest.raises(ClientSettingsError, match="'partition-id' and 'num-partitions'"):
        node_settings(context({}), defaults)
    with pytest.raises(ClientSettingsError, match=r"must lie in 0\.\.3"):
        node_settings(context({"partition-id": 4, "num-partitions": 4}), defaults)


def test_partitions_are_disjoint_and_non_iid() -> None:
    defaults = ClientSettings(alpha=0.2)
    parts = [local_data(node_settings(context({"partition-id": i, "num-partitions": 5}), defaults)) for i in range(5)]
    assert sum(len(p) for p in parts) == 5000
    hists = np.stack([np.bincount(p.y, minlength=10) / len(p) for p in parts])
    assert np.abs(hists - 0.1).max() > 0.2  # skewed label mixes


def test_propose_and_score_answer_with_valid_records(space, class_predictor_path: Path) -> None:
    app = make_client_app(ClientSettings(predictor=str(class_predictor_path)))
    ctx = context(NODE)
    fronts = {"rpi4": space.sample(2, np.random.default_rng(0))}
    req = ProposeRequest(SMALL_SPACE, 1, 60, 3, "predictor", fronts, seed=0)
    reply = app(message(encode_propose_request(req), PROPOSE), ctx)
    assert not reply.has_error()
    assert reply.metadata.reply_to_message_id == "m1" and reply.metadata.dst_node_id == 0
    prop = decode_propose_reply(reply.content, space, node=5)
    assert 1 <= len(prop.codes) <= 3 and prop.tier == "rpi4" and prop.deadline_ms == 0.5
    assert np.all(prop.latency_ms <= 0.5)
    assert prop.n_examples == len(local_data(node_settings(ctx, ClientSettings())))
    # the same request gives the same answer (seeded from partition id and round)
    again = decode_propose_reply(app(message(encode_propose_request(req), PROPOSE), ctx).content, space)
    assert np.array_equal(again.codes, prop.codes)

    pool = np.concatenate([prop.codes, space.sample(5, np.random.default_rng(1))])
    sreq = ScoreRequest(SMALL_SPACE, 1, pool)
    sreply = app(message(encode_score_request(sreq), SCORE), ctx)
    scores = decode_score_reply(sreply.content, len(pool), node=5).scores
    assert np.all((scores >= 0) & (scores <= 1))
    assert np.allclose(scores[: len(prop.codes)], prop.accuracy / 100)  # feasible proposals: accuracy / 100

    # local DP: the row comes back clipped and noised, with the mechanism's extra coordinates
    lreq = ScoreRequest(SMALL_SPACE, 1, pool, dp_mode="local", clip=1.0, noise_multiplier=3.0, weight=0.5)
    lrep = app(message(encode_score_request(lreq), SCORE), context(NODE, {"noise-seed": 7}))
    row = decode_score_reply(lrep.content, lreq.reply_width, node=5, randomized=True).scores
    assert row.shape == (len(pool) + 2,) and not np.allclose(row[: len(pool)], scores)


def test_low_battery_refuses_with_an_error_reply(tmp_path: Path, class_predictor_path: Path) -> None:
    trace = tmp_path / "battery.csv"
    write_trace(trace, [Signals(t=0.0, battery_percent=40.0, plugged=False),
                        Signals(t=2.0, battery_percent=9.0, plugged=False),
                        Signals(t=3.0, battery_percent=8.0, plugged=True)])
    app = make_client_app(ClientSettings(predictor=str(class_predictor_path), battery_floor=15.0))
    ctx = context({**NODE, "battery-trace": str(trace)})
    ok = app(message(encode_propose_request(ProposeRequest(SMALL_SPACE, 1, 20, 2)), PROPOSE), ctx)
    assert not ok.has_error()
    low = app(message(encode_propose_request(ProposeRequest(SMALL_SPACE, 2, 20, 2)), PROPOSE), ctx)
    assert low.has_error() and low.error.code == ERROR_OFFLINE
    assert "battery 9 % below the floor 15 % in round 2" in low.error.reason
    charging = app(message(encode_propose_request(ProposeRequest(SMALL_SPACE, 3, 20, 2)), PROPOSE), ctx)
    assert not charging.has_error()  # plugged in: back online


def test_malformed_request_gets_a_protocol_error() -> None:
    app = make_client_app(ClientSettings())
    bad = encode_propose_request(ProposeRequest(SMALL_SPACE, 1, 20, 2))
    bad["config"]["budget"] = "lots"
    reply = app(message(bad, PROPOSE), context(NODE))
    assert reply.has_error() and reply.error.code == ERROR_PROTOCOL
    assert "node 3: field 'budget'" in reply.error.reason


def test_missing_predictor_is_a_clear_error() -> None:
    app = make_client_app(ClientSettings())
    with pytest.raises(ClientSettingsError, match="run_config: 'predictor'"):
        app(message(encode_propose_request(ProposeRequest(SMALL_SPACE, 1, 20, 2)), PROPOSE), context(NODE))


def test_module_level_apps_import_without_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import federation.client_app, federation.server_app\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))\n"
        "print(type(federation.client_app.app).__name__, type(federation.server_app.app).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ClientApp", "ServerApp"]


def test_run_config_reading() -> None:
    cfg, out = config_from_run_config(
        {"rounds": 2, "top-k": 3, "dp-mode": "central", "epsilon": 0.5, "space": "mnist", "out-dir": "/tmp/x",
         "predictor": "p.npz", "weight-rounds": "1,2"}
    )
    assert cfg.rounds == 2 and cfg.top_k == 3 and cfg.dp.epsilon == 0.5 and cfg.dp.rounds == 2
    assert cfg.weight_rounds == (1, 2) and str(out) == "/tmp/x"
    from federation.server import FederationConfigError

    with pytest.raises(FederationConfigError, match=r"unknown key\(s\) \['roundz'\]"):
        config_from_run_config({"roundz": 2})
    with pytest.raises(FederationConfigError, match="key 'rounds': cannot read 'two'"):
        config_from_run_config({"rounds": "two"})


def fedavg_shaped(reply: Message) -> None:
    """What Flower's FedAvg.aggregate_train insists on: one ArrayRecord + one MetricRecord with num-examples."""
    assert not reply.has_error(), reply.error if reply.has_error() else None
    assert len(reply.content.array_records) == 1 and len(reply.content.metric_records) == 1
    assert "num-examples" in next(iter(reply.content.metric_records.values()))


def test_train_handler_clips_with_flowers_mod_and_replies_in_fedavg_shape() -> None:
    state = {"w": np.zeros((4, 3), np.float32), "b": np.ones(5, np.float32)}
    seen = []

    def trainer(s, req: TrainRequest) -> TrainReply:  # an unclipped update of norm 10 (as answer_train returns)
        seen.append(req)
        upd = np.random.default_rng(0).normal(size=17)
        upd *= 10.0 / np.linalg.norm(upd)
        new = {"w": req.arrays["w"] + upd[:12].reshape(4, 3).astype(np.float32),
               "b": req.arrays["b"] + upd[12:].astype(np.float32)}
        return TrainReply(new, 40, 10.0)

    app = make_client_app(ClientSettings(), trainer=trainer)
    content = encode_train_request(TrainRequest(SMALL_SPACE, 1, state, clip=0.5))
    reply = app(message(content, TRAIN), context(NODE))
    fedavg_shaped(reply)
    rep = decode_train_reply(reply.content, state, node=5)
    delta = np.concatenate([(rep.arrays[k] - state[k]).ravel() for k in state])
    assert np.linalg.norm(delta) == pytest.approx(0.5, rel=1e-5)  # clipped by fixedclipping_mod, not the trainer
    assert rep.update_norm == pytest.approx(10.0) and rep.n_examples == 40
    assert seen[0].clip == 0.5 and list(rep.arrays) == ["w", "b"]
    # DP off: the server sends an infinite clip and the mod leaves the update alone
    reply = app(message(encode_train_request(TrainRequest(SMALL_SPACE, 1, state)), TRAIN), context(NODE))
    delta = np.concatenate([(decode_train_reply(reply.content, state).arrays[k] - state[k]).ravel() for k in state])
    assert np.linalg.norm(delta) == pytest.approx(10.0, rel=1e-5)
    # without Flower's clipping_norm the mod refuses the message (its own error reply)
    bare = encode_train_request(TrainRequest(SMALL_SPACE, 1, state, clip=0.5))
    del bare["config"][CLIPPING_NORM]
    assert app(message(bare, TRAIN), context(NODE)).has_error()


@pytest.mark.slow
def test_train_handler_fine_tunes_the_supernet_and_clips(space) -> None:
    import torch

    from search.supernet.model import MobileNetV3Supernet

    torch.manual_seed(0)
    full = {k: v.detach().numpy().copy() for k, v in MobileNetV3Supernet(space, 8).state_dict().items()}
    state = federated_arrays(full)
    app = make_client_app(ClientSettings())
    req = TrainRequest(SMALL_SPACE, 1, state, steps=1, lr=0.05, clip=0.05, seed=2)
    reply = app(message(encode_train_request(req), TRAIN), context(NODE))
    fedavg_shaped(reply)
    rep = decode_train_reply(reply.content, state, node=5)
    delta = np.sqrt(sum(float(np.sum((rep.arrays[k].astype(float) - state[k]) ** 2)) for k in state))
    assert rep.update_norm > 0.05 and delta == pytest.approx(0.05, rel=1e-3)
    assert rep.n_examples == len(local_data(node_settings(context(NODE), ClientSettings())))
