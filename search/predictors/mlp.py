"""An MLP accuracy predictor over architecture encodings, in numpy only (no torch on the search path).

Once-for-All ranks subnets with a 3×400 ReLU MLP on a one-hot encoding of the architecture,
trained on a few thousand (arch, supernet accuracy) pairs; a search then queries the MLP instead of
the supernet. ``AccuracyPredictor`` is that model, written against ``SearchSpace`` encodings so
it runs on a device without torch.

Feature maps (``feature_map``):

- ``"onehot"`` (default, OFA's): one block of ``cardinality`` columns per gene, a 1 at the chosen
  option. Genes the architecture does not use (kernel/expand slots beyond a stage's depth in a
  ``MobileNetV3Space``) are all-zero blocks, as in OFA, so "not run" is distinct from "option 0".
  Genes with a single option are dropped (constant columns carry no information). For the MNIST
  MobileNetV3 preset this is 81 columns; OFA's ImageNet space gives 128.
- ``"ordinal"``: one column per gene, ``index / (cardinality - 1)`` in ``[0, 1]`` (inactive genes
  0). Fewer inputs, and it assumes options are ordered (true for kernel, expand, depth,
  resolution, width); useful for small training sets.

Outputs: one (a metric per architecture) or k (e.g. per-class accuracy in %, for federated
clients that mix them with their own label histogram: ``class_mix_evaluator``). ``fit`` takes
``values`` of shape (n,) or (n, k); each column is standardised on its own; ``predict`` returns
(n,) for k = 1 and (n, k) otherwise.

Training: Adam on the mean squared error of the *standardised* target (``y_mean``/``y_std`` are
stored) plus L2 weight decay (1e-3 by default: without it the one-hot MLP overfits a few
hundred archs and its held-out τ drops from ~0.96 to ~0.85 on a smooth synthetic target),
mini-batches, early stopping on a held-out fraction (the best epoch's weights are kept),
all seeded. ``evaluate`` reports RMSE in the target's units and the rank correlations that matter
for search (Kendall τ-b and Spearman ρ, both tie-aware, numpy only).

File format (``save``/``load``): one ``.npz`` without pickles: arrays ``W0, b0, W1, b1, …`` (float64)
and ``__header__``, the UTF-8 bytes of a JSON object (as uint8) with ``format``,
``format_version``, ``layer_sizes``, ``activation``, ``feature_map``, ``normalisation``,
``space`` (``name`` and ``cardinalities``), ``metric``, ``training`` and ``n_outputs`` (files
written before it existed load as one output; ``normalisation`` holds numbers for one output and
lists of k numbers for k). Nothing in it depends
on a Python or library version, unlike the pickled predictors of Once-for-All and nn-Meter that
broke on upgrades; ``load`` checks every field and names the file and field it rejects.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from runtime.fileio import write_npz_atomic
from search.space.base import SearchSpace

__all__ = [
    "FEATURE_MAPS",
    "FORMAT",
    "FORMAT_VERSION",
    "AccuracyPredictor",
    "MetricFn",
    "PredictorError",
    "active_genes",
    "class_mix_evaluator",
    "fit_predictor_from_supernet",
    "kendall_tau",
    "rankdata",
    "spearman",
]

FORMAT = "fleetnas.accuracy_predictor"
FORMAT_VERSION = 1
FEATURE_MAPS = ("onehot", "ordinal")
HEADER_KEY = "__header__"
_HEADER_FIELDS = (
    "format",
    "format_version",
    "layer_sizes",
    "activation",
    "feature_map",
    "normalisation",
    "space",
    "metric",
    "training",
)

MetricFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]


class PredictorError(ValueError):
    """A predictor option, training set or file that does not fit; the message names the field (and file)."""


# ---- rank statistics ------------------------------------------------------------------------
def rankdata(a: ArrayLike) -> np.ndarray:
    """float64 ranks 1..n of ``a`` with ties given their average rank (scipy's ``method='average'``)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    # Start of each run of equal values; a run's average rank is the mean of its positions.
    starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])
    ends = np.r_[starts[1:], len(a)]
    avg = (starts + ends + 1) / 2.0  # mean of (start+1 .. end) in 1-based ranks
    ranks = np.empty(len(a), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def kendall_tau(x: ArrayLike, y: ArrayLike, chunk: int = 512) -> float:
    """Kendall's τ-b of ``x`` and ``y`` (tie-corrected, as ``scipy.stats.kendalltau``); NaN if undefined.

    Exact O(n²) pair counting, vectorised over row chunks so n = 5,000 needs no 25M-entry matrix.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise PredictorError(f"kendall_tau: x and y need the same length, got {x.size} and {y.size}")
    n = x.size
    if n < 2:
        return math.nan
    concordant_minus_discordant = 0
    ties_x = ties_y = 0
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        dx = np.sign(x[start:stop, None] - x[None, :]).astype(np.int8)
        dy = np.sign(y[start:stop, None] - y[None, :]).astype(np.int8)
        # Only pairs (i, j) with j > i: each unordered pair once.
        upper = np.arange(n)[None, :] > np.arange(start, stop)[:, None]
        prod = (dx.astype(np.int16) * dy)[upper]
        concordant_minus_discordant += int(prod.sum(dtype=np.int64))
        ties_x += int(np.count_nonzero((dx == 0) & upper))
        ties_y += int(np.count_nonzero((dy == 0) & upper))
    pairs = n * (n - 1) // 2
    denom = math.sqrt(float(pairs - ties_x) * float(pairs - ties_y))
    return concordant_minus_discordant / denom if denom > 0 else math.nan


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's ρ (Pearson correlation of average ranks); NaN if either side is constant."""
    rx, ry = rankdata(x), rankdata(y)
    if rx.size != ry.size:
        raise PredictorError(f"spearman: x and y need the same length, got {rx.size} and {ry.size}")
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denom if denom > 0 else math.nan


# ---- features -------------------------------------------------------------------------------
def active_genes(space: SearchSpace, codes: np.ndarray) -> np.ndarray:
    """Boolean ``(n, genes)``: which genes the architecture uses (all, unless the space says otherwise).

    A ``MobileNetV3Space`` (anything with ``active_slots`` and kernel/expand offsets) does not run
    the kernel/expand slots beyond each stage's depth.
    """
    arr = np.asarray(codes)
    mask = np.ones(arr.shape, dtype=bool)
    slots = getattr(space, "active_slots", None)
    k_off, e_off = getattr(space, "kernel_offset", None), getattr(space, "expand_offset", None)
    if callable(slots) and isinstance(k_off, int) and isinstance(e_off, int):
        act = np.asarray(slots(arr)).reshape(arr.shape[0], -1)
        width = act.shape[1]
        mask[:, k_off : k_off + width] = act
        mask[:, e_off : e_off + width] = act
    return mask


class AccuracyPredictor:
    """MLP regression from architecture encodings to a metric (accuracy in % by default).

    ``hidden`` are the hidden layer widths (OFA: ``(400, 400, 400)``); everything else is the
    optimiser: Adam (``lr``), ``batch_size``, at most ``epochs`` epochs, stopping after
    ``patience`` epochs without a better validation loss on ``val_fraction`` of the data (no early
    stopping below ``min_val`` held-out rows), L2 ``weight_decay``; ``seed`` fixes init, split and
    batch order.
    """

    def __init__(
        self,
        space: SearchSpace,
        hidden: Sequence[int] = (400, 400, 400),
        feature_map: str = "onehot",
        metric: str = "accuracy",
        lr: float = 1e-3,
        batch_size: int = 64,
        epochs: int = 300,
        patience: int = 30,
        val_fraction: float = 0.1,
        weight_decay: float = 1e-3,
        seed: int = 0,
        min_val: int = 10,
    ) -> None:
        if feature_map not in FEATURE_MAPS:
            raise PredictorError(f"field 'feature_map': {feature_map!r}; allowed: {', '.join(FEATURE_MAPS)}")
        hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in hidden):
            raise PredictorError(f"field 'hidden': layer widths must be positive, got {list(hidden)}")
        for name, value in (("batch_size", batch_size), ("epochs", epochs), ("patience", patience)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PredictorError(f"field {name!r}: need a positive integer, got {value!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise PredictorError(f"field 'val_fraction': need a number in [0, 1), got {val_fraction!r}")
        if not lr > 0 or weight_decay < 0:
            raise PredictorError(
                f"fields 'lr'/'weight_decay': need lr > 0 and weight_decay >= 0, got {lr}, {weight_decay}"
            )
        self.space = space
        self.cardinalities = np.asarray(space.cardinalities, dtype=np.int64).copy()
        self.feature_map = feature_map
        self.metric = metric
        self.hidden = hidden
        self.lr, self.batch_size, self.epochs, self.patience = float(lr), batch_size, epochs, patience
        self.val_fraction, self.weight_decay, self.seed, self.min_val = val_fraction, weight_decay, seed, min_val
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        self.n_outputs = 1
        # floats for one output, (k,) arrays for k outputs
        self.y_mean: float | np.ndarray = 0.0
        self.y_std: float | np.ndarray = 1.0
        self.training: dict[str, Any] = {}

    # ---- features ------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        """Input width of the MLP for this space and feature map."""
        used = self.cardinalities[self.cardinalities > 1]
        return int(used.sum()) if self.feature_map == "onehot" else int(used.size)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """``(n_features, *hidden, n_outputs)``."""
        return (self.n_features, *self.hidden, self.n_outputs)

    def features(self, codes: np.ndarray) -> np.ndarray:
        """float64 ``(n, n_features)``: the MLP input for the encodings ``codes``."""
        arr = self.space.canonicalise(self.space.check_codes(codes))
        arr = np.atleast_2d(arr)
        mask = active_genes(self.space, arr)
        keep = self.cardinalities > 1
        card = self.cardinalities[keep]
        arr, mask = arr[:, keep], mask[:, keep]
        n = arr.shape[0]
        if self.feature_map == "ordinal":
            return np.where(mask, arr / (card - 1), 0.0).astype(np.float64)
        offsets = np.r_[0, np.cumsum(card)[:-1]]
        out = np.zeros((n, int(card.sum())), dtype=np.float64)
        rows, genes = np.nonzero(mask)
        out[rows, offsets[genes] + arr[rows, genes]] = 1.0
        return out

    # ---- the network ---------------------------------------------------------------------
    def _init(self, rng: np.random.Generator) -> None:
        sizes = self.layer_sizes
        # He initialisation for ReLU layers; biases zero.
        self.weights = [rng.normal(0.0, math.sqrt(2.0 / a), size=(a, b)) for a, b in itertools.pairwise(sizes)]
        self.biases = [np.zeros(b) for b in sizes[1:]]

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        acts = [x]
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if i < last:
                h = np.maximum(h, 0.0)
            acts.append(h)
        return h, acts

    def _gradients(self, acts: list[np.ndarray], err: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        # d(mean squared error over all n·k outputs)/d(output) = 2 * err / (n·k)
        delta = (2.0 / err.size) * err
        gw: list[np.ndarray] = [np.empty(0)] * len(self.weights)
        gb: list[np.ndarray] = [np.empty(0)] * len(self.weights)
        for i in range(len(self.weights) - 1, -1, -1):
            gw[i] = acts[i].T @ delta + self.weight_decay * self.weights[i]
            gb[i] = delta.sum(axis=0)
            if i:
                delta = (delta @ self.weights[i].T) * (acts[i] > 0)
        return gw, gb

    @property
    def is_fitted(self) -> bool:
        """True once ``fit`` or ``load`` set the weights."""
        return bool(self.weights)

    # ---- training ------------------------------------------------------------------------
    def fit(self, codes: np.ndarray, values: ArrayLike) -> AccuracyPredictor:
        """Train on ``codes`` → ``values`` (n,) or (n, k) (replacing any earlier weights); returns ``self``."""
        x = self.features(codes)
        y = np.asarray(values, dtype=np.float64)
        if y.ndim == 2 and y.shape[1] == 0:
            raise PredictorError("fit: values of shape (n, 0) have no outputs")
        y = y.reshape(-1, 1) if y.ndim <= 1 else y
        if y.ndim != 2 or y.shape[0] != x.shape[0]:
            raise PredictorError(
                f"fit: {x.shape[0]} encodings but {y.shape[0] if y.ndim == 2 else y.size} values "
                f"(need shape ({x.shape[0]},) or ({x.shape[0]}, k), got {np.shape(values)})"
            )
        n = y.shape[0]
        if n < 2 or not np.all(np.isfinite(y)):
            raise PredictorError(f"fit: need at least 2 finite values, got {n} (finite: {np.isfinite(y).all(1).sum()})")
        started = time.perf_counter()
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(n)
        n_val = round(self.val_fraction * n)
        if n_val < self.min_val or n - n_val < 2:
            n_val = 0
        val_idx, train_idx = order[:n_val], order[n_val:]
        self.n_outputs = int(y.shape[1])
        mean = y[train_idx].mean(axis=0)
        std = y[train_idx].std(axis=0)
        std[std == 0] = 1.0  # a constant column: predict its mean
        self._set_normalisation(mean, std)
        z = (y - mean) / std
        self._init(rng)
        params = [*self.weights, *self.biases]
        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        step = 0
        best = (math.inf, [p.copy() for p in params], 0)
        since_best = 0
        epoch = 0
        for epoch in range(1, self.epochs + 1):
            perm = rng.permutation(train_idx)
            for start in range(0, perm.size, self.batch_size):
                idx = perm[start : start + self.batch_size]
                pred, acts = self._forward(x[idx])
                gw, gb = self._gradients(acts, pred - z[idx])
                step += 1
                for p, g, mi, vi in zip(params, [*gw, *gb], m, v, strict=True):
                    mi *= beta1
                    mi += (1 - beta1) * g
                    vi *= beta2
                    vi += (1 - beta2) * g * g
                    mhat = mi / (1 - beta1**step)
                    vhat = vi / (1 - beta2**step)
                    p -= self.lr * mhat / (np.sqrt(vhat) + eps)  # in place: weights/biases alias params
            if n_val:
                loss = float(np.mean((self._forward(x[val_idx])[0] - z[val_idx]) ** 2))
                if loss < best[0]:
                    best, since_best = (loss, [p.copy() for p in params], epoch), 0
                else:
                    since_best += 1
                    if since_best >= self.patience:
                        break
        if n_val:
            for p, saved in zip(params, best[1], strict=True):
                p[...] = saved
        val_rmse: float | None = None
        per_output: list[float] | None = None
        if n_val and self.n_outputs == 1:
            val_rmse = float(math.sqrt(best[0]) * std[0])
        elif n_val:
            err = (self._forward(x[val_idx])[0] - z[val_idx]) * std
            per_output = [float(v) for v in np.sqrt(np.mean(err**2, axis=0))]
            val_rmse = float(np.mean(per_output))
        self.training = {
            "n_train": int(train_idx.size),
            "n_val": int(n_val),
            "epochs_run": int(epoch),
            "best_epoch": int(best[2]) if n_val else int(epoch),
            "val_rmse": val_rmse,
            **({"val_rmse_per_output": per_output} if per_output is not None else {}),
            "seconds": round(time.perf_counter() - started, 3),
            "optimiser": {
                "name": "adam",
                "lr": self.lr,
                "batch_size": self.batch_size,
                "weight_decay": self.weight_decay,
                "patience": self.patience,
                "seed": self.seed,
            },
        }
        return self

    def _set_normalisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        if self.n_outputs == 1:
            self.y_mean, self.y_std = float(mean[0]), float(std[0])
        else:
            self.y_mean, self.y_std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)

    def predict(self, codes: np.ndarray) -> np.ndarray:
        """float64 ``(n,)`` for one output, ``(n, k)`` for k: predictions in the training values' units."""
        if not self.is_fitted:
            raise PredictorError("predict: the predictor is not fitted (call fit or load first)")
        out = self._forward(self.features(codes))[0] * self.y_std + self.y_mean
        return out[:, 0] if self.n_outputs == 1 else out

    def evaluate(self, codes: np.ndarray, values: ArrayLike) -> dict[str, Any]:
        """``{"rmse", "kendall_tau", "spearman", "n"}`` of the predictions against ``values``.

        With k outputs the three are means over the outputs and ``"per_output"`` holds the k values of each.
        """
        pred = self.predict(codes).reshape(-1, self.n_outputs)
        y = np.asarray(values, dtype=np.float64)
        y = y.reshape(-1, 1) if y.ndim <= 1 else y
        if y.shape != pred.shape:
            raise PredictorError(
                f"evaluate: {pred.shape[0]} encodings with {self.n_outputs} output(s) but values of shape "
                f"{np.shape(values)}"
            )
        rmse = [float(np.sqrt(np.mean((pred[:, j] - y[:, j]) ** 2))) for j in range(self.n_outputs)]
        tau = [kendall_tau(pred[:, j], y[:, j]) for j in range(self.n_outputs)]
        rho = [spearman(pred[:, j], y[:, j]) for j in range(self.n_outputs)]
        report: dict[str, Any] = {
            "rmse": float(np.mean(rmse)),
            "kendall_tau": float(np.mean(tau)),
            "spearman": float(np.mean(rho)),
            "n": float(y.shape[0]),
        }
        if self.n_outputs > 1:
            report["per_output"] = {"rmse": rmse, "kendall_tau": tau, "spearman": rho}
        return report

    def as_evaluator(self, metric: str | None = None) -> MetricFn:
        """A ``SpaceProblem`` evaluator: ``codes -> {metric: predictions}`` (k outputs: their uniform mean)."""
        name = metric or self.metric

        def evaluate(codes: np.ndarray) -> dict[str, np.ndarray]:
            pred = self.predict(codes)
            return {name: pred if pred.ndim == 1 else pred.mean(axis=1)}

        return evaluate

    # ---- files ---------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        """The JSON header ``save`` writes (everything except the weight arrays)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "layer_sizes": list(self.layer_sizes),
            "activation": "relu",
            "feature_map": {"kind": self.feature_map, "mask_inactive": True, "drop_single_option_genes": True},
            "space": {"name": self.space.name, "cardinalities": [int(c) for c in self.cardinalities]},
            "metric": self.metric,
            "training": self.training,
            "n_outputs": self.n_outputs,
            "normalisation": self._normalisation_json(),
        }

    def _normalisation_json(self) -> dict[str, Any]:
        if self.n_outputs == 1:
            return {"y_mean": float(self.y_mean), "y_std": float(self.y_std)}
        return {
            "y_mean": [float(v) for v in np.asarray(self.y_mean)],
            "y_std": [float(v) for v in np.asarray(self.y_std)],
        }

    def save(self, path: str | Path) -> Path:
        """Write the predictor to ``path`` (an ``.npz``, written atomically); returns the path."""
        if not self.is_fitted:
            raise PredictorError("save: the predictor is not fitted")
        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            arrays[f"W{i}"], arrays[f"b{i}"] = w, b
        arrays[HEADER_KEY] = np.frombuffer(json.dumps(self.header()).encode("utf-8"), dtype=np.uint8)
        return write_npz_atomic(path, arrays)

    @classmethod
    def load(cls, path: str | Path, space: SearchSpace) -> AccuracyPredictor:
        """The predictor saved at ``path``, checked against ``space``; PredictorError names file and field."""
        path = Path(path)

        def bad(field: str, why: str) -> PredictorError:
            return PredictorError(f"{path}: field {field!r}: {why}")

        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: np.asarray(data[k]) for k in data.files}
        except FileNotFoundError:
            raise PredictorError(f"{path}: file not found") from None
        except (OSError, ValueError) as exc:
            raise PredictorError(f"{path}: not a predictor .npz file ({exc})") from None
        if HEADER_KEY not in arrays:
            raise bad(HEADER_KEY, "missing (not a fleetnas predictor file)")
        try:
            header = json.loads(arrays.pop(HEADER_KEY).astype(np.uint8).tobytes().decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad(HEADER_KEY, f"not valid UTF-8 JSON ({exc})") from None
        if not isinstance(header, dict):
            raise bad(HEADER_KEY, "must be a JSON object")
        for key in _HEADER_FIELDS:
            if key not in header:
                raise bad(key, "missing from the header")
        if header["format"] != FORMAT:
            raise bad("format", f"{header['format']!r}; expected {FORMAT!r}")
        if header["format_version"] != FORMAT_VERSION:
            raise bad("format_version", f"{header['format_version']!r}; this fleetnas reads version {FORMAT_VERSION}")
        if header["activation"] != "relu":
            raise bad("activation", f"{header['activation']!r}; allowed: relu")
        fmap = header["feature_map"]
        if not isinstance(fmap, dict) or fmap.get("kind") not in FEATURE_MAPS:
            raise bad("feature_map", f"{fmap!r}; need {{'kind': one of {', '.join(FEATURE_MAPS)}}}")
        if fmap.get("mask_inactive", True) is not True or fmap.get("drop_single_option_genes", True) is not True:
            raise bad("feature_map", f"{fmap!r}: only mask_inactive=true, drop_single_option_genes=true are supported")
        sp = header["space"]
        if not isinstance(sp, dict) or "name" not in sp or "cardinalities" not in sp:
            raise bad("space", f"{sp!r}; need 'name' and 'cardinalities'")
        if sp["name"] != space.name:
            raise bad("space.name", f"saved for space {sp['name']!r}, given space {space.name!r}")
        want = [int(c) for c in space.cardinalities]
        if list(sp["cardinalities"]) != want:
            raise bad("space.cardinalities", f"saved {sp['cardinalities']}, space {space.name!r} has {want}")
        k = header.get("n_outputs", 1)  # files from before multi-output predictors have one
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise bad("n_outputs", f"{k!r}; need an integer >= 1")
        norm = header["normalisation"]
        try:
            y_mean = np.asarray(norm["y_mean"], dtype=np.float64).reshape(-1)
            y_std = np.asarray(norm["y_std"], dtype=np.float64).reshape(-1)
        except (TypeError, KeyError, ValueError):
            raise bad(
                "normalisation", f"{norm!r}; need 'y_mean' and 'y_std' (numbers, or lists for k outputs)"
            ) from None
        if y_mean.size != k or y_std.size != k:
            raise bad("normalisation", f"need {k} value(s) each of y_mean and y_std for n_outputs = {k}")
        if not (np.all(np.isfinite(y_mean)) and np.all(np.isfinite(y_std)) and np.all(y_std > 0)):
            raise bad("normalisation", f"need finite y_mean and y_std > 0, got {y_mean.tolist()}, {y_std.tolist()}")
        sizes = header["layer_sizes"]
        if not isinstance(sizes, list) or len(sizes) < 2 or not all(isinstance(s, int) and s > 0 for s in sizes):
            raise bad("layer_sizes", f"{sizes!r}; need a list of >= 2 positive integers")
        pred = cls(space, hidden=sizes[1:-1], feature_map=fmap["kind"], metric=str(header["metric"]))
        pred.n_outputs = k
        if tuple(sizes) != pred.layer_sizes:
            raise bad("layer_sizes", f"{sizes}; the space and feature map need {list(pred.layer_sizes)}")
        weights: list[np.ndarray] = []
        biases: list[np.ndarray] = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            for key, shape, into in ((f"W{i}", (a, b), weights), (f"b{i}", (b,), biases)):
                if key not in arrays:
                    raise bad(key, "array missing")
                arr = arrays.pop(key)
                if arr.shape != shape or not np.issubdtype(arr.dtype, np.floating):
                    raise bad(key, f"need a float array of shape {shape}, got {arr.dtype} {arr.shape}")
                if not np.all(np.isfinite(arr)):
                    raise bad(key, "contains NaN or infinity")
                into.append(arr.astype(np.float64))
        if arrays:
            raise bad(sorted(arrays)[0], f"unexpected array(s) {sorted(arrays)}")
        pred.weights, pred.biases = weights, biases
        pred._set_normalisation(y_mean, y_std)
        pred.training = dict(header["training"]) if isinstance(header["training"], dict) else {}
        return pred


def class_mix_evaluator(
    predictor: AccuracyPredictor, class_weights: ArrayLike, metric: str = "accuracy"
) -> MetricFn:
    """An evaluator ``codes -> {metric: Σ_c p_c · acc_c}`` mixing per-class predictions by ``class_weights``.

    ``class_weights`` (a label histogram: counts or fractions, ≥ 0) is normalised to sum 1 and needs
    one entry per predictor output. A federated client passes its own label histogram, so the
    accuracy estimate is for its own data without the data leaving the device.
    """
    p = np.asarray(class_weights, dtype=np.float64).ravel()
    if p.size != predictor.n_outputs:
        raise PredictorError(
            f"class_mix_evaluator: field 'class_weights': {p.size} weights but the predictor has "
            f"{predictor.n_outputs} output(s) (one per class)"
        )
    if not np.all(np.isfinite(p)) or np.any(p < 0) or not p.sum() > 0:
        raise PredictorError("class_mix_evaluator: field 'class_weights': need finite weights >= 0, not all zero")
    p = p / p.sum()

    def evaluate(codes: np.ndarray) -> dict[str, np.ndarray]:
        pred = predictor.predict(codes).reshape(-1, predictor.n_outputs)
        return {metric: pred @ p}

    return evaluate


def fit_predictor_from_supernet(
    evaluator: MetricFn,
    space: SearchSpace,
    n: int = 1000,
    seed: int = 0,
    holdout: float = 0.2,
    metric: str = "accuracy",
    **predictor_options: Any,
) -> tuple[AccuracyPredictor, dict[str, Any]]:
    """A predictor fitted on ``n`` sampled archs measured by ``evaluator``, and its held-out report.

    ``evaluator`` is any ``codes -> {metric: values}`` function, normally a ``SupernetEvaluator``
    (the only torch in the loop, and it is the caller's). Distinct canonical archs are sampled
    with ``seed``; ``holdout`` of them are kept out of training and scored
    (``{"rmse", "kendall_tau", "spearman", "n"}`` under ``"holdout"``).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 4:
        raise PredictorError(f"field 'n': need an integer >= 4, got {n!r}")
    if not 0.0 < holdout < 1.0:
        raise PredictorError(f"field 'holdout': need a number in (0, 1), got {holdout!r}")
    rng = np.random.default_rng(seed)
    codes = space.distinct_sample(n, rng)
    started = time.perf_counter()
    values = np.asarray(evaluator(codes)[metric], dtype=np.float64)
    measure_seconds = time.perf_counter() - started
    n_test = max(2, round(holdout * len(codes)))
    test, train = np.arange(n_test), np.arange(n_test, len(codes))
    predictor = AccuracyPredictor(space, metric=metric, seed=seed, **predictor_options)
    predictor.fit(codes[train], values[train])
    report = {
        "n_train": int(train.size),
        "n_holdout": int(test.size),
        "measure_seconds": round(measure_seconds, 3),
        "fit_seconds": predictor.training.get("seconds"),
        "holdout": predictor.evaluate(codes[test], values[test]),
        "training": predictor.training,
    }
    return predictor, report
