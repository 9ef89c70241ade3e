"""The demo's main pipeline: train → measure → predict → search → export → serve (torch).

1. Train the demo supernet (the ``demo`` preset: the embedded 5,000 MNIST digits, a slim MNIST
   MobileNetV3 space, four progressive-shrinking phases) — or reuse it when ``out`` already holds
   one trained with the same configuration.
2. Measure a sample of its subnets (BatchNorm recalibrated) and fit the numpy accuracy predictors.
3. NSGA-II on the target device: predicted accuracy (max) against roofline latency (min), with
   the device's energy per inference carried along; pick high / balanced / low (a ModePlan).
4. Export the three subnets with their trained weights into a bundle (test accuracy measured on
   the ONNX models themselves).
5. Serve the bundle with the multi-mode runtime while a battery / CPU / thermal trace replays,
   classifying real held-out digits: the served accuracy per mode is measured, not assumed.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from search.supernet.schedule import SupernetTrainConfig


def _log(progress: bool, message: str) -> None:
    if progress:
        print(f"[demo] {message}", file=sys.stderr, flush=True)


def quick_config(cfg: SupernetTrainConfig) -> SupernetTrainConfig:
    """``cfg`` cut to one epoch per phase and 6 batches per epoch: a smoke run of the whole pipeline."""
    return dataclasses.replace(
        cfg,
        phases=tuple(dataclasses.replace(p, epochs=1) for p in cfg.phases),
        data=dataclasses.replace(cfg.data, max_batches=6),
    )


def supernet_pipeline(
    devices: list[Any],
    out_dir: Path,
    *,
    config: str | Path = "demo",
    archs: int = 300,
    quick: bool = False,
    deadline_fraction: float = 0.8,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run stages 1–5 for ``devices[0]`` (all of ``devices`` get manifest estimates); returns a JSON-ready summary."""
    from search.cost.table import SpaceCostTable
    from search.modes import ModeRules, select_modes
    from search.problem import Objective, SpaceProblem
    from search.strategies.base import run
    from search.strategies.nsga2 import NSGA2
    from search.supernet.artefacts import ensure_predictors
    from search.supernet.bundle import bundle_from_modeplan

    device = devices[0]
    cfg = SupernetTrainConfig.load(config)
    if quick:
        cfg = quick_config(cfg)
        archs = min(archs, 24)
    started = time.perf_counter()
    _log(progress, f"training the supernet ({cfg.total_epochs} epochs; reused if {out_dir / 'artefacts'} has it)")
    art = ensure_predictors(
        out_dir / "artefacts", cfg, n_archs=archs, seed=seed, progress=progress, log=lambda s: _log(progress, s)
    )
    trained, space, predictor = art["trained"], art["space"], art["accuracy_predictor"]
    history = _training_summary(trained.root)
    t_art = time.perf_counter() - started

    table = SpaceCostTable(space, device)
    full = table.evaluate(space.encode_batch([trained.net.max_arch()]))
    deadline_ms = deadline_fraction * float(full["latency_ms"][0])
    problem = SpaceProblem(
        space,
        [table.evaluate, predictor.as_evaluator("accuracy")],
        [Objective("accuracy", "max"), Objective("latency_ms", "min")],
    )
    strategy = NSGA2(problem, seed=seed, pop_size=60)
    result = run(strategy, max_generations=25 if quick else 60, stop_on_convergence=False)
    X, _ = strategy.front()
    metrics = problem.metrics(X)
    order = np.argsort(-metrics["accuracy"], kind="stable")
    X, metrics = X[order], {k: v[order] for k, v in metrics.items()}
    plan = select_modes(
        metrics,
        ModeRules(deadline_ms=deadline_ms, accuracy="accuracy"),
        archs=[a.to_json() for a in space.decode_batch(X)],
        device=device.name,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    plan.save(out_dir / "modeplan.json")
    _log(
        progress,
        f"NSGA-II on {device.name}: {len(result.X):,} evaluations in {result.seconds:.2f} s, front of {len(X)}; "
        f"deadline {deadline_ms:.3f} ms ({deadline_fraction:.0%} of the largest subnet); ModePlan -> "
        f"{out_dir / 'modeplan.json'}",
    )
    bundle_dir = out_dir / "bundle"
    _, checks = bundle_from_modeplan(
        trained,
        plan,
        bundle_dir,
        devices=devices,
        target_device=device,
        seed=seed,
        progress=lambda s: _log(progress, s),
    )
    served = _serve(bundle_dir, trained, deadline_ms, out_dir, progress)
    return {
        "device": device.name,
        "supernet": {
            "dir": str(trained.root),
            "epochs": cfg.total_epochs,
            "quick": quick,
            **history,
        },
        "predictor": {"archs_measured": len(art["measurements"].codes), **art["report"]},
        "artefacts_seconds": round(t_art, 1),
        "search": {
            "strategy": "nsga2",
            "evaluations": len(result.X),
            "seconds": result.seconds,
            "front_size": len(X),
            "deadline_ms": deadline_ms,
            "modeplan": str(out_dir / "modeplan.json"),
        },
        "modes": {
            c.name: {
                **c.to_json(),
                "predicted_accuracy": float(plan.mode(c.name).metrics["accuracy"]),
                "latency_ms_on_device": float(plan.mode(c.name).metrics["latency_ms"]),
                "energy_mj_on_device": float(plan.mode(c.name).metrics["energy_mj"]),
                "reason": plan.mode(c.name).reason,
            }
            for c in checks
        },
        "bundle": str(bundle_dir),
        **served,
    }


def _training_summary(root: Path) -> dict[str, Any]:
    import json

    from search.supernet.artefacts import training_seconds

    path = root / "history.json"
    epochs = json.loads(path.read_text()) if path.is_file() else []
    last = epochs[-1] if epochs else {}
    return {
        "train_seconds": training_seconds(root),
        "largest_val_accuracy": last.get("val_acc_max"),
        "smallest_val_accuracy": last.get("val_acc_min"),
    }


def _serve(bundle_dir: Path, trained: Any, deadline_ms: float, out_dir: Path, progress: bool) -> dict[str, Any]:
    """Replay the demo trace through the runtime, classifying held-out digits; served accuracy per mode."""
    import torch

    from runtime.engine import MultiModeRuntime
    from runtime.session import demo_trace, format_decision, plot_timeline, replay_session
    from runtime.telemetry import write_trace
    from search.supernet.model import resize_input

    test = trained.test or trained.val
    rt = MultiModeRuntime(bundle_dir, deadline_ms=deadline_ms)
    res = rt.input_shape()[-1]
    images = resize_input(torch.from_numpy(np.array(test.x, dtype=np.float32)), res).numpy()
    labels = np.asarray(test.y)
    served: dict[str, list[int]] = {m: [0, 0] for m in rt.modes}

    def request(i: int) -> np.ndarray:
        j = i % len(labels)
        return images[j : j + 1]

    def check(i: int, out: np.ndarray, mode: str) -> None:
        served[mode][0] += 1
        served[mode][1] += int(np.argmax(out[0]) == labels[i % len(labels)])

    def show(d: Any) -> None:
        if d.switch:
            _log(progress, format_decision(d))

    trace = demo_trace()
    write_trace(out_dir / "trace.csv", trace)
    session = replay_session(rt, trace, requests_per_step=3, listener=show, inputs=request, on_result=check)
    picture = plot_timeline(session.decisions, rt.modes, out_dir / "timeline.png")
    m = session.metrics
    return {
        "trace": str(out_dir / "trace.csv"),
        "timeline": picture,
        "switches": [d.to_json() for d in session.decisions if d.switch],
        "served": {
            name: {
                "requests": v["inferences"],
                "accuracy_served": round(100.0 * served[name][1] / served[name][0], 2) if served[name][0] else None,
                "p50_ms_here": v["latency"]["p50_ms"],
                "energy_mj_on_device": v["energy"]["energy_mj"] if v["energy"] else None,
            }
            for name, v in m["modes"].items()
        },
        "failed_requests": m["failed_requests"],
    }


def format_pipeline(r: dict[str, Any]) -> list[str]:
    """Human-readable lines for the pipeline's summary."""
    from runtime.cli_common import format_table

    sn, pr, sr = r["supernet"], r["predictor"], r["search"]
    lines = [
        f"== supernet: {sn['epochs']} epochs{' (quick)' if sn['quick'] else ''}"
        + (
            f", {sn['train_seconds']:.0f} s; validation accuracy largest {100 * sn['largest_val_accuracy']:.1f} %, "
            f"smallest {100 * sn['smallest_val_accuracy']:.1f} %"
            if sn.get("train_seconds") is not None and sn.get("largest_val_accuracy") is not None
            else ""
        ),
        f"== predictor: {pr['archs_measured']} measured subnets; held-out RMSE {pr['rmse']:.2f} points, "
        f"Kendall tau {pr['kendall_tau']:.3f}",
        f"== search: NSGA-II on {r['device']}, {sr['evaluations']:,} evaluations in {sr['seconds']:.2f} s, front of "
        f"{sr['front_size']}, deadline {sr['deadline_ms']:.3f} ms; ModePlan {sr['modeplan']}",
    ]
    rows = [
        (
            name,
            m["predicted_accuracy"],
            m["test_accuracy_onnx"],
            m["latency_ms_on_device"],
            m["energy_mj_on_device"],
            m["params"],
            m["max_abs_diff"],
        )
        for name, m in r["modes"].items()
    ]
    lines.append(
        format_table(("mode", "pred. acc %", "test acc %", f"ms ({r['device']})", "mJ", "params", "|Δ| onnx"), rows)
    )
    lines.append(f"== runtime: bundle {r['bundle']}; trace {r['trace']}")
    for s in r["switches"]:
        lines.append(f"  t={s['t']:6.1f}s  {s['previous']:>8} -> {s['mode']:<8}  {s['reason']}")
    served = [
        (name, v["requests"], v["accuracy_served"], v["p50_ms_here"], v["energy_mj_on_device"])
        for name, v in r["served"].items()
    ]
    lines.append(
        format_table(("mode", "requests", "served acc %", "p50 ms (here)", f"est. mJ ({r['device']})"), served)
    )
    lines.append(f"failed requests: {r['failed_requests']}; timeline: {r['timeline']}")
    return lines
