"""The round logic without Flower: a fake ``send`` plays the clients (with failures and timeouts)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from federation.accounting import PrivacyLedger
from federation.aggregate import ClientScores, centralised_choice
from federation.client import clip_update, local_search, score_candidates
from federation.dp import DPConfig, calibrate_noise_multiplier, noise_rng, rdp_delta
from federation.protocol import (
    PROPOSE,
    SCORE,
    TRAIN,
    ProposeReply,
    ScoreReply,
    TrainReply,
    TrainRequest,
    decode_train_request,
)
from federation.server import (
    Failure,
    FederatedSearch,
    FederationConfig,
    FederationConfigError,
    dp_fedavg_round,
    plan_noise,
    pool_sizes,
    releases_per_round,
    round_clip,
    survivors,
)
from tests.federation.conftest import SMALL_SPACE, TIERS, fake_accuracy


class Fleet:
    """Fake clients: each with a tier, a label mix and a data size; some fail on purpose."""

    def __init__(self, space, tables, deadlines, n: int = 9, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.space, self.tables, self.deadlines = space, tables, deadlines
        self.nodes = list(range(100, 100 + n))
        self.tier = {node: TIERS[i % len(TIERS)] for i, node in enumerate(self.nodes)}
        self.mix = {node: rng.dirichlet(np.full(10, 0.5)) for node in self.nodes}
        self.size = {node: int(rng.integers(20, 200)) for node in self.nodes}
        self.down: dict[str, set[int]] = {PROPOSE: set(), SCORE: set(), TRAIN: set()}
        self.silent: set[int] = set()  # never reply: a timeout
        self.calls: list[tuple[str, list[int]]] = []
        self.scores: dict[int, np.ndarray] = {}
        self.train_requests: list[TrainRequest] = []
        self.unclipped: set[int] = set()  # skip clipping: a client breaking the DP contract

    def send(self, mtype: str, requests: Mapping[int, Any], timeout: float | None) -> dict[int, Any]:
        self.calls.append((mtype, sorted(requests)))
        out: dict[int, Any] = {}
        for node, req in requests.items():
            if node in self.silent:
                continue
            if node in self.down[mtype]:
                out[node] = Failure(node, "error 1001: battery below the floor")
                continue
            tier = self.tier[node]
            acc = fake_accuracy(self.space, self.mix[node])
            if mtype == PROPOSE:
                p = local_search(self.space, acc, self.tables[tier], self.deadlines[tier], req.budget, req.top_k,
                                 node + req.round)
                out[node] = ProposeReply(p.codes, p.accuracy, p.latency_ms, self.size[node], tier,
                                         self.deadlines[tier])
            elif mtype == SCORE:
                s = score_candidates(req.pool, acc, self.tables[tier], self.deadlines[tier])
                self.scores[node] = s
                out[node] = ScoreReply(s, self.size[node], tier)
            elif mtype == TRAIN:  # the client side of Flower's fixed clipping (what fixedclipping_mod does)
                treq = decode_train_request(req, node=node)
                self.train_requests.append(treq)
                update = self.update(node, treq.arrays)
                new = {k: v + update[k] for k, v in treq.arrays.items()}
                clipped, norm = clip_update(new, treq.arrays, 0.0 if node in self.unclipped else treq.clip)
                out[node] = TrainReply(clipped, self.size[node], norm)
        return out

    def update(self, node: int, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A client's (deterministic) local update: a different direction and size per node."""
        rng = np.random.default_rng(node)
        return {k: (rng.normal(0.0, 1.0, np.shape(v)) * (node - 99)).astype(np.asarray(v).dtype)
                for k, v in arrays.items()}


@pytest.fixture
def server_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a ServerApp run sets before any Message is built (FedAvg's configure_train builds them)."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def config(**kw: Any) -> FederationConfig:
    base = {"space": SMALL_SPACE, "rounds": 3, "budget": 60, "top_k": 3, "seed_pool": 10, "dp": DPConfig(mode="off")}
    base.update(kw)
    return FederationConfig(**base)


@pytest.fixture
def fleet(space, tables, deadlines) -> Fleet:
    return Fleet(space, tables, deadlines)


def test_config_validation_names_the_field() -> None:
    with pytest.raises(FederationConfigError, match="field 'quorum'"):
        config(quorum=1.5)
    with pytest.raises(FederationConfigError, match=r"field 'source'.*allowed: predictor, supernet"):
        config(source="oracle")
    with pytest.raises(FederationConfigError, match=r"unknown field\(s\) \['bogus'\]"):
        FederationConfig.from_dict({"bogus": 1})
    cfg = FederationConfig.from_dict({"rounds": 4, "top-k": 2, "space": "mnist", "dp": {"mode": "central"}})
    assert cfg.rounds == 4 and cfg.top_k == 2 and cfg.dp.rounds == 4  # the DP rounds follow the run's
    assert FederationConfig.from_dict(cfg.to_json()) == cfg


def test_noise_off_choice_equals_the_centralised_computation(fleet: Fleet) -> None:
    search = FederatedSearch(config(rounds=1))
    result = search.run_round(fleet.send, fleet.nodes)
    assert result.status == "ok" and not result.failures
    pool = search.last_pool
    reports = [ClientScores(n, fleet.tier[n], fleet.size[n], 1.0, fleet.scores[n]) for n in fleet.nodes]
    central = centralised_choice(pool, reports)
    assert result.chosen["index"] == central
    # and equal to the weighted mean computed by hand on the union of the clients' scores
    w = np.array([fleet.size[n] for n in fleet.nodes], float)
    S = np.stack([fleet.scores[n] for n in fleet.nodes])
    assert result.chosen["score"] == pytest.approx(float((w @ S / w.sum()).max()))
    assert np.array_equal(np.asarray(result.chosen["code"]), pool[central])
    # the pool holds the public seed pool and every proposal (DP off: the plain union)
    assert result.union_size == result.proposed >= len(fleet.nodes)
    assert result.pool_size >= result.union_size


def test_round_produces_fronts_and_plans_per_tier(fleet: Fleet, tables) -> None:
    search = FederatedSearch(config(rounds=2))
    r1 = search.run_round(fleet.send, fleet.nodes)
    assert set(r1.fronts) == set(TIERS) and set(r1.plans) == set(TIERS)
    for tier, front in r1.fronts.items():
        lat = tables[tier].evaluate(np.asarray(front["codes"]))["latency_ms"]
        assert np.allclose(lat, front["latency_ms"])
        plan = r1.plans[tier]
        assert plan is not None and [m["name"] for m in plan["modes"]] == ["high", "balanced", "low"]
        assert plan["modes"][0]["metrics"]["latency_ms"] <= front["deadline_ms"]
    # round 2 sends the global fronts to the clients and re-scores them
    r2 = search.run_round(fleet.send, fleet.nodes)
    assert r2.status == "ok" and r2.chosen["score"] >= r1.chosen["score"] - 1e-12


def test_failures_below_quorum_skip_the_round_and_lower_reliability(fleet: Fleet) -> None:
    search = FederatedSearch(config(rounds=3, quorum=0.5))
    fleet.down[PROPOSE] = set(fleet.nodes[:5])  # 5 of 9 fail: 4 < quorum 5
    r1 = search.run_round(fleet.send, fleet.nodes)
    assert r1.status == "skipped" and "only 4 of 9 nodes answered propose" in r1.note
    assert all(fleet.nodes[i] in r1.failures for i in range(5))
    assert [c[0] for c in fleet.calls] == [PROPOSE]  # no score phase after a failed propose
    assert search.reliability(fleet.nodes[0]) == 0.0 and search.reliability(fleet.nodes[8]) == 0.0
    # one failure and one timeout: the round proceeds with the rest
    fleet.down[PROPOSE] = {fleet.nodes[0]}
    fleet.silent = {fleet.nodes[1]}
    r2 = search.run_round(fleet.send, fleet.nodes)
    assert r2.status == "ok"
    assert set(r2.failures) == {fleet.nodes[0], fleet.nodes[1]}
    assert "timeout" in r2.failures[fleet.nodes[1]]
    assert search.reliability(fleet.nodes[2]) == 0.5  # answered 1 of the 2 rounds it was asked in
    # a node that proposes but then fails to score is a failure of the score phase
    fleet.down[PROPOSE], fleet.silent = set(), set()
    fleet.down[SCORE] = {fleet.nodes[3]}
    r3 = search.run_round(fleet.send, fleet.nodes)
    assert r3.status == "ok" and r3.failures[fleet.nodes[3]].startswith("score:")


def test_central_dp_charges_the_ledger_and_stops_at_the_budget(fleet: Fleet, tmp_path: Path) -> None:
    dp = DPConfig(mode="central", epsilon=1.0, delta=1e-5, clip=0.5, seed=3)
    cfg = config(rounds=3, dp=dp)
    search = FederatedSearch(cfg, out_dir=tmp_path)
    assert search.plan is None  # fixed at the first round, from the number of nodes asked
    summary = search.run(fleet.send, lambda: fleet.nodes)
    # 9 clients can never push a proposal past the union's threshold: the union is skipped, not charged,
    # and the three score releases get the whole budget
    assert search.plan is not None and not search.plan.union and search.plan.clients == len(fleet.nodes)
    assert all(h["label"].endswith("scores") for h in search.ledger.history) and len(search.ledger.history) == 3
    assert all(r["union_size"] == -1 for r in summary["rounds"])
    sigma = calibrate_noise_multiplier(1.0, rdp_delta(cfg.dp), releases_per_round("central", union=False) * 3)
    assert search.noise_multiplier == pytest.approx(sigma, rel=1e-5)
    eps = [r["epsilon"] for r in summary["rounds"]]
    assert eps == sorted(eps) and eps[-1] <= 1.0 + 1e-9 and eps[-1] > 0.99
    # the ledger's ε equals dp-accounting's for the same releases
    ledger = PrivacyLedger(rdp_delta(cfg.dp))
    ledger.charge(sigma, count=3)
    assert summary["dp"]["epsilon_spent"] == pytest.approx(ledger.epsilon, rel=1e-5)
    assert summary["dp"]["delta_spent"] == pytest.approx(rdp_delta(cfg.dp))  # the skipped union spent no δ
    # a fourth round would pass the budget: a longer run stops cleanly with its result so far
    longer = FederatedSearch(replace(cfg, rounds=5, dp=replace(dp, noise_multiplier=sigma)))
    out = longer.run(fleet.send, lambda: fleet.nodes)
    assert out["stopped_by_budget"] and out["rounds_run"] == 3
    assert out["rounds"][-1]["status"] == "stopped" and "would exceed the privacy budget" in out["rounds"][-1]["note"]
    assert out["chosen"] is not None and out["dp"]["epsilon_spent"] <= 1.0 + 1e-9
    # per-round JSON and the summary are on disk
    files = sorted(p.name for p in tmp_path.iterdir())
    assert {"round_001.json", "round_002.json", "round_003.json", "summary.json", "state.json"} <= set(files)
    r2 = json.loads((tmp_path / "round_002.json").read_text())
    assert r2["status"] == "ok" and set(r2["fronts"]) == set(TIERS) and r2["epsilon"] == eps[1]


def test_local_dp_rows_are_summed(fleet: Fleet, space, tables, deadlines) -> None:
    from federation.dp import local_randomize, noise_rng

    dp = DPConfig(mode="local", epsilon=4.0, clip=1.0)
    search = FederatedSearch(config(rounds=1, dp=dp), rng_seed=0)
    rngs = {n: noise_rng(n) for n in fleet.nodes}

    def send(mtype: str, requests: Mapping[int, Any], timeout: float | None) -> dict[int, Any]:
        if mtype != SCORE:
            return fleet.send(mtype, requests, timeout)
        out = {}
        for n, req in requests.items():
            s = score_candidates(req.pool, fake_accuracy(space, fleet.mix[n]), tables[fleet.tier[n]],
                                 deadlines[fleet.tier[n]])
            cfg = DPConfig(mode="local", clip=req.clip, noise_multiplier=req.noise_multiplier)
            row = local_randomize(s, req.weight, cfg, req.noise_multiplier, rngs[n])
            assert len(row) == req.reply_width
            out[n] = ScoreReply(row, fleet.size[n], fleet.tier[n], randomized=True)
        return out

    result = search.run_round(send, fleet.nodes)
    assert result.status == "ok" and result.chosen is not None
    assert 0 < result.epsilon <= 4.0
    assert search.ledger.history[-1]["noise_multiplier"] == pytest.approx(search.noise_multiplier / 2)


def test_state_resumes_where_it_stopped(fleet: Fleet, tmp_path: Path) -> None:
    dp = DPConfig(mode="central", epsilon=2.0, seed=1)
    first = FederatedSearch(config(rounds=3, dp=dp), out_dir=tmp_path)
    first.run_round(fleet.send, fleet.nodes)
    resumed = FederatedSearch(config(rounds=3, dp=dp), out_dir=tmp_path, resume=True)
    assert resumed.round == 1 and resumed.epsilon == pytest.approx(first.epsilon)
    assert set(resumed.fronts) == set(first.fronts)
    assert all(np.array_equal(resumed.fronts[t], first.fronts[t]) for t in first.fronts)
    summary = resumed.run(fleet.send, lambda: fleet.nodes)
    assert summary["rounds_run"] == 3 and [r["round"] for r in summary["rounds"]] == [1, 2, 3]
    with pytest.raises(FederationConfigError, match="different configuration"):
        FederatedSearch(config(rounds=4, dp=dp), out_dir=tmp_path, resume=True)


def test_weight_round_noise_off_is_the_unweighted_mean_of_the_clipped_updates(fleet: Fleet, server_task) -> None:
    state = {"w": np.zeros((3, 2), np.float32), "b": np.ones(4, np.float32), "n": np.array(1, np.int64)}
    nodes = fleet.nodes[:5]
    req = TrainRequest(SMALL_SPACE, 1, state, steps=2, lr=0.1, clip=2.0, seed=0)
    out = dp_fedavg_round(fleet.send, nodes, req, 0.0, None, quorum=3)
    assert out.status == "ok" and out.answered == 5 and out.noise_std == 0.0
    # what was sent: only the floating arrays, with Flower's clipping_norm (the wrapper's) in the config
    sent = fleet.train_requests[-1]
    assert list(sent.arrays) == ["w", "b"] and sent.clip == 2.0 and sent.round == 1
    clipped = []
    for n in nodes:  # each client's update clipped to 2, then averaged with equal weights
        upd = fleet.update(n, {"w": state["w"], "b": state["b"]})
        norm = np.sqrt(sum(float(np.sum(v.astype(float) ** 2)) for v in upd.values()))
        clipped.append({k: v * min(1.0, 2.0 / norm) for k, v in upd.items()})
    assert min(np.sqrt(sum(float(np.sum(v ** 2)) for v in c.values())) for c in clipped) < 2.0  # some not clipped
    for k in ("w", "b"):
        mean = state[k] + np.mean([c[k] for c in clipped], axis=0)
        assert np.allclose(out.state[k], mean, atol=1e-5) and out.state[k].dtype == np.float32
    # not the data-size-weighted mean (the sizes differ)
    weighted = state["w"] + np.average([c["w"] for c in clipped], axis=0, weights=[fleet.size[n] for n in nodes])
    assert not np.allclose(out.state["w"], weighted, atol=1e-4)
    # a client that does not clip is dropped, not averaged
    fleet.unclipped = {nodes[0]}
    out = dp_fedavg_round(fleet.send, nodes, req, 0.0, None, quorum=3)
    assert out.answered == 4 and "exceeds the clip" in out.failures[nodes[0]]


def test_weight_round_noise_std_is_sigma_clip_over_n(fleet: Fleet, server_task) -> None:
    state = {"w": np.zeros((200, 50), np.float32)}
    fleet.update = lambda node, arrays: {"w": np.full((200, 50), 0.01, np.float32)}  # type: ignore[method-assign]
    nodes = fleet.nodes[:8]
    fleet.down[TRAIN] = {nodes[-1]}  # 7 answer: the noise is calibrated to the 7 averaged
    req = TrainRequest(SMALL_SPACE, 1, state, clip=2.0)
    out = dp_fedavg_round(fleet.send, nodes, req, 5.0, None, quorum=4, noise=noise_rng(3))
    assert out.answered == 7 and out.noise_std == pytest.approx(5.0 * 2.0 / 7)
    noise = out.state["w"].astype(float) - 0.01
    assert abs(noise.mean()) < 4 * out.noise_std / 100  # 10,000 draws
    assert noise.std() == pytest.approx(5.0 * 2.0 / 7, rel=0.03)


def test_weight_round_runs_in_the_search_and_is_charged_to_the_ledger(fleet: Fleet, server_task) -> None:
    state = {"w": np.zeros((3, 2), np.float32), "n": np.array(1, np.int64)}
    # DP off: plain FedAvg, unclipped, the exact unweighted mean of the clients' states
    search = FederatedSearch(config(rounds=1, weight_rounds=(1,)))
    search.supernet_state = state
    result = search.run_round(fleet.send, fleet.nodes)
    assert result.train["status"] == "ok" and result.train["answered"] == len(fleet.nodes)
    upd = np.mean([fleet.update(n, {"w": state["w"]})["w"] for n in fleet.nodes], axis=0)
    assert np.allclose(search.supernet_state["w"], upd, atol=1e-5)
    assert search.supernet_state["n"] == 1 and fleet.train_requests[-1].clip == np.inf
    # central DP, half the fleet asked: charged at the plan's weight σ and sampling rate asked / available
    dp = DPConfig(mode="central", epsilon=1.0, clip=0.5, seed=1)
    search = FederatedSearch(config(rounds=2, dp=dp, fraction=0.5, weight_rounds=(2,), weight_clip=0.5), rng_seed=1)
    search.supernet_state = state
    summary = search.run(fleet.send, lambda: fleet.nodes)
    assert [r["status"] for r in summary["rounds"]] == ["ok", "ok"]
    train = search.history[-1].train
    charge = next(h for h in search.ledger.history if h["label"] == "round 2: supernet weights")
    asked = len(search.history[-1].asked)
    assert train["asked"] == asked and train["sampling_rate"] == pytest.approx(asked / len(fleet.nodes))
    assert search.plan.weight_sigma > 0 and charge["noise_multiplier"] == pytest.approx(search.plan.weight_sigma)
    assert charge["sampling_rate"] == pytest.approx(asked / len(fleet.nodes), abs=1e-6)
    assert train["noise_std"] == pytest.approx(search.plan.weight_sigma * 0.5 / train["answered"])
    assert fleet.train_requests[-1].clip == 0.5
    # the run, weight round included, stays within the budget; the plan reserved it at rate 1
    assert 0 < summary["dp"]["epsilon_spent"] <= 1.0 + 1e-9
    full = PrivacyLedger.from_json(search.ledger.to_json())
    full.max_epsilon = None
    full.charge(search.plan.weight_sigma, label="the same weight round, unsampled")
    assert summary["dp"]["epsilon_spent"] < full.epsilon


def test_sampling_fraction_asks_a_subset(fleet: Fleet) -> None:
    search = FederatedSearch(config(rounds=1, fraction=0.5))
    r = search.run_round(fleet.send, fleet.nodes)
    assert len(r.asked) == 5 and set(r.asked) <= set(fleet.nodes)


# ---- the Grid adapter of federation.server_app -------------------------------------------------
def _reply(src: int, content=None, error=None):  # type: ignore[no-untyped-def]
    from unittest.mock import Mock

    from flwr.app import Message

    rep = Mock(spec=Message)
    rep.metadata = Mock(src_node_id=src)
    rep.has_error.return_value = error is not None
    rep.error = error
    rep.content = content
    return rep


def test_grid_send_maps_replies_errors_and_timeouts(space, monkeypatch: pytest.MonkeyPatch) -> None:
    from unittest.mock import Mock

    from flwr.app import Error
    from flwr.serverapp import Grid

    import federation.server_app as sa
    from federation.protocol import ProposeRequest, encode_propose_reply

    # A real Message needs a running Flower task (TaskIdentity); record what would be sent instead.
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(sa, "Message", lambda content, **kw: sent.append({"content": content, **kw}) or kw)
    codes = space.sample(2, np.random.default_rng(0))
    good = encode_propose_reply(ProposeReply(codes, np.array([90.0, 80.0]), np.array([0.1, 0.2]), 10, "rpi4", 0.3))
    broken = encode_propose_reply(ProposeReply(codes, np.array([90.0, 80.0]), np.array([0.1, 0.2]), 10, "rpi4", 0.3))
    broken["config"]["codes"] = "[[1, 2]]"
    grid = Mock(spec=Grid)
    grid.send_and_receive.return_value = [
        _reply(1, good),
        _reply(2, error=Error(code=1001, reason="battery 9 % below the floor")),
        _reply(3, broken),
        _reply(99, good),  # a node nobody asked: ignored
    ]
    send = sa.grid_send(grid, space)
    req = ProposeRequest(SMALL_SPACE, 2, 50, 2)
    out = send(PROPOSE, {1: req, 2: req, 3: req, 4: req}, 30.0)
    assert [m["dst_node_id"] for m in sent] == [1, 2, 3, 4]
    assert all(m["message_type"] == PROPOSE and m["group_id"] == "2" for m in sent)
    assert grid.send_and_receive.call_args.kwargs["timeout"] == 30.0
    assert isinstance(out[1], ProposeReply) and np.array_equal(out[1].codes, codes)
    assert isinstance(out[2], Failure) and out[2].reason == "error 1001: battery 9 % below the floor"
    assert isinstance(out[3], Failure) and "node 3: field 'codes'" in out[3].reason
    assert isinstance(out[4], Failure) and "timeout" in out[4].reason
    assert 99 not in out


def test_wait_for_nodes_polls_then_fails_clearly() -> None:
    from unittest.mock import Mock

    from flwr.serverapp import Grid

    from federation.server_app import FederationError, wait_for_nodes

    grid = Mock(spec=Grid)
    grid.get_node_ids.side_effect = [[], [7], [7, 3]]
    assert wait_for_nodes(grid, 2, wait_s=5.0, poll_s=0.0) == [3, 7]
    grid = Mock(spec=Grid)
    grid.get_node_ids.return_value = [5]
    with pytest.raises(FederationError, match="only 1 of the 2 expected nodes connected within 0 s"):
        wait_for_nodes(grid, 2, wait_s=0.0, poll_s=0.0)


def test_plan_runs_the_union_only_when_it_can_release_and_never_exceeds_the_budget() -> None:
    from federation.dp import union_can_release, union_delta, union_threshold

    dp = DPConfig(mode="central", epsilon=1.0, delta=1e-5)
    for ramp in (1.0, 1.6, 0.7):
        cfg = config(rounds=5, top_k=4, dp=dp, budget_ramp=ramp, weight_rounds=(2,))
        for clients in (9, 100, 100_000):
            plan = plan_noise(cfg, clients)
            t = union_threshold(plan.union_sigma or 1.0, 4, union_delta(cfg.dp))
            if plan.union:  # with its own share it can release: charged every round
                assert union_can_release(clients, 4, plan.union_sigma, t)
            # the whole planned run (unions, 5 score releases, 1 weight round) spends at most ε
            ledger = PrivacyLedger(rdp_delta(cfg.dp))
            for r in range(1, 6):
                if plan.union:
                    ledger.charge(plan.union_sigma)
                ledger.charge(plan.charged_score_sigma(cfg.dp, r))
            ledger.charge(plan.weight_sigma)
            assert 0.999 < ledger.epsilon <= 1.0 + 1e-9
            if ramp > 1:  # more budget, less noise, in the later rounds
                assert list(plan.score_sigmas) == sorted(plan.score_sigmas, reverse=True)
        # a handful of clients cannot reach the threshold (skipped); a huge fleet can (run and charged)
        assert not plan_noise(cfg, 100).union and plan_noise(cfg, 100_000).union
        assert plan_noise(cfg, 100_000).score_sigmas[0] > plan_noise(cfg, 100).score_sigmas[0]


def test_union_skip_rule() -> None:
    from federation.dp import union_can_release

    # n/√K against T − 3σ: 100 clients with K = 4 reach count 50
    assert union_can_release(100, 4, 10.0, 79.9) and not union_can_release(100, 4, 10.0, 80.1)


def test_successive_halving_schedule_and_survivors() -> None:
    assert pool_sizes(26, 5, 5) == [26, 18, 12, 8, 5]
    assert pool_sizes(26, 0, 5) == [26] * 5 and pool_sizes(4, 5, 3) == [4] * 3 and pool_sizes(26, 5, 1) == [26]
    pool = np.arange(12).reshape(6, 2)
    assert survivors(pool, np.array([0.1, 0.9, 0.5, 0.9, 0.2, 0.3]), 3).tolist() == [[2, 3], [6, 7], [4, 5]]
    assert round_clip(0.1, 26, 26, 5) == 0.1 and round_clip(0.1, 13, 26, 0) == 0.1
    assert round_clip(0.1, 13, 26, 5) == pytest.approx(0.1 * np.sqrt(0.5))


def test_dp_run_halves_the_pool_and_keeps_fronts_over_every_candidate(fleet: Fleet) -> None:
    dp = DPConfig(mode="central", epsilon=1.0, clip=0.1, seed=5)
    cfg = config(rounds=4, dp=dp, seed_pool=20, final_pool=4)
    search = FederatedSearch(cfg, rng_seed=5)
    summary = search.run(fleet.send, lambda: fleet.nodes)
    sizes = [r["pool_size"] for r in summary["rounds"]]
    assert sizes == pool_sizes(sizes[0], 4, 4) and sizes[-1] == 4 and sizes[0] > 4
    # each later pool is the best of the one before by its noisy pooled means (no union: 9 clients)
    for prev, cur in zip(search.score_history, search.score_history[1:], strict=False):
        keys = {c.tobytes() for c in cur.pool}
        assert keys <= {c.tobytes() for c in prev.pool}
    # the fronts are over every candidate ever scored, not just the last (halved) pool
    known, _ = search.known()
    assert len(known) == sizes[0]
    last = search.history[-1]
    front_codes = {tuple(c) for f in last.fronts.values() for c in f["codes"]}
    assert front_codes - {tuple(c) for c in search.last_pool.tolist()}  # some front members were halved away
    assert all(plan is not None and plan["modes"] for plan in last.plans.values())
    assert summary["dp"]["epsilon_spent"] <= 1.0 + 1e-9 and len(search.ledger.history) == 4
