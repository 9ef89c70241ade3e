"""Timing ONNX models with ONNX Runtime the way the device runtime runs them, robustly on a noisy machine.

Sessions are created with ``runtime.engine.session_options`` — the very options (graph
optimisation level, threads, spinning) the ``MultiModeRuntime`` uses — so a measured latency is
what a bundle's mode would take. On a shared 2-core machine one timing swings by 2x, so:

- every model is warmed up before it is timed;
- models are timed in interleaved rounds (all models once per round, in a seeded shuffled
  order), so a burst of load from another process hits every model alike instead of a few;
- each visit runs the model several times back to back and drops the first run (its caches
  were cooled by the previous model; a serving runtime runs one model repeatedly) and, by
  default, keeps only the fastest of the rest: on 2 vCPUs shared with other jobs, a run during
  which the OS preempts one of ONNX Runtime's two intra-op threads takes 2-3x longer (the other
  thread waits at the barrier), and the fastest run of a short visit is the one that was not
  preempted. Across rounds the usual median is taken: the median of interleaved runs;
- the samples are summarised by their median after rejecting outliers by the median absolute
  deviation (``|x - median| > k * 1.4826 * MAD``, k = 3.5 by default: Iglewicz and Hoaglin's
  modified z-score rule), and the spread is reported as the scaled MAD of the kept samples.

numpy and onnxruntime only; ``scipy.stats.median_abs_deviation`` would do the MAD, but scipy is
not a dependency of the search path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.engine import ThreadingConfig

MAD_SCALE = 1.4826  # MAD of a normal distribution times this is its standard deviation
DEFAULT_REJECT_K = 3.5


@dataclass(frozen=True)
class TimingStats:
    """A robust summary of one model's run times (ms): median and scaled MAD of the kept samples."""

    median_ms: float
    mad_ms: float
    n: int  # samples kept
    rejected: int  # samples rejected as outliers
    min_ms: float

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "median_ms": self.median_ms,
            "mad_ms": self.mad_ms,
            "n": self.n,
            "rejected": self.rejected,
            "min_ms": self.min_ms,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TimingStats:
        """Read ``to_json`` output (KeyError/TypeError/ValueError on a malformed mapping)."""
        return cls(
            float(data["median_ms"]),
            float(data["mad_ms"]),
            int(data["n"]),
            int(data["rejected"]),
            float(data["min_ms"]),
        )


def robust_stats(samples_ms: Sequence[float] | np.ndarray, k: float = DEFAULT_REJECT_K) -> TimingStats:
    """The median and scaled MAD of ``samples_ms`` after rejecting points over ``k`` scaled MADs away.

    With a MAD of 0 (more than half the samples equal) only samples equal to the median are kept.
    Raises ValueError on an empty or non-finite sample.
    """
    x = np.asarray(samples_ms, dtype=np.float64).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"robust_stats: need a non-empty finite sample, got {x.size} values")
    med = float(np.median(x))
    mad = MAD_SCALE * float(np.median(np.abs(x - med)))
    keep = np.abs(x - med) <= k * mad if mad > 0 else x == med
    kept = x[keep]
    kept_med = float(np.median(kept))
    return TimingStats(
        median_ms=kept_med,
        mad_ms=MAD_SCALE * float(np.median(np.abs(kept - kept_med))),
        n=int(kept.size),
        rejected=int(x.size - kept.size),
        min_ms=float(kept.min()),
    )


def create_session(
    model: Any, threading_config: ThreadingConfig | None = None, optimized_path: str | None = None
) -> Any:
    """An ONNX Runtime CPU session for ``model`` (ModelProto, bytes or path) with the runtime's options.

    ``optimized_path`` saves the graph as ONNX Runtime optimised it (fusions visible there).
    """
    import onnxruntime as ort

    # The runtime's own option builder, so measured and served latency use one configuration.
    from runtime.engine import ensure_global_thread_pool, session_options

    cfg = threading_config or ThreadingConfig()
    if cfg.strategy == "global":
        ensure_global_thread_pool(cfg)
    so = session_options(cfg)
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else model
    if not isinstance(source, bytes):
        source = str(source)
    return ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])


@dataclass
class Timed:
    """Mutable, local helper: a session, its feed and the output it fetches."""

    session: Any
    feed: dict[str, np.ndarray]
    outputs: list[str]

    def run(self) -> None:
        """One inference (result discarded)."""
        self.session.run(self.outputs, self.feed)


def prepare(session: Any, seed: int = 0) -> Timed:
    """A ``Timed`` for ``session`` with a seeded random batch-1 input (dynamic dims set to 1)."""
    inp = session.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return Timed(session, {inp.name: x}, [session.get_outputs()[0].name])


@dataclass
class Anchor:
    """Mutable, local helper: a reference model visited between timed models to cancel machine drift.

    On a shared machine the load from other jobs drifts over seconds and minutes, so two timings
    of one model minutes apart can differ by 2x. ``time_interleaved(anchor=...)`` visits this
    model before every ``anchor_every`` models and records each model's time as a ratio to the
    mean of the anchor visits just before and after it (the same moment's conditions); a ratio
    times ``reference_ms`` (the anchor's robust median over all its visits, across calls) is a
    drift-corrected latency, and every result scaled by the one reference stays comparable.
    """

    timed: Timed
    runs_per_visit: int = 4
    visits: list[float] = field(default_factory=list)

    def visit(self) -> float:
        """One visit: the fastest of ``runs_per_visit - 1`` runs after a discarded one, in ms (also recorded)."""
        self.timed.run()
        times = []
        for _ in range(self.runs_per_visit - 1):
            t = time.perf_counter()
            self.timed.run()
            times.append((time.perf_counter() - t) * 1e3)
        self.visits.append(min(times))
        return self.visits[-1]

    @property
    def reference_ms(self) -> float:
        """The anchor's robust median over every visit so far, in ms."""
        return robust_stats(self.visits).median_ms


def scale_stats(stats: TimingStats, factor: float) -> TimingStats:
    """``stats`` with every time multiplied by ``factor`` (anchor ratios -> ms)."""
    return TimingStats(stats.median_ms * factor, stats.mad_ms * factor, stats.n, stats.rejected, stats.min_ms * factor)


def time_interleaved(
    models: Mapping[str, Timed],
    *,
    rounds: int = 5,
    runs_per_visit: int = 4,
    warmup: int = 3,
    seed: int = 0,
    per_visit: str = "min",
    before_round: Callable[[], object] | None = None,
    anchor: Anchor | None = None,
    anchor_every: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, list[float]]:
    """Run times in ms per model from ``rounds`` interleaved rounds of visits of ``runs_per_visit`` runs.

    Each visit's first run is discarded (cold caches after the previous model); of the others
    ``per_visit="min"`` keeps the fastest (one sample per round), ``"all"`` keeps every one.
    ``before_round()`` runs before every round (e.g. ``wait_for_quiet``); ``progress(done,
    total)`` is called after every round. With an ``anchor`` the samples are ratios to the
    anchor's neighbouring visits (see ``Anchor``), not ms.
    """
    if per_visit not in ("min", "all"):
        raise ValueError(f"time_interleaved: per_visit {per_visit!r}; allowed: min, all")
    if rounds < 1 or runs_per_visit < 2 or warmup < 0:
        raise ValueError(f"time_interleaved: need rounds >= 1 and runs_per_visit >= 2, got {rounds}, {runs_per_visit}")
    names = list(models)
    for name in names:
        for _ in range(warmup):
            models[name].run()
    samples: dict[str, list[float]] = {name: [] for name in names}
    rng = np.random.default_rng(seed)
    clock = time.perf_counter
    for r in range(rounds):
        if before_round is not None:
            before_round()
        order = rng.permutation(len(names))
        marks = [anchor.visit()] if anchor is not None else []
        pending: list[tuple[str, list[float]]] = []
        for pos, i in enumerate(order):
            m = models[names[i]]
            m.run()
            visit = []
            for _ in range(runs_per_visit - 1):
                t = clock()
                m.run()
                visit.append((clock() - t) * 1e3)
            kept = visit if per_visit == "all" else [min(visit)]
            if anchor is None:
                samples[names[i]].extend(kept)
                continue
            pending.append((names[i], kept))
            if (pos + 1) % anchor_every == 0 or pos == len(order) - 1:
                marks.append(anchor.visit())
                local = 0.5 * (marks[-2] + marks[-1])
                for name, values in pending:
                    samples[name].extend(v / local for v in values)
                pending = []
        if progress is not None:
            progress(r + 1, rounds)
    return samples


def wait_for_quiet(max_busy: float = 0.3, timeout_s: float = 60.0, interval_s: float = 0.25) -> float:
    """Seconds spent waiting until other processes use at most ``max_busy`` of the CPUs (or ``timeout_s``).

    Called between timing rounds, when this process is idle, so the system-wide CPU use psutil
    reports over ``interval_s`` is other jobs' load. On a shared machine this keeps rounds out of
    the bursts in which every model would take 2-3x longer; after ``timeout_s`` it gives up
    waiting (the interleaving and the median still spread whatever load remains).
    """
    import psutil

    started = time.perf_counter()
    while psutil.cpu_percent(interval=interval_s) / 100.0 > max_busy:
        if time.perf_counter() - started > timeout_s:
            break
    return time.perf_counter() - started


def run_overhead_ms(threading_config: ThreadingConfig | None = None, rounds: int = 5, seed: int = 0) -> TimingStats:
    """The fixed cost of one ``session.run`` call: a one-node graph on an 8-element tensor, timed."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["output"])],
        "overhead",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 8, 1, 1])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8, 1, 1])],
    )
    opsets = [helper.make_opsetid("", 17)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    timed = prepare(create_session(model, threading_config), seed)
    samples = time_interleaved({"overhead": timed}, rounds=rounds * 8, runs_per_visit=10, seed=seed)
    return robust_stats(samples["overhead"])


__all__ = [
    "DEFAULT_REJECT_K",
    "MAD_SCALE",
    "Anchor",
    "Timed",
    "TimingStats",
    "create_session",
    "prepare",
    "robust_stats",
    "run_overhead_ms",
    "scale_stats",
    "time_interleaved",
    "wait_for_quiet",
]
