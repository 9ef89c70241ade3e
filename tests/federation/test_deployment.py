"""The federated-search apps on Flower's Deployment Engine: a real SuperLink and SuperNodes on localhost.

The slow tests start ``flower-superlink`` and two ``flower-supernode`` processes through
``federation.deploy.LocalDeployment`` and check, besides what the run produced, that every process
of the deployment (including Flower's SuperExec and the ServerApp/ClientApp processes it spawns in
other sessions) is gone afterwards — also after a failed run, a SIGKILLed SuperLink and a
KeyboardInterrupt.
"""

from __future__ import annotations

import math
import socket
import ssl
import time
import tomllib
from pathlib import Path

import psutil
import pytest
from cryptography import x509

from federation.deploy import (
    DEFAULT_APP_DIR,
    DeploymentError,
    LocalDeployment,
    RunFailedError,
    RunResult,
    format_config,
    free_ports,
    generate_tls_files,
)
from search.space.mobilenetv3 import MobileNetV3Space
from tests.federation.conftest import SMALL_SPACE

ECHO_APP = Path(__file__).parent / "deploy_apps" / "echo"
TIERS = ("rpi4", "orin_nx")


# ---- helpers -----------------------------------------------------------------------------------
def _gone(pids: tuple[int, ...]) -> list[str]:
    """Descriptions of the processes among ``pids`` that still run (zombies count as gone)."""
    left = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid} {' '.join(proc.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            continue
    return left


def _roles(seen: dict[int, str]) -> dict[str, int]:
    """How many processes of each Flower component were seen."""
    roles = ("flower-superlink", "flower-supernode", "flower-superexec", "flwr-serverapp", "flwr-clientapp")
    return {r: sum(r in cmd for cmd in seen.values()) for r in roles}


def _node_configs(deadlines: dict[str, float]) -> list[dict[str, str | int | float]]:
    return [
        {"partition-id": i, "num-partitions": len(TIERS), "hardware": t, "deadline-ms": deadlines[t]}
        for i, t in enumerate(TIERS)
    ]


def _search_config(predictor: Path, dp_mode: str) -> dict[str, str | int | float]:
    from federation.protocol import encode_space

    return {
        "rounds": 1,
        "budget": 32,
        "top-k": 2,
        "seed-pool": 8,
        "min-nodes": 2,
        "wait-s": 120.0,
        "timeout-s": 240.0,
        "space": encode_space(SMALL_SPACE),
        "predictor": str(predictor),
        "dp-mode": dp_mode,
        "epsilon": 1.0,
        "delta": 1e-5,
    }


def _check_search_output(result: RunResult) -> dict:
    """summary.json after checking what every successful one-round search must have written."""
    assert result.succeeded, result.log
    summary = result.load_json("summary.json")
    assert summary["rounds_run"] == 1
    assert summary["rounds"][0]["status"] == "ok", summary["rounds"]
    assert summary["rounds"][0]["failures"] == 0  # both SuperNodes answered both phases
    chosen = summary["chosen"]
    assert chosen is not None and math.isfinite(chosen["score"])  # (a noisy mean need not lie in [0, 1])
    assert len(chosen["code"]) == MobileNetV3Space(SMALL_SPACE).encoding_length
    round1 = result.load_json("round_001.json")
    # one front and one plan per device tier present: the tiers are the node_configs' hardware classes
    assert set(round1["fronts"]) == set(TIERS)
    assert set(summary["plans"]) == set(TIERS)
    for tier in TIERS:
        assert len(round1["fronts"][tier]["codes"]) >= 1
    return summary


def _expected_exact_score(
    code: list[int],
    nodes: list[dict[str, str | int | float]],
    run_config: dict[str, str | int | float],
    predictor: Path,
) -> float:
    """The DP-off mean score of ``code`` recomputed here, as each device computes its own score (federation.client).

    Σ n_i s_i / Σ n_i over the nodes: with DP off and every node answering, the weights are ∝ data size.
    """
    import numpy as np
    from flwr.app import Context, RecordDict

    from federation.client import label_histogram, predictor_accuracy, score_candidates
    from federation.client_app import ClientSettings, local_data, node_settings
    from runtime.hardware import load_device
    from search.cost.table import SpaceCostTable
    from search.predictors.mlp import AccuracyPredictor

    space = MobileNetV3Space(SMALL_SPACE)
    pred = AccuracyPredictor.load(predictor, space)
    codes = np.asarray([code], dtype=np.int64)
    total, weight = 0.0, 0.0
    for i, node in enumerate(nodes):
        ctx = Context(run_id=1, node_id=i + 1, node_config=dict(node), state=RecordDict(), run_config=run_config)
        settings = node_settings(ctx, ClientSettings())
        data = local_data(settings)
        accuracy = predictor_accuracy(pred, label_histogram(data.y, SMALL_SPACE.num_classes))
        table = SpaceCostTable(space, load_device(str(node["hardware"])))
        score = float(score_candidates(codes, accuracy, table, float(node["deadline-ms"]))[0])
        total, weight = total + len(data) * score, weight + len(data)
    return total / weight


# ---- fast checks (no processes) ----------------------------------------------------------------
def test_format_config_round_trips_through_toml() -> None:
    values = {"partition-id": 3, "hardware": 'rpi4 "b"\\x', "deadline-ms": 12.5, "delta": 1e-5, "on": True}
    text = format_config(values)
    assert tomllib.loads(text) == values


def test_format_config_names_the_bad_key() -> None:
    with pytest.raises(ValueError, match="key 'bad key'"):
        format_config({"bad key": 1})
    with pytest.raises(ValueError, match=r"key 'x'.*list"):
        format_config({"x": [1, 2]})  # type: ignore[dict-item]


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(4)
    assert len(set(ports)) == 4
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_tls_files_form_a_chain_for_localhost(tmp_path: Path) -> None:
    files = generate_tls_files(tmp_path)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert files.server_key.stat().st_mode & 0o077 == 0
    # Python's TLS stack accepts the pair (what uvicorn does when the SuperLink starts)
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(files.server_cert, files.server_key)


def test_unknown_run_config_keys_are_rejected_before_submitting() -> None:
    dep = LocalDeployment([{"partition-id": 0}], app_dir=ECHO_APP)
    try:
        with pytest.raises(
            ValueError, match=r"unknown keys \['nmu-nodes'\].*allows \['mode', 'num-nodes', 'out-dir'\]"
        ):
            dep.submit({"nmu-nodes": 2})
    finally:
        assert dep.close() == []


def test_missing_app_project_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DeploymentError, match=r"pyproject.toml: not found"):
        LocalDeployment([{"partition-id": 0}], app_dir=tmp_path)


def test_flower_app_project_loads_the_real_apps_and_needs_no_torch() -> None:
    from flwr.cli.config_utils import load_and_validate

    from federation.server_app import config_from_run_config

    config, warnings = load_and_validate(DEFAULT_APP_DIR / "pyproject.toml")  # also imports the components
    assert warnings == []
    assert config["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "federation.server_app:app",
        "clientapp": "federation.client_app:app",
    }
    # `uv sync` per run would reach PyPI for any dependency (and fetch CUDA torch for torch)
    assert config["project"]["dependencies"] == []
    # every default is a key the ServerApp knows, with a value it accepts
    fed, out = config_from_run_config(config["tool"]["flwr"]["app"]["config"])
    assert out is None and fed.dp.mode == "central" and fed.dp.epsilon == 1.0


# ---- the deployment engine ---------------------------------------------------------------------
@pytest.mark.slow
def test_real_apps_one_round_insecure(class_predictor_path: Path, deadlines: dict[str, float]) -> None:
    with LocalDeployment(_node_configs(deadlines)) as dep:
        result = dep.run(_search_config(class_predictor_path, "central"), timeout_s=600)
        summary = _check_search_output(result)  # the outputs live in the deployment's temporary workdir
        seen = dep.seen_processes()
    assert 0.0 < summary["dp"]["epsilon_spent"] <= 1.0 + 1e-9
    assert summary["rounds"][0]["epsilon"] == summary["dp"]["epsilon_spent"]
    # Flower's SuperExecs run in sessions of their own; the harness saw (and ended) them all
    roles = _roles(seen)
    assert roles["flower-superlink"] == 1 and roles["flower-supernode"] == 2 and roles["flower-superexec"] == 3
    assert roles["flwr-serverapp"] == 1  # (ClientApp processes live ~1 s per message: polling may miss them)
    assert _gone(tuple(seen)) == [] and dep.leftover_processes() == []
    assert not dep.workdir.exists()  # the temporary FLWR_HOME, logs and outputs are removed


@pytest.mark.slow
def test_real_apps_one_round_over_tls(class_predictor_path: Path, deadlines: dict[str, float], tmp_path: Path) -> None:
    with LocalDeployment(_node_configs(deadlines), tls=True, workdir=tmp_path) as dep:
        assert dep.tls_files is not None
        host, port = dep.host, dep.superlink_port
        # the SuperLink speaks TLS with the generated certificate ...
        ctx = ssl.create_default_context(cafile=str(dep.tls_files.ca_cert))
        with socket.create_connection((host, port), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname=host) as s:
            assert ("IP Address", "127.0.0.1") in s.getpeercert()["subjectAltName"]
        # ... which a client without the generated CA refuses
        with (
            pytest.raises(ssl.SSLCertVerificationError),
            socket.create_connection((host, port), timeout=10) as raw,
            ssl.create_default_context().wrap_socket(raw, server_hostname=host),
        ):
            pass
        run_config = _search_config(class_predictor_path, "off")
        result = dep.run(run_config, timeout_s=600)
        seen = dep.seen_processes()
    summary = _check_search_output(result)
    assert summary["dp"]["mode"] == "off" and summary["dp"]["epsilon_spent"] == 0.0
    # exact aggregation: the chosen arch's score is the data-size-weighted mean of what each device,
    # with the hardware, deadline and partition of its node_config, computes for it
    chosen = summary["chosen"]
    assert 0.0 < chosen["score"] <= 1.0
    expected = _expected_exact_score(chosen["code"], _node_configs(deadlines), run_config, class_predictor_path)
    assert chosen["score"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert _gone(tuple(seen)) == [] and dep.leftover_processes() == []


@pytest.mark.slow
def test_echo_round_then_failures_leave_no_process_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import federation.deploy as deploy

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # to see that nothing reaches ~/.flwr
    # The first ports "found free" include one another process holds: the harness must start over.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    picks = iter([(taken.getsockname()[1], *free_ports(2))])
    monkeypatch.setattr(deploy, "free_ports", lambda n, host="127.0.0.1": next(picks, None) or free_ports(n, host))

    nodes = [{"partition-id": i, "num-partitions": 2, "hardware": t} for i, t in enumerate(TIERS)]
    dep = LocalDeployment(nodes, app_dir=ECHO_APP, workdir=tmp_path / "deploy", grace_s=2.0)
    hung_pid = 0
    pids: tuple[int, ...] = ()
    with pytest.raises(KeyboardInterrupt), taken, dep:
        assert dep.superlink_port != taken.getsockname()[1]
        assert "address already in use" in (tmp_path / "deploy" / "logs" / "superlink.log").read_text()
        # the node configs reach the ClientApps
        echo = dep.run({"num-nodes": 2}, timeout_s=300)
        assert [r["node-config"] for r in echo.load_json("result.json")] == nodes

        # a broken ServerApp: the run fails, the failure and its message are reported
        with pytest.raises(RunFailedError, match="deliberately broken") as failed:
            dep.run({"mode": "fail"}, timeout_s=300)
        assert failed.value.result.status == "finished:failed"

        # a SuperNode dies (its SuperExec is orphaned), then a ServerApp hangs ignoring SIGTERM and
        # SIGINT, then the SuperLink dies too and the user hits Ctrl-C
        dep.kill_node(1)
        run_id, out_dir = dep.submit({"mode": "hang"})
        assert out_dir is not None
        deadline = time.monotonic() + 120
        while not (out_dir / "hang.pid").exists():
            assert time.monotonic() < deadline, dep.log_tails()
            assert dep.status(run_id)["status"] != "finished:failed", dep.run_log(run_id)
            time.sleep(0.5)
        hung_pid = int((out_dir / "hang.pid").read_text())
        pids = dep.started_pids
        assert hung_pid in pids  # found although Flower started it in another session
        dep.kill_superlink()
        raise KeyboardInterrupt
    assert hung_pid and _gone((*pids, hung_pid)) == []
    assert dep.leftover_processes() == []
    # the harness kept the logs of the workdir it was given, and Flower's state stayed in it
    assert (tmp_path / "deploy" / "logs" / "superlink.log").is_file()
    assert (tmp_path / "deploy" / "flwr-home" / "config.toml").is_file()
    assert not (tmp_path / "home" / ".flwr").exists()
