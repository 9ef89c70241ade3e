"""Client-side functions: local search, top-K selection, scoring, update clipping and fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest

from federation.client import (
    ClientError,
    client_seed,
    clip_update,
    label_histogram,
    local_search,
    predictor_accuracy,
    score_candidates,
    select_top_k,
)
from tests.federation.conftest import fake_accuracy, synthetic_class_accuracy


def test_client_seed_is_stable_and_distinct() -> None:
    assert client_seed(3, 1, 0) == client_seed(3, 1, 0)
    seeds = {client_seed(n, r, 0) for n in range(20) for r in range(5)}
    assert len(seeds) == 100
    assert client_seed(3, 1, 0) != client_seed(3, 1, 1)


def test_label_histogram() -> None:
    h = label_histogram(np.array([0, 0, 1, 3]), 4)
    assert np.allclose(h, [0.5, 0.25, 0.0, 0.25])
    assert np.allclose(label_histogram(np.array([], dtype=int), 4), 0.25)
    with pytest.raises(ClientError, match=r"0\.\.3"):
        label_histogram(np.array([4]), 4)


def test_select_top_k_starts_with_the_most_accurate_and_spreads_the_front() -> None:
    acc = np.array([90, 95, 80, 93, 99, 70, 85])
    lat = np.array([1.0, 2.0, 0.5, 1.5, 5.0, 0.1, 0.9])
    feasible = np.array([True, True, True, True, False, True, True])  # the 99 % one misses the deadline
    pick = select_top_k(acc, lat, feasible, 3)
    assert pick[0] == 1  # 95 %: the best feasible
    assert 5 in pick  # the fastest end of the front is kept
    assert len(set(pick.tolist())) == 3 and feasible[pick].all()
    # fewer front members than k: topped up with the next most accurate feasible rows
    pick = select_top_k(np.array([90, 89, 88]), np.array([1.0, 1.1, 1.2]), np.ones(3, bool), 3)
    assert pick.tolist() == [0, 1, 2]
    assert select_top_k(acc, lat, np.zeros(7, bool), 3).size == 0


def test_local_search_respects_the_deadline_and_finds_a_good_front(space, tables, deadlines) -> None:
    acc = fake_accuracy(space, np.full(10, 0.1))
    table, deadline = tables["rpi4"], deadlines["rpi4"]
    res = local_search(space, acc, table, deadline, budget=200, top_k=5, seed=1)
    assert 1 <= len(res.codes) <= 5 and res.n_evals == 200
    assert np.all(res.latency_ms <= deadline)
    assert np.allclose(table.evaluate(res.codes)["latency_ms"], res.latency_ms)
    assert np.allclose(acc(res.codes)["accuracy"], res.accuracy)
    # the best proposal is (near) the best feasible arch of the whole space (8,000: enumerate it)
    allc = np.concatenate(list(space.enumerate()))
    ok = table.evaluate(allc)["latency_ms"] <= deadline
    best = acc(allc[ok])["accuracy"].max()
    assert res.accuracy[0] >= best - 0.5
    # proposals are mutually non-dominated or top-ups; all distinct
    assert len(np.unique(res.codes, axis=0)) == len(res.codes)
    # same seed, same answer (a client's reply is reproducible)
    again = local_search(space, acc, table, deadline, budget=200, top_k=5, seed=1)
    assert np.array_equal(again.codes, res.codes)


def test_local_search_uses_the_initial_population(space, tables, deadlines) -> None:
    acc = fake_accuracy(space, np.full(10, 0.1))
    table, deadline = tables["rk3399_big"], deadlines["rk3399_big"]
    allc = np.concatenate(list(space.enumerate()))
    ok = allc[table.evaluate(allc)["latency_ms"] <= deadline]
    top = ok[np.argmax(acc(ok)["accuracy"])]
    # with the optimum in the seed population, a tiny budget still returns it first
    res = local_search(space, acc, table, deadline, budget=12, top_k=3, seed=5, initial=top[None, :])
    assert np.array_equal(res.codes[0], top)


def test_local_search_rejects_bad_options(space, tables) -> None:
    acc = fake_accuracy(space, np.full(10, 0.1))
    with pytest.raises(ClientError, match="field 'budget'"):
        local_search(space, acc, tables["rpi4"], 1.0, budget=2, top_k=3, seed=0)
    with pytest.raises(ClientError, match="field 'top-k'"):
        local_search(space, acc, tables["rpi4"], 1.0, budget=20, top_k=0, seed=0)
    with pytest.raises(ClientError, match="field 'deadline-ms'"):
        local_search(space, acc, tables["rpi4"], 0.0, budget=20, top_k=2, seed=0)


def test_score_candidates_is_accuracy_over_100_and_zero_past_the_deadline(space, tables, deadlines) -> None:
    codes = space.sample(50, np.random.default_rng(7))
    acc = fake_accuracy(space, np.eye(10)[3])
    s = score_candidates(codes, acc, tables["orin_nx"], deadlines["orin_nx"])
    lat = tables["orin_nx"].evaluate(codes)["latency_ms"]
    late = lat > deadlines["orin_nx"]
    assert late.any() and (~late).any()
    assert np.all(s[late] == 0)
    assert np.allclose(s[~late], acc(codes[~late])["accuracy"] / 100)
    assert np.all((s >= 0) & (s <= 1))
    assert score_candidates(codes[:0], acc, tables["orin_nx"], 1.0).shape == (0,)


def test_predictor_accuracy_mixes_per_class_predictions(space, class_predictor) -> None:
    codes = space.sample(20, np.random.default_rng(8))
    per_class = class_predictor.predict(codes)
    assert per_class.shape == (20, 10)
    p = np.zeros(10)
    p[[2, 7]] = [0.25, 0.75]
    got = predictor_accuracy(class_predictor, p)(codes)["accuracy"]
    assert np.allclose(got, per_class @ p)
    # the fitted test predictor tracks its synthetic target well enough to rank archs
    target = synthetic_class_accuracy(space, codes) @ p
    assert np.corrcoef(got, target)[0, 1] > 0.9
    with pytest.raises(ClientError, match="class_weights"):
        predictor_accuracy(class_predictor, np.full(10, 0.2))


def test_clip_update_bounds_the_update_norm() -> None:
    old = {"w": np.zeros(4, np.float32), "b": np.ones(2, np.float32), "n": np.array(5, np.int64)}
    new = {"w": np.array([3, 0, 0, 0], np.float32), "b": np.array([1, 5], np.float32), "n": np.array(9, np.int64)}
    out, norm = clip_update(new, old, clip=1.0)
    assert norm == pytest.approx(5.0)
    delta = np.concatenate([out["w"] - old["w"], out["b"] - old["b"]])
    assert np.linalg.norm(delta) == pytest.approx(1.0, rel=1e-6)
    assert np.allclose(delta, np.array([3, 0, 0, 0, 0, 4]) / 5.0)  # direction kept
    assert int(out["n"]) == 9 and out["w"].dtype == np.float32
    unclipped, _ = clip_update(new, old, clip=0.0)
    assert np.array_equal(unclipped["w"], new["w"]) and np.array_equal(unclipped["b"], new["b"])
    assert np.array_equal(clip_update(new, old, clip=np.inf)[0]["w"], new["w"])
    small, norm = clip_update(new, old, clip=10.0)
    assert np.array_equal(small["b"], new["b"])
    same, norm = clip_update(old, old, clip=1.0)  # a zero update: Flower's clipping would divide by 0
    assert norm == 0.0 and np.array_equal(same["w"], old["w"])
    # the same clipping as Flower's fixedclipping_mod applies (compute_clip_model_update)
    from flwr.supercore.differential_privacy import compute_clip_model_update

    params = [new["w"].copy(), new["b"].copy()]
    compute_clip_model_update(params, [old["w"], old["b"]], 1.0)
    assert np.allclose(out["w"], params[0]) and np.allclose(out["b"], params[1])


@pytest.mark.slow
def test_fine_tune_and_supernet_accuracy_on_a_local_partition(space) -> None:
    import torch

    from federation.client import fine_tune, supernet_accuracy
    from search.data import load_mnist5k
    from search.supernet.model import MobileNetV3Supernet

    torch.manual_seed(0)
    net = MobileNetV3Supernet(space, 8)
    state = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    data = load_mnist5k().take(np.arange(0, 5000, 50))  # 100 digits: a small device's partition
    new, norm = fine_tune(state, space, data, steps=2, lr=0.01, clip=0.5, seed=1)
    assert list(new) == list(state) and all(new[k].shape == state[k].shape for k in state)
    # the federated form: only the floating arrays (BatchNorm counters stay with the server), same keys back
    from federation.protocol import federated_arrays

    floats_only, norm2 = fine_tune(federated_arrays(state), space, data, steps=2, lr=0.01, clip=0.0, seed=1)
    assert list(floats_only) == list(federated_arrays(state)) and norm2 > 0.5
    floats = [k for k in state if np.issubdtype(state[k].dtype, np.floating)]
    delta = np.sqrt(sum(float(np.sum((new[k].astype(float) - state[k]) ** 2)) for k in floats))
    assert norm > 0.5 and delta == pytest.approx(0.5, rel=1e-3)  # the update was clipped to 0.5
    # the supernet path: accuracy (%) of subnets on the device's own held-out digits
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in new.items()})
    acc = supernet_accuracy(net, space, data, seed=0)(space.sample(2, np.random.default_rng(0)))["accuracy"]
    assert acc.shape == (2,) and np.all((acc >= 0) & (acc <= 100))
