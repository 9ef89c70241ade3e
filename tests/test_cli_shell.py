"""The `fleetnas` shell: version, help, usage errors and the error-to-exit-code convention.

Most tests inject fake commands through `build_parser(commands=...)` / `main(commands=...)`, so
they do not depend on which entry points are installed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

import runtime
from runtime.cli import Command, build_parser, main
from runtime.cli_common import CliError, add_json_flag, emit, format_table

REPO_ROOT = Path(__file__).resolve().parents[1]


class FakeLoaderError(ValueError):
    """Stands in for NetSpecError / DeviceProfileError: a ValueError subclass from a loader."""


def fake_commands(handler: Any) -> dict[str, Any]:
    """One command, `fake`, with a `--json` flag and a required `--n`, that calls ``handler``."""

    def register(subparsers: Any) -> None:
        p = subparsers.add_parser("fake", help="a fake command for tests")
        p.add_argument("--n", type=int, required=True)
        add_json_flag(p)
        p.set_defaults(func=handler)

    return {"fake": register}


def run(argv: list[str], capsys: pytest.CaptureFixture[str], commands: Any) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``main``, whether it returns or exits."""
    try:
        code = main(argv, commands=commands)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--version"], capsys, {})
    assert code == 0
    assert out.strip() == f"fleetnas {runtime.__version__}"


def test_help_describes_fleetnas_lists_commands_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys, fake_commands(lambda args: 0))
    assert code == 0
    assert out.startswith("usage: fleetnas")
    assert "edge hardware" in out and "federated" in out  # the description paragraph
    assert "fake" in out and "a fake command for tests" in out  # each command with its one-line help
    assert "examples:" in out and "fleetnas devices list" in out


def test_unknown_subcommand_exits_2_and_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["frobnicate"], capsys, fake_commands(lambda args: 0))
    assert code == 2
    assert out == ""
    assert "fleetnas: error:" in err
    assert "invalid choice: 'frobnicate'" in err
    assert "fake" in err  # says what the choices are


def test_missing_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run([], capsys, fake_commands(lambda args: 0))
    assert code == 2
    assert "a command is required" in err


def test_unrecognized_argument_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["fake", "--n", "1", "--bogus"], capsys, fake_commands(lambda args: 0))
    assert code == 2
    assert "unrecognized arguments: --bogus" in err


def test_handler_exit_code_and_arguments_pass_through(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[argparse.Namespace] = []

    def handler(args: argparse.Namespace) -> int:
        seen.append(args)
        return 7

    code, _, _ = run(["fake", "--n", "3"], capsys, fake_commands(handler))
    assert code == 7
    assert seen[0].n == 3 and seen[0].json is False


def test_value_error_subclass_from_handler_becomes_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise FakeLoaderError("layer 3: field 'kernel' must be one of 1, 3, 5, 7; got 4")

    code, out, err = run(["fake", "--n", "1"], capsys, fake_commands(handler))
    assert code == 2
    assert out == ""
    assert err == "fleetnas: error: layer 3: field 'kernel' must be one of 1, 3, 5, 7; got 4\n"


def test_cli_error_becomes_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise CliError("--budget must be positive")

    code, _, err = run(["fake", "--n", "1"], capsys, fake_commands(handler))
    assert (code, err) == (2, "fleetnas: error: --budget must be positive\n")


def test_traceback_flag_reraises(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise FakeLoaderError("boom")

    with pytest.raises(FakeLoaderError, match="boom"):
        main(["--traceback", "fake", "--n", "1"], commands=fake_commands(handler))


def test_programming_errors_are_not_disguised_as_user_errors() -> None:
    def handler(args: argparse.Namespace) -> int:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        main(["fake", "--n", "1"], commands=fake_commands(handler))


def test_keyboard_interrupt_exits_130(capsys: pytest.CaptureFixture[str]) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    code, _, err = run(["fake", "--n", "1"], capsys, fake_commands(handler))
    assert code == 130
    assert "interrupted" in err


def test_command_whose_dependency_is_missing_is_listed_and_explains_itself(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def register_needing_torch(subparsers: Any) -> None:
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    commands = {**fake_commands(lambda args: 0), "train": register_needing_torch}
    code, out, _ = run(["--help"], capsys, commands)
    assert code == 0
    train_line = next(line for line in out.splitlines() if line.strip().startswith("train"))
    assert "unavailable" in train_line

    # Running it (with whatever arguments) says why and what to install; the rest still works.
    code, _, err = run(["train", "--epochs", "3"], capsys, commands)
    assert code == 2
    assert err.startswith("fleetnas: error: 'fleetnas train' is unavailable")
    assert "No module named 'torch'" in err and "fleetnas[search]" in err
    assert run(["fake", "--n", "1"], capsys, commands)[0] == 0


def test_entry_point_that_failed_to_load_is_listed_as_unavailable(capsys: pytest.CaptureFixture[str]) -> None:
    commands = [Command("sweep", unavailable="No module named 'flwr'; install fleetnas[federation]")]
    parser = build_parser(commands)
    assert "sweep" in parser.format_help()
    code, _, err = run(["sweep"], capsys, commands)
    assert code == 2 and "fleetnas[federation]" in err


def test_emit_prints_json_or_human_text(capsys: pytest.CaptureFixture[str]) -> None:
    payload = {"a": 1, "b": [1.5, "x"]}
    emit(argparse.Namespace(json=True), payload, lambda d: "human")
    assert json.loads(capsys.readouterr().out) == payload
    emit(argparse.Namespace(json=False), payload, lambda d: f"a is {d['a']}")
    assert capsys.readouterr().out == "a is 1\n"


def test_format_table_aligns_columns() -> None:
    text = format_table(["name", "GFLOP/s"], [["rpi4", 24.0], ["jetson_orin_nano", 1234.5]])
    lines = text.splitlines()
    assert lines[0].split() == ["name", "GFLOP/s"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].startswith("rpi4 ") and lines[2].endswith("24")
    assert lines[3].endswith("1234.5")
    assert len({len(line) for line in lines[1:]}) == 1  # numbers are right-aligned to one edge


def test_python_dash_m_runtime_runs_the_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "runtime", "--version"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"fleetnas {runtime.__version__}"


def test_installed_entry_points_register_the_layers_commands() -> None:
    names = {ep.name for ep in metadata.entry_points(group="fleetnas.commands")}
    if not names:
        pytest.fail("fleetnas is not installed (run `make test`), so no entry points exist")
    assert {"devices", "space", "cost", "demo"} <= names
    help_text = build_parser().format_help()
    for name in names:
        assert name in help_text


# --- fleetnas devices -------------------------------------------------------------------------


@pytest.fixture()
def hardware() -> Any:
    return pytest.importorskip("runtime.hardware")


def devices_commands() -> dict[str, Any]:
    from runtime.cli_devices import register

    return {"devices": register}


def test_devices_list_table_and_json_agree(capsys: pytest.CaptureFixture[str], hardware: Any) -> None:
    code, out, _ = run(["devices", "list", "--json"], capsys, devices_commands())
    assert code == 0
    rows = json.loads(out)["devices"]
    assert rows, "the catalogue is empty"
    assert set(rows[0]) == {
        "name",
        "kind",
        "cores",
        "max_freq_mhz",
        "peak_fp32_gflops",
        "memory_bandwidth_gbps",
    }
    for row in rows:
        assert row["max_freq_mhz"] > 0 and row["cores"] >= 1
        assert row["peak_fp32_gflops"] is None or row["peak_fp32_gflops"] > 0

    # `devices` alone lists too, and --json works before or after the action.
    code, table, _ = run(["devices"], capsys, devices_commands())
    assert code == 0
    assert "peak fp32 GFLOP/s" in table
    for row in rows:
        assert row["name"] in table
    for argv in (["devices", "--json"], ["devices", "--json", "list"]):
        code, out, _ = run(argv, capsys, devices_commands())
        assert code == 0 and json.loads(out)["devices"] == rows


def test_devices_show_prints_the_profile_json_and_loadable_yaml(
    capsys: pytest.CaptureFixture[str], hardware: Any, tmp_path: Path
) -> None:
    code, out, _ = run(["devices", "list", "--json"], capsys, devices_commands())
    name = json.loads(out)["devices"][0]["name"]
    code, out, _ = run(["devices", "show", name, "--json"], capsys, devices_commands())
    assert code == 0
    assert json.loads(out) == json.loads(json.dumps(hardware.load_device(name).to_json()))

    # The human view is YAML under a comment line: saved, it loads back as the same profile.
    code, out, _ = run(["devices", "show", name], capsys, devices_commands())
    assert code == 0 and out.startswith(f"# {name} (")
    saved = tmp_path / "my_board.yaml"
    saved.write_text(out)
    assert hardware.load_device(saved) == hardware.load_device(name)


def test_devices_show_unknown_device_is_a_user_error(
    capsys: pytest.CaptureFixture[str], hardware: Any
) -> None:
    code, out, err = run(["devices", "show", "no_such_board_xyz"], capsys, devices_commands())
    assert code == 2
    assert out == ""
    assert err.startswith("fleetnas: error:") and "no_such_board_xyz" in err
