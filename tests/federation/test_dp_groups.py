"""One Gaussian release with per-tier baselines and one-hot tier counts (``groups``), and the server's use of it."""

from __future__ import annotations

import numpy as np
import pytest

from federation.aggregate import ClientScores
from federation.dp import (
    OFFSET_SCALE_BASELINE,
    OFFSET_SCALE_RAW,
    DPConfig,
    DPError,
    clip_rows,
    contribution_vectors,
    noise_rng,
    offset_scale,
    private_weighted_mean,
)
from federation.server import FederationConfigError, tiered_release

TIERS = ("a", "b", "c", "d", "e")


def tiered_fleet(
    seed: int, n_clients: int = 60, n_cand: int = 6
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(scores, weights, group per client, baseline per group): candidate 0 misses group 0's deadline (score 0).

    Candidates 1.. share one public baseline level, so the noise of their differences is the
    residual noise alone (the offset and the b·count terms are common to them).
    """
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, len(TIERS), n_clients)
    level = np.full(n_cand, 0.85)
    base = np.tile(level, (len(TIERS), 1))
    base[0, 0] = 0.0
    scores = np.clip(base[groups] + rng.normal(0, 0.02, (n_clients, n_cand)), 0, 1)
    scores[groups == 0, 0] = 0.0
    return scores, rng.uniform(0.5, 1.0, n_clients), groups, base


def test_grouped_release_decodes_the_exact_mean_and_group_totals() -> None:
    s, w, g, b = tiered_fleet(1)
    cfg = DPConfig(clip=100.0)
    pm = private_weighted_mean(s, w, cfg, 1e-12, noise_rng(0), baseline=b, groups=g)
    assert pm.clipped_fraction == 0.0
    assert np.allclose(pm.mean, w @ s / w.sum(), atol=1e-9)
    assert np.allclose(pm.noisy_sums, w @ s, atol=1e-8)
    assert np.allclose(pm.group_counts, np.bincount(g, weights=w, minlength=len(TIERS)), atol=1e-8)
    assert pm.noisy_count == pytest.approx(w.sum(), rel=1e-9)


def test_grouped_vector_is_one_hot_and_one_client_moves_the_sum_by_at_most_clip() -> None:
    s, w, g, b = tiered_fleet(2)
    cfg = DPConfig(clip=0.05, count_scale=0.3)
    v = contribution_vectors(s, w, cfg, b, g)
    n_cand = s.shape[1]
    counts = v[:, n_cand + 1:]
    assert counts.shape[1] == len(TIERS)
    # exactly one non-zero count per client, in its own group's coordinate, count_scale·clip·w
    assert np.array_equal(np.argmax(counts, axis=1), g) and np.all(np.count_nonzero(counts, axis=1) == 1)
    assert np.allclose(counts.max(axis=1), 0.3 * 0.05 * w)
    # the residual part subtracts the client's own group's baseline
    resid = s - b[g]
    assert np.allclose(v[:, :n_cand], w[:, None] * (resid - resid.mean(axis=1, keepdims=True)))
    clipped = clip_rows(v, cfg.clip)
    total = clipped.sum(axis=0)
    for i in range(len(w)):  # removing any one client changes the released sum by its own clipped row
        assert np.linalg.norm(total - np.delete(clipped, i, axis=0).sum(axis=0)) <= cfg.clip + 1e-12


def test_grouped_release_has_sigma_clip_noise_per_candidate_not_sqrt_groups() -> None:
    s, w, g, b = tiered_fleet(3, n_clients=40, n_cand=4)
    sigma, clip = 2.0, 0.05
    cfg = DPConfig(clip=clip)
    clean = private_weighted_mean(s, w, cfg, 1e-12, noise_rng(0), b, g).noisy_sums
    src = noise_rng(5)
    sums = np.array([private_weighted_mean(s, w, cfg, sigma, src, b, g).noisy_sums for _ in range(3000)])
    noise = sums - clean
    # The decoded sums add b·(noisy group counts) and the offset: candidates with the same baseline in
    # every group (1..3) carry the residual noise σ·clip plus common offset/count terms; their
    # *differences* carry only σ·clip·√2 — one release, not five (√5 more with one release per group).
    diffs = noise[:, 1:] - noise[:, [1]]
    assert np.allclose(diffs[:, 1:].std(axis=0), sigma * clip * np.sqrt(2), rtol=0.06)


def test_grouped_inputs_are_checked() -> None:
    s, w, g, b = tiered_fleet(4)
    with pytest.raises(DPError, match="groups: need a public baseline per group"):
        private_weighted_mean(s, w, DPConfig(), 1.0, 0, None, g)
    with pytest.raises(DPError, match=r"groups: every index must be in \[0, 5\)"):
        private_weighted_mean(s, w, DPConfig(), 1.0, 0, b, g + 1)
    with pytest.raises(DPError, match="one integer group index per client"):
        private_weighted_mean(s, w, DPConfig(), 1.0, 0, b, g[:-1])
    with pytest.raises(DPError, match=r"need \(n_groups, 6\)"):
        private_weighted_mean(s, w, DPConfig(), 1.0, 0, b[:, :3], g)
    with pytest.raises(DPError, match="local variant takes no groups"):
        private_weighted_mean(s, w, DPConfig(mode="local"), 1.0, 0, b, g)


def test_offset_scale_defaults_depend_on_the_baseline_and_an_explicit_value_wins() -> None:
    assert offset_scale(DPConfig(), baseline=True) == OFFSET_SCALE_BASELINE
    assert offset_scale(DPConfig(), baseline=False) == OFFSET_SCALE_RAW
    assert offset_scale(DPConfig(offset_scale=0.7), baseline=True) == 0.7
    assert DPConfig.from_dict({"offset_scale": None}).offset_scale is None
    assert DPConfig.from_dict({"offset_scale": 2}).offset_scale == 2.0
    with pytest.raises(DPError, match="field 'offset_scale'"):
        DPConfig(offset_scale=0.0)
    # the count coordinate is count_scale·clip·w: at 1 it would take the whole clip
    with pytest.raises(DPError, match=r"field 'count_scale': 1.0; need a number in \(0, 1\)"):
        DPConfig(count_scale=1.0)


def _reports(s: np.ndarray, g: np.ndarray) -> list[ClientScores]:
    return [ClientScores(i, TIERS[t], 100, 1.0, s[i]) for i, t in enumerate(g)]


def test_tiered_release_is_one_release_over_all_tiers() -> None:
    s, _, g, b = tiered_fleet(6, n_clients=50, n_cand=5)
    reports = _reports(s, g)
    pool = np.arange(10).reshape(5, 2)
    baselines = {t: b[i] for i, t in enumerate(TIERS)}
    # weights are the reliabilities (1.0): the exact sums and total come back with negligible noise
    sums, total = tiered_release(pool, reports, DPConfig(clip=100.0), 1e-12, noise_rng(0), baselines)
    assert np.allclose(sums, s.sum(axis=0), atol=1e-8) and total == pytest.approx(50.0)
    # the candidates with one baseline in every tier differ by one release's noise σ·clip·√2
    sigma, clip = 2.0, 0.05
    cfg = DPConfig(clip=clip)
    clean, _ = tiered_release(pool, reports, cfg, 1e-12, noise_rng(0), baselines)
    src = noise_rng(11)
    draws = np.array([tiered_release(pool, reports, cfg, sigma, src, baselines)[0] for _ in range(2000)])
    diffs = (draws - clean)[:, 2:] - (draws - clean)[:, [1]]
    assert np.allclose(diffs.std(axis=0), sigma * clip * np.sqrt(2), rtol=0.08)
    with pytest.raises(FederationConfigError, match=r"no public baseline for tier\(s\) \['e'\]"):
        tiered_release(pool, reports, cfg, sigma, src, {t: baselines[t] for t in TIERS[:4]})
