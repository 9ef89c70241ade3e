import itertools
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from search import pareto
from search.pareto import (
    ParetoError,
    crowding_distance,
    direction_signs,
    from_minimisation,
    front_change,
    hypervolume,
    igd,
    igd_plus,
    knee_point,
    nondominated_rank,
    nondominated_sort,
    pareto_front,
    to_minimisation,
    tradeoff,
)


def _brute(cost, value):
    keep = []
    for i in range(len(cost)):
        dominated = any(
            (cost[j] <= cost[i] and value[j] >= value[i] and (cost[j] < cost[i] or value[j] > value[i]))
            or (cost[j] == cost[i] and value[j] == value[i] and j < i)
            for j in range(len(cost))
        )
        if not dominated:
            keep.append(i)
    return sorted(keep)


def test_2d_front_matches_brute_force_with_ties():
    # minimise cost, maximise value; the brute force keeps one of each duplicate point,
    # pareto_front keeps every copy, so the fronts are compared as sets of points
    rng = np.random.default_rng(0)
    for _ in range(20):
        cost = rng.integers(0, 15, 60).astype(float)
        value = rng.integers(0, 15, 60).astype(float)
        front = pareto_front(np.column_stack([cost, -value]))
        brute = _brute(cost, value)
        assert {(cost[i], value[i]) for i in front} == {(cost[i], value[i]) for i in brute}
        assert len(front) == sum(int(np.sum((cost == cost[i]) & (value == value[i]))) for i in brute)


# --------------------------------------------------------------------------- the toolkit


def _point_set(seed: int, n: int, m: int) -> np.ndarray:
    """Random points in one of three flavours: continuous, coarse integer grid (many ties), or
    continuous with exact duplicate rows appended."""
    rng = np.random.default_rng(seed)
    kind = seed % 3
    if kind == 0:
        return rng.random((n, m))
    if kind == 1:
        return rng.integers(0, 6, (n, m)).astype(float)
    F = rng.random((n - n // 4, m))
    return np.vstack([F, F[rng.integers(0, len(F), n // 4)]])[rng.permutation(n)]


CASES = [(seed, n, m) for m in (2, 3, 4) for n in (10, 57, 300, 1200) for seed in range(6)]
CASES += [(seed, 5000, m) for m in (2, 3, 4) for seed in range(3)]


def _brute_rank(F: np.ndarray) -> np.ndarray:
    """Deb's peeling with an explicit dominance matrix (independent of both pymoo and us)."""
    dom = np.all(F[:, None] <= F[None], axis=2) & np.any(F[:, None] < F[None], axis=2)  # dom[i, j]: i dom j
    rank = np.full(len(F), -1)
    left = np.ones(len(F), dtype=bool)
    r = 0
    while left.any():
        front = left & ~dom[left].any(axis=0)
        rank[front] = r
        left &= ~front
        r += 1
    return rank


@pytest.mark.parametrize(("seed", "n", "m"), CASES)
def test_ranks_and_fronts_match_pymoo(seed, n, m):
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    F = _point_set(seed, n, m)
    fronts_ref, rank_ref = NonDominatedSorting().do(F, return_rank=True)
    rank = nondominated_rank(F)
    assert rank.dtype == np.int64 and rank.shape == (n,)
    np.testing.assert_array_equal(rank, rank_ref)
    fronts = nondominated_sort(F)
    assert [set(f.tolist()) for f in fronts] == [set(np.asarray(f).tolist()) for f in fronts_ref]
    assert all(np.all(np.diff(f) > 0) for f in fronts)
    assert set(pareto_front(F).tolist()) == set(np.asarray(fronts_ref[0]).tolist())
    if n <= 300:
        np.testing.assert_array_equal(rank, _brute_rank(F))


@pytest.mark.parametrize("m", [1, 5, 7])
def test_ranks_other_dimensions_match_brute_force(m):
    for seed in range(4):
        F = _point_set(seed, 150, m)
        np.testing.assert_array_equal(nondominated_rank(F), _brute_rank(F))


def test_three_objective_sweep_agrees_with_blocked_sort():
    # the m == 3 staircase sweep and the m >= 4 divide-and-conquer are separate code paths
    for seed in range(6):
        F = _point_set(seed, 800, 3)
        S = np.unique(F, axis=0)
        S = S[np.lexsort(S.T[::-1])]
        np.testing.assert_array_equal(pareto._rank_sorted_unique_3d(S), pareto._rank_sorted_unique_nd(S))


def test_rank_long_chains_and_duplicates():
    for m in (2, 3, 4):
        chain = np.repeat(np.arange(400.0)[::-1, None], m, axis=1)  # each row dominated by the next
        np.testing.assert_array_equal(nondominated_rank(chain), np.arange(400)[::-1])
        twice = np.vstack([chain, chain])
        np.testing.assert_array_equal(nondominated_rank(twice), np.tile(np.arange(400)[::-1], 2))
    same = np.ones((5, 3))
    np.testing.assert_array_equal(nondominated_rank(same), np.zeros(5))


def test_rank_nan_rows_last_and_inf_as_values():
    F = np.array([[1.0, 2.0], [np.nan, 0.0], [2.0, 1.0], [3.0, 3.0], [0.0, np.nan]])
    np.testing.assert_array_equal(nondominated_rank(F), [0, 2, 0, 1, 2])
    assert [f.tolist() for f in nondominated_sort(F)] == [[0, 2], [3], [1, 4]]
    assert pareto_front(F).tolist() == [0, 2]
    all_nan = np.full((3, 2), np.nan)
    np.testing.assert_array_equal(nondominated_rank(all_nan), [0, 0, 0])
    assert pareto_front(all_nan).tolist() == []
    inf = np.array([[np.inf, 0.0, 0.0], [0.0, np.inf, 0.0], [1.0, 1.0, 1.0], [np.inf, np.inf, np.inf]])
    np.testing.assert_array_equal(nondominated_rank(inf), [0, 0, 0, 1])
    assert nondominated_rank(np.zeros((0, 3))).shape == (0,)
    assert nondominated_sort(np.zeros((0, 3))) == []


def _front_without_duplicates(seed: int, m: int) -> np.ndarray:
    F = np.random.default_rng(seed).random((400, m))
    return F[nondominated_rank(F) == 0]


@pytest.mark.parametrize("m", [2, 3, 4])
def test_crowding_distance_matches_pymoo(m):
    from pymoo.operators.survival.rank_and_crowding.metrics import get_crowding_function

    for seed in range(5):
        front = _front_without_duplicates(seed, m)
        assert len(np.unique(front, axis=0)) == len(front) > 2
        np.testing.assert_allclose(crowding_distance(front), get_crowding_function("cd").do(front), rtol=1e-12)


def test_crowding_distance_duplicates_like_pymoo():
    from pymoo.operators.survival.rank_and_crowding.metrics import FunctionalDiversity, calc_crowding_distance

    for seed in range(5):
        F = _point_set(3 * seed + 1, 40, 3)  # integer grid: ties and exact copies
        np.testing.assert_allclose(crowding_distance(F), FunctionalDiversity(calc_crowding_distance, False).do(F))
        filtered = FunctionalDiversity(calc_crowding_distance, filter_out_duplicates=True).do(F)
        np.testing.assert_allclose(crowding_distance(F, filter_duplicates=True), filtered)


def test_crowding_distance_by_hand():
    F = np.array([[0.0, 4.0, 1.0], [1.0, 2.0, 1.0], [3.0, 1.0, 1.0], [4.0, 0.0, 1.0]])
    # objective 3 has zero range -> 0; inner points: ((3-0)/4 + (4-1)/4) / 3 and ((4-1)/4 + (2-0)/4) / 3
    np.testing.assert_allclose(crowding_distance(F), [np.inf, 1.5 / 3, 1.25 / 3, np.inf])
    assert np.all(np.isinf(crowding_distance(F[:2])))
    np.testing.assert_array_equal(crowding_distance(np.ones((4, 2))), np.zeros(4))
    with_nan = np.vstack([F, [np.nan, 1.0, 1.0]])
    np.testing.assert_allclose(crowding_distance(with_nan), [np.inf, 1.5 / 3, 1.25 / 3, np.inf, 0.0])


def _grid_hypervolume(F: np.ndarray, ref: np.ndarray) -> float:
    """Exact HV by coordinate compression: sum the grid cells whose lower corner some point dominates."""
    F = F[np.less(F, ref).all(axis=1)]
    if len(F) == 0:
        return 0.0
    axes = [np.unique(np.append(F[:, k], ref[k])) for k in range(F.shape[1])]
    total = 0.0
    for cell in itertools.product(*[range(len(a) - 1) for a in axes]):
        corner = np.array([a[i] for a, i in zip(axes, cell, strict=True)])
        if np.less_equal(F, corner).all(axis=1).any():
            total += float(np.prod([a[i + 1] - a[i] for a, i in zip(axes, cell, strict=True)]))
    return total


@pytest.mark.parametrize("m", [2, 3, 4])
def test_hypervolume_matches_pymoo_and_moocore(m):
    import moocore
    from pymoo.indicators.hv import HV

    for seed in range(6):
        for n in (10, 200, 2000):
            F = _point_set(seed, n, m)
            ref = np.full(m, 0.9 if seed % 3 != 1 else 4.5)  # some points fall outside the box
            ours = hypervolume(F, ref)
            assert ours == pytest.approx(HV(ref_point=ref)(F), rel=1e-9)
            assert ours == pytest.approx(moocore.hypervolume(F, ref=ref), rel=1e-9)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_hypervolume_matches_grid_count(m):
    for seed in range(8):
        F = _point_set(seed, 9, m)
        ref = np.full(m, 0.95 if seed % 3 != 1 else 5.0)
        assert hypervolume(F, ref) == pytest.approx(_grid_hypervolume(F, ref), rel=1e-12)


def test_hypervolume_by_hand_and_edge_cases():
    F = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [2.5, 2.5]])
    assert hypervolume(F, [4.0, 4.0]) == pytest.approx(6.0)  # 3 + 2 + 1, the dominated point adds nothing
    assert hypervolume(np.array([[1.0, 4.0], [4.0, 1.0]]), [4.0, 4.0]) == 0.0  # on the box edge: ignored
    assert hypervolume(np.zeros((0, 3)), [1, 1, 1]) == 0.0
    assert hypervolume(np.array([[0.5], [0.2]]), [1.0]) == pytest.approx(0.8)
    assert hypervolume(np.array([[0.0, 0.0, 0.0], [np.nan, 0, 0]]), [1, 2, 3]) == pytest.approx(6.0)
    with pytest.raises(ParetoError, match="ref"):
        hypervolume(F, [1.0, 2.0, 3.0])


def test_hypervolume_without_moocore_falls_back_to_slicing(monkeypatch):
    import moocore

    F = _point_set(2, 60, 4)
    ref = np.full(4, 0.95)
    expected = moocore.hypervolume(F, ref=ref)
    monkeypatch.setitem(sys.modules, "moocore", None)  # import moocore -> ImportError
    assert hypervolume(F, ref) == pytest.approx(expected, rel=1e-9)
    F5 = _point_set(0, 12, 5)
    assert hypervolume(F5, np.ones(5)) == pytest.approx(_grid_hypervolume(F5, np.ones(5)), rel=1e-12)


def test_front_change():
    prev = np.array([[1.0, 3.0], [3.0, 1.0]])  # HV 4 + 0 ... = 5 with ref (4, 4)
    new = np.vstack([prev, [[2.0, 2.0]]])  # adds 1
    assert hypervolume(prev, [4, 4]) == pytest.approx(5.0)
    assert front_change(prev, new, [4, 4]) == pytest.approx(0.2)
    assert front_change(new, prev, [4, 4]) == pytest.approx(1.0 / 6.0)
    assert front_change(prev, prev, [4, 4]) == 0.0
    far = np.array([[9.0, 9.0]])
    assert front_change(far, far, [4, 4]) == 0.0
    assert front_change(far, prev, [4, 4]) == float("inf")


@pytest.mark.parametrize("m", [2, 3, 4])
def test_igd_and_igd_plus_match_pymoo(m, monkeypatch):
    from pymoo.indicators.igd import IGD
    from pymoo.indicators.igd_plus import IGDPlus

    for seed in range(4):
        rng = np.random.default_rng(seed)
        Z = rng.random((300, m))
        Z = Z[nondominated_rank(Z) == 0]
        F = rng.random((150, m)) + 0.1
        assert igd(F, Z) == pytest.approx(IGD(Z)(F), rel=1e-12)
        assert igd_plus(F, Z) == pytest.approx(IGDPlus(Z)(F), rel=1e-12)
        monkeypatch.setattr(pareto, "_IGD_CHUNK_ELEMENTS", 7 * F.size)  # several reference chunks
        assert igd(F, Z) == pytest.approx(IGD(Z)(F), rel=1e-12)
        monkeypatch.undo()


def test_igd_by_hand():
    Z = np.array([[0.0, 1.0], [1.0, 0.0]])
    F = np.array([[0.0, 2.0], [np.nan, 0.0]])
    assert igd(F, Z) == pytest.approx((1.0 + np.sqrt(5.0)) / 2)
    assert igd_plus(F, Z) == pytest.approx((1.0 + 2.0) / 2)  # d+ to (1, 0) = |(0 - 1)+, (2 - 0)+| = 2
    assert igd(np.zeros((0, 2)), Z) == float("inf")
    with pytest.raises(ParetoError, match="reference_front"):
        igd(F, np.zeros((0, 2)))


def test_knee_point_on_hand_made_fronts():
    # normalised: (0,1) (.1,.4) (.2,.25) (.4,.15) (1,0) -> 1-x-y = 0 .5 .55 .45 0 -> knee (2, 2.5)
    front = np.array([[0.0, 10.0], [1.0, 4.0], [2.0, 2.5], [4.0, 1.5], [10.0, 0.0]])
    F = np.vstack([front, [[3.0, 3.0], [11.0, 11.0]]])  # dominated points are not candidates
    order = np.random.default_rng(0).permutation(len(F))
    assert knee_point(F[order]) == int(np.flatnonzero(order == 2)[0])
    # maximised accuracy in minimisation form, as search.modes uses it
    acc_energy = np.array([[-0.70, 1.0], [-0.78, 2.0], [-0.80, 4.0], [-0.81, 9.0]])
    assert knee_point(acc_energy) == 1
    # 3-D: extremes at the unit points (plane x+y+z=1); (.2,.2,.2) is 0.4/sqrt(3) below it
    tri = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.3, 0.3, 0.1], [0.2, 0.2, 0.2]])
    assert knee_point(tri) == 4
    # 3-D with a tilted extreme plane: w solves X_ext w = 1, w = (1, 2, 1) here
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 1.0], [0.5, 0.05, 0.3], [0.2, 0.1, 0.3]])
    X = tilt / tilt.max(axis=0)
    distances = (1 - X @ np.array([1.0, 2.0, 1.0]))[3:]
    assert knee_point(tilt) == 3 + int(np.argmax(distances))


def test_knee_point_degenerate_fronts():
    assert knee_point(np.array([[1.0, 2.0]])) == 0
    assert knee_point(np.array([[5.0, 5.0], [1.0, 1.0], [1.0, 1.0]])) == 1  # one point (and a copy)
    line = np.array([[3.0, 1.0], [0.0, 4.0], [1.0, 3.0], [2.0, 2.0]])  # collinear: all on the chord
    assert knee_point(line) == 0
    # a point that is extreme for two objectives: falls back to the plane sum(x) = 1
    shared = np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.3, 0.3, 0.5]])
    assert knee_point(shared) == 0
    with pytest.raises(ParetoError):
        knee_point(np.full((2, 2), np.nan))


def test_tradeoff_by_hand():
    raw = np.array([[0.80, 20.0], [0.76, 10.0], [0.90, 20.0]])  # accuracy, latency
    assert tradeoff(raw, 0, 1) == pytest.approx((-0.04 / 0.80) / (-10.0 / 20.0))  # = 0.1
    assert tradeoff(raw, 1, 0) == pytest.approx((0.04 / 0.76) / (10.0 / 10.0))
    assert tradeoff(raw[:, ::-1], 0, 1, objectives=(1, 0)) == pytest.approx(0.1)
    with pytest.raises(ParetoError, match="equal"):
        tradeoff(raw, 0, 2)
    with pytest.raises(ParetoError, match="positive"):
        tradeoff(np.array([[0.0, 1.0], [1.0, 2.0]]), 0, 1)


@dataclass(frozen=True)
class _Obj:
    name: str
    direction: str


def test_direction_conversion():
    from search.problem import Objective

    raw = np.array([[0.8, 12.0, 3.0], [0.9, 30.0, 4.0]])
    dirs = ["max", "min", "min"]
    F = to_minimisation(raw, dirs)
    np.testing.assert_array_equal(F, [[-0.8, 12.0, 3.0], [-0.9, 30.0, 4.0]])
    np.testing.assert_array_equal(to_minimisation(raw, [_Obj("acc", "max"), "min", _Obj("mem", "min")]), F)
    objectives = [Objective("acc", "max"), Objective("lat", "min"), Objective("mem", "min")]
    np.testing.assert_array_equal(to_minimisation(raw, objectives), F)
    np.testing.assert_array_equal(from_minimisation(F, dirs), raw)
    np.testing.assert_array_equal(to_minimisation(raw[0], dirs), F[0])
    np.testing.assert_array_equal(direction_signs(dirs), [-1.0, 1.0, 1.0])
    # higher accuracy at higher latency: both are on the front only after the flip
    assert pareto_front(F).tolist() == [0, 1]
    assert pareto_front(raw).tolist() == [0]
    with pytest.raises(ParetoError, match=r"directions\[1\].*allowed: min, max"):
        to_minimisation(raw, ["max", "minimise", "min"])
    with pytest.raises(ParetoError, match="2 given for 3"):
        to_minimisation(raw, ["max", "min"])


# --------------------------------------------------------------------------- plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _plot_data(m: int) -> tuple[np.ndarray, list[str], list[str]]:
    rng = np.random.default_rng(1)
    raw = rng.random((120, m))
    raw[:, 0] = 0.6 + 0.3 * raw[:, 0]
    names = ["accuracy", "latency_ms", "energy_mJ", "memory_MB"][:m]
    return raw, names, ["max"] + ["min"] * (m - 1)


def test_plot_front_2d_writes_png(tmp_path):
    from search.plots import plot_front_2d

    raw, names, dirs = _plot_data(2)
    raw[5] = np.nan
    F = to_minimisation(raw, dirs)
    front = pareto_front(F)
    chosen = {"high": int(front[np.argmax(raw[front, 0])]), "balanced": knee_point(F), "low": int(front[0])}
    out = plot_front_2d(raw, names, dirs, tmp_path / "sub" / "front.png", chosen=chosen, title="t")
    assert out == tmp_path / "sub" / "front.png"
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in out.parent.iterdir()] == ["front.png"]  # no temp file left behind
    with pytest.raises(ParetoError, match="chosen"):
        plot_front_2d(raw, names, dirs, tmp_path / "x.png", chosen={"high": 999})


def test_plot_parallel_and_pairwise_write_png(tmp_path):
    from search.plots import plot_pairwise, plot_parallel

    raw, names, dirs = _plot_data(4)
    chosen = {"high": int(np.argmax(raw[:, 0])), "low": int(np.argmin(raw[:, 2]))}
    out = plot_parallel(raw, names, dirs, tmp_path / "parallel.png", chosen=chosen)
    assert out is not None and out.read_bytes()[:8] == PNG_MAGIC
    mask = np.zeros(len(raw), dtype=bool)
    mask[pareto_front(to_minimisation(raw, dirs))] = True
    out = plot_pairwise(raw[:, :3], names[:3], dirs[:3], tmp_path / "pairs.png", front_mask=mask, chosen=chosen)
    assert out is not None and out.read_bytes()[:8] == PNG_MAGIC


def test_plots_return_none_without_matplotlib(tmp_path, monkeypatch):
    from search.plots import plot_front_2d

    raw, names, dirs = _plot_data(2)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert plot_front_2d(raw, names, dirs, tmp_path / "f.png") is None
    assert not (tmp_path / "f.png").exists()
