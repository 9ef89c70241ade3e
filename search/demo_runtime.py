"""The demo's second stage: three operating points from a Pareto front → a bundle → a runtime
session whose mode follows a (synthetic, deterministic) battery / CPU / thermal trace."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from search.space import MobileNetV3Space


def pick_modes(front: np.ndarray, latency: np.ndarray, macs: np.ndarray, deadline_ms: float) -> dict[str, int]:
    """high / balanced / low from a MACs-vs-latency front (indices into the sample).

    low: the fastest network; high: the most compute within ``deadline_ms``; balanced: the knee
    between them (the front point farthest above the straight line joining them, both axes
    normalised). The search engine's ModePlan will replace this rule with configurable ones.
    """
    within = front[latency[front] <= deadline_ms]
    high = int(within[-1]) if len(within) else int(front[-1])
    low = int(front[0])
    between = front[(latency[front] > latency[low]) & (latency[front] < latency[high])]
    if len(between) == 0:
        return {"high": high, "balanced": int(front[len(front) // 2]), "low": low}
    x = (latency[between] - latency[low]) / max(latency[high] - latency[low], 1e-12)
    y = (macs[between] - macs[low]) / max(macs[high] - macs[low], 1e-12)
    return {"high": high, "balanced": int(between[np.argmax(y - x)]), "low": low}


def _log(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def runtime_stage(
    space: MobileNetV3Space,
    devices: list[Any],
    codes: np.ndarray,
    front: np.ndarray,
    costs: dict[str, np.ndarray],
    deadline_ms: float,
    out_dir: Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Build a three-mode bundle from ``devices[0]``'s front and replay a switching session."""
    from runtime.bundle_build import ModeSpec, build_bundle
    from runtime.engine import MultiModeRuntime
    from runtime.session import demo_trace, format_decision, plot_timeline, replay_session
    from runtime.telemetry import write_trace

    device = devices[0]
    picks = pick_modes(front, costs["latency_ms"], costs["macs"], deadline_ms)
    modes = []
    for name, i in picks.items():
        arch = space.decode(codes[i])
        net = space.to_netspec(arch, alignment=device.alignment("float32"))
        modes.append(ModeSpec(name, net, arch=arch.to_json()))
    bundle_dir = out_dir / "bundle"
    build_bundle(modes, bundle_dir, share_weights=True, devices=devices, target_device=device, seed=0)
    _log(
        progress,
        f"[demo] built {bundle_dir}: "
        + ", ".join(
            f"{name} {costs['macs'][i] / 1e6:.0f}M MACs / {costs['latency_ms'][i]:.1f} ms on {device.name}"
            for name, i in picks.items()
        ),
    )
    trace = demo_trace()
    write_trace(out_dir / "trace.csv", trace)
    rt = MultiModeRuntime(bundle_dir, deadline_ms=deadline_ms)

    def show(d: Any) -> None:
        if d.switch:
            _log(progress, "[demo] " + format_decision(d))

    session = replay_session(rt, trace, requests_per_step=3, listener=show)
    picture = plot_timeline(session.decisions, rt.modes, out_dir / "timeline.png")
    m = session.metrics
    return {
        "bundle": str(bundle_dir),
        "trace": str(out_dir / "trace.csv"),
        "timeline": picture,
        "device": device.name,
        "deadline_ms": deadline_ms,
        "modes": {
            name: {
                "arch": space.decode(codes[i]).to_json(),
                "macs": int(costs["macs"][i]),
                "latency_ms_on_device": float(costs["latency_ms"][i]),
            }
            for name, i in picks.items()
        },
        "switches": [d.to_json() for d in session.decisions if d.switch],
        "served": {
            name: {
                "requests": v["inferences"],
                "p50_ms_here": v["latency"]["p50_ms"],
                "energy_mj_on_device": v["energy"]["energy_mj"] if v["energy"] else None,
            }
            for name, v in m["modes"].items()
        },
        "failed_requests": m["failed_requests"],
    }


def format_runtime_stage(r: dict[str, Any]) -> list[str]:
    """Human-readable lines for the runtime stage."""
    from runtime.cli_common import format_table

    lines = [
        f"== runtime: bundle {r['bundle']} (high mode within {r['deadline_ms']:.1f} ms on {r['device']}, "
        f"MobileNetV3-Large's latency there); trace {r['trace']}"
    ]
    for s in r["switches"]:
        lines.append(f"  t={s['t']:6.1f}s  {s['previous']:>8} -> {s['mode']:<8}  {s['reason']}")
    rows = [(name, v["requests"], v["p50_ms_here"], v["energy_mj_on_device"]) for name, v in r["served"].items()]
    lines.append(format_table(("mode", "requests", "p50 ms (here)", f"est. mJ ({r['device']})"), rows))
    lines.append(f"failed requests: {r['failed_requests']}; timeline: {r['timeline']}")
    return lines
