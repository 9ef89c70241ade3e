"""Deterministic splits, proxy subsets and mini-batches of a ``Dataset``.

Subsets keep their parent's ``mean``/``std``/``scale``: a train split, a proxy for fast search and
the test split must all be preprocessed exactly like the deployed model's input.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import replace
from fractions import Fraction

import numpy as np

from search.data.dataset import DataError, Dataset

DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)  # train / validation-for-search / test
_FRACTION_TOLERANCE = 1e-6


def rng_for(seed: int, *streams: int) -> np.random.Generator:
    """A PCG64 generator for ``seed`` (a non-negative int), optionally on a sub-stream keyed by ``streams``."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng([int(seed), *streams])


def split_sizes(n: int, fractions: Sequence[float] | np.ndarray) -> np.ndarray:
    """int64 part sizes summing to ``n``: ``floor(f_k * n)``, leftover rows one each to the largest remainders.

    Ties in the remainder go to the earlier part (largest-remainder / Hamilton rounding), e.g.
    1,797 rows at (0.7, 0.15, 0.15) → 1258, 270, 269.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise DataError(f"n must be a non-negative integer, got {n!r}")
    f = _check_fractions(fractions)
    # Exact rational arithmetic: floats like 0.15 * 500 must not floor to 74, and the thirds in
    # (1/3, 1/3, 1/3) must tie so the earlier part wins.
    shares = [Fraction(float(v)).limit_denominator(1_000_000) for v in f]
    total = sum(shares, Fraction(0))
    exact = [s / total * n for s in shares]
    base = [math.floor(e) for e in exact]
    order = sorted(range(len(exact)), key=lambda k: (-(exact[k] - base[k]), k))
    for k in order[: n - sum(base)]:
        base[k] += 1
    return np.asarray(base, dtype=np.int64)


def _check_fractions(fractions: Sequence[float] | np.ndarray) -> np.ndarray:
    try:
        f = np.asarray(fractions, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"fractions must be a sequence of numbers, got {fractions!r}") from exc
    if f.ndim != 1 or f.size == 0:
        raise DataError(f"fractions must be a non-empty sequence like {DEFAULT_FRACTIONS}, got {fractions!r}")
    if not np.all(np.isfinite(f)) or np.any(f < 0) or abs(f.sum() - 1.0) > _FRACTION_TOLERANCE:
        raise DataError(f"fractions must be >= 0 and sum to 1 (e.g. {DEFAULT_FRACTIONS}), got {tuple(f.tolist())}")
    return f / f.sum()


def stratified_allocation(class_counts: Sequence[int] | np.ndarray, sizes: Sequence[int] | np.ndarray) -> np.ndarray:
    """int64 ``(classes, parts)``: rows of each class per part; row sums ``class_counts``, column sums ``sizes``.

    Every cell is ``floor`` or ``ceil`` of the proportional share ``n_c * size_k / N`` (and equals
    it when that is whole): controlled rounding, so stratification never costs the exact part sizes.
    The floors are fixed; the leftover +1s form a 0/1 transportation problem that the fractional
    remainders prove feasible, solved greedily (largest remaining part first) with augmenting
    paths for the rare case the greedy choice blocks a later class.
    """
    counts = np.asarray(class_counts, dtype=np.int64)
    target = np.asarray(sizes, dtype=np.int64)
    total = int(counts.sum())
    if int(target.sum()) != total:
        raise DataError(f"part sizes sum to {int(target.sum())} but there are {total} rows")
    if total == 0:
        return np.zeros((len(counts), len(target)), dtype=np.int64)
    base, rem = np.divmod(np.outer(counts, target), total)
    need_row = counts - base.sum(axis=1)
    need_col = target - base.sum(axis=0)
    allowed = rem > 0
    extra = np.zeros_like(base)
    for c in np.argsort(-need_row, kind="stable"):
        for _ in range(int(need_row[c])):
            free = [k for k in range(len(target)) if allowed[c, k] and not extra[c, k] and need_col[k] > 0]
            if free:
                k = max(free, key=lambda k: (need_col[k], rem[c, k], -k))
                extra[c, k] = 1
                need_col[k] -= 1
            elif not _augment(int(c), extra, allowed, need_col):
                raise RuntimeError("stratified_allocation: no feasible rounding (a bug: one always exists)")
    return base + extra


def _augment(c: int, extra: np.ndarray, allowed: np.ndarray, need_col: np.ndarray) -> bool:
    # Kuhn-style augmenting path, breadth-first over parts: row c enters a full part, one of that
    # part's extra rows moves on to another part it may take, ... until a part with room is reached.
    # Since a full solution exists, such a path exists whenever a row still needs a unit.
    parent: dict[int, tuple[int, int]] = {}  # part -> (row entering it, part that row leaves; -1 for c)
    frontier = [k for k in range(extra.shape[1]) if allowed[c, k] and not extra[c, k]]
    for k in frontier:
        parent[k] = (c, -1)
    while frontier:
        nxt: list[int] = []
        for k in frontier:
            if need_col[k] > 0:
                need_col[k] -= 1
                while True:
                    row, prev = parent[k]
                    extra[row, k] = 1
                    if prev < 0:
                        return True
                    extra[row, prev] = 0
                    k = prev
            for holder in np.flatnonzero(extra[:, k]):
                for k2 in range(extra.shape[1]):
                    if k2 not in parent and allowed[holder, k2] and not extra[holder, k2]:
                        parent[k2] = (int(holder), k)
                        nxt.append(k2)
        frontier = nxt
    return False


def split_indices(
    labels: Sequence[int] | np.ndarray,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    stratified: bool = True,
) -> tuple[np.ndarray, ...]:
    """One int64 index array per fraction: the rows ``split`` puts in each part (same rules, same seed → same rows)."""
    y = np.asarray(labels)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)) or (y.size and y.min() < 0):
        raise DataError(f"labels must be a 1-D array of non-negative integer labels, got {y.dtype} shape {y.shape}")
    sizes = split_sizes(len(y), fractions)
    rng = rng_for(seed)
    if not stratified:
        return tuple(p.astype(np.int64) for p in np.split(rng.permutation(len(y)), np.cumsum(sizes)[:-1]))
    counts = np.bincount(y.astype(np.int64), minlength=1)
    allocation = stratified_allocation(counts, sizes)
    pieces: list[list[np.ndarray]] = [[] for _ in sizes]
    for c in range(len(counts)):
        rows = rng.permutation(np.flatnonzero(y == c))
        for k, chunk in enumerate(np.split(rows, np.cumsum(allocation[c])[:-1])):
            pieces[k].append(chunk)
    return tuple(rng.permutation(np.concatenate(p)).astype(np.int64) for p in pieces)


def split(
    ds: Dataset,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    stratified: bool = True,
) -> tuple[Dataset, ...]:
    """One ``Dataset`` per fraction — by default (train, validation-for-search, test) — disjoint and covering ``ds``.

    Sizes are exactly ``split_sizes(len(ds), fractions)`` (largest-remainder rounding, ties to the
    earlier part). With ``stratified`` each class contributes ``floor`` or ``ceil`` of its
    proportional share to every part (``stratified_allocation``); e.g. mnist5k at the default
    fractions gives 3500/750/750 rows, 350/75/75 per class, and digits (1,797 rows) 1258/270/269.
    Which rows go where is fixed by ``seed``; rows inside a part are in shuffled (seeded) order,
    never grouped by class. ``split_indices`` returns the row indices instead.
    """
    return tuple(ds.take(idx) for idx in split_indices(ds.y, fractions, seed, stratified))


def proxy(
    ds: Dataset,
    fraction: float = 1.0,
    classes: Sequence[str] | Sequence[int] | None = None,
    seed: int = 0,
) -> Dataset:
    """A smaller stand-in for ``ds``: a stratified ``fraction`` of the rows of (optionally) a subset of ``classes``.

    ``classes`` are names (``ds.classes``) or label ints; the kept classes are relabelled
    ``0..k-1`` in their original label order (so ``[7, 1]`` and ``[1, 7]`` give the same result)
    and ``classes`` is updated. Each kept class keeps ``max(1, round_half_up(fraction * n_c))`` of
    its ``n_c`` rows (never vanishing), drawn from a per-class stream of ``seed``: a smaller
    fraction is a subset of a larger one, and a class's rows do not depend on which other classes
    are kept. Rows stay in their original relative order; ``fraction=1`` of all classes is ``ds`` itself.
    """
    if not (isinstance(fraction, int | float) and 0.0 < fraction <= 1.0):
        raise DataError(f"fraction must be a number in (0, 1], got {fraction!r}")
    rng_for(seed)  # validates seed before any work
    labels = _resolve_classes(ds, classes)
    if fraction == 1.0 and len(labels) == ds.num_classes:
        return ds  # nothing to drop; a Dataset is immutable, so sharing it is safe
    keep: list[np.ndarray] = []
    for label in labels:
        rows = np.flatnonzero(ds.y == label)
        if not len(rows):
            continue
        n_keep = max(1, math.floor(fraction * len(rows) + 0.5))
        keep.append(rng_for(seed, label).permutation(rows)[:n_keep])
    subset = ds.take(np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64))
    if len(labels) == ds.num_classes:
        return subset
    remap = np.full(ds.num_classes, -1, dtype=np.int64)
    remap[labels] = np.arange(len(labels))
    return replace(subset, y=remap[subset.y], classes=tuple(ds.classes[i] for i in labels))


def _resolve_classes(ds: Dataset, classes: Sequence[str] | Sequence[int] | None) -> list[int]:
    if classes is None:
        return list(range(ds.num_classes))
    if isinstance(classes, str):
        classes = [classes]
    chosen = list(classes)
    if not chosen:
        raise DataError(f"classes must name at least one of {list(ds.classes)}")
    labels: list[int] = []
    for c in chosen:
        if isinstance(c, str):
            if c not in ds.classes:
                raise DataError(f"class {c!r} is not in dataset {ds.name!r}; classes are {list(ds.classes)}")
            labels.append(ds.classes.index(c))
        elif isinstance(c, int | np.integer) and not isinstance(c, bool):
            if not 0 <= int(c) < ds.num_classes:
                raise DataError(f"class label {c} is out of range 0..{ds.num_classes - 1} for dataset {ds.name!r}")
            labels.append(int(c))
        else:
            raise DataError(f"classes must be class names or label ints, got {c!r}")
    if len(set(labels)) != len(labels):
        raise DataError(f"classes must not repeat a class, got {chosen}")
    return sorted(labels)


def batches(
    ds: Dataset,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterator of ``(x, y)`` batches (fresh, writable float32 / int64 arrays) covering ``ds`` once.

    With ``shuffle`` the order is a permutation fixed by ``seed`` (pass e.g. ``seed + epoch`` for a
    new order each epoch); the last batch is smaller unless ``drop_last``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    order = rng_for(seed).permutation(len(ds)) if shuffle else np.arange(len(ds))
    # Validation happens above, at call time; the generator below only does the slicing.
    return _batches(ds, order, int(batch_size), drop_last)


def _batches(
    ds: Dataset, order: np.ndarray, batch_size: int, drop_last: bool
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield ds.x[idx], ds.y[idx]
