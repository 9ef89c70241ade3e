"""``fleetnas supernet train``: train the weight-sharing supernet from a YAML configuration.

torch is imported inside the handler only, so ``fleetnas --help`` works on a device install.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from runtime.cli_common import CliError, add_json_flag, emit

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``fleetnas supernet`` with its ``train`` subcommand."""
    p = subparsers.add_parser(
        "supernet",
        help="train the Once-for-All weight-sharing supernet (progressive shrinking)",
        description="Weight-sharing supernet tools.",
    )
    add_json_flag(p)
    sub = p.add_subparsers(dest="supernet_command", metavar="COMMAND", required=True)
    t = sub.add_parser(
        "train",
        help="train a supernet by progressive shrinking; checkpoint every epoch",
        description="Train a MobileNetV3 supernet configured by a YAML file (space, data, optimizer, phases with "
        "their sampling rule uniform/sandwich/fairnas; see search/supernet/schedule.py). A line per epoch reports "
        "the loss and the validation accuracy of the largest and smallest subnets; a checkpoint is written after "
        "every epoch, so Ctrl-C loses at most one epoch and --resume continues with identical results.",
        epilog="outputs in OUT: supernet.pt (state dict), config.yaml (resolved), history.json, checkpoint.pt\n\n"
        "examples:\n"
        "  fleetnas supernet train --config demo --out out/supernet\n"
        "  fleetnas supernet train --config demo --out out/supernet --resume\n"
        "  fleetnas supernet train --config slim --seed 1 --out out/slim_1   # an ensemble member",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument(
        "--config",
        required=True,
        metavar="FILE.yaml|PRESET",
        help="training configuration: a YAML file or a preset (demo, long, slim)",
    )
    t.add_argument("--out", required=True, metavar="DIR", help="output directory")
    t.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="another training seed (initialisation, subnet sampling, batch order) on the config's data split: "
        "members of a supernet ensemble, compared on the same validation images [the config's]",
    )
    t.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    add_json_flag(t, nested=True)
    t.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from search.supernet.schedule import SupernetConfigError, SupernetTrainConfig

    try:
        cfg = SupernetTrainConfig.load(args.config)
    except SupernetConfigError as exc:
        raise CliError(str(exc)) from None
    if args.seed is not None:
        if args.seed < 0:
            raise CliError(f"--seed: need a non-negative integer, got {args.seed}")
        cfg = cfg.reseeded(args.seed)
    if args.resume and not (Path(args.out) / "checkpoint.pt").exists():
        raise CliError(f"--resume: no checkpoint in {args.out}")
    from search.supernet.training import train_supernet  # imports torch

    try:
        result = train_supernet(cfg, args.out, resume=args.resume, progress=True)
    except SupernetConfigError as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        print(
            f"fleetnas: interrupted; continue with: fleetnas supernet train --config {args.config} "
            + (f"--seed {args.seed} " if args.seed is not None else "")
            + f"--out {args.out} --resume",
            file=sys.stderr,
        )
        raise

    def human(r: dict[str, Any]) -> str:
        return (
            f"trained {r['epochs']} epochs in {r['seconds']:.1f} s; validation accuracy: "
            f"largest subnet {r['max_accuracy']:.4f}, smallest {r['min_accuracy']:.4f}\nwrote {r['out_dir']}/: "
            "supernet.pt, config.yaml, history.json, checkpoint.pt"
        )

    emit(args, result.to_json(), human)
    return 0
