"""The ranking benchmark's noise ceiling: the τ a perfect ranker reaches against a noisy reference."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.supernet_ranking import ReferenceCache, reference_noise
from search.predictors.mlp import kendall_tau


def test_ceiling_matches_a_simulated_perfect_ranker() -> None:
    rng = np.random.default_rng(0)
    subnets, seeds, spread, noise = 16, 3, 1.0, 0.6
    ceilings, achieved = [], []
    for _ in range(400):
        truth = rng.normal(95.0, spread, subnets)
        runs = truth[:, None] + rng.normal(0.0, noise, (subnets, seeds))
        ceilings.append(reference_noise(runs)["expected_tau_ceiling"])
        achieved.append(kendall_tau(truth, runs.mean(axis=1)))  # the truth itself, ranked against the reference
    # the estimate from the runs alone agrees with what a perfect ranker actually reaches
    assert np.mean(ceilings) == pytest.approx(np.mean(achieved), abs=0.03)
    assert np.mean(achieved) < 0.85  # and it is well below 1: the reference's noise caps τ


def test_ceiling_needs_two_seeds_and_falls_with_noise() -> None:
    rng = np.random.default_rng(1)
    truth = rng.normal(95.0, 1.0, 16)
    assert reference_noise(truth[:, None]) is None
    quiet = reference_noise(truth[:, None] + rng.normal(0, 0.1, (16, 3)))
    loud = reference_noise(truth[:, None] + rng.normal(0, 2.0, (16, 3)))
    assert quiet is not None and loud is not None
    assert quiet["expected_tau_ceiling"] > 0.9 > loud["expected_tau_ceiling"]


def test_reference_cache_persists_and_refuses_foreign_files(tmp_path) -> None:
    path = tmp_path / "ref.json"
    cache = ReferenceCache(str(path))
    key = ReferenceCache.key(code=[1, 2], seed=0, epochs=12)
    assert key == ReferenceCache.key(epochs=12, seed=0, code=[1, 2])  # order-independent
    assert key != ReferenceCache.key(code=[1, 2], seed=1, epochs=12)
    cache.put(key, 95.5)
    assert ReferenceCache(str(path)).get(key) == 95.5
    path.write_text("[1, 2]")
    with pytest.raises(SystemExit, match="not a reference cache"):
        ReferenceCache(str(path))


def test_reference_key_ignores_the_supernet_seed_but_not_the_split() -> None:
    import argparse

    from benchmarks.supernet_ranking import reference_key
    from search.supernet.schedule import SupernetTrainConfig

    args = argparse.Namespace(lr=0.005, optimizer="adam", eval_split="val+test", threads=2)
    cfg = SupernetTrainConfig.preset("slim")
    code = np.arange(5)

    def key(c: SupernetTrainConfig) -> str:
        return reference_key(c, args, code, 1000, 0, 5, None)

    # an ensemble member (another training seed, the split pinned) shares one supernet's reference
    assert key(cfg.reseeded(cfg.seed)) == key(cfg) == key(cfg.reseeded(cfg.seed + 3))
    assert key(SupernetTrainConfig.from_dict({**cfg.to_dict(), "seed": 7})) != key(cfg)  # another split
    assert reference_key(cfg, args, code, 1000, 1, 5, None) != key(cfg)


def test_rank_summary_ranks_the_member_mean_of_the_chosen_score() -> None:
    from benchmarks.supernet_ranking import rank_summary

    rng = np.random.default_rng(2)
    truth = rng.normal(90.0, 3.0, 20)
    runs = truth[:, None] + rng.normal(0.0, 1.0, (20, 5))
    top1 = truth[:, None] + rng.normal(0.0, 2.0, (20, 3))
    expected = truth[:, None] - 4.0 + rng.normal(0.0, 1.0, (20, 3))
    m = {
        "macs": rng.permutation(20).astype(float),
        "member_top1": top1,
        "member_expected": expected,
        "standalone_runs": runs,
        "standalone": runs.mean(axis=1),
    }
    soft = rank_summary(m, "expected")
    assert soft["kendall_tau"] == kendall_tau(expected.mean(axis=1), runs.mean(axis=1))
    assert soft["kendall_tau_by_score"]["top1"] == rank_summary(m, "top1")["kendall_tau"]
    assert soft["kendall_tau_per_member"]["expected"][2] == kendall_tau(expected[:, 2], runs.mean(axis=1))
    assert len(soft["kendall_tau_between_members"]) == 3 and soft["ensemble_size"] == 3
    assert soft["kendall_tau_between_members"][0] == kendall_tau(expected[:, 0], expected[:, 1])
    assert soft["kendall_tau_macs_vs_standalone"] == kendall_tau(m["macs"], runs.mean(axis=1))
    assert 0.8 < soft["reference_noise"]["expected_tau_ceiling"] < 1.0  # true σ 3, seed-mean noise 0.45


def test_ensemble_members_must_share_the_split_not_the_seed() -> None:
    from benchmarks.supernet_ranking import same_split_and_space
    from search.supernet.schedule import SupernetTrainConfig

    cfg = SupernetTrainConfig.preset("slim")
    assert same_split_and_space(cfg.reseeded(cfg.seed + 5)) == same_split_and_space(cfg)
    other = cfg.to_dict()
    other["data"] = {**other["data"], "split": [0.8, 0.1, 0.1]}
    assert same_split_and_space(SupernetTrainConfig.from_dict(other)) != same_split_and_space(cfg)
