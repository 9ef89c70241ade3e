"""Supernet weight rounds: secure noise in Flower's wrapper, the weight clip, local DP, the weights file and resume."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import numpy as np
import pytest
from flwr.app import Context, Message, Metadata, RecordDict
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping

from federation.client import clip_update
from federation.client_app import ClientSettings, make_client_app, settings_for, train_reply
from federation.dp import DPConfig, local_randomize, noise_rng
from federation.protocol import (
    SCORE,
    TRAIN,
    ScoreRequest,
    TrainReply,
    TrainRequest,
    decode_train_reply,
    decode_train_request,
    encode_score_request,
    encode_train_request,
)
from federation.server import (
    STATE_FILE,
    Failure,
    FederatedSearch,
    FederationConfig,
    FederationConfigError,
    dp_fedavg_round,
    fixed_clipping_fedavg,
)
from federation.server_app import config_from_run_config, grid_send
from federation.weights import (
    LOCAL_NOISE,
    SUPERNET_RECORD,
    SecureClientSideFixedClipping,
    SupernetWeights,
    WeightsError,
    attach_supernet,
    read_supernet,
    read_weights,
    save_weights,
)
from tests.federation.conftest import SMALL_SPACE
from tests.federation.test_server import Fleet, config


@pytest.fixture
def server_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a ServerApp run sets before any Message is built (FedAvg's configure_train builds them)."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


@pytest.fixture
def fleet(space, tables, deadlines) -> Fleet:
    return Fleet(space, tables, deadlines)


def _global_rng_state() -> tuple[Any, ...]:
    state = np.random.get_state()
    return (state[0], state[1].copy(), *state[2:])


def _same_rng_state(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


# ---- secure noise inside Flower's wrapper --------------------------------------------------------
def test_wrapper_is_flowers_with_noise_of_the_right_std_from_our_source(fleet: Fleet, server_task) -> None:
    strategy = fixed_clipping_fedavg(2.0, 1.5, 4)
    assert isinstance(strategy, SecureClientSideFixedClipping)
    assert isinstance(strategy, DifferentialPrivacyClientSideFixedClipping)  # Flower's clip config and checks
    with pytest.raises(ValueError, match="clipping norm should be a positive"):
        fixed_clipping_fedavg(2.0, -1.0, 4)

    state = {"w": np.zeros((200, 60), np.float32)}
    fleet.update = lambda node, arrays: {"w": np.full((200, 60), 0.02, np.float32)}  # type: ignore[method-assign]
    nodes = fleet.nodes[:6]
    req = TrainRequest(SMALL_SPACE, 1, state, clip=3.0)
    np.random.seed(12345)
    before = _global_rng_state()
    out = dp_fedavg_round(fleet.send, nodes, req, 4.0, None, quorum=3, noise=noise_rng(7))
    assert _same_rng_state(before, _global_rng_state())  # NumPy's global generator was not drawn from
    noise = out.state["w"].astype(float) - 0.02
    assert out.noise_std == pytest.approx(4.0 * 3.0 / 6)
    assert noise.std() == pytest.approx(2.0, rel=0.03)  # 12,000 draws
    assert abs(noise.mean()) < 4 * 2.0 / np.sqrt(noise.size)
    # the same seed gives the same noise, another seed other noise: it comes from the source we pass
    again = dp_fedavg_round(fleet.send, nodes, req, 4.0, None, quorum=3, noise=noise_rng(7))
    other = dp_fedavg_round(fleet.send, nodes, req, 4.0, None, quorum=3, noise=noise_rng(8))
    assert np.array_equal(again.state["w"], out.state["w"]) and not np.allclose(other.state["w"], out.state["w"])
    # the default source is the OS CSPRNG: still the right std, still no global draw
    before = _global_rng_state()
    secure = dp_fedavg_round(fleet.send, nodes, req, 4.0, None, quorum=3)
    assert _same_rng_state(before, _global_rng_state())
    assert (secure.state["w"].astype(float) - 0.02).std() == pytest.approx(2.0, rel=0.03)


def test_a_weight_round_in_the_search_leaves_numpys_global_rng_alone(fleet: Fleet, server_task) -> None:
    dp = DPConfig(mode="central", epsilon=2.0, clip=0.5)  # no seed: every release from the OS CSPRNG
    search = FederatedSearch(config(rounds=1, dp=dp, weight_rounds=(1,), weight_clip=0.3))
    search.supernet_state = {"w": np.zeros((50, 40), np.float32)}
    np.random.seed(99)
    before = _global_rng_state()
    result = search.run_round(fleet.send, fleet.nodes)
    assert result.train["status"] == "ok"
    assert _same_rng_state(before, _global_rng_state())
    assert result.train["noise_std"] == pytest.approx(search.plan.weight_sigma * 0.3 / result.train["answered"])


# ---- the weight clip ------------------------------------------------------------------------------
def test_weight_clip_is_its_own_validated_option(fleet: Fleet, server_task) -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(FederationConfigError, match="field 'weight_clip'"):
            config(weight_clip=bad)
    with pytest.raises(FederationConfigError, match="field 'weight_clip'"):
        config_from_run_config({"weight-clip": "0"})
    cfg, _ = config_from_run_config({"weight-clip": "2.5", "clip": "0.1"})
    assert cfg.weight_clip == 2.5 and cfg.dp.clip == 0.1
    assert FederationConfig.from_dict(cfg.to_json()) == cfg
    # the train requests carry the weight clip, not the score clip
    dp = DPConfig(mode="central", epsilon=1.0, clip=0.05)
    search = FederatedSearch(config(rounds=1, dp=dp, weight_rounds=(1,), weight_clip=1.25), rng_seed=0)
    search.supernet_state = {"w": np.zeros((3, 2), np.float32)}
    result = search.run_round(fleet.send, fleet.nodes)
    assert fleet.train_requests[-1].clip == 1.25 and result.train["clip"] == 1.25


# ---- local DP: clients noise their own updates --------------------------------------------------
class LocalFleet(Fleet):
    """``train`` answered by the client app's own ``train_reply`` (trainer, Flower's clipping, local noise)."""

    def send(self, mtype: str, requests: Mapping[int, Any], timeout: float | None) -> dict[int, Any]:
        if mtype == SCORE:  # local DP scores, randomised as answer_score does
            raw = super().send(mtype, requests, timeout)
            out_scores: dict[int, Any] = {}
            for node, rep in raw.items():
                req = requests[node]
                cfg = DPConfig(mode="local", clip=req.clip, noise_multiplier=req.noise_multiplier, centre=req.centre,
                               count_scale=req.count_scale, offset_scale=req.offset_scale)
                row = local_randomize(rep.scores, req.weight, cfg, req.noise_multiplier, node)
                out_scores[node] = replace(rep, scores=np.asarray(row), randomized=True)
            return out_scores
        if mtype != TRAIN:
            return super().send(mtype, requests, timeout)
        out: dict[int, Any] = {}
        for node, content in requests.items():
            req = decode_train_request(content, node=node)
            self.train_requests.append(req)
            s = settings_for({"partition-id": node - 100, "num-partitions": 50}, {}, ClientSettings(noise_seed=5))

            def trainer(s: Any, r: TrainRequest, node: int = node) -> TrainReply:
                upd = self.update(node, r.arrays)
                new = {k: v + upd[k] for k, v in r.arrays.items()}
                return TrainReply(new, self.size[node], float(np.sqrt(sum(np.sum(u.astype(float) ** 2)
                                                                         for u in upd.values()))))

            out[node] = train_reply(s, req, float(content["config"].get(LOCAL_NOISE, 0.0)), trainer)
        return out


def test_local_mode_noises_on_the_clients_and_charges_half_their_sigma(space, tables, deadlines, server_task) -> None:
    fleet = LocalFleet(space, tables, deadlines, n=8)
    shape = (100, 50)
    fleet.update = lambda node, arrays: {"w": np.full(shape, 0.001 * (node - 99), np.float32)}  # type: ignore[method-assign]
    dp = DPConfig(mode="local", epsilon=4.0, clip=0.5, seed=1)
    search = FederatedSearch(config(rounds=1, dp=dp, fraction=0.5, weight_rounds=(1,), weight_clip=0.2), rng_seed=1)
    search.supernet_state = {"w": np.zeros(shape, np.float32)}
    np.random.seed(1)
    before = _global_rng_state()
    result = search.run_round(fleet.send, fleet.nodes)
    assert _same_rng_state(before, _global_rng_state())
    train = result.train
    sigma = search.plan.weight_sigma
    assert train["status"] == "ok" and train["mode"] == "local"
    # what the clients were asked: clip 0.2 and their own noise multiplier 2σ
    sent = fleet.train_requests[-1]
    assert sent.clip == 0.2 and train["noise_multiplier"] == pytest.approx(2 * sigma)
    # charged at σ (replace-one: each reply has sensitivity 2·clip against noise 2σ·clip), rate 1 despite fraction 0.5
    charge = next(h for h in search.ledger.history if h["label"] == "round 1: supernet weights")
    assert charge["noise_multiplier"] == pytest.approx(sigma) and charge["sampling_rate"] == 1.0
    assert train["sampling_rate"] == 1.0 and train["charged_noise_multiplier"] == pytest.approx(sigma)
    # the server only averaged: the result is the mean of the clipped updates + noise of std 2σ·clip/√n
    asked = list(result.asked)
    clipped = []
    for n in asked:
        upd = fleet.update(n, search.supernet_state)
        new, _ = clip_update({"w": upd["w"]}, {"w": np.zeros(shape, np.float32)}, 0.2)
        clipped.append(new["w"].astype(float))
    noise = search.supernet_state["w"].astype(float) - np.mean(clipped, axis=0)
    expected = 2 * sigma * 0.2 / np.sqrt(train["answered"])
    assert train["noise_std"] == pytest.approx(expected)
    assert noise.std() == pytest.approx(expected, rel=0.05)  # 5,000 coordinates
    # the clients' raw update norms never reach the server in local mode
    assert train["mean_update_norm"] is None
    # and the ε of the run stays within the budget with the weight round included
    assert 0 < search.epsilon <= 4.0 + 1e-9
    # the budget check projects the weight round at the rate it is charged at (1), not the asked fraction
    projected = [rate for _, rate, label in search._round_charges(1, weight_rate=0.5) if "weights" in label]
    assert projected == [1.0]


def _mock_message(content: RecordDict, mtype: str) -> Message:
    msg = Mock(spec=Message)
    msg.content = content
    msg.metadata = Metadata(run_id=1, message_id="m1", src_node_id=0, dst_node_id=5, reply_to_message_id="",
                            group_id="1", created_at=time.time(), ttl=600.0, message_type=mtype)
    return msg


def _context(run_config: dict[str, Any] | None = None) -> Context:
    ctx = Mock(spec=Context)
    ctx.node_config = {"partition-id": 3, "num-partitions": 8, "hardware": "rpi4", "deadline-ms": 0.5}
    ctx.run_config = run_config or {}
    ctx.state = RecordDict()
    return ctx


def test_client_app_adds_local_noise_after_flowers_clipping() -> None:
    state = {"w": np.zeros((80, 50), np.float32), "b": np.ones(7, np.float32)}
    upd = {"w": np.full((80, 50), 0.1, np.float32), "b": np.full(7, 0.1, np.float32)}  # norm ≈ 6.3

    def trainer(s: Any, req: TrainRequest) -> TrainReply:
        return TrainReply({k: req.arrays[k] + upd[k] for k in req.arrays}, 40, 6.3)

    app = make_client_app(ClientSettings(noise_seed=11), trainer=trainer)
    content = encode_train_request(TrainRequest(SMALL_SPACE, 2, state, clip=0.5))
    content["config"][LOCAL_NOISE] = 3.0
    reply = app(_mock_message(content, TRAIN), _context())
    assert not reply.has_error()
    rep = decode_train_reply(reply.content, state, node=3)
    clipped, _ = clip_update({k: state[k] + upd[k] for k in state}, state, 0.5)  # what fixedclipping_mod sends
    noise = np.concatenate([(rep.arrays[k].astype(float) - clipped[k]).ravel() for k in state])
    assert noise.std() == pytest.approx(3.0 * 0.5, rel=0.04)  # σ_c · clip, added after the clip
    assert abs(noise.mean()) < 4 * 1.5 / np.sqrt(noise.size)
    assert rep.update_norm == 0.0  # the raw norm is withheld
    # seeded by the run config's noise seed: the same reply again, a different one in another round
    again = decode_train_reply(app(_mock_message(content, TRAIN), _context()).content, state)
    assert np.array_equal(again.arrays["w"], rep.arrays["w"])
    # without the key (central DP) the reply is only clipped, and carries the raw norm
    plain = encode_train_request(TrainRequest(SMALL_SPACE, 2, state, clip=0.5))
    rep = decode_train_reply(app(_mock_message(plain, TRAIN), _context()).content, state)
    assert all(np.allclose(rep.arrays[k], clipped[k], atol=1e-6) for k in state) and rep.update_norm == 6.3


# ---- the weights file, resume ---------------------------------------------------------------------
def test_weights_npz_roundtrip_and_refusals(tmp_path: Path) -> None:
    arrays = {"a.weight": np.arange(12, dtype=np.float32).reshape(3, 4), "bn.num_batches_tracked": np.array(7)}
    w = SupernetWeights(arrays, alignment=4, train_config={"space": "mnist", "seed": 3})
    digest = save_weights(tmp_path / "w.npz", w)
    got = read_weights(tmp_path / "w.npz", expect_digest=digest)
    assert list(got.arrays) == list(arrays) and got.alignment == 4 and got.train_config == {"space": "mnist", "seed": 3}
    assert all(np.array_equal(got.arrays[k], v) and got.arrays[k].dtype == v.dtype for k, v in arrays.items())
    with np.load(tmp_path / "w.npz", allow_pickle=False) as data:  # readable without pickle
        assert len(data.files) == 3
    with pytest.raises(WeightsError, match="run state expects"):
        read_weights(tmp_path / "w.npz", expect_digest="0" * 64)
    np.savez(tmp_path / "plain.npz", x=np.zeros(3))
    with pytest.raises(WeightsError, match=r"not a fleetnas\.supernet-weights/1 file"):
        read_weights(tmp_path / "plain.npz")
    with pytest.raises(WeightsError, match="file not found"):
        read_weights(tmp_path / "missing.npz")


def test_state_resumes_the_global_weights_and_refuses_a_mismatched_file(fleet: Fleet, tmp_path: Path,
                                                                       server_task) -> None:
    cfg = config(rounds=3, weight_rounds=(1, 3))
    initial = SupernetWeights({"w": np.zeros((3, 2), np.float32), "n": np.array(1, np.int64)}, 4)
    first = FederatedSearch(cfg, out_dir=tmp_path)
    assert first.attach_supernet(initial) is True
    first.run_round(fleet.send, fleet.nodes)  # round 1: a weight round
    first.run_round(fleet.send, fleet.nodes)
    assert not np.allclose(first.supernet_state["w"], 0.0)
    saved = json.loads((tmp_path / STATE_FILE).read_text())["supernet"]
    assert saved["sha256"] == first.global_supernet().digest and (tmp_path / saved["file"]).is_file()
    assert len(list(tmp_path.glob("supernet_*.npz"))) == 1  # superseded files are removed

    resumed = FederatedSearch(cfg, out_dir=tmp_path, resume=True)
    assert resumed.attach_supernet(initial) is False  # the initial weights do not replace the resumed ones
    assert np.array_equal(resumed.supernet_state["w"], first.supernet_state["w"])
    assert resumed.supernet_state["n"] == 1 and resumed.supernet_alignment == 4
    summary = resumed.run(fleet.send, lambda: fleet.nodes)
    assert [r["round"] for r in summary["weights"]["rounds"]] == [1, 3]
    assert all(r["status"] == "ok" for r in summary["weights"]["rounds"])

    # a file swapped for other weights under the recorded name is refused, naming the field
    saved = json.loads((tmp_path / STATE_FILE).read_text())["supernet"]
    other = SupernetWeights({"w": np.ones((3, 2), np.float32), "n": np.array(1, np.int64)}, 4)
    save_weights(tmp_path / saved["file"], other)
    with pytest.raises(FederationConfigError, match=r"field 'supernet'.*run state expects"):
        FederatedSearch(cfg, out_dir=tmp_path, resume=True)


# ---- supernet accuracy rounds use the updated global weights ---------------------------------------
def test_supernet_score_requests_carry_the_updated_global_weights(fleet: Fleet, server_task) -> None:
    search = FederatedSearch(config(rounds=2, weight_rounds=(1,)))
    search.attach_supernet(SupernetWeights({"w": np.zeros((3, 2), np.float32)}, 8))
    initial = search.global_supernet().digest
    search.run_round(fleet.send, fleet.nodes)  # round 1 ends with a weight round
    updated = search.global_supernet()
    assert updated.digest != initial

    sent: list[Message] = []
    grid = Mock()
    grid.send_and_receive = lambda messages, timeout: sent.extend(messages) or []
    send = grid_send(grid, search.space, search.global_supernet)
    pool = search.last_pool
    out = send(SCORE, {101: ScoreRequest(SMALL_SPACE, 2, pool, "supernet"),
                       102: ScoreRequest(SMALL_SPACE, 2, pool, "predictor")}, 1.0)
    assert all(isinstance(v, Failure) for v in out.values())  # nobody answered (the mock grid)
    by_node = {int(m.metadata.dst_node_id): m for m in sent}
    carried = read_supernet(by_node[101].content, node=101)
    assert carried is not None and carried.digest == updated.digest
    assert np.array_equal(carried.arrays["w"], search.supernet_state["w"])
    assert SUPERNET_RECORD not in by_node[102].content  # predictor rounds carry no weights

    # the client refuses weights damaged in transit (a protocol error reply, not a wrong score)
    content = attach_supernet(encode_score_request(ScoreRequest(SMALL_SPACE, 2, pool, "supernet")), updated)
    content[SUPERNET_RECORD] = attach_supernet(RecordDict(), SupernetWeights({"w": np.ones((3, 2), np.float32)}))[
        SUPERNET_RECORD]
    with pytest.raises(WeightsError, match="damaged in transit"):
        read_supernet(content)
    app = make_client_app(ClientSettings())
    reply = app(_mock_message(content, SCORE), _context())
    assert reply.has_error() and "damaged in transit" in reply.error.reason


def test_weight_rounds_need_initial_weights_in_the_server_app(tmp_path: Path) -> None:
    from federation.server_app import prepare_supernet

    search = FederatedSearch(config(rounds=2, weight_rounds=(2,)))
    with pytest.raises(FederationConfigError, match="'supernet-weights' is needed"):
        prepare_supernet(search, None)
    with pytest.raises(FederationConfigError, match=r"key 'supernet-weights'.*not found"):
        prepare_supernet(search, tmp_path / "nowhere")
    search = FederatedSearch(config(rounds=2))  # no weight rounds, predictor source: nothing to attach
    prepare_supernet(search, None)
    assert search.supernet_state is None

