"""Pareto tools: non-dominated sorting, crowding, hypervolume, IGD, knee and trade-offs.

Everything works in *minimisation form* (the convention of ``search.problem``): a row of ``F``
is one candidate, a column one objective, smaller is better. ``to_minimisation`` converts raw
values whose objectives declare a direction ("min" for latency/energy/memory/size, "max" for
accuracy).

Why this is hand-written instead of calling pymoo/moocore: the predictor-driven search must run
on a device with numpy only (DESIGN.md), and NSGA-II calls the sort and the crowding distance
every generation. The tests check every function against pymoo (``NonDominatedSorting``,
``calc_crowding_distance``, ``HV``, ``IGD``) and moocore on random sets with duplicates and ties.
The one exception is exact hypervolume in four or more objectives (see ``hypervolume``).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Protocol

import numpy as np

DIRECTIONS = ("min", "max")

# Candidate pairs per dominance block in the m >= 4 sort: big enough to amortise numpy call
# overhead, small enough that the boolean comparison matrices stay a few MB.
_BLOCK_PAIRS = 1 << 21
# Below this many points the m >= 4 sort resolves chains inside a block by relaxation.
_LEAF = 48
# Reference points per chunk in IGD: bounds the (chunk, n, m) distance array.
_IGD_CHUNK_ELEMENTS = 1 << 22


class ParetoError(ValueError):
    """Input the Pareto tools cannot use (shape, direction, reference point, degenerate pair)."""


class Directed(Protocol):
    """Anything that declares an optimisation direction (e.g. ``search.problem.Objective``)."""

    @property
    def direction(self) -> str: ...


# --------------------------------------------------------------------------- directions


def direction_signs(directions: Sequence[str | Directed]) -> np.ndarray:
    """+1.0 for each "min" and -1.0 for each "max" entry (strings or objects with ``direction``)."""
    signs = np.empty(len(directions), dtype=float)
    for k, d in enumerate(directions):
        name = d if isinstance(d, str) else d.direction
        if name not in DIRECTIONS:
            raise ParetoError(f"directions[{k}]: {name!r}; allowed: min, max")
        signs[k] = 1.0 if name == "min" else -1.0
    return signs


def to_minimisation(values: np.ndarray, directions: Sequence[str | Directed]) -> np.ndarray:
    """Float copy of ``values`` ((n, m) or (m,)) with every "max" objective negated.

    ``directions`` has one entry per column: "min"/"max" or an object with a ``direction``
    attribute such as ``search.problem.Objective``.
    """
    V = np.asarray(values, dtype=float)
    m = V.shape[-1] if V.ndim else 0
    if len(directions) != m:
        raise ParetoError(f"directions: {len(directions)} given for {m} objectives")
    return V * direction_signs(directions)


def from_minimisation(F: np.ndarray, directions: Sequence[str | Directed]) -> np.ndarray:
    """Raw values (natural direction) back from minimisation form; the inverse of ``to_minimisation``."""
    return to_minimisation(F, directions)


# --------------------------------------------------------------------------- sorting


def _as_objectives(F: np.ndarray) -> np.ndarray:
    A = np.asarray(F, dtype=float)
    if A.ndim == 1:
        A = A[:, None]
    if A.ndim != 2:
        raise ParetoError(f"F: expected a 2-D array (n points, m objectives), got shape {A.shape}")
    return A


def _rank_sorted_unique_2d(U: np.ndarray) -> np.ndarray:
    # U is lexsorted without duplicates, so every earlier point with f2 <= ours dominates us.
    # The last f2 placed in each front is that front's smallest, and these minima increase with
    # the front index, so a point's front is the first whose minimum exceeds its f2.
    front_min: list[float] = []
    ranks = np.empty(len(U), dtype=np.int64)
    for i, f2 in enumerate(U[:, 1].tolist()):
        k = bisect_right(front_min, f2)
        if k == len(front_min):
            front_min.append(f2)
        else:
            front_min[k] = f2
        ranks[i] = k
    return ranks


def _rank_sorted_unique_3d(U: np.ndarray) -> np.ndarray:
    # In lexsorted unique rows an earlier point dominates a later one iff it is <= in (f2, f3).
    # Each front keeps the 2-D staircase of its points' (f2, f3) (f2 ascending, f3 descending,
    # stored negated so both lists bisect ascending). "Front k holds a dominator" is monotone in
    # k (a dominator in front k is itself dominated by front k-1), so the rank is found by a
    # binary search over fronts, each probe a binary search in a staircase: O(n log² n).
    stair_f2: list[list[float]] = []
    stair_nf3: list[list[float]] = []
    ranks = np.empty(len(U), dtype=np.int64)
    for i, (f2, f3) in enumerate(U[:, 1:3].tolist()):
        nf3 = -f3
        lo, hi = 0, len(stair_f2)
        while lo < hi:
            mid = (lo + hi) // 2
            j = bisect_right(stair_f2[mid], f2) - 1
            if j >= 0 and stair_nf3[mid][j] >= nf3:
                lo = mid + 1
            else:
                hi = mid
        if lo == len(stair_f2):
            stair_f2.append([f2])
            stair_nf3.append([nf3])
        else:
            xs, nys = stair_f2[lo], stair_nf3[lo]
            pos = bisect_left(xs, f2)
            end = bisect_right(nys, nf3, pos)  # the run this point now dominates in (f2, f3)
            xs[pos:end] = [f2]
            nys[pos:end] = [nf3]
        ranks[i] = lo
    return ranks


def _rank_sorted_unique_nd(U: np.ndarray) -> np.ndarray:
    # A point's front index is the length of the longest dominance chain ending in it, and only
    # earlier (lexsorted, unique) points can dominate it, iff <= in objectives 2..m. Divide and
    # conquer: rank the left half, push "max dominator rank + 1" from it into the right half in
    # one vectorised block test, then rank the right half. O(n² m / 2) comparisons, but in numpy.
    n, m = U.shape
    rest = np.ascontiguousarray(U[:, 1:])
    ranks = np.zeros(n, dtype=np.int64)

    def push(lo: int, mid: int, hi: int) -> None:
        # left points sorted by rank, descending, so the first dominator found has the max rank
        perm = lo + np.argsort(-ranks[lo:mid], kind="stable")
        E = rest[perm]
        above = ranks[perm] + 1
        step = max(1, _BLOCK_PAIRS // len(E))
        for s in range(mid, hi, step):
            t = min(hi, s + step)
            weak = np.ones((t - s, len(E)), dtype=bool)
            buf = np.empty_like(weak)
            for k in range(m - 1):
                np.greater_equal(rest[s:t, k, None], E[None, :, k], out=buf)
                weak &= buf
            first = weak.argmax(axis=1)
            found = weak[np.arange(t - s), first]
            np.maximum(ranks[s:t], np.where(found, above[first], 0), out=ranks[s:t])

    def leaf(lo: int, hi: int) -> None:
        L = rest[lo:hi]
        W = np.triu(np.ones((hi - lo, hi - lo), dtype=bool), 1)  # W[j, i]: j dominates i
        for k in range(m - 1):
            W &= L[:, None, k] <= L[None, :, k]
        if not W.any():
            return
        base = ranks[lo:hi].copy()
        r = base
        while True:  # at most chain-length + 1 rounds, and a leaf is small
            new = np.maximum(base, np.where(W, r[:, None] + 1, 0).max(axis=0))
            if np.array_equal(new, r):
                break
            r = new
        ranks[lo:hi] = r

    def solve(lo: int, hi: int) -> None:
        if hi - lo <= _LEAF:
            leaf(lo, hi)
            return
        mid = (lo + hi) // 2
        solve(lo, mid)
        push(lo, mid, hi)
        solve(mid, hi)

    solve(0, n)
    return ranks


def nondominated_rank(F: np.ndarray) -> np.ndarray:
    """Front index of every row of ``F`` (int64, shape (n,); 0 = non-dominated).

    ``F`` is (n, m) in minimisation form. ``a`` dominates ``b`` when ``a <= b`` everywhere and
    ``a < b`` somewhere, so exact duplicates never dominate each other and share a rank (as in
    pymoo and moocore). Rows containing NaN cannot be compared: they all get rank
    ``max_rank + 1``, one front after the last real one (0 if every row has a NaN); ±inf compare
    as ordinary values.

    Duplicates are collapsed after one lexicographic sort, after which only earlier rows can
    dominate later ones. m == 2: binary search over front minima, O(n log n). m == 3: binary
    search over per-front 2-D staircases, O(n log² n). m >= 4: blocked numpy dominance tests,
    O(n² m) comparisons in O(n · block) memory.
    """
    A = _as_objectives(F)
    n, m = A.shape
    ranks = np.zeros(n, dtype=np.int64)
    if n == 0:
        return ranks
    valid = ~np.isnan(A).any(axis=1)
    idx = np.flatnonzero(valid)
    if len(idx):
        V = A[idx]
        order = np.lexsort(V.T[::-1])
        S = V[order]
        new = np.ones(len(S), dtype=bool)
        new[1:] = np.any(S[1:] != S[:-1], axis=1)
        U = S[new]
        if m == 1:
            unique_ranks = np.arange(len(U), dtype=np.int64)
        elif m == 2:
            unique_ranks = _rank_sorted_unique_2d(U)
        elif m == 3:
            unique_ranks = _rank_sorted_unique_3d(U)
        else:
            unique_ranks = _rank_sorted_unique_nd(U)
        ranks[idx[order]] = unique_ranks[np.cumsum(new) - 1]
    if len(idx) < n:
        ranks[~valid] = ranks[idx].max() + 1 if len(idx) else 0
    return ranks


def nondominated_sort(F: np.ndarray) -> list[np.ndarray]:
    """Fronts as ascending int64 index arrays, best front first (rows with NaN form the last one)."""
    ranks = nondominated_rank(F)
    if len(ranks) == 0:
        return []
    order = np.argsort(ranks, kind="stable")
    bounds = np.flatnonzero(np.diff(ranks[order])) + 1
    return [part.astype(np.int64) for part in np.split(order, bounds)]


def pareto_front(F: np.ndarray) -> np.ndarray:
    """Ascending indices of the non-dominated rows of ``F`` (rank 0; duplicates all kept)."""
    A = _as_objectives(F)
    if len(A) == 0:
        return np.zeros(0, dtype=np.int64)
    ranks = nondominated_rank(A)
    front = np.flatnonzero(ranks == 0)
    # all-NaN input ranks every row 0 "after the last front"; those rows are not a front
    return front[~np.isnan(A[front]).any(axis=1)]


def crowding_distance(F: np.ndarray, filter_duplicates: bool = False) -> np.ndarray:
    """NSGA-II crowding distance of every row of one front (float (n,); larger = more isolated).

    Same definition as pymoo 0.6's ``calc_crowding_distance`` (NSGA-II's ``"cd"``): for each
    objective sort the points (stable, so ties keep index order) and give each the gap between
    its two neighbours divided by the objective's range; sum over objectives and divide by m.
    Each objective's first and last point get ``inf``; an objective with zero range contributes
    0 to every point, its end points included. With n <= 2 every point gets ``inf``.
    Duplicates are not filtered by default, like pymoo's ``"cd"``: copies split the gap around
    them (so the result depends on their index order).

    Where we differ from pymoo: ``filter_duplicates=True`` gives every repeat of an earlier row 0
    and computes the others as if the repeats were absent (what pymoo's other crowding functions
    do via ``find_duplicates``, a Euclidean distance <= 1e-32 on an n × n matrix; we use exact
    equality after a sort, O(n log n)). Rows with NaN get 0 and are left out of the others'
    computation (pymoo would spread the NaN).
    """
    A = _as_objectives(F)
    n, m = A.shape
    out = np.zeros(n, dtype=float)
    keep = ~np.isnan(A).any(axis=1)
    if filter_duplicates and n:
        order = np.lexsort(A.T[::-1])
        S = A[order]
        repeat = np.zeros(n, dtype=bool)
        repeat[1:] = np.all(S[1:] == S[:-1], axis=1)
        group = np.cumsum(~repeat) - 1
        # the survivor of a group of copies is its lowest index, not the sort's first member
        lowest = np.full(int(group[-1]) + 1, n, dtype=np.int64)
        np.minimum.at(lowest, group, order)
        first = np.zeros(n, dtype=bool)
        first[lowest] = True
        keep &= first
    idx = np.flatnonzero(keep)
    X = A[idx]
    if len(X) <= 2:
        out[idx] = np.inf
        return out
    I = np.argsort(X, axis=0, kind="stable")  # noqa: E741
    cols = np.arange(m)
    Xs = X[I, cols]
    span = Xs[-1] - Xs[0]
    gap = np.empty_like(Xs)
    gap[1:-1] = Xs[2:] - Xs[:-2]
    gap[0] = gap[-1] = np.inf
    with np.errstate(invalid="ignore"):  # inf/inf for an infinite range: contributes 0 below
        contrib = np.where(span > 0, gap / np.where(span > 0, span, 1.0), 0.0)
    contrib[np.isnan(contrib)] = 0.0
    per_point = np.empty_like(contrib)
    per_point[I, cols] = contrib
    out[idx] = per_point.sum(axis=1) / m
    return out


# --------------------------------------------------------------------------- hypervolume


def _hv_2d(P: np.ndarray, ref: np.ndarray) -> float:
    # sweep in f1: between consecutive f1 values the covered height is ref2 - (best f2 so far)
    P = P[np.lexsort((P[:, 1], P[:, 0]))]
    best = np.minimum.accumulate(P[:, 1])
    widths = np.diff(np.append(P[:, 0], ref[0]))
    return float(np.sum(widths * (ref[1] - best)))


def _hv_3d(P: np.ndarray, ref: np.ndarray) -> float:
    # Slice along f3: insert points in increasing f3 into a 2-D staircase of (f1, f2) and keep
    # its dominated area up to date; each slab between consecutive f3 values adds area × height.
    # Each point is inserted and removed at most once, so O(n log n) apart from list shifts.
    P = P[np.argsort(P[:, 2], kind="stable")]
    r1, r2, r3 = (float(v) for v in ref)
    xs: list[float] = []  # staircase f1, ascending
    nys: list[float] = []  # staircase -f2, ascending (f2 descending)
    area = 0.0
    volume = 0.0
    rows = P.tolist()
    for i, (x, y, z) in enumerate(rows):
        j = bisect_right(xs, x) - 1
        if not (j >= 0 and -nys[j] <= y):  # not dominated in (f1, f2): it adds area
            pos = bisect_left(xs, x)
            end = bisect_right(nys, -y, pos)
            top = -nys[pos - 1] if pos > 0 else r2
            next_x = xs[end] if end < len(xs) else r1
            run_x = [*xs[pos:end], next_x]
            added = (run_x[0] - x) * (top - y)
            for k in range(end - pos):
                added += (run_x[k + 1] - run_x[k]) * (-nys[pos + k] - y)
            area += added
            xs[pos:end] = [x]
            nys[pos:end] = [-y]
        z_next = rows[i + 1][2] if i + 1 < len(rows) else r3
        volume += area * (z_next - z)
    return volume


def _hv_slicing(P: np.ndarray, ref: np.ndarray) -> float:
    # Hypervolume by slicing objects (HSO) along the last objective down to the 3-D sweep:
    # exact but O(n^(m-2) log n); the numpy-only fallback when moocore is not installed.
    m = P.shape[1]
    if m == 2:
        return _hv_2d(P, ref)
    if m == 3:
        return _hv_3d(P, ref)
    P = P[np.argsort(P[:, -1], kind="stable")]
    z = np.append(P[:, -1], ref[-1])
    total = 0.0
    for i in range(len(P)):
        height = z[i + 1] - z[i]
        if height > 0:
            head = P[: i + 1, :-1]
            total += height * _hv_slicing(head[pareto_front(head)], ref[:-1])
    return total


def hypervolume(F: np.ndarray, ref: Sequence[float] | np.ndarray) -> float:
    """Exact hypervolume dominated by ``F`` (minimisation form) and bounded by ``ref``.

    Points that do not strictly dominate ``ref`` (some objective >= ref) and rows with NaN are
    ignored; an empty set gives 0. 1-D: ref - min. 2-D: sort sweep, O(n log n). 3-D: slicing
    along f3 over an incrementally updated 2-D staircase, O(n log n). 4 or more objectives:
    ``moocore.hypervolume`` (imported lazily). Exact hypervolume is #P-hard in the number of
    objectives and the best algorithms (HV4D+, WFG) are intricate C code whose numpy
    translation would be slow and a second thing to keep correct; pymoo's ``HV`` itself calls
    moocore. Without moocore we fall back to exact numpy slicing (fine for a few hundred points).
    """
    A = _as_objectives(F)
    bound = np.asarray(ref, dtype=float).ravel()
    if A.shape[1] != len(bound):
        raise ParetoError(f"ref: {len(bound)} values for {A.shape[1]} objectives")
    if np.isnan(bound).any():
        raise ParetoError("ref: contains NaN")
    inside = ~np.isnan(A).any(axis=1) & np.less(A, bound).all(axis=1)
    P = A[inside]
    if len(P) == 0:
        return 0.0
    m = P.shape[1]
    if m == 1:
        return float(bound[0] - P[:, 0].min())
    if m <= 3:
        return _hv_2d(P, bound) if m == 2 else _hv_3d(P, bound)
    try:
        import moocore
    except ImportError:
        return _hv_slicing(P[pareto_front(P)], bound)
    return float(moocore.hypervolume(P, ref=bound))


def front_change(prev_F: np.ndarray, new_F: np.ndarray, ref: Sequence[float] | np.ndarray) -> float:
    """Relative hypervolume change |HV(new) − HV(prev)| / HV(prev) between two generations (≥ 0).

    Both sets are in minimisation form and measured against the same ``ref``; dominated points
    do not matter. A strategy calls the search converged when this stays below a tolerance for
    a few generations. If HV(prev) is 0 the result is 0 when HV(new) is also 0, else ``inf``.
    """
    before = hypervolume(prev_F, ref)
    after = hypervolume(new_F, ref)
    if before == 0.0:
        return 0.0 if after == 0.0 else math.inf
    return abs(after - before) / before


# --------------------------------------------------------------------------- distance indicators


def _mean_min_distance(Z: np.ndarray, A: np.ndarray, plus: bool) -> float:
    if len(Z) == 0:
        raise ParetoError("reference_front: is empty")
    if len(A) == 0:
        return math.inf
    step = max(1, _IGD_CHUNK_ELEMENTS // max(1, A.size))
    best = np.empty(len(Z))
    for s in range(0, len(Z), step):
        diff = A[None, :, :] - Z[s : s + step, None, :]
        if plus:  # IGD+: only the amount by which a is worse than z counts
            np.maximum(diff, 0.0, out=diff)
        best[s : s + step] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff).min(axis=1))
    return float(best.mean())


def _indicator_inputs(F: np.ndarray, reference_front: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    A = _as_objectives(F)
    Z = _as_objectives(reference_front)
    if A.shape[1] != Z.shape[1]:
        raise ParetoError(f"reference_front: {Z.shape[1]} objectives, F has {A.shape[1]}")
    return A[~np.isnan(A).any(axis=1)], Z


def igd(F: np.ndarray, reference_front: np.ndarray) -> float:
    """Inverted generational distance: mean over reference points of the Euclidean distance to the nearest row of ``F``.

    Same value as pymoo's ``IGD(reference_front)`` (no normalisation). Rows of ``F`` with NaN
    are ignored; an empty ``F`` gives ``inf``.
    """
    A, Z = _indicator_inputs(F, reference_front)
    return _mean_min_distance(Z, A, plus=False)


def igd_plus(F: np.ndarray, reference_front: np.ndarray) -> float:
    """IGD+ (Ishibuchi et al. 2015): like ``igd`` with d⁺(z, a) = ‖max(a − z, 0)‖, Pareto-compliant.

    Same value as pymoo's ``IGDPlus(reference_front)`` (minimisation form, no normalisation).
    """
    A, Z = _indicator_inputs(F, reference_front)
    return _mean_min_distance(Z, A, plus=True)


# --------------------------------------------------------------------------- choosing points


def knee_point(F: np.ndarray) -> int:
    """Index (into ``F``) of the knee: the front point farthest below the plane through the extremes.

    Definition: take the non-dominated rows of ``F`` (minimisation form; NaN rows ignored),
    normalise each objective to [0, 1] over them (ideal → 0, nadir → 1; a zero-range objective
    becomes 0). The extreme point of objective k is the front point with the smallest value of
    k (ties: smallest normalised sum). The hyperplane through the m extremes is {x : w·x = 1};
    the knee maximises the signed distance (1 − w·x) / ‖w‖ towards the ideal point. In 2-D the
    extremes are (0, 1) and (1, 0) and this is the classic "farthest from the chord" rule.

    Fallbacks: if the extremes do not span a plane with a positive normal (two objectives share
    an extreme, degenerate or collinear fronts), the plane is Σx = 1 through the unit points.
    A single-point front returns that point; ties go to the lowest index.
    """
    A = _as_objectives(F)
    front = pareto_front(A)
    if len(front) == 0:
        raise ParetoError("F: no comparable point (empty or all NaN)")
    if len(front) == 1:
        return int(front[0])
    P = A[front]
    lo, hi = P.min(axis=0), P.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    X = (P - lo) / span
    m = X.shape[1]
    extremes = np.array([np.lexsort((X.sum(axis=1), X[:, k]))[0] for k in range(m)])
    w = np.ones(m)
    if len(set(extremes.tolist())) == m:
        try:
            candidate = np.linalg.solve(X[extremes], np.ones(m))
        except np.linalg.LinAlgError:
            candidate = None
        if candidate is not None and np.all(np.isfinite(candidate)) and np.all(candidate > 0):
            w = candidate
    distance = (1.0 - X @ w) / np.linalg.norm(w)
    return int(front[int(np.argmax(distance))])


def tradeoff(F_raw: np.ndarray, i: int, j: int, objectives: tuple[int, int] = (0, 1)) -> float:
    """Normalised trade-off (Δf1/f1) / (Δf2/f2) of moving from point ``i`` to point ``j``.

    With ``a, b = objectives`` and raw (natural-direction, positive) values ``F_raw``:
    Δf1/f1 = (F[j, a] − F[i, a]) / F[i, a] and Δf2/f2 = (F[j, b] − F[i, b]) / F[i, b]; both
    changes are relative to point ``i``. Example: accuracy 0.80 → 0.76 (−5 %) while latency
    20 ms → 10 ms (−50 %) gives 0.1: each 1 % of latency saved costs 0.1 % of accuracy.
    Raises ``ParetoError`` if a base value is not positive or objective b does not change.
    """
    V = _as_objectives(F_raw)
    a, b = objectives
    base_a, base_b = float(V[i, a]), float(V[i, b])
    if not (base_a > 0 and base_b > 0):
        raise ParetoError(f"F_raw: trade-off needs positive values at point {i}, got {base_a}, {base_b}")
    rel_b = (float(V[j, b]) - base_b) / base_b
    if rel_b == 0:
        raise ParetoError(f"objectives: objective {b} is equal at points {i} and {j}; trade-off undefined")
    return ((float(V[j, a]) - base_a) / base_a) / rel_b
