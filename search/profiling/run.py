"""Profile this machine: run overhead, roofline, every block of a space, a few whole networks -> a measured profile.

``profile_device`` is what ``fleetnas profile`` runs. It writes three files next to ``out``:

- ``NAME.yaml``: a ``DeviceProfile`` with the fields the machine tells (cores, SIMD width and
  channel alignment, caches, RAM, measured bandwidth, peak FLOP/cycle from the measured GEMM
  peak, per-class utilisation calibrated on the block timings) and estimates for what it cannot
  measure (voltage, power: marked ESTIMATE in ``sources``), plus the ``measured`` section;
- ``NAME.lut.json``: the block latency table (``search.predictors.latency.LatencyTable``);
- ``NAME.predictor.json``: the learned predictor fitted on ``calibrate`` timed random networks
  (the LUT sum with a fitted constant if there are too few of them).

Every measurement goes to ``NAME.partial.json`` first (``store.ResultStore``); ``resume`` picks up
an interrupted run there. Timings use ``ThreadingConfig()`` — the runtime's default — unless told.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.engine import ThreadingConfig
from runtime.fileio import write_text_atomic
from runtime.hardware.profile import DeviceProfile, OperatingPoint
from runtime.netspec import NetSpec
from search.profiling.blocks import SpaceBlocks, decompose
from search.profiling.roofline import measure_roofline
from search.profiling.store import ResultStore
from search.profiling.timing import (
    Anchor,
    TimingStats,
    create_session,
    prepare,
    robust_stats,
    run_overhead_ms,
    time_interleaved,
    wait_for_quiet,
)
from search.space.mobilenetv3 import MobileNetV3Space

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Settings:
    """How hard to measure: interleaved rounds and runs per visit for blocks and networks, batch sizes."""

    block_rounds: int = 15
    block_runs: int = 6
    block_batch: int = 120
    net_rounds: int = 9
    net_runs: int = 5
    net_batch: int = 40

    @classmethod
    def quick(cls) -> Settings:
        """Fewer rounds: a few minutes for the ImageNet space on 2 cores."""
        return cls(block_rounds=5, block_runs=4, net_rounds=5, net_runs=4)


@dataclass(frozen=True)
class ProfileResult:
    """The written files, the profile, and the run's timing."""

    profile_path: Path
    lut_path: Path
    predictor_path: Path | None
    profile: DeviceProfile
    seconds: float
    blocks: int
    networks: int


def simd_width_bits() -> int:
    """The widest fp32 vector unit ONNX Runtime's kernels use here: 512 (AVX-512F), 256 (AVX2), else 128."""
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    flags = line
                    break
    except OSError:
        pass
    words = set(flags.split())
    if "avx512f" in words:
        return 512
    if "avx2" in words or "avx" in words:
        return 256
    return 128


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.split(":", 1)[0].strip() in ("model name", "Hardware", "Model"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_mhz() -> tuple[float, str]:
    """The CPU clock in MHz and where it came from (cpufreq maximum, /proc/cpuinfo, or a guess)."""
    try:
        khz = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text().strip()
        return float(khz) / 1e3, "cpufreq cpuinfo_max_freq"
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1]), "/proc/cpuinfo 'cpu MHz' (nominal; turbo not visible)"
    except (OSError, ValueError):
        pass
    return 1000.0, "ESTIMATE: clock unknown, 1000 MHz assumed"


def _caches_kb() -> dict[str, int]:
    out: dict[str, int] = {}
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in sorted(root.glob("index*")) if root.exists() else []:
        try:
            level = (idx / "level").read_text().strip()
            kind = (idx / "type").read_text().strip()
            size = (idx / "size").read_text().strip()
        except OSError:
            continue
        name = {"1Data": "l1d", "1Instruction": "l1i", "2Unified": "l2", "3Unified": "l3"}.get(level + kind)
        if name and size.endswith("K"):
            out[name] = int(size[:-1])
    return out


def _fleetnas_version() -> str:
    try:
        from importlib.metadata import version

        return version("fleetnas")
    except Exception:
        return "unknown"


def time_networks(
    space: MobileNetV3Space,
    codes: np.ndarray,
    *,
    alignment: int = 8,
    rounds: int = 9,
    runs_per_visit: int = 5,
    batch: int = 40,
    threading_config: ThreadingConfig | None = None,
    seed: int = 0,
    done: dict[str, Any] | None = None,
    on_batch: Callable[[dict[str, Any], int, int], None] | None = None,
    before_round: Callable[[], object] | None = None,
    anchor: Anchor | None = None,
) -> list[TimingStats]:
    """Robust end-to-end latency of every encoding in ``codes``, built to ONNX and timed in interleaved batches.

    ``done`` holds results of an earlier interrupted call by row index (as ``str``); ``on_batch
    (new_results, finished, total)`` is called after every batch (to persist and show progress);
    ``before_round`` before every timing round (see ``timing.wait_for_quiet``). With an
    ``anchor`` the stats are in anchor units (``timing.scale_stats`` by ``anchor.reference_ms``).
    """
    results = _time_resumably(
        [str(i) for i in range(len(codes))],
        lambda key: space.to_netspec(space.decode(codes[int(key)]), alignment=alignment),
        rounds=rounds,
        runs_per_visit=runs_per_visit,
        batch=batch,
        threading_config=threading_config,
        seed=seed,
        done=done,
        on_batch=on_batch,
        before_round=before_round,
        anchor=anchor,
    )
    return [results[str(i)] for i in range(len(codes))]


def time_blocks(
    blocks: SpaceBlocks,
    *,
    rounds: int,
    runs_per_visit: int,
    batch: int,
    threading_config: ThreadingConfig | None = None,
    seed: int = 0,
    done: dict[str, Any] | None = None,
    on_batch: Callable[[dict[str, Any], int, int], None] | None = None,
    before_round: Callable[[], object] | None = None,
    anchor: Anchor | None = None,
) -> dict[str, TimingStats]:
    """Robust latency of every fragment of ``blocks`` by key (interleaved within batches of ``batch``).

    ``done``, ``on_batch``, ``before_round`` and ``anchor`` as in ``time_networks``.
    """
    return _time_resumably(
        list(blocks.fragments),
        lambda key: blocks.fragments[key].net,
        rounds=rounds,
        runs_per_visit=runs_per_visit,
        batch=batch,
        threading_config=threading_config,
        seed=seed,
        done=done,
        on_batch=on_batch,
        before_round=before_round,
        anchor=anchor,
    )


def _time_resumably(
    keys: list[str],
    net_of: Callable[[str], NetSpec],
    *,
    rounds: int,
    runs_per_visit: int,
    batch: int,
    threading_config: ThreadingConfig | None,
    seed: int,
    done: dict[str, Any] | None,
    on_batch: Callable[[dict[str, Any], int, int], None] | None,
    before_round: Callable[[], object] | None,
    anchor: Anchor | None,
) -> dict[str, TimingStats]:
    """Robust latency by key of ``net_of(key)``'s ONNX model, interleaved in batches, skipping keys in ``done``.

    Models are built per batch (not all at once): a few hundred live sessions would hold their weights together.
    """
    from runtime.onnx_builder import build_model

    results: dict[str, Any] = dict(done or {})
    todo = [k for k in keys if k not in results]
    for start in range(0, len(todo), batch):
        models = {
            k: prepare(create_session(build_model(net_of(k), seed=seed), threading_config), seed)
            for k in todo[start : start + batch]
        }
        samples = time_interleaved(
            models,
            rounds=rounds,
            runs_per_visit=runs_per_visit,
            seed=seed + start,
            before_round=before_round,
            anchor=anchor,
        )
        new = {k: robust_stats(v).to_json() for k, v in samples.items()}
        results.update(new)
        del models
        if on_batch is not None:
            on_batch(new, len(results), len(keys))
    return {k: TimingStats.from_json(results[k]) for k in keys}


def distinct_codes(space: MobileNetV3Space, n: int, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """``n`` distinct canonical random encodings (none equal to a row of ``exclude``), seeded."""
    codes = space.distinct_sample(n, np.random.default_rng(seed), exclude=exclude)
    if len(codes) < n:
        raise ValueError(f"space {space.name!r}: could not draw {n} distinct architectures")
    return codes


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def profile_device(
    out: str | Path,
    space: MobileNetV3Space,
    *,
    space_spec: str = "imagenet",
    quick: bool = False,
    resume: bool = False,
    name: str | None = None,
    calibrate: int | None = None,
    alignment: int | None = None,
    settings: Settings | None = None,
    threading_config: ThreadingConfig | None = None,
    seed: int = 0,
    quiet_wait_s: float = 0.0,
    progress: Progress | None = None,
) -> ProfileResult:
    """Measure this machine for ``space`` and write the profile, table and predictor (module docstring).

    ``quiet_wait_s > 0``: before each timing round wait up to that long for other jobs to go
    quiet (``timing.wait_for_quiet``).
    """
    import onnxruntime as ort

    from search.predictors.latency import LatencyTable, calibrate_roofline, fit_learned, fit_lut

    started = time.perf_counter()
    quiet = (lambda: wait_for_quiet(timeout_s=quiet_wait_s)) if quiet_wait_s > 0 else None
    out = Path(out)
    stem = out.name[: -len(out.suffix)] if out.suffix in (".yaml", ".yml") else out.name
    folder = out.parent
    cfg = threading_config or ThreadingConfig()
    st = settings or (Settings.quick() if quick else Settings())
    n_cal = (12 if quick else 40) if calibrate is None else calibrate
    simd = simd_width_bits()
    # channels a multiple of the fp32 SIMD lanes (ONNX Runtime's NCHWc block) unless told otherwise
    alignment = alignment or simd // 32
    blocks = decompose(space, alignment)
    fingerprint = {
        "space": space_spec,
        "space_name": space.name,
        "alignment": alignment,
        "settings": st.__dict__,
        "calibrate": n_cal,
        "ort_version": ort.__version__,
        "threading": cfg.__dict__,
        "seed": seed,
    }
    store = ResultStore(folder / f"{stem}.partial.json", fingerprint, resume)
    previous = sum(len(store.section(s)) for s in ("overhead", "roofline", "blocks", "networks"))
    if previous:
        _say(progress, f"resuming from {store.path} ({previous} results already measured)")

    overhead = store.section("overhead")
    if not overhead:
        stats = run_overhead_ms(cfg, seed=seed)
        store.put("overhead", {"run": stats.to_json()})
        overhead = store.section("overhead")
    run_overhead = TimingStats.from_json(overhead["run"]).median_ms
    _say(progress, f"session.run overhead {run_overhead * 1e3:.1f} us")

    roof = store.section("roofline")
    if not roof:
        store.put("roofline", measure_roofline(cfg, quick=quick, seed=seed).to_json())
        roof = store.section("roofline")
    _say(progress, f"roofline: {roof['peak_gflops']:.1f} GFLOP/s peak (GEMM), {roof['bandwidth_gbps']:.2f} GB/s (copy)")

    t_blocks = time.perf_counter()

    def block_batch(new: dict[str, Any], finished: int, total: int) -> None:
        store.put("blocks", new)
        rate = (time.perf_counter() - t_blocks) / max(1, finished - len(done_blocks))
        _say(progress, f"blocks {finished}/{total} ({finished / total:.0%}), ~{rate * (total - finished):.0f} s left")

    done_blocks = store.section("blocks")
    block_stats = time_blocks(
        blocks,
        rounds=st.block_rounds,
        runs_per_visit=st.block_runs,
        batch=st.block_batch,
        threading_config=cfg,
        seed=seed,
        done=done_blocks,
        on_batch=block_batch,
        before_round=quiet,
    )
    meta = {
        "space": space_spec,
        "space_name": space.name,
        "alignment": alignment,
        "dtype": "float32",
        "threading": cfg.__dict__,
        "ort_version": ort.__version__,
        "rounds": st.block_rounds,
        "runs_per_visit": st.block_runs,
    }
    table = LatencyTable(
        {k: max(0.0, s.median_ms - run_overhead) for k, s in block_stats.items()},
        run_overhead,
        {k: s.to_json() for k, s in block_stats.items()},
        meta,
        source=str(folder / f"{stem}.lut.json"),
    )

    predictor_path: Path | None = None
    codes = distinct_codes(space, n_cal, seed + 1) if n_cal > 0 else np.zeros((0, space.encoding_length), np.int64)
    if n_cal > 0:

        def net_batch(new: dict[str, Any], finished: int, total: int) -> None:
            store.put("networks", new)
            _say(progress, f"calibration networks {finished}/{total}")

        net_stats = time_networks(
            space,
            codes,
            alignment=alignment,
            rounds=st.net_rounds,
            runs_per_visit=st.net_runs,
            batch=st.net_batch,
            threading_config=cfg,
            seed=seed,
            done=store.section("networks"),
            on_batch=net_batch,
            before_round=quiet,
        )
        y = np.array([s.median_ms for s in net_stats])
        # ridge over 12 features needs a few times as many networks; below that, the LUT sum
        predictor = (
            fit_learned(space, table, codes, y, alignment=alignment, blocks=blocks)
            if n_cal >= 24
            else fit_lut(space, table, codes, y, alignment=alignment, blocks=blocks)
        )
        predictor.info["networks_ms"] = y.tolist()
        predictor.info["networks_codes"] = codes.tolist()
        predictor_path = predictor.save(folder / f"{stem}.predictor.json")
        _say(progress, f"fitted the {predictor.kind} predictor on {n_cal} networks -> {predictor_path}")

    lut_path = table.save(folder / f"{stem}.lut.json")
    params = calibrate_roofline(blocks, table, roof["peak_gflops"], roof["bandwidth_gbps"])
    profile = machine_profile(
        name or _default_name(),
        roofline=(roof["peak_gflops"], roof["bandwidth_gbps"]),
        utilisation=params.utilisation,
        memory_utilisation=params.memory_utilisation,
        simd_bits=simd,
        lut=lut_path.name,
        predictor=predictor_path.name if predictor_path else None,
        provenance={
            "machine": socket.gethostname(),
            "cpu": _cpu_name(),
            "ort_version": ort.__version__,
            "threads": cfg.intra_op_threads,
            "strategy": cfg.strategy,
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "fleetnas_version": _fleetnas_version(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "space": space_spec,
            "quick": quick,
            "alignment": alignment,
            "seconds": round(time.perf_counter() - started, 1),
        },
    )
    profile_path = write_text_atomic(folder / f"{stem}.yaml", _header(profile) + profile.to_yaml())
    store.remove()
    return ProfileResult(
        profile_path,
        lut_path,
        predictor_path,
        DeviceProfile.from_yaml(profile_path),
        time.perf_counter() - started,
        len(blocks.fragments),
        int(n_cal),
    )


def _default_name() -> str:
    host = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in socket.gethostname())
    return f"measured_{host or 'device'}"


def machine_profile(
    name: str,
    *,
    roofline: tuple[float, float],
    utilisation: Any,
    memory_utilisation: float,
    simd_bits: int,
    lut: str,
    predictor: str | None,
    provenance: dict[str, Any],
) -> DeviceProfile:
    """A ``DeviceProfile`` of this machine: measured where possible, power figures estimated."""
    import psutil

    peak_gflops, bandwidth = roofline
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    mhz, mhz_source = _cpu_mhz()
    flops_per_cycle = peak_gflops * 1e9 / (cores * mhz * 1e6)
    return DeviceProfile(
        name=name,
        kind="cpu",
        description=f"measured by fleetnas profile on {provenance['machine']} ({provenance['cpu']}); "
        "power and voltage figures are estimates",
        sources=(
            f"measured: peak {peak_gflops:.1f} GFLOP/s (ONNX Runtime fp32 GEMM, {cores} threads) -> "
            f"flops_per_cycle = peak / (cores x clock); clock {mhz:g} MHz from {mhz_source}",
            f"measured: memory_bandwidth_gbps {bandwidth:.2f} (ONNX Runtime copy, read + write)",
            "measured: utilisation and memory_utilisation fitted to the block latency table (roofline calibration)",
            "measured: cores (CPUs this process may use), caches (sysfs), ram_bytes (psutil), SIMD width (cpu flags)",
            "ESTIMATE: one OPP at the clock above with 1.0 V; voltage is not visible here",
            "ESTIMATE: dynamic_power_coefficient 1000 uW/MHz/V^2, static 2.0 W, idle 1.0 W, memory 1.0 W "
            "(server-class core order of magnitude; replace with measured power)",
        ),
        cores=cores,
        flops_per_cycle={"float32": round(flops_per_cycle, 3)},
        memory_bandwidth_gbps=round(bandwidth, 3),
        caches_kb=_caches_kb(),
        simd_width_bits=simd_bits,
        channel_alignment={"float32": int(provenance.get("alignment", simd_bits // 32))},
        opps=(OperatingPoint(round(mhz, 1), 1.0),),
        dynamic_power_coefficient=1000.0,
        static_power_w=2.0,
        idle_power_w=1.0,
        memory_power_w=1.0,
        utilisation={k: round(float(v), 4) for k, v in dict(utilisation).items()},
        memory_utilisation=round(float(memory_utilisation), 4),
        ram_bytes=int(psutil.virtual_memory().total),
        measured={  # type: ignore[arg-type]  # validated and frozen by DeviceProfile
            "lut": lut,
            **({"predictor": predictor} if predictor else {}),
            "roofline": {"peak_gflops": round(peak_gflops, 3), "bandwidth_gbps": round(bandwidth, 3)},
            "provenance": provenance,
        },
    )


def _header(profile: DeviceProfile) -> str:
    lines = [
        f"# Device profile written by `fleetnas profile` on {profile.measured.provenance['date']}."  # type: ignore[union-attr]
        if profile.measured
        else "# Device profile written by `fleetnas profile`.",
        "# Measured: cores, caches, RAM, SIMD width, peak FLOP/s, bandwidth, utilisation, the `measured` section.",
        "# ESTIMATE: opps voltage, dynamic_power_coefficient, static/idle/memory power (see sources).",
    ]
    return "\n".join(lines) + "\n"


def stderr_progress(prefix: str = "[profile]") -> Progress:
    """A progress callback printing one line per message to stderr."""

    def show(message: str) -> None:
        print(f"{prefix} {message}", file=sys.stderr, flush=True)

    return show


__all__ = [
    "ProfileResult",
    "Settings",
    "distinct_codes",
    "machine_profile",
    "profile_device",
    "simd_width_bits",
    "stderr_progress",
    "time_blocks",
    "time_networks",
]
