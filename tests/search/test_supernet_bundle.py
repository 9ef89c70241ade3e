"""Bundles from a trained supernet: ONNX parity with torch, measured accuracies, cached artefacts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.bundle import Bundle
from runtime.engine import MultiModeRuntime
from runtime.hardware import load_device
from search.arch import Arch
from search.cost.table import SpaceCostTable
from search.modes import ModeChoice, ModePlan, ModeRules, ModeSelectionError, select_modes
from search.supernet.artefacts import ensure_measurements, ensure_trained
from search.supernet.bundle import bundle_from_modeplan
from search.supernet.evaluation import SupernetEvaluator
from search.supernet.model import resize_input
from search.supernet.schedule import SupernetTrainConfig
from search.supernet.trained import TrainedSupernet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedSupernet:
    """The demo preset shrunk to one epoch per phase and 6 batches per epoch (a few seconds)."""
    cfg = SupernetTrainConfig.preset("demo")
    cfg = dataclasses.replace(
        cfg,
        threads=1,
        phases=tuple(dataclasses.replace(p, epochs=1) for p in cfg.phases),
        data=dataclasses.replace(cfg.data, max_batches=6),
    )
    return ensure_trained(cfg, tmp_path_factory.mktemp("supernet"), progress=False)


def _plan(trained: TrainedSupernet, device) -> ModePlan:
    space = trained.space
    codes = space.canonicalise(space.sample(40, np.random.default_rng(1)))
    metrics = SpaceCostTable(space, device).evaluate(codes)
    metrics["accuracy"] = metrics["macs"]  # any monotone stand-in: this test is about export, not choice
    return select_modes(metrics, ModeRules(), archs=[a.to_json() for a in space.decode_batch(codes)], device="rpi4")


def test_bundle_modes_match_torch_and_carry_measured_accuracy(trained: TrainedSupernet, tmp_path: Path) -> None:
    device = load_device("rpi4")
    plan = _plan(trained, device)
    bundle, checks = bundle_from_modeplan(
        trained, plan, tmp_path / "bundle", devices=[device], target_device=device, recalibration_images=128
    )
    assert [c.name for c in checks] == [m.name for m in plan.modes] == list(bundle.modes)
    assert len({c.params for c in checks}) > 1  # three different subnets, not one network thrice
    for c in checks:
        assert c.max_abs_diff < 1e-4
        assert abs(c.test_accuracy_onnx - c.test_accuracy_torch) <= 100.0 / len(trained.test)  # ≤ 1 image flips
        expected = bundle.manifest.mode(c.name).expected["rpi4"]
        assert expected.accuracy == c.test_accuracy_onnx
        assert expected.latency_ms > 0 and expected.energy_mj > 0
    # the runtime serves the bundle, and each mode's answer is its subnet's
    rt = MultiModeRuntime(Bundle.load(tmp_path / "bundle"))
    x = resize_input(torch.from_numpy(np.array(trained.test.x[:8], dtype=np.float32)), 28).numpy()
    ev = SupernetEvaluator(trained.net, trained.space, trained.train, trained.val, recalibration_images=128)
    for c in checks:
        rt.switch(c.name)
        sub = ev.subnet(Arch.from_json(c.arch))
        with torch.no_grad():
            want = sub(resize_input(torch.from_numpy(x), c.resolution)).numpy()
        np.testing.assert_allclose(rt.infer(x), want, atol=1e-4)


def test_plan_without_archs_is_refused(trained: TrainedSupernet, tmp_path: Path) -> None:
    plan = ModePlan("rpi4", ModeRules(), (ModeChoice("high", 0, None, {}, "no arch"),))
    with pytest.raises(ModeSelectionError, match="has no arch"):
        bundle_from_modeplan(trained, plan, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_per_class_accuracy_is_consistent_with_top1(trained: TrainedSupernet) -> None:
    space = trained.space
    codes = space.canonicalise(space.sample(3, np.random.default_rng(2)))
    ev = SupernetEvaluator(trained.net, space, trained.train, trained.val, recalibration_images=64, per_class=True)
    got = ev(codes)
    assert got["class_accuracy"].shape == (3, space.config.num_classes)
    counts = np.bincount(trained.val.y, minlength=space.config.num_classes)
    weighted = np.nansum(got["class_accuracy"] * counts, axis=1) / counts.sum()
    np.testing.assert_allclose(weighted, got["accuracy"], atol=1e-9)
    # a second evaluator without per_class gives the same top-1 (one code path)
    plain = SupernetEvaluator(trained.net, space, trained.train, trained.val, recalibration_images=64)(codes)
    np.testing.assert_array_equal(plain["accuracy"], got["accuracy"])
    assert "class_accuracy" not in plain


def test_artefacts_are_reused_only_when_their_inputs_match(trained: TrainedSupernet, tmp_path: Path) -> None:
    weights = trained.root / "supernet.pt"
    before = weights.stat().st_mtime_ns
    again = ensure_trained(trained.config, trained.root, progress=False)
    assert weights.stat().st_mtime_ns == before  # reused, not retrained
    assert again.config == trained.config
    path = tmp_path / "m.npz"
    first = ensure_measurements(trained, path, n=6, seed=0, recalibration_images=64)
    stamp = path.stat().st_mtime_ns
    cached = ensure_measurements(trained, path, n=6, seed=0, recalibration_images=64)
    assert path.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(cached.codes, first.codes)
    np.testing.assert_array_equal(cached.class_accuracy, first.class_accuracy)
    other = ensure_measurements(trained, path, n=5, seed=0, recalibration_images=64)
    assert len(other.codes) == 5 and path.stat().st_mtime_ns != stamp
