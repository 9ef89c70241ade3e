"""Score aggregation: weights, the federated choice vs the centralised one, per-tier fronts, regret."""

from __future__ import annotations

import numpy as np
import pytest

from federation.aggregate import (
    ClientScores,
    aggregate_scores,
    aggregation_weights,
    centralised_choice,
    regret,
    relative_regret,
    report_weights,
    tier_fronts,
)
from federation.dp import DPConfig, DPError, noise_rng
from runtime.hardware import load_device
from search.cost.table import SpaceCostTable
from search.modes import ModePlan
from search.space import MobileNetV3Space, load_space


@pytest.fixture(scope="module")
def space() -> MobileNetV3Space:
    sp = load_space("mnist")
    assert isinstance(sp, MobileNetV3Space)
    return sp


def random_round(seed: int, n_clients: int, n_cand: int) -> tuple[np.ndarray, list[ClientScores]]:
    """A pool and client reports: scores in [0, 1] with deadline zeros, mixed data sizes and reliabilities."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 3, size=(n_cand, 6))
    quality = rng.uniform(0.8, 0.97, n_cand)
    reports = []
    for i in range(n_clients):
        s = np.clip(quality + rng.normal(0, 0.03, n_cand), 0, 1)
        s[rng.random(n_cand) < 0.15] = 0.0  # candidates that miss this device's deadline
        reports.append(
            ClientScores(
                node_id=1000 + i,
                tier=str(rng.choice(["rpi4", "jetson_nano"])),
                n_examples=int(rng.integers(10, 500)),
                reliability=float(rng.uniform(0.3, 1.0)),
                scores=s,
            )
        )
    return pool, reports


def loop_weighted_mean(reports: list[ClientScores], weights: np.ndarray) -> np.ndarray:
    """Σ_i w_i s_i / Σ_i w_i with plain Python loops (an independent reference)."""
    n_cand = len(reports[0].scores)
    out = []
    for j in range(n_cand):
        num = sum(float(w) * float(r.scores[j]) for w, r in zip(weights, reports, strict=True))
        out.append(num / sum(float(w) for w in weights))
    return np.array(out)


# ---- weights -------------------------------------------------------------------------------------
def test_weights_are_proportional_and_bounded() -> None:
    n, r = np.array([100, 50, 400, 0]), np.array([1.0, 0.5, 0.5, 1.0])
    w = aggregation_weights(n, r)
    assert np.allclose(w, [0.5, 0.125, 1.0, 0.0])
    assert np.allclose(aggregation_weights(n, r, cap=0.5), w / 2)
    # a public reference: each weight depends on its own client only, saturating at the cap
    assert np.allclose(aggregation_weights(n, r, reference=100.0), [1.0, 0.25, 1.0, 0.0])
    assert np.allclose(aggregation_weights(n[:2], r[:2], reference=100.0), [1.0, 0.25])  # unchanged by others
    with pytest.raises(DPError, match="field 'reliability'"):
        aggregation_weights(n, r * 3)
    with pytest.raises(DPError, match="field 'cap'"):
        aggregation_weights(n, r, cap=2.0)


def test_dp_modes_without_a_reference_ignore_data_sizes() -> None:
    _, reports = random_round(0, 6, 3)
    r = np.array([rep.reliability for rep in reports])
    assert np.allclose(report_weights(reports, DPConfig(mode="central")), r)
    assert np.allclose(report_weights(reports, DPConfig(mode="local")), r)
    off = report_weights(reports, DPConfig(mode="off"))
    nr = np.array([rep.n_examples for rep in reports]) * r
    assert np.allclose(off, nr / nr.max())
    central = DPConfig(mode="central", reference_examples=200.0)
    off_ref = DPConfig(mode="off", reference_examples=200.0)
    assert np.allclose(report_weights(reports, central), report_weights(reports, off_ref))


# ---- the choice ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
def test_noise_off_choice_equals_the_centralised_choice(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pool, reports = random_round(seed, int(rng.integers(2, 60)), int(rng.integers(2, 40)))
    reference = None if seed % 2 else 150.0
    agg = aggregate_scores(pool, reports, DPConfig(mode="off", reference_examples=reference), 0.0, None)
    assert agg.private is None
    assert agg.best_index == centralised_choice(pool, reports, reference=reference)
    assert np.allclose(agg.mean_scores, loop_weighted_mean(reports, agg.weights), atol=1e-12)
    assert np.array_equal(agg.best_code, pool[agg.best_index])
    # a public baseline changes nothing without DP
    b = rng.uniform(0.8, 0.9, len(pool))
    again = aggregate_scores(pool, reports, DPConfig(mode="off", reference_examples=reference), 0.0, None, b)
    assert again.best_index == agg.best_index and np.allclose(again.mean_scores, agg.mean_scores)


def test_central_mode_noise_moves_the_means_but_many_clients_keep_the_choice() -> None:
    pool, reports = random_round(3, 400, 5)
    exact = aggregate_scores(pool, reports, DPConfig(mode="off"), 0.0, None)
    cfg = DPConfig(mode="central", clip=0.2)
    private = aggregate_scores(pool, reports, cfg, 1.0, noise_rng(0))
    assert private.private is not None and private.private.sigma == pytest.approx(0.2)
    assert not np.allclose(private.mean_scores, exact.mean_scores)
    true = aggregate_scores(pool, reports, DPConfig(mode="off", reference_examples=1.0), 0.0, None).mean_scores
    assert relative_regret(private.best_index, true) <= 1.0
    noisier = aggregate_scores(pool, reports, cfg, 1000.0, noise_rng(0))
    assert np.abs(noisier.mean_scores - true).max() > np.abs(private.mean_scores - true).max()


def test_score_length_mismatch_names_the_client() -> None:
    pool, reports = random_round(1, 3, 4)
    bad = [*reports[:2], ClientScores(7, "rpi4", 10, 1.0, np.zeros(3))]
    with pytest.raises(DPError, match="client 7: 3 scores for a pool of 4"):
        aggregate_scores(pool, bad, DPConfig(mode="off"), 0.0, None)
    with pytest.raises(DPError, match="no client scores"):
        centralised_choice(pool, [])


def test_regret() -> None:
    true = np.array([0.90, 0.95, 0.94])
    assert regret(1, true) == 0.0
    assert regret(0, true) == pytest.approx(0.05)
    assert relative_regret(2, true) == pytest.approx(100 * 0.01 / 0.95)
    with pytest.raises(DPError, match="chosen_index 3 outside"):
        regret(3, true)


# ---- per-tier fronts -----------------------------------------------------------------------------
def test_tier_fronts_are_the_nondominated_pool_members(space: MobileNetV3Space) -> None:
    rng = np.random.default_rng(0)
    pool = np.unique(space.canonicalise(space.sample(80, rng)), axis=0)
    acc = rng.uniform(0.8, 0.97, len(pool))
    tiers = ["rpi4", "jetson_nano", "rpi4"]
    fronts = tier_fronts(pool, acc, space, tiers)
    assert list(fronts) == ["rpi4", "jetson_nano"]
    for tier, front in fronts.items():
        cost = SpaceCostTable(space, load_device(tier)).evaluate(pool)
        F = np.column_stack([-acc, cost["latency_ms"], cost["energy_mj"]])
        dominated = [
            bool(np.any(np.all(F[i] >= F, axis=1) & np.any(F[i] > F, axis=1))) for i in range(len(pool))
        ]
        assert front.indices.tolist() == [i for i in range(len(pool)) if not dominated[i]]
        assert np.array_equal(front.codes, pool[front.indices])
        assert np.allclose(front.metrics["latency_ms"], cost["latency_ms"][front.indices])
        assert np.allclose(front.metrics["accuracy"], acc[front.indices])
        assert len(front.archs()) == len(front.indices)
    # different hardware, different costs
    assert not np.allclose(
        SpaceCostTable(space, load_device("rpi4")).evaluate(pool)["latency_ms"],
        SpaceCostTable(space, load_device("jetson_nano")).evaluate(pool)["latency_ms"],
    )


def test_tier_modeplan_names_archs_and_is_none_when_nothing_fits(space: MobileNetV3Space) -> None:
    rng = np.random.default_rng(1)
    pool = np.unique(space.canonicalise(space.sample(120, rng)), axis=0)
    acc = rng.uniform(0.8, 0.97, len(pool))
    table = SpaceCostTable(space, load_device("rpi4"))
    front = tier_fronts(pool, acc, space, ["rpi4"], tables={"rpi4": table})["rpi4"]
    deadline = float(np.median(front.metrics["latency_ms"]))
    plan = front.modeplan(deadline_ms=deadline)
    assert isinstance(plan, ModePlan) and plan.device == "rpi4"
    high = plan.mode("high")
    assert high.metrics["latency_ms"] <= deadline
    ok = front.metrics["latency_ms"] <= deadline
    assert high.metrics["accuracy"] == pytest.approx(front.metrics["accuracy"][ok].max())
    assert high.arch is not None and high.arch == space.decode(front.codes[high.index]).to_json()
    assert front.modeplan(deadline_ms=1e-6) is None
    with pytest.raises(DPError, match="3 accuracies for a pool of"):
        tier_fronts(pool, acc[:3], space, ["rpi4"])


def test_runnable_accuracy_undoes_the_zeros_of_clients_too_slow_for_a_candidate(space) -> None:
    from federation.aggregate import runnable_accuracy
    from runtime.hardware import load_device
    from search.cost.table import SpaceCostTable

    rng = np.random.default_rng(3)
    codes = space.sample(40, rng)
    tables = {t: SpaceCostTable(space, load_device(t)) for t in ("orin_nx", "rpi4")}
    lat = {t: np.asarray(tables[t].evaluate(codes)["latency_ms"]) for t in tables}
    deadlines = {"orin_nx": float(lat["orin_nx"].max()) + 1.0, "rpi4": float(np.median(lat["rpi4"]))}
    acc = rng.uniform(0.8, 0.95, len(codes))  # every client's accuracy of each candidate
    clients = {"orin_nx": 3.0, "rpi4": 7.0}  # summed aggregation weights per tier
    # what the clients score: 0 where their own tier misses the deadline; the fleet mean of that
    scores = {t: np.where(lat[t] <= deadlines[t], acc, 0.0) for t in clients}
    fleet = sum(clients[t] * scores[t] for t in clients) / sum(clients.values())
    out = runnable_accuracy(fleet, clients, deadlines, lat)
    slow_ok = lat["rpi4"] <= deadlines["rpi4"]
    assert not slow_ok.all() and slow_ok.any()
    assert np.allclose(out, acc)  # every candidate back at its accuracy among the clients able to run it
    assert np.all(fleet[~slow_ok] < acc[~slow_ok])  # where the fleet mean had understated it
