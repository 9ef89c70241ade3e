"""Bundle: the deployable artefact — a manifest plus one ONNX model per mode (+ shared weights).

A bundle is a directory::

    manifest.json      versioned description (this module validates it)
    high.onnx          one model per mode, ordered in the manifest from most to least capable
    balanced.onnx
    low.onnx
    shared.bin         optional: weights shared by the modes (raw tensors, offsets in the manifest)

or the same files in a single uncompressed tar archive (``.fnb``; ONNX weights barely compress).

Manifest (``format: fleetnas.bundle/1``)::

    {
      "format": "fleetnas.bundle/1",
      "bundle_version": "1.0.0",
      "created_by": "fleetnas 0.1.0",
      "created_at": "2026-11-28T14:00:00Z",
      "device": "rpi4",                          # target device profile name (optional)
      "device_profile": {...},                   # the profile itself (optional; DeviceProfile.to_json)
      "modes": [
        {"name": "high", "file": "high.onnx",
         "arch": {...} | null, "netspec": {...},
         "input": {"name": "input", "shape": ["batch", 3, 224, 224], "dtype": "float32"},
         "outputs": ["logits"],
         "expected": {"rpi4": {"latency_ms": 25.1, "energy_mj": 104.7, "accuracy": null}}},
        ...
      ],
      "shared_weights": {"file": "shared.bin",
                         "tensors": {"stem.weight": {"offset": 0, "shape": [16, 3, 3, 3], "dtype": "float32"}}},
      "files": {"high.onnx": "<sha256>", "shared.bin": "<sha256>", ...}
    }

Every defect raises ``BundleError`` naming the file and the field; nothing is half-loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.fileio import temp_path_beside, write_text_atomic
from runtime.netspec import NetSpec, NetSpecError
from runtime.onnx_builder import SharedEntry, SharedWeights

BUNDLE_FORMAT = "fleetnas.bundle/1"
SUPPORTED_FORMATS = (BUNDLE_FORMAT,)
MANIFEST = "manifest.json"
ARCHIVE_SUFFIX = ".fnb"
_MODE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_ONNX_DTYPES = {"float32": 1, "uint8": 2, "int8": 3, "float16": 10}


class BundleError(ValueError):
    """A bundle defect; the message names the file and the field."""


@dataclass(frozen=True)
class TensorSpec:
    """A model input: name, shape (ints, or a string for a symbolic dimension) and dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    def concrete_shape(self, batch: int = 1) -> tuple[int, ...]:
        """The shape with symbolic dimensions replaced by ``batch``."""
        return tuple(d if isinstance(d, int) else batch for d in self.shape)


@dataclass(frozen=True)
class Expected:
    """What a mode is expected to achieve on one device profile (None = unknown)."""

    latency_ms: float | None = None
    energy_mj: float | None = None
    accuracy: float | None = None

    def to_json(self) -> dict[str, float | None]:
        """JSON form."""
        return {"latency_ms": self.latency_ms, "energy_mj": self.energy_mj, "accuracy": self.accuracy}


@dataclass(frozen=True)
class ModeEntry:
    """One mode of a bundle."""

    name: str
    file: str
    netspec: NetSpec
    input: TensorSpec
    outputs: tuple[str, ...]
    arch: Mapping[str, Any] | None = None
    expected: Mapping[str, Expected] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "name": self.name,
            "file": self.file,
            "arch": dict(self.arch) if self.arch is not None else None,
            "netspec": self.netspec.to_json(),
            "input": self.input.to_json(),
            "outputs": list(self.outputs),
            "expected": {k: v.to_json() for k, v in self.expected.items()},
        }


@dataclass(frozen=True)
class Manifest:
    """A validated bundle manifest."""

    bundle_version: str
    created_by: str
    modes: tuple[ModeEntry, ...]
    files: Mapping[str, str]  # file name -> sha256 hex
    created_at: str = ""
    device: str | None = None
    device_profile: Mapping[str, Any] | None = None
    shared_weights: SharedWeights | None = None
    format: str = BUNDLE_FORMAT

    @property
    def mode_names(self) -> tuple[str, ...]:
        """Mode names, most to least capable."""
        return tuple(m.name for m in self.modes)

    def mode(self, name: str) -> ModeEntry:
        """The named mode; BundleError lists the known ones."""
        for m in self.modes:
            if m.name == name:
                return m
        raise BundleError(f"{MANIFEST}: field 'modes': no mode {name!r}; modes: {', '.join(self.mode_names)}")

    def to_json(self) -> dict[str, Any]:
        """JSON form (the manifest file's content)."""
        return {
            "format": self.format,
            "bundle_version": self.bundle_version,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "device": self.device,
            "device_profile": dict(self.device_profile) if self.device_profile is not None else None,
            "modes": [m.to_json() for m in self.modes],
            "shared_weights": _shared_to_json(self.shared_weights) if self.shared_weights else None,
            "files": dict(self.files),
        }

    # ---- parsing -----------------------------------------------------------------------------
    @classmethod
    def from_json(cls, data: Any, source: str = MANIFEST) -> Manifest:
        """Validate a parsed manifest; errors name ``source`` and the field."""
        return _parse_manifest(data, source)


def _err(source: str, field_path: str, problem: str) -> BundleError:
    return BundleError(f"{source}: field '{field_path}': {problem}")


def _require(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], source: str, prefix: str = "") -> Any:
    path = f"{prefix}{key}"
    if key not in data:
        raise _err(source, path, "missing")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _err(source, path, f"expected {names}, got {type(value).__name__}")
    return value


def _check_keys(data: Mapping[str, Any], allowed: set[str], source: str, prefix: str) -> None:
    unknown = set(data) - allowed
    if unknown:
        where = prefix.rstrip(".") or "manifest"
        raise BundleError(
            f"{source}: unknown field(s) {sorted(unknown)} in {where}; allowed: {', '.join(sorted(allowed))}"
        )


def _parse_input(data: Any, source: str, prefix: str) -> TensorSpec:
    if not isinstance(data, Mapping):
        raise _err(source, prefix.rstrip("."), "expected an object with name, shape, dtype")
    _check_keys(data, {"name", "shape", "dtype"}, source, prefix)
    name = _require(data, "name", str, source, prefix)
    shape = _require(data, "shape", list, source, prefix)
    for i, d in enumerate(shape):
        if not ((isinstance(d, int) and not isinstance(d, bool) and d > 0) or (isinstance(d, str) and d)):
            raise _err(source, f"{prefix}shape[{i}]", f"expected a positive int or a symbolic name, got {d!r}")
    dtype = data.get("dtype", "float32")
    if dtype not in _ONNX_DTYPES:
        raise _err(source, f"{prefix}dtype", f"{dtype!r} not supported; allowed: {', '.join(_ONNX_DTYPES)}")
    return TensorSpec(name, tuple(shape), dtype)


def _parse_expected(data: Any, source: str, prefix: str) -> dict[str, Expected]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise _err(source, prefix.rstrip("."), "expected an object keyed by device profile name")
    out = {}
    for device, values in data.items():
        p = f"{prefix}{device}."
        if not isinstance(values, Mapping):
            raise _err(source, p.rstrip("."), "expected an object with latency_ms, energy_mj, accuracy")
        _check_keys(values, {"latency_ms", "energy_mj", "accuracy"}, source, p)
        nums = {}
        for key in ("latency_ms", "energy_mj", "accuracy"):
            v = values.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or v < 0):
                raise _err(source, f"{p}{key}", f"expected a non-negative number or null, got {v!r}")
            nums[key] = None if v is None else float(v)
        out[str(device)] = Expected(**nums)
    return out


def _parse_mode(data: Any, source: str, index: int) -> ModeEntry:
    prefix = f"modes[{index}]."
    if not isinstance(data, Mapping):
        raise _err(source, f"modes[{index}]", "expected an object")
    allowed = {"name", "file", "arch", "netspec", "input", "outputs", "expected"}
    _check_keys(data, allowed, source, prefix)
    name = _require(data, "name", str, source, prefix)
    if not _MODE_NAME.match(name):
        raise _err(source, f"{prefix}name", f"{name!r} is not a valid mode name (letters, digits, _ . -)")
    file = _require(data, "file", str, source, prefix)
    if "/" in file or "\\" in file or file in ("", ".", ".."):
        raise _err(source, f"{prefix}file", f"{file!r} must be a plain file name inside the bundle")
    try:
        netspec = NetSpec.from_json(_require(data, "netspec", Mapping, source, prefix), source=f"{prefix}netspec")
    except NetSpecError as exc:
        raise BundleError(f"{source}: {exc}") from None
    outputs = _require(data, "outputs", list, source, prefix)
    if not outputs or not all(isinstance(o, str) and o for o in outputs):
        raise _err(source, f"{prefix}outputs", "expected a non-empty list of output names")
    arch = data.get("arch")
    if arch is not None and not isinstance(arch, Mapping):
        raise _err(source, f"{prefix}arch", "expected an object or null")
    return ModeEntry(
        name=name,
        file=file,
        netspec=netspec,
        input=_parse_input(data.get("input"), source, f"{prefix}input."),
        outputs=tuple(outputs),
        arch=arch,
        expected=_parse_expected(data.get("expected"), source, f"{prefix}expected."),
    )


def _shared_to_json(shared: SharedWeights) -> dict[str, Any]:
    """The manifest's form of a shared layout: ``{"file", "tensors": {name: {offset, shape, dtype}}}``."""
    layout = shared.to_json()
    return {"file": layout["location"], "tensors": layout["entries"]}


def _parse_shared(data: Any, source: str) -> SharedWeights | None:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise _err(source, "shared_weights", "expected an object with file and tensors, or null")
    _check_keys(data, {"file", "tensors"}, source, "shared_weights.")
    file = _require(data, "file", str, source, "shared_weights.")
    if "/" in file or "\\" in file or file in ("", ".", ".."):
        raise _err(source, "shared_weights.file", f"{file!r} must be a plain file name inside the bundle")
    tensors = _require(data, "tensors", Mapping, source, "shared_weights.")
    out = {}
    for name, t in tensors.items():
        p = f"shared_weights.tensors.{name}."
        if not isinstance(t, Mapping):
            raise _err(source, p.rstrip("."), "expected an object with offset, shape, dtype")
        _check_keys(t, {"offset", "shape", "dtype"}, source, p)
        offset = _require(t, "offset", int, source, p)
        shape = _require(t, "shape", list, source, p)
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise _err(source, f"{p}shape", f"expected a list of positive integers, got {shape!r}")
        try:
            out[str(name)] = SharedEntry(offset, tuple(shape), str(t.get("dtype", "float32")))
        except ValueError as exc:
            raise BundleError(f"{source}: {p.rstrip('.')}: {exc}") from None
    return SharedWeights(file, out)


def _parse_manifest(data: Any, source: str) -> Manifest:
    if not isinstance(data, Mapping):
        raise BundleError(f"{source}: the manifest must be a JSON object")
    fmt = data.get("format")
    if fmt not in SUPPORTED_FORMATS:
        raise _err(source, "format", f"{fmt!r} is not supported; allowed: {', '.join(SUPPORTED_FORMATS)}")
    allowed = {
        "format",
        "bundle_version",
        "created_by",
        "created_at",
        "device",
        "device_profile",
        "modes",
        "shared_weights",
        "files",
    }
    _check_keys(data, allowed, source, "")
    version = _require(data, "bundle_version", str, source)
    created_by = _require(data, "created_by", str, source)
    raw_modes = _require(data, "modes", list, source)
    if not raw_modes:
        raise _err(source, "modes", "a bundle needs at least one mode")
    modes = tuple(_parse_mode(m, source, i) for i, m in enumerate(raw_modes))
    seen: dict[str, int] = {}
    for i, m in enumerate(modes):
        if m.name in seen:
            raise _err(source, f"modes[{i}].name", f"duplicate mode name {m.name!r} (also modes[{seen[m.name]}])")
        seen[m.name] = i
    files = _require(data, "files", Mapping, source)
    for name, digest in files.items():
        if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise _err(source, f"files.{name}", "expected a lowercase hex sha256 digest")
    shared = _parse_shared(data.get("shared_weights"), source)
    needed = [m.file for m in modes] + ([shared.location] if shared else [])
    for i, name in enumerate(needed):
        if name not in files:
            raise _err(source, "files", f"no sha256 for {name!r} (listed by the modes / shared_weights)")
        if needed.index(name) != i and (shared is None or name != shared.location):
            raise _err(source, "modes", f"two modes use the same file {name!r}")
    device_profile = data.get("device_profile")
    if device_profile is not None and not isinstance(device_profile, Mapping):
        raise _err(source, "device_profile", "expected an object or null")
    device = data.get("device")
    if device is not None and not isinstance(device, str):
        raise _err(source, "device", "expected a device profile name or null")
    return Manifest(
        bundle_version=version,
        created_by=created_by,
        created_at=str(data.get("created_at", "")),
        modes=modes,
        files=dict(files),
        device=device,
        device_profile=device_profile,
        shared_weights=shared,
        format=fmt,
    )


# ---- files -----------------------------------------------------------------------------------
def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _onnx_dims(value_info: Any) -> tuple[int | str, ...]:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)


def _check_model_io(path: Path, mode: ModeEntry, index: int) -> None:
    """Load the ONNX graph (weights not read) and compare its inputs/outputs with the manifest."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends without a common base
        raise BundleError(f"{path.name}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from None
    init_names = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init_names]
    if len(inputs) != 1:
        raise BundleError(f"{path.name}: expected exactly one graph input, found {[i.name for i in inputs]}")
    graph_in = inputs[0]
    spec = mode.input
    where = f"modes[{index}].input"
    if graph_in.name != spec.name:
        raise BundleError(
            f"{path.name}: input is named {graph_in.name!r} but {MANIFEST} field '{where}.name' says {spec.name!r}"
        )
    dims = _onnx_dims(graph_in)
    if len(dims) != len(spec.shape) or any(
        (isinstance(m, int) and isinstance(g, int) and g != m) or isinstance(m, int) != isinstance(g, int)
        for g, m in zip(dims, spec.shape, strict=False)
    ):
        raise BundleError(
            f"{path.name}: input shape {list(dims)} disagrees with {MANIFEST} field '{where}.shape' {list(spec.shape)}"
        )
    elem = graph_in.type.tensor_type.elem_type
    if elem != _ONNX_DTYPES[spec.dtype]:
        raise BundleError(
            f"{path.name}: input element type {elem} disagrees with {MANIFEST} field '{where}.dtype' {spec.dtype!r}"
        )
    # A mode may run at a lower resolution than the bundle's input (its graph resizes first), but
    # the channel count must agree with its network.
    if len(spec.shape) != 4 or spec.shape[1] != mode.netspec.input_shape[0]:
        raise BundleError(
            f"{MANIFEST}: field '{where}.shape' {list(spec.shape)} does not fit the mode's netspec input "
            f"{list(mode.netspec.input_shape)} (need [batch, {mode.netspec.input_shape[0]}, H, W])"
        )
    outs = [o.name for o in model.graph.output]
    if outs != list(mode.outputs):
        raise BundleError(
            f"{path.name}: outputs {outs} disagree with {MANIFEST} field 'modes[{index}].outputs' {list(mode.outputs)}"
        )


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk: its directory and manifest."""

    root: Path
    manifest: Manifest
    # Keeps an extracted archive's temporary directory alive as long as the Bundle.
    _tempdir: Any = field(default=None, compare=False, repr=False)

    @property
    def modes(self) -> tuple[str, ...]:
        """Mode names, most to least capable."""
        return self.manifest.mode_names

    def path(self, file: str) -> Path:
        """Absolute path of a bundle file."""
        return self.root / file

    def model_path(self, mode: str) -> Path:
        """Path of a mode's ONNX model."""
        return self.path(self.manifest.mode(mode).file)

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> Bundle:
        """Open a bundle directory or ``.fnb`` archive; with ``verify`` check hashes and models.

        Raises BundleError naming the file and field of the first defect.
        """
        p = Path(path)
        tempdir = None
        if p.is_file():
            tempdir = tempfile.TemporaryDirectory(prefix="fleetnas-bundle-")
            unpack(p, Path(tempdir.name))
            root = Path(tempdir.name)
        elif p.is_dir():
            root = p
        else:
            raise BundleError(f"{p}: no such bundle directory or archive")
        manifest_path = root / MANIFEST
        try:
            data = json.loads(manifest_path.read_text())
        except FileNotFoundError:
            raise BundleError(f"{p}: missing {MANIFEST}") from None
        except json.JSONDecodeError as exc:
            raise BundleError(f"{p / MANIFEST if root == p else MANIFEST}: not valid JSON ({exc})") from None
        manifest = Manifest.from_json(data, source=str(manifest_path if root == p else f"{p}:{MANIFEST}"))
        bundle = cls(root, manifest, tempdir)
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        """Check every file exists with its sha256, and every model's I/O against the manifest."""
        for name, digest in self.manifest.files.items():
            f = self.root / name
            if not f.is_file():
                raise BundleError(f"{name}: missing from the bundle (listed in {MANIFEST} field 'files')")
            actual = sha256_file(f)
            if actual != digest:
                raise BundleError(
                    f"{name}: sha256 mismatch ({MANIFEST} field 'files.{name}' says {digest[:12]}…, "
                    f"file has {actual[:12]}…)"
                )
        shared = self.manifest.shared_weights
        if shared is not None:
            size = (self.root / shared.location).stat().st_size
            for tname, t in shared.entries.items():
                if t.offset + t.nbytes > size:
                    raise BundleError(
                        f"{shared.location}: tensor {tname!r} ends at byte {t.offset + t.nbytes} beyond the file "
                        f"({size} bytes; {MANIFEST} field 'shared_weights.tensors.{tname}')"
                    )
        for i, mode in enumerate(self.manifest.modes):
            _check_model_io(self.root / mode.file, mode, i)


# ---- writing ---------------------------------------------------------------------------------
def write_manifest(root: Path, manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically."""
    write_text_atomic(root / MANIFEST, json.dumps(manifest.to_json(), indent=2) + "\n")


def publish_directory(staging: Path, out: Path) -> None:
    """Move a fully written staging directory to ``out``; an existing ``out`` is replaced only then.

    The previous bundle (if any) is kept as ``out`` until the new one is complete, so a failure
    while building never leaves the user with a half-written bundle.
    """
    out = out.resolve()
    if out.exists():
        backup = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, backup)
        try:
            os.replace(staging, out)
        except BaseException:
            os.replace(backup, out)
            raise
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(staging, out)


def pack(bundle_dir: str | Path, archive: str | Path) -> Path:
    """Write a bundle directory as one uncompressed tar archive (atomically); returns its path."""
    src = Path(bundle_dir)
    Bundle.load(src)  # never pack a defective bundle
    dst = Path(archive)
    tmp = temp_path_beside(dst)  # tarfile creates it: the umask's permissions, not mkstemp's 0600
    try:
        with tarfile.open(tmp, "w") as tar:
            for f in sorted(src.iterdir()):
                if f.is_file() and not f.name.startswith("."):
                    tar.add(f, arcname=f.name)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dst


def unpack(archive: Path, dest: Path) -> None:
    """Extract a bundle archive into ``dest``, refusing anything but plain files at the top level."""
    try:
        with tarfile.open(archive, "r") as tar:
            members = tar.getmembers()
            for m in members:
                if not m.isfile() or "/" in m.name or m.name.startswith(".."):
                    raise BundleError(f"{archive}: archive member {m.name!r} is not a plain top-level file")
            tar.extractall(dest, members=members, filter="data")
    except tarfile.TarError as exc:
        raise BundleError(f"{archive}: not a bundle archive ({exc})") from None



__all__: Sequence[str] = (
    "ARCHIVE_SUFFIX",
    "BUNDLE_FORMAT",
    "MANIFEST",
    "Bundle",
    "BundleError",
    "Expected",
    "Manifest",
    "ModeEntry",
    "TensorSpec",
    "pack",
    "publish_directory",
    "sha256_file",
    "unpack",
    "write_manifest",
)
