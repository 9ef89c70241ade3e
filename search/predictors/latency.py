"""Latency predictors built from measurements on the device: lookup table, calibrated roofline, learned.

Every predictor here has one form: a vector per block configuration (``search.profiling.blocks``
fragment key), summed over the fragments a network runs, then a linear map::

    latency_ms(arch) = w . sum_{fragment f in arch} phi(f) + b

so ``predict`` is one gather-and-sum over per-slot tables (``FeatureTable``) — 10,000
architectures in milliseconds — and a saved predictor is a JSON file of ``phi`` per key, ``w``
and ``b``: no pickle, nothing that depends on a library version (nn-Meter's pickled scikit-learn
forests stopped loading after an upgrade). The kinds:

- ``lut``: ``phi = [measured block latency]``, ``w = 1``, ``b`` a fitted per-network constant
  (input, session call; the relative-error least-squares mean of the training residuals, or
  the measured run overhead without training networks). Once-for-All's latency table, measured.
- ``roofline``: ``phi = [roofline time of the block]`` with per-class utilisation, memory
  utilisation and a per-layer overhead fitted on the block measurements (alternating least
  squares over which roof binds each layer), against the measured peak and bandwidth; ``w, b``
  fitted on training networks if given.
- ``learned``: ``phi = [measured block latency, FEATURES...]`` (MACs per class, bytes, boundary
  and residual-add elements that isolation pays and a network fuses, squeeze-excite elements,
  ONNX Runtime node counts under its fusion rules — see ``search.predictors.features``) and
  ``w, b`` from ridge regression weighted for relative error on end-to-end timed networks. It
  is additive per layer, like nn-Meter's kernel-level model, but learns from whole networks what
  the sum of isolated blocks misses.
- ``flops``: ``phi = [MFLOPs]``, ``w`` a least-squares factor: the baseline.

Fits minimise relative error (weights ``1 / y``), the quantity the validation reports.

``LatencyTable`` is the measured lookup table file (``fleetnas profile`` writes it); a lookup of
a key the table lacks raises ``MissingBlockError`` naming the key and the file.

``PeakMemoryPredictor`` maps the analytic peak activation memory (MCUNet's definition, from
``search.cost``) to ONNX Runtime's measured peak by a fitted linear map. ``DeviceScaledCost``
turns the measured latency into latency and DVFS energy on a catalogue device.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.fileio import load_json, write_text_atomic
from runtime.hardware import DeviceProfile
from runtime.hardware.workload import layer_class
from runtime.netspec import DTYPE_BYTES
from search.predictors.features import FEATURES, FeatureTable, MissingBlockError, space_features
from search.predictors.mlp import kendall_tau
from search.profiling.blocks import SpaceBlocks, decompose
from search.space.mobilenetv3 import MobileNetV3Config, MobileNetV3Space

LUT_FORMAT = "fleetnas.latency_lut"
PREDICTOR_FORMAT = "fleetnas.latency_predictor"
FORMAT_VERSION = 1
KINDS = ("lut", "roofline", "learned", "flops")
ROOF_CLASSES = ("conv", "depthwise", "linear", "elementwise")
DEFAULT_METRIC = "latency_ms_measured"

MetricFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]


class LatencyPredictorError(ValueError):
    """A latency table or predictor file, or a fit, that does not fit; the message names file and field."""


def _read_versioned(p: Path, fmt: str) -> tuple[dict[str, Any], Callable[[str, str], LatencyPredictorError]]:
    """(the JSON object in ``p``, a field-error maker for ``p``) after checking its format and version."""
    data = load_json(p, LatencyPredictorError)

    def bad(fld: str, why: str) -> LatencyPredictorError:
        return LatencyPredictorError(f"{p}: field '{fld}': {why}")

    if not isinstance(data, dict):
        raise bad("<top level>", "expected a JSON object")
    if data.get("format") != fmt:
        raise bad("format", f"{data.get('format')!r}; expected {fmt!r}")
    if data.get("format_version") != FORMAT_VERSION:
        raise bad("format_version", f"{data.get('format_version')!r}; this fleetnas reads {FORMAT_VERSION}")
    return data, bad


# ---- the measured lookup table ------------------------------------------------------------------
@dataclass(frozen=True)
class LatencyTable:
    """Measured per-block latency (ms, net of one session call's overhead) by fragment key.

    ``stats`` keeps each key's timing summary (median, MAD, samples kept and rejected);
    ``meta`` what was measured where (space config, alignment, device, threads).
    """

    entries: Mapping[str, float]
    run_overhead_ms: float
    stats: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    def lookup(self, key: str) -> float:
        """The latency in ms of block ``key``; ``MissingBlockError`` names the key and the table file."""
        try:
            return float(self.entries[key])
        except KeyError:
            kind = key.split(":", 1)[0]
            near = sorted(k for k in self.entries if k.split(":", 1)[0] == kind)[:3]
            raise MissingBlockError(
                f"{self.source}: no entry for block {key!r}; the table has {len(self.entries)} entries"
                + (f" (e.g. {', '.join(near)})" if near else "")
                + " — profile this space on this device (fleetnas profile --space ...)"
            ) from None

    def to_json(self) -> dict[str, Any]:
        """The file's JSON form."""
        return {
            "format": LUT_FORMAT,
            "format_version": FORMAT_VERSION,
            "units": "ms",
            "note": "entry ms = robust median of the block's run time minus run_overhead_ms",
            "run_overhead_ms": self.run_overhead_ms,
            "meta": dict(self.meta),
            "entries": {k: {"ms": float(v), **dict(self.stats.get(k, {}))} for k, v in self.entries.items()},
        }

    def save(self, path: str | Path) -> Path:
        """Write the table as JSON (atomically); returns the path."""
        return write_text_atomic(path, json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Read and check a table file; ``LatencyPredictorError`` names the file and field."""
        p = Path(path)
        data, bad = _read_versioned(p, LUT_FORMAT)
        entries, stats = {}, {}
        raw = data.get("entries")
        if not isinstance(raw, dict) or not raw:
            raise bad("entries", "expected a non-empty mapping of block key -> {ms: ...}")
        for key, value in raw.items():
            ms = value.get("ms") if isinstance(value, dict) else None
            if isinstance(ms, bool) or not isinstance(ms, int | float) or not math.isfinite(ms):
                raise bad(f"entries.{key}.ms", f"expected a finite number, got {ms!r}")
            entries[key] = float(ms)
            stats[key] = {k: v for k, v in value.items() if k != "ms"}
        overhead = data.get("run_overhead_ms", 0.0)
        if isinstance(overhead, bool) or not isinstance(overhead, int | float) or overhead < 0:
            raise bad("run_overhead_ms", f"expected a number >= 0, got {overhead!r}")
        meta = data.get("meta", {})
        return cls(entries, float(overhead), stats, meta if isinstance(meta, dict) else {}, str(p))


# ---- roofline calibration on block measurements -----------------------------------------------------
@dataclass(frozen=True)
class RooflineParams:
    """Measured peak and bandwidth, fitted per-class utilisation and memory utilisation, per-layer overhead."""

    peak_gflops: float
    bandwidth_gbps: float
    utilisation: Mapping[str, float]
    memory_utilisation: float
    layer_overhead_ms: float

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {**asdict(self), "utilisation": dict(self.utilisation)}


def _layer_terms(blocks: SpaceBlocks) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per layer of every fragment: fragment index, class index, FLOPs, bytes moved."""
    frag, cls, flops, moved = [], [], [], []
    nbytes = DTYPE_BYTES[blocks.dtype]
    for i, f in enumerate(blocks.fragments.values()):
        c = f.net.cost_arrays()
        for j, layer in enumerate(f.net.layers):
            frag.append(i)
            cls.append(ROOF_CLASSES.index(layer_class(layer, f.net.input_shapes_of(j)[0][0])))
            flops.append(float(c["flops"][j]))
            moved.append(float(c["weight_elems"][j] + c["input_elems"][j] + c["output_elems"][j]) * nbytes)
    return np.array(frag), np.array(cls), np.array(flops), np.array(moved)


def _roof_times(terms: tuple[np.ndarray, ...], theta: np.ndarray, n_frag: int) -> np.ndarray:
    frag, cls, flops, moved = terms
    per_layer = np.maximum(flops * theta[cls], moved * theta[4]) + theta[5]
    return np.bincount(frag, weights=per_layer, minlength=n_frag)


def _nonneg_lstsq(A: np.ndarray, y: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Least squares with each coefficient at least ``floor`` (active-set: pin violators, refit)."""
    pinned = np.zeros(A.shape[1], dtype=bool)
    coef = floor.astype(np.float64).copy()
    for _ in range(A.shape[1] + 1):
        free = ~pinned
        rhs = y - A[:, pinned] @ floor[pinned]
        sol = np.linalg.lstsq(A[:, free], rhs, rcond=None)[0] if free.any() else np.zeros(0)
        coef[free], coef[pinned] = sol, floor[pinned]
        low = free & (coef < floor)
        if not low.any():
            return coef
        pinned |= low
    return np.maximum(coef, floor)


def calibrate_roofline(
    blocks: SpaceBlocks, table: LatencyTable, peak_gflops: float, bandwidth_gbps: float, iterations: int = 30
) -> RooflineParams:
    """Per-class utilisation, memory utilisation and per-layer overhead fitted on the block measurements.

    Alternating least squares: given which roof binds each layer, block time is linear in
    ``1 / (peak * u_class)``, ``1 / (bandwidth * u_mem)`` and the overhead; refit, reassign, repeat.
    Utilisations are capped at 1 (the measured roofs) and floored at 0.1 %.
    """
    terms = _layer_terms(blocks)
    keys = list(blocks.fragments)
    y = np.array([table.lookup(k) for k in keys])
    frag, cls, flops, moved = terms
    n = len(keys)
    peak = peak_gflops * 1e9 / 1e3  # FLOP per ms
    bw = bandwidth_gbps * 1e9 / 1e3  # bytes per ms
    theta = np.array([1 / (peak * 0.6), 1 / (peak * 0.25), 1 / (peak * 0.3), 1 / (peak * 0.15), 1 / (bw * 0.7), 0.0])
    floor = np.array([1 / peak] * 4 + [1 / bw, 0.0])  # utilisation <= 1, overhead >= 0
    w = 1.0 / np.maximum(y, 1e-6)  # relative error
    for _ in range(iterations):
        compute = flops * theta[cls] >= moved * theta[4]
        A = np.zeros((n, 6))
        for c in range(4):
            np.add.at(A[:, c], frag, np.where(compute & (cls == c), flops, 0.0))
        np.add.at(A[:, 4], frag, np.where(compute, 0.0, moved))
        np.add.at(A[:, 5], frag, 1.0)
        used = A.any(axis=0)
        coef = theta.copy()
        coef[used] = _nonneg_lstsq(A[:, used] * w[:, None], y * w, floor[used])
        if np.allclose(coef, theta, rtol=1e-9, atol=0):
            break
        theta = coef
    util = {c: float(min(1.0, max(1e-3, 1 / (theta[i] * peak)))) for i, c in enumerate(ROOF_CLASSES)}
    return RooflineParams(
        peak_gflops=float(peak_gflops),
        bandwidth_gbps=float(bandwidth_gbps),
        utilisation=util,
        memory_utilisation=float(min(1.0, max(1e-3, 1 / (theta[4] * bw)))),
        layer_overhead_ms=float(theta[5]),
    )


def roofline_fragment_ms(blocks: SpaceBlocks, params: RooflineParams) -> dict[str, float]:
    """Roofline time in ms of every fragment under ``params``, by key."""
    peak = params.peak_gflops * 1e9 / 1e3
    bw = params.bandwidth_gbps * 1e9 / 1e3
    theta = np.array(
        [1 / (peak * params.utilisation[c]) for c in ROOF_CLASSES]
        + [1 / (bw * params.memory_utilisation), params.layer_overhead_ms]
    )
    times = _roof_times(_layer_terms(blocks), theta, len(blocks.fragments))
    return dict(zip(blocks.fragments, times.tolist(), strict=True))


# ---- accuracy figures -----------------------------------------------------------------------------
def accuracy_report(
    predicted: Sequence[float] | np.ndarray, measured: Sequence[float] | np.ndarray
) -> dict[str, float]:
    """``within_10pct``, ``within_5pct`` (shares), ``rmse_pct`` (relative, %), ``kendall_tau`` and ``n``."""
    p = np.asarray(predicted, dtype=np.float64).ravel()
    y = np.asarray(measured, dtype=np.float64).ravel()
    if p.shape != y.shape or y.size == 0 or np.any(y <= 0):
        raise LatencyPredictorError(f"accuracy_report: need equal-length positive measurements, got {p.size}/{y.size}")
    rel = p / y - 1.0
    return {
        "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
        "within_5pct": float(np.mean(np.abs(rel) <= 0.05)),
        "rmse_pct": float(100.0 * np.sqrt(np.mean(rel**2))),
        "kendall_tau": float(kendall_tau(p, y)),
        "n": int(y.size),
    }


# ---- the predictor ----------------------------------------------------------------------------------
def _space_json(space: MobileNetV3Space) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(space.config).items()}


def _wls(A: np.ndarray, y: np.ndarray, ridge: float = 0.0, intercept: bool = True) -> tuple[np.ndarray, float]:
    """Weights and intercept minimising sum(((A w + b - y) / y)^2) + ridge |w_scaled|^2 (columns scaled)."""
    w = 1.0 / y
    X = np.column_stack([A, np.ones(len(y))]) if intercept else A
    Xw = X * w[:, None]
    scale = np.abs(Xw).max(axis=0)
    scale[scale == 0] = 1.0
    Z = Xw / scale
    penalty = ridge * np.eye(Z.shape[1])
    if intercept:
        penalty[-1, -1] = 0.0  # never shrink the intercept
    coef = np.linalg.solve(Z.T @ Z + penalty, Z.T @ (y * w)) / scale
    return (coef[:-1], float(coef[-1])) if intercept else (coef, 0.0)


class LatencyPredictor:
    """``latency_ms = weights . sum of per-fragment vectors + bias`` for a MobileNetV3 space (module docstring).

    ``vectors`` maps every fragment key of the space (at ``alignment``) to its ``(F,)`` vector
    named by ``features``. ``predict`` is vectorised; ``save``/``load`` use JSON only.
    """

    def __init__(
        self,
        space: MobileNetV3Space,
        kind: str,
        features: Sequence[str],
        vectors: Mapping[str, Sequence[float] | np.ndarray],
        weights: Sequence[float] | np.ndarray,
        bias: float,
        *,
        alignment: int = 8,
        info: Mapping[str, Any] | None = None,
        source: str = "<memory>",
        blocks: SpaceBlocks | None = None,
    ) -> None:
        if kind not in KINDS:
            raise LatencyPredictorError(f"{source}: field 'kind': {kind!r}; allowed: {', '.join(KINDS)}")
        self.space = space
        self.kind = kind
        self.features = tuple(features)
        self.weights = np.asarray(weights, dtype=np.float64).ravel()
        if self.weights.size != len(self.features):
            raise LatencyPredictorError(
                f"{source}: field 'weights': {self.weights.size} values for {len(self.features)} features"
            )
        self.bias = float(bias)
        self.alignment = alignment
        self.info = dict(info or {})
        self.source = source
        self.blocks = blocks if blocks is not None and blocks.alignment == alignment else decompose(space, alignment)
        self.vectors = {k: np.asarray(v, dtype=np.float64).ravel() for k, v in vectors.items()}
        bad = [k for k, v in self.vectors.items() if v.size != len(self.features) or not np.all(np.isfinite(v))]
        if bad:
            raise LatencyPredictorError(f"{source}: field 'vectors.{bad[0]}': need {len(self.features)} finite numbers")
        # w . phi per fragment, precomputed: predict is then one scalar gather-and-sum.
        scalars: dict[str, Sequence[float] | np.ndarray] = {
            k: [float(v @ self.weights)] for k, v in self.vectors.items()
        }
        self._table = FeatureTable(self.blocks, scalars, source)

    def predict(self, codes: np.ndarray) -> np.ndarray:
        """float64 ``(n,)``: predicted latency in ms of every encoding in ``codes``."""
        return self._table.sum(codes)[:, 0] + self.bias

    def predict_archs(self, archs: Sequence[Any]) -> np.ndarray:
        """float64 ``(n,)``: predicted latency in ms of a list of Archs of the space."""
        return self.predict(self.space.encode_batch(archs))

    def as_evaluator(self, metric: str = DEFAULT_METRIC) -> MetricFn:
        """A ``SpaceProblem`` evaluator: ``codes -> {metric: predicted ms}``."""

        def evaluate(codes: np.ndarray) -> dict[str, np.ndarray]:
            return {metric: self.predict(codes)}

        return evaluate

    def evaluate(self, codes: np.ndarray, measured_ms: Sequence[float] | np.ndarray) -> dict[str, float]:
        """``accuracy_report`` of this predictor on ``codes`` against measured latencies."""
        return accuracy_report(self.predict(codes), measured_ms)

    # ---- files ------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The file's JSON form."""
        return {
            "format": PREDICTOR_FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "units": "ms",
            "space": {"name": self.space.name, "config": _space_json(self.space)},
            "alignment": self.alignment,
            "features": list(self.features),
            "weights": self.weights.tolist(),
            "bias": self.bias,
            "info": self.info,
            "vectors": {k: v.tolist() for k, v in self.vectors.items()},
        }

    def save(self, path: str | Path) -> Path:
        """Write the predictor as JSON (atomically); returns the path."""
        return write_text_atomic(path, json.dumps(self.to_json()) + "\n")

    @classmethod
    def load(cls, path: str | Path, space: MobileNetV3Space | None = None) -> LatencyPredictor:
        """The predictor saved at ``path`` for ``space`` (default: the one saved in it); errors name file and field."""
        p = Path(path)
        data, bad = _read_versioned(p, PREDICTOR_FORMAT)
        for key in ("kind", "space", "alignment", "features", "weights", "bias", "vectors"):
            if key not in data:
                raise bad(key, "missing")
        try:
            saved = MobileNetV3Config.from_dict(data["space"]["config"], source=f"{p}: space.config")
        except (TypeError, KeyError, ValueError) as exc:
            raise bad("space", f"not a MobileNetV3 space configuration ({exc})") from None
        if space is None:
            space = MobileNetV3Space(saved)
        elif saved != space.config:
            raise bad("space", f"saved for space {saved.name!r} with a different configuration than {space.name!r}")
        alignment = data["alignment"]
        if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment < 1:
            raise bad("alignment", f"expected an integer >= 1, got {alignment!r}")
        if not isinstance(data["vectors"], dict):
            raise bad("vectors", "expected a mapping of block key -> list of numbers")
        return cls(
            space,
            str(data["kind"]),
            [str(f) for f in data["features"]],
            data["vectors"],
            data["weights"],
            float(data["bias"]),
            alignment=alignment,
            info=data.get("info") if isinstance(data.get("info"), dict) else {},
            source=str(p),
        )


# ---- fitting ----------------------------------------------------------------------------------------
def _check_training(codes: np.ndarray | None, ms: Sequence[float] | np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if codes is None or ms is None:
        raise LatencyPredictorError("this predictor needs training networks: codes and measured ms")
    y = np.asarray(ms, dtype=np.float64).ravel()
    c = np.asarray(codes)
    if c.ndim != 2 or c.shape[0] != y.size or y.size < 2 or np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise LatencyPredictorError(
            f"training set: need >= 2 encodings with one positive measured latency each, got {c.shape} and {y.size}"
        )
    return c, y


def fit_lut(
    space: MobileNetV3Space,
    table: LatencyTable,
    codes: np.ndarray | None = None,
    ms: Sequence[float] | np.ndarray | None = None,
    alignment: int = 8,
    blocks: SpaceBlocks | None = None,
) -> LatencyPredictor:
    """LUT sum + a per-network constant (fitted on ``codes``/``ms`` if given, else the measured run overhead)."""
    blocks = blocks if blocks is not None else decompose(space, alignment)
    vectors = {k: [table.lookup(k)] for k in blocks.fragments}
    pred = LatencyPredictor(
        space,
        "lut",
        ["lut_ms"],
        vectors,
        [1.0],
        table.run_overhead_ms,
        alignment=alignment,
        source=table.source,
        blocks=blocks,
    )
    info: dict[str, Any] = {"table": table.source, "constant": "measured run overhead"}
    if codes is not None:
        c, y = _check_training(codes, ms)
        s = pred.predict(c) - pred.bias
        pred.bias = float(np.sum((y - s) / y**2) / np.sum(1 / y**2))  # relative-error least squares
        info = {"table": table.source, "constant": "fitted", "n_train": int(y.size)}
    pred.info = info
    return pred


def fit_roofline(
    space: MobileNetV3Space,
    table: LatencyTable,
    peak_gflops: float,
    bandwidth_gbps: float,
    codes: np.ndarray | None = None,
    ms: Sequence[float] | np.ndarray | None = None,
    alignment: int = 8,
    blocks: SpaceBlocks | None = None,
) -> LatencyPredictor:
    """Roofline calibrated on the block table; network scale and constant fitted on ``codes``/``ms`` if given."""
    blocks = blocks if blocks is not None else decompose(space, alignment)
    params = calibrate_roofline(blocks, table, peak_gflops, bandwidth_gbps)
    vectors = {k: [v] for k, v in roofline_fragment_ms(blocks, params).items()}
    pred = LatencyPredictor(
        space,
        "roofline",
        ["roofline_ms"],
        vectors,
        [1.0],
        table.run_overhead_ms,
        alignment=alignment,
        source=table.source,
        blocks=blocks,
    )
    if codes is not None:
        c, y = _check_training(codes, ms)
        w, b = _wls((pred.predict(c) - pred.bias)[:, None], y)
        pred = LatencyPredictor(
            space, "roofline", ["roofline_ms"], vectors, w, b, alignment=alignment, source=table.source, blocks=blocks
        )
    pred.info = {"params": params.to_json(), "n_train": 0 if codes is None else len(codes)}
    return pred


def fit_learned(
    space: MobileNetV3Space,
    table: LatencyTable,
    codes: np.ndarray,
    ms: Sequence[float] | np.ndarray,
    alignment: int = 8,
    ridge: float = 1e-4,
    blocks: SpaceBlocks | None = None,
) -> LatencyPredictor:
    """Ridge regression (relative-error weighted) of measured network latency on summed block features."""
    c, y = _check_training(codes, ms)
    blocks = blocks if blocks is not None else decompose(space, alignment)
    feats = space_features(blocks)
    names = ["lut_ms", *FEATURES]
    vectors = {k: np.concatenate([[table.lookup(k)], feats[k]]) for k in blocks.fragments}
    X = FeatureTable(blocks, vectors, table.source).sum(c)
    w, b = _wls(X, y, ridge=ridge)
    pred = LatencyPredictor(
        space, "learned", names, vectors, w, b, alignment=alignment, source=table.source, blocks=blocks
    )
    pred.info = {"table": table.source, "ridge": ridge, "n_train": int(y.size), "weighting": "relative error"}
    return pred


def fit_flops(
    space: MobileNetV3Space,
    codes: np.ndarray,
    ms: Sequence[float] | np.ndarray,
    alignment: int = 8,
    blocks: SpaceBlocks | None = None,
) -> LatencyPredictor:
    """The FLOPs baseline: ``latency = a * MFLOPs`` with ``a`` by relative-error least squares."""
    c, y = _check_training(codes, ms)
    blocks = blocks if blocks is not None else decompose(space, alignment)
    vectors = {k: [float(f.net.cost_arrays()["flops"].sum()) / 1e6] for k, f in blocks.fragments.items()}
    flops = FeatureTable(blocks, vectors, "flops").sum(c)
    w, _ = _wls(flops, y, intercept=False)
    pred = LatencyPredictor(space, "flops", ["mflops"], vectors, w, 0.0, alignment=alignment, blocks=blocks)
    pred.info = {"n_train": int(y.size)}
    return pred


# ---- peak memory -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PeakMemoryPredictor:
    """ONNX Runtime's peak inference memory (bytes) as ``scale * analytic peak + offset``.

    The analytic peak is ``SpaceCostTable``'s ``peak_activation_bytes`` (MCUNet's definition);
    the fit is relative-error least squares on measured models (``search.profiling.memory``).
    """

    scale: float = 1.0
    offset: float = 0.0

    @classmethod
    def fit(
        cls, analytic_bytes: Sequence[float] | np.ndarray, measured_bytes: Sequence[float] | np.ndarray
    ) -> PeakMemoryPredictor:
        """The predictor fitted on pairs of analytic and measured peaks."""
        a = np.asarray(analytic_bytes, dtype=np.float64).ravel()
        m = np.asarray(measured_bytes, dtype=np.float64).ravel()
        if a.size != m.size or a.size < 2 or np.any(m <= 0):
            raise LatencyPredictorError("peak memory fit: need >= 2 pairs with positive measured peaks")
        w, b = _wls(a[:, None], m)
        return cls(float(w[0]), b)

    def predict(self, analytic_bytes: Sequence[float] | np.ndarray) -> np.ndarray:
        """float64 ``(n,)``: predicted measured peak bytes."""
        return self.scale * np.asarray(analytic_bytes, dtype=np.float64) + self.offset


# ---- other devices: latency and energy through the roofline ratio and the DVFS model --------------------
class DeviceScaledCost:
    """Latency and DVFS energy on a catalogue ``device``, from the latency predicted on the measured machine.

    Scaling by the ratio of roofline estimates: ``k = predicted_here / roofline_here`` (how much
    slower real execution is than the roofline on the measured machine, per architecture) is
    assumed to carry over, so the target's roofline split ``(t_mem, cycles)`` at ``opp`` (default
    its fastest) is scaled by ``k``; latency is ``k * roofline_target`` and energy comes from
    ``runtime.energy.energy_from_split`` on the scaled split (without a deadline the energy
    scales by ``k`` too). The target's channels use its own alignment, the measured ones ``here``'s.
    ``__call__(codes)`` returns ``latency_ms`` and ``energy_mj`` (what ``weighted_latency`` reads).
    """

    def __init__(
        self,
        predictor: LatencyPredictor,
        here: DeviceProfile,
        device: DeviceProfile,
        opp: Any = None,
        deadline_s: float | None = None,
    ) -> None:
        from search.cost.table import SpaceCostTable

        self.predictor = predictor
        self.device = device
        self.opp = opp or device.max_opp
        self.deadline_s = deadline_s
        self._here = SpaceCostTable(predictor.space, here, alignment=predictor.alignment)
        self._target = SpaceCostTable(predictor.space, device, opp=self.opp)

    def scale(self, codes: np.ndarray) -> np.ndarray:
        """float64 ``(n,)``: measured-over-roofline factor on the measured machine per encoding."""
        return self.predictor.predict(codes) / self._here.evaluate(codes)["latency_ms"]

    def __call__(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        from runtime.energy import energy_from_split

        k = self.scale(codes)
        split = _split(self._target, codes)
        t_mem, cycles = split["t_mem_s"] * k, split["cycles"] * k
        latency_ms = (t_mem + cycles / (self.opp.freq_mhz * 1e6)) * 1e3
        energy = energy_from_split(t_mem, cycles, self.device, self.opp, deadline_s=self.deadline_s)
        return {"latency_ms": latency_ms, "energy_mj": energy * 1e3}


def _split(table: Any, codes: np.ndarray) -> dict[str, np.ndarray]:
    """Summed ``t_mem_s`` and ``cycles`` of a device ``SpaceCostTable`` (its evaluate folds them into energy)."""
    sp = table.space
    arr = sp.check_codes(codes)
    S, D = sp.num_stages, sp.max_depth
    K, E = table.blocks.shape[4], table.blocks.shape[5]
    r, w = arr[:, 0], arr[:, 1]
    k = arr[:, sp.kernel_offset : sp.kernel_offset + S * D]
    e = arr[:, sp.expand_offset : sp.expand_offset + S * D]
    flat = ((((r * table.blocks.shape[1] + w) * (S * D))[:, None] + np.arange(S * D)[None, :]) * K + k) * E + e
    active = sp.active_slots(arr).reshape(arr.shape[0], S * D)
    flat_blocks = table.blocks.reshape(-1, table.blocks.shape[-1])
    out = {}
    for name in ("t_mem_s", "cycles"):
        col = table.metrics.index(name)
        out[name] = (flat_blocks[flat, col] * active).sum(axis=1) + table.fixed[r, w, col]
    return out


def measured_predictor(device: DeviceProfile, space: MobileNetV3Space) -> LatencyPredictor:
    """The latency predictor a measured ``device`` profile provides for ``space``.

    Its ``measured.predictor`` file if it has one for this space, else the LUT sum over its
    ``measured.lut`` table. Raises ``LatencyPredictorError`` if the profile has no ``measured``
    section, ``MissingBlockError`` if the table lacks a block of ``space``.
    """
    measured = getattr(device, "measured", None)
    if measured is None:
        raise LatencyPredictorError(
            f"device {device.name!r}: the profile has no 'measured' section; create one with fleetnas profile"
        )
    alignment = device.alignment("float32")
    if measured.predictor:
        path = measured.resolve(measured.predictor)
        why = ""
        try:
            pred = LatencyPredictor.load(path, space)
            if pred.alignment == alignment:
                return pred
            why = f"it was fitted for channel alignment {pred.alignment}, the device builds with {alignment}"
        except LatencyPredictorError as exc:
            if "field 'space'" not in str(exc):
                raise
            why = f"it was fitted for another space ({exc})"
        # Falling back is right (the table still covers the space) but costs accuracy: say so.
        warnings.warn(
            f"{path}: not used for {space.name!r}: {why}; predicting with the block-table sum instead "
            f"(re-run fleetnas profile with this space and alignment for the learned predictor)",
            stacklevel=2,
        )
    return fit_lut(space, LatencyTable.load(measured.resolve(measured.lut)), alignment=alignment)


__all__ = [
    "DEFAULT_METRIC",
    "KINDS",
    "DeviceScaledCost",
    "LatencyPredictor",
    "LatencyPredictorError",
    "LatencyTable",
    "MissingBlockError",
    "PeakMemoryPredictor",
    "RooflineParams",
    "accuracy_report",
    "calibrate_roofline",
    "fit_flops",
    "fit_learned",
    "fit_lut",
    "fit_roofline",
    "measured_predictor",
    "roofline_fragment_ms",
]
