"""Helpers shared by every layer's ``fleetnas`` subcommands.

A subcommand is contributed by a ``register(subparsers) -> None`` function listed in the
``fleetnas.commands`` entry-point group. It adds its parser and sets ``func=handler`` with
``set_defaults``, where ``handler(args) -> int`` returns the exit code.

Conventions every handler follows:

- ``--json`` (``add_json_flag``) prints one JSON document to stdout instead of the human text;
  ``emit`` does the choosing, so the two views always show the same payload.
- A mistake the user can fix raises ``CliError`` (or a ``ValueError`` subclass from a loader, such
  as ``NetSpecError``); ``fleetnas`` prints ``fleetnas: error: <message>`` and exits with 2.
- torch and flwr are imported inside handlers, never at module level, so ``fleetnas --help``
  works on a device install.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["CliError", "add_json_flag", "emit", "format_table"]


class CliError(Exception):
    """A user error: ``fleetnas`` prints ``fleetnas: error: <message>`` and exits with 2."""


def add_json_flag(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """Add ``--json`` (store true, ``args.json``) to ``parser``.

    Pass ``nested=True`` on a sub-subparser whose parent parser already has ``--json``: the flag
    then has no default of its own, so ``cmd --json sub`` and ``cmd sub --json`` both work
    (argparse would otherwise let the subparser's default overwrite the parent's value).
    """
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if nested else False,
        help="print machine-readable JSON to stdout instead of the human-readable text",
    )


def emit(args: argparse.Namespace, payload: dict[str, Any], human: Callable[[dict[str, Any]], str]) -> None:
    """Print ``payload`` as indented JSON if ``args.json`` is set, else ``human(payload)``."""
    if getattr(args, "json", False):
        print(json.dumps(payload, indent=2))
    else:
        print(human(payload))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, align: str | None = None) -> str:
    """A plain-text table: a header row, a rule, and one line per row.

    ``align`` has one character per column, ``<`` (left) or ``>`` (right); by default text
    columns are left-aligned and columns whose cells are all numbers right-aligned.
    """
    cells = [[_cell(v) for v in row] for row in rows]
    if any(len(row) != len(headers) for row in cells):
        raise ValueError("format_table: every row needs one cell per header")
    if align is None:
        align = "".join(
            ">" if rows and all(isinstance(row[i], int | float) for row in rows) else "<"
            for i in range(len(headers))
        )
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [f"{v:{a}{w}}" for v, a, w in zip(values, align, widths, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def _cell(value: Any) -> str:
    """One table cell: whole floats without decimals, others to 3 significant digits (1 decimal
    from 100 up), None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if value.is_integer():
            return f"{value:.0f}"
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)
