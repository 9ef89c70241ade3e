"""MultiModeRuntime: one network in several modes, served by ONNX Runtime, switched atomically.

Every mode's session is created and warmed at load — a cold session costs 10–200 ms here, so
nothing is created on a switch. The active mode is one immutable ``_Active`` record; ``infer``
reads that reference once and runs on it, and ``switch`` replaces it. So a switch is a reference
assignment (atomic under the GIL): requests already running finish on their mode, new ones use
the new mode, and none fail.

Threading on small CPUs: several per-session intra-op pools that spin while idle fight over the
cores (latency 3× worse on 2 vCPUs), so the default disables spinning (``no_spin``);
``ThreadingConfig`` also offers one process-wide pool (``global``) or ONNX Runtime's defaults.
Measured on the benchmark bundle (2 vCPUs, ``benchmarks/runtime_switch.py --strategy``): p50 of
the high mode 5.77 ms no_spin, 3.87 ms global, 3.98 ms default (waking parked threads costs
~1.5 ms a request); with two inference threads and a switching thread competing, the first
result after a switch took 8.2 ms no_spin, 7.4 ms global, 12.1 ms default. ``global`` is the
fastest, but it is process-wide state: once ONNX Runtime has a global pool, every other session
in the process must set ``use_per_session_threads = False`` or its creation fails. A library
must not impose that on the app embedding it, so ``global`` is opt-in.

Weight layouts (``weight_sharing``), when the bundle has a shared weight file:
- private (default): each session loads its mode's slices of the shared tensors and ONNX Runtime
  constant-folds them into private, fully optimised (prepacked, NCHWc-reordered) weights;
- shared: the shared file is read once into one numpy buffer handed to every session through
  ``SessionOptions.add_initializer``; ConstantFolding is disabled so the in-graph slices stay
  views of that one buffer. Less memory, slower small modes — ``benchmarks/runtime_switch.py``
  measures both, and the default follows its numbers (see the README).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.bundle import Bundle, BundleError
from runtime.metrics_recorder import LatencyRecorder
from runtime.onnx_builder import SharedWeights, read_shared

THREADING_STRATEGIES = ("no_spin", "global", "default")


@dataclass(frozen=True)
class ThreadingConfig:
    """How ONNX Runtime uses threads.

    ``no_spin``: per-session intra-op pools with spinning disabled (default; safe whatever else
    the app runs). ``global``: one process-wide pool shared by every session — faster, but then
    every ONNX Runtime session of the process must set ``use_per_session_threads = False`` (see
    the module docstring). ``default``: ONNX Runtime's own defaults (spinning per-session pools).
    """

    strategy: str = "no_spin"
    intra_op_threads: int = 0  # 0: ONNX Runtime's choice (the physical cores)
    inter_op_threads: int = 1

    def __post_init__(self) -> None:
        if self.strategy not in THREADING_STRATEGIES:
            raise ValueError(
                f"threading strategy {self.strategy!r} is not known; allowed: {', '.join(THREADING_STRATEGIES)}"
            )
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ValueError("threading: thread counts must be >= 0")


@dataclass(frozen=True)
class SwitchRecord:
    """One mode switch: when, from/to, why, and how long the swap itself took."""

    t: float  # seconds since the runtime was created
    from_mode: str
    to_mode: str
    reason: str
    swap_us: float

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"t": self.t, "from": self.from_mode, "to": self.to_mode, "reason": self.reason, "swap_us": self.swap_us}


@dataclass(frozen=True)
class ModeEnergy:
    """DVFS view of one mode on the runtime's device profile."""

    device: str
    freq_mhz: float
    freq_source: str  # "cpufreq" (read from Linux) or "nominal" (the profile's fastest OPP)
    energy_mj: float
    latency_ms: float
    optimal_freq_mhz: float | None = None
    optimal_energy_mj: float | None = None
    optimal_feasible: bool | None = None
    optimal_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class InferResult:
    """One inference: the first output, the mode that produced it, start/end (perf_counter s)."""

    output: np.ndarray
    mode: str
    started: float
    finished: float


@dataclass(frozen=True)
class _Active:
    """The record ``infer`` reads once per request: swapping it is the whole switch."""

    mode: str
    session: Any
    input_name: str
    output_names: tuple[str, ...]


@dataclass
class _ModeState:
    session: Any
    input_name: str
    output_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    recorder: LatencyRecorder
    energy: ModeEnergy | None = None
    inferences: int = 0
    energy_mj_total: float = 0.0


@dataclass
class _Loaded:
    """Everything built from one bundle; replaced as a whole by ``reload``."""

    bundle: Bundle
    modes: dict[str, _ModeState]
    shared_buffers: list[Any] = field(default_factory=list)  # keeps OrtValues (and arrays) alive


def session_options(threading_cfg: ThreadingConfig) -> Any:
    """ONNX Runtime ``SessionOptions`` as the runtime creates every session (profiling times with the same)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.inter_op_num_threads = threading_cfg.inter_op_threads
    if threading_cfg.strategy == "global":
        so.use_per_session_threads = False
    else:
        so.intra_op_num_threads = threading_cfg.intra_op_threads
        if threading_cfg.strategy == "no_spin":
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


def ensure_global_thread_pool(threading_cfg: ThreadingConfig) -> None:
    """Create ONNX Runtime's process-wide pool for the ``global`` strategy (first call wins)."""
    import onnxruntime as ort

    try:
        ort.set_global_thread_pool_sizes(threading_cfg.intra_op_threads, threading_cfg.inter_op_threads)
    except Exception as exc:  # ORT refuses once its environment exists; then the pool exists too
        if "already" not in str(exc).lower():
            raise


def read_shared_weights(root: Path, shared: SharedWeights) -> dict[str, np.ndarray]:
    """The shared tensors as read-only views of the memory-mapped shared file (one copy for all)."""
    return read_shared(root / shared.location, shared, mmap=True)


class MultiModeRuntime:
    """Serve a bundle's modes with ONNX Runtime; switch between them atomically.

    ``infer(x)`` is thread-safe and returns the first output; ``switch(mode, reason)`` swaps the
    active mode (see the module docstring). Metrics: per-mode latency histogram, inference
    count, energy estimate, and the switch log — ``metrics()`` returns them as JSON.
    """

    def __init__(
        self,
        bundle: Bundle | str | Path,
        *,
        mode: str | None = None,
        weight_sharing: bool = False,
        threading_config: ThreadingConfig | None = None,
        device: Any = None,
        deadline_ms: float | None = None,
        warmup_runs: int = 3,
        latency_window: int = 512,
    ) -> None:
        self.threading_config = threading_config or ThreadingConfig()
        self.weight_sharing = weight_sharing
        self.deadline_ms = deadline_ms
        self.warmup_runs = warmup_runs
        self.latency_window = latency_window
        self._t0 = time.monotonic()
        self._lock = threading.Lock()  # guards switch log and reload, never held during inference
        self._switches: list[SwitchRecord] = []
        self.failed_requests = 0
        self._device_override = device
        self._loaded = self._load(bundle)
        first = mode or self._loaded.bundle.modes[0]
        self._active = self._activate(self._loaded, first)

    # ---- loading -----------------------------------------------------------------------------
    def _load(self, bundle: Bundle | str | Path) -> _Loaded:
        b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        import onnxruntime as ort

        if self.threading_config.strategy == "global":
            ensure_global_thread_pool(self.threading_config)
        shared = b.manifest.shared_weights
        keep: list[Any] = []
        initializers: dict[str, Any] = {}
        if shared is not None and self.weight_sharing:
            arrays = read_shared_weights(b.root, shared)
            keep.append(arrays)
            for name, arr in arrays.items():
                value = ort.OrtValue.ortvalue_from_numpy(arr)
                keep.append(value)
                initializers[f"shared::{name}"] = value
        modes: dict[str, _ModeState] = {}
        device = self._resolve_device(b)
        for entry in b.manifest.modes:
            so = session_options(self.threading_config)
            disabled: list[str] = []
            if initializers:
                used = self._shared_names_in(b.root / entry.file)
                for name in used:
                    if name in initializers:
                        so.add_initializer(name, initializers[name])
                # Without this ORT folds the Slice-of-shared-weight into private copies.
                disabled = ["ConstantFolding"]
            try:
                session = ort.InferenceSession(
                    str(b.root / entry.file), so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
                )
            except Exception as exc:
                raise BundleError(f"{entry.file}: ONNX Runtime cannot load it ({exc})") from None
            shape = entry.input.concrete_shape(1)
            state = _ModeState(
                session=session,
                input_name=entry.input.name,
                output_names=entry.outputs,
                input_shape=shape,
                recorder=LatencyRecorder(self.latency_window),
            )
            x = np.zeros(shape, dtype=entry.input.dtype)
            for _ in range(self.warmup_runs):
                session.run(list(entry.outputs), {entry.input.name: x})
            if device is not None:
                state.energy = self._mode_energy(entry.netspec, device)
            modes[entry.name] = state
        return _Loaded(b, modes, keep)

    @staticmethod
    def _shared_names_in(model_path: Path) -> list[str]:
        import onnx

        model = onnx.load(str(model_path), load_external_data=False)
        return [t.name for t in model.graph.initializer if t.name.startswith("shared::")]

    def _resolve_device(self, bundle: Bundle) -> Any:
        from runtime.hardware import DeviceProfile, load_device

        dev = self._device_override
        if isinstance(dev, DeviceProfile):
            return dev
        if isinstance(dev, str):
            return load_device(dev)
        m = bundle.manifest
        if m.device_profile is not None:
            return DeviceProfile.from_dict(dict(m.device_profile), source=f"{bundle.root}/manifest.json:device_profile")
        if m.device is not None:
            return load_device(m.device)
        return None

    def _mode_energy(self, netspec: Any, device: Any) -> ModeEnergy:
        from runtime.energy import estimate, optimal_opp
        from runtime.hardware.workload import workload_of

        freq, source = device.max_opp.freq_mhz, "nominal"
        try:
            from runtime.telemetry import read_cpufreq_mhz

            measured = read_cpufreq_mhz()
        except ImportError:  # pragma: no cover - telemetry ships with runtime
            measured = None
        if measured is not None:
            freq, source = measured, "cpufreq"
        opp = device.opp_at(min(freq, device.max_opp.freq_mhz))
        work = workload_of(netspec, device, netspec.dtype)
        now = estimate(work, device, opp)
        extra: dict[str, Any] = {}
        if self.deadline_ms is not None:
            choice = optimal_opp(work, device, self.deadline_ms / 1e3)
            extra = {
                "optimal_freq_mhz": choice.opp.freq_mhz,
                "optimal_energy_mj": choice.estimate.energy_j * 1e3,
                "optimal_feasible": choice.feasible,
                "optimal_reason": choice.reason,
            }
        return ModeEnergy(device.name, opp.freq_mhz, source, now.energy_j * 1e3, now.latency_s * 1e3, **extra)

    def _activate(self, loaded: _Loaded, mode: str) -> _Active:
        if mode not in loaded.modes:
            raise ValueError(f"unknown mode {mode!r}; modes: {', '.join(loaded.modes)}")
        s = loaded.modes[mode]
        return _Active(mode, s.session, s.input_name, s.output_names)

    # ---- serving -----------------------------------------------------------------------------
    @property
    def modes(self) -> tuple[str, ...]:
        """Mode names, most to least capable."""
        return self._loaded.bundle.modes

    @property
    def current_mode(self) -> str:
        """The mode new requests run on."""
        return self._active.mode

    @property
    def bundle(self) -> Bundle:
        """The bundle being served."""
        return self._loaded.bundle

    def input_shape(self, mode: str | None = None) -> tuple[int, ...]:
        """The mode's input shape at batch 1."""
        return self._loaded.modes[mode or self.current_mode].input_shape

    def infer(self, x: np.ndarray, *, return_mode: bool = False) -> Any:
        """Run the active mode on ``x``; returns the first output (and the mode, if asked)."""
        result = self.infer_detailed(x)
        return (result.output, result.mode) if return_mode else result.output

    def infer_detailed(self, x: np.ndarray) -> InferResult:
        """Run the active mode on ``x``; returns the output, the mode that ran and the timestamps."""
        active = self._active  # read once: a concurrent switch cannot change this request's mode
        state = self._loaded.modes[active.mode]
        start = time.perf_counter()
        try:
            out = active.session.run(active.output_names[:1], {active.input_name: x})[0]
        except Exception:
            with self._lock:
                self.failed_requests += 1
            raise
        end = time.perf_counter()
        state.recorder.record(end - start)
        with self._lock:
            state.inferences += 1
            if state.energy is not None:
                state.energy_mj_total += state.energy.energy_mj * (x.shape[0] if x.ndim else 1)
        return InferResult(out, active.mode, start, end)

    def switch(self, mode: str, reason: str = "manual") -> SwitchRecord:
        """Make ``mode`` the active mode; returns the switch record (a no-op switch is recorded too)."""
        t0 = time.perf_counter_ns()
        previous = self._active
        new = self._activate(self._loaded, mode)
        if mode != previous.mode:
            self._loaded.modes[mode].recorder.reset_window()
        self._active = new
        swap_us = (time.perf_counter_ns() - t0) / 1e3
        record = SwitchRecord(time.monotonic() - self._t0, previous.mode, mode, reason, swap_us)
        with self._lock:
            self._switches.append(record)
        return record

    def latency_quantile_ms(self, q: float, window: int = 200) -> float | None:
        """Quantile ``q`` of the current mode's most recent ``window`` latencies, in ms."""
        return self._loaded.modes[self.current_mode].recorder.window_quantile_ms(q, window)

    def reload(self, bundle: Bundle | str | Path, mode: str | None = None) -> None:
        """Serve a new bundle; on any defect raise and keep serving the previous one.

        The new sessions are built and warmed before the swap, so serving never pauses.
        """
        loaded = self._load(bundle)  # raises BundleError without touching the current state
        target = mode or (self.current_mode if self.current_mode in loaded.modes else loaded.bundle.modes[0])
        active = self._activate(loaded, target)
        with self._lock:
            previous = self._active.mode
            self._loaded = loaded
            self._active = active
            self._switches.append(SwitchRecord(time.monotonic() - self._t0, previous, target, "bundle reloaded", 0.0))

    # ---- metrics -----------------------------------------------------------------------------
    @property
    def switches(self) -> Sequence[SwitchRecord]:
        """The switch log (a copy)."""
        with self._lock:
            return list(self._switches)

    def metrics(self) -> dict[str, Any]:
        """Per-mode latency, counts and energy, the switch log and the configuration, as JSON."""
        loaded = self._loaded
        manifest = loaded.bundle.manifest
        modes: dict[str, Any] = {}
        for name, s in loaded.modes.items():
            modes[name] = {
                "latency": s.recorder.summary().to_json(),
                "inferences": s.inferences,
                "energy": s.energy.to_json() if s.energy else None,
                "energy_mj_total": s.energy_mj_total if s.energy else None,
            }
        switches = self.switches
        return {
            "bundle": {"root": str(loaded.bundle.root), "version": manifest.bundle_version, "modes": list(self.modes)},
            "current_mode": self.current_mode,
            "layout": "shared" if (self.weight_sharing and manifest.shared_weights) else "private",
            "threading": {
                "strategy": self.threading_config.strategy,
                "intra_op_threads": self.threading_config.intra_op_threads,
            },
            "deadline_ms": self.deadline_ms,
            "modes": modes,
            "inferences": sum(s.inferences for s in loaded.modes.values()),
            "failed_requests": self.failed_requests,
            "switch_count": len(switches),
            "switches": [r.to_json() for r in switches],
        }


def mode_input(runtime: MultiModeRuntime, batch: int = 1, seed: int = 0, mode: str | None = None) -> np.ndarray:
    """A random input of the right shape for ``mode`` (default: current) — for demos and benchmarks."""
    shape = (batch, *runtime.input_shape(mode)[1:])
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)

