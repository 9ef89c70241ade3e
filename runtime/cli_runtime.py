"""``fleetnas runtime run|bench``: serve a bundle with telemetry-driven switching, or measure it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.cli_common import CliError, add_json_flag, emit, format_table

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(subparsers: Subparsers) -> None:
    """Add ``fleetnas runtime run`` and ``fleetnas runtime bench``."""
    p = subparsers.add_parser(
        "runtime",
        help="serve a bundle with telemetry-driven mode switching, or benchmark it",
        description="The on-device runtime: every mode of a bundle loaded and warm, switched atomically "
        "from battery, CPU, memory and thermal telemetry.",
    )
    add_json_flag(p)
    sub = p.add_subparsers(title="actions", metavar="ACTION", dest="action", required=True)

    r = sub.add_parser(
        "run",
        help="serve requests while telemetry drives the mode; print each decision",
        description="Serve requests on a bundle while telemetry drives the mode, printing each decision "
        "(time, signals, mode, reason) and, at the end, per-mode latency, energy and the switch log. "
        "A trace is replayed step by step (deterministic); psutil runs live for --duration seconds.",
        epilog="examples:\n"
        "  fleetnas runtime run --bundle out/demo/bundle --telemetry trace:out/demo/trace.csv\n"
        "  fleetnas runtime run --bundle b.fnb --telemetry psutil --duration 30 --deadline-ms 40",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("--bundle", required=True, help="bundle directory or .fnb archive")
    r.add_argument("--telemetry", default="psutil", help="psutil | trace:FILE (CSV or JSON) [psutil]")
    r.add_argument("--policy", help="policy YAML file or module:attr of a custom policy [built-in rules]")
    r.add_argument("--duration", type=float, default=10.0, help="seconds to run with live telemetry [10]")
    r.add_argument("--interval", type=float, default=0.5, help="seconds between telemetry samples [0.5]")
    r.add_argument("--deadline-ms", type=float, help="the app's latency deadline (SLO signal, DVFS choice)")
    r.add_argument("--requests-per-step", type=int, default=5, help="requests served per trace step [5]")
    r.add_argument("--rate", type=float, help="requests per second with live telemetry [back to back]")
    r.add_argument(
        "--shared-weights", action="store_true", help="one weight buffer for all modes (less memory, slower)"
    )
    r.add_argument("--device", help="device profile for energy estimates [the bundle's]")
    r.add_argument("--changes-only", action="store_true", help="print only decisions that switch mode")
    r.add_argument("--timeline", metavar="PNG", help="also draw signals and mode over time")
    add_json_flag(r, nested=True)
    r.set_defaults(func=_run)

    b = sub.add_parser(
        "bench",
        help="measure per-mode latency, switch latency under load, failed requests and memory",
        description="Per-mode p50/p99 latency (and the same model in a standalone session), switch latency "
        "as request-to-first-inference in the new mode while inference threads run, failed or "
        "mis-routed requests, and resident memory of all modes vs the high mode alone.",
    )
    b.add_argument("--bundle", required=True, help="bundle directory or .fnb archive")
    b.add_argument("--switches", type=int, default=1000, help="switches under load [1000]")
    b.add_argument("--load-threads", type=int, default=2, help="inference threads running while switching [2]")
    b.add_argument("--runs", type=int, default=200, help="latency samples per mode [200]")
    b.add_argument("--shared-weights", action="store_true", help="benchmark the shared-weight layout")
    b.add_argument("--no-memory", action="store_true", help="skip the (subprocess) memory measurement")
    add_json_flag(b, nested=True)
    b.set_defaults(func=_bench)


def _policy(spec: str | None) -> Any:
    if spec is None:
        return None
    from runtime.policy import load_policy

    return load_policy(spec)


def _run(args: argparse.Namespace) -> int:
    from runtime.engine import MultiModeRuntime
    from runtime.session import format_decision, live_session, plot_timeline, replay_session
    from runtime.telemetry import PsutilSource, load_trace

    policy = _policy(args.policy)
    rt = MultiModeRuntime(
        args.bundle, weight_sharing=args.shared_weights, deadline_ms=args.deadline_ms, device=args.device
    )
    quiet = getattr(args, "json", False)

    def show(d: Any) -> None:
        if not quiet and (d.switch or not args.changes_only):
            print(format_decision(d), flush=True)

    kind, _, arg = args.telemetry.partition(":")
    if kind == "trace":
        if not arg:
            raise CliError("--telemetry trace:FILE needs a file")
        samples = load_trace(arg)
        result = replay_session(
            rt,
            samples,
            policy=policy,
            deadline_ms=args.deadline_ms,
            requests_per_step=args.requests_per_step,
            listener=show,
        )
    elif kind == "psutil":
        result = live_session(
            rt,
            PsutilSource(),
            duration_s=args.duration,
            policy=policy,
            interval_s=args.interval,
            deadline_ms=args.deadline_ms,
            rate_hz=args.rate,
            listener=show,
        )
    else:
        raise CliError(f"--telemetry: {args.telemetry!r} is not known; allowed: psutil, trace:FILE")
    payload = result.to_json()
    if args.timeline:
        payload["timeline"] = plot_timeline(result.decisions, rt.modes, Path(args.timeline))
    emit(args, payload, _human_summary)
    return 0


def _human_summary(d: dict[str, Any]) -> str:
    m = d["metrics"]
    rows = []
    for name, s in m["modes"].items():
        lat, energy = s["latency"], s["energy"] or {}
        rows.append(
            (
                name,
                s["inferences"],
                lat["p50_ms"],
                lat["p99_ms"],
                energy.get("energy_mj"),
                energy.get("freq_mhz"),
                energy.get("optimal_freq_mhz"),
            )
        )
    lines = ["", format_table(("mode", "requests", "p50 ms", "p99 ms", "est. mJ", "at MHz", "best MHz"), rows)]
    device = next((s["energy"]["device"] for s in m["modes"].values() if s["energy"]), None)
    if device:
        lines.append(
            f"(latency measured here; energy estimated for {device} with the DVFS model; "
            "best MHz = energy-optimal operating point for --deadline-ms)"
        )
    switches = [s for s in m["switches"]]
    lines.append(f"{len(switches)} switches, {m['failed_requests']} failed requests, now in {m['current_mode']}")
    if d.get("timeline"):
        lines.append(f"timeline: {d['timeline']}")
    return "\n".join(lines)


def _bench(args: argparse.Namespace) -> int:
    import numpy as np

    from runtime.bench import memory_report, mode_latencies, switch_under_load
    from runtime.engine import MultiModeRuntime

    if args.switches < 1 or args.runs < 1:
        raise CliError("--switches and --runs must be >= 1")
    rt = MultiModeRuntime(args.bundle, weight_sharing=args.shared_weights)
    x = np.random.default_rng(0).standard_normal(rt.input_shape()).astype(np.float32)
    lat = mode_latencies(rt, x, runs=args.runs)
    sw = switch_under_load(rt, x, switches=args.switches, load_threads=args.load_threads)
    payload: dict[str, Any] = {
        "layout": "shared" if args.shared_weights else "private",
        "modes": lat,
        **sw.to_json(),
    }
    if not args.no_memory:
        layout = payload["layout"]
        mem = memory_report(args.bundle, layouts=(layout,)).get(layout)
        payload["memory"] = mem
    emit(args, payload, _human_bench)
    return 0


def _human_bench(d: dict[str, Any]) -> str:
    rows = [
        (m, v["p50_ms"], v["p99_ms"], v.get("standalone_p50_ms"), v.get("ratio_to_standalone"))
        for m, v in d["modes"].items()
    ]
    lines = [format_table(("mode", "p50 ms", "p99 ms", "standalone p50", "ratio"), rows)]
    lines.append(
        f"{d['switches']} switches under {d['load_threads']} inference threads: request-to-first-inference "
        f"p50 {d['switch_p50_ms']:.3f} ms, p99 {d['switch_p99_ms']:.3f} ms; "
        f"{d['failed_requests']} failed, {d['misrouted_requests']} mis-routed of {d['load_requests']} requests"
    )
    if d.get("memory"):
        mem = d["memory"]
        lines.append(
            f"resident memory ({d['layout']}): all modes {mem['all_modes_bytes'] / 2**20:.1f} MiB, "
            f"high alone {mem['high_alone_bytes'] / 2**20:.1f} MiB (x{mem['ratio']:.2f})"
        )
    return "\n".join(lines)
