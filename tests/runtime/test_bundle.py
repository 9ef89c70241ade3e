"""Bundles: build, verify, archive, and every defect one by one (each names the file and field)."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import onnx
import pytest

from runtime.bundle import MANIFEST, Bundle, BundleError, pack, sha256_file
from runtime.bundle_build import ModeSpec, build_bundle
from tests.runtime.conftest import three_modes


def _copy(bundle: Bundle, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(bundle.root, dst)
    return dst


def _edit_manifest(root: Path, edit) -> None:
    data = json.loads((root / MANIFEST).read_text())
    edit(data)
    (root / MANIFEST).write_text(json.dumps(data))


def _rehash(root: Path, name: str) -> None:
    _edit_manifest(root, lambda d: d["files"].__setitem__(name, sha256_file(root / name)))


def test_built_bundle_verifies_and_describes_itself(shared_bundle):
    m = shared_bundle.manifest
    assert m.mode_names == ("high", "balanced", "low")
    assert m.shared_weights is not None and m.shared_weights.location == "shared.bin"
    assert set(m.files) == {"high.onnx", "balanced.onnx", "low.onnx", "shared.bin"}
    for mode in m.modes:
        assert mode.input.shape == ("batch", 1, 28, 28)
        assert mode.expected["rpi4"].latency_ms > 0 and mode.expected["rpi4"].energy_mj > 0
        assert mode.arch is not None and mode.arch["space"] == "tiny"
    assert m.device == "rpi4" and m.device_profile["name"] == "rpi4"
    # weights are stored once: the mode models hold graphs, not tensors
    sizes = {f: (shared_bundle.root / f).stat().st_size for f in m.files}
    assert sizes["high.onnx"] < sizes["shared.bin"] / 5


def test_every_mode_model_loads_on_its_own(shared_bundle):
    import onnxruntime as ort

    for mode in shared_bundle.manifest.modes:
        session = ort.InferenceSession(str(shared_bundle.root / mode.file), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape[1:] == [1, 28, 28]


def test_archive_round_trip(shared_bundle, tmp_path):
    archive = pack(shared_bundle.root, tmp_path / "model.fnb")
    loaded = Bundle.load(archive)
    assert loaded.manifest == shared_bundle.manifest
    assert (loaded.root / "shared.bin").read_bytes() == (shared_bundle.root / "shared.bin").read_bytes()


def test_build_archive_directly(tmp_path):
    modes = three_modes()[:1]
    b = build_bundle(modes, tmp_path / "one.fnb", share_weights=False)
    assert b.modes == ("high",) and b.manifest.shared_weights is None
    assert (tmp_path / "one.fnb").is_file()


def test_rebuild_replaces_only_when_complete(tmp_path):
    out = tmp_path / "b"
    build_bundle(three_modes()[:2], out, share_weights=False)
    bad = [ModeSpec("x", three_modes()[0].netspec), ModeSpec("x", three_modes()[1].netspec)]
    with pytest.raises(BundleError, match="duplicate"):
        build_bundle(bad, out)
    assert Bundle.load(out).modes == ("high", "balanced")  # the previous bundle is intact
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no staging left behind


@pytest.mark.parametrize(
    ("defect", "pattern"),
    [
        ("missing_file", r"low.onnx: missing"),
        ("hash_mismatch", r"shared.bin: sha256 mismatch.*files.shared.bin"),
        ("format", r"field 'format': 'fleetnas.bundle/9' is not supported; allowed: fleetnas.bundle/1"),
        ("bad_onnx", r"high.onnx: not a loadable ONNX model"),
        ("input_shape", r"high.onnx: input shape \['batch', 1, 28, 28\] disagrees.*modes\[0\].input.shape"),
        ("input_name", r"balanced.onnx: input is named 'input'.*modes\[1\].input.name"),
        ("duplicate_mode", r"field 'modes\[2\].name': duplicate mode name 'high' \(also modes\[0\]\)"),
        ("no_manifest", r"missing manifest.json"),
        ("manifest_json", r"manifest.json: not valid JSON"),
        ("unknown_field", r"unknown field\(s\) \['colour'\].*allowed"),
        ("missing_field", r"field 'bundle_version': missing"),
        ("shared_range", r"shared.bin: tensor .* beyond the file"),
        ("outputs", r"low.onnx: outputs \['logits'\] disagree.*modes\[2\].outputs"),
        ("mode_file_path", r"field 'modes\[0\].file'.*plain file name"),
        ("bad_netspec", r"modes\[1\].netspec: layers\[0\].*'act'"),
    ],
)
def test_each_defect_names_file_and_field(shared_bundle, tmp_path, defect, pattern):
    root = _copy(shared_bundle, tmp_path)
    if defect == "missing_file":
        (root / "low.onnx").unlink()
    elif defect == "hash_mismatch":
        with (root / "shared.bin").open("ab") as fh:
            fh.write(b"\0")
    elif defect == "format":
        _edit_manifest(root, lambda d: d.__setitem__("format", "fleetnas.bundle/9"))
    elif defect == "bad_onnx":
        (root / "high.onnx").write_bytes(b"this is not a protobuf")
        _rehash(root, "high.onnx")
    elif defect == "input_shape":
        _edit_manifest(root, lambda d: d["modes"][0]["input"].__setitem__("shape", ["batch", 1, 32, 32]))
    elif defect == "input_name":
        _edit_manifest(root, lambda d: d["modes"][1]["input"].__setitem__("name", "image"))
    elif defect == "duplicate_mode":
        _edit_manifest(root, lambda d: d["modes"][2].__setitem__("name", "high"))
    elif defect == "no_manifest":
        (root / MANIFEST).unlink()
    elif defect == "manifest_json":
        (root / MANIFEST).write_text("{")
    elif defect == "unknown_field":
        _edit_manifest(root, lambda d: d.__setitem__("colour", "blue"))
    elif defect == "missing_field":
        _edit_manifest(root, lambda d: d.pop("bundle_version"))
    elif defect == "shared_range":

        def grow(d):
            name = next(iter(d["shared_weights"]["tensors"]))
            d["shared_weights"]["tensors"][name]["offset"] = 10**9

        _edit_manifest(root, grow)
    elif defect == "outputs":
        _edit_manifest(root, lambda d: d["modes"][2].__setitem__("outputs", ["probs"]))
    elif defect == "mode_file_path":
        _edit_manifest(root, lambda d: d["modes"][0].__setitem__("file", "../high.onnx"))
    elif defect == "bad_netspec":
        _edit_manifest(root, lambda d: d["modes"][1]["netspec"]["layers"][0].__setitem__("act", "gelu"))
    with pytest.raises(BundleError, match=pattern):
        Bundle.load(root)


def test_archive_with_a_path_member_is_refused(tmp_path):
    evil = tmp_path / "evil.fnb"
    payload = tmp_path / "x"
    payload.write_text("x")
    with tarfile.open(evil, "w") as tar:
        tar.add(payload, arcname="../escape")
    with pytest.raises(BundleError, match="not a plain top-level file"):
        Bundle.load(evil)


def test_resized_low_mode_keeps_the_bundle_input(shared_bundle):
    model = onnx.load(str(shared_bundle.root / "low.onnx"), load_external_data=False)
    assert any(n.op_type == "Resize" for n in model.graph.node)
    assert shared_bundle.manifest.mode("low").netspec.input_shape == (1, 20, 20)


def test_bundle_files_and_directory_get_the_umask_permissions(tmp_path):
    import stat

    mask = os.umask(0o022)
    os.umask(mask)
    out = tmp_path / "perm"
    build_bundle(three_modes()[:2], out, share_weights=False)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask  # not mkdtemp's 0700
    for f in out.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, f.name  # not mkstemp's 0600
    archive = build_bundle(three_modes()[:2], tmp_path / "perm.fnb", share_weights=False)
    assert stat.S_IMODE((tmp_path / "perm.fnb").stat().st_mode) == 0o666 & ~mask, archive
