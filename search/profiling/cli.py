"""``fleetnas profile``: measure this machine for a search space and write a measured device profile."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from runtime.cli_common import CliError, add_json_flag, emit

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def register(subparsers: Subparsers) -> None:
    """Add ``fleetnas profile``: time every block of a space with ONNX Runtime and write a DeviceProfile."""
    p = subparsers.add_parser(
        "profile",
        help="measure this device: per-block latency table, roofline, latency predictor -> profile YAML",
        description=(
            "Measure the machine this runs on with ONNX Runtime, with the runtime's own session settings:\n"
            "  - the fixed cost of one session call;\n"
            "  - the roofline: peak FLOP/s of a GEMM and bandwidth of a large copy;\n"
            "  - every block configuration the space can produce (kernel x expand x input size x channels\n"
            "    x stride x squeeze-excite x activation), each a small ONNX graph: warm-up, interleaved\n"
            "    rounds, median after MAD outlier rejection;\n"
            "  - a few random whole networks, to fit a latency predictor on top of the block table.\n"
            "Writes OUT (a DeviceProfile with a 'measured' section), OUT's .lut.json (the lookup table)\n"
            "and .predictor.json. Progress goes to stderr; an interrupted run continues with --resume.\n"
            "A search config with `device: OUT` gets the metric latency_ms_measured from it."
        ),
        epilog="examples:\n"
        "  fleetnas profile --out my_board.yaml --quick\n"
        "  fleetnas profile --out my_board.yaml --space mnist\n"
        "  fleetnas profile --out my_board.yaml --space my_space.yaml --resume",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, metavar="FILE.yaml", help="profile to write (tables go next to it)")
    p.add_argument("--quick", action="store_true", help="fewer rounds and networks (minutes on 2 cores)")
    p.add_argument("--space", default="imagenet", help="preset (imagenet, mnist) or a space YAML file [imagenet]")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT's .partial.json")
    p.add_argument("--name", help="device name in the profile [measured_<hostname>]")
    p.add_argument(
        "--calibrate",
        type=int,
        metavar="N",
        help="random whole networks to time for the predictor [40; 12 with --quick; 0 = LUT only]",
    )
    p.add_argument(
        "--threading",
        choices=("no_spin", "global", "default"),
        default="no_spin",
        help="ONNX Runtime threading strategy, as the runtime's ThreadingConfig [no_spin]",
    )
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = ONNX Runtime's choice) [0]")
    p.add_argument(
        "--alignment",
        type=int,
        help="channel multiple the networks are built with [fp32 SIMD lanes here: 16 AVX-512, 8 AVX2, 4 NEON]",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="on a shared machine: before each timing round wait up to SECONDS for other jobs to go quiet [0]",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (weights, inputs, networks) [0]")
    add_json_flag(p)
    p.set_defaults(func=_profile)


def _profile(args: argparse.Namespace) -> int:
    from runtime.engine import ThreadingConfig
    from search.profiling.run import profile_device, stderr_progress
    from search.profiling.store import StoreError
    from search.space import MobileNetV3Space, load_space

    space = load_space(args.space)
    if not isinstance(space, MobileNetV3Space):
        raise CliError(f"--space: {args.space!r} is not a MobileNetV3 space; allowed: imagenet, mnist or a space YAML")
    if args.calibrate is not None and args.calibrate < 0:
        raise CliError(f"--calibrate: must be >= 0, got {args.calibrate}")
    if args.alignment is not None and args.alignment < 1:
        raise CliError(f"--alignment: must be >= 1, got {args.alignment}")
    if args.threads < 0:
        raise CliError(f"--threads: must be >= 0, got {args.threads}")
    try:
        result = profile_device(
            args.out,
            space,
            space_spec=args.space,
            quick=args.quick,
            resume=args.resume,
            name=args.name,
            calibrate=args.calibrate,
            alignment=args.alignment,
            threading_config=ThreadingConfig(args.threading, args.threads),
            seed=args.seed,
            quiet_wait_s=args.quiet_wait,
            progress=stderr_progress(),
        )
    except StoreError as exc:
        raise CliError(str(exc)) from None
    measured = result.profile.measured
    payload: dict[str, Any] = {
        "profile": str(result.profile_path),
        "lut": str(result.lut_path),
        "predictor": str(result.predictor_path) if result.predictor_path else None,
        "device": result.profile.name,
        "blocks": result.blocks,
        "networks": result.networks,
        "seconds": round(result.seconds, 1),
        "roofline": dict(measured.roofline) if measured else None,
        "utilisation": dict(result.profile.utilisation),
    }

    def human(d: dict[str, Any]) -> str:
        roof = d["roofline"] or {}
        return "\n".join(
            [
                f"profiled {d['device']}: {d['blocks']} blocks, {d['networks']} networks in {d['seconds']} s",
                f"  roofline {roof.get('peak_gflops', 0):.1f} GFLOP/s, {roof.get('bandwidth_gbps', 0):.2f} GB/s",
                f"  profile   {d['profile']}",
                f"  table     {d['lut']}",
                f"  predictor {d['predictor'] or '-'}",
            ]
        )

    emit(args, payload, human)
    return 0


__all__ = ["register"]
