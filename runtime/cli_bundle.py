"""``fleetnas bundle``: build, verify and pack bundles (base install: no torch, no flwr)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.cli_common import CliError, add_json_flag, emit, format_table

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

DEFAULT_MODE_NAMES = {1: ("high",), 2: ("high", "low"), 3: ("high", "balanced", "low")}


def register(subparsers: Subparsers) -> None:
    """Add ``fleetnas bundle build|verify|pack``."""
    p = subparsers.add_parser(
        "bundle",
        help="build, verify and pack deployable bundles (manifest + one ONNX model per mode)",
        description="Bundles are what a device runs: a manifest and one ONNX model per mode "
        "(most capable first), with weights shared between modes stored once.",
    )
    add_json_flag(p)
    sub = p.add_subparsers(title="actions", metavar="ACTION", dest="action", required=True)

    b = sub.add_parser(
        "build",
        help="build a bundle from NetSpec files (random or given weights until the supernet lands)",
        description="Build a bundle from NetSpec JSON files, one per mode, most capable first. With weight "
        "sharing (default) the modes are subnets of one backbone matched by layer name, stored once.",
        epilog="examples:\n"
        "  fleetnas bundle build --netspec big.json --netspec mid.json --netspec small.json --out my_bundle\n"
        "  fleetnas bundle build --mode fast=small.json --mode exact=big.json --no-share --out b.fnb",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument(
        "--netspec",
        action="append",
        default=[],
        metavar="FILE",
        help="a mode's NetSpec (repeat; named high/balanced/low)",
    )
    b.add_argument("--mode", action="append", default=[], metavar="NAME=FILE", help="a named mode's NetSpec (repeat)")
    b.add_argument("--out", required=True, help="bundle directory, or a .fnb file for the single-file archive")
    b.add_argument(
        "--no-share", action="store_true", help="give every mode private weights instead of one shared backbone"
    )
    b.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="NAME|FILE",
        help="add expected latency/energy for this device (repeat)",
    )
    b.add_argument(
        "--target-device", metavar="NAME|FILE", help="embed this device profile for on-device energy estimates"
    )
    b.add_argument("--seed", type=int, default=0, help="seed of the random weights [0]")
    b.add_argument("--version", default="0.1.0", dest="bundle_version", help="bundle version string [0.1.0]")
    add_json_flag(b, nested=True)
    b.set_defaults(func=_build)

    v = sub.add_parser(
        "verify",
        help="check a bundle: manifest, hashes, models",
        description="Verify a bundle directory or archive: manifest schema, sha256 of every file, "
        "each model's inputs/outputs against the manifest.",
    )
    v.add_argument("path", help="bundle directory or .fnb archive")
    add_json_flag(v, nested=True)
    v.set_defaults(func=_verify)

    k = sub.add_parser(
        "pack",
        help="write a bundle directory as one .fnb archive",
        description="Pack a verified bundle directory into a single uncompressed archive.",
    )
    k.add_argument("path", help="bundle directory")
    k.add_argument("archive", help="output .fnb file")
    add_json_flag(k, nested=True)
    k.set_defaults(func=_pack)


def _parse_modes(args: argparse.Namespace) -> list[tuple[str, Path]]:
    if args.netspec and args.mode:
        raise CliError("use either --netspec (named high/balanced/low) or --mode NAME=FILE, not both")
    if args.mode:
        out = []
        for item in args.mode:
            name, sep, file = item.partition("=")
            if not sep or not name or not file:
                raise CliError(f"--mode: expected NAME=FILE, got {item!r}")
            out.append((name, Path(file)))
        return out
    if not args.netspec:
        raise CliError("give at least one mode: --netspec FILE (repeat) or --mode NAME=FILE")
    names = DEFAULT_MODE_NAMES.get(len(args.netspec)) or tuple(f"mode{i}" for i in range(len(args.netspec)))
    return [(n, Path(f)) for n, f in zip(names, args.netspec, strict=True)]


def _build(args: argparse.Namespace) -> int:
    from runtime.bundle_build import ModeSpec, build_bundle
    from runtime.hardware import load_device
    from runtime.netspec import NetSpec

    modes = [ModeSpec(name, NetSpec.load(path)) for name, path in _parse_modes(args)]
    devices = [load_device(d) for d in args.device]
    target = load_device(args.target_device) if args.target_device else None
    bundle = build_bundle(
        modes,
        args.out,
        share_weights=not args.no_share,
        devices=devices,
        target_device=target,
        seed=args.seed,
        bundle_version=args.bundle_version,
    )
    emit(args, _describe(bundle, Path(args.out)), _human)
    return 0


def _describe(bundle: Any, shown_as: Path) -> dict[str, Any]:
    m = bundle.manifest
    return {
        "path": str(shown_as),
        "format": m.format,
        "bundle_version": m.bundle_version,
        "created_by": m.created_by,
        "created_at": m.created_at,
        "device": m.device,
        "verified": True,
        "modes": [
            {
                "name": mode.name,
                "file": mode.file,
                "input": mode.input.to_json(),
                "netspec_input": list(mode.netspec.input_shape),
                "layers": len(mode.netspec.layers),
                "expected": {k: v.to_json() for k, v in mode.expected.items()},
            }
            for mode in m.modes
        ],
        "shared_weights": m.shared_weights.location if m.shared_weights else None,
        "files": {
            name: {"sha256": digest, "bytes": (bundle.root / name).stat().st_size} for name, digest in m.files.items()
        },
    }


def _human(d: dict[str, Any]) -> str:
    lines = [
        f"bundle {d['path']} v{d['bundle_version']} ({d['format']}), verified: {len(d['modes'])} modes"
        + (f", weights shared in {d['shared_weights']}" if d["shared_weights"] else "")
    ]
    rows = []
    for mode in d["modes"]:
        exp = next(iter(mode["expected"].items()), None)
        rows.append(
            (
                mode["name"],
                mode["file"],
                "x".join(map(str, mode["netspec_input"])),
                mode["layers"],
                exp[0] if exp else "-",
                exp[1]["latency_ms"] if exp else None,
                exp[1]["energy_mj"] if exp else None,
            )
        )
    lines.append(format_table(("mode", "file", "runs at", "layers", "device", "exp. ms", "exp. mJ"), rows))
    total = sum(f["bytes"] for f in d["files"].values())
    lines.append(f"{len(d['files'])} files, {total / 2**20:.2f} MiB")
    return "\n".join(lines)


def _verify(args: argparse.Namespace) -> int:
    from runtime.bundle import Bundle

    bundle = Bundle.load(args.path)
    emit(args, _describe(bundle, Path(args.path)), _human)
    return 0


def _pack(args: argparse.Namespace) -> int:
    from runtime.bundle import Bundle, pack

    out = pack(args.path, args.archive)
    emit(
        args,
        {"archive": str(out), "bytes": out.stat().st_size, "modes": list(Bundle.load(out).modes)},
        lambda d: f"wrote {d['archive']} ({d['bytes'] / 2**20:.2f} MiB, modes {', '.join(d['modes'])})",
    )
    return 0
