"""Partitioning sample indices across federated clients: Dirichlet non-IID, IID, and their statistics.

``dirichlet_partition`` is the standard label-skew partitioner of Hsu et al. (2019), "Measuring
the effects of non-identical data distribution for federated visual classification" (also
Flower Datasets' ``DirichletPartitioner`` without self-balancing): for every class, the share of
its samples each client receives is drawn from ``Dir(alpha, ..., alpha)``. Small ``alpha`` (0.1)
gives clients dominated by one or two classes; large ``alpha`` (100) is close to IID.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from search.data.dataset import DataError
from search.data.splits import rng_for


def _labels(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise DataError(f"labels must be a 1-D array of integer class labels, got {y.dtype} shape {y.shape}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise DataError(f"labels must be >= 0, got {int(y.min())}")
    return y


def _check_clients(n_clients: int) -> int:
    if isinstance(n_clients, bool) or not isinstance(n_clients, int | np.integer) or n_clients < 1:
        raise DataError(f"n_clients must be a positive integer, got {n_clients!r}")
    return int(n_clients)


def dirichlet_partition(
    labels: Sequence[int] | np.ndarray,
    n_clients: int,
    alpha: float,
    seed: int = 0,
    min_size: int = 1,
    max_attempts: int = 1000,
) -> list[np.ndarray]:
    """``n_clients`` disjoint, covering, sorted int64 index arrays with Dirichlet(``alpha``) label skew.

    Per class, the class's rows are shuffled and cut in proportions ``p ~ Dir(alpha * 1)`` over
    clients (cut points ``floor(cumsum(p) * n_c)``). The whole draw is repeated until every client
    holds at least ``min_size`` rows; after ``max_attempts`` draws it gives up with a ``DataError``.
    The same ``seed`` always gives the same partition.
    """
    y = _labels(labels)
    clients = _check_clients(n_clients)
    if not (isinstance(alpha, int | float | np.floating) and np.isfinite(alpha) and alpha > 0):
        raise DataError(f"alpha must be a finite number > 0 (0.1: highly skewed, 100: near IID), got {alpha!r}")
    if isinstance(min_size, bool) or not isinstance(min_size, int | np.integer) or min_size < 0:
        raise DataError(f"min_size must be a non-negative integer, got {min_size!r}")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int | np.integer) or max_attempts < 1:
        raise DataError(f"max_attempts must be a positive integer, got {max_attempts!r}")
    if min_size * clients > len(y):
        raise DataError(
            f"min_size={min_size} for each of {clients} clients needs {min_size * clients} samples, "
            f"but there are only {len(y)}"
        )
    rng = rng_for(seed)
    by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    concentration = np.full(clients, float(alpha))
    smallest = 0
    for _ in range(int(max_attempts)):
        pieces: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for rows in by_class:
            rows = rng.permutation(rows)
            p = rng.dirichlet(concentration)
            cuts = np.minimum(np.floor(np.cumsum(p)[:-1] * len(rows)).astype(np.int64), len(rows))
            for k, chunk in enumerate(np.split(rows, cuts)):
                pieces[k].append(chunk)
        sizes = [sum(len(c) for c in piece) for piece in pieces]
        smallest = max(smallest, min(sizes))
        if min(sizes) >= min_size:
            return [np.sort(np.concatenate(piece)).astype(np.int64) for piece in pieces]
    raise DataError(
        f"dirichlet_partition: no draw in {max_attempts} attempts gave all {clients} clients >= {min_size} samples "
        f"(alpha={alpha}, {len(y)} samples; best smallest client: {smallest}); raise alpha or max_attempts, "
        f"or lower min_size or n_clients"
    )


def iid_partition(
    labels: Sequence[int] | np.ndarray,
    n_clients: int,
    seed: int = 0,
    stratified: bool = True,
) -> list[np.ndarray]:
    """``n_clients`` disjoint, covering, sorted int64 index arrays of near-equal size (differing by at most 1).

    With ``stratified`` each client also gets ``floor`` or ``ceil`` of ``n_c / n_clients`` rows of
    every class ``c`` (rows are shuffled per class, laid end to end and dealt round-robin);
    otherwise it is a plain seeded shuffle cut into equal pieces.
    """
    y = _labels(labels)
    clients = _check_clients(n_clients)
    rng = rng_for(seed)
    if not stratified:
        return [np.sort(p).astype(np.int64) for p in np.array_split(rng.permutation(len(y)), clients)]
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)] or [np.zeros(0, int)])
    # Which client receives the extra rows of the uneven tail is random too, not always client 0.
    owner = rng.permutation(clients)[np.arange(len(order)) % clients]
    return [np.sort(order[owner == k]).astype(np.int64) for k in range(clients)]


@dataclass(frozen=True, eq=False)
class PartitionStats:
    """How a partition spreads samples and classes over clients.

    ``counts[k, c]`` is client ``k``'s number of class-``c`` samples. Per client: ``sizes``,
    ``dominant_share`` (largest class / size) and ``entropy`` (class entropy / log(num_classes):
    1 = uniform, 0 = one class); both are NaN for an empty client and the means skip those.
    ``tv_distance`` is the total-variation distance between a client's class distribution and the
    pooled one (0 = IID). ``size_cv`` is the coefficient of variation of client sizes (0 = equal).
    ``duplicates`` counts index occurrences beyond the first; ``missing`` counts samples in no part.
    """

    counts: np.ndarray
    sizes: np.ndarray
    dominant_share: np.ndarray
    entropy: np.ndarray
    tv_distance: np.ndarray
    mean_dominant_share: float
    mean_entropy: float
    mean_tv_distance: float
    size_cv: float
    duplicates: int
    missing: int

    @property
    def disjoint_and_covering(self) -> bool:
        """True when every sample is in exactly one part."""
        return self.duplicates == 0 and self.missing == 0

    def summary(self) -> dict[str, Any]:
        """JSON-ready scalars plus per-client sizes (for logs and benchmark output)."""
        return {
            "clients": len(self.sizes),
            "sizes": [int(s) for s in self.sizes],
            "mean_dominant_share": self.mean_dominant_share,
            "mean_entropy": self.mean_entropy,
            "mean_tv_distance": self.mean_tv_distance,
            "size_cv": self.size_cv,
            "duplicates": self.duplicates,
            "missing": self.missing,
        }


def partition_stats(
    parts: Sequence[np.ndarray] | Sequence[Sequence[int]],
    labels: Sequence[int] | np.ndarray,
    num_classes: int | None = None,
) -> PartitionStats:
    """``PartitionStats`` of ``parts`` (index arrays into ``labels``); ``num_classes`` defaults to ``max label + 1``."""
    y = _labels(labels)
    k_classes = int(num_classes) if num_classes is not None else (int(y.max()) + 1 if y.size else 1)
    if y.size and y.max() >= k_classes:
        raise DataError(f"num_classes={k_classes} but labels go up to {int(y.max())}")
    if not len(parts):
        raise DataError("parts must hold at least one client's indices")
    counts = np.zeros((len(parts), k_classes), dtype=np.int64)
    seen = np.zeros(len(y), dtype=np.int64)
    for k, part in enumerate(parts):
        idx = np.asarray(part)
        if idx.size == 0:
            continue
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= len(y):
            raise DataError(f"parts[{k}] must be a 1-D array of indices in 0..{len(y) - 1}")
        counts[k] = np.bincount(y[idx], minlength=k_classes)
        seen += np.bincount(idx, minlength=len(y))
    sizes = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = counts / sizes[:, None]
        dominant = dist.max(axis=1)
        plogp = np.where(dist > 0, dist * np.log(np.where(dist > 0, dist, 1.0)), 0.0)
        entropy = -plogp.sum(axis=1) / np.log(k_classes) if k_classes > 1 else np.zeros(len(parts))
        pooled = counts.sum(axis=0) / max(int(sizes.sum()), 1)
        tv = 0.5 * np.abs(dist - pooled).sum(axis=1)
    empty = sizes == 0
    for a in (dominant, entropy, tv):
        a[empty] = np.nan
        a.flags.writeable = False
    mean_size = float(sizes.mean())
    return PartitionStats(
        counts=counts,
        sizes=sizes,
        dominant_share=dominant,
        entropy=entropy,
        tv_distance=tv,
        mean_dominant_share=_nanmean(dominant),
        mean_entropy=_nanmean(entropy),
        mean_tv_distance=_nanmean(tv),
        size_cv=float(sizes.std() / mean_size) if mean_size > 0 else float("nan"),
        duplicates=int(np.maximum(seen - 1, 0).sum()),
        missing=int((seen == 0).sum()),
    )


def _nanmean(a: np.ndarray) -> float:
    return float(np.nanmean(a)) if np.any(~np.isnan(a)) else float("nan")
