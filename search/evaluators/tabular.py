"""Tabular evaluators for NAS-Bench-201: benchmark accuracies and exact costs, looked up by code.

NAS-Bench-201 has trained every one of its 15,625 cells, so a search over it needs no predictor:
an evaluation is an array lookup. This module turns the benchmark into evaluators for
``search.problem.SpaceProblem`` (functions ``codes -> {metric: (n,) array}``):

- ``TabularEvaluator``: accuracies read from a NAS-Bench-201-style CSV, indexed by the base-5
  number of each encoding; it counts queries (total and distinct archs) for query-budget
  experiments.
- ``NasBench201CostTable``: the cost of every cell's compiled NetSpec (MACs, FLOPs, params,
  memory, critical path and, with a device, roofline latency and DVFS energy), precomputed once
  per instance in well under a second and equal to ``search.cost.report.cost_netspec`` on
  ``space.to_netspec`` — plus NAS-Bench-201's own published ``nb201_flops``/``nb201_params`` and
  a ``connected`` flag. Disconnected cells are costed as the all-identity network (never NaN).
- ``true_front``: the exact (accuracy max, cost min) Pareto front over all 15,625 connected
  cells, the reference for "hypervolume ratio to the true front".

CSV format (gzip or plain text, detected from the content)::

    arch,cellstr,cifar10-test,cifar10-val,cifar100-test,cifar100-val,imagenet-test,imagenet-val
    0,|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|...|,69.55,63.36,...

Only ``cellstr`` and the selected ``<dataset>-<split>`` column are required; accuracies are in
percent, as in the file. The product never assumes where the file lives: the user passes a path.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.energy import energy_from_split
from runtime.hardware import DeviceProfile, OperatingPoint
from runtime.hardware.workload import workload_of
from runtime.netspec import DTYPE_BYTES, Activation, Add, Conv, Layer, NetSpec, Pool
from search.builder import NetBuilder
from search.cost.memory import critical_path, peak_activation_bytes
from search.pareto import hypervolume, pareto_front
from search.space.base import SpaceError
from search.space.nasbench201 import (
    AVG_POOL,
    CONV1,
    CONV3,
    EDGES,
    NUM_ARCHS,
    NUM_NODES,
    PLACE,
    SKIP,
    NasBench201Space,
    from_cellstr,
    to_cellstr,
)

TABULAR_DATASETS = ("cifar10", "cifar100", "imagenet")
# The cell that passes its input through unchanged (one skip edge, no layers): what a
# disconnected cell is costed as.
IDENTITY_CELL = "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
SPLITS = ("test", "val")

MetricFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]


class TabularError(ValueError):
    """A benchmark file, table option or query that does not fit; the message names the file, line and field."""


@dataclass(frozen=True)
class QueryCount:
    """Queries made so far: ``total`` rows evaluated and ``distinct`` architectures among them."""

    total: int
    distinct: int


# ---- reading the CSV ----------------------------------------------------------------------------
def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TabularError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise TabularError(f"{path}: is a directory, need a CSV file") from None
    if raw[:2] == b"\x1f\x8b":  # gzip magic: decide by content, not by the file name
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise TabularError(f"{path}: not a valid gzip file ({exc})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TabularError(f"{path}: not a UTF-8 text CSV (nor gzip-compressed)") from None


class TabularEvaluator:
    """NAS-Bench-201 accuracies by encoding: a ``(15625,)`` array indexed by ``space.index(codes)``.

    Calling it (``evaluator(codes)``) returns ``{metric: (n,) array}`` and counts the queries;
    ``lookup`` returns the same values without counting (for reports and reference fronts).
    Mutable only in its query counters.
    """

    def __init__(
        self,
        values: np.ndarray,
        space: NasBench201Space | None = None,
        metric: str = "accuracy",
        source: str = "table",
    ) -> None:
        self.space = space or NasBench201Space()
        table = np.array(values, dtype=np.float64, copy=True).reshape(-1)
        if table.shape[0] != NUM_ARCHS:
            raise TabularError(f"{source}: need one value per cell ({NUM_ARCHS}), got {table.shape[0]}")
        table.setflags(write=False)
        self._values = table  # NaN marks cells the source has no row for
        self.metric = metric
        self.source = source
        self._seen = np.zeros(NUM_ARCHS, dtype=bool)
        self._total = 0

    @classmethod
    def from_csv(
        cls,
        path: str | Path,
        dataset: str = "cifar10",
        split: str = "val",
        space: NasBench201Space | None = None,
        metric: str = "accuracy",
    ) -> TabularEvaluator:
        """An evaluator for column ``<dataset>-<split>`` of a NAS-Bench-201-style CSV (gzip or plain).

        Raises TabularError naming the file, line and field for a missing column, an unknown or
        duplicate ``cellstr`` or a value that is not a finite number. Cells without a row may be
        absent; querying one is an error.
        """
        if dataset not in TABULAR_DATASETS:
            raise TabularError(f"dataset {dataset!r}: allowed: {', '.join(TABULAR_DATASETS)}")
        if split not in SPLITS:
            raise TabularError(f"split {split!r}: allowed: {', '.join(SPLITS)}")
        p = Path(path)
        sp = space or NasBench201Space()
        column = f"{dataset}-{split}"
        reader = csv.reader(io.StringIO(_read_text(p)))
        header = next(reader, None)
        if not header:
            raise TabularError(f"{p}: empty file; need a header with columns 'cellstr' and {column!r}")
        header = [h.strip() for h in header]
        missing = [c for c in ("cellstr", column) if c not in header]
        if missing:
            raise TabularError(f"{p}: missing column(s) {missing}; the file has columns: {', '.join(header)}")
        i_cell, i_value = header.index("cellstr"), header.index(column)
        values = np.full(NUM_ARCHS, np.nan)
        first_line = np.zeros(NUM_ARCHS, dtype=np.int64)
        for row in reader:
            line = reader.line_num
            if not row or all(not f.strip() for f in row):
                continue  # tolerate blank lines (e.g. a trailing newline pair)
            if len(row) != len(header):
                raise TabularError(f"{p}: line {line}: {len(row)} fields, the header has {len(header)}")
            try:
                code = from_cellstr(row[i_cell])
            except SpaceError as exc:
                raise TabularError(f"{p}: line {line}: {exc}") from None
            idx = int(code @ PLACE)
            if first_line[idx]:
                raise TabularError(
                    f"{p}: line {line}: field 'cellstr': {row[i_cell]!r} duplicates line {first_line[idx]}"
                )
            text = row[i_value].strip()
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise TabularError(f"{p}: line {line}: field {column!r}: {text!r} is not a finite number")
            values[idx] = value
            first_line[idx] = line
        return cls(values, sp, metric=metric, source=f"{p} [{column}]")

    # ---- queries -----------------------------------------------------------------------------
    @property
    def values(self) -> np.ndarray:
        """The read-only ``(15625,)`` table (NaN where the source has no row), by ``space.index``."""
        return self._values

    @property
    def coverage(self) -> int:
        """Number of cells the source has a value for."""
        return int(np.count_nonzero(~np.isnan(self._values)))

    def lookup(self, codes: np.ndarray) -> np.ndarray:
        """``(n,)`` values of the encodings, without counting; raises TabularError for a cell the source lacks."""
        return self._lookup(self.space.index(codes))

    def _lookup(self, idx: np.ndarray) -> np.ndarray:
        out = self._values[idx]
        absent = np.isnan(out)
        if absent.any():
            cell = to_cellstr(self.space.from_index(idx[np.argmax(absent)])[0])
            raise TabularError(
                f"{self.source}: no row for cellstr {cell!r} ({int(absent.sum())} of the {len(out)} queried cells "
                f"are missing; the source covers {self.coverage:,} of {NUM_ARCHS:,})"
            )
        return out

    def __call__(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        """``{metric: (n,) values}`` for ``SpaceProblem``; counts every row as one query."""
        idx = self.space.index(codes)
        out = self._lookup(idx)
        self._seen[idx] = True
        self._total += len(out)
        return {self.metric: out}

    @property
    def queries(self) -> QueryCount:
        """Rows evaluated through ``__call__`` so far, and how many distinct cells they were."""
        return QueryCount(total=self._total, distinct=int(np.count_nonzero(self._seen)))

    def reset_queries(self) -> None:
        """Zero the query counters (e.g. between repeated runs of a query-budget experiment)."""
        self._seen[:] = False
        self._total = 0

    def best(self) -> tuple[np.ndarray, float]:
        """The ``(6,)`` encoding with the highest value and that value (not counted as a query)."""
        idx = int(np.nanargmax(self._values))
        return self.space.from_index(idx)[0], float(self._values[idx])


# ---- exact costs of every cell ----------------------------------------------------------------
ADDITIVE = ("macs", "flops", "params", "weight_bytes", "bytes_moved")
TIMED = ("t_mem_s", "cycles")
# Layer kinds a cell is made of; every tensor inside a cell has the cell's shape, so a layer's
# cost depends only on its kind and the stage — which makes cell costs a count-weighted sum.
_KINDS = ("relu", "conv1", "conv3", "pool", "add2", "add3")
# Edge classes with the same layer topology (conv 1×1 and 3×3 differ in cost, not in shape of graph).
_EDGE_CLASS = np.array([0, 1, 2, 2, 3])


class NasBench201CostTable:
    """Exact costs of all 15,625 compiled cells, for one device (optional), dtype and OPP.

    ``evaluate(codes)`` (also ``table(codes)``) returns ``(n,)`` float arrays, never NaN: macs,
    flops, params, weight_bytes, bytes_moved, arithmetic_intensity, peak_activation_bytes,
    critical_path_layers, nb201_flops, nb201_params, connected and, with a device, latency_ms and
    energy_mj (at ``opp``, idle energy up to ``deadline_s`` if given). For a connected cell they
    equal ``cost_netspec(space.to_netspec(arch), …)``. ``nb201_*`` are NAS-Bench-201's own
    figures (``space.published_counts``), for every cell.

    Disconnected cells (341; no input→output path, see ``space.connected``) have no NetSpec: the
    network ignores its input, and a deployed exporter would fold the cells away. They are
    costed as the network with every cell replaced by the identity cell (``IDENTITY_CELL``, one
    ``skip_connect`` from input to output, no layers) — the cheapest valid network — so a
    strategy's objectives and constraint violations stay finite. ``connected`` is 1.0 / 0.0 to
    filter them out or to forbid them (``Constraint("connected", 1.0, upper=False)``).

    How it is fast: every tensor in a cell has the cell's shape, so a cell layer's cost depends
    only on its kind (ReLU, 1×1 conv, 3×3 conv, 3×3 avg pool, 2- or 3-input add) and its stage;
    the additive metrics of all cells are counts × per-kind costs, and the structure-dependent
    ones (peak memory, critical path) come from one small NetSpec per distinct cell topology.
    """

    def __init__(
        self,
        space: NasBench201Space | None = None,
        device: DeviceProfile | None = None,
        dtype: str = "float32",
        opp: OperatingPoint | None = None,
        deadline_s: float | None = None,
    ) -> None:
        self.space = space or NasBench201Space()
        self.device = device
        self.dtype = dtype
        if dtype not in DTYPE_BYTES:
            raise TabularError(f"field 'dtype': {dtype!r}; allowed: {', '.join(DTYPE_BYTES)}")
        self.opp = (opp or device.max_opp) if device is not None else None
        self.deadline_s = deadline_s
        self._build()

    # ---- construction ------------------------------------------------------------------------
    def _measure(self, net: NetSpec) -> dict[str, float]:
        c = net.cost_arrays()
        nbytes = DTYPE_BYTES[self.dtype]
        out = {
            "macs": float(c["macs"].sum()),
            "flops": float(c["flops"].sum()),
            "params": float(c["params"].sum()),
            "weight_bytes": float(c["weight_elems"].sum() * nbytes),
            "bytes_moved": float((c["weight_elems"] + c["input_elems"] + c["output_elems"]).sum() * nbytes),
        }
        if self.device is not None and self.opp is not None:
            out["t_mem_s"], out["cycles"] = workload_of(net, self.device, self.dtype).split(self.opp.freq_mhz)
        return out

    def _fixed_fragments(self) -> list[NetSpec]:
        sp, c = self.space, self.space.config
        b = NetBuilder((c.in_channels, c.resolution, c.resolution), dtype=self.dtype)
        sp.add_stem(b)
        fragments = [b.build()]
        shape = fragments[0].output_shape
        for stage, channels in enumerate(c.stage_channels[1:], start=1):
            b = NetBuilder((c.stage_channels[stage - 1], shape[1], shape[2]), dtype=self.dtype)
            sp.add_reduction(b, channels, name=f"reduction{stage}")
            fragments.append(b.build())
            shape = fragments[-1].output_shape
        b = NetBuilder(shape, dtype=self.dtype)
        sp.add_head(b)
        fragments.append(b.build())
        return fragments

    @staticmethod
    def _kind_layers(channels: int) -> dict[str, tuple[Layer, ...]]:
        # Each kind as a one-layer network reading the cell-shaped input (an add reads it k times).
        # These mirror NasBench201Space.add_cell; the tests compare every cell with cost_netspec.
        return {
            "relu": (Activation(kind="relu", inputs=(-1,)),),
            "conv1": (Conv(out_channels=channels, kernel=1, inputs=(-1,)),),
            "conv3": (Conv(out_channels=channels, kernel=3, inputs=(-1,)),),
            "pool": (Pool(kind="avg", kernel=3, stride=1, padding=1, count_include_pad=False, inputs=(-1,)),),
            "add2": (Add(inputs=(-1, -1)),),
            "add3": (Add(inputs=(-1, -1, -1)),),
        }

    def _build(self) -> None:
        sp, c = self.space, self.space.config
        codes = next(sp.enumerate())
        live = sp.live_edges(codes)
        self.connected = sp.connected(codes)
        self.metrics = ADDITIVE + (TIMED if self.device is not None else ())
        M = len(self.metrics)

        frags = self._fixed_fragments()
        fixed = [self._measure(net) for net in frags]
        fixed_sum = np.array([sum(f[m] for f in fixed) for m in self.metrics])
        fixed_peak = max(peak_activation_bytes(net, self.dtype) for net in frags)
        fixed_path = sum(critical_path(net) for net in frags)

        counts = self._kind_counts(codes, live)  # (n, K)
        totals = np.tile(fixed_sum, (NUM_ARCHS, 1))
        tensor_bytes = []
        for ch, res in zip(c.stage_channels, c.stage_resolutions, strict=True):
            per_kind = np.zeros((len(_KINDS), M))
            kind_layers = self._kind_layers(ch)
            for k, kind in enumerate(_KINDS):
                row = self._measure(NetSpec((ch, res, res), kind_layers[kind], dtype=self.dtype))
                per_kind[k] = [row[m] for m in self.metrics]
            totals += c.cells_per_stage * (counts @ per_kind)
            tensor_bytes.append(ch * res * res * DTYPE_BYTES[self.dtype])

        # Structure-dependent metrics: one stage-0 fragment per distinct cell topology. All of a
        # cell's tensors share one shape, so its peak is (max live tensors) × tensor bytes at any
        # stage, and its critical path is the same at every stage.
        classes = _EDGE_CLASS[np.where(live, codes, 0)]
        topo, inverse = np.unique(classes[self.connected], axis=0, return_inverse=True)
        live_count = np.zeros(len(topo))
        path = np.zeros(len(topo))
        rep_codes = np.array([0, SKIP, CONV3, AVG_POOL])[topo]  # a representative per topology
        ch0, res0 = c.stage_channels[0], c.stage_resolutions[0]
        for t, code in enumerate(rep_codes):
            b = NetBuilder((ch0, res0, res0), dtype=self.dtype)
            sp.add_cell(b, code)
            if not b.layers:
                continue  # an identity cell: no layers, no cost
            net = b.build()
            live_count[t] = peak_activation_bytes(net, self.dtype) / tensor_bytes[0]
            path[t] = critical_path(net)
        cell_peak = live_count[inverse.reshape(-1)][:, None] * np.array(tensor_bytes)[None, :]

        table = np.full((NUM_ARCHS, M + 2), np.nan)
        table[self.connected, :M] = totals[self.connected]
        table[self.connected, M] = np.maximum(cell_peak.max(axis=1), fixed_peak)
        table[self.connected, M + 1] = (
            fixed_path + c.cells_per_stage * len(c.stage_channels) * path[inverse.reshape(-1)]
        )
        # Disconnected cells: the identity-cell network's row (see the class docstring).
        table[~self.connected] = table[int(sp.index(from_cellstr(IDENTITY_CELL))[0])]
        self._columns = (*self.metrics, "peak_activation_bytes", "critical_path_layers")
        self._table = table
        self._published = sp.published_counts(codes)

    def _kind_counts(self, codes: np.ndarray, live: np.ndarray) -> np.ndarray:
        """``(n, len(_KINDS))`` number of layers of each kind in one cell of every row."""
        n = codes.shape[0]
        out = np.zeros((n, len(_KINDS)))
        is_conv = live & ((codes == CONV1) | (codes == CONV3))
        out[:, 1] = (live & (codes == CONV1)).sum(axis=1)
        out[:, 2] = (live & (codes == CONV3)).sum(axis=1)
        out[:, 3] = (live & (codes == AVG_POOL)).sum(axis=1)
        src = np.array([s for s, _ in EDGES])
        dst = np.array([d for _, d in EDGES])
        for node in range(NUM_NODES - 1):  # one shared ReLU per node feeding a conv
            out[:, 0] += is_conv[:, src == node].any(axis=1)
        for node in range(1, NUM_NODES):
            terms = live[:, dst == node].sum(axis=1)  # skip edges are terms too, just no layer
            out[:, 4] += terms == 2
            out[:, 5] += terms == 3
        return out

    # ---- queries -----------------------------------------------------------------------------
    def evaluate(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        """Costs of every row of ``codes`` (``(n, 6)`` encodings), plus ``connected`` (1.0 / 0.0)."""
        idx = self.space.index(codes)
        rows = self._table[idx]
        result = {m: rows[:, i] for i, m in enumerate(self._columns)}
        result["arithmetic_intensity"] = result["flops"] / result["bytes_moved"]
        if self.device is not None and self.opp is not None:
            t_mem, cycles = result.pop("t_mem_s"), result.pop("cycles")
            result["latency_ms"] = (t_mem + cycles / (self.opp.freq_mhz * 1e6)) * 1e3
            energy = energy_from_split(t_mem, cycles, self.device, self.opp, deadline_s=self.deadline_s)
            result["energy_mj"] = energy * 1e3
        for key, values in self._published.items():
            result[key] = values[idx]
        result["connected"] = self.connected[idx].astype(np.float64)
        return result

    __call__ = evaluate


# ---- the reference front ------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TrueFront:
    """The exact front over the whole space, by increasing cost (and increasing accuracy)."""

    codes: np.ndarray  # (k, 6)
    accuracy: np.ndarray  # (k,)
    cost: np.ndarray  # (k,)
    accuracy_metric: str = "accuracy"
    cost_metric: str = "flops"

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def cellstrs(self) -> list[str]:
        """The front's cells as NAS-Bench-201 cellstrs."""
        return [to_cellstr(c) for c in self.codes]

    def hypervolume_ratio(self, accuracy: np.ndarray, cost: np.ndarray, ref: tuple[float, float]) -> float:
        """HV of the points ``(accuracy, cost)`` over HV of this front, both bounded by ``ref = (accuracy, cost)``.

        1.0 means the points reach the true front; points worse than ``ref`` count for nothing.
        """
        ref_min = (-float(ref[0]), float(ref[1]))
        found = hypervolume(np.column_stack([-np.asarray(accuracy, float), np.asarray(cost, float)]), ref_min)
        best = hypervolume(np.column_stack([-self.accuracy, self.cost]), ref_min)
        if best <= 0:
            raise TabularError(f"ref {ref}: the true front does not dominate it; pick a lower accuracy / higher cost")
        return found / best


def true_front(
    metric_fns: MetricFn | Sequence[MetricFn],
    space: NasBench201Space | None = None,
    accuracy: str = "accuracy",
    cost: str = "flops",
) -> TrueFront:
    """The exact Pareto front of (``accuracy`` max, ``cost`` min) over all 15,625 cells.

    ``metric_fns`` are evaluators like ``SpaceProblem``'s, called once on every cell. Disconnected
    cells (``space.connected``; chance accuracy, and costed as a stand-in network by
    ``NasBench201CostTable``) and rows with a non-finite value are left out. Ties keep one cell:
    the lowest base-5 index. Calling a ``TabularEvaluator`` here counts 15,625 queries — pass
    ``lambda c: {"accuracy": tab.lookup(c)}`` to leave a budget untouched.
    """
    sp = space or NasBench201Space()
    fns = [metric_fns] if callable(metric_fns) else list(metric_fns)
    codes = next(sp.enumerate())
    merged: dict[str, np.ndarray] = {}
    for fn in fns:
        merged.update(fn(codes))
    missing = [m for m in (accuracy, cost) if m not in merged]
    if missing:
        raise TabularError(f"unknown metric(s) {missing}; the evaluators provide: {', '.join(sorted(merged))}")
    acc = np.asarray(merged[accuracy], dtype=float)
    cst = np.asarray(merged[cost], dtype=float)
    ok = np.flatnonzero(sp.connected(codes) & np.isfinite(acc) & np.isfinite(cst))
    front = ok[pareto_front(np.column_stack([cst[ok], -acc[ok]]))]
    front = front[np.lexsort((acc[front], cst[front]))]
    # isomorphic cells can tie exactly; one cell per front point
    distinct = np.r_[True, (np.diff(cst[front]) != 0) | (np.diff(acc[front]) != 0)]
    keep = front[distinct]
    return TrueFront(codes[keep], acc[keep], cst[keep], accuracy, cost)


__all__ = [
    "SPLITS",
    "TABULAR_DATASETS",
    "NasBench201CostTable",
    "QueryCount",
    "TabularError",
    "TabularEvaluator",
    "TrueFront",
    "true_front",
]
