"""A search job: configuration → problem → strategy run → front, ModePlan, plots and report.

``run_search`` is what ``fleetnas search --config FILE --out DIR`` runs. It writes into ``DIR``:
``front.json`` (the feasible non-dominated candidates with their archs and metrics),
``modeplan.json``, ``pareto.png`` (2 objectives) or ``parallel.png`` (3 or more),
``report.json`` and ``report.md``, and ``checkpoint.npz`` after every generation (``--resume``
continues from it).
"""

from __future__ import annotations

import inspect
import json
import sys
import time
from collections.abc import Callable, Mapping
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np

from search.config import ConfigError, SearchConfig
from search.problem import Constraint, Objective, SpaceProblem

STRATEGIES: Mapping[str, str] = {
    "random": "search.strategies.random_search:RandomSearch",
    "evolution": "search.strategies.evolution:RegularizedEvolution",
    "nsga2": "search.strategies.nsga2:NSGA2",
    "bayesopt": "search.strategies.bayesopt:BayesOpt",
}


def strategy_class(name: str) -> type:
    """The strategy class registered under ``name``."""
    if name not in STRATEGIES:
        raise ConfigError(f"field 'strategy.name': {name!r} is not known; allowed: {', '.join(STRATEGIES)}")
    module, _, attr = STRATEGIES[name].partition(":")
    return getattr(import_module(module), attr)  # type: ignore[no-any-return]


def _strategy_kwargs(cls: type, options: Mapping[str, Any], source: str) -> dict[str, Any]:
    sig = inspect.signature(cls)
    allowed = [p for p in sig.parameters if p not in ("problem", "constraints")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{source}: field 'strategy': unknown option(s) {unknown} for {cls.__name__}; allowed: {', '.join(allowed)}"
        )
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}


def build_problem(cfg: SearchConfig) -> tuple[Any, SpaceProblem, Any, Any]:
    """(space, problem, device, constraint handler or None) for a configuration."""
    from runtime.hardware import load_device
    from search.constraints import ProgressiveConstraint, ProgressiveTightening, mnas_reward_metric, weighted_latency
    from search.cost.table import SpaceCostTable
    from search.space import MobileNetV3Space, load_space

    space = load_space(cfg.space)
    device = load_device(cfg.device)
    evaluators: list[Callable[[np.ndarray], Mapping[str, np.ndarray]]] = []
    cost: Callable[[np.ndarray], Mapping[str, np.ndarray]]
    measured = None
    if isinstance(space, MobileNetV3Space):
        cost = SpaceCostTable(space, device).evaluate
        if device.measured is not None:
            # a profile written by `fleetnas profile`: its latency predictor adds latency_ms_measured
            from search.predictors.latency import measured_predictor

            measured = measured_predictor(device, space)
        if cfg.platforms:
            if measured is not None:
                from search.predictors.latency import DeviceScaledCost

                # each platform's latency and energy scaled from the latency measured here
                scaled = {name: DeviceScaledCost(measured, device, load_device(name)) for name in cfg.platforms}
                evaluators.append(cost)  # macs, params, ... of the measured device
                cost = weighted_latency(scaled, cfg.platforms)
            else:
                tables = {name: SpaceCostTable(space, load_device(name)).evaluate for name in cfg.platforms}
                cost = weighted_latency(tables, cfg.platforms)
    else:
        cost = _nasbench_cost(space, device)
    evaluators.append(cost)
    if measured is not None:
        evaluators.append(measured.as_evaluator("latency_ms_measured"))
    if "tabular" in cfg.accuracy:
        from search.evaluators.tabular import TabularEvaluator

        tab = cfg.accuracy["tabular"]
        table = TabularEvaluator.from_csv(
            tab["path"], dataset=tab.get("dataset", "cifar10"), split=tab.get("split", "val")
        )
        evaluators.append(table)  # callable: codes -> {"accuracy": ...}, counting queries
    if cfg.mnas:
        # the reward needs an accuracy: the table's if one is configured, else the MACs proxy;
        # with several platforms it targets their weighted latency
        accuracy = "accuracy" if "tabular" in cfg.accuracy else "macs"
        latency = "weighted_latency_ms" if cfg.platforms and isinstance(space, MobileNetV3Space) else "latency_ms"
        evaluators = [
            mnas_reward_metric(
                evaluators, cfg.mnas["target_ms"], cfg.mnas.get("w", -0.07), accuracy=accuracy, latency=latency
            )
        ]
    constraints = []
    schedules = []
    for c in cfg.constraints:
        upper = c.max is not None
        limit = c.max if upper else c.min
        assert limit is not None  # the config requires one of max / min
        constraint = Constraint(c.metric, limit, upper)
        constraints.append(constraint)
        if c.tighten_from is not None:
            schedules.append(ProgressiveConstraint(constraint, c.tighten_from, c.tau))
    problem = SpaceProblem(space, evaluators, [Objective(o.metric, o.direction) for o in cfg.objectives], constraints)
    handler = ProgressiveTightening(problem, schedules) if schedules else None
    return space, problem, device, handler


def _nasbench_cost(space: Any, device: Any) -> Callable[[np.ndarray], Mapping[str, np.ndarray]]:
    from search.evaluators.tabular import NasBench201CostTable

    return NasBench201CostTable(space, device).evaluate  # type: ignore[no-any-return]


def _progress_printer(enabled: bool, names: list[str], directions: list[str]) -> Callable[[Any], None]:
    def show(stats: Any) -> None:
        if not enabled:
            return
        best = ", ".join(
            f"{n} {(-b if d == 'max' else b):.4g}" for n, d, b in zip(names, directions, stats.best, strict=True)
        )
        rate = stats.n_evals / stats.seconds if stats.seconds > 0 else float("nan")
        print(
            f"[search] gen {stats.generation:4d}  evals {stats.n_evals:8,d}  feasible {stats.feasible_fraction:5.1%}"
            f"  best: {best}  ({rate:,.0f} evals/s)",
            file=sys.stderr,
            flush=True,
        )

    return show


def run_search(cfg: SearchConfig, out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run the configured search; write outputs into ``out_dir``; returns the report."""
    from runtime.fileio import write_text_atomic
    from search.modes import ModeSelectionError, select_modes
    from search.pareto import hypervolume, pareto_front
    from search.plots import plot_convergence, plot_front_2d, plot_parallel
    from search.strategies.base import run

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    space, problem, device, handler = build_problem(cfg)
    options = {k: v for k, v in cfg.strategy.items() if k != "name"}
    cls = strategy_class(str(cfg.strategy["name"]))
    kwargs = _strategy_kwargs(cls, options, cfg.source)
    if handler is not None:
        if "constraints" not in inspect.signature(cls).parameters:
            raise ConfigError(
                f"{cfg.source}: field 'constraints': progressive tightening needs a strategy that takes a "
                f"constraint handler (nsga2); {cfg.strategy['name']} does not"
            )
        kwargs["constraints"] = handler
    strategy = cls(problem, **kwargs)
    names = [o.metric for o in cfg.objectives]
    directions = [o.direction for o in cfg.objectives]
    checkpoint = out / "checkpoint.npz"
    t0 = time.perf_counter()
    result = run(
        strategy,
        max_evals=cfg.budget.get("evaluations"),
        max_generations=cfg.budget.get("generations"),
        checkpoint=checkpoint,
        resume=resume,
        progress=_progress_printer(progress, names, directions),
    )
    seconds = time.perf_counter() - t0
    X, F, G = result.X, result.F, result.G
    # de-duplicate (strategies may re-evaluate a candidate), keep feasible, take the front
    X_unique, first = np.unique(problem.canonical(X), axis=0, return_index=True)
    F_u, G_u = F[first], G[first]
    feasible = np.all(G_u <= 0, axis=1) if G_u.size else np.ones(len(F_u), dtype=bool)
    Xf, Ff = X_unique[feasible], F_u[feasible]
    front_idx = pareto_front(Ff) if len(Ff) else np.array([], dtype=int)
    Xp = Xf[front_idx]
    ev = problem.evaluate(Xp) if len(Xp) else None
    archs = [a.to_json() for a in space.decode_batch(Xp)] if len(Xp) else []
    metrics = {k: np.asarray(v) for k, v in (ev.metrics.items() if ev else {}.items())}
    order = np.argsort(ev.F[:, 0]) if ev is not None else np.array([], dtype=int)
    front = [{"arch": archs[i], "metrics": {k: float(v[i]) for k, v in metrics.items() if v.ndim == 1}} for i in order]
    report: dict[str, Any] = {
        "config": cfg.to_json(),
        "space": space.describe() | {"size": str(space.size())},
        "device": device.name,
        "strategy": {"name": cfg.strategy["name"], **{k: v for k, v in kwargs.items() if k != "constraints"}},
        "evaluations": len(X),
        "unique_evaluations": len(X_unique),
        "feasible": int(feasible.sum()),
        "front_size": len(front),
        "seconds": seconds,
        "evaluations_per_second": len(X) / seconds if seconds > 0 else None,
        "stopped_by": result.stopped_by,
        "generations": len(result.history.generations),
    }
    if len(Ff):
        ref = Ff.max(axis=0) + 0.1 * np.maximum(np.ptp(Ff, axis=0), 1e-12)
        report["hypervolume"] = {
            "value": hypervolume(Ff[front_idx], ref),
            "reference_point": ref.tolist(),
            "note": "minimisation form; reference = worst feasible value + 10 % of the range",
        }
    write_text_atomic(
        out / "front.json",
        json.dumps({"objectives": [o.__dict__ for o in cfg.objectives], "front": front}, indent=2) + "\n",
    )
    chosen: dict[str, int] | None = None
    if front:
        rules = _mode_rules(cfg)
        try:
            plan = select_modes(
                {k: v[order] for k, v in metrics.items() if v.ndim == 1},
                rules,
                archs=[archs[i] for i in order],
                device=device.name,
            )
            plan.save(out / "modeplan.json")
            report["modeplan"] = plan.to_json()
            chosen = {m.name: int(m.index) for m in plan.modes}
        except ModeSelectionError as exc:
            report["modeplan_error"] = str(exc)
    raw = (
        np.column_stack([-Ff[:, j] if d == "max" else Ff[:, j] for j, d in enumerate(directions)]) if len(Ff) else None
    )
    pictures = []
    if raw is not None and len(raw):
        # plots mark chosen modes by index into the plotted points: map front order back to Ff rows
        chosen_rows = {k: int(front_idx[order[v]]) for k, v in chosen.items()} if chosen else None
        if len(names) == 1:
            gens = result.history.generations
            sign = -1.0 if directions[0] == "max" else 1.0
            pictures.append(
                plot_convergence(
                    [g["n_evals"] for g in gens],
                    [sign * g["best"][0] for g in gens],
                    names[0],
                    directions[0],
                    out / "convergence.png",
                    title=f"{cfg.strategy['name']} on {space.name} / {device.name}",
                )
            )
        elif len(names) == 2:
            pictures.append(
                plot_front_2d(
                    raw,
                    names,
                    directions,
                    out / "pareto.png",
                    chosen=chosen_rows,
                    title=f"{cfg.strategy['name']} on {space.name} / {device.name}",
                )
            )
        else:
            mask = np.zeros(len(raw), dtype=bool)
            mask[front_idx] = True
            pictures.append(
                plot_parallel(raw, names, directions, out / "parallel.png", front_mask=mask, chosen=chosen_rows)
            )
    report["pictures"] = [str(p) for p in pictures if p]
    write_text_atomic(out / "report.json", json.dumps(report, indent=2, default=_json_default) + "\n")
    write_text_atomic(out / "report.md", _markdown(report))
    return report


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _mode_rules(cfg: SearchConfig) -> Any:
    from search.modes import ModeRules

    opts = dict(cfg.modes)
    if "accuracy" not in opts:
        opts["accuracy"] = next((o.metric for o in cfg.objectives if o.direction == "max"), "accuracy")
    if "efficiency_exponents" in opts:
        opts["efficiency_exponents"] = tuple(opts["efficiency_exponents"])
    return ModeRules(**opts)


def _markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# Search report: {r['strategy']['name']} on {r['space']['name']} for {r['device']}",
        "",
        f"- evaluations: {r['evaluations']:,} ({r['unique_evaluations']:,} distinct, {r['feasible']:,} feasible), "
        f"{r['generations']} generations, {r['seconds']:.2f} s"
        + (f" ({r['evaluations_per_second']:,.0f} evals/s)" if r.get("evaluations_per_second") else ""),
        f"- front: {r['front_size']} non-dominated feasible candidates; stopped by {r['stopped_by']}",
    ]
    if "hypervolume" in r:
        lines.append(f"- hypervolume (minimisation form): {r['hypervolume']['value']:.6g}")
    plan = r.get("modeplan")
    if plan:
        lines += ["", "## Operating points", "", "| mode | reason | metrics |", "|---|---|---|"]
        rules = plan["rules"]
        keys = [rules["accuracy"], rules["latency"], rules["energy"], rules["memory"], "params"]
        for m in plan["modes"]:
            shown = ", ".join(f"{k} {m['metrics'][k]:.4g}" for k in dict.fromkeys(keys) if k in m["metrics"])
            lines.append(f"| {m['name']} | {m['reason']} | {shown} |")
    elif r.get("modeplan_error"):
        lines += ["", f"No ModePlan: {r['modeplan_error']}"]
    for p in r.get("pictures", []):
        lines += ["", f"![front]({Path(p).name})"]
    return "\n".join(lines) + "\n"
