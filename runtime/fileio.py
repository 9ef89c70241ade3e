"""Reading configuration files with errors that name the file, and writing files atomically.

Every loader of a user file (NetSpec JSON, space and search YAML, …) needs the same two things:
a missing or malformed file reported as ``<path>: <problem>`` in the caller's own exception
type, and writes that never leave a half-written file behind (temporary file + rename).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

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


def temp_path_beside(path: str | os.PathLike[str]) -> Path:
    """A fresh hidden temporary name in ``path``'s directory (``os.replace`` must not cross filesystems)."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextmanager
def atomic_writer(path: str | os.PathLike[str], binary: bool = True, sync: bool = False) -> Iterator[IO[Any]]:
    """A file that replaces ``path`` only once fully written (and fsynced with ``sync``); removed on failure."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_beside(p)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        fh: IO[Any] = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")
        with fh:
            yield fh
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written); returns the path."""
    with atomic_writer(path, binary=False) as fh:
        fh.write(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename (never half-written); returns the path."""
    with atomic_writer(path) as fh:
        fh.write(data)
    return Path(path)


def write_npz_atomic(path: str | os.PathLike[str], arrays: Mapping[str, Any]) -> Path:
    """Write ``arrays`` as an uncompressed ``.npz`` (no pickle) via a temporary file and a rename; returns the path."""
    with atomic_writer(path) as fh:
        np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
    return Path(path)
