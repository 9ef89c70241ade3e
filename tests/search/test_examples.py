"""The example configurations in examples/ load, and run on a reduced budget."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from search.config import SearchConfig
from search.job import run_search

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["search_mobilenetv3.yaml", "search_nasbench201.yaml"])
def test_example_config_runs(name, tmp_path, monkeypatch):
    monkeypatch.chdir(EXAMPLES.parent)  # the NAS-Bench-201 example's path is relative to the repo
    cfg = SearchConfig.load(EXAMPLES / name)
    small = replace(cfg, budget={"evaluations": 600, "generations": None})
    report = run_search(small, tmp_path / "out", progress=False)
    assert report["evaluations"] == 600 and report["front_size"] > 0
    assert (tmp_path / "out" / "report.md").exists()
