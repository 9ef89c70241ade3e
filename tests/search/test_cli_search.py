"""``fleetnas space`` / ``cost`` / ``demo`` through the real parser, and the errors users see."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.cli import main
from search.cli import register_cost, register_demo, register_space
from search.references import mobilenetv3_large

COMMANDS = {"space": register_space, "cost": register_cost, "demo": register_demo}


def run(argv, capsys):
    code = main(argv, commands=COMMANDS)
    out, err = capsys.readouterr()
    return code, out, err


def test_space_json(capsys):
    code, out, _ = run(["space", "--sample", "3", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["size"] == 5 * (81 + 729 + 6561) ** 5
    assert len(data["samples"]) == 3 and data["samples"][0]["macs"] > 0


def test_space_human(capsys):
    code, out, _ = run(["space", "--space", "mnist"], capsys)
    assert code == 0 and "mobilenetv3-mnist" in out and "networks" in out


def test_cost_reference_on_catalogue_device(capsys):
    code, out, _ = run(["cost", "--reference", "mobilenetv3_large_100", "--device", "rpi4", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    for key in ("macs", "params", "peak_activation_bytes", "latency_ms", "energy_mj"):
        assert data[key] > 0
    assert data["macs"] == 216_589_760
    assert data["params"] == 5_483_032


def test_cost_netspec_file_on_device_file(tmp_path, capsys):
    from importlib.resources import files

    net = tmp_path / "net.json"
    net.write_text(json.dumps(mobilenetv3_large(resolution=160).to_json()))
    board = tmp_path / "board.yaml"
    board.write_text((files("runtime.hardware") / "catalogue" / "rk3399_big.yaml").read_text())
    code, out, _ = run(["cost", "--netspec", str(net), "--device", str(board), "--json", "--per-layer"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["device"] == "rk3399_big"
    assert len(data["layers"]) == len(mobilenetv3_large().layers)
    assert sum(r["latency_ms"] for r in data["layers"]) == pytest.approx(data["latency_ms"])


def test_cost_arch_and_deadline(capsys, tmp_path):
    arch = {
        "space": "mobilenetv3",
        "resolution": 160,
        "width": 1.0,
        "depths": [2] * 5,
        "kernels": [[3, 3]] * 5,
        "expands": [[3, 3]] * 5,
    }
    code, out, _ = run(
        ["cost", "--arch", json.dumps(arch), "--device", "rk3399_big", "--deadline-ms", "1000", "--json"],
        capsys,
    )
    assert code == 0
    data = json.loads(out)
    assert data["freq_mhz"] < 1800  # a loose deadline lets a slower, cheaper OPP win
    assert "opp_choice" in data
    saved = tmp_path / "n.json"
    code, _, _ = run(["cost", "--arch", json.dumps(arch), "--save-netspec", str(saved)], capsys)
    assert code == 0 and json.loads(saved.read_text())["format"] == "fleetnas.netspec/1"


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["cost", "--reference", "resnet50"], "resnet50.*mobilenetv2_100"),
        (["cost", "--netspec", "missing.json"], "missing.json.*not found"),
        (["cost", "--reference", "mobilenetv2_100", "--device", "no_such_board"], "no_such_board.*rpi4"),
        (["cost", "--reference", "mobilenetv2_100", "--freq", "900"], "--freq.*--device"),
        (["space", "--space", "bogus"], "bogus.*imagenet"),
    ],
)
def test_user_errors_are_one_clear_line(argv, pattern, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2
    assert err.startswith("fleetnas: error:")
    import re

    assert re.search(pattern, err), err


def test_bad_netspec_file_names_file_and_field(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    data = mobilenetv3_large().to_json()
    data["layers"][3]["act"] = "gelu"
    bad.write_text(json.dumps(data))
    code, _, err = run(["cost", "--netspec", str(bad)], capsys)
    assert code == 2 and "bad.json" in err and "layers[3]" in err and "'act'" in err


def test_bad_device_file_names_file_and_field(tmp_path, capsys):
    bad = tmp_path / "board.yaml"
    bad.write_text("name: board\n")
    code, _, err = run(["cost", "--reference", "mobilenetv2_100", "--device", str(bad)], capsys)
    assert code == 2 and "board.yaml" in err


@pytest.mark.slow
def test_demo_quick_run_trains_searches_exports_and_serves(tmp_path, capsys):
    code, out, _ = run(["demo", "--quick", "--samples", "3000", "--out", str(tmp_path), "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert set(data["devices"]) == {"rpi4", "cortex_a76"}
    for dev in data["devices"].values():
        lat = [p["latency_ms"] for p in dev["front"]]
        macs = [p["macs"] for p in dev["front"]]
        assert lat == sorted(lat) and macs == sorted(macs)
    assert json.loads((tmp_path / "demo.json").read_text())["samples"] == 3000
    pipe = data["pipeline"]
    assert pipe["failed_requests"] == 0
    assert [s["mode"] for s in pipe["switches"]][:1] == ["low"]  # the CPU burst of the demo trace
    modes = pipe["modes"]
    assert list(modes) == ["high", "balanced", "low"]
    predicted = [modes[m]["predicted_accuracy"] for m in modes]
    assert predicted == sorted(predicted, reverse=True)
    assert modes["high"]["latency_ms_on_device"] <= pipe["search"]["deadline_ms"]
    for m in modes.values():
        assert m["max_abs_diff"] < 1e-4 and 0.0 <= m["test_accuracy_onnx"] <= 100.0
    served = pipe["served"]
    assert sum(v["requests"] for v in served.values()) > 0
    assert all(v["accuracy_served"] is None or 0.0 <= v["accuracy_served"] <= 100.0 for v in served.values())
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert [m["name"] for m in manifest["modes"]] == ["high", "balanced", "low"]
    assert manifest["modes"][0]["expected"]["rpi4"]["accuracy"] == modes["high"]["test_accuracy_onnx"]
    plan = json.loads((tmp_path / "modeplan.json").read_text())
    assert [m["name"] for m in plan["modes"]] == ["high", "balanced", "low"]
    assert (tmp_path / "trace.csv").exists()


def test_installed_console_script_help():
    exe = Path(sys.executable).with_name("fleetnas")
    if not exe.exists():
        pytest.fail("the fleetnas console script is not installed in this environment (pip install -e .)")
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    for command in ("cost", "space", "demo", "devices"):
        assert command in proc.stdout
