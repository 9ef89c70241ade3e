"""The simulation scenario: fleet set-up, battery traces, the privacy-utility replay and a real Ray run."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import psutil
import pytest

from federation.aggregate import ClientScores
from federation.dp import DPConfig
from federation.server import FederatedSearch, accumulate, tiered_release
from runtime.telemetry import load_trace
from simulations.federated_search import (
    DescendantTracker,
    Scenario,
    ScenarioError,
    battery_traces,
    default_tiers,
    fleet_setup,
    inprocess_send,
    privacy_utility,
    rescore_history,
    run_scenario,
    scenario_deadlines,
    tier_deadlines,
)
from tests.federation.conftest import SMALL_SPACE


@pytest.fixture(scope="module")
def space_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("space") / "space.json"
    path.write_text(json.dumps(asdict(SMALL_SPACE)))
    return path


def test_fleet_skips_the_mcu_and_deadlines_bite(space) -> None:
    tiers = default_tiers()
    assert "stm32h7" not in tiers and {"rpi4", "orin_nx"} <= set(tiers)
    d = tier_deadlines(space, tiers, 0.5, seed=0)
    assert d["orin_nx"] < d["rpi4"] < d["rk3399_big"]  # faster devices get tighter deadlines (same quantile)


def test_an_app_deadline_is_one_budget_for_every_tier(space) -> None:
    tiers = default_tiers()
    own = scenario_deadlines(Scenario(), space, tiers)
    assert own == tier_deadlines(space, tiers, Scenario().deadline_quantile, seed=0)
    assert scenario_deadlines(Scenario(deadline_ms=0.2), space, tiers) == {t: 0.2 for t in tiers}
    with pytest.raises(ScenarioError, match="option 'deadline_ms'"):
        Scenario(deadline_ms=0.0)


def test_battery_traces_take_devices_offline(tmp_path: Path) -> None:
    facts = battery_traces(tmp_path, clients=30, rounds=5, seed=1)
    trace = load_trace(tmp_path / "battery_00007.csv")
    assert [s.t for s in trace] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert np.allclose([s.battery_percent for s in trace], facts["levels"][7], atol=0.01)
    offline = (facts["levels"][:, 1:] < 15) & ~facts["plugged"][:, 1:]
    assert offline.any() and not offline.all()
    assert offline.sum(axis=0)[-1] >= offline.sum(axis=0)[0]  # batteries drain over the run


def test_scenario_options_are_checked() -> None:
    with pytest.raises(ScenarioError, match="option 'dp_mode'"):
        Scenario(dp_mode="secret")
    with pytest.raises(ScenarioError, match="option 'clients'"):
        Scenario(clients=1)


def test_tiered_release_without_noise_is_the_exact_mean(space) -> None:
    rng = np.random.default_rng(0)
    pool = space.sample(6, rng)
    reports = [ClientScores(i, ["a", "b"][i % 2], 10 + i, 1.0, rng.uniform(0, 1, 6)) for i in range(8)]
    # a huge clip and a tiny σ: the tiered release is (almost) the exact reliability-weighted mean
    dp = DPConfig(mode="central", clip=1e6, noise_multiplier=1e-12, count_scale=0.3, offset_scale=0.3)
    sums, count = tiered_release(pool, reports, dp, 1e-12, np.random.default_rng(1))
    exact = np.mean([r.scores for r in reports], axis=0)
    assert count == pytest.approx(8.0) and np.allclose(sums / count, exact)
    acc: dict[bytes, tuple[float, float]] = {}
    first = accumulate(acc, pool, sums, count)
    second = accumulate(acc, pool[:3], sums[:3] * 3, count * 3)  # pooled over both rounds
    assert np.allclose(first, exact) and np.allclose(second, 4 * sums[:3] / (4 * count))


def test_inprocess_run_and_privacy_utility(tmp_path: Path, class_predictor_path: Path, space_json: Path) -> None:
    sc = Scenario(clients=12, rounds=2, budget=30, top_k=2, seed_pool=8, predictor=str(class_predictor_path),
                  space=str(space_json), clip=0.1, noise_seed=3)
    config, settings, facts = fleet_setup(sc, tmp_path)
    assert config.baseline_predictor is not None and config.dp.clip == 0.1
    assert len(facts["offline_per_round"]) == sc.rounds
    search = FederatedSearch(config, rng_seed=3)
    summary = search.run(inprocess_send(settings, sc.clients), lambda: list(range(sc.clients)))
    assert summary["rounds_run"] == 2 and 0.99 < summary["dp"]["epsilon_spent"] <= 1.0 + 1e-9
    assert len(search.score_history) == 2
    rescored = rescore_history(search, inprocess_send(settings, sc.clients))
    # re-scored over every candidate the run scored, by the same clients with the same weights
    assert all(len(t.pool) >= len(h.pool) for h, t in zip(search.score_history, rescored, strict=True))
    assert [len(t.reports) for t in rescored] == [len(h.reports) for h in search.score_history]
    curve = privacy_utility(search.score_history, rescored, [0.5, 50.0], config, search.plan.clients, seeds=8, seed=0)
    assert curve["candidates"] == len(search.known()[0])
    low, high = curve["curve"]
    assert high["noise_multiplier"] < low["noise_multiplier"]
    assert high["regret_mean"] <= low["regret_mean"] + 1e-12  # more budget, no more regret
    assert high["within_1pct_share"] >= 0.75  # ε = 50: close to the non-private choice
    assert all(r >= 0 for r in low["regrets"]) and len(low["regrets"]) == 8


def _ray_processes() -> set[int]:
    found = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if any(k in cmd for k in ("raylet", "gcs_server", "ray::", "default_worker.py")):
            found.add(p.info["pid"])
    return found


@pytest.mark.slow
def test_run_simulation_end_to_end_leaves_no_ray_process(
    tmp_path: Path, class_predictor_path: Path, space_json: Path
) -> None:
    before = _ray_processes()
    sc = Scenario(clients=6, rounds=2, budget=30, top_k=2, seed_pool=8, predictor=str(class_predictor_path),
                  space=str(space_json), epsilons=(1.0, 8.0), utility_seeds=4, noise_seed=1)
    result = run_scenario(sc, tmp_path, progress=False)
    # every round ran with every device (no battery ran low in 2 rounds of this fleet) and spent ε
    assert result["rounds_run"] == 2 and [r["status"] for r in result["rounds"]] == ["ok", "ok"]
    assert 0.99 < result["dp"]["epsilon_spent"] <= 1.0 + 1e-9
    r1 = json.loads((tmp_path / "round_001.json").read_text())
    assert r1["status"] == "ok" and set(r1["fronts"]) == set(r1["plans"])
    assert set(r1["fronts"]) <= set(result["tiers"]) and r1["chosen"]["arch"]["space"] == SMALL_SPACE.name
    pu = json.loads((tmp_path / "privacy_utility.json").read_text())
    assert [c["epsilon"] for c in pu["curve"]] == [1.0, 8.0] and pu["rounds_replayed"] == 2
    assert (tmp_path / "privacy_utility.png").stat().st_size > 1000
    assert result["front_pngs"] and all(Path(p).exists() for p in result["front_pngs"])
    assert result["chosen_per_tier"] and all(set(m) == {"high", "balanced", "low"}
                                             for m in result["chosen_per_tier"].values() if m)
    # Ray was started and shut down by the run: none of its processes is left behind
    assert psutil.Process().children(recursive=True) == []
    assert _ray_processes() - before == set()


def test_tracker_reaps_inside_its_block_with_sampling_stopped() -> None:
    # run_scenario reaps inside the tracker's `with`: the sampler thread must not be adding PIDs
    # while reap iterates them (it did: "dictionary changed size during iteration" in CI)
    import subprocess
    import sys

    with DescendantTracker(interval_s=0.01) as tracker:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            reaped = tracker.reap(timeout_s=5.0)
            assert not tracker._thread.is_alive()
            assert child.pid in reaped  # the last look before stopping caught it even between ticks
            assert child.wait(timeout=5.0) is not None
        finally:
            if child.poll() is None:
                child.kill()
