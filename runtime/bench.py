"""Runtime measurements shared by ``fleetnas runtime bench`` and ``benchmarks/runtime_switch.py``.

- per-mode latency of the multi-mode runtime, and of the same model in a standalone, fully
  optimised ONNX Runtime session (the peer), measured in interleaved rounds so machine noise
  hits both alike;
- switching under load: inference threads run continuously while the main thread switches
  modes; after each switch a probe request measures *request-to-first-inference in the new
  mode* (switch call → the probe's inference starting on the new mode; also reported to its
  completion). Every result is checked against that mode's reference output, so a request that
  ran on a mode other than the one it reports, or failed, is counted;
- resident memory of a loaded runtime with all modes vs the high mode alone, per weight layout,
  each in a fresh subprocess (RSS after loading minus RSS after importing onnxruntime).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.bundle import Bundle
from runtime.engine import MultiModeRuntime, ThreadingConfig


def _pct(values: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if len(values) else float("nan")


def standalone_session(bundle: Bundle, mode: str, threading_config: ThreadingConfig) -> Any:
    """The mode's model in its own session with every optimisation on (private weights)."""
    import onnxruntime as ort

    from runtime.engine import session_options

    so = session_options(threading_config)
    return ort.InferenceSession(str(bundle.model_path(mode)), so, providers=["CPUExecutionProvider"])


def mode_latencies(
    rt: MultiModeRuntime, x: np.ndarray, runs: int = 200, rounds: int = 5, standalone: bool = True
) -> dict[str, dict[str, float]]:
    """Per mode p50/p99 (ms) in the runtime and, if asked, p50 in a standalone session."""
    bundle = rt.bundle
    peers = {m: standalone_session(bundle, m, rt.threading_config) for m in rt.modes} if standalone else {}
    entry = {m: bundle.manifest.mode(m) for m in rt.modes}
    ours: dict[str, list[float]] = {m: [] for m in rt.modes}
    theirs: dict[str, list[float]] = {m: [] for m in rt.modes}
    per_round = max(1, runs // rounds)
    for m in rt.modes:  # warm the peers as the runtime warmed its sessions
        if m in peers:
            for _ in range(3):
                peers[m].run(list(entry[m].outputs[:1]), {entry[m].input.name: x})
    for _ in range(rounds):
        for m in rt.modes:
            rt.switch(m, "benchmark")
            for _ in range(per_round):
                r = rt.infer_detailed(x)
                ours[m].append((r.finished - r.started) * 1e3)
            if m in peers:
                feed = {entry[m].input.name: x}
                names = list(entry[m].outputs[:1])
                for _ in range(per_round):
                    t = time.perf_counter()
                    peers[m].run(names, feed)
                    theirs[m].append((time.perf_counter() - t) * 1e3)
    out = {}
    for m in rt.modes:
        out[m] = {"p50_ms": _pct(ours[m], 50), "p99_ms": _pct(ours[m], 99)}
        if m in peers:
            out[m]["standalone_p50_ms"] = _pct(theirs[m], 50)
            out[m]["ratio_to_standalone"] = out[m]["p50_ms"] / out[m]["standalone_p50_ms"]
    return out


@dataclass(frozen=True)
class SwitchLoadResult:
    """What switching under load measured."""

    switches: int
    load_threads: int
    switch_p50_ms: float
    switch_p99_ms: float
    to_result_p50_ms: float
    to_result_p99_ms: float
    swap_p99_us: float
    failed_requests: int
    misrouted_requests: int
    load_requests: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return dict(self.__dict__)


def switch_under_load(
    rt: MultiModeRuntime, x: np.ndarray, switches: int = 10_000, load_threads: int = 2
) -> SwitchLoadResult:
    """Switch ``switches`` times while ``load_threads`` threads infer continuously (see module doc)."""
    expected = {}
    for m in rt.modes:
        rt.switch(m, "reference output")
        expected[m] = rt.infer(x)
    failures: list[BaseException] = []
    misrouted = [0]
    load_count = [0] * load_threads
    stop = threading.Event()
    lock = threading.Lock()

    def load(k: int) -> None:
        while not stop.is_set():
            try:
                out, mode = rt.infer(x, return_mode=True)
            except BaseException as exc:
                with lock:
                    failures.append(exc)
                continue
            if not np.allclose(out, expected[mode], rtol=1e-5, atol=1e-6):
                with lock:
                    misrouted[0] += 1
            load_count[k] += 1

    threads = [threading.Thread(target=load, args=(k,), daemon=True) for k in range(load_threads)]
    for t in threads:
        t.start()
    to_start, to_result, swaps = [], [], []
    modes = rt.modes
    t_begin = time.perf_counter()
    for i in range(switches):
        target = modes[(i + 1) % len(modes)]
        t0 = time.perf_counter()
        rec = rt.switch(target, "benchmark")
        try:
            probe = rt.infer_detailed(x)
        except BaseException as exc:
            failures.append(exc)
            continue
        if probe.mode != target or not np.allclose(probe.output, expected[target], rtol=1e-5, atol=1e-6):
            misrouted[0] += 1
        to_start.append((probe.started - t0) * 1e3)
        to_result.append((probe.finished - t0) * 1e3)
        swaps.append(rec.swap_us)
    seconds = time.perf_counter() - t_begin
    stop.set()
    for t in threads:
        t.join()
    return SwitchLoadResult(
        switches=switches,
        load_threads=load_threads,
        switch_p50_ms=_pct(to_start, 50),
        switch_p99_ms=_pct(to_start, 99),
        to_result_p50_ms=_pct(to_result, 50),
        to_result_p99_ms=_pct(to_result, 99),
        swap_p99_us=_pct(swaps, 99),
        failed_requests=len(failures) + rt.failed_requests,
        misrouted_requests=misrouted[0],
        load_requests=sum(load_count),
        seconds=seconds,
    )


_RSS_PROBE = """
import json, sys, psutil, numpy, onnxruntime
from runtime.engine import MultiModeRuntime, ThreadingConfig
from runtime.bundle import Bundle
proc = psutil.Process()
bundle = Bundle.load(sys.argv[1])
before = proc.memory_info().rss
modes = sys.argv[3].split(",") if sys.argv[3] else None
if modes:
    from runtime.bench import subset_bundle
    bundle = subset_bundle(bundle, modes)
rt = MultiModeRuntime(bundle, weight_sharing=sys.argv[2] == "shared", threading_config=ThreadingConfig(sys.argv[4]))
x = numpy.zeros(rt.input_shape(), dtype=numpy.float32)
for m in rt.modes:
    rt.switch(m); rt.infer(x)
print(json.dumps({"rss_delta": proc.memory_info().rss - before}))
"""


def subset_bundle(bundle: Bundle, modes: list[str]) -> Bundle:
    """The same bundle restricted to ``modes`` (in memory; files untouched)."""
    from dataclasses import replace

    keep = tuple(m for m in bundle.manifest.modes if m.name in modes)
    return replace(bundle, manifest=replace(bundle.manifest, modes=keep))


def resident_memory(
    bundle_path: str | Path, layout: str, modes: list[str] | None = None, strategy: str = "no_spin"
) -> int:
    """RSS growth (bytes) from loading ``bundle_path`` with ``layout`` (``private``/``shared``) in a fresh process."""
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, str(bundle_path), layout, ",".join(modes or []), strategy],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed: {proc.stderr.strip()[-500:]}")
    return int(json.loads(proc.stdout.strip().splitlines()[-1])["rss_delta"])


def memory_report(bundle_path: str | Path, layouts: tuple[str, ...] = ("private", "shared")) -> dict[str, Any]:
    """Per layout: RSS of all modes, of the high (first) mode alone, and their ratio."""
    bundle = Bundle.load(bundle_path)
    first = bundle.modes[0]
    out: dict[str, Any] = {}
    for layout in layouts:
        if layout == "shared" and bundle.manifest.shared_weights is None:
            continue
        every = resident_memory(bundle_path, layout)
        alone = resident_memory(bundle_path, layout, [first])
        out[layout] = {"all_modes_bytes": every, "high_alone_bytes": alone, "ratio": every / alone}
    return out
