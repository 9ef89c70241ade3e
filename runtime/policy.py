"""Mode policy: which of a network's modes to run, given telemetry.

A policy is any object with ``decide(signals, state) -> Decision`` (``Policy``). ``state`` says which
modes exist (ordered most → least capable), which one runs, since when, and how fast it currently
runs against the deadline. ``RuleBasedPolicy`` is the default; ``load_policy("pkg.mod:attr")``
plugs in another. ``replay`` runs a policy over recorded samples, deterministically.

The rule set (``RuleBasedPolicy`` with the default ``PolicyConfig``)
---------------------------------------------------------------------
Three tiers: **high** when battery > 50 % and CPU < 30 %; **balanced** when 20 % < battery <= 50 %;
**low** otherwise (that includes battery > 50 % with a busy CPU: set ``cpu_busy_mode: balanced`` to
step down only one tier there). Plugged in counts as battery 100 %; no battery reading at all (a
desktop) counts as 100 % too. Around those nominal thresholds:

- hysteresis: high is entered at battery > 55 % and CPU < 30 %, and left only at battery < 45 %
  or CPU > 40 %; balanced is entered (from below) at battery > 25 % and left at battery < 15 %.
  Battery gauges typically jitter by a percent or two and CPU load by far more, so a ±5 % band on
  battery and a 30/40 % band on (already smoothed) CPU keep a device sitting near a threshold in
  one mode (``test_policy`` flaps > 100 times on a noisy trace without them, at most once with).
- downgrades from these rules are immediate and go straight to the target tier;
  upgrades are slow: one mode at a time, each only after ``min_dwell_s`` (5 s) in the current mode.
  As every upgrade enters a new mode, the dwell is also the cooldown between consecutive steps, so
  low → high takes at least 10 s, while high → low takes one sample.
- emergencies skip everything and go straight to the lowest mode: temperature >= 80 °C (Raspberry
  Pi 4 firmware throttles from 80-85 °C, so this leaves a margin to act before it does) or Android
  thermal status >= SEVERE (3, "UX largely impacted"), or battery <= 10 % (critical, not plugged).
  Upgrades stay blocked while warm: temperature >= 70 °C or thermal status >= MODERATE (2).
- latency SLO: if the current mode's rolling p95 latency exceeds ``deadline × slo_factor`` (1.0),
  step down one mode. Upgrades are blocked while p95 > ``deadline × slo_upgrade_factor`` (0.5):
  the more capable mode's latency is unknown until it runs, and one step up may well be ~2×
  slower, so without that headroom it would climb into a miss and drop back repeatedly.
  And a mode observed missing the deadline (``PolicyState.observed_p95_ms``, kept by the controller
  and by ``replay``) is not re-entered for ``slo_memory_s`` (60 s); then it is probed again, as
  load that caused the miss may have gone.
- memory pressure: available memory < 256 MiB or > 90 % used → step down one mode; upgrades stay
  blocked until available >= 384 MiB and <= 85 % used. These are conservative floors for 2-4 GB
  boards (a judgement, not a measurement: tune them per device in the YAML config).
- SLO and memory step-downs wait ``step_down_settle_s`` (2 s) in a mode before the next step, so
  the effect of one step is observed before taking another.
- missing signals (None) never trigger a switch on their own: an unknown CPU load is not busy, an
  unknown temperature is not hot, unknown memory is not under pressure, an unknown latency meets
  the deadline, and a missing battery counts as ``battery_when_missing`` (100 %; ``null`` keeps the
  current mode as far as battery is concerned).

Any number of modes >= 1: tiers map to indices high = 0, balanced = ``n // 2``, low = ``n - 1``.
With 2 modes balanced is the second (= low); with 1 the policy never switches; with 4+ the modes
between tiers are passed through one step at a time when upgrading, and held when the signals
sit inside a hysteresis band. SLO/memory step-downs and upgrades move by one index.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import yaml

from runtime.telemetry import Signals, ThermalStatus

__all__ = [
    "Decision",
    "LatencySpec",
    "Policy",
    "PolicyConfig",
    "PolicyError",
    "PolicyState",
    "RuleBasedPolicy",
    "TimedDecision",
    "load_policy",
    "replay",
    "tier_indices",
]

_MIB = 1024 * 1024
CPU_BUSY_MODES: tuple[str, ...] = ("low", "balanced")


class PolicyError(ValueError):
    """A policy config or policy spec is invalid; the message names the source and the field."""


# ---- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    kind: str  # "float" | "int" | "choice"
    lo: float = -math.inf
    hi: float = math.inf
    optional: bool = False
    choices: tuple[str, ...] = ()
    lo_open: bool = False  # lo itself is not allowed

    def describe(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        what = "an integer" if self.kind == "int" else "a number"
        bounds = []
        if self.lo > -math.inf:
            bounds.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi < math.inf:
            bounds.append(f"<= {self.hi:g}")
        text = what + (" " + " and ".join(bounds) if bounds else "")
        return text + (", or null" if self.optional else "")


_PCT = _Spec("float", 0.0, 100.0)
_PCT_OPT = _Spec("float", 0.0, 100.0, optional=True)
_SECONDS = _Spec("float", 0.0)
_FACTOR = _Spec("float", 0.0, lo_open=True)
_SPECS: Mapping[str, _Spec] = {
    "high_enter_battery": _PCT,
    "high_exit_battery": _PCT,
    "balanced_enter_battery": _PCT,
    "balanced_exit_battery": _PCT,
    "critical_battery": _PCT,
    "battery_when_plugged": _PCT_OPT,
    "battery_when_missing": _PCT_OPT,
    "high_enter_cpu": _PCT,
    "high_exit_cpu": _PCT,
    "cpu_busy_mode": _Spec("choice", choices=CPU_BUSY_MODES),
    "thermal_temperature_c": _Spec("float", -40.0, 150.0),
    "thermal_release_c": _Spec("float", -40.0, 150.0),
    "thermal_status_severe": _Spec("int", 0, 6),
    "thermal_status_warm": _Spec("int", 0, 6),
    "mem_pressure_available_bytes": _Spec("int", 0, optional=True),
    "mem_release_available_bytes": _Spec("int", 0, optional=True),
    "mem_pressure_percent": _PCT_OPT,
    "mem_release_percent": _PCT_OPT,
    "slo_factor": _FACTOR,
    "slo_upgrade_factor": _FACTOR,
    "slo_memory_s": _SECONDS,
    "min_dwell_s": _SECONDS,
    "step_down_settle_s": _SECONDS,
}


class _FieldError(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name

    def render(self, source: str) -> str:
        return f"{source}: field {self.name!r}: {self.args[0]}"


def _check_value(name: str, value: Any) -> Any:
    spec = _SPECS[name]
    if value is None:
        if spec.optional:
            return None
        raise _FieldError(name, f"must not be null; expected {spec.describe()}")
    if spec.kind == "choice":
        if value not in spec.choices:
            raise _FieldError(name, f"got {value!r}; expected {spec.describe()}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _FieldError(name, f"got {type(value).__name__} {value!r}; expected {spec.describe()}")
    if spec.kind == "int":
        if isinstance(value, float):
            if not value.is_integer():
                raise _FieldError(name, f"got {value!r}; expected {spec.describe()}")
            value = int(value)
    else:
        value = float(value)
    too_low = value <= spec.lo if spec.lo_open else value < spec.lo
    if not (isinstance(value, int) or math.isfinite(value)) or too_low or value > spec.hi:
        raise _FieldError(name, f"got {value!r}; expected {spec.describe()}")
    return value


# Pairs (a, b) that must satisfy a <= b when both are set: exit thresholds inside enter ones, etc.
_ORDERED: tuple[tuple[str, str], ...] = (
    ("high_exit_battery", "high_enter_battery"),
    ("balanced_exit_battery", "balanced_enter_battery"),
    ("balanced_enter_battery", "high_enter_battery"),
    ("balanced_exit_battery", "high_exit_battery"),
    ("high_enter_cpu", "high_exit_cpu"),
    ("thermal_release_c", "thermal_temperature_c"),
    ("thermal_status_warm", "thermal_status_severe"),
    ("mem_pressure_available_bytes", "mem_release_available_bytes"),
    ("mem_release_percent", "mem_pressure_percent"),
    ("slo_upgrade_factor", "slo_factor"),
)


def _checked(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``values`` (every option) type- and range-checked and normalised; ``PolicyError`` otherwise."""
    try:
        out = {name: _check_value(name, values[name]) for name in _SPECS}
        for a, b in _ORDERED:
            if out[a] is not None and out[b] is not None and out[a] > out[b]:
                raise _FieldError(a, f"{out[a]!r} must be <= {b} ({out[b]!r})")
    except _FieldError as exc:
        raise PolicyError(exc.render(source)) from None
    return out


@dataclass(frozen=True)
class PolicyConfig:
    """Thresholds of ``RuleBasedPolicy`` (module docstring: what they do and why these defaults).

    Battery and CPU values are percentages; "enter" thresholds are strict (``>`` for battery, ``<``
    for CPU) and "exit" thresholds are where a tier is left (battery ``<``, CPU ``>``). YAML form:
    a flat mapping of these field names (``PolicyConfig.from_yaml``); every key is optional.
    """

    # battery tiers (%): enter/exit pairs around the nominal 50 % and 20 %
    high_enter_battery: float = 55.0
    high_exit_battery: float = 45.0
    balanced_enter_battery: float = 25.0
    balanced_exit_battery: float = 15.0
    critical_battery: float = 10.0  # <= this: lowest mode at once
    battery_when_plugged: float | None = 100.0  # null: use the reported level while plugged in
    battery_when_missing: float | None = 100.0  # null: a missing battery never moves the mode
    # CPU load (%) that keeps the high tier: enter below 30, leave above 40
    high_enter_cpu: float = 30.0
    high_exit_cpu: float = 40.0
    cpu_busy_mode: str = "low"  # tier for "battery high but CPU busy": low (the rule set) or balanced
    # thermal: immediate drop to the lowest mode, upgrades blocked while warm
    thermal_temperature_c: float = 80.0
    thermal_release_c: float = 70.0
    thermal_status_severe: int = int(ThermalStatus.SEVERE)
    thermal_status_warm: int = int(ThermalStatus.MODERATE)
    # memory pressure: step down one mode; upgrades blocked until the release levels
    mem_pressure_available_bytes: int | None = 256 * _MIB
    mem_release_available_bytes: int | None = 384 * _MIB
    mem_pressure_percent: float | None = 90.0
    mem_release_percent: float | None = 85.0
    # latency SLO, relative to the deadline
    slo_factor: float = 1.0
    slo_upgrade_factor: float = 0.5
    slo_memory_s: float = 60.0  # a mode seen missing the deadline is not re-entered for this long
    # timing (seconds)
    min_dwell_s: float = 5.0
    step_down_settle_s: float = 2.0

    def __post_init__(self) -> None:
        values = _checked({name: getattr(self, name) for name in _SPECS}, "PolicyConfig")
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """All option names, in declaration order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> PolicyConfig:
        """Validate a parsed mapping (None = all defaults); errors name ``source`` and the field."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            kind = type(data).__name__
            raise PolicyError(f"{source}: field '<top level>': expected a mapping of options, got {kind}")
        allowed = cls.field_names()
        for key in data:
            if key not in allowed:
                raise PolicyError(f"{source}: field {key!r}: unknown key; allowed: {', '.join(allowed)}")
        merged = {f.name: data.get(f.name, f.default) for f in fields(cls)}
        return cls(**_checked(merged, source))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> PolicyConfig:
        """Read and validate a YAML config file (an empty file gives the defaults)."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PolicyError(f"{p}: field '<file>': file not found") from None
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{p}: field '<file>': cannot read the file ({exc})") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PolicyError(f"{p}: field '<top level>': not valid YAML ({exc})") from None
        return cls.from_dict(data, source=str(p))

    def to_dict(self) -> dict[str, Any]:
        """All options as plain data (``from_dict`` reads it back)."""
        return {name: getattr(self, name) for name in self.field_names()}


# ---- the policy protocol --------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyState:
    """What a policy knows besides telemetry: the modes (best → lowest), the current one, since when
    it runs (``since``, same clock as ``now``), and its recent p95 latency against the deadline."""

    modes: tuple[str, ...]
    current: str
    since: float
    now: float
    latency_p95_ms: float | None = None
    deadline_ms: float | None = None
    # The last p95 seen for each mode while it ran, and when (same clock as ``now``): lets a policy
    # avoid climbing back into a mode that just missed the deadline. Optional; producers may omit it.
    observed_p95_ms: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "modes", tuple(self.modes))
        object.__setattr__(self, "observed_p95_ms", MappingProxyType(dict(self.observed_p95_ms)))
        if not self.modes:
            raise ValueError("PolicyState.modes: at least one mode is required")
        if len(set(self.modes)) != len(self.modes):
            raise ValueError(f"PolicyState.modes: duplicate mode names in {self.modes}")
        if self.current not in self.modes:
            raise ValueError(f"PolicyState.current: {self.current!r} is not one of {', '.join(self.modes)}")

    @property
    def index(self) -> int:
        """Index of the current mode (0 = most capable)."""
        return self.modes.index(self.current)

    @property
    def in_mode_s(self) -> float:
        """Seconds spent in the current mode."""
        return self.now - self.since


@dataclass(frozen=True)
class Decision:
    """The mode to run, why (human-readable), whether that is a switch, and which rule decided.

    ``rule`` is one of: thermal, critical, battery, cpu, slo, memory, upgrade, hold, steady (for
    ``RuleBasedPolicy``; custom policies may use their own labels or leave it empty).
    """

    mode: str
    reason: str
    switch: bool
    rule: str = ""


@runtime_checkable
class Policy(Protocol):
    """Anything that picks a mode: ``decide(signals, state) -> Decision``."""

    def decide(self, signals: Signals, state: PolicyState) -> Decision:
        """The mode to run now."""
        ...


@dataclass(frozen=True)
class TimedDecision:
    """One decision in a log or replay: when, the mode after it, why, and whether it switched."""

    t: float
    mode: str
    reason: str
    switch: bool
    previous: str
    rule: str = ""
    signals: Signals | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain data (signals as a dict)."""
        return {
            "t": self.t,
            "mode": self.mode,
            "previous": self.previous,
            "switch": self.switch,
            "rule": self.rule,
            "reason": self.reason,
            "signals": None if self.signals is None else self.signals.to_dict(),
        }


# ---- the rule-based policy ------------------------------------------------------------------------


def tier_indices(n_modes: int) -> tuple[int, int, int]:
    """Indices of the (high, balanced, low) tiers in a list of ``n_modes`` modes: 0, n // 2, n - 1."""
    if n_modes < 1:
        raise ValueError(f"n_modes must be >= 1, got {n_modes}")
    return 0, n_modes // 2, n_modes - 1


def _n(x: float) -> str:
    """A number for a reason string: at most one decimal, no trailing zeros."""
    text = f"{x:.1f}"
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class _Tier:
    index: int
    why: str
    rule: str  # which signal decided: battery or cpu


class RuleBasedPolicy:
    """The default policy: the rule set in this module's docstring, parameterised by ``PolicyConfig``.

    Stateless: everything it needs is in ``signals`` and ``state``, so ``replay`` is deterministic
    and one instance can serve several runtimes.
    """

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config if config is not None else PolicyConfig()

    def __repr__(self) -> str:
        return f"RuleBasedPolicy({self.config!r})"

    # ---- signal interpretation ----------------------------------------------------------------
    def effective_battery(self, signals: Signals) -> tuple[float | None, str]:
        """The battery level the rules use (plugged / missing substitutions applied) and its label."""
        c = self.config
        if signals.plugged is True and c.battery_when_plugged is not None:
            return c.battery_when_plugged, f"battery {_n(c.battery_when_plugged)}% (plugged in)"
        if signals.battery_percent is None:
            if c.battery_when_missing is None:
                return None, "battery unknown"
            return c.battery_when_missing, f"battery {_n(c.battery_when_missing)}% (no reading)"
        return signals.battery_percent, f"battery {_n(signals.battery_percent)}%"

    def _hot(self, s: Signals) -> str | None:
        c = self.config
        if s.temperature_c is not None and s.temperature_c >= c.thermal_temperature_c:
            return f"temperature {_n(s.temperature_c)}°C >= {_n(c.thermal_temperature_c)}°C"
        if s.thermal_status is not None and s.thermal_status >= c.thermal_status_severe:
            return f"thermal status {_status(s.thermal_status)} >= {_status(c.thermal_status_severe)}"
        return None

    def _warm(self, s: Signals) -> str | None:
        c = self.config
        if s.temperature_c is not None and s.temperature_c >= c.thermal_release_c:
            return f"temperature {_n(s.temperature_c)}°C >= {_n(c.thermal_release_c)}°C"
        if s.thermal_status is not None and s.thermal_status >= c.thermal_status_warm:
            return f"thermal status {_status(s.thermal_status)} >= {_status(c.thermal_status_warm)}"
        return None

    def _memory(self, s: Signals, *, release: bool) -> str | None:
        c = self.config
        min_bytes = c.mem_release_available_bytes if release else c.mem_pressure_available_bytes
        max_pct = c.mem_release_percent if release else c.mem_pressure_percent
        if s.mem_available_bytes is not None and min_bytes is not None and s.mem_available_bytes < min_bytes:
            return f"available memory {_n(s.mem_available_bytes / _MIB)} MiB < {_n(min_bytes / _MIB)} MiB"
        if s.mem_percent is not None and max_pct is not None and s.mem_percent > max_pct:
            return f"memory {_n(s.mem_percent)}% used > {_n(max_pct)}%"
        return None

    def _slo(self, state: PolicyState, factor: float) -> str | None:
        p95, deadline = state.latency_p95_ms, state.deadline_ms
        if p95 is None or deadline is None or not math.isfinite(p95):
            return None
        limit = deadline * factor
        if p95 > limit:
            scaled = f" × {_n(factor)}" if factor != 1.0 else ""
            return f"p95 latency {_n(p95)} ms > deadline {_n(deadline)} ms{scaled}"
        return None

    def _missed_before(self, state: PolicyState, mode: str) -> str | None:
        """Why ``mode`` should not be re-entered: it missed the deadline within ``slo_memory_s``."""
        seen = state.observed_p95_ms.get(mode)
        if seen is None or state.deadline_ms is None:
            return None
        p95, at = seen
        limit = state.deadline_ms * self.config.slo_factor
        age = state.now - at
        if p95 > limit and age < self.config.slo_memory_s:
            return (
                f"{mode} ran at p95 {_n(p95)} ms > deadline {_n(limit)} ms {_n(age)} s ago "
                f"(retry after {_n(self.config.slo_memory_s)} s)"
            )
        return None

    def _tier(self, battery: float | None, label: str, cpu: float | None, n: int, cur: int, *, lenient: bool) -> _Tier:
        """The tier index the battery/CPU rules ask for, using exit (lenient) or enter thresholds."""
        c = self.config
        hi, bal, lo = tier_indices(n)
        # lenient: stay in a tier until battery < exit / cpu > exit; strict: enter only when
        # battery > enter and cpu < enter.
        high_b = c.high_exit_battery if lenient else c.high_enter_battery
        bal_b = c.balanced_exit_battery if lenient else c.balanced_enter_battery
        ok_b, fail_b = (">=", "<") if lenient else (">", "<=")

        def qualifies(level: float, limit: float) -> bool:
            return level >= limit if lenient else level > limit

        if battery is None:  # battery_when_missing is null: battery keeps the current mode
            index, why = cur, label
        elif qualifies(battery, high_b):
            index, why = hi, f"{label} {ok_b} {_n(high_b)}%"
        elif qualifies(battery, bal_b):
            return _Tier(bal, f"{label} {fail_b} {_n(high_b)}% and {ok_b} {_n(bal_b)}%", "battery")
        else:
            return _Tier(lo, f"{label} {fail_b} {_n(bal_b)}%", "battery")
        if index != hi:
            return _Tier(index, why, "battery")
        if cpu is None:
            return _Tier(hi, f"{why}, cpu unknown", "battery")
        cpu_limit = c.high_exit_cpu if lenient else c.high_enter_cpu
        if cpu > cpu_limit if lenient else cpu >= cpu_limit:
            busy_idx = lo if c.cpu_busy_mode == "low" else bal
            return _Tier(busy_idx, f"{why} but cpu {_n(cpu)}% {'>' if lenient else '>='} {_n(cpu_limit)}%", "cpu")
        return _Tier(hi, f"{why} and cpu {_n(cpu)}% {'<=' if lenient else '<'} {_n(cpu_limit)}%", "battery")

    # ---- the decision ---------------------------------------------------------------------------
    def decide(self, signals: Signals, state: PolicyState) -> Decision:
        """The mode to run now, with the rule and a human-readable reason."""
        c = self.config
        modes = state.modes
        n, cur = len(modes), state.index
        lo = n - 1

        def go(index: int, reason: str, rule: str) -> Decision:
            return Decision(modes[index], reason, index != cur, rule)

        battery, label = self.effective_battery(signals)
        hot = self._hot(signals)
        if hot:
            return go(lo, f"{hot}: {modes[lo]}", "thermal")
        if battery is not None and battery <= c.critical_battery:
            return go(lo, f"{label} <= {_n(c.critical_battery)}% (critical): {modes[lo]}", "critical")

        # Hysteresis: a downgrade needs even the exit thresholds to ask for less; an upgrade needs
        # the enter thresholds to ask for more. min/max (not just exit/enter) because "busy CPU ->
        # low" makes the mapping non-monotonic in battery.
        strict = self._tier(battery, label, signals.cpu_percent, n, cur, lenient=False)
        lenient = self._tier(battery, label, signals.cpu_percent, n, cur, lenient=True)
        down = min(lenient, strict, key=lambda t: t.index)  # ties: the exit wording explains a drop
        up = max(strict, lenient, key=lambda t: t.index)  # ties: the enter wording explains a climb
        if down.index > cur:
            return go(down.index, f"{down.why}: {modes[down.index]}", down.rule)

        step_down = self._slo(state, c.slo_factor)
        rule = "slo"
        if step_down is None:
            step_down, rule = self._memory(signals, release=False), "memory"
        if step_down is not None and cur < lo:
            if state.in_mode_s >= c.step_down_settle_s:
                return go(cur + 1, f"{step_down}: {modes[cur + 1]}", rule)
            return go(
                cur,
                f"{step_down}, but {_n(state.in_mode_s)} s in {modes[cur]} < settle "
                f"{_n(c.step_down_settle_s)} s: stay {modes[cur]}",
                rule,
            )

        if up.index < cur:
            nxt = cur - 1
            blocker = (
                self._warm(signals)
                or self._memory(signals, release=True)
                or self._slo(state, c.slo_upgrade_factor)
                or self._missed_before(state, modes[nxt])
                or (
                    f"{_n(state.in_mode_s)} s in {modes[cur]} < dwell {_n(c.min_dwell_s)} s"
                    if state.in_mode_s < c.min_dwell_s
                    else None
                )
            )
            if blocker:
                return go(cur, f"{up.why}, but {blocker}: stay {modes[cur]}", "hold")
            towards = f" (towards {modes[up.index]})" if up.index < nxt else ""
            return go(nxt, f"{up.why}: {modes[nxt]}{towards}", "upgrade")

        why = up.why if up.index == cur else down.why
        if step_down is not None:  # already in the lowest mode
            why = f"{why}; {step_down} (already lowest)"
        return go(cur, f"{why}: stay {modes[cur]}", "steady")


def _status(value: int) -> str:
    try:
        return f"{value} ({ThermalStatus(value).name})"
    except ValueError:
        return str(value)


# ---- loading custom policies ----------------------------------------------------------------------


def load_policy(spec: str) -> Policy:
    """A policy from ``"package.module:attr"`` (an object with ``decide``, or a class / factory
    called without arguments to make one), or a ``RuleBasedPolicy`` from a ``.yaml``/``.yml`` config."""
    if spec.endswith((".yaml", ".yml")):
        return RuleBasedPolicy(PolicyConfig.from_yaml(spec))
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise PolicyError(f"policy {spec!r}: field '<spec>': expected 'package.module:attr' or a .yaml config path")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise PolicyError(f"policy {spec!r}: field '<module>': cannot import {module_name!r} ({exc})") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PolicyError(f"policy {spec!r}: field '<attr>': {module_name!r} has no attribute {attr!r}") from None
    if isinstance(obj, type) or (not hasattr(obj, "decide") and callable(obj)):
        obj = obj()
    if not callable(getattr(obj, "decide", None)):
        raise PolicyError(
            f"policy {spec!r}: field '<attr>': {type(obj).__name__} has no decide(signals, state) method"
        )
    return obj  # type: ignore[no-any-return]


# ---- deterministic replay -------------------------------------------------------------------------

LatencySpec = float | Mapping[str, float | None] | Callable[[float, str], float | None] | None


def _latency(spec: LatencySpec, t: float, mode: str) -> float | None:
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        value = spec.get(mode)
        return None if value is None else float(value)
    if callable(spec):
        out = spec(t, mode)
        return None if out is None else float(out)
    return float(spec)


def replay(
    policy: Policy,
    samples: Iterable[Signals],
    modes: Sequence[str],
    start_mode: str | None = None,
    deadline_ms: float | None = None,
    latency_p95_ms: LatencySpec = None,
) -> list[TimedDecision]:
    """One ``TimedDecision`` per sample: ``policy`` run over ``samples`` with time = ``sample.t``.

    Starts in ``start_mode`` (default: the most capable mode) entered at the first sample's time;
    a decision for another mode switches at once (``since`` = that sample's time). The current
    mode's p95 latency comes from ``latency_p95_ms``: a constant, a mapping mode → ms (a simple
    model of each mode's speed) or a function ``(t, mode) -> ms``; the last value seen per mode is
    passed on as ``PolicyState.observed_p95_ms``, as ``AutoSwitcher`` does. Pure: same inputs, same output.
    """
    mode_tuple = tuple(modes)
    if not mode_tuple:
        raise ValueError("replay: modes must not be empty")
    current = start_mode if start_mode is not None else mode_tuple[0]
    if current not in mode_tuple:
        raise ValueError(f"replay: start_mode {current!r} is not one of {', '.join(mode_tuple)}")
    out: list[TimedDecision] = []
    observed: dict[str, tuple[float, float]] = {}
    since: float | None = None
    last_t = -math.inf
    for i, s in enumerate(samples):
        if s.t < last_t:
            raise ValueError(f"replay: samples[{i}].t = {s.t:g} is before the previous {last_t:g}")
        last_t = s.t
        if since is None:
            since = s.t
        p95 = _latency(latency_p95_ms, s.t, current)
        if p95 is not None:
            observed[current] = (p95, s.t)
        state = PolicyState(mode_tuple, current, since, s.t, p95, deadline_ms, observed)
        d = policy.decide(s, state)
        if d.mode not in mode_tuple:
            raise PolicyError(
                f"{type(policy).__name__}.decide: field 'mode': {d.mode!r} is not one of {', '.join(mode_tuple)}"
            )
        switched = d.mode != current
        out.append(TimedDecision(s.t, d.mode, d.reason, switched, current, d.rule, s))
        if switched:
            current, since = d.mode, s.t
    return out
