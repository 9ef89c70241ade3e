"""The one in-memory image dataset type shared by search, federation and device-side code.

Preprocessing convention (the same for every loader, and what a device or an ONNX export must
reproduce): a raw pixel value ``v`` in ``[0, scale]`` (``scale`` is 255 for 8-bit images, 16 for
scikit-learn's digits) becomes ``(v / scale - mean[c]) / std[c]`` for channel ``c``. By default
``mean``/``std`` are the per-channel statistics of the whole loaded dataset *after* the ``/ scale``
step, so ``x`` has zero mean and unit variance per channel. Loading with ``standardise=False``
records ``mean = 0`` and ``std = 1``, i.e. plain ``[0, 1]`` scaling, through the same formula.

Why statistics of the whole loaded dataset rather than of the training split: a deployed model has
one fixed preprocessing baked into its bundle, and every split, proxy subset and federated client
must see the same one. Two numbers per channel leak nothing useful about the test rows. When data
must be expressed in somebody else's statistics (a client's local images in the global
preprocessing), use ``Dataset.with_stats``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

LAYOUT = "NCHW"


class DataError(ValueError):
    """Data a loader or a split cannot use: the message names the file, field or key and what is allowed."""


class MissingDependencyError(ImportError):
    """An optional package a loader needs is not installed; the message names the extra to install."""


def _readonly(a: np.ndarray) -> np.ndarray:
    # A view, so freezing our copy never flips the flag on an array the caller still owns.
    v = a.view()
    v.flags.writeable = False
    return v


@dataclass(frozen=True, eq=False)
class Dataset:
    """An image classification dataset held in memory, already preprocessed (see module docstring).

    ``x`` is float32 ``(N, C, H, W)``, ``y`` int64 ``(N,)`` with labels in ``0..len(classes)-1``;
    ``mean``/``std`` have one entry per channel and ``scale`` is the raw value that maps to 1.0.
    Both arrays are read-only views: a ``Dataset`` is a value (``eq=False`` because element-wise
    array comparison has no single truth value; compare fields explicitly).
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    source: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1.0

    def __post_init__(self) -> None:
        x = np.asarray(self.x)
        y = np.asarray(self.y)
        if x.ndim != 4:
            raise DataError(f"dataset {self.name!r}: x must be 4-D (N, C, H, W), got shape {x.shape}")
        if x.dtype != np.float32:
            raise DataError(f"dataset {self.name!r}: x must be float32, got {x.dtype}")
        if y.ndim != 1 or y.dtype != np.int64:
            raise DataError(f"dataset {self.name!r}: y must be a 1-D int64 array, got {y.dtype} shape {y.shape}")
        if len(y) != len(x):
            raise DataError(f"dataset {self.name!r}: {len(x)} samples in x but {len(y)} labels in y")
        classes = tuple(str(c) for c in self.classes)
        if not classes:
            raise DataError(f"dataset {self.name!r}: classes must name at least one class")
        if len(set(classes)) != len(classes):
            raise DataError(f"dataset {self.name!r}: class names must be unique, got {classes}")
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise DataError(
                f"dataset {self.name!r}: labels must lie in 0..{len(classes) - 1} (one per class), "
                f"got {int(y.min())}..{int(y.max())}"
            )
        channels = x.shape[1]
        mean = tuple(float(m) for m in self.mean)
        std = tuple(float(s) for s in self.std)
        if len(mean) != channels or len(std) != channels:
            raise DataError(
                f"dataset {self.name!r}: mean and std need one value per channel ({channels}), "
                f"got {len(mean)} and {len(std)}"
            )
        if not all(np.isfinite(s) and s > 0 for s in std) or not all(np.isfinite(m) for m in mean):
            raise DataError(f"dataset {self.name!r}: std must be finite and > 0 and mean finite, got {mean}, {std}")
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise DataError(f"dataset {self.name!r}: scale must be finite and > 0, got {self.scale}")
        object.__setattr__(self, "x", _readonly(x))
        object.__setattr__(self, "y", _readonly(y))
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "scale", float(self.scale))

    def __len__(self) -> int:
        """Number of samples."""
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n={len(self)}, input_shape={self.input_shape}, "
            f"classes={self.num_classes}, source={self.source!r})"
        )

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``), whether or not every class has samples."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one sample."""
        _, c, h, w = self.x.shape
        return int(c), int(h), int(w)

    def class_counts(self) -> np.ndarray:
        """int64 ``(num_classes,)``: samples per class label."""
        return np.bincount(self.y, minlength=len(self.classes)).astype(np.int64)

    def take(self, indices: Sequence[int] | np.ndarray) -> Dataset:
        """The rows at ``indices`` (ints in any order, repeats allowed, or a boolean mask), same classes and stats."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise DataError(f"take: a boolean mask must have shape ({len(self)},), got {idx.shape}")
            idx = np.flatnonzero(idx)
        elif idx.size == 0:
            idx = np.zeros(0, dtype=np.int64)
        elif idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise DataError(f"take: indices must be a 1-D integer array or boolean mask, got {idx.dtype} {idx.shape}")
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise DataError(f"take: indices must lie in 0..{len(self) - 1}, got {int(idx.min())}..{int(idx.max())}")
        return replace(self, x=self.x[idx], y=self.y[idx])

    def preprocess(self, raw: np.ndarray) -> np.ndarray:
        """float32 model input for raw pixels ``(..., C, H, W)`` in ``[0, scale]``: what a device must compute."""
        raw = np.asarray(raw, dtype=np.float32)
        if raw.ndim < 3 or raw.shape[-3] != len(self.mean):
            raise DataError(f"preprocess: expected (..., {len(self.mean)}, H, W) raw values, got shape {raw.shape}")
        mean, std = _channel_arrays(self.mean, self.std)
        return ((raw / np.float32(self.scale) - mean) / std).astype(np.float32, copy=False)

    def unnormalised(self) -> np.ndarray:
        """float32 ``(N, C, H, W)``: ``x`` mapped back to the ``[0, 1]`` scale (raw / ``scale``)."""
        mean, std = _channel_arrays(self.mean, self.std)
        return (self.x * std + mean).astype(np.float32, copy=False)

    def with_stats(self, mean: Sequence[float], std: Sequence[float]) -> Dataset:
        """The same samples re-expressed under other per-channel ``mean``/``std`` (e.g. a training set's)."""
        new_mean, new_std = _channel_arrays(mean, std)
        if new_mean.size != len(self.mean) or new_std.size != len(self.std):
            raise DataError(f"with_stats: mean and std need {len(self.mean)} values (one per channel)")
        x = ((self.unnormalised() - new_mean) / new_std).astype(np.float32, copy=False)
        return replace(self, x=x, mean=tuple(mean), std=tuple(std))

    def preprocessing(self) -> dict[str, Any]:
        """JSON-ready description of the preprocessing (``layout``, ``scale``, ``mean``, ``std``) for bundles."""
        return {"layout": LAYOUT, "scale": self.scale, "mean": list(self.mean), "std": list(self.std)}


def _channel_arrays(mean: Sequence[float], std: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    # Shaped (C, 1, 1) so they broadcast over both (C, H, W) and (N, C, H, W).
    m = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s)) and np.all(s > 0)):
        raise DataError(f"mean must be finite and std finite and > 0, got {list(mean)}, {list(std)}")
    return m, s


def from_raw(
    name: str,
    raw: np.ndarray,
    y: np.ndarray,
    classes: Sequence[str],
    source: str,
    scale: float,
    standardise: bool = True,
) -> Dataset:
    """A ``Dataset`` from raw ``(N, C, H, W)`` values in ``[0, scale]``, standardised per channel or ``[0, 1]``-scaled.

    With ``standardise`` the mean/std are of this data after ``/ scale`` (population std); a channel
    that is constant gets std 1 so it maps to zeros instead of dividing by zero.
    """
    if not (np.isfinite(scale) and scale > 0):
        raise DataError(f"dataset {name!r}: scale must be finite and > 0, got {scale}")
    raw = np.asarray(raw)
    if raw.ndim != 4:
        raise DataError(f"dataset {name!r}: raw images must be 4-D (N, C, H, W), got shape {raw.shape}")
    unit = raw.astype(np.float32) / np.float32(scale)  # always a fresh array: normalised in place below
    channels = unit.shape[1]
    if standardise and len(unit):
        mean = tuple(float(m) for m in unit.mean(axis=(0, 2, 3), dtype=np.float64))
        std = tuple(float(s) if s > 0 else 1.0 for s in unit.std(axis=(0, 2, 3), dtype=np.float64))
    else:
        mean, std = (0.0,) * channels, (1.0,) * channels
    m, s = _channel_arrays(mean, std)
    # In place: image folders can be large.
    unit -= m
    unit /= s
    return Dataset(
        name=name,
        x=unit,
        y=np.asarray(y, dtype=np.int64),
        classes=tuple(classes),
        source=source,
        mean=mean,
        std=std,
        scale=float(scale),
    )
