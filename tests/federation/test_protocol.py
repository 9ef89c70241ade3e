"""The wire format: every request/reply survives encode → decode, and malformed replies name node and field."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from federation.protocol import (
    CLIPPING_NORM,
    PROPOSE,
    SCORE,
    TRAIN,
    ProposeReply,
    ProposeRequest,
    ProtocolError,
    ScoreReply,
    ScoreRequest,
    TrainReply,
    TrainRequest,
    decode_codes,
    decode_propose_reply,
    decode_propose_request,
    decode_score_reply,
    decode_score_request,
    decode_space,
    decode_train_reply,
    decode_train_request,
    encode_codes,
    encode_propose_reply,
    encode_propose_request,
    encode_score_reply,
    encode_score_request,
    encode_space,
    encode_train_reply,
    encode_train_request,
    federated_arrays,
)
from search.space.mobilenetv3 import MobileNetV3Config, MobileNetV3Space
from tests.federation.conftest import SMALL_SPACE


def test_message_types_follow_flower_naming() -> None:
    assert (PROPOSE, SCORE, TRAIN) == ("query.propose", "query.score", "train")


def test_space_round_trips_and_bad_space_names_the_field() -> None:
    for cfg in (SMALL_SPACE, MobileNetV3Config(), MobileNetV3Config.preset("mnist")):
        assert decode_space(encode_space(cfg)) == cfg
    with pytest.raises(ProtocolError, match="node 7: field 'space'"):
        decode_space(json.dumps({"kernels": [4]}), node=7)
    with pytest.raises(ProtocolError, match="node 7: field 'space'"):
        decode_space(3, node=7)


def test_codes_round_trip_canonicalised(space: MobileNetV3Space) -> None:
    codes = space.sample(5, np.random.default_rng(0))
    raw = codes.copy()
    # non-canonical genes (kernel of an inactive slot) come back canonical
    inactive = ~space.active_slots(raw).reshape(5, -1)
    raw[:, space.kernel_offset : space.kernel_offset + inactive.shape[1]][inactive] = 1
    back = decode_codes(encode_codes(raw), space)
    assert np.array_equal(back, codes)
    assert decode_codes("[]", space).shape == (0, space.encoding_length)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not json", "not valid JSON"),
        ('[[1, 2]]', "genes"),
        ('[["a"]]', "lists of integers"),
        ("[[true]]", "lists of integers"),
        (json.dumps([[9] * 20]), "allowed 0"),
    ],
)
def test_bad_codes_name_node_and_field(space: MobileNetV3Space, text: str, match: str) -> None:
    if "genes" in match or "allowed" in match:
        L = space.encoding_length
        text = json.dumps([[9] * L]) if "allowed" in match else text
    with pytest.raises(ProtocolError, match=rf"node 3: field 'codes': .*{match}"):
        decode_codes(text, space, node=3)


def test_propose_request_round_trip(space: MobileNetV3Space) -> None:
    fronts = {"rpi4": space.sample(3, np.random.default_rng(1)), "orin_nx": np.zeros((0, space.encoding_length))}
    req = ProposeRequest(SMALL_SPACE, 2, 150, 4, "predictor", fronts, seed=9)
    back = decode_propose_request(encode_propose_request(req))
    assert (back.space, back.round, back.budget, back.top_k, back.source, back.seed) == (SMALL_SPACE, 2, 150, 4,
                                                                                          "predictor", 9)
    assert set(back.fronts) == {"rpi4", "orin_nx"}
    assert np.array_equal(back.fronts["rpi4"], fronts["rpi4"])
    assert back.fronts["orin_nx"].shape == (0, space.encoding_length)


def test_propose_request_rejects_unknown_source(space: MobileNetV3Space) -> None:
    content = encode_propose_request(ProposeRequest(SMALL_SPACE, 1, 100, 2))
    content["config"]["source"] = "oracle"
    with pytest.raises(ProtocolError, match="field 'source': 'oracle'; allowed: predictor, supernet"):
        decode_propose_request(content)


def test_propose_reply_round_trip_and_validation(space: MobileNetV3Space) -> None:
    codes = space.sample(3, np.random.default_rng(2))
    rep = ProposeReply(codes, np.array([91.0, 90.0, 85.5]), np.array([0.3, 0.2, 0.1]), 123, "rpi4", 0.35)
    back = decode_propose_reply(encode_propose_reply(rep), space, node=5)
    assert np.array_equal(back.codes, codes)
    assert np.allclose(back.accuracy, rep.accuracy) and np.allclose(back.latency_ms, rep.latency_ms)
    assert (back.n_examples, back.tier, back.deadline_ms) == (123, "rpi4", 0.35)

    content = encode_propose_reply(rep)
    content["metrics"]["accuracy"] = [91.0, 90.0]  # one short
    with pytest.raises(ProtocolError, match="node 5: field 'accuracy': need 3 numbers"):
        decode_propose_reply(content, space, node=5)
    content = encode_propose_reply(rep)
    content["metrics"]["accuracy"] = [91.0, 90.0, 140.0]
    with pytest.raises(ProtocolError, match="node 5: field 'accuracy': values must be finite and within"):
        decode_propose_reply(content, space, node=5)
    content = encode_propose_reply(rep)
    del content["metrics"]["num-examples"]
    with pytest.raises(ProtocolError, match="node 5: field 'num-examples' is missing"):
        decode_propose_reply(content, space, node=5)
    with pytest.raises(ProtocolError, match="node 5: record 'metrics' is missing"):
        decode_propose_reply(RecordDict({"config": content["config"]}), space, node=5)
    bad = RecordDict({"config": MetricRecord({"x": 1}), "metrics": content["metrics"]})
    with pytest.raises(ProtocolError, match="record 'config': need a ConfigRecord"):
        decode_propose_reply(bad, space, node=5)


def test_score_request_and_reply(space: MobileNetV3Space) -> None:
    pool = space.sample(6, np.random.default_rng(4))
    req = ScoreRequest(SMALL_SPACE, 3, pool, dp_mode="local", clip=0.5, noise_multiplier=2.0, weight=0.7, seed=1)
    back = decode_score_request(encode_score_request(req))
    assert np.array_equal(back.pool, pool)
    assert (back.dp_mode, back.clip, back.noise_multiplier, back.weight, back.centre) == ("local", 0.5, 2.0, 0.7, True)
    assert back.reply_width == 6 + 2  # the local mechanism adds the offset and count coordinates
    assert ScoreRequest(SMALL_SPACE, 3, pool).reply_width == 6

    rep = ScoreReply(np.linspace(0, 1, 6), 40, "orin_nx")
    got = decode_score_reply(encode_score_reply(rep), 6, node=2)
    assert np.allclose(got.scores, rep.scores) and got.n_examples == 40 and got.tier == "orin_nx"
    with pytest.raises(ProtocolError, match="node 2: field 'scores': need 7 numbers"):
        decode_score_reply(encode_score_reply(rep), 7, node=2)
    over = ScoreReply(np.array([0.5, 1.5, 0, 0, 0, 0]), 40, "orin_nx")
    with pytest.raises(ProtocolError, match=r"node 2: field 'scores': values must be finite and within \[0.0, 1.0\]"):
        decode_score_reply(encode_score_reply(over), 6, node=2)
    # a locally randomised row may leave [0, 1], but only when the round asked for one
    noisy = ScoreReply(np.array([-0.3, 1.7, 0, 0, 0, 0, 0.1, 0.2]), 40, "orin_nx", randomized=True)
    assert decode_score_reply(encode_score_reply(noisy), 8, node=2, randomized=True).randomized
    with pytest.raises(ProtocolError, match="field 'randomized'"):
        decode_score_reply(encode_score_reply(noisy), 8, node=2, randomized=False)


def test_train_round_trip_and_shape_check() -> None:
    state = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "bn.num_batches": np.array(3, dtype=np.int64)}
    req = TrainRequest(SMALL_SPACE, 2, state, steps=3, lr=0.01, clip=0.5, seed=4)
    content = encode_train_request(req)
    # the clip travels under the key Flower's DP wrapper writes and its fixedclipping_mod reads
    assert CLIPPING_NORM == "clipping_norm" and content["config"][CLIPPING_NORM] == 0.5
    assert len(content.array_records) == 1 and len(content.config_records) == 1  # what fixedclipping_mod needs
    back = decode_train_request(content)
    assert back.space == SMALL_SPACE and back.steps == 3 and back.clip == 0.5
    assert decode_train_request(encode_train_request(TrainRequest(SMALL_SPACE, 1, state))).clip == np.inf
    bad = encode_train_request(req)
    bad["config"][CLIPPING_NORM] = 0.0
    with pytest.raises(ProtocolError, match="node 4: field 'clipping_norm': need a number > 0"):
        decode_train_request(bad, node=4)
    assert list(federated_arrays(state)) == ["a.weight"]  # integer BatchNorm counters are not federated
    bn = {"bn.weight": np.ones(2, np.float32), "bn.running_mean": np.zeros(2, np.float32),
          "bn.running_var": np.ones(2, np.float32), "bn.bias": np.zeros(2, np.float32)}
    assert list(federated_arrays(bn)) == ["bn.weight", "bn.bias"]  # statistics are recalibrated, not federated
    assert np.array_equal(back.arrays["a.weight"], state["a.weight"])
    assert int(back.arrays["bn.num_batches"]) == 3

    rep = TrainReply({k: v + 1 for k, v in state.items()}, 50, 0.25)
    got = decode_train_reply(encode_train_reply(rep), state, node=8)
    assert got.n_examples == 50 and got.update_norm == 0.25
    assert np.array_equal(got.arrays["a.weight"], state["a.weight"] + 1)
    wrong = TrainReply({"a.weight": np.zeros((3, 2), np.float32), "bn.num_batches": state["bn.num_batches"]}, 5)
    with pytest.raises(ProtocolError, match=r"node 8: array 'a.weight': shape \(3, 2\), expected \(2, 3\)"):
        decode_train_reply(encode_train_reply(wrong), state, node=8)
    nan = TrainReply({"a.weight": np.full((2, 3), np.nan, np.float32), "bn.num_batches": state["bn.num_batches"]}, 5)
    with pytest.raises(ProtocolError, match="NaN"):
        decode_train_reply(encode_train_reply(nan), state, node=8)
    missing = RecordDict({"arrays": encode_train_reply(rep)["arrays"], "metrics": MetricRecord({"update-norm": 0.1})})
    with pytest.raises(ProtocolError, match="field 'num-examples' is missing"):
        decode_train_reply(missing, state, node=8)


def test_records_are_flat_flower_records(space: MobileNetV3Space) -> None:
    content = encode_propose_request(ProposeRequest(SMALL_SPACE, 1, 100, 2, fronts={"rpi4": space.sample(2,
                                                    np.random.default_rng(0))}))
    assert isinstance(content["config"], ConfigRecord)
    assert all(isinstance(v, str | int | float | bool) for v in content["config"].values())
    assert MobileNetV3Space(decode_space(content["config"]["space"])).size() == space.size()
