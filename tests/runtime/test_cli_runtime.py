"""``fleetnas bundle`` and ``fleetnas runtime`` through the real parser (base install only)."""

from __future__ import annotations

import json

import pytest

from runtime.cli import main
from runtime.cli_bundle import register as register_bundle
from runtime.cli_runtime import register as register_runtime
from runtime.session import demo_trace
from runtime.telemetry import write_trace
from tests.runtime.conftest import three_modes

COMMANDS = {"bundle": register_bundle, "runtime": register_runtime}


def run(argv, capsys):
    code = main(argv, commands=COMMANDS)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def netspec_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("netspecs")
    paths = []
    for mode in three_modes():
        p = root / f"{mode.name}.json"
        p.write_text(json.dumps(mode.netspec.to_json()))
        paths.append(p)
    return paths


def test_bundle_build_verify_pack(netspec_files, tmp_path, capsys):
    out = tmp_path / "b"
    argv = ["bundle", "build", "--out", str(out), "--device", "rpi4", "--target-device", "rpi4", "--json"]
    for p in netspec_files:
        argv += ["--netspec", str(p)]
    code, stdout, _ = run(argv, capsys)
    assert code == 0
    data = json.loads(stdout)
    assert [m["name"] for m in data["modes"]] == ["high", "balanced", "low"]
    assert data["shared_weights"] == "shared.bin"
    code, stdout, _ = run(["bundle", "verify", str(out)], capsys)
    assert code == 0 and "verified: 3 modes" in stdout
    code, stdout, _ = run(["bundle", "pack", str(out), str(tmp_path / "b.fnb"), "--json"], capsys)
    assert code == 0 and json.loads(stdout)["modes"] == ["high", "balanced", "low"]


def test_bundle_build_named_modes_private(netspec_files, tmp_path, capsys):
    out = tmp_path / "named"
    code, stdout, _ = run(
        [
            "bundle",
            "build",
            "--mode",
            f"exact={netspec_files[0]}",
            "--mode",
            f"fast={netspec_files[2]}",
            "--no-share",
            "--out",
            str(out),
            "--json",
        ],
        capsys,
    )
    assert code == 0
    data = json.loads(stdout)
    assert [m["name"] for m in data["modes"]] == ["exact", "fast"] and data["shared_weights"] is None


def test_bundle_errors(tmp_path, netspec_files, capsys):
    code, _, err = run(["bundle", "verify", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "no such bundle" in err
    code, _, err = run(["bundle", "build", "--out", str(tmp_path / "x"), "--mode", "oops"], capsys)
    assert code == 2 and "NAME=FILE" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    code, _, err = run(["bundle", "build", "--out", str(tmp_path / "y"), "--netspec", str(bad)], capsys)
    assert code == 2 and "bad.json" in err and "input" in err


def test_runtime_run_on_a_trace_prints_each_decision(shared_bundle, tmp_path, capsys):
    trace = tmp_path / "trace.csv"
    write_trace(trace, demo_trace())
    code, stdout, _ = run(
        [
            "runtime",
            "run",
            "--bundle",
            str(shared_bundle.root),
            "--telemetry",
            f"trace:{trace}",
            "--timeline",
            str(tmp_path / "t.png"),
        ],
        capsys,
    )
    assert code == 0
    lines = [line for line in stdout.splitlines() if line.startswith("t=")]
    assert len(lines) == len(demo_trace())
    assert any("temperature 86" in line and "-> low" in line for line in lines)
    assert "0 failed requests" in stdout
    assert (tmp_path / "t.png").exists()


def test_runtime_run_json_is_deterministic_for_a_trace(shared_bundle, tmp_path, capsys):
    trace = tmp_path / "trace.csv"
    write_trace(trace, demo_trace())
    argv = ["runtime", "run", "--bundle", str(shared_bundle.root), "--telemetry", f"trace:{trace}", "--json"]
    first = json.loads(run(argv, capsys)[1])
    second = json.loads(run(argv, capsys)[1])
    strip = [(d["t"], d["mode"], d["reason"]) for d in first["decisions"]]
    assert strip == [(d["t"], d["mode"], d["reason"]) for d in second["decisions"]]
    assert [d["mode"] for d in first["decisions"] if d["switch"]] == ["low", "balanced", "low", "balanced", "high"]


def test_runtime_run_psutil_briefly(shared_bundle, capsys):
    code, stdout, _ = run(
        [
            "runtime",
            "run",
            "--bundle",
            str(shared_bundle.root),
            "--telemetry",
            "psutil",
            "--duration",
            "1.0",
            "--interval",
            "0.2",
            "--json",
        ],
        capsys,
    )
    assert code == 0
    data = json.loads(stdout)
    assert data["metrics"]["inferences"] > 0 and data["metrics"]["failed_requests"] == 0
    assert len(data["decisions"]) >= 1


def test_runtime_bench_reports_what_the_issue_asks(shared_bundle, capsys):
    code, stdout, _ = run(
        ["runtime", "bench", "--bundle", str(shared_bundle.root), "--switches", "200", "--runs", "30", "--json"], capsys
    )
    assert code == 0
    d = json.loads(stdout)
    assert set(d["modes"]) == {"high", "balanced", "low"}
    for v in d["modes"].values():
        assert 0 < v["p50_ms"] <= v["p99_ms"] and v["standalone_p50_ms"] > 0
    assert d["switches"] == 200 and d["failed_requests"] == 0 and d["misrouted_requests"] == 0
    assert 0 <= d["switch_p50_ms"] <= d["switch_p99_ms"]
    assert d["memory"]["all_modes_bytes"] > 0 and d["memory"]["high_alone_bytes"] > 0


def test_runtime_bad_telemetry(shared_bundle, capsys):
    code, _, err = run(["runtime", "run", "--bundle", str(shared_bundle.root), "--telemetry", "gps"], capsys)
    assert code == 2 and "psutil, trace:FILE" in err
