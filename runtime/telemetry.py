"""Device telemetry: one ``Signals`` value, pluggable sources, and a validating, smoothing sampler.

A *source* is anything with ``read() -> Signals`` (``TelemetrySource``). Three ship here:

- ``PsutilSource`` reads the machine: battery, whole-machine CPU load, memory, the hottest
  temperature sensor and the current CPU frequency. Sensors a platform lacks come back as None.
- ``TraceSource`` replays a recorded time series (CSV or JSON, see ``load_trace``) against a clock,
  so a policy can be exercised on a laptop exactly as it would run on the device.
- ``ManualSource`` is fed by the application (``update(**fields)``, thread-safe). On Android the
  app forwards ``BatteryManager`` and ``PowerManager.getCurrentThermalStatus()`` this way.

``Sampler`` polls a source on a daemon thread (or once per ``step()``, for deterministic use),
drops implausible values with a ``TelemetryWarning`` and EMA-smooths the numeric fields.

Missing data is always ``None``, never a made-up number: a desktop has no battery, a VM has no
temperature sensor, and consumers (the mode policy) decide what a missing signal means.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import threading
import time
import warnings
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import IntEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "INT_FIELDS",
    "SIGNAL_FIELDS",
    "SMOOTHED_FIELDS",
    "VALID_RANGES",
    "ManualSource",
    "PsutilSource",
    "Sampler",
    "Signals",
    "TelemetryError",
    "TelemetrySource",
    "TelemetryWarning",
    "ThermalStatus",
    "TraceSource",
    "load_trace",
    "read_cpufreq_mhz",
    "validate_signals",
    "write_trace",
]

_log = logging.getLogger(__name__)


class TelemetryError(ValueError):
    """A trace file or a field value is malformed; the message names the file, the row and the field."""


class TelemetryWarning(UserWarning):
    """A reading was implausible (NaN, negative, out of range) and was dropped by the ``Sampler``."""


class ThermalStatus(IntEnum):
    """Android ``PowerManager.THERMAL_STATUS_*`` levels (``Signals.thermal_status`` uses these ints)."""

    NONE = 0
    LIGHT = 1
    MODERATE = 2
    SEVERE = 3
    CRITICAL = 4
    EMERGENCY = 5
    SHUTDOWN = 6


@dataclass(frozen=True)
class Signals:
    """One telemetry reading. ``t`` is in seconds (monotonic or trace time); missing values are None.

    ``cpu_percent`` and ``mem_percent`` (memory *used*) are 0-100 over the whole machine;
    ``temperature_c`` is the maximum over the sensors; ``thermal_status`` is a ``ThermalStatus``.
    """

    t: float
    battery_percent: float | None = None
    plugged: bool | None = None
    cpu_percent: float | None = None
    mem_available_bytes: int | None = None
    mem_percent: float | None = None
    temperature_c: float | None = None
    thermal_status: int | None = None
    cpu_freq_mhz: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The reading as a plain dict of all fields (JSON-ready; ``load_trace`` reads it back)."""
        return {name: getattr(self, name) for name in SIGNAL_FIELDS}


SIGNAL_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Signals))
INT_FIELDS: tuple[str, ...] = ("mem_available_bytes", "thermal_status")
_BOOL_FIELDS: tuple[str, ...] = ("plugged",)
# plugged and thermal_status are states, not noisy measurements: the latest value is taken as is.
SMOOTHED_FIELDS: tuple[str, ...] = (
    "battery_percent",
    "cpu_percent",
    "mem_available_bytes",
    "mem_percent",
    "temperature_c",
    "cpu_freq_mhz",
)
# Smoothed slowly when falling but followed at once when rising (safety signals).
FAST_RISE_FIELDS: tuple[str, ...] = ("temperature_c",)
# Inclusive plausible ranges; the Sampler drops anything outside (cpu_freq_mhz must also be > 0).
VALID_RANGES: Mapping[str, tuple[float, float]] = {
    "battery_percent": (0.0, 100.0),
    "cpu_percent": (0.0, 100.0),
    "mem_percent": (0.0, 100.0),
    "mem_available_bytes": (0.0, math.inf),
    "temperature_c": (-40.0, 150.0),
    "thermal_status": (float(ThermalStatus.NONE), float(ThermalStatus.SHUTDOWN)),
    "cpu_freq_mhz": (0.0, math.inf),
}
_MANUAL_FIELDS: tuple[str, ...] = SIGNAL_FIELDS[1:]  # t is stamped by the source's clock


@runtime_checkable
class TelemetrySource(Protocol):
    """Anything that can produce a reading now."""

    def read(self) -> Signals:
        """The current reading (fields the source cannot measure are None)."""
        ...


# ---- value coercion (shared by trace files and ManualSource.update) -------------------------------


class _FieldError(Exception):
    """A single field's value is wrong; the caller adds where it came from."""


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _coerce(name: str, value: Any, *, from_text: bool) -> Any:
    """``value`` converted to the type of field ``name``; ``from_text`` parses CSV cells."""
    if from_text:
        text = str(value).strip()
        if text == "" or text.lower() in ("null", "none"):
            value = None
        elif name in _BOOL_FIELDS:
            low = text.lower()
            if low in ("true", "yes", "1"):
                return True
            if low in ("false", "no", "0"):
                return False
            raise _FieldError(f"expected true/false, got {_describe(text)}")
        else:
            try:
                value = float(text)
            except ValueError:
                raise _FieldError(f"expected a number, got {_describe(text)}") from None
    if value is None:
        if name == "t":
            raise _FieldError("missing (t is required)")
        return None
    if name in _BOOL_FIELDS:
        if not isinstance(value, bool):
            raise _FieldError(f"expected true/false, got {_describe(value)}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _FieldError(f"expected a number, got {_describe(value)}")
    if name == "t":
        if not math.isfinite(value):
            raise _FieldError(f"expected a finite number, got {_describe(value)}")
        return float(value)
    if name in INT_FIELDS:
        # NaN passes through as a float so the Sampler can drop it with a warning like any bad reading.
        if isinstance(value, float) and math.isfinite(value):
            if not value.is_integer():
                raise _FieldError(f"expected an integer, got {_describe(value)}")
            return int(value)
        return value
    return float(value)


# ---- psutil and sysfs -----------------------------------------------------------------------------


def read_cpufreq_mhz(cpu: int = 0, sysfs_root: str | os.PathLike[str] = "/sys") -> float | None:
    """Current frequency of ``cpu`` in MHz from Linux cpufreq sysfs, or None where it is not exposed."""
    if isinstance(cpu, bool) or not isinstance(cpu, int) or cpu < 0:
        raise ValueError(f"cpu must be a non-negative int, got {cpu!r}")
    path = Path(sysfs_root) / "devices" / "system" / "cpu" / f"cpu{cpu}" / "cpufreq" / "scaling_cur_freq"
    try:
        khz = float(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not math.isfinite(khz) or khz <= 0:
        return None
    return khz / 1000.0


class PsutilSource:
    """Readings of this machine via psutil (imported lazily: an Android app may only use ManualSource).

    - ``cpu_percent``: psutil's ``cpu_percent(None)`` measures since the previous call *in the same
      thread*; the first call in a thread compares against nothing meaningful (0.0, or the time since
      ``import psutil``). So the first reading in each thread has ``cpu_percent=None``; later readings
      in that thread are real. A ``Sampler`` thread therefore yields CPU load from its second sample.
    - battery: ``sensors_battery()`` returns None without a battery (desktops, VMs): both battery
      fields are then None. A platform without the function, or one where it fails, gives None too.
    - ``temperature_c``: the hottest plausible sensor (-40..150 °C) of ``sensors_temperatures()``,
      which some platforms lack; None when there is none.
    - ``cpu_freq_mhz``: ``read_cpufreq_mhz(cpu, sysfs_root)``, i.e. the DVFS frequency the kernel set
      (not psutil's ``cpu_freq()``, which on VMs and some ARM boards reports a nominal clock).

    ``psutil_module`` lets tests inject a psutil-like object; ``clock`` stamps ``t``.
    """

    def __init__(
        self,
        *,
        psutil_module: Any | None = None,
        clock: Callable[[], float] = time.monotonic,
        cpu: int = 0,
        sysfs_root: str | os.PathLike[str] = "/sys",
    ) -> None:
        if psutil_module is None:
            import psutil

            psutil_module = psutil
        self._ps = psutil_module
        self._clock = clock
        self._cpu = cpu
        self._sysfs_root = sysfs_root
        self._primed: set[int] = set()
        self._lock = threading.Lock()

    def read(self) -> Signals:
        """The current reading; see the class docstring for what each field means here."""
        battery, plugged = self._battery()
        mem = self._ps.virtual_memory()
        return Signals(
            t=float(self._clock()),
            battery_percent=battery,
            plugged=plugged,
            cpu_percent=self._cpu_percent(),
            mem_available_bytes=int(mem.available),
            mem_percent=float(mem.percent),
            temperature_c=self._temperature(),
            thermal_status=None,  # no portable source on Linux; Android apps feed it via ManualSource
            cpu_freq_mhz=read_cpufreq_mhz(self._cpu, self._sysfs_root),
        )

    def _cpu_percent(self) -> float | None:
        value = float(self._ps.cpu_percent(None))
        tid = threading.get_ident()
        with self._lock:
            if tid not in self._primed:
                self._primed.add(tid)
                return None
        return value

    def _battery(self) -> tuple[float | None, bool | None]:
        fn = getattr(self._ps, "sensors_battery", None)
        if fn is None:
            return None, None
        try:
            bat = fn()
        except Exception as exc:  # optional sensor: a platform quirk must not stop the sampler
            _log.debug("sensors_battery() failed: %s", exc)
            return None, None
        if bat is None:
            return None, None
        percent = getattr(bat, "percent", None)
        plugged = getattr(bat, "power_plugged", None)
        return (
            None if percent is None else float(percent),
            None if plugged is None else bool(plugged),
        )

    def _temperature(self) -> float | None:
        fn = getattr(self._ps, "sensors_temperatures", None)
        if fn is None:
            return None
        try:
            sensors = fn()
        except Exception as exc:  # optional sensor, as above
            _log.debug("sensors_temperatures() failed: %s", exc)
            return None
        lo, hi = VALID_RANGES["temperature_c"]
        # Unconnected sensors report 0, -273 or 255 °C; ignore them instead of letting them win the max.
        values = [
            float(entry.current)
            for entries in (sensors or {}).values()
            for entry in entries
            if isinstance(getattr(entry, "current", None), int | float)
            and math.isfinite(entry.current)
            and lo <= entry.current <= hi
        ]
        return max(values) if values else None


# ---- trace files ----------------------------------------------------------------------------------


def _check_increasing(samples: Sequence[Signals], where: Callable[[int], str]) -> None:
    for i in range(1, len(samples)):
        if not samples[i].t > samples[i - 1].t:
            raise TelemetryError(
                f"{where(i)}, field 't': {samples[i].t:g} is not greater than the previous "
                f"{samples[i - 1].t:g} (t must increase)"
            )


def _load_csv(text: str, source: str) -> tuple[Signals, ...]:
    header: list[str] | None = None
    header_line = 0
    samples: list[Signals] = []
    lines: list[int] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):  # blank lines and comments
            continue
        cells = [c.strip() for c in next(csv.reader([line]))]
        if header is None:
            header, header_line = cells, lineno
            seen: set[str] = set()
            for name in header:
                if name not in SIGNAL_FIELDS:
                    raise TelemetryError(
                        f"{source}: header (line {lineno}), field {name!r}: unknown column; "
                        f"allowed: {', '.join(SIGNAL_FIELDS)}"
                    )
                if name in seen:
                    raise TelemetryError(f"{source}: header (line {lineno}), field {name!r}: duplicate column")
                seen.add(name)
            if "t" not in header:
                raise TelemetryError(f"{source}: header (line {lineno}), field 't': missing column (t is required)")
            continue
        row = len(samples) + 1
        where = f"{source}: row {row} (line {lineno})"
        if len(cells) > len(header):
            raise TelemetryError(
                f"{where}, field '<row>': {len(cells)} cells but the header (line {header_line}) has {len(header)}"
            )
        values: dict[str, Any] = {}
        for name, cell in zip(header, cells, strict=False):  # short rows: the remaining fields are missing
            try:
                values[name] = _coerce(name, cell, from_text=True)
            except _FieldError as exc:
                raise TelemetryError(f"{where}, field {name!r}: {exc}") from None
        if "t" not in values:
            raise TelemetryError(f"{where}, field 't': missing (t is required)")
        samples.append(Signals(**values))
        lines.append(lineno)
    if header is None:
        raise TelemetryError(f"{source}: field '<header>': empty file, expected a header row naming the columns")
    _check_increasing(samples, lambda i: f"{source}: row {i + 1} (line {lines[i]})")
    return tuple(samples)


def _load_json(text: str, source: str) -> tuple[Signals, ...]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TelemetryError(f"{source}: field '<top level>': not valid JSON ({exc})") from None
    if isinstance(data, Mapping):
        extra = [k for k in data if k not in ("samples", "meta")]
        if extra or "samples" not in data:
            bad = extra[0] if extra else "samples"
            raise TelemetryError(
                f"{source}: field {bad!r}: expected an object with keys 'samples' (required) and 'meta' (optional)"
            )
        data = data["samples"]
    if not isinstance(data, list):
        raise TelemetryError(
            f"{source}: field '<top level>': expected a list of samples or {{\"samples\": [...]}}, "
            f"got {type(data).__name__}"
        )
    samples: list[Signals] = []
    for i, item in enumerate(data):
        where = f"{source}: samples[{i}]"
        if not isinstance(item, Mapping):
            raise TelemetryError(f"{where}, field '<sample>': expected an object, got {type(item).__name__}")
        values: dict[str, Any] = {}
        for name, value in item.items():
            if name not in SIGNAL_FIELDS:
                raise TelemetryError(f"{where}, field {name!r}: unknown field; allowed: {', '.join(SIGNAL_FIELDS)}")
            try:
                values[name] = _coerce(name, value, from_text=False)
            except _FieldError as exc:
                raise TelemetryError(f"{where}, field {name!r}: {exc}") from None
        if "t" not in values:
            raise TelemetryError(f"{where}, field 't': missing (t is required)")
        samples.append(Signals(**values))
    _check_increasing(samples, lambda i: f"{source}: samples[{i}]")
    return tuple(samples)


def load_trace(path: str | os.PathLike[str]) -> tuple[Signals, ...]:
    """The samples of a trace file (``.csv`` or ``.json``), validated; errors are ``TelemetryError``.

    CSV: a header row of ``Signals`` field names (``t`` required, any subset of the others, any
    order), then one row per sample; an empty cell (or ``null``/``none``) is a missing value;
    ``plugged`` is true/false/yes/no/1/0; blank lines and lines starting with ``#`` are skipped.
    JSON: a list of objects with those keys, or ``{"samples": [...], "meta": ...}``; null = missing.
    ``t`` must strictly increase. Values are only type-checked here (``nan`` or 150 % are kept)
    so that a trace can also exercise the Sampler's validation.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TelemetryError(f"{p}: field '<file>': file not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise TelemetryError(f"{p}: field '<file>': cannot read the file ({exc})") from None
    suffix = p.suffix.lower()
    if suffix == ".csv":
        samples = _load_csv(text, str(p))
    elif suffix == ".json":
        samples = _load_json(text, str(p))
    else:
        raise TelemetryError(f"{p}: field '<file>': unknown trace format {suffix!r}; allowed: .csv, .json")
    if not samples:
        raise TelemetryError(f"{p}: field '<samples>': the trace has no samples")
    return samples


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def write_trace(path: str | os.PathLike[str], samples: Iterable[Signals]) -> Path:
    """Write ``samples`` as a trace (format from the suffix, ``.csv`` or ``.json``); returns the path."""
    p = Path(path)
    rows = [s.to_dict() for s in samples]
    suffix = p.suffix.lower()
    if suffix == ".json":
        p.write_text(json.dumps({"samples": rows}, indent=1) + "\n", encoding="utf-8")
    elif suffix == ".csv":
        with p.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(SIGNAL_FIELDS)
            for row in rows:
                writer.writerow([_csv_cell(row[k]) for k in SIGNAL_FIELDS])
    else:
        raise TelemetryError(f"{p}: field '<file>': unknown trace format {suffix!r}; allowed: .csv, .json")
    return p


class TraceSource:
    """Replays recorded samples: ``read()`` is the latest sample with ``t <= clock()``.

    ``clock`` returns *trace time*. By default it is ``samples[0].t + speed * (wall seconds since
    the first read())``, so a trace plays in real time (or ``speed`` times faster). Inject a clock
    for deterministic replay, or walk ``samples`` directly. Before the first sample, ``read()``
    returns an all-missing reading stamped with the clock; after the last, the last sample.
    Returned samples keep their recorded ``t``. ``wall_clock`` replaces ``time.monotonic`` in tests.
    """

    def __init__(
        self,
        samples: Iterable[Signals],
        *,
        clock: Callable[[], float] | None = None,
        speed: float = 1.0,
        name: str = "<samples>",
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.samples: tuple[Signals, ...] = tuple(samples)
        self.name = name
        if not self.samples:
            raise TelemetryError(f"{name}: field '<samples>': the trace has no samples")
        _check_increasing(self.samples, lambda i: f"{name}: samples[{i}]")
        if isinstance(speed, bool) or not isinstance(speed, int | float) or not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be a finite number > 0, got {speed!r}")
        self.speed = float(speed)
        self._times = [s.t for s in self.samples]
        self._clock = clock
        self._wall_clock = wall_clock
        self._wall_start: float | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, clock: Callable[[], float] | None = None, speed: float = 1.0
    ) -> TraceSource:
        """A source replaying the trace file at ``path`` (see ``load_trace`` for the formats)."""
        return cls(load_trace(path), clock=clock, speed=speed, name=str(path))

    @property
    def start(self) -> float:
        """Trace time of the first sample."""
        return self._times[0]

    @property
    def end(self) -> float:
        """Trace time of the last sample."""
        return self._times[-1]

    def now(self) -> float:
        """Current trace time (the injected clock, or scaled wall time since the first read)."""
        if self._clock is not None:
            return float(self._clock())
        with self._lock:
            if self._wall_start is None:
                self._wall_start = self._wall_clock()
            start = self._wall_start
        return self.start + (self._wall_clock() - start) * self.speed

    def finished(self) -> bool:
        """True once trace time has reached the last sample (reads no longer change)."""
        return self.now() >= self.end

    def read(self) -> Signals:
        """The latest sample with ``t <= now()`` (all-missing before the first sample)."""
        now = self.now()
        i = bisect_right(self._times, now)
        return self.samples[i - 1] if i else Signals(t=now)


class ManualSource:
    """Signals pushed by the application: ``update(battery_percent=40, plugged=False)``, thread-safe.

    Values persist until updated again (``None`` clears one). ``read()`` stamps ``t`` with ``clock``.
    Unknown names or wrong types raise ``TelemetryError`` at the ``update`` call; out-of-range
    values are accepted here and dropped (with a warning) by the ``Sampler``, as for any source.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, **initial: Any) -> None:
        self._clock = clock
        self._values: dict[str, Any] = {}
        self._lock = threading.Lock()
        if initial:
            self.update(**initial)

    def update(self, **values: Any) -> None:
        """Set some fields (all-or-nothing: a bad name or type changes nothing)."""
        checked: dict[str, Any] = {}
        for name, value in values.items():
            if name not in _MANUAL_FIELDS:
                raise TelemetryError(
                    f"ManualSource.update: field {name!r}: unknown field; allowed: {', '.join(_MANUAL_FIELDS)}"
                )
            try:
                checked[name] = _coerce(name, value, from_text=False)
            except _FieldError as exc:
                raise TelemetryError(f"ManualSource.update: field {name!r}: {exc}") from None
        with self._lock:
            self._values.update(checked)

    def read(self) -> Signals:
        """The current values, stamped with ``clock()``."""
        with self._lock:
            values = dict(self._values)
        return Signals(t=float(self._clock()), **values)


# ---- validation and smoothing ---------------------------------------------------------------------


def validate_signals(signals: Signals) -> tuple[Signals, tuple[str, ...]]:
    """``signals`` with every implausible field set to None, and one message per dropped field.

    Dropped: NaN/inf, wrong types, and values outside ``VALID_RANGES`` (percentages outside 0-100,
    temperature outside -40..150 °C, thermal status outside 0..6, negative memory, frequency <= 0).
    ``t`` is not checked here (see ``Sampler.step``).
    """
    clean: dict[str, Any] = {"t": signals.t}
    problems: list[str] = []
    for name in SIGNAL_FIELDS[1:]:
        value = getattr(signals, name)
        ok = True
        if value is None:
            pass
        elif name in _BOOL_FIELDS:
            ok = isinstance(value, bool)
        elif isinstance(value, bool) or not isinstance(value, int | float):
            ok = False
        else:
            lo, hi = VALID_RANGES[name]
            ok = math.isfinite(value) and lo <= value <= hi
            if ok and name == "cpu_freq_mhz":
                ok = value > 0
            if ok and name in INT_FIELDS and isinstance(value, float):
                ok = value.is_integer()
                value = int(value)
        if ok:
            clean[name] = value
        else:
            lo, hi = VALID_RANGES.get(name, (0.0, 1.0))
            expected = "true/false" if name in _BOOL_FIELDS else f"a number in [{lo:g}, {hi:g}]"
            problems.append(f"t={signals.t:g}: {name}={value!r} dropped (expected {expected})")
    return Signals(**clean), tuple(problems)


class Sampler:
    """Reads ``source`` every ``interval_s`` on a daemon thread (or once per ``step()``).

    Each reading is validated (``validate_signals``; each dropped field emits a ``TelemetryWarning``
    via ``warnings.warn``, so ``-W error`` or ``pytest.warns`` see them), then smoothed: numeric
    fields (``SMOOTHED_FIELDS``) by an exponential moving average ``s = alpha * x + (1 - alpha) * s``
    seeded by the first value, except that a rise of a ``FAST_RISE_FIELDS`` field (temperature) is
    taken at once; ``plugged`` and ``thermal_status`` take the latest value. A field that
    is missing or dropped keeps its last good (smoothed) value, so one bad reading does not look
    like a change. ``alpha=1`` disables smoothing. With the default 0.5 s and alpha 0.3 a step
    change is 90 % through after about 7 samples (3.5 s): a one-sample CPU burst moves the smoothed
    value by only 30 % of its height.

    Callbacks in ``on_sample`` get each smoothed ``Signals`` (in the sampling thread). In the thread,
    exceptions from the source or callbacks are logged and counted (``errors``, ``last_error``) and
    sampling continues; ``step()`` lets them propagate.
    """

    def __init__(
        self,
        source: TelemetrySource,
        *,
        interval_s: float = 0.5,
        alpha: float = 0.3,
        on_sample: Iterable[Callable[[Signals], None]] = (),
        name: str = "fleetnas-telemetry",
    ) -> None:
        if isinstance(interval_s, bool) or not isinstance(interval_s, int | float) or not interval_s > 0:
            raise ValueError(f"interval_s must be a number > 0, got {interval_s!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        self.source = source
        self.interval_s = float(interval_s)
        self.alpha = float(alpha)
        self.on_sample: list[Callable[[Signals], None]] = list(on_sample)
        self.name = name
        self.errors = 0
        self.last_error: BaseException | None = None
        self._held: dict[str, Any] = {}
        self._latest: Signals | None = None
        self._raw: Signals | None = None
        self._samples = 0
        self._step_lock = threading.RLock()  # one step (read, smooth, callbacks) at a time
        self._state_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- synchronous use ----------------------------------------------------------------------
    def step(self) -> Signals:
        """Read, validate and smooth one sample, run the callbacks; returns the smoothed reading."""
        with self._step_lock:
            raw = self.source.read()
            t = raw.t
            if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
                source = type(self.source).__name__
                raise TelemetryError(f"{source}.read(): field 't': expected a finite time, got {t!r}")
            clean, problems = validate_signals(raw)
            for message in problems:
                warnings.warn(message, TelemetryWarning, stacklevel=2)
            smoothed = self._smooth(clean)
            with self._state_lock:
                self._raw = raw
                self._latest = smoothed
                self._samples += 1
            for callback in tuple(self.on_sample):
                callback(smoothed)
            return smoothed

    def _smooth(self, clean: Signals) -> Signals:
        out: dict[str, Any] = {"t": float(clean.t)}
        for name in SIGNAL_FIELDS[1:]:
            x = getattr(clean, name)
            prev = self._held.get(name)
            if x is None:
                new = prev
            elif name in FAST_RISE_FIELDS and prev is not None and float(x) > prev:
                # Overheating must act at once (an EMA would hide a short spike: five samples at
                # 86 °C from 50 °C peak at 77 °C smoothed); cooling is smoothed so upgrades wait.
                new = float(x)
            elif name in SMOOTHED_FIELDS and prev is not None:
                new = self.alpha * float(x) + (1.0 - self.alpha) * prev
            else:
                new = float(x) if name in SMOOTHED_FIELDS else x
            if new is not None:
                self._held[name] = new
            if new is not None and name == "mem_available_bytes":
                new = round(new)
            out[name] = new
        return Signals(**out)

    def latest(self) -> Signals | None:
        """The last smoothed reading (None before the first sample)."""
        with self._state_lock:
            return self._latest

    def latest_raw(self) -> Signals | None:
        """The last reading as the source returned it, before validation and smoothing."""
        with self._state_lock:
            return self._raw

    @property
    def samples_taken(self) -> int:
        """How many readings have been processed."""
        with self._state_lock:
            return self._samples

    def reset(self) -> None:
        """Forget the smoothing state (the next reading seeds every average afresh)."""
        with self._step_lock:
            self._held.clear()
            with self._state_lock:
                self._latest = None

    # ---- background thread ----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while the sampling thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start sampling on a daemon thread (first sample immediately); no-op if already running."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to stop and join it (the current sample, if any, completes first)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if thread is not None and not thread.is_alive():
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as exc:  # keep sampling: one failing read must not end telemetry
                self.errors += 1
                self.last_error = exc
                _log.warning("telemetry sample failed: %s: %s", type(exc).__name__, exc)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
