"""The demo's second stage: an NSGA-II search on the target device → a ModePlan (high /
balanced / low) → a bundle → a runtime session whose mode follows a (synthetic, deterministic)
battery / CPU / thermal trace."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from search.space import MobileNetV3Space


def _log(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def search_stage(space: MobileNetV3Space, device: Any, deadline_ms: float, out_dir: Path, seed: int = 0,
                 progress: bool = True) -> tuple[Any, dict[str, Any]]:
    """NSGA-II (MACs max, latency min) on ``device``, then a ModePlan under ``deadline_ms``.

    MACs stand in for accuracy until the supernet's predictor exists. Returns (plan, summary).
    """
    from search.cost.table import SpaceCostTable
    from search.modes import ModeRules, select_modes
    from search.problem import Objective, SpaceProblem
    from search.strategies.base import run
    from search.strategies.nsga2 import NSGA2

    table = SpaceCostTable(space, device)
    problem = SpaceProblem(space, [table.evaluate], [Objective("macs", "max"), Objective("latency_ms", "min")])
    strategy = NSGA2(problem, seed=seed, pop_size=100)
    result = run(strategy, max_generations=100, stop_on_convergence=False)
    X, _ = strategy.front()
    metrics = table.evaluate(X)
    order = np.argsort(-metrics["macs"])
    X, metrics = X[order], {k: v[order] for k, v in metrics.items()}
    plan = select_modes(metrics, ModeRules(deadline_ms=deadline_ms, accuracy="macs"),
                        archs=[a.to_json() for a in space.decode_batch(X)], device=device.name)
    plan.save(out_dir / "modeplan.json")
    summary = {"strategy": "nsga2", "evaluations": len(result.X), "seconds": result.seconds,
               "front_size": len(X), "modeplan": str(out_dir / "modeplan.json")}
    _log(progress, f"[demo] NSGA-II on {device.name}: {len(result.X):,} evaluations in {result.seconds:.2f} s, "
                   f"front of {len(X)}; ModePlan -> {out_dir / 'modeplan.json'}")
    return plan, summary


def runtime_stage(
    space: MobileNetV3Space,
    devices: list[Any],
    deadline_ms: float,
    out_dir: Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Search ``devices[0]``, build a bundle from the ModePlan, replay a switching session."""
    from runtime.bundle_build import build_bundle
    from runtime.engine import MultiModeRuntime
    from runtime.session import demo_trace, format_decision, plot_timeline, replay_session
    from runtime.telemetry import write_trace
    from search.modes import modeplan_to_specs

    device = devices[0]
    plan, search = search_stage(space, device, deadline_ms, out_dir, progress=progress)
    bundle_dir = out_dir / "bundle"
    specs = modeplan_to_specs(plan, space, alignment=device.alignment("float32"))
    build_bundle(specs, bundle_dir, share_weights=True, devices=devices, target_device=device, seed=0)
    _log(progress, f"[demo] built {bundle_dir}: " + ", ".join(
        f"{m.name} {m.metrics['macs'] / 1e6:.0f}M MACs / {m.metrics['latency_ms']:.1f} ms on {device.name}"
        for m in plan.modes))
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
        "search": search,
        "bundle": str(bundle_dir),
        "trace": str(out_dir / "trace.csv"),
        "timeline": picture,
        "device": device.name,
        "deadline_ms": deadline_ms,
        "modes": {
            mode.name: {"arch": mode.arch, "macs": int(mode.metrics["macs"]),
                        "latency_ms_on_device": mode.metrics["latency_ms"], "reason": mode.reason}
            for mode in plan.modes
        },
        "switches": [d.to_json() for d in session.decisions if d.switch],
        "served": {
            name: {"requests": v["inferences"], "p50_ms_here": v["latency"]["p50_ms"],
                   "energy_mj_on_device": v["energy"]["energy_mj"] if v["energy"] else None}
            for name, v in m["modes"].items()
        },
        "failed_requests": m["failed_requests"],
    }


def format_runtime_stage(r: dict[str, Any]) -> list[str]:
    """Human-readable lines for the runtime stage."""
    from runtime.cli_common import format_table

    sr = r["search"]
    lines = [
        f"== search: NSGA-II on {r['device']}, {sr['evaluations']:,} evaluations in {sr['seconds']:.2f} s, "
        f"front of {sr['front_size']}; ModePlan {sr['modeplan']}",
        f"   (high: most MACs within {r['deadline_ms']:.1f} ms = MobileNetV3-Large's latency there)",
    ]
    for name, mode in r["modes"].items():
        lines.append(
            f"  {name:<8} {mode['macs'] / 1e6:6.0f}M MACs {mode['latency_ms_on_device']:6.1f} ms  {mode['reason']}"
        )
    lines.append(f"== runtime: bundle {r['bundle']}; trace {r['trace']}")
    for s in r["switches"]:
        lines.append(f"  t={s['t']:6.1f}s  {s['previous']:>8} -> {s['mode']:<8}  {s['reason']}")
    rows = [(name, v["requests"], v["p50_ms_here"], v["energy_mj_on_device"]) for name, v in r["served"].items()]
    lines.append(format_table(("mode", "requests", "p50 ms (here)", f"est. mJ ({r['device']})"), rows))
    lines.append(f"failed requests: {r['failed_requests']}; timeline: {r['timeline']}")
    return lines
