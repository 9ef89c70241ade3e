"""``fleetnas search`` configuration: a YAML file, validated on load, every option defaulted.

Example (every key optional)::

    space: imagenet                 # preset (imagenet, mnist, nasbench201) or a space YAML
    device: rpi4                    # catalogue name or profile YAML: cost tables, latency, energy;
                                    # a profile from `fleetnas profile` (with a `measured` section)
                                    # also gives latency_ms_measured, and scales `platforms` from it
    platforms: {rpi4: 0.5, cortex_a76: 0.5}   # optional: weighted multi-platform latency
    accuracy:                       # optional accuracy source
      tabular: {path: nb201.csv.gz, dataset: cifar10, split: val}
    objectives:
      - {metric: macs, direction: max}          # MACs stand in for accuracy until a predictor exists
      - {metric: latency_ms, direction: min}
    constraints:
      - {metric: peak_activation_bytes, max: 4194304}
      - {metric: latency_ms, max: 40, tighten_from: 80, tau: 10}   # progressive tightening
    mnas: {target_ms: 30, w: -0.07}  # adds mnas_reward = ACC·(LAT/TARGET)^w (ACC: the table's
                                     # accuracy, else MACs; LAT: weighted_latency_ms with platforms)
    strategy: {name: nsga2, seed: 0, pop_size: 100}
    budget: {evaluations: 20000, generations: null}
    modes: {deadline_ms: 40, accuracy_floor: null, memory_limit_bytes: null, balanced: knee,
            accuracy: macs, energy: energy_mj}

Errors name the file, the field (dotted path) and the allowed values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A search configuration error naming the file, the field and what is allowed."""


@dataclass(frozen=True)
class ObjectiveSpec:
    """An objective: metric and direction."""

    metric: str
    direction: str = "min"


@dataclass(frozen=True)
class ConstraintSpec:
    """A hard limit: ``max`` (metric ≤ max) or ``min`` (metric ≥ min), optionally tightened over time."""

    metric: str
    max: float | None = None
    min: float | None = None
    tighten_from: float | None = None
    tau: float = 10.0


@dataclass(frozen=True)
class SearchConfig:
    """A validated search configuration."""

    space: str = "imagenet"
    device: str = "rpi4"
    platforms: Mapping[str, float] = field(default_factory=dict)
    accuracy: Mapping[str, Any] = field(default_factory=dict)
    objectives: tuple[ObjectiveSpec, ...] = (ObjectiveSpec("macs", "max"), ObjectiveSpec("latency_ms", "min"))
    constraints: tuple[ConstraintSpec, ...] = ()
    mnas: Mapping[str, float] = field(default_factory=dict)
    strategy: Mapping[str, Any] = field(default_factory=lambda: {"name": "nsga2"})
    budget: Mapping[str, int | None] = field(default_factory=lambda: {"evaluations": 20_000, "generations": None})
    modes: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<defaults>"

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> SearchConfig:
        """Validate a parsed YAML mapping."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: top level must be a mapping")
        allowed = {f.name for f in fields(cls)} - {"source"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
        kw: dict[str, Any] = {"source": source}
        for key in ("space", "device"):
            if key in data:
                if not isinstance(data[key], str):
                    raise ConfigError(f"{source}: field '{key}': expected a name or a path, got {data[key]!r}")
                kw[key] = data[key]
        kw["platforms"] = _number_map(data.get("platforms", {}), source, "platforms")
        kw["mnas"] = _number_map(data.get("mnas", {}), source, "mnas", allowed={"target_ms", "w"})
        if kw["mnas"] and "target_ms" not in kw["mnas"]:
            raise ConfigError(f"{source}: field 'mnas.target_ms': required when 'mnas' is given")
        accuracy = data.get("accuracy", {})
        if not isinstance(accuracy, Mapping) or set(accuracy) - {"tabular"}:
            raise ConfigError(f"{source}: field 'accuracy': allowed keys: tabular")
        if "tabular" in accuracy:
            tab = accuracy["tabular"]
            if not isinstance(tab, Mapping) or "path" not in tab or set(tab) - {"path", "dataset", "split"}:
                raise ConfigError(f"{source}: field 'accuracy.tabular': need 'path' (and optional dataset, split)")
        kw["accuracy"] = dict(accuracy)
        if "objectives" in data:
            kw["objectives"] = tuple(
                _objective(o, source, i) for i, o in enumerate(_list(data["objectives"], source, "objectives"))
            )
            if not kw["objectives"]:
                raise ConfigError(f"{source}: field 'objectives': need at least one")
        if "constraints" in data:
            kw["constraints"] = tuple(
                _constraint(c, source, i) for i, c in enumerate(_list(data["constraints"], source, "constraints"))
            )
        strategy = data.get("strategy", {"name": "nsga2"})
        if not isinstance(strategy, Mapping) or not isinstance(strategy.get("name", "nsga2"), str):
            raise ConfigError(f"{source}: field 'strategy': need a mapping with 'name' and the strategy's options")
        kw["strategy"] = {"name": "nsga2", **strategy}
        budget = data.get("budget", {})
        if not isinstance(budget, Mapping) or set(budget) - {"evaluations", "generations"}:
            raise ConfigError(f"{source}: field 'budget': allowed keys: evaluations, generations")
        merged = {"evaluations": 20_000, "generations": None, **budget}
        for k, v in merged.items():
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ConfigError(f"{source}: field 'budget.{k}': expected a positive integer or null, got {v!r}")
        if merged["evaluations"] is None and merged["generations"] is None:
            raise ConfigError(f"{source}: field 'budget': give evaluations or generations")
        kw["budget"] = merged
        modes = data.get("modes", {})
        allowed_modes = {
            "deadline_ms",
            "memory_limit_bytes",
            "accuracy_floor",
            "balanced",
            "accuracy",
            "latency",
            "energy",
            "memory",
            "efficiency_exponents",
        }
        if not isinstance(modes, Mapping) or set(modes) - allowed_modes:
            bad = sorted(set(modes) - allowed_modes) if isinstance(modes, Mapping) else modes
            raise ConfigError(f"{source}: field 'modes': unknown {bad}; allowed: {', '.join(sorted(allowed_modes))}")
        kw["modes"] = dict(modes)
        return cls(**kw)

    @classmethod
    def load(cls, path: str | Path) -> SearchConfig:
        """Read and validate a YAML file."""
        from runtime.fileio import load_yaml

        return cls.from_dict(load_yaml(path, ConfigError), source=str(Path(path)))

    def to_json(self) -> dict[str, Any]:
        """JSON form (what the report records)."""
        return {
            "space": self.space,
            "device": self.device,
            "platforms": dict(self.platforms),
            "accuracy": dict(self.accuracy),
            "objectives": [o.__dict__ for o in self.objectives],
            "constraints": [c.__dict__ for c in self.constraints],
            "mnas": dict(self.mnas),
            "strategy": dict(self.strategy),
            "budget": dict(self.budget),
            "modes": dict(self.modes),
        }


def _list(value: Any, source: str, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{source}: field '{key}': expected a list, got {value!r}")
    return value


def _number_map(value: Any, source: str, key: str, allowed: set[str] | None = None) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: field '{key}': expected a mapping, got {value!r}")
    out = {}
    for k, v in value.items():
        if allowed is not None and k not in allowed:
            raise ConfigError(f"{source}: field '{key}.{k}': unknown; allowed: {', '.join(sorted(allowed))}")
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"{source}: field '{key}.{k}': expected a number, got {v!r}")
        out[str(k)] = float(v)
    return out


def _objective(value: Any, source: str, i: int) -> ObjectiveSpec:
    where = f"objectives[{i}]"
    if not isinstance(value, Mapping) or "metric" not in value or set(value) - {"metric", "direction"}:
        raise ConfigError(f"{source}: field '{where}': need {{metric: NAME, direction: min|max}}, got {value!r}")
    direction = value.get("direction", "min")
    if direction not in ("min", "max"):
        raise ConfigError(f"{source}: field '{where}.direction': {direction!r}; allowed: min, max")
    return ObjectiveSpec(str(value["metric"]), direction)


def _constraint(value: Any, source: str, i: int) -> ConstraintSpec:
    where = f"constraints[{i}]"
    allowed = {"metric", "max", "min", "tighten_from", "tau"}
    if not isinstance(value, Mapping) or "metric" not in value or set(value) - allowed:
        raise ConfigError(
            f"{source}: field '{where}': need metric and max or min (allowed keys: {', '.join(sorted(allowed))})"
        )
    if ("max" in value) == ("min" in value):
        raise ConfigError(f"{source}: field '{where}': give exactly one of max, min")
    for k in ("max", "min", "tighten_from", "tau"):
        v = value.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise ConfigError(f"{source}: field '{where}.{k}': expected a number, got {v!r}")
    return ConstraintSpec(
        metric=str(value["metric"]),
        max=None if value.get("max") is None else float(value["max"]),
        min=None if value.get("min") is None else float(value["min"]),
        tighten_from=None if value.get("tighten_from") is None else float(value["tighten_from"]),
        tau=float(value.get("tau", 10.0)),
    )
