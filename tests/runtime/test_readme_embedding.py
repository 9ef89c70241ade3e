"""The README's embedding example runs as written with the base install only (no torch, flwr)."""

from __future__ import annotations

import re

from tests.test_layering import REPO_ROOT, run_blocked


def _example() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    match = re.search(r"<!-- embedding-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its embedding example (marked <!-- embedding-example -->)"
    return match.group(1)


def test_embedding_example_runs_without_torch_or_flwr(shared_bundle):
    code = _example().replace('"out/demo/bundle"', repr(str(shared_bundle.root)))
    proc = run_blocked(code + "\nassert rt.metrics()['failed_requests'] == 0\nprint('EXAMPLE-OK')\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "EXAMPLE-OK" in proc.stdout
