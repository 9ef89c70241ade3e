"""Shared fixtures of the federated search tests: a small space, cost tables and a per-class predictor.

The per-class predictor here is *test data*: an ``AccuracyPredictor`` with 10 outputs fitted on a
synthetic per-class accuracy (a smooth function of the architecture's MACs, different per class),
so the apps can be exercised without training a supernet. The real one comes from
``search.supernet.artefacts.ensure_class_predictor``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest

from runtime.hardware import load_device
from search.cost.table import SpaceCostTable
from search.space.mobilenetv3 import MobileNetV3Config, MobileNetV3Space

# The demo supernet's slim MNIST space (search/supernet/presets/demo.yaml): 8,000 architectures.
SMALL_SPACE = MobileNetV3Config.from_dict(
    {
        "preset": "mnist",
        "stem_stride": 2,
        "stage_channels": [16, 24, 40],
        "stage_strides": [1, 2, 2],
        "first_block_channels": 0,
        "feature_channels": 128,
        "depths": [1, 2],
        "kernels": [3, 5],
        "expands": [2, 4],
    }
)
TIERS = ("rpi4", "orin_nx", "rk3399_big")


@pytest.fixture(scope="session")
def space() -> MobileNetV3Space:
    return MobileNetV3Space(SMALL_SPACE)


@pytest.fixture(scope="session")
def tables(space: MobileNetV3Space) -> dict[str, SpaceCostTable]:
    return {t: SpaceCostTable(space, load_device(t)) for t in TIERS}


@pytest.fixture(scope="session")
def deadlines(space: MobileNetV3Space, tables: dict[str, SpaceCostTable]) -> dict[str, float]:
    """Per tier, the median latency of random archs: about half the space misses the deadline."""
    codes = space.sample(400, np.random.default_rng(3))
    return {t: float(np.median(tab.evaluate(codes)["latency_ms"])) for t, tab in tables.items()}


def synthetic_class_accuracy(space: MobileNetV3Space, codes: np.ndarray) -> np.ndarray:
    """(n, 10) per-class accuracy in %: bigger networks are better, differently per class (test data)."""
    macs = SpaceCostTable(space).evaluate(codes)["macs"]
    x = np.log(macs)
    x = (x - 14.5) / 1.0
    classes = np.arange(10)
    slope = 1.0 + 0.6 * np.cos(classes)  # classes gain differently from capacity
    base = 88.0 + 0.8 * np.sin(classes)
    return np.clip(base[None, :] + slope[None, :] * 4.0 * np.tanh(x[:, None]), 0.0, 100.0)


@pytest.fixture(scope="session")
def class_predictor_path(space: MobileNetV3Space, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fitted 10-output AccuracyPredictor saved to a file (synthetic per-class targets; see module doc)."""
    from search.predictors.mlp import AccuracyPredictor

    codes = np.unique(space.sample(600, np.random.default_rng(0)), axis=0)
    pred = AccuracyPredictor(space, hidden=(32, 32), epochs=150, patience=20, seed=0, metric="class_accuracy")
    pred.fit(codes, synthetic_class_accuracy(space, codes))
    return pred.save(tmp_path_factory.mktemp("predictor") / "class_predictor.npz")


@pytest.fixture(scope="session")
def class_predictor(space: MobileNetV3Space, class_predictor_path: Path):  # type: ignore[no-untyped-def]
    from search.predictors.mlp import AccuracyPredictor

    return AccuracyPredictor.load(class_predictor_path, space)


MetricFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]


def fake_accuracy(space: MobileNetV3Space, class_weights: np.ndarray) -> MetricFn:
    """``codes -> {"accuracy"}``: the synthetic per-class accuracy mixed by ``class_weights`` (no predictor)."""
    p = np.asarray(class_weights, dtype=float)

    def evaluate(codes: np.ndarray) -> dict[str, np.ndarray]:
        return {"accuracy": synthetic_class_accuracy(space, np.atleast_2d(codes)) @ p}

    return evaluate
