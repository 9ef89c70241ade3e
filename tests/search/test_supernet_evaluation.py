"""SupernetEvaluator: cached, counted, deterministic supernet-inherited accuracy with BN recalibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from search.data import Dataset, batches, load_dataset, split
from search.problem import Objective, SpaceProblem
from search.space import MobileNetV3Space, load_space
from search.supernet import MobileNetV3Supernet, resize_input
from search.supernet.evaluation import SupernetEvalError, SupernetEvaluator


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def space() -> MobileNetV3Space:
    return load_space("mnist")  # type: ignore[return-value]


@pytest.fixture(scope="module")
def data() -> tuple[Dataset, Dataset]:
    train, val, _ = split(load_dataset("digits"), seed=0)
    return train, val.take(np.arange(96))


@pytest.fixture(scope="module")
def supernet(space: MobileNetV3Space, data: tuple[Dataset, Dataset]) -> MobileNetV3Supernet:
    """A briefly trained supernet (smallest subnet, 25 Adam steps): enough for BN statistics to matter."""
    torch.manual_seed(0)
    net = MobileNetV3Supernet(space)
    net.set_active(net.min_arch())
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for i, (x, y) in enumerate(batches(data[0], 32, seed=0)):
        if i == 25:
            break
        loss = F.cross_entropy(net(resize_input(torch.from_numpy(x), 28)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return net


def _codes(space: MobileNetV3Space, net: MobileNetV3Supernet) -> np.ndarray:
    small = space.encode(net.min_arch())
    other = space.canonicalise(space.sample(6, np.random.default_rng(3)))
    # keep the subnets small so the test is fast: depth option 0 in every stage
    other[:, space.depth_offset : space.kernel_offset] = 0
    return space.canonicalise(np.vstack([small, other[:2]]))


def _evaluator(net, space, data, **kw) -> SupernetEvaluator:
    return SupernetEvaluator(net, space, data[0], data[1], recalibration_images=64, batch_size=32, **kw)


def test_cache_dedup_and_counts(supernet, space, data) -> None:
    ev = _evaluator(supernet, space, data)
    codes = _codes(space, supernet)
    first = ev(np.vstack([codes, codes[:1]]))["accuracy"]  # a repeat inside one call
    assert first.shape == (4,) and first[0] == first[3]
    assert np.all((first >= 0) & (first <= 100))
    assert ev.n_evaluations == 3 and ev.cache_size == 3 and ev.n_queries == 4
    # an inactive slot's gene differs, the arch is the same: still a cache hit
    twin = codes[:1].copy()
    twin[0, space.kernel_offset + space.max_depth - 1] = 2
    again = ev(np.vstack([codes[::-1], twin]))["accuracy"]
    assert ev.n_evaluations == 3  # nothing new evaluated
    assert np.array_equal(again, np.r_[first[:3][::-1], first[0]])


def test_deterministic_and_uncached(supernet, space, data) -> None:
    codes = _codes(space, supernet)[:2]
    a = _evaluator(supernet, space, data, cache=False)
    first = a(codes)["accuracy"]
    second = a(codes)["accuracy"]
    assert a.n_evaluations == 4 and a.cache_size == 0
    assert np.array_equal(first, second)
    assert np.array_equal(_evaluator(supernet, space, data)(codes)["accuracy"], first)


def test_recalibration_matters_and_leaves_the_supernet_alone(supernet, space, data) -> None:
    codes = _codes(space, supernet)
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    recal = _evaluator(supernet, space, data)(codes)["accuracy"]
    inherited = _evaluator(supernet, space, data, recalibrate=False)(codes)["accuracy"]
    assert not np.array_equal(recal, inherited)
    # the supernet's own (inherited) statistics were accumulated in train mode over other inputs;
    # recalibrated subnets must do better on average
    assert recal.mean() > inherited.mean()
    after = supernet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_is_a_space_problem_evaluator(supernet, space, data) -> None:
    ev = _evaluator(supernet, space, data)
    problem = SpaceProblem(space, [ev], [Objective("accuracy", "max")])
    out = problem.metrics(_codes(space, supernet)[:1])
    assert set(out) >= {"accuracy"}


def test_rejects_mismatched_data(supernet, space, data) -> None:
    rgb = Dataset(
        "rgb", np.zeros((2, 3, 8, 8), np.float32), np.zeros(2, np.int64), ("a",), "test", (0.0,) * 3, (1.0,) * 3
    )
    with pytest.raises(SupernetEvalError, match=r"field 'val'.*3 channels"):
        SupernetEvaluator(supernet, space, data[0], rgb)
    with pytest.raises(SupernetEvalError, match="recalibration_images"):
        SupernetEvaluator(supernet, space, data[0], data[1], recalibration_images=0)


def test_expected_score_is_the_mean_true_label_probability(supernet, space, data) -> None:
    codes = _codes(space, supernet)
    top1 = _evaluator(supernet, space, data)
    soft = _evaluator(supernet, space, data, score="expected", per_class=True)
    got = soft(codes)
    x = torch.from_numpy(np.array(data[1].x, dtype=np.float32))
    y = torch.from_numpy(np.array(data[1].y, dtype=np.int64))
    for i, code in enumerate(codes):
        arch = space.decode(code)
        with torch.no_grad():
            prob = top1.subnet(arch)(resize_input(x, int(arch["resolution"]))).double().softmax(dim=1)
        p_true = prob[torch.arange(len(y)), y].numpy()
        assert got["accuracy"][i] == pytest.approx(100.0 * p_true.mean(), abs=1e-9)
        for c in range(int(y.max()) + 1):
            assert got["class_accuracy"][i, c] == pytest.approx(100.0 * p_true[y.numpy() == c].mean(), abs=1e-9)
        # the same pass gives top-1 as the default evaluator reports it
        scores = soft.scores_of(soft.subnet(arch), int(arch["resolution"]))
        assert scores.top1 == top1(code[None])["accuracy"][0]
        assert scores.top1 == pytest.approx(100.0 * float((prob.argmax(1) == y).double().mean()), abs=1e-9)
        assert scores.expected == got["accuracy"][i]
    assert np.all((got["accuracy"] > 0.0) & (got["accuracy"] < 100.0))


def test_rejects_unknown_score(supernet, space, data) -> None:
    with pytest.raises(SupernetEvalError, match=r"field 'score': 'soft'; allowed: top1, expected"):
        _evaluator(supernet, space, data, score="soft")


def test_ensemble_averages_its_members(supernet, space, data) -> None:
    from search.supernet.evaluation import SupernetEnsembleEvaluator

    codes = _codes(space, supernet)
    other = MobileNetV3Supernet(space)  # an untrained member: different weights, same space
    other.eval()
    members = [
        _evaluator(supernet, space, data, score="expected", per_class=True),
        _evaluator(other, space, data, score="expected", per_class=True),
    ]
    ens = SupernetEnsembleEvaluator(members)
    got = ens(codes)
    alone = [m(codes) for m in members]
    assert not np.allclose(alone[0]["accuracy"], alone[1]["accuracy"])
    for key in ("accuracy", "class_accuracy"):
        np.testing.assert_allclose(got[key], (alone[0][key] + alone[1][key]) / 2)
    per_member = ens.member_scores(space.decode(codes[0]))
    assert [m.expected for m in per_member] == [a["accuracy"][0] for a in alone]
    problem = SpaceProblem(space, [ens], [Objective("accuracy", "max")])
    assert problem.metrics(codes[:1])["accuracy"].shape == (1,)


def test_ensemble_rejects_members_that_do_not_match(supernet, space, data) -> None:
    from search.supernet.evaluation import SupernetEnsembleEvaluator

    with pytest.raises(SupernetEvalError, match="field 'members': need at least one"):
        SupernetEnsembleEvaluator([])
    top1 = _evaluator(supernet, space, data)
    with pytest.raises(SupernetEvalError, match=r"field 'members\[1\].score': 'expected', member 0 has 'top1'"):
        SupernetEnsembleEvaluator([top1, _evaluator(supernet, space, data, score="expected")])
    shifted = SupernetEvaluator(supernet, space, data[0], data[1].take(np.arange(95, -1, -1)), recalibration_images=64)
    with pytest.raises(SupernetEvalError, match=r"members\[1\]'.*same data split"):
        SupernetEnsembleEvaluator([top1, shifted])
