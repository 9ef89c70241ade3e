"""``fleetnas search``: configuration validation, outputs, ModePlan, interrupt and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.cli import main
from search.cli import register_search
from search.config import ConfigError, SearchConfig
from search.job import run_search

SMALL = """
space: imagenet
device: rpi4
objectives:
  - {metric: macs, direction: max}
  - {metric: latency_ms, direction: min}
constraints:
  - {metric: latency_ms, max: 40}
strategy: {name: nsga2, seed: 1, pop_size: 40}
budget: {evaluations: 1200}
modes: {deadline_ms: 30}
"""


def test_search_writes_front_modeplan_plot_and_report(tmp_path, capsys):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(SMALL)
    code = main(
        ["search", "--config", str(cfg), "--out", str(tmp_path / "out"), "--json"], commands={"search": register_search}
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    out = tmp_path / "out"
    for name in ("front.json", "modeplan.json", "report.json", "report.md", "checkpoint.npz", "pareto.png"):
        assert (out / name).exists(), name
    assert report["evaluations"] == 1200
    front = json.loads((out / "front.json").read_text())["front"]
    lat = [p["metrics"]["latency_ms"] for p in front]
    macs = [p["metrics"]["macs"] for p in front]
    assert all(v <= 40 for v in lat)
    # best first objective first: most MACs first, so latency falls along the front
    assert np.all(np.diff(macs) <= 0) and np.all(np.diff(lat) <= 0)
    plan = json.loads((out / "modeplan.json").read_text())
    assert [m["name"] for m in plan["modes"]] == ["high", "balanced", "low"]
    assert plan["modes"][0]["metrics"]["latency_ms"] <= 30


def test_interrupted_search_resumes_to_the_same_front(tmp_path, monkeypatch):
    import search.strategies.base as base

    cfg = SearchConfig.from_dict({**__import__("yaml").safe_load(SMALL), "modes": {}}, source="t")
    full = run_search(cfg, tmp_path / "full", progress=False)
    calls = {"n": 0}
    original = base._stats

    def interrupt_at_gen_8(*args, **kwargs):  # _stats runs once per generation
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(base, "_stats", interrupt_at_gen_8)
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, tmp_path / "cut", progress=False)
    monkeypatch.setattr(base, "_stats", original)
    resumed = run_search(cfg, tmp_path / "cut", resume=True, progress=False)
    assert resumed["evaluations"] == full["evaluations"]
    a = json.loads((tmp_path / "full" / "front.json").read_text())
    b = json.loads((tmp_path / "cut" / "front.json").read_text())
    assert a == b


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("strategy: {name: annealing}", r"'strategy.name': 'annealing'.*allowed: random, evolution, nsga2"),
        ("strategy: {name: nsga2, popsize: 10}", r"unknown option\(s\) \['popsize'\].*pop_size"),
        ("objectives: [{metric: macs, direction: up}]", r"objectives\[0\].direction.*allowed: min, max"),
        ("constraints: [{metric: latency_ms}]", r"constraints\[0\].*exactly one of max, min"),
        ("budget: {evaluations: -5}", r"budget.evaluations.*positive integer"),
        ("colour: blue", r"unknown field\(s\) \['colour'\]"),
        ("modes: {deadline: 3}", r"field 'modes': unknown \['deadline'\]"),
        ("mnas: {w: -0.07}", r"mnas.target_ms.*required"),
    ],
)
def test_config_errors_name_file_and_field(tmp_path, text, pattern):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=pattern):
        cfg = SearchConfig.load(path)
        run_search(cfg, tmp_path / "o", progress=False)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    code = main(["search", "--out", str(tmp_path / "none"), "--resume"], commands={"search": register_search})
    assert code == 2 and "no checkpoint" in capsys.readouterr().err


def test_multi_platform_latency_and_mnas_reward(tmp_path):
    cfg = SearchConfig.from_dict(
        {
            "platforms": {"rpi4": 0.5, "cortex_a76": 0.5},
            "mnas": {"target_ms": 20.0},
            "objectives": [{"metric": "mnas_reward", "direction": "max"}],
            "strategy": {"name": "evolution", "seed": 0, "population_size": 50, "sample_size": 10, "batch": 10},
            "budget": {"evaluations": 400},
            "modes": {"accuracy": "macs"},
        },
        source="t",
    )
    report = run_search(cfg, tmp_path / "o", progress=False)
    best = json.loads((tmp_path / "o" / "front.json").read_text())["front"][0]["metrics"]
    assert best["weighted_latency_ms"] == pytest.approx(
        0.5 * best["latency_ms@rpi4"] + 0.5 * best["latency_ms@cortex_a76"]
    )
    assert best["mnas_reward"] == pytest.approx(best["macs"] * (best["weighted_latency_ms"] / 20.0) ** -0.07)
    assert report["evaluations"] == 400
    assert (tmp_path / "o" / "convergence.png").exists()  # one objective: a convergence picture
