"""The main job on embedded defaults (``fleetnas demo`` / ``make demo``).

First the hardware view: samples the Once-for-All space, costs every candidate on two device
profiles with the vectorised cost tables, and reports per device the Pareto front of compute
(MACs) against roofline latency, with energy and peak memory; the reference networks on the same
devices; how an operating-point sweep trades latency for energy; and how differently the two
devices rank the same networks. Then the pipeline with real accuracies (``search.supernet.demo``):
train the demo supernet on the embedded MNIST digits, fit the accuracy predictor, search on the
first device, export the ModePlan's three subnets as a bundle and serve it while a telemetry trace
replays. Writes ``demo.json``, ``pareto.png``, ``modeplan.json``, ``bundle/`` and ``timeline.png``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from runtime.energy import estimate_all, optimal_opp
from runtime.hardware import load_device
from runtime.hardware.workload import workload_of
from search.cost.report import cost_netspec
from search.cost.table import SpaceCostTable
from search.pareto import pareto_front
from search.predictors.mlp import spearman
from search.references import REFERENCES
from search.space import MobileNetV3Space, load_space


def _log(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def run_demo(
    space_spec: str = "imagenet",
    device_specs: list[str] | tuple[str, ...] = ("rpi4", "cortex_a76"),
    samples: int = 100_000,
    seed: int = 0,
    show: int = 8,
    out_dir: Path | None = Path("out/demo"),
    progress: bool = True,
    supernet_config: str | Path = "demo",
    archs: int = 300,
    quick: bool = False,
) -> dict[str, Any]:
    """Run the demo; returns the JSON-ready result (also written to ``out_dir/demo.json``)."""
    space = load_space(space_spec)
    if not isinstance(space, MobileNetV3Space):  # pragma: no cover - only one space kind so far
        raise ValueError(f"demo: vectorised costing supports MobileNetV3 spaces, not {space.name}")
    devices = [load_device(spec) for spec in device_specs]
    rng = np.random.default_rng(seed)
    codes = space.sample(samples, rng)
    _log(
        progress,
        f"[demo] sampled {samples:,} architectures of {space.name} ({space.size():.2e} in the space)",
    )
    result: dict[str, Any] = {"space": space.describe(), "samples": samples, "seed": seed, "devices": {}}
    latencies = {}
    fronts = {}
    for device in devices:
        t0 = time.perf_counter()
        table = SpaceCostTable(space, device)
        t1 = time.perf_counter()
        costs = table.evaluate(codes)
        t2 = time.perf_counter()
        _log(
            progress,
            f"[demo] {device.name}: tables in {t1 - t0:.2f} s, costed {samples:,} archs in "
            f"{t2 - t1:.2f} s ({samples / (t2 - t1):,.0f} archs/s)",
        )
        fits = costs["peak_activation_bytes"] <= device.ram_bytes
        idx = np.flatnonzero(fits)
        front = idx[pareto_front(np.column_stack([costs["latency_ms"][idx], -costs["macs"][idx]]))]
        front = front[np.argsort(costs["latency_ms"][front], kind="stable")]  # fastest first
        fronts[device.name] = front
        latencies[device.name] = costs["latency_ms"]
        picks = front[np.unique(np.linspace(0, len(front) - 1, min(show, len(front))).round().astype(int))]
        points = []
        for i in picks:
            arch = space.decode(codes[i])
            points.append(
                {
                    "arch": arch.to_json(),
                    "macs": int(costs["macs"][i]),
                    "params": int(costs["params"][i]),
                    "latency_ms": float(costs["latency_ms"][i]),
                    "energy_mj": float(costs["energy_mj"][i]),
                    "peak_activation_bytes": int(costs["peak_activation_bytes"][i]),
                }
            )
        # DVFS on the middle front point: energy and latency at every OPP, and the energy-optimal
        # OPP for a deadline of twice its fastest latency.
        mid = space.decode(codes[picks[len(picks) // 2]])
        work = workload_of(space.to_netspec(mid, alignment=device.alignment("float32")), device)
        fastest = work.latency_s(device.max_opp.freq_mhz)
        sweep = estimate_all(work, device, deadline_s=2 * fastest)
        choice = optimal_opp(work, device, 2 * fastest)
        refs = {}
        for name, build in REFERENCES.items():
            rep = cost_netspec(build(), device)
            refs[name] = {
                "macs": rep.macs,
                "params": rep.params,
                "latency_ms": rep.latency_ms,
                "energy_mj": rep.energy_mj,
                "peak_activation_bytes": rep.peak_activation_bytes,
            }
        result["devices"][device.name] = {
            "description": device.description,
            "archs_per_second": samples / (t2 - t1),
            "table_seconds": t1 - t0,
            "feasible": int(fits.sum()),
            "front_size": len(front),
            "latency_ms_range": [float(costs["latency_ms"].min()), float(costs["latency_ms"].max())],
            "front": points,
            "dvfs": {
                "deadline_ms": 2 * fastest * 1e3,
                "chosen_freq_mhz": choice.opp.freq_mhz,
                "reason": choice.reason,
                "sweep": [
                    {"freq_mhz": e.freq_mhz, "latency_ms": e.latency_s * 1e3, "energy_mj": e.energy_j * 1e3}
                    for e in sweep
                ],
            },
            "references": refs,
        }
    a, b = (d.name for d in devices)
    common = np.intersect1d(fronts[a], fronts[b])
    result["cross_device"] = {
        "devices": [a, b],
        "latency_spearman": float(spearman(latencies[a], latencies[b])),
        "front_overlap": len(common) / max(1, min(len(fronts[a]), len(fronts[b]))),
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        from search.supernet.demo import supernet_pipeline

        result["pipeline"] = supernet_pipeline(
            devices, out_dir, config=supernet_config, archs=archs, quick=quick, seed=seed, progress=progress
        )
        from runtime.fileio import write_text_atomic

        write_text_atomic(out_dir / "demo.json", json.dumps(result, indent=2) + "\n")
        result["picture"] = _plot(out_dir / "pareto.png", devices, latencies, fronts, codes, space)
        _log(
            progress,
            f"[demo] wrote {out_dir / 'demo.json'}" + (f" and {result['picture']}" if result["picture"] else ""),
        )
    return result


def _plot(
    path: Path,
    devices: list[Any],
    latencies: dict[str, np.ndarray],
    fronts: dict[str, np.ndarray],
    codes: np.ndarray,
    space: MobileNetV3Space,
) -> str | None:
    """Scatter of MACs vs latency per device with the front highlighted; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    macs = SpaceCostTable(space).evaluate(codes)["macs"] / 1e6
    fig, axes = plt.subplots(1, len(devices), figsize=(6 * len(devices), 4.5), squeeze=False)
    for ax, device in zip(axes[0], devices, strict=True):
        lat = latencies[device.name]
        sub = np.random.default_rng(0).choice(len(lat), size=min(len(lat), 20_000), replace=False)
        ax.scatter(lat[sub], macs[sub], s=2, c="0.75", label="sampled (dominated greyed)")
        f = fronts[device.name]
        ax.plot(lat[f], macs[f], "o-", ms=3, c="tab:red", label="Pareto front")
        ax.set_xlabel("roofline latency (ms)")
        ax.set_ylabel("MMACs")
        ax.set_title(f"{device.name}")
        ax.legend(loc="lower right")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return str(path)


def format_demo(d: dict[str, Any]) -> str:
    """The human-readable demo report."""
    from runtime.cli_common import format_table

    lines = [
        f"space {d['space']['name']}: {d['space']['size']:.2e} networks; {d['samples']:,} sampled (seed {d['seed']})"
    ]
    for name, r in d["devices"].items():
        lines += [
            "",
            f"== {name}: {r['description']}",
            f"costed at {r['archs_per_second']:,.0f} archs/s; {r['front_size']} on the MACs-vs-latency front",
        ]
        rows = [
            (
                p["latency_ms"],
                p["macs"] / 1e6,
                p["params"] / 1e6,
                p["energy_mj"],
                p["peak_activation_bytes"] / 2**10,
                p["arch"]["resolution"],
                str(p["arch"]["depths"]),
            )
            for p in r["front"]
        ]
        lines.append(format_table(("ms", "MMACs", "Mparams", "mJ", "peak KiB", "res", "depths"), rows))
        lines.append(
            "references: "
            + "; ".join(f"{k} {v['latency_ms']:.1f} ms {v['energy_mj']:.1f} mJ" for k, v in r["references"].items())
        )
        dv = r["dvfs"]
        lines.append(f"DVFS, middle front point, deadline {dv['deadline_ms']:.1f} ms: {dv['reason']}")
    c = d["cross_device"]
    lines += [
        "",
        f"{c['devices'][0]} vs {c['devices'][1]}: latency rank correlation (Spearman) "
        f"{c['latency_spearman']:.3f}, front overlap {c['front_overlap']:.0%}",
    ]
    if d.get("picture"):
        lines.append(f"picture: {d['picture']}")
    if d.get("pipeline"):
        from search.supernet.demo import format_pipeline

        lines += ["", *format_pipeline(d["pipeline"])]
    return "\n".join(lines)
