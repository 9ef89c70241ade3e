"""Run a Flower app on Flower's Deployment Engine on this machine: one SuperLink, N SuperNodes, one run.

Used by the deployment integration tests, the demo and the README's walk-through. ``LocalDeployment``
is a context manager that

* picks free ports on 127.0.0.1 and, with ``tls=True``, writes a throw-away CA and a server
  certificate for 127.0.0.1/localhost (``cryptography``, which flwr already depends on);
* starts ``flower-superlink`` and one ``flower-supernode`` per node config as subprocesses, each in
  its own session/process group, with its output in ``<workdir>/logs/<name>.log``;
* waits until the SuperLink process listens on its port and every SuperNode is online
  (``flwr supernode ls``); a timeout raises ``DeploymentTimeoutError`` with the tail of every log,
  and a port taken between picking and binding it restarts everything on new ports;
* submits runs with ``flwr run <app-dir> <connection>`` and waits for them (``flwr list``), then
  collects the ServerApp's log (``flwr log --show``) and the run's output directory;
* on exit — also on exceptions and KeyboardInterrupt — ends every process it started *and their
  descendants* (SIGTERM, then SIGKILL after a grace period) and verifies that none is left.

``python -m federation.deploy --out DIR [--tls] [--hardware rpi4,orin_nx] [-c key=value ...]`` runs the
federated search once this way and prints the run's summary as JSON.

Why by hand and not ``flwr run`` alone: ``flwr run`` against the built-in ``local`` connection
starts a SuperLink that keeps running in the background and builds a per-run environment with
``uv sync``, which needs the network and would fetch torch if an app listed it. Here every
component runs in the current environment with runtime dependency installation disabled, with
telemetry and the update check (both network calls) disabled, and with ``FLWR_HOME`` in a private
directory, so nothing in ``~/.flwr`` is read or written.

Why the process bookkeeping: Flower's SuperLink and SuperNodes start a ``flower-superexec`` in a
*new session* (``start_new_session=True``), which then starts ``flwr-serverapp``/``flwr-clientapp``
processes, so killing our children's process groups does not reach them. Descendants are therefore
recorded (psutil) whenever the harness polls, every process we start carries a private marker
environment variable that its descendants inherit (so even a process orphaned between two polls is
found), and on Linux each direct child asks the kernel for SIGTERM if the harness dies
(``PR_SET_PDEATHSIG``; it fires when the *thread* that started the deployment ends).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from runtime.fileio import write_text_atomic

__all__ = [
    "DEFAULT_APP_DIR",
    "DeploymentError",
    "DeploymentTimeoutError",
    "LocalDeployment",
    "RunFailedError",
    "RunResult",
    "TlsFiles",
    "format_config",
    "free_ports",
    "generate_tls_files",
]

DEFAULT_APP_DIR = Path(__file__).resolve().parent / "flower_app"
MARKER_ENV = "FLEETNAS_DEPLOYMENT_ID"
CONNECTION = "fleetnas-local"
ConfigValue = str | int | float | bool

_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")
_FINISHED = "finished"
_START_ATTEMPTS = 3
_COMPLETED = "finished:completed"


class DeploymentError(RuntimeError):
    """The local deployment could not be started, a run failed, or a process outlived the harness."""


class DeploymentTimeoutError(DeploymentError):
    """A component did not become ready, or a run did not finish, in time (the message has the log tails)."""


class RunFailedError(DeploymentError):
    """A run finished with a status other than ``finished:completed``."""

    def __init__(self, message: str, result: RunResult) -> None:
        super().__init__(message)
        self.result = result


# ---- values ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throw-away CA and a server certificate signed by it."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class RunResult:
    """What one run left behind: its final status, the ServerApp's log and its output directory."""

    run_id: int
    status: str  # "finished:completed" | "finished:failed" | "finished:stopped" | ...
    details: str
    elapsed_s: float
    log: str
    out_dir: Path | None = None

    @property
    def succeeded(self) -> bool:
        """True when the ServerApp returned normally."""
        return self.status == _COMPLETED

    def load_json(self, name: str) -> Any:
        """The parsed JSON file ``name`` in the run's output directory."""
        if self.out_dir is None:
            raise DeploymentError(f"run {self.run_id}: no output directory (the app declares no out-dir key)")
        path = self.out_dir / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            found = sorted(p.name for p in self.out_dir.iterdir()) if self.out_dir.is_dir() else []
            raise DeploymentError(f"run {self.run_id}: {path} was not written; the directory has {found}") from None


@dataclass(frozen=True)
class _Started:
    """A process the harness started itself."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class _Tracker:
    """Every process seen in the deployment's tree, keyed by (pid, create_time) so reused PIDs don't match."""

    marker: str
    seen: dict[tuple[int, float], psutil.Process] = field(default_factory=dict)
    cmdlines: dict[int, str] = field(default_factory=dict)

    def add(self, proc: psutil.Process) -> None:
        with contextlib.suppress(psutil.Error):
            key = (proc.pid, proc.create_time())
            if key not in self.seen:
                self.seen[key] = proc
                self.cmdlines[proc.pid] = " ".join(proc.cmdline())

    def add_tree(self, pid: int) -> None:
        try:
            root = psutil.Process(pid)
            self.add(root)
            for child in root.children(recursive=True):
                self.add(child)
        except psutil.Error:
            pass

    def add_marked(self) -> None:
        """Add every live process carrying this deployment's marker (found even when orphaned)."""
        own = os.getpid()
        for proc in psutil.process_iter():
            if proc.pid == own:
                continue
            try:
                if proc.environ().get(MARKER_ENV) == self.marker:
                    self.add(proc)
            except psutil.Error:
                continue

    def alive(self) -> list[psutil.Process]:
        """Tracked processes still running (zombies count as gone: they hold no resources but a PID)."""
        out = []
        for proc in self.seen.values():
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    out.append(proc)
            except psutil.Error:
                continue
        return out


# ---- helpers -----------------------------------------------------------------------------------
def free_ports(n: int, host: str = "127.0.0.1") -> tuple[int, ...]:
    """``n`` distinct TCP ports that were free on ``host`` a moment ago (all held open while choosing)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return tuple(s.getsockname()[1] for s in socks)
    finally:
        for s in socks:
            s.close()


def format_config(values: Mapping[str, ConfigValue], what: str = "config") -> str:
    """The TOML text of a flat Flower config (run config or node config); bad keys/values raise ValueError."""
    lines = []
    for key, value in values.items():
        if not _KEY.match(key):
            raise ValueError(f"{what}: key {key!r}: use letters, digits, '-', '_' and '.' only")
        if isinstance(value, bool):
            lines.append(f"{_toml_key(key)} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            if isinstance(value, float) and value != value:  # NaN has no TOML literal Flower accepts
                raise ValueError(f"{what}: key {key!r}: NaN is not allowed")
            lines.append(f"{_toml_key(key)} = {value!r}")
        elif isinstance(value, str):
            lines.append(f"{_toml_key(key)} = {json.dumps(value)}")
        else:
            raise ValueError(f"{what}: key {key!r}: {type(value).__name__} value; allowed: str, int, float, bool")
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # json.dumps escapes are TOML escapes; this guards the exceptions
    return text


def _toml_key(key: str) -> str:
    # Dotted keys are nested tables in TOML; Flower flattens them back to "a.b", so quote them only
    # when the key is not a plain bare key.
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else ".".join(json.dumps(p) for p in key.split("."))


def generate_tls_files(
    directory: str | os.PathLike[str], hosts: Sequence[str] = ("127.0.0.1", "localhost"), days: int = 2
) -> TlsFiles:
    """A fresh CA and a server certificate for ``hosts`` (IPs and DNS names as SANs), written as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetnas local deployment CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    files = TlsFiles(out / "ca.crt", out / "server.pem", out / "server.key")
    write_text_atomic(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM).decode())
    write_text_atomic(files.server_cert, server_cert.public_bytes(serialization.Encoding.PEM).decode())
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    write_text_atomic(files.server_key, key_pem)
    files.server_key.chmod(0o600)
    return files


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when the starting thread ends (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork: no dlopen in the child

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _first_json(text: str, what: str) -> Any:
    start = text.find("{")
    if start < 0:
        raise DeploymentError(f"{what}: no JSON in the output:\n{text[-2000:]}")
    try:
        return json.JSONDecoder().raw_decode(text[start:])[0]
    except json.JSONDecodeError as exc:
        raise DeploymentError(f"{what}: unreadable JSON ({exc}):\n{text[-2000:]}") from None


def _read_app_config(app_dir: Path) -> dict[str, Any]:
    path = app_dir / "pyproject.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeploymentError(f"{path}: not found; app_dir must be a Flower app project") from None
    except tomllib.TOMLDecodeError as exc:
        raise DeploymentError(f"{path}: not valid TOML ({exc})") from None
    app = data.get("tool", {}).get("flwr", {}).get("app")
    if not isinstance(app, dict) or "components" not in app:
        raise DeploymentError(f"{path}: missing [tool.flwr.app] with [tool.flwr.app.components]")
    return _flatten(app.get("config", {}))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, Mapping):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


# ---- the harness -------------------------------------------------------------------------------
class LocalDeployment:
    """A SuperLink and N SuperNodes on this machine, started on enter and all stopped on exit.

    ``node_configs`` holds one mapping per SuperNode (its ``--node-config``, e.g. ``{"partition-id": 0,
    "num-partitions": 2, "hardware": "rpi4"}``). ``workdir`` (default: a fresh temporary directory,
    removed on exit unless ``keep_workdir``) holds ``flwr-home/``, ``logs/``, ``tls/`` and run outputs.
    """

    def __init__(
        self,
        node_configs: Sequence[Mapping[str, ConfigValue]],
        app_dir: str | os.PathLike[str] = DEFAULT_APP_DIR,
        *,
        tls: bool = False,
        workdir: str | os.PathLike[str] | None = None,
        keep_workdir: bool = False,
        ready_timeout_s: float = 90.0,
        grace_s: float = 5.0,
        out_dir_key: str | None = "out-dir",
        poll_s: float = 0.5,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        if not node_configs:
            raise ValueError("node_configs: need at least one SuperNode config")
        self.app_dir = Path(app_dir).resolve()
        self.app_config = _read_app_config(self.app_dir)
        self.node_configs = [dict(c) for c in node_configs]
        for i, cfg in enumerate(self.node_configs):
            format_config(cfg, what=f"node_configs[{i}]")
        self.tls = tls
        self.ready_timeout_s = ready_timeout_s
        self.grace_s = grace_s
        self.out_dir_key = out_dir_key if out_dir_key in self.app_config else None
        self.poll_s = poll_s
        self._progress = progress
        self.host = "127.0.0.1"
        self._bin = self._find_bin_dir()
        self._own_workdir = workdir is None
        self._keep_workdir = keep_workdir
        self.workdir = Path(tempfile.mkdtemp(prefix="fleetnas-deploy-")) if workdir is None else Path(workdir)
        self.flwr_home = self.workdir / "flwr-home"
        self.log_dir = self.workdir / "logs"
        self.tls_files: TlsFiles | None = None
        self.superlink_port = 0
        self._marker = uuid.uuid4().hex
        self._tracker = _Tracker(self._marker)
        self._started: list[_Started] = []
        self._runs = 0
        self._closed = False

    # -- context manager --
    def __enter__(self) -> LocalDeployment:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        left = self.close()
        if left and exc is None:
            raise DeploymentError(f"processes outlived the deployment: {left}")

    # -- public API --
    @property
    def superlink_address(self) -> str:
        """``host:port`` of the SuperLink (Fleet, Control and Runtime API share it in Flower 1.42)."""
        return f"{self.host}:{self.superlink_port}"

    @property
    def started_pids(self) -> tuple[int, ...]:
        """PIDs of every process seen in the deployment (our children and all their descendants)."""
        self._refresh()
        return tuple(sorted({pid for pid, _ in self._tracker.seen}))

    def seen_processes(self) -> dict[int, str]:
        """PID -> command line of every process seen in the deployment so far (as it was when first seen)."""
        self._refresh()
        return dict(self._tracker.cmdlines)

    def start(self) -> None:
        """Start the SuperLink and every SuperNode and wait until all SuperNodes are registered."""
        if self._started:
            raise DeploymentError("this LocalDeployment is already started")
        for d in (self.flwr_home, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._say(f"work directory {self.workdir} (FLWR_HOME, logs, outputs)")
        if self.tls:
            self.tls_files = generate_tls_files(self.workdir / "tls", hosts=(self.host, "localhost"))
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._start_once()
                return
            except DeploymentError as exc:
                # A port picked as free can be taken before our process binds it: new ports, new try.
                if attempt == _START_ATTEMPTS or not self._port_clash():
                    raise
                self._say(f"a port was taken meanwhile ({exc.__class__.__name__}); restarting with new ports")
                self._terminate_all()
                self._reap()
                self._started.clear()

    def submit(self, run_config: Mapping[str, ConfigValue] | None = None) -> tuple[int, Path | None]:
        """Submit one run of the app (``flwr run``); returns its run ID and its output directory (if any)."""
        overrides = dict(run_config or {})
        unknown = sorted(set(overrides) - set(self.app_config))
        if unknown:
            raise ValueError(
                f"run_config: unknown keys {unknown}; {self.app_dir / 'pyproject.toml'} "
                f"[tool.flwr.app.config] allows {sorted(self.app_config)}"
            )
        self._runs += 1
        out_dir: Path | None = None
        if self.out_dir_key is not None:
            if self.out_dir_key not in overrides:
                overrides[self.out_dir_key] = str(self.workdir / f"run-{self._runs}")
            out_dir = Path(str(overrides[self.out_dir_key]))
        cfg_path = self.workdir / f"run-{self._runs}.toml"
        write_text_atomic(cfg_path, format_config(overrides, what="run_config"))
        out = self._flwr(["run", str(self.app_dir), CONNECTION, "--run-config", str(cfg_path), "--format", "json"])
        data = _first_json(out, "flwr run")
        if not data.get("success") or data.get("run-id") is None:
            raise DeploymentError(f"flwr run did not start a run: {data}\n{self.log_tails()}")
        return int(data["run-id"]), out_dir

    def status(self, run_id: int) -> dict[str, Any]:
        """The run's entry in ``flwr list --format json`` (keys: status, status-details, elapsed, ...)."""
        data = _first_json(self._flwr(["list", CONNECTION, "--run-id", str(run_id), "--format", "json"]), "flwr list")
        runs = data.get("runs") or []
        if not runs:
            raise DeploymentError(f"flwr list: run {run_id} unknown to the SuperLink: {data}")
        return dict(runs[0])

    def wait(self, run_id: int, timeout_s: float, out_dir: Path | None = None) -> RunResult:
        """The RunResult once the run has finished; on timeout the run is stopped and DeploymentTimeoutError raised."""
        deadline = time.monotonic() + timeout_s
        last_status, reported = "", set[Path]()
        while True:
            self._refresh()
            self._check_superlink_alive()
            entry = self.status(run_id)
            status = str(entry.get("status", ""))
            if status != last_status:
                self._say(f"run {run_id}: {status}")
                last_status = status
            if out_dir is not None and out_dir.is_dir():
                # The ServerApp writes one round_NNN.json per round: report each as it appears.
                for path in sorted(set(out_dir.glob("round_*.json")) - reported):
                    reported.add(path)
                    self._say(f"run {run_id}: {path.name} written")
            if status.startswith(_FINISHED):
                break
            if time.monotonic() > deadline:
                with contextlib.suppress(DeploymentError):
                    self._flwr(["stop", str(run_id), CONNECTION])
                raise DeploymentTimeoutError(
                    f"run {run_id} not finished after {timeout_s:.0f} s (status {entry.get('status')!r})\n"
                    f"--- ServerApp log ---\n{self.run_log(run_id)[-3000:]}\n{self.log_tails()}"
                )
            time.sleep(max(self.poll_s, 2.0))  # each `flwr list` costs ~0.7 s of CPU
        return RunResult(
            run_id=run_id,
            status=str(entry.get("status")),
            details=str(entry.get("status-details", "")),
            elapsed_s=float(entry.get("elapsed", 0.0)),
            log=self.run_log(run_id),
            out_dir=out_dir,
        )

    def run(
        self, run_config: Mapping[str, ConfigValue] | None = None, timeout_s: float = 300.0, check: bool = True
    ) -> RunResult:
        """Submit a run, wait for it and return its RunResult; RunFailedError if it failed and ``check``."""
        run_id, out_dir = self.submit(run_config)
        result = self.wait(run_id, timeout_s, out_dir)
        if check and not result.succeeded:
            raise RunFailedError(
                f"run {run_id} ended {result.status!r}: {result.details}\n--- ServerApp log ---\n"
                f"{result.log[-4000:]}\n{self.log_tails()}",
                result,
            )
        return result

    def run_log(self, run_id: int) -> str:
        """The ServerApp's log of the run as stored by the SuperLink (``flwr log --show``)."""
        try:
            return self._flwr(["log", str(run_id), CONNECTION, "--show"])
        except DeploymentError as exc:
            return f"(log unavailable: {exc})"

    def kill_node(self, index: int, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to SuperNode ``index``'s process group (to test failures); returns its PID."""
        started = self._by_name(f"supernode-{index}")
        self._refresh()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(started.popen.pid, sig)
        return started.popen.pid

    def kill_superlink(self, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to the SuperLink alone (its SuperExec is left orphaned); returns its PID."""
        started = self._by_name("superlink")
        self._refresh()
        with contextlib.suppress(ProcessLookupError):
            os.kill(started.popen.pid, sig)
        return started.popen.pid

    def log_tails(self, lines: int = 25) -> str:
        """The last ``lines`` lines of every component's log, one block per component."""
        return "\n".join(f"--- {s.name} ({s.log_path}) ---\n{_tail(s.log_path, lines)}" for s in self._started)

    def leftover_processes(self) -> list[str]:
        """Descriptions of deployment processes still running (empty after a clean shutdown)."""
        self._tracker.add_marked()
        return [_describe(p) for p in self._tracker.alive()]

    def close(self) -> list[str]:
        """Stop every process of the deployment (SIGTERM, then SIGKILL); returns the ones that survived."""
        if self._closed:
            return self.leftover_processes()
        self._closed = True
        try:
            self._terminate_all()
        except KeyboardInterrupt:
            # A second Ctrl-C during shutdown: skip the grace period, but still kill everything.
            self._kill_all(signal.SIGKILL)
            raise
        finally:
            self._reap()
        left = self.leftover_processes()
        if self._own_workdir and not self._keep_workdir and not left:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return left

    # -- internals --
    def _say(self, line: str) -> None:
        if self._progress is not None:
            self._progress(line)

    def _reap(self) -> None:
        for s in self._started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                s.popen.wait(timeout=1.0)

    def _start_once(self) -> None:
        ports = free_ports(1 + len(self.node_configs), self.host)
        self.superlink_port = ports[0]
        self._write_flower_config()
        self._spawn("superlink", self._superlink_cmd())
        self._wait_superlink()
        self._say(f"SuperLink listening on {self.superlink_address} ({'TLS' if self.tls else 'insecure'})")
        for i, (cfg, port) in enumerate(zip(self.node_configs, ports[1:], strict=True)):
            cfg_path = self.workdir / f"node-{i}.toml"
            write_text_atomic(cfg_path, format_config(cfg, what=f"node_configs[{i}]"))
            self._spawn(f"supernode-{i}", self._supernode_cmd(cfg_path, port))
        self._wait_supernodes(len(self.node_configs))
        self._say(f"{len(self.node_configs)} SuperNodes online")

    def _port_clash(self) -> bool:
        return any("address already in use" in _tail(s.log_path, 200).lower() for s in self._started)

    def _find_bin_dir(self) -> Path:
        # Flower starts flower-superexec / flwr-serverapp / flwr-clientapp by name through PATH, so
        # the directory holding this interpreter's Flower scripts goes first on the children's PATH.
        here = Path(sys.executable).parent
        if (here / "flower-superlink").exists():
            return here
        found = shutil.which("flower-superlink")
        if found is None:
            raise DeploymentError(
                f"flower-superlink not found next to {sys.executable} or on PATH; "
                "install the federation extra: pip install 'fleetnas[federation]'"
            )
        return Path(found).parent

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "FLWR_HOME": str(self.flwr_home),
                "PATH": f"{self._bin}{os.pathsep}{env.get('PATH', '')}",
                MARKER_ENV: self._marker,
                # No network: Flower's telemetry and update check both phone home.
                "FLWR_TELEMETRY_ENABLED": "0",
                "FLWR_DISABLE_UPDATE_CHECK": "1",
                # Apps run in this environment; `uv sync` per run would need PyPI.
                "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                "UV_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1",
                "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.5",
            }
        )
        return env

    def _write_flower_config(self) -> None:
        conn: dict[str, ConfigValue] = {"address": self.superlink_address}
        if self.tls_files is not None:
            conn["root-certificates"] = str(self.tls_files.ca_cert)
        else:
            conn["insecure"] = True
        body = format_config(conn, what="connection")
        write_text_atomic(
            self.flwr_home / "config.toml", f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n{body}'
        )

    def _tls_args(self, client: bool) -> list[str]:
        if self.tls_files is None:
            return ["--insecure"]
        if client:
            return ["--root-certificates", str(self.tls_files.ca_cert)]
        return [
            "--ssl-ca-certfile",
            str(self.tls_files.ca_cert),
            "--ssl-certfile",
            str(self.tls_files.server_cert),
            "--ssl-keyfile",
            str(self.tls_files.server_key),
        ]

    def _superlink_cmd(self) -> list[str]:
        return [
            str(self._bin / "flower-superlink"),
            *self._tls_args(client=False),
            "--host",
            self.host,
            "--port",
            str(self.superlink_port),
            "--disable-runtime-dependency-installation",
        ]

    def _supernode_cmd(self, cfg_path: Path, port: int) -> list[str]:
        cmd = [
            str(self._bin / "flower-supernode"),
            *self._tls_args(client=True),
            "--superlink",
            self.superlink_address,
            "--host",
            self.host,
            "--port",
            str(port),
            "--node-config",
            str(cfg_path),
        ]
        if self.tls_files is not None:
            # The SuperNode's own Runtime API (to its SuperExec and ClientApps) gets TLS too.
            cmd += self._tls_args(client=False)
        return cmd

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self._env(),
                start_new_session=True,
                preexec_fn=_die_with_parent(),  # only prctl + getppid: no locks taken
            )
        self._started.append(_Started(name, popen, log_path))
        self._tracker.add_tree(popen.pid)

    def _by_name(self, name: str) -> _Started:
        for s in self._started:
            if s.name == name:
                return s
        raise ValueError(f"no started process named {name!r}; have {[s.name for s in self._started]}")

    def _refresh(self) -> None:
        for s in self._started:
            self._tracker.add_tree(s.popen.pid)

    def _check_superlink_alive(self) -> None:
        sl = self._by_name("superlink")
        if sl.popen.poll() is not None:
            raise DeploymentError(f"the SuperLink exited with code {sl.popen.returncode}\n{self.log_tails()}")

    def _wait_until(self, what: Callable[[], str], ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            self._refresh()
            if ready():
                return
            if time.monotonic() > deadline:
                raise DeploymentTimeoutError(f"{what()} after {self.ready_timeout_s:.0f} s\n{self.log_tails()}")
            time.sleep(self.poll_s)

    def _superlink_ready(self) -> bool:
        # Ready = *our* SuperLink listens on the port: a connect() alone could reach another program
        # that grabbed the port after we picked it.
        self._check_superlink_alive()
        try:
            conns = psutil.Process(self._by_name("superlink").popen.pid).net_connections(kind="tcp")
        except psutil.Error:
            return False
        return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr[1] == self.superlink_port for c in conns)

    def _wait_superlink(self) -> None:
        self._wait_until(lambda: f"the SuperLink is not listening on {self.superlink_address}", self._superlink_ready)

    def _wait_supernodes(self, n: int) -> None:
        online: list[Any] = []

        def ready() -> bool:
            self._check_superlink_alive()
            for s in self._started:
                if s.name.startswith("supernode") and s.popen.poll() is not None:
                    raise DeploymentError(f"{s.name} exited with code {s.popen.returncode}\n{self.log_tails()}")
            data = _first_json(self._flwr(["supernode", "ls", CONNECTION, "--format", "json"]), "flwr supernode ls")
            online[:] = [nd for nd in data.get("nodes", []) if str(nd.get("status", "")).lower() == "online"]
            return len(online) >= n

        self._wait_until(lambda: f"only {len(online)} of {n} SuperNodes online", ready)

    def _flwr(self, args: list[str], timeout_s: float = 60.0) -> str:
        cmd = [str(self._bin / "flwr"), *args]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=self._env(), cwd=self.workdir, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise DeploymentError(f"`{' '.join(cmd)}` took more than {timeout_s:.0f} s") from exc
        if proc.returncode != 0:
            raise DeploymentError(
                f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            )
        return proc.stdout

    def _terminate_all(self) -> None:
        self._refresh()
        self._tracker.add_marked()
        self._kill_all(signal.SIGTERM)
        _, alive = psutil.wait_procs(self._tracker.alive(), timeout=self.grace_s)
        if alive:
            self._kill_all(signal.SIGKILL)
            psutil.wait_procs(self._tracker.alive(), timeout=self.grace_s)
        # A process may have been started between the last poll and the first signal.
        self._tracker.add_marked()
        if self._tracker.alive():
            self._kill_all(signal.SIGKILL)
            psutil.wait_procs(self._tracker.alive(), timeout=self.grace_s)

    def _kill_all(self, sig: int) -> None:
        for s in self._started:
            if s.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(s.popen.pid, sig)
        for proc in self._tracker.alive():
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())[:160]}"
    except psutil.Error:
        return str(proc.pid)


# ---- command line ------------------------------------------------------------------------------
def _parse_value(text: str) -> ConfigValue:
    """A TOML scalar (``3``, ``0.5``, ``true``, ``"x"``); anything else is taken as a plain string."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if not isinstance(value, str | int | float | bool):
        raise ValueError(f"--run-config: {text!r}: only str, int, float and bool values are allowed")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the app once on a local deployment, print its summary as JSON; returns the exit code."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m federation.deploy",
        description="One run of the federated search on Flower's Deployment Engine on this machine "
        "(a SuperLink and one SuperNode per --hardware entry); everything is stopped at the end.",
    )
    parser.add_argument(
        "--hardware", default="rpi4,orin_nx", help="comma-separated catalogue names, one SuperNode each"
    )
    parser.add_argument("--deadline-ms", type=float, default=None, help="every node's latency deadline (ms)")
    parser.add_argument("--out", required=True, help="the run's output directory (the app's out-dir)")
    parser.add_argument(
        "-c",
        "--run-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a run_config override (TOML value)",
    )
    parser.add_argument("--app-dir", default=str(DEFAULT_APP_DIR), help="the Flower app project")
    parser.add_argument("--tls", action="store_true", help="TLS with a throw-away CA")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, FLWR_HOME)")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="give up on the run after this long")
    args = parser.parse_args(argv)

    tiers = [t.strip() for t in args.hardware.split(",") if t.strip()]
    nodes: list[dict[str, ConfigValue]] = []
    for i, tier in enumerate(tiers):
        node: dict[str, ConfigValue] = {"partition-id": i, "num-partitions": len(tiers), "hardware": tier}
        if args.deadline_ms is not None:
            node["deadline-ms"] = args.deadline_ms
        nodes.append(node)
    overrides: dict[str, ConfigValue] = {}
    for item in args.run_config:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--run-config {item!r}: need KEY=VALUE")
        overrides[key.strip()] = _parse_value(value.strip())
    out = Path(args.out).resolve()
    overrides.setdefault("out-dir", str(out))

    def say(line: str) -> None:
        print(f"[deploy] {line}", file=sys.stderr, flush=True)

    with LocalDeployment(nodes, args.app_dir, tls=args.tls, keep_workdir=args.keep, progress=say) as dep:
        result = dep.run(overrides, timeout_s=args.timeout_s, check=False)
    summary_path = out / "summary.json"
    report = {
        "run_id": result.run_id,
        "status": result.status,
        "details": result.details,
        "elapsed_s": result.elapsed_s,
        "out_dir": str(out),
        "summary": json.loads(summary_path.read_text()) if summary_path.is_file() else None,
    }
    print(json.dumps(report, indent=1))
    if not result.succeeded:
        say(f"the run failed; its ServerApp log:\n{result.log}")
    return 0 if result.succeeded else 1


if __name__ == "__main__":
    raise SystemExit(main())
