"""Reading configuration files with errors that name the file, and writing files atomically.

Every loader of a user file (NetSpec JSON, space and search YAML, …) needs the same two things:
a missing or malformed file reported as ``<path>: <problem>`` in the caller's own exception
type, and writes that never leave a half-written file behind (temporary file + rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

ErrorFactory = Callable[[str], Exception]


def read_text(path: str | os.PathLike[str], error: ErrorFactory) -> str:
    """The file's text; ``error("<path>: …")`` is raised if it is missing or unreadable."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{p}: file not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise error(f"{p}: cannot read the file ({exc})") from None


def load_json(path: str | os.PathLike[str], error: ErrorFactory) -> Any:
    """The parsed JSON document; errors name the file."""
    text = read_text(path, error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{Path(path)}: not valid JSON ({exc})") from None


def load_yaml(path: str | os.PathLike[str], error: ErrorFactory) -> Any:
    """The parsed YAML document (None for an empty file); errors name the file."""
    import yaml

    text = read_text(path, error)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{Path(path)}: not valid YAML ({exc})") from None


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def write_npz_atomic(path: str | os.PathLike[str], arrays: Mapping[str, Any]) -> Path:
    """Write ``arrays`` as an uncompressed ``.npz`` (no pickle) via a temporary file and a rename; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
