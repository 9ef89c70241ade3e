"""Serving sessions: a runtime driven by telemetry while it answers requests.

``replay_session`` walks a recorded trace step by step (deterministic: the same trace gives the
same decisions), serving a few requests after each decision; ``live_session`` runs the sampler
thread on live telemetry for a duration while the caller's thread serves requests. Both return
the decisions and the runtime's metrics. ``plot_timeline`` draws the signals and the mode over
time (matplotlib is optional: without it no picture is drawn).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.controller import AutoSwitcher
from runtime.engine import MultiModeRuntime, mode_input
from runtime.policy import Policy, TimedDecision
from runtime.telemetry import Signals, TelemetrySource, TraceSource


@dataclass(frozen=True)
class SessionResult:
    """Decisions in order, and the runtime's metrics at the end."""

    decisions: tuple[TimedDecision, ...]
    metrics: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"decisions": [d.to_json() for d in self.decisions], "metrics": self.metrics}


def replay_session(
    rt: MultiModeRuntime,
    samples: Sequence[Signals],
    *,
    policy: Policy | None = None,
    deadline_ms: float | None = None,
    requests_per_step: int = 5,
    alpha: float = 0.3,
    listener: Callable[[TimedDecision], None] | None = None,
    inputs: Callable[[int], np.ndarray] | None = None,
    on_result: Callable[[int, np.ndarray, str], None] | None = None,
) -> SessionResult:
    """Replay ``samples`` through the controller, serving ``requests_per_step`` after each decision.

    ``inputs(i)`` gives request ``i``'s tensor (default: one fixed tensor of the bundle's input
    shape); ``on_result(i, output, mode)`` sees each answer and the mode that produced it — how a
    caller measures what the session actually served.
    """
    now = [samples[0].t]

    def clock() -> float:
        return now[0]

    source = TraceSource(samples, clock=clock)
    switcher = AutoSwitcher(
        rt,
        source,
        policy,
        deadline_ms=deadline_ms,
        alpha=alpha,
        clock=clock,
        listeners=[listener] if listener else (),
    )
    fixed = mode_input(rt)
    decisions = []
    served = 0
    for sample in samples:
        now[0] = sample.t
        decisions.append(switcher.step())
        for _ in range(requests_per_step):
            result = rt.infer_detailed(inputs(served) if inputs is not None else fixed)
            if on_result is not None:
                on_result(served, result.output, result.mode)
            served += 1
    return SessionResult(tuple(decisions), rt.metrics())


def live_session(
    rt: MultiModeRuntime,
    source: TelemetrySource,
    *,
    duration_s: float,
    policy: Policy | None = None,
    interval_s: float = 0.5,
    deadline_ms: float | None = None,
    rate_hz: float | None = None,
    alpha: float = 0.3,
    listener: Callable[[TimedDecision], None] | None = None,
    stop_when: Callable[[], bool] | None = None,
) -> SessionResult:
    """Run the sampler thread on ``source`` for ``duration_s`` while this thread serves requests.

    ``rate_hz`` paces requests (None: back to back); ``stop_when`` ends early (e.g. a trace ran out).
    """
    switcher = AutoSwitcher(
        rt,
        source,
        policy,
        interval_s=interval_s,
        deadline_ms=deadline_ms,
        alpha=alpha,
        listeners=[listener] if listener else (),
    )
    x = mode_input(rt)
    period = 1.0 / rate_hz if rate_hz else 0.0
    end = time.monotonic() + duration_s
    with switcher:
        next_at = time.monotonic()
        while time.monotonic() < end and not (stop_when and stop_when()):
            rt.infer(x)
            if period:
                next_at += period
                time.sleep(max(0.0, next_at - time.monotonic()))
    return SessionResult(tuple(switcher.decisions), rt.metrics())


def format_decision(d: TimedDecision) -> str:
    """One line: time, the signals that matter, the mode and why."""
    s = d.signals
    parts = []
    if s is not None:
        if s.battery_percent is not None:
            parts.append(f"battery {s.battery_percent:5.1f}%" + (" (plugged)" if s.plugged else ""))
        if s.cpu_percent is not None:
            parts.append(f"cpu {s.cpu_percent:5.1f}%")
        if s.temperature_c is not None:
            parts.append(f"{s.temperature_c:5.1f} °C")
        if s.mem_percent is not None:
            parts.append(f"mem {s.mem_percent:4.1f}%")
    arrow = f"{d.previous} -> {d.mode}" if d.switch else f"stay {d.mode}"
    return f"t={d.t:8.1f}s  {'  '.join(parts):<52} {arrow:<22} {d.reason}"


def plot_timeline(decisions: Sequence[TimedDecision], modes: Sequence[str], path: Path) -> str | None:
    """Signals and the chosen mode over time as a PNG; returns its path, or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    t = np.array([d.t for d in decisions])

    def series(name: str) -> np.ndarray:
        return np.array(
            [
                getattr(d.signals, name) if d.signals and getattr(d.signals, name) is not None else np.nan
                for d in decisions
            ],
            dtype=float,
        )

    level = {m: len(modes) - 1 - i for i, m in enumerate(modes)}
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    for name, label in (
        ("battery_percent", "battery %"),
        ("cpu_percent", "CPU %"),
        ("temperature_c", "temperature °C"),
    ):
        values = series(name)
        if not np.all(np.isnan(values)):
            ax1.plot(t, values, label=label)
    ax1.set_ylabel("signals (smoothed)")
    ax1.legend(loc="upper right", fontsize=8)
    ax2.step(t, [level[d.mode] for d in decisions], where="post", color="tab:red")
    ax2.set_yticks(range(len(modes)), list(reversed(modes)))
    ax2.set_xlabel("time (s)")
    ax2.set_ylabel("mode")
    for d in decisions:
        if d.switch:
            ax2.axvline(d.t, color="0.8", lw=0.8, zorder=0)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return str(path)


def demo_trace(duration_s: float = 300.0, step_s: float = 5.0) -> tuple[Signals, ...]:
    """A synthetic but plausible session: the battery drains, the CPU gets busy, the device heats
    up, then the charger is plugged in. Deterministic (no randomness)."""
    samples = []
    for t in np.arange(0.0, duration_s + step_s / 2, step_s):
        plugged = t >= 0.85 * duration_s
        drain = 88.0 - 78.0 * min(t, 0.85 * duration_s) / (0.85 * duration_s)
        battery = drain + (t - 0.85 * duration_s) * 0.4 if plugged else drain
        busy = 0.30 * duration_s <= t < 0.40 * duration_s
        hot = 0.62 * duration_s <= t < 0.70 * duration_s
        samples.append(
            Signals(
                t=float(t),
                battery_percent=round(float(battery), 1),
                plugged=bool(plugged),
                cpu_percent=round(75.0 if busy else 12.0 + 3.0 * float(np.sin(t / 7.0)), 1),
                mem_percent=55.0,
                temperature_c=round(86.0 if hot else 48.0 + 4.0 * min(1.0, float(t) / duration_s), 1),
            )
        )
    return tuple(samples)
