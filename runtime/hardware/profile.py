"""Device profiles: what a target can compute, how fast it moves bytes, and what power it draws.

A ``DeviceProfile`` is loaded from a YAML file (the catalogue ships some in ``catalogue/``; a user
can write their own) and validated on load: unknown keys, missing fields, wrong types, non-positive
numbers, unsorted or duplicate OPPs and unknown dtypes raise ``DeviceProfileError`` with the file,
the dotted field path (``opps[3].voltage_v``) and what was expected.

YAML form (``DeviceProfile.from_yaml``; ``to_json`` writes the same keys)::

    name: rk3399_big                     # required
    kind: cpu                            # required: cpu | gpu | npu | mcu
    cores: 2                             # required
    flops_per_cycle: {float32: 8}        # required: peak FLOP/cycle per core, per dtype
    memory_bandwidth_gbps: 4.0           # required: sustained (not theoretical) GB/s
    opps:                                # required: sorted by freq_mhz, no duplicates
      - {freq_mhz: 408, voltage_v: 0.80}
    dynamic_power_coefficient: 436       # required: uW/MHz/V^2 per core (Linux DT convention)
    static_power_w: 1.7                  # required: non-dynamic power while running
    ram_bytes: 4294967296                # required
    description: ""                      # optional, default ""
    sources: []                          # optional, default (): citations for the numbers
    caches_kb: {l1d: 32, l2: 1024}       # optional, default {}: keys l1d l1i l2 l3 slc
    simd_width_bits: 128                 # optional, default 128
    channel_alignment: {float32: 4}      # optional, default simd_width_bits / element bits
    power_modes: []                      # optional, default (): {name, cores, max_freq_mhz, power_budget_w}
    memory_power_w: 0.0                  # optional, default 0: DRAM active power during inference
    idle_power_w: 1.5                    # optional, default static_power_w; must be <= static_power_w
    utilisation: {conv: 0.6}             # optional, missing classes take DEFAULT_UTILISATION
    memory_utilisation: 0.7              # optional, default 0.7
    flash_bytes: null                    # mcu only (required there)
    sram_bytes: null                     # required for mcu; optional on-chip SRAM otherwise
    supported_dtypes: [float32]          # optional, default the keys of flops_per_cycle
    supported_ops: null                  # optional, default null = every NetSpec op
    power_mode: null                     # set by with_power_mode(); leave unset in files
    measured:                            # optional: written by `fleetnas profile` (see below)
      lut: my_board.lut.json             # required: per-block latency table, path relative to this file
      predictor: my_board.predictor.json # optional: a fitted latency predictor file, relative path
      roofline: {peak_gflops: 220.0, bandwidth_gbps: 12.5}   # required: measured through ONNX Runtime
      provenance: {machine: host, cpu: "...", ort_version: 1.32.0, threads: 0, strategy: no_spin,
                   date: "2025-01-01T00:00:00+00:00", fleetnas_version: 0.1.0}   # required keys

``measured`` records what was measured on the device itself; its keys are checked like the rest
(``measured.provenance.date`` names a bad field). ``MeasuredProfile.resolve`` turns its relative
paths into paths next to the profile file it was loaded from.

Mappings are stored as ``FrozenMap`` (an immutable, hashable ``Mapping``) and sequences as tuples,
so a profile is hashable and can key caches.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from runtime.netspec import DTYPE_BYTES, LAYER_TYPES

DTYPES: tuple[str, ...] = ("float32", "float16", "int8", "uint8")
DTYPE_ALIASES: Mapping[str, str] = {"fp32": "float32", "fp16": "float16", "f32": "float32", "f16": "float16"}
KINDS: tuple[str, ...] = ("cpu", "gpu", "npu", "mcu")
LAYER_CLASSES: tuple[str, ...] = ("conv", "depthwise", "linear", "elementwise")
CACHE_LEVELS: tuple[str, ...] = ("l1d", "l1i", "l2", "l3", "slc")
# Fractions of peak a well-tuned kernel library typically attains at batch 1, used when a profile
# gives none: GEMM-like convs come closest to peak; depthwise convs and batch-1 linears (GEMV)
# have little reuse per loaded value; element-wise ops are dominated by loads and stores.
DEFAULT_UTILISATION: Mapping[str, float] = {
    "conv": 0.6,
    "depthwise": 0.25,
    "linear": 0.3,
    "elementwise": 0.15,
}
DEFAULT_MEMORY_UTILISATION = 0.7
DEFAULT_SIMD_WIDTH_BITS = 128
_FREQ_TOL_MHZ = 1e-6  # OPP frequencies are compared with this slack (1190.4 vs 1190.4000000001)

V = TypeVar("V")


class DeviceProfileError(ValueError):
    """A device profile is malformed or a lookup failed; the message names the file and field."""


class FrozenMap(Mapping[str, V]):
    """An immutable, hashable ``str``-keyed mapping (keeps insertion order; compares like a dict)."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, V] | Iterable[tuple[str, V]] = ()) -> None:
        self._data: dict[str, V] = dict(data)
        self._hash: int | None = None

    def __getitem__(self, key: str) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._data == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def to_dict(self) -> dict[str, V]:
        """A plain (mutable) dict copy."""
        return dict(self._data)


@dataclass(frozen=True)
class OperatingPoint:
    """One DVFS operating point: clock frequency (MHz) and supply voltage (V).

    Values are checked by ``DeviceProfile`` (which knows the field path for the error message).
    """

    freq_mhz: float
    voltage_v: float


@dataclass(frozen=True)
class PowerMode:
    """A Jetson-style nvpmodel mode: online cores, CPU frequency cap (MHz), power budget (W or None)."""

    name: str
    cores: int
    max_freq_mhz: float
    power_budget_w: float | None = None


class _FieldError(Exception):
    """Internal: a problem with one field, rendered with the source by the caller."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(path, problem)
        self.path = path
        self.problem = problem

    def render(self, source: str) -> str:
        return f"{source}: field '{self.path}': {self.problem}"


def canonical_dtype(dtype: str) -> str:
    """The canonical dtype name (``fp32`` -> ``float32``); unknown names are returned unchanged."""
    return DTYPE_ALIASES.get(dtype, dtype)


# ---- value checks (each raises _FieldError naming the path and what was expected) ------------
def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _number(
    value: Any, path: str, *, minimum: float = 0.0, inclusive: bool = False, maximum: float | None = None
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        hint = ""
        if isinstance(value, str):
            try:
                float(value)
                hint = " (YAML 1.1 reads exponents only with a sign, e.g. 1.0e+9, or write the plain number)"
            except ValueError:
                pass
        raise _FieldError(path, f"expected a number, got {_describe(value)}{hint}")
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        raise _FieldError(path, f"expected a finite number, got {value!r}")
    if (v < minimum) if inclusive else (v <= minimum):
        raise _FieldError(path, f"must be {'>=' if inclusive else '>'} {minimum:g}, got {value!r}")
    if maximum is not None and v > maximum:
        raise _FieldError(path, f"must be <= {maximum:g}, got {value!r}")
    return v


def _integer(value: Any, path: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _FieldError(path, f"expected an integer >= {minimum}, got {_describe(value)}")
    if value < minimum:
        raise _FieldError(path, f"must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _string(value: Any, path: str, *, allowed: Iterable[str] | None = None, nonempty: bool = True) -> str:
    if not isinstance(value, str) or (nonempty and not value):
        raise _FieldError(path, f"expected a non-empty string, got {_describe(value)}")
    if allowed is not None:
        options = tuple(allowed)
        if value not in options:
            raise _FieldError(path, f"unknown value {value!r}; allowed: {', '.join(options)}")
    return value


def _mapping(value: Any, path: str, expected: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise _FieldError(path, f"expected {expected}, got {_describe(value)}")
    return value


def _sequence(value: Any, path: str, expected: str) -> list[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise _FieldError(path, f"expected {expected}, got {_describe(value)}")
    return list(value)


def _keyed_numbers(
    value: Any,
    path: str,
    allowed: tuple[str, ...],
    what: str,
    *,
    integer: bool = False,
    maximum: float | None = None,
) -> FrozenMap[Any]:
    raw = _mapping(value, path, f"a mapping of {what}")
    out: dict[str, Any] = {}
    for key, v in raw.items():
        if key not in allowed:
            raise _FieldError(f"{path}.{key}", f"unknown key; allowed: {', '.join(allowed)}")
        out[key] = _integer(v, f"{path}.{key}") if integer else _number(v, f"{path}.{key}", maximum=maximum)
    return FrozenMap(out)


def _opps(value: Any) -> tuple[OperatingPoint, ...]:
    items = _sequence(value, "opps", "a list of {freq_mhz, voltage_v} mappings")
    if not items:
        raise _FieldError("opps", "needs at least one operating point {freq_mhz, voltage_v}")
    opps: list[OperatingPoint] = []
    for i, item in enumerate(items):
        path = f"opps[{i}]"
        if isinstance(item, OperatingPoint):
            f_raw, v_raw = item.freq_mhz, item.voltage_v
        else:
            raw = _mapping(item, path, "a mapping with keys freq_mhz, voltage_v")
            for key in raw:
                if key not in ("freq_mhz", "voltage_v"):
                    raise _FieldError(f"{path}.{key}", "unknown key; allowed: freq_mhz, voltage_v")
            for key in ("freq_mhz", "voltage_v"):
                if key not in raw:
                    raise _FieldError(f"{path}.{key}", "missing; each OPP needs freq_mhz and voltage_v")
            f_raw, v_raw = raw["freq_mhz"], raw["voltage_v"]
        opp = OperatingPoint(_number(f_raw, f"{path}.freq_mhz"), _number(v_raw, f"{path}.voltage_v"))
        if opps and opp.freq_mhz <= opps[-1].freq_mhz + _FREQ_TOL_MHZ:
            word = "duplicates" if abs(opp.freq_mhz - opps[-1].freq_mhz) <= _FREQ_TOL_MHZ else "is below"
            raise _FieldError(
                f"{path}.freq_mhz",
                f"{opp.freq_mhz:g} MHz {word} opps[{i - 1}] ({opps[-1].freq_mhz:g} MHz); "
                "OPPs must be sorted by strictly increasing frequency",
            )
        opps.append(opp)
    return tuple(opps)


def _power_modes(value: Any, cores: int, min_freq: float) -> tuple[PowerMode, ...]:
    items = _sequence(value, "power_modes", "a list of {name, cores, max_freq_mhz, power_budget_w} mappings")
    keys = ("name", "cores", "max_freq_mhz", "power_budget_w")
    modes: list[PowerMode] = []
    for i, item in enumerate(items):
        path = f"power_modes[{i}]"
        if isinstance(item, PowerMode):
            raw: Mapping[str, Any] = {k: getattr(item, k) for k in keys}
        else:
            raw = _mapping(item, path, "a mapping with keys " + ", ".join(keys))
            for key in raw:
                if key not in keys:
                    raise _FieldError(f"{path}.{key}", f"unknown key; allowed: {', '.join(keys)}")
            for key in keys[:3]:
                if key not in raw:
                    raise _FieldError(f"{path}.{key}", "missing")
        name = _string(raw["name"], f"{path}.name")
        if any(m.name == name for m in modes):
            raise _FieldError(f"{path}.name", f"duplicate power mode name {name!r}")
        n = _integer(raw["cores"], f"{path}.cores")
        if n > cores:
            raise _FieldError(f"{path}.cores", f"{n} exceeds the device's {cores} cores")
        cap = _number(raw["max_freq_mhz"], f"{path}.max_freq_mhz")
        if cap < min_freq - _FREQ_TOL_MHZ:
            raise _FieldError(
                f"{path}.max_freq_mhz", f"{cap:g} MHz is below the lowest OPP ({min_freq:g} MHz)"
            )
        budget = raw.get("power_budget_w")
        modes.append(
            PowerMode(name, n, cap, None if budget is None else _number(budget, f"{path}.power_budget_w"))
        )
    return tuple(modes)


def _dtype_list(value: Any, path: str) -> tuple[str, ...]:
    items = _sequence(value, path, "a list of dtype names")
    out: list[str] = []
    for i, item in enumerate(items):
        dt = _string(item, f"{path}[{i}]", allowed=DTYPES)
        if dt in out:
            raise _FieldError(f"{path}[{i}]", f"duplicate dtype {dt!r}")
        out.append(dt)
    return tuple(out)


MEASURED_KEYS: tuple[str, ...] = ("lut", "predictor", "roofline", "provenance")
MEASURED_ROOFLINE_KEYS: tuple[str, ...] = ("peak_gflops", "bandwidth_gbps")
PROVENANCE_REQUIRED: tuple[str, ...] = (
    "machine",
    "cpu",
    "ort_version",
    "threads",
    "strategy",
    "date",
    "fleetnas_version",
)
PROVENANCE_OPTIONAL: tuple[str, ...] = ("python", "platform", "space", "quick", "alignment", "seconds")


@dataclass(frozen=True)
class MeasuredProfile:
    """What ``fleetnas profile`` measured on the device: block latency table, roofline, provenance.

    ``lut`` and ``predictor`` are paths as written in the file (relative to it unless absolute);
    ``base_dir`` is the loaded file's directory (not part of equality, not written back).
    """

    lut: str
    roofline: Mapping[str, float]
    provenance: Mapping[str, Any]
    predictor: str | None = None
    base_dir: str = field(default="", compare=False)

    def resolve(self, path: str) -> Path:
        """``path`` (``lut`` or ``predictor``) as a filesystem path: absolute, else next to the profile file."""
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir or ".") / p

    def to_json(self) -> dict[str, Any]:
        """The ``measured`` section as plain data (``predictor`` omitted when unset)."""
        out: dict[str, Any] = {"lut": self.lut}
        if self.predictor is not None:
            out["predictor"] = self.predictor
        out["roofline"] = dict(self.roofline)
        out["provenance"] = dict(self.provenance)
        return out


def _measured(value: Any) -> MeasuredProfile | None:
    if value is None:
        return None
    base_dir = ""
    if isinstance(value, MeasuredProfile):
        base_dir = value.base_dir
        value = value.to_json()
    raw = _mapping(value, "measured", "a mapping with keys " + ", ".join(MEASURED_KEYS))
    for key in raw:
        if key not in MEASURED_KEYS:
            raise _FieldError(f"measured.{key}", f"unknown key; allowed: {', '.join(MEASURED_KEYS)}")
    for key in ("lut", "roofline", "provenance"):
        if key not in raw:
            raise _FieldError(f"measured.{key}", "missing (required: lut, roofline, provenance)")
    lut = _string(raw["lut"], "measured.lut")
    predictor = raw.get("predictor")
    predictor = None if predictor is None else _string(predictor, "measured.predictor")
    roof = _keyed_numbers(raw["roofline"], "measured.roofline", MEASURED_ROOFLINE_KEYS, "roofline figures")
    for key in MEASURED_ROOFLINE_KEYS:
        if key not in roof:
            raise _FieldError(f"measured.roofline.{key}", "missing (required: peak_gflops, bandwidth_gbps)")
    prov_raw = _mapping(raw["provenance"], "measured.provenance", "a mapping of provenance fields")
    allowed = PROVENANCE_REQUIRED + PROVENANCE_OPTIONAL
    prov: dict[str, Any] = {}
    for key, v in prov_raw.items():
        path = f"measured.provenance.{key}"
        if key not in allowed:
            raise _FieldError(path, f"unknown key; allowed: {', '.join(allowed)}")
        if isinstance(v, bool):
            prov[key] = v
        elif key in ("threads", "alignment"):
            prov[key] = _integer(v, path, minimum=0)
        elif key == "seconds":
            prov[key] = _number(v, path, inclusive=True)
        elif key == "quick":
            raise _FieldError(path, f"expected true or false, got {_describe(v)}")
        else:
            # YAML reads an unquoted date or version as a date / number: keep the text.
            if isinstance(v, int | float) or hasattr(v, "isoformat"):
                v = v.isoformat() if hasattr(v, "isoformat") else str(v)
            prov[key] = _string(v, path)
    for key in PROVENANCE_REQUIRED:
        if key not in prov:
            raise _FieldError(f"measured.provenance.{key}", f"missing (required: {', '.join(PROVENANCE_REQUIRED)})")
    return MeasuredProfile(lut, roof, FrozenMap(prov), predictor, base_dir)


def _normalized(values: Mapping[str, Any]) -> dict[str, Any]:
    """Check every field and return them in canonical types; raises _FieldError on the first problem."""
    v = dict(values)
    out: dict[str, Any] = {}
    out["name"] = _string(v["name"], "name")
    desc = v.get("description", "")
    out["description"] = _string(desc, "description", nonempty=False) if desc is not None else ""
    out["kind"] = _string(v["kind"], "kind", allowed=KINDS)
    out["sources"] = tuple(
        _string(s, f"sources[{i}]")
        for i, s in enumerate(_sequence(v.get("sources", ()), "sources", "a list of strings"))
    )
    out["cores"] = _integer(v["cores"], "cores")
    out["flops_per_cycle"] = _keyed_numbers(
        v["flops_per_cycle"], "flops_per_cycle", DTYPES, "dtype -> FLOP/cycle/core"
    )
    if not out["flops_per_cycle"]:
        raise _FieldError("flops_per_cycle", f"needs at least one dtype; allowed: {', '.join(DTYPES)}")
    out["memory_bandwidth_gbps"] = _number(v["memory_bandwidth_gbps"], "memory_bandwidth_gbps")
    out["caches_kb"] = _keyed_numbers(
        v.get("caches_kb") or {}, "caches_kb", CACHE_LEVELS, "cache level -> KiB", integer=True
    )
    out["simd_width_bits"] = _integer(v.get("simd_width_bits", DEFAULT_SIMD_WIDTH_BITS), "simd_width_bits")
    out["opps"] = _opps(v["opps"])
    out["power_modes"] = _power_modes(v.get("power_modes") or (), out["cores"], out["opps"][0].freq_mhz)
    out["dynamic_power_coefficient"] = _number(v["dynamic_power_coefficient"], "dynamic_power_coefficient")
    out["static_power_w"] = _number(v["static_power_w"], "static_power_w", inclusive=True)
    out["memory_power_w"] = _number(v.get("memory_power_w", 0.0), "memory_power_w", inclusive=True)
    idle = v.get("idle_power_w")
    out["idle_power_w"] = (
        out["static_power_w"] if idle is None else _number(idle, "idle_power_w", inclusive=True)
    )
    if out["idle_power_w"] > out["static_power_w"]:
        # Idle (cores in WFI or power-gated) never draws more than running minus dynamic power;
        # the energy model and dominated_opps() rely on it.
        raise _FieldError(
            "idle_power_w",
            f"{out['idle_power_w']:g} W exceeds static_power_w ({out['static_power_w']:g} W); "
            "idle must be <= static",
        )
    util = _keyed_numbers(
        v.get("utilisation") or {}, "utilisation", LAYER_CLASSES, "layer class -> fraction", maximum=1.0
    )
    out["utilisation"] = FrozenMap({c: util.get(c, DEFAULT_UTILISATION[c]) for c in LAYER_CLASSES})
    out["memory_utilisation"] = _number(
        v.get("memory_utilisation", DEFAULT_MEMORY_UTILISATION), "memory_utilisation", maximum=1.0
    )
    out["ram_bytes"] = _integer(v["ram_bytes"], "ram_bytes")
    flash, sram = v.get("flash_bytes"), v.get("sram_bytes")
    out["flash_bytes"] = None if flash is None else _integer(flash, "flash_bytes")
    out["sram_bytes"] = None if sram is None else _integer(sram, "sram_bytes")
    if out["kind"] == "mcu":
        for key in ("flash_bytes", "sram_bytes"):
            if out[key] is None:
                raise _FieldError(key, "required for kind 'mcu' (an integer number of bytes)")
    elif out["flash_bytes"] is not None:
        raise _FieldError(
            "flash_bytes", f"only for kind 'mcu' (this device is {out['kind']!r}); leave it null"
        )
    dts = v.get("supported_dtypes") or ()
    out["supported_dtypes"] = (
        _dtype_list(dts, "supported_dtypes")
        if dts
        else tuple(d for d in DTYPES if d in out["flops_per_cycle"])
    )
    for i, dt in enumerate(out["supported_dtypes"]):
        if dt not in out["flops_per_cycle"]:
            raise _FieldError(f"supported_dtypes[{i}]", f"{dt!r} has no entry in flops_per_cycle")
    align = _keyed_numbers(
        v.get("channel_alignment") or {}, "channel_alignment", DTYPES, "dtype -> channels", integer=True
    )
    out["channel_alignment"] = FrozenMap(
        {
            dt: align.get(dt, max(1, out["simd_width_bits"] // (8 * DTYPE_BYTES[dt])))
            for dt in DTYPES
            if dt in align or dt in out["supported_dtypes"]
        }
    )
    ops = v.get("supported_ops")
    if ops is None:
        out["supported_ops"] = None
    else:
        names = tuple(LAYER_TYPES)
        out["supported_ops"] = tuple(
            _string(op, f"supported_ops[{i}]", allowed=names)
            for i, op in enumerate(_sequence(ops, "supported_ops", "a list of NetSpec op names or null"))
        )
    mode = v.get("power_mode")
    if mode is not None:
        out["power_mode"] = _string(mode, "power_mode", allowed=[m.name for m in out["power_modes"]])
    else:
        out["power_mode"] = None
    out["measured"] = _measured(v.get("measured"))
    return out


_REQUIRED = (
    "name",
    "kind",
    "cores",
    "flops_per_cycle",
    "memory_bandwidth_gbps",
    "opps",
    "dynamic_power_coefficient",
    "static_power_w",
    "ram_bytes",
)


@dataclass(frozen=True)
class DeviceProfile:
    """A target device: compute peaks, memory system, DVFS table and power model parameters.

    Construct with ``from_yaml`` / ``from_dict`` / ``load_device``; direct construction validates
    the same way (plain dicts and lists are accepted and frozen). See the module docstring for the
    meaning, units and default of every field.
    """

    name: str
    kind: str
    cores: int
    flops_per_cycle: Mapping[str, float]
    memory_bandwidth_gbps: float
    opps: tuple[OperatingPoint, ...]
    dynamic_power_coefficient: float  # uW / MHz / V^2 per core: P_dyn = dpc * V^2 * f
    static_power_w: float
    ram_bytes: int
    description: str = ""
    sources: tuple[str, ...] = ()
    caches_kb: Mapping[str, int] = field(default_factory=FrozenMap)
    simd_width_bits: int = DEFAULT_SIMD_WIDTH_BITS
    channel_alignment: Mapping[str, int] = field(default_factory=FrozenMap)
    power_modes: tuple[PowerMode, ...] = ()
    memory_power_w: float = 0.0
    # Left unset (None) it becomes static_power_w in __post_init__, so it is always a float after.
    idle_power_w: float = None  # type: ignore[assignment]
    utilisation: Mapping[str, float] = field(default_factory=FrozenMap)
    memory_utilisation: float = DEFAULT_MEMORY_UTILISATION
    flash_bytes: int | None = None
    sram_bytes: int | None = None
    supported_dtypes: tuple[str, ...] = ()
    supported_ops: tuple[str, ...] | None = None
    power_mode: str | None = None
    measured: MeasuredProfile | None = None

    def __post_init__(self) -> None:
        try:
            norm = _normalized({f.name: getattr(self, f.name) for f in fields(self)})
        except _FieldError as exc:
            raise DeviceProfileError(exc.render(f"DeviceProfile {getattr(self, 'name', '?')!r}")) from None
        for key, value in norm.items():
            object.__setattr__(self, key, value)

    # ---- loading ------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> DeviceProfile:
        """Validate a parsed profile mapping; errors name ``source`` and the field path."""
        if not isinstance(data, Mapping):
            raise DeviceProfileError(
                f"{source}: field '<top level>': expected a mapping of profile fields, got {_describe(data)}"
            )
        allowed = [f.name for f in fields(cls)]
        for key in data:
            if key not in allowed:
                raise DeviceProfileError(
                    f"{source}: field '{key}': unknown key; allowed: {', '.join(allowed)}"
                )
        for key in _REQUIRED:
            if key not in data:
                raise DeviceProfileError(
                    f"{source}: field '{key}': missing (required: {', '.join(_REQUIRED)})"
                )
        try:
            norm = _normalized(data)
        except _FieldError as exc:
            raise DeviceProfileError(exc.render(source)) from None
        return cls(**norm)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> DeviceProfile:
        """Read and validate a profile file (YAML, or JSON, which YAML reads too)."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DeviceProfileError(f"{p}: field '<top level>': file not found") from None
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
            raise DeviceProfileError(f"{p}: field '<top level>': cannot read the file ({exc})") from None
        profile = cls._from_text(text, str(p))
        if profile.measured is not None:
            # relative paths in `measured` are relative to the file they were read from
            return replace(profile, measured=replace(profile.measured, base_dir=str(p.parent)))
        return profile

    @classmethod
    def _from_text(cls, text: str, source: str) -> DeviceProfile:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DeviceProfileError(f"{source}: field '<top level>': not valid YAML ({exc})") from None
        return cls.from_dict(data, source=source)

    def to_json(self) -> dict[str, Any]:
        """The profile as plain JSON/YAML-ready data (``from_dict`` reads it back unchanged)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, FrozenMap):
                value = value.to_dict()
            elif f.name == "opps":
                value = [{"freq_mhz": o.freq_mhz, "voltage_v": o.voltage_v} for o in value]
            elif f.name == "power_modes":
                value = [
                    {
                        "name": m.name,
                        "cores": m.cores,
                        "max_freq_mhz": m.max_freq_mhz,
                        "power_budget_w": m.power_budget_w,
                    }
                    for m in value
                ]
            elif isinstance(value, tuple):
                value = list(value)
            elif f.name == "measured":
                if value is None:
                    continue  # optional section: profiles without it keep their JSON form
                value = value.to_json()
            out[f.name] = value
        return out

    def to_yaml(self) -> str:
        """The profile as YAML text (``from_yaml`` of a file holding it gives an equal profile)."""
        return yaml.safe_dump(self.to_json(), sort_keys=False, allow_unicode=True, width=120)

    # ---- queries ------------------------------------------------------------------------------
    def _dtype(self, dtype: str) -> str:
        dt = canonical_dtype(dtype)
        if dt not in self.supported_dtypes:
            raise DeviceProfileError(
                f"{self.name}: dtype {dtype!r} is not supported; allowed: {', '.join(self.supported_dtypes)}"
            )
        return dt

    def alignment(self, dtype: str = "float32") -> int:
        """Channel-count multiple that fills the SIMD lanes for ``dtype`` (e.g. 4 for NEON fp32)."""
        return int(self.channel_alignment[self._dtype(dtype)])

    def peak_flops(
        self, dtype: str = "float32", freq_mhz: float | None = None, cores: int | None = None
    ) -> float:
        """Peak FLOP/s for ``dtype`` at ``freq_mhz`` (default the fastest OPP) on ``cores`` (default all)."""
        f = self.max_opp.freq_mhz if freq_mhz is None else freq_mhz
        n = self.cores if cores is None else cores
        return float(self.flops_per_cycle[self._dtype(dtype)] * n * f * 1e6)

    @property
    def max_opp(self) -> OperatingPoint:
        """The fastest operating point."""
        return self.opps[-1]

    @property
    def min_opp(self) -> OperatingPoint:
        """The slowest operating point."""
        return self.opps[0]

    def opp_at(self, freq_mhz: float) -> OperatingPoint:
        """The OPP at ``freq_mhz``, else the slowest one above it (what cpufreq picks for a request).

        Raises ``DeviceProfileError`` listing the available frequencies if ``freq_mhz`` exceeds the
        fastest OPP.
        """
        for opp in self.opps:
            if opp.freq_mhz >= freq_mhz - _FREQ_TOL_MHZ:
                return opp
        listed = ", ".join(f"{o.freq_mhz:g}" for o in self.opps)
        raise DeviceProfileError(f"{self.name}: no OPP at or above {freq_mhz:g} MHz; available MHz: {listed}")

    def with_power_mode(self, name: str) -> DeviceProfile:
        """This profile restricted to power mode ``name``: its cores, OPPs capped at its max frequency.

        The result keeps only that mode in ``power_modes`` and records it in ``power_mode``;
        apply another mode to the catalogue profile, not to the restricted one.
        """
        if self.power_mode == name:
            return self
        if self.power_mode is not None:
            raise DeviceProfileError(
                f"{self.name}: already restricted to power mode {self.power_mode!r}; "
                f"apply {name!r} to the unrestricted profile (e.g. load_device({self.name!r}))"
            )
        modes = {m.name: m for m in self.power_modes}
        if name not in modes:
            allowed = ", ".join(modes) if modes else "(this device defines none)"
            raise DeviceProfileError(f"{self.name}: unknown power mode {name!r}; allowed: {allowed}")
        mode = modes[name]
        opps = tuple(o for o in self.opps if o.freq_mhz <= mode.max_freq_mhz + _FREQ_TOL_MHZ)
        return replace(self, cores=mode.cores, opps=opps, power_modes=(mode,), power_mode=name)


# ---- catalogue ---------------------------------------------------------------------------------
def _catalogue() -> Any:
    return importlib.resources.files("runtime.hardware").joinpath("catalogue")


def list_devices() -> list[str]:
    """Names of the profiles shipped in the catalogue, sorted."""
    root = _catalogue()
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def _looks_like_path(spec: str) -> bool:
    # Deliberately not "exists on disk": a stray file named "rpi4" must not shadow the catalogue.
    return os.sep in spec or "/" in spec or spec.endswith((".yaml", ".yml", ".json"))


def load_device(name_or_path: str | os.PathLike[str]) -> DeviceProfile:
    """A catalogue profile by name (``rpi4``) or a profile file by path; errors list the known names."""
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(str(name_or_path)):
        return DeviceProfile.from_yaml(name_or_path)
    name = str(name_or_path)
    known = list_devices()
    if name not in known:
        raise DeviceProfileError(
            f"unknown device {name!r}; known devices: {', '.join(known)} "
            "(or give the path of a profile YAML file)"
        )
    resource = _catalogue().joinpath(f"{name}.yaml")
    return DeviceProfile._from_text(resource.read_text(encoding="utf-8"), str(resource))


__all__ = [
    "CACHE_LEVELS",
    "DEFAULT_UTILISATION",
    "DTYPES",
    "KINDS",
    "LAYER_CLASSES",
    "MEASURED_KEYS",
    "DeviceProfile",
    "DeviceProfileError",
    "FrozenMap",
    "MeasuredProfile",
    "OperatingPoint",
    "PowerMode",
    "canonical_dtype",
    "list_devices",
    "load_device",
]
