"""Mode selection: from evaluated candidates and a device's limits, the runtime's operating points.

- ``high``: the most accurate candidate that meets the latency deadline and the memory limit;
- ``low``: the least energy per inference among candidates at or above the accuracy floor
  (and within the memory limit);
- ``balanced``: by default the knee of the accuracy–energy front between ``low`` and ``high``
  (the point farthest from the line joining them, both axes normalised); alternatively the
  front point with the best ``Accuracy^a / (Energy^b · Latency^c)`` (``efficiency``) or the one
  closest to the middle energy (``midpoint``).

The result is a ``ModePlan``, which ``search.export.modeplan_to_specs`` turns into the bundle
builder's input. The metric names are configurable, so a proxy (MACs for accuracy until the
supernet lands) or a measured latency can stand in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search.pareto import knee_point, pareto_front

BALANCED_RULES = ("knee", "efficiency", "midpoint")
MODEPLAN_FORMAT = "fleetnas.modeplan/1"


class ModeSelectionError(ValueError):
    """No candidate satisfies a mode's rule; the message says which limit and by how much."""


@dataclass(frozen=True)
class ModeRules:
    """The limits and rules of mode selection (every field has a default)."""

    deadline_ms: float | None = None
    memory_limit_bytes: float | None = None
    accuracy_floor: float | None = None
    balanced: str = "knee"
    accuracy: str = "accuracy"
    latency: str = "latency_ms"
    energy: str = "energy_mj"
    memory: str = "peak_activation_bytes"
    efficiency_exponents: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.balanced not in BALANCED_RULES:
            raise ModeSelectionError(
                f"field 'balanced': {self.balanced!r} is not a rule; allowed: {', '.join(BALANCED_RULES)}"
            )


@dataclass(frozen=True)
class ModeChoice:
    """One operating point: its name, the candidate's index, arch JSON, metrics, and why."""

    name: str
    index: int
    arch: Mapping[str, Any] | None
    metrics: Mapping[str, float]
    reason: str


@dataclass(frozen=True)
class ModePlan:
    """The runtime's operating points for one device, most to least capable."""

    device: str | None
    rules: ModeRules
    modes: tuple[ModeChoice, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def mode(self, name: str) -> ModeChoice:
        """The named mode."""
        for m in self.modes:
            if m.name == name:
                return m
        raise KeyError(f"no mode {name!r}; modes: {', '.join(m.name for m in self.modes)}")

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "format": MODEPLAN_FORMAT,
            "device": self.device,
            "rules": {**asdict(self.rules), "efficiency_exponents": list(self.rules.efficiency_exponents)},
            "modes": [
                {"name": m.name, "index": m.index, "arch": m.arch, "metrics": dict(m.metrics), "reason": m.reason}
                for m in self.modes
            ],
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "modeplan") -> ModePlan:
        """Parse ``to_json``'s form."""
        if data.get("format") != MODEPLAN_FORMAT:
            raise ModeSelectionError(f"{source}: field 'format': {data.get('format')!r}; allowed: {MODEPLAN_FORMAT}")
        rules = dict(data["rules"])
        rules["efficiency_exponents"] = tuple(rules.get("efficiency_exponents", (1.0, 1.0, 1.0)))
        modes = tuple(
            ModeChoice(m["name"], int(m["index"]), m.get("arch"), dict(m["metrics"]), m["reason"])
            for m in data["modes"]
        )
        return cls(data.get("device"), ModeRules(**rules), modes, tuple(data.get("notes", ())))

    def save(self, path: str | Path) -> Path:
        """Write the JSON form atomically."""
        from runtime.fileio import write_text_atomic

        p = Path(path)
        write_text_atomic(p, json.dumps(self.to_json(), indent=2) + "\n")
        return p


# Smallest normalised distance of a front point above the low-high chord for it to count as a knee.
KNEE_MIN_BULGE = 0.03


def _bulge(acc: np.ndarray, energy: np.ndarray, low: int, high: int, inner: np.ndarray) -> float:
    """How far (normalised, perpendicular) the front bulges above the straight line from low to high."""
    de, da = energy[high] - energy[low], acc[high] - acc[low]
    if de <= 0 or da <= 0 or len(inner) == 0:
        return 0.0
    x = (energy[inner] - energy[low]) / de
    y = (acc[inner] - acc[low]) / da
    return float(np.max(y - x) / np.sqrt(2.0))


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def select_modes(
    metrics: Mapping[str, np.ndarray],
    rules: ModeRules,
    archs: Sequence[Mapping[str, Any] | None] | None = None,
    device: str | None = None,
) -> ModePlan:
    """Choose high / balanced / low among candidates described by ``metrics`` (arrays of equal length).

    Raises ModeSelectionError naming the limit when no candidate meets a rule.
    """
    for key in (
        (rules.accuracy, rules.energy)
        + ((rules.latency,) if rules.deadline_ms is not None else ())
        + ((rules.memory,) if rules.memory_limit_bytes is not None else ())
    ):
        if key not in metrics:
            raise ModeSelectionError(f"metric {key!r} is missing; candidates have: {', '.join(sorted(metrics))}")
    acc = np.asarray(metrics[rules.accuracy], dtype=float)
    energy = np.asarray(metrics[rules.energy], dtype=float)
    n = len(acc)
    ok = np.ones(n, dtype=bool)
    notes: list[str] = []
    if rules.memory_limit_bytes is not None:
        mem = np.asarray(metrics[rules.memory], dtype=float)
        ok &= mem <= rules.memory_limit_bytes
        if not ok.any():
            raise ModeSelectionError(
                f"no candidate fits the memory limit {_fmt(rules.memory_limit_bytes)} B "
                f"({rules.memory}); the smallest needs {_fmt(mem.min())} B"
            )
    fast = ok.copy()
    if rules.deadline_ms is not None:
        lat = np.asarray(metrics[rules.latency], dtype=float)
        fast &= lat <= rules.deadline_ms
        if not fast.any():
            raise ModeSelectionError(
                f"no candidate meets the {_fmt(rules.deadline_ms)} ms deadline ({rules.latency}) within the "
                f"limits; the fastest takes {_fmt(lat[ok].min())} ms"
            )
    high = int(np.flatnonzero(fast)[np.argmax(acc[fast])])
    accurate = ok.copy()
    if rules.accuracy_floor is not None:
        accurate &= acc >= rules.accuracy_floor
        if not accurate.any():
            raise ModeSelectionError(
                f"no candidate reaches the accuracy floor {_fmt(rules.accuracy_floor)} ({rules.accuracy}); "
                f"the best reaches {_fmt(acc[ok].max())}"
            )
    low = int(np.flatnonzero(accurate)[np.argmin(energy[accurate])])
    if energy[low] > energy[high]:
        notes.append("the most accurate candidate within the deadline is also the cheapest one above the floor")
        low = high
    # balanced: among front points (max accuracy, min energy) between low and high
    idx = np.flatnonzero(ok & (energy >= energy[low]) & (energy <= energy[high]) & (acc >= acc[low]))
    F = np.column_stack([-acc[idx], energy[idx]])
    front = idx[pareto_front(F)] if len(idx) else np.array([], dtype=int)
    inner = front[(front != low) & (front != high)]
    if len(inner) == 0:
        balanced = high if len(front) == 0 else int(front[len(front) // 2])
        notes.append("the front between low and high has no inner point; balanced repeats an end point")
        balanced_reason = "no front point between low and high"
    elif rules.balanced == "knee" and _bulge(acc, energy, low, high, inner) >= KNEE_MIN_BULGE:
        pts = np.column_stack([-acc[front], energy[front]])
        balanced = int(front[knee_point(pts)])
        balanced_reason = f"knee of the {rules.accuracy}-{rules.energy} front between low and high"
        if balanced in (low, high):
            balanced = int(inner[len(inner) // 2])
            balanced_reason = "front midpoint (the knee coincided with an end point)"
    elif rules.balanced == "knee":
        # A nearly straight front has no knee worth the name: its "knee" is noise. Split the
        # energy range instead, and say so.
        target = 0.5 * (energy[low] + energy[high])
        balanced = int(inner[np.argmin(np.abs(energy[inner] - target))])
        balanced_reason = (f"middle {rules.energy} between low and high (the {rules.accuracy}-{rules.energy} "
                           "front is nearly straight: no knee)")
    elif rules.balanced == "efficiency":
        a, b, c = rules.efficiency_exponents
        lat = np.asarray(metrics.get(rules.latency, np.ones(n)), dtype=float)
        score = acc[inner] ** a / (energy[inner] ** b * lat[inner] ** c)
        balanced = int(inner[np.argmax(score)])
        balanced_reason = f"best Acc^{a:g}/(E^{b:g}·L^{c:g}) on the front between low and high"
    else:
        target = 0.5 * (energy[low] + energy[high])
        balanced = int(inner[np.argmin(np.abs(energy[inner] - target))])
        balanced_reason = "front point closest to the middle energy between low and high"

    def choice(name: str, i: int, reason: str) -> ModeChoice:
        values = {k: float(np.asarray(v)[i]) for k, v in metrics.items() if np.asarray(v).ndim == 1}
        return ModeChoice(name, i, archs[i] if archs is not None else None, values, reason)

    limits = []
    if rules.deadline_ms is not None:
        limits.append(f"{rules.latency} <= {_fmt(rules.deadline_ms)}")
    if rules.memory_limit_bytes is not None:
        limits.append(f"{rules.memory} <= {_fmt(rules.memory_limit_bytes)}")
    modes = (
        choice(
            "high",
            high,
            f"highest {rules.accuracy} ({_fmt(acc[high])})" + (f" with {', '.join(limits)}" if limits else ""),
        ),
        choice("balanced", balanced, balanced_reason),
        choice(
            "low",
            low,
            f"least {rules.energy} ({_fmt(energy[low])})"
            + (f" with {rules.accuracy} >= {_fmt(rules.accuracy_floor)}" if rules.accuracy_floor is not None else ""),
        ),
    )
    return ModePlan(device, rules, modes, tuple(notes))


def modeplan_to_specs(plan: ModePlan, space: Any, alignment: int = 8) -> list[Any]:
    """The bundle builder's input (``runtime.bundle_build.ModeSpec`` per mode) for ``plan`` in ``space``."""
    from runtime.bundle_build import ModeSpec
    from search.arch import Arch

    specs = []
    for m in plan.modes:
        if m.arch is None:
            raise ModeSelectionError(f"mode {m.name!r} has no arch; a ModePlan for a bundle needs archs")
        arch = Arch.from_json(m.arch)
        specs.append(
            ModeSpec(
                m.name,
                space.to_netspec(arch, alignment=alignment),
                arch=dict(m.arch),
                accuracy=m.metrics.get(plan.rules.accuracy),
            )
        )
    return specs
