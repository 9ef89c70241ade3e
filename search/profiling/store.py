"""Resumable partial results of a profiling run: one JSON file, rewritten atomically after every batch.

A profiling run stores what it has measured so far under named sections (``overhead``,
``roofline``, ``blocks``, ``networks``), together with a fingerprint of what it is measuring
(space, alignment, mode, ONNX Runtime version, threads). ``--resume`` continues from the file
only if the fingerprint matches — resuming a table measured with other settings or another
ONNX Runtime would mix incomparable numbers — and an interrupted run loses at most one batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runtime.fileio import load_json, write_text_atomic

FORMAT = "fleetnas.profile_partial"


class StoreError(ValueError):
    """A partial-results file that cannot be used; the message names the file and what to do."""


class ResultStore:
    """Mutable, local helper: sections of measured results persisted to ``path`` on every ``put``."""

    def __init__(self, path: str | Path, fingerprint: Mapping[str, Any], resume: bool) -> None:
        self.path = Path(path)
        self.fingerprint = json.loads(json.dumps(dict(fingerprint)))  # plain JSON types, comparable
        self.sections: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            if not resume:
                raise StoreError(
                    f"{self.path}: partial results of an earlier run exist; pass --resume to continue it "
                    "or delete the file to start over"
                )
            data = load_json(self.path, StoreError)
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise StoreError(f"{self.path}: field 'format': not a fleetnas partial profile file")
            saved = data.get("fingerprint", {})
            if saved != self.fingerprint:
                diff = sorted(k for k in set(saved) | set(self.fingerprint) if saved.get(k) != self.fingerprint.get(k))
                raise StoreError(
                    f"{self.path}: cannot resume: the earlier run measured with different {', '.join(diff)} "
                    f"(was {[saved.get(k) for k in diff]}, now {[self.fingerprint.get(k) for k in diff]}); "
                    "delete the file to start over"
                )
            sections = data.get("sections", {})
            self.sections = {k: dict(v) for k, v in sections.items() if isinstance(v, dict)}

    def section(self, name: str) -> dict[str, Any]:
        """The stored entries of section ``name`` (a copy; empty if none yet)."""
        return dict(self.sections.get(name, {}))

    def put(self, name: str, entries: Mapping[str, Any]) -> None:
        """Add ``entries`` to section ``name`` and rewrite the file atomically."""
        self.sections.setdefault(name, {}).update(json.loads(json.dumps(dict(entries))))
        payload = {"format": FORMAT, "fingerprint": self.fingerprint, "sections": self.sections}
        write_text_atomic(self.path, json.dumps(payload) + "\n")

    def remove(self) -> None:
        """Delete the file (the run finished and wrote its results)."""
        self.path.unlink(missing_ok=True)


__all__ = ["FORMAT", "ResultStore", "StoreError"]
