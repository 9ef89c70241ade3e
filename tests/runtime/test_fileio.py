"""Atomic writes: whole files with the umask's permissions, and nothing half-written on failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from runtime.fileio import atomic_writer, write_bytes_atomic, write_npz_atomic, write_text_atomic


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_written_files_get_the_umask_permissions_not_0600(tmp_path: Path) -> None:
    expected = 0o666 & ~_umask()
    for path in (
        write_text_atomic(tmp_path / "a.json", "{}"),
        write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01"),
        write_npz_atomic(tmp_path / "c.npz", {"x": np.arange(3)}),
    ):
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
    assert np.array_equal(np.load(tmp_path / "c.npz")["x"], np.arange(3))


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = write_text_atomic(tmp_path / "state.json", "old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_writer(target, binary=False) as fh:
        fh.write("half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
