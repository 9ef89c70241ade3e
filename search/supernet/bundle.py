"""Deployable bundles from a trained supernet: the three modes of a ModePlan with trained weights.

For each mode of the plan (most to least capable) the subnet is extracted from the supernet, its
BatchNorm statistics recalibrated on training images (inherited statistics belong to no subnet),
and its BatchNorm folded into the convolutions (``folded_weights``). The bundle is then written
by ``runtime.bundle_build.build_bundle`` — the same torch-free graph builder every bundle uses —
with each mode's own weights: after recalibration the modes no longer share their folded tensors,
so the private layout (the runtime's default and faster layout anyway) is the only faithful one.

Every mode is then checked on the *shipped* artefact: its ONNX model is run in ONNX Runtime on the
held-out test split and compared with the torch subnet (max |Δlogit|), and the accuracy written into
the manifest is the ONNX model's own test accuracy. Latency and energy per device in the manifest
are the analytic roofline/DVFS predictions of ``build_bundle``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from runtime.bundle import Bundle
from runtime.bundle_build import ModeSpec, build_bundle
from search.arch import Arch
from search.data import Dataset
from search.modes import ModePlan, ModeSelectionError
from search.supernet.evaluation import SupernetEvaluator
from search.supernet.export import folded_weights
from search.supernet.model import resize_input
from search.supernet.trained import TrainedSupernet

__all__ = ["ExportedMode", "bundle_from_modeplan"]


@dataclass(frozen=True)
class ExportedMode:
    """What one exported mode measured: accuracies (%) and ONNX-vs-torch parity."""

    name: str
    arch: dict[str, Any]
    resolution: int
    val_accuracy: float
    test_accuracy_torch: float
    test_accuracy_onnx: float
    max_abs_diff: float
    params: int

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "name": self.name,
            "arch": self.arch,
            "resolution": self.resolution,
            "val_accuracy": self.val_accuracy,
            "test_accuracy_torch": self.test_accuracy_torch,
            "test_accuracy_onnx": self.test_accuracy_onnx,
            "max_abs_diff": self.max_abs_diff,
            "params": self.params,
        }


def _onnx_logits(model_path: Path, x: np.ndarray, batch: int = 256) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)])


def _torch_logits(module: torch.nn.Module, x: np.ndarray, resolution: int, batch: int = 256) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            t = resize_input(torch.from_numpy(x[i : i + batch]), resolution)
            out.append(cast(Tensor, module(t)).numpy())
    return np.concatenate(out)


def bundle_from_modeplan(
    trained: TrainedSupernet,
    plan: ModePlan,
    out: str | Path,
    *,
    devices: Sequence[Any] = (),
    target_device: Any = None,
    recalibration_images: int = 2000,
    test: Dataset | None = None,
    seed: int = 0,
    bundle_version: str = "0.1.0",
    progress: Callable[[str], None] | None = None,
) -> tuple[Bundle, list[ExportedMode]]:
    """Write ``plan``'s modes with ``trained``'s weights as a bundle at ``out``; returns it and per-mode checks.

    ``test`` defaults to the supernet's held-out test split (its validation split when the training
    configuration made none). Raises ModeSelectionError when a mode has no arch.
    """
    test_set = test or trained.test or trained.val
    evaluator = SupernetEvaluator(
        trained.net, trained.space, trained.train, trained.val, recalibration_images=recalibration_images, seed=seed
    )
    archs: list[Arch] = []
    for m in plan.modes:
        if m.arch is None:
            raise ModeSelectionError(f"mode {m.name!r} has no arch; a ModePlan for a bundle needs archs")
        archs.append(Arch.from_json(m.arch))
    bundle_res = max(int(a["resolution"]) for a in archs)
    x_test = resize_input(torch.from_numpy(np.array(test_set.x, dtype=np.float32)), bundle_res).numpy()
    y_test = np.asarray(test_set.y, dtype=np.int64)

    specs, modules = [], []
    for m, arch in zip(plan.modes, archs, strict=True):
        if progress:
            progress(f"extracting {m.name}: {arch}")
        sub = evaluator.subnet(arch)
        val_acc, _ = evaluator.accuracy_of(sub, int(arch["resolution"]))
        modules.append((sub, val_acc))
        specs.append(ModeSpec(m.name, sub.net, arch=arch.to_json(), accuracy=None, weights=folded_weights(sub)))

    # First pass: build and measure the ONNX models; the manifest then records the shipped models' accuracy.
    staging_dir = Path(out).parent / f".{Path(out).name}.measure"
    shutil.rmtree(staging_dir, ignore_errors=True)
    probe = build_bundle(specs, staging_dir, share_weights=False, devices=(), dynamic_batch=True, seed=seed)
    checks: list[ExportedMode] = []
    try:
        for spec, arch, (sub, val_acc) in zip(specs, archs, modules, strict=True):
            res = int(arch["resolution"])
            onnx_logits = _onnx_logits(probe.model_path(spec.name), x_test)
            torch_logits = _torch_logits(sub, x_test, res)
            checks.append(
                ExportedMode(
                    name=spec.name,
                    arch=arch.to_json(),
                    resolution=res,
                    val_accuracy=round(val_acc, 3),
                    test_accuracy_torch=round(100.0 * float((torch_logits.argmax(1) == y_test).mean()), 3),
                    test_accuracy_onnx=round(100.0 * float((onnx_logits.argmax(1) == y_test).mean()), 3),
                    max_abs_diff=float(np.abs(onnx_logits - torch_logits).max()),
                    params=int(sum(p.numel() for p in sub.parameters())),
                )
            )
            if progress:
                c = checks[-1]
                progress(
                    f"{c.name}: test accuracy {c.test_accuracy_onnx:.2f} % (ONNX) / {c.test_accuracy_torch:.2f} % "
                    f"(torch), max |Δlogit| {c.max_abs_diff:.1e}"
                )
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)
    final_specs = [
        ModeSpec(s.name, s.netspec, arch=s.arch, accuracy=c.test_accuracy_onnx, weights=s.weights)
        for s, c in zip(specs, checks, strict=True)
    ]
    bundle = build_bundle(
        final_specs,
        out,
        share_weights=False,
        devices=devices,
        target_device=target_device,
        seed=seed,
        bundle_version=bundle_version,
        created_by=f"fleetnas supernet {trained.root}",
    )
    return bundle, checks
