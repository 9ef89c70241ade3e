"""``fleetnas space``, ``fleetnas cost`` and ``fleetnas demo``: the search layer's subcommands.

Each ``register_*`` function adds one subcommand to the ``fleetnas`` parser (see
``runtime.cli``). The handlers are numpy-only; matplotlib (for the demo's picture) is imported
inside the handler and skipped, with a note, when it is missing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.cli_common import CliError, add_json_flag, emit, format_table
from runtime.fileio import write_text_atomic

if TYPE_CHECKING:
    from runtime.hardware import DeviceProfile
    from search.cost.report import CostReport

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


# ---- fleetnas space --------------------------------------------------------------------------
def register_space(subparsers: Subparsers) -> None:
    """Add ``fleetnas space``: describe a search space and optionally sample from it."""
    p = subparsers.add_parser(
        "space",
        help="describe a search space (size, choices) and sample architectures from it",
        description="Describe a MobileNetV3 search space — its choices, encoding length and exact size — "
        "and optionally sample architectures with their MACs and parameters.",
        epilog="examples:\n  fleetnas space\n  fleetnas space --space mnist --sample 5 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--space", default="imagenet", help="preset (imagenet, mnist) or a space YAML file [imagenet]")
    p.add_argument("--sample", type=int, default=0, metavar="N", help="also sample N architectures [0]")
    p.add_argument("--seed", type=int, default=0, help="random seed for --sample [0]")
    add_json_flag(p)
    p.set_defaults(func=_space)


def _space(args: argparse.Namespace) -> int:
    import numpy as np

    from search.cost.table import SpaceCostTable
    from search.space import load_space

    space = load_space(args.space)
    payload: dict[str, Any] = {**space.describe(), "size": space.size()}
    if args.sample < 0:
        raise CliError(f"--sample: must be >= 0, got {args.sample}")
    if args.sample:
        codes = space.sample(args.sample, np.random.default_rng(args.seed))
        costs = SpaceCostTable(space).evaluate(codes)  # type: ignore[arg-type]
        payload["samples"] = [
            {"arch": arch.to_json(), "encoding": code.tolist(), "macs": int(m), "params": int(n)}
            for arch, code, m, n in zip(space.decode_batch(codes), codes, costs["macs"], costs["params"], strict=True)
        ]

    def human(d: dict[str, Any]) -> str:
        lines = [
            f"space {d['name']}: {d['size']:.3e} networks, {d['genes']}-gene encoding",
            f"  resolutions {d['resolutions']}, widths {d['widths']}",
            f"  {d['stages']} stages (channels {d['stage_channels']}, strides {d['stage_strides']}, "
            f"stem stride {d['stem_stride']})",
            f"  per stage depth {d['depths']}; per block kernel {d['kernels']}, expand {d['expands']}",
        ]
        for s in d.get("samples", []):
            a = s["arch"]
            lines.append(
                f"  r{a['resolution']} w{a['width']} d{a['depths']} -> {s['macs'] / 1e6:.1f}M MACs, "
                f"{s['params'] / 1e6:.2f}M params"
            )
        return "\n".join(lines)

    emit(args, payload, human)
    return 0


# ---- fleetnas cost ---------------------------------------------------------------------------
def register_cost(subparsers: Subparsers) -> None:
    """Add ``fleetnas cost``: MACs, parameters, memory, latency and energy of one network."""
    p = subparsers.add_parser(
        "cost",
        help="cost one network: MACs, params, peak memory, roofline latency, DVFS energy",
        description="Cost one network — a reference, a NetSpec JSON file or an architecture of a space — "
        "with the analytic models: MACs, FLOPs, parameters, bytes moved, peak activation memory "
        "(MCUNet's definition), critical path, and on a device the roofline latency and the DVFS "
        "energy per inference at an operating point.",
        epilog="examples:\n"
        "  fleetnas cost --reference mobilenetv3_large_100 --device rpi4 --json\n"
        "  fleetnas cost --netspec my_net.json --device my_board.yaml --per-layer\n"
        "  fleetnas cost --arch arch.json --space imagenet --device rk3399_big --freq 1008",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--reference",
        metavar="NAME",
        help="a reference network (mobilenetv2_100, mobilenetv3_large_100, ...)",
    )
    what.add_argument("--netspec", metavar="FILE", help="a NetSpec JSON file (format: runtime/netspec.py docstring)")
    what.add_argument("--arch", metavar="JSON|FILE", help="an architecture of --space, as JSON text or a file")
    p.add_argument("--space", default="imagenet", help="space of --arch: preset or YAML file [imagenet]")
    p.add_argument("--device", metavar="NAME|FILE", help="device catalogue name or profile YAML (adds latency, energy)")
    p.add_argument("--dtype", choices=("float32", "float16", "int8"), help="numeric type [the network's own]")
    p.add_argument("--freq", type=float, metavar="MHZ", help="operating point frequency [the device's fastest]")
    p.add_argument(
        "--deadline-ms",
        type=float,
        help="add idle energy up to this deadline and pick the energy-optimal OPP",
    )
    p.add_argument("--per-layer", action="store_true", help="include the per-layer breakdown")
    p.add_argument("--save-netspec", metavar="FILE", help="also write the network's NetSpec JSON here")
    add_json_flag(p)
    p.set_defaults(func=_cost)


def _load_device(spec: str) -> DeviceProfile:
    from runtime.hardware import load_device

    return load_device(spec)


def _resolve_net(args: argparse.Namespace, alignment: int) -> Any:
    from runtime.netspec import NetSpec
    from search.arch import Arch
    from search.references import reference
    from search.space import load_space

    if args.reference:
        try:
            return reference(args.reference)
        except KeyError as exc:
            raise CliError(f"--reference: {exc.args[0]}") from None
    if args.netspec:
        return NetSpec.load(args.netspec)
    text = args.arch
    path = Path(text)
    source = "--arch"
    if not text.lstrip().startswith("{"):
        if not path.exists():
            raise CliError(f"--arch: {text} is neither JSON text nor an existing file")
        text, source = path.read_text(), str(path)
    try:
        arch = Arch.from_json(json.loads(text))
    except json.JSONDecodeError as exc:
        raise CliError(f"{source}: not valid JSON ({exc})") from None
    return load_space(args.space).to_netspec(arch, alignment=alignment)


def _cost(args: argparse.Namespace) -> int:
    from runtime.energy import optimal_opp
    from runtime.hardware.workload import workload_of
    from search.cost.report import cost_netspec

    device = _load_device(args.device) if args.device else None
    dtype = args.dtype
    alignment = device.alignment(dtype or "float32") if device is not None else 8
    net = _resolve_net(args, alignment)
    if args.save_netspec:
        write_text_atomic(Path(args.save_netspec), json.dumps(net.to_json(), indent=2) + "\n")
    opp = None
    choice_note = None
    if device is not None:
        if args.freq is not None:
            opp = device.opp_at(args.freq)
        elif args.deadline_ms is not None:
            choice = optimal_opp(workload_of(net, device, dtype or net.dtype), device, args.deadline_ms / 1e3)
            opp = choice.opp
            choice_note = choice.reason
    elif args.freq is not None or args.deadline_ms is not None:
        raise CliError("--freq and --deadline-ms need --device")
    report = cost_netspec(
        net, device, dtype, opp=opp, deadline_s=None if args.deadline_ms is None else args.deadline_ms / 1e3
    )
    payload = report.to_json(per_layer=args.per_layer)
    if choice_note:
        payload["opp_choice"] = choice_note
    emit(args, payload, lambda d: _human_cost(d, report))
    return 0


def _human_cost(d: dict[str, Any], report: CostReport) -> str:
    lines = [
        f"{d['name']} ({d['dtype']}): {d['macs'] / 1e6:.1f}M MACs, {d['params'] / 1e6:.3f}M params, "
        f"{d['weight_bytes'] / 2**20:.2f} MiB weights",
        f"  peak activation memory {d['peak_activation_bytes'] / 2**10:.1f} KiB, "
        f"{d['bytes_moved'] / 2**20:.1f} MiB moved, {d['arithmetic_intensity']:.1f} FLOP/byte, "
        f"critical path {d['critical_path_layers']} layers",
    ]
    if d.get("device"):
        lines.append(
            f"  on {d['device']} @ {d['freq_mhz']:.0f} MHz: {d['latency_ms']:.2f} ms, "
            f"{d['energy_mj']:.2f} mJ per inference ({d['power_w']:.2f} W)"
        )
    if d.get("opp_choice"):
        lines.append(f"  operating point: {d['opp_choice']}")
    if isinstance(d["layers"], list):
        rows = [
            (
                r.name,
                r.op,
                "x".join(map(str, r.out_shape)),
                r.macs / 1e6,
                r.params,
                r.arithmetic_intensity,
                r.latency_ms,
                r.bound,
            )
            for r in report.layers
        ]
        lines.append(format_table(("layer", "op", "output", "MMACs", "params", "FLOP/B", "ms", "bound"), rows))
    return "\n".join(lines)


# ---- fleetnas demo ---------------------------------------------------------------------------
def register_demo(subparsers: Subparsers) -> None:
    """Add ``fleetnas demo``: the main job on embedded defaults."""
    p = subparsers.add_parser(
        "demo",
        help="the main job on embedded defaults: device trade-offs, supernet -> search -> bundle -> adaptive runtime",
        description="The whole loop on embedded defaults. First the hardware view: sample the Once-for-All "
        "MobileNetV3 space, cost every candidate on two device profiles with the vectorised cost models, and show "
        "the MACs-vs-latency front per device with energy and peak memory, and how differently the two devices rank "
        "the same networks. Then with real accuracies: train the demo supernet on the embedded 5,000 MNIST digits "
        "(about a minute on 2 cores; reused on the next run), measure a sample of its subnets and fit the accuracy "
        "predictor, run NSGA-II on the first device, export the high/balanced/low subnets of the ModePlan with "
        "their trained weights into a bundle, and serve it with the multi-mode runtime while a battery/CPU/thermal "
        "trace replays — classifying held-out digits, so the served accuracy per mode is measured.",
        epilog="examples:\n  fleetnas demo\n  fleetnas demo --quick --out /tmp/demo        # smoke run: tiny training"
        "\n  fleetnas demo --samples 200000 --devices jetson_nano orin_nx --supernet-config long --out out/demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--samples", type=int, default=100_000, help="architectures to sample and cost [100000]")
    p.add_argument(
        "--devices",
        nargs=2,
        default=["rpi4", "cortex_a76"],
        metavar="DEVICE",
        help="two devices [rpi4 cortex_a76]",
    )
    p.add_argument("--space", default="imagenet", help="preset or space YAML [imagenet]")
    p.add_argument("--seed", type=int, default=0, help="random seed [0]")
    p.add_argument("--show", type=int, default=8, help="front points to show per device [8]")
    p.add_argument("--out", default="out/demo", help="directory for every output and the cached supernet [out/demo]")
    p.add_argument(
        "--supernet-config", default="demo", metavar="FILE.yaml|PRESET", help="supernet training config [demo]"
    )
    p.add_argument("--archs", type=int, default=300, help="subnets to measure for the accuracy predictor [300]")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 epoch per phase, 6 batches, 24 subnets")
    add_json_flag(p)
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from search.demo import run_demo

    if args.samples < 2:
        raise CliError(f"--samples: need at least 2, got {args.samples}")
    if args.archs < 10:
        raise CliError(f"--archs: need at least 10 subnets to fit and check the predictor, got {args.archs}")
    result = run_demo(
        space_spec=args.space,
        device_specs=args.devices,
        samples=args.samples,
        seed=args.seed,
        show=args.show,
        out_dir=Path(args.out),
        progress=not args.json,
        supernet_config=args.supernet_config,
        archs=args.archs,
        quick=args.quick,
    )
    from search.demo import format_demo

    emit(args, result, format_demo)
    return 0


# ---- fleetnas search -------------------------------------------------------------------------
def register_search(subparsers: Subparsers) -> None:
    """Add ``fleetnas search``: a configured multi-objective search writing a front and a ModePlan."""
    p = subparsers.add_parser(
        "search",
        help="run a multi-objective architecture search; write the front, plots, a ModePlan and a report",
        description="Run a hardware-aware multi-objective search configured by a YAML file (space, device, "
        "objectives, constraints, strategy, budget, mode rules; see search/config.py). Progress is printed per "
        "generation; a checkpoint is written after each one, so Ctrl-C loses nothing and --resume continues.",
        epilog="examples:\n"
        "  fleetnas search --out out/search                   # embedded defaults: NSGA-II, MobileNetV3, rpi4\n"
        "  fleetnas search --config my_search.yaml --out out/s\n"
        "  fleetnas search --config my_search.yaml --out out/s --resume",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE.yaml", help="search configuration [embedded defaults]")
    p.add_argument("--out", required=True, help="output directory (front.json, modeplan.json, plots, report)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    add_json_flag(p)
    p.set_defaults(func=_search)


def _search(args: argparse.Namespace) -> int:
    import sys

    from search.config import SearchConfig
    from search.job import run_search

    cfg = SearchConfig.load(args.config) if args.config else SearchConfig()
    if args.resume and not (Path(args.out) / "checkpoint.npz").exists():
        raise CliError(f"--resume: no checkpoint in {args.out}")
    try:
        report = run_search(cfg, args.out, resume=args.resume, progress=not args.json)
    except KeyboardInterrupt:
        print(
            f"fleetnas: interrupted; continue with: fleetnas search --config {args.config or '…'} "
            f"--out {args.out} --resume",
            file=sys.stderr,
        )
        raise

    def human(r: dict[str, Any]) -> str:
        return (
            (Path(args.out) / "report.md").read_text()
            + f"\nwrote {args.out}/: "
            + ", ".join(sorted(f.name for f in Path(args.out).iterdir() if not f.name.startswith(".")))
        )

    emit(args, report, human)
    return 0
