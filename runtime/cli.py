"""The thin ``fleetnas`` command.

It owns no subcommand. Each layer lists ``register(subparsers) -> None`` functions in the
``fleetnas.commands`` entry-point group (see ``pyproject.toml``); ``fleetnas`` loads them and lets
each add its parser. This module is in ``runtime`` (the base install) and imports nothing beyond
the standard library and ``runtime``, so ``fleetnas --help`` works on a device with neither torch
nor flwr. A command whose module cannot be imported is still listed, marked unavailable with the
reason, and running it says why.

Errors: ``CliError`` and ``ValueError`` (which our loaders' errors, e.g. ``NetSpecError`` and
``DeviceProfileError``, subclass) become ``fleetnas: error: <message>`` with exit code 2;
Ctrl-C exits with 130. ``--traceback`` re-raises instead, for debugging.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

import runtime
from runtime.cli_common import CliError

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["ENTRY_POINT_GROUP", "Command", "build_parser", "discover_commands", "main"]

ENTRY_POINT_GROUP = "fleetnas.commands"

Register = Callable[["Subparsers"], None]

# Which extra installs a missing third-party module, so "unavailable" says what to do about it.
_EXTRA_FOR_MODULE = {
    "torch": "search",
    "matplotlib": "search",
    "pymoo": "search",
    "flwr": "federation",
    "ray": "federation",
}

DESCRIPTION = """\
fleetnas searches neural networks for edge hardware, runs them on the device as a multi-mode
ONNX bundle that switches operating point with battery, load and temperature, and improves them
across a fleet with federated search on Flower. The base install is the device runtime; commands
that search or federate need the [search] or [federation] extra."""

EPILOG = """\
examples:
  fleetnas devices list
  fleetnas cost --reference mobilenetv3_large_100 --device rpi4 --json

'fleetnas COMMAND --help' shows a command's options."""


@dataclass(frozen=True)
class Command:
    """One subcommand: the function that registers it, or why it could not be loaded."""

    name: str
    register: Register | None = None
    unavailable: str | None = None


def discover_commands(group: str = ENTRY_POINT_GROUP) -> list[Command]:
    """The subcommands in the entry-point ``group``, sorted by name, loaded or marked unavailable."""
    seen: set[str] = set()
    commands = []
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        if ep.name in seen:  # a stale second install of the distribution; the first one wins
            continue
        seen.add(ep.name)
        commands.append(_load(ep))
    return commands


def _load(ep: EntryPoint) -> Command:
    """Import one entry point; a missing dependency makes the command unavailable, not fatal."""
    try:
        register = ep.load()
    except ImportError as exc:
        return Command(ep.name, unavailable=_reason(exc))
    return Command(ep.name, register=register)


def _reason(exc: ImportError) -> str:
    """Why a command cannot load, with the extra to install when we know it."""
    missing = (exc.name or "").partition(".")[0]
    extra = _EXTRA_FOR_MODULE.get(missing)
    hint = f"; install fleetnas[{extra}]" if extra else ""
    return f"{exc}{hint}"


def build_parser(
    commands: Mapping[str, Register] | Iterable[Command] | None = None,
) -> argparse.ArgumentParser:
    """The ``fleetnas`` parser with ``commands`` (default: the installed entry points) registered.

    ``commands`` may map names to register functions, which is how tests inject fake commands.
    """
    if commands is None:
        cmds = discover_commands()
    elif isinstance(commands, Mapping):
        cmds = [Command(name, register=fn) for name, fn in commands.items()]
    else:
        cmds = list(commands)

    epilog = EPILOG
    if not cmds:
        epilog += (
            "\n\nNo commands are registered: install the project (pip install -e .) so its"
            f" '{ENTRY_POINT_GROUP}' entry points exist."
        )
    parser = argparse.ArgumentParser(
        prog="fleetnas",
        description=DESCRIPTION,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fleetnas {runtime.__version__}")
    parser.add_argument(
        "--traceback", action="store_true", help="on an error, show the Python traceback instead of one line"
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    for cmd in cmds:
        if cmd.register is None:
            _add_unavailable(subparsers, cmd.name, cmd.unavailable or "it failed to load")
            continue
        try:
            cmd.register(subparsers)
        except ImportError as exc:
            # A register function that imports lazily can still miss a dependency.
            if cmd.name not in subparsers.choices:
                _add_unavailable(subparsers, cmd.name, _reason(exc))
    return parser


def _add_unavailable(subparsers: Subparsers, name: str, reason: str) -> None:
    """A placeholder subcommand that takes any arguments and explains why it cannot run."""
    p = subparsers.add_parser(
        name,
        help=f"(unavailable: {reason})",
        description=f"'fleetnas {name}' is unavailable in this install: {reason}",
    )

    def handler(args: argparse.Namespace) -> int:
        raise CliError(f"'fleetnas {name}' is unavailable in this install: {reason}")

    p.set_defaults(func=handler, _accepts_any_args=True)


def main(
    argv: Sequence[str] | None = None,
    *,
    commands: Mapping[str, Register] | Iterable[Command] | None = None,
) -> int:
    """Run ``fleetnas`` on ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    traceback = False
    try:
        parser = build_parser(commands)
        args, extra = parser.parse_known_args(argv)
        if extra and not getattr(args, "_accepts_any_args", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        traceback = args.traceback
        func: Callable[[argparse.Namespace], Any] | None = getattr(args, "func", None)
        if func is None:
            parser.error("a command is required ('fleetnas --help' lists them)")
        code = func(args)
        return 0 if code is None else int(code)
    except KeyboardInterrupt:
        if traceback:
            raise
        print("fleetnas: interrupted", file=sys.stderr)
        return 130
    except (CliError, ValueError, FileNotFoundError) as exc:
        if traceback:
            raise
        print(f"fleetnas: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `fleetnas devices list | head`: the reader left; silence the flush at exit too.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
