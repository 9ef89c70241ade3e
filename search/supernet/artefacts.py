"""Trained artefacts on demand: a supernet, its measured architectures and the fitted predictors (torch).

The demo, the federated simulation and the benchmarks all need the same chain — train the
supernet, measure a sample of its subnets (BatchNorm recalibrated), fit the numpy accuracy
predictors — and a second run should not pay for it again. Each step here is cached in a
directory and reused only when its inputs match (the training configuration, the number of
architectures and the seed), so a changed configuration retrains instead of silently reusing.

Layout of ``cache_dir``::

    supernet/               fleetnas supernet train output (config.yaml, supernet.pt, ...)
    measurements.npz        codes, accuracy (n,), class_accuracy (n, classes) + a JSON key
    accuracy_predictor.npz  AccuracyPredictor: top-1 accuracy (%)
    class_predictor.npz     AccuracyPredictor with one output per class (per-class accuracy, %)
    space.json              the space specification the predictors belong to (``make_space`` input)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.fileio import write_npz_atomic, write_text_atomic
from search.predictors.mlp import AccuracyPredictor
from search.space.mobilenetv3 import MobileNetV3Space
from search.supernet.schedule import SupernetConfigError, SupernetTrainConfig, make_space
from search.supernet.trained import CONFIG_FILE, WEIGHTS_FILE, TrainedSupernet

__all__ = [
    "Measurements",
    "ensure_class_predictor",
    "ensure_measurements",
    "ensure_predictors",
    "ensure_trained",
    "training_seconds",
]

MEASUREMENTS_FILE = "measurements.npz"
ACCURACY_PREDICTOR_FILE = "accuracy_predictor.npz"
CLASS_PREDICTOR_FILE = "class_predictor.npz"
SPACE_FILE = "space.json"
TIMING_FILE = "timing.json"
PREDICTOR_HIDDEN = (128, 128, 128)

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def ensure_trained(
    config: SupernetTrainConfig | str | Path, out_dir: str | Path, progress: bool = True, log: Log = _quiet
) -> TrainedSupernet:
    """The supernet trained per ``config`` in ``out_dir``: reused if already trained with the same config."""
    from search.supernet.training import train_supernet

    cfg = config if isinstance(config, SupernetTrainConfig) else SupernetTrainConfig.load(config)
    out = Path(out_dir)
    if (out / WEIGHTS_FILE).is_file() and (out / CONFIG_FILE).is_file():
        try:
            same = SupernetTrainConfig.load(out / CONFIG_FILE) == cfg
        except SupernetConfigError:
            same = False
        if same:
            log(f"reusing the trained supernet in {out}")
            return TrainedSupernet.load(out)
    resume = (out / "checkpoint.pt").is_file()
    started = time.perf_counter()
    try:
        train_supernet(cfg, out, resume=resume, progress=progress)
    except SupernetConfigError:
        if not resume:
            raise
        # the checkpoint belongs to another configuration: start over rather than mix the two
        (out / "checkpoint.pt").unlink()
        resume = False
        train_supernet(cfg, out, resume=False, progress=progress)
    seconds = time.perf_counter() - started
    write_text_atomic(out / TIMING_FILE, json.dumps({"train_seconds": seconds, "resumed": resume}) + "\n")
    return TrainedSupernet.load(out)


def training_seconds(root: str | Path) -> float | None:
    """Wall time of the training run that produced ``root`` (None if unknown or resumed part-way)."""
    path = Path(root) / TIMING_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return None if data.get("resumed") else float(data["train_seconds"])


@dataclass(frozen=True)
class Measurements:
    """Supernet-measured archs: canonical codes, top-1 % and per-class top-1 % on the validation split."""

    codes: np.ndarray
    accuracy: np.ndarray
    class_accuracy: np.ndarray
    seconds: float


def ensure_measurements(
    trained: TrainedSupernet,
    path: str | Path,
    n: int = 400,
    seed: int = 0,
    recalibration_images: int = 256,
    log: Log = _quiet,
) -> Measurements:
    """``n`` distinct archs of ``trained``'s space measured with BN recalibration; cached at ``path``."""
    from search.supernet.evaluation import SupernetEvaluator

    path = Path(path)
    key = {
        "supernet": str(trained.root.resolve()),
        "n": n,
        "seed": seed,
        "recalibration_images": recalibration_images,
        "weights_mtime": (trained.root / WEIGHTS_FILE).stat().st_mtime_ns,
    }
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            if json.loads(bytes(data["key"]).decode()) == key:
                log(f"reusing {len(data['codes'])} measured archs from {path}")
                return Measurements(data["codes"], data["accuracy"], data["class_accuracy"], float(data["seconds"]))
    space = trained.space
    codes = space.distinct_sample(min(n, space.size()), np.random.default_rng(seed))
    evaluator = SupernetEvaluator(
        trained.net,
        space,
        trained.train,
        trained.val,
        recalibration_images=recalibration_images,
        per_class=True,
        seed=seed,
    )
    started = time.perf_counter()
    out: dict[str, list[np.ndarray]] = {"accuracy": [], "class_accuracy": []}
    step = max(1, len(codes) // 20)
    last_log = started
    for i in range(0, len(codes), step):
        got = evaluator(codes[i : i + step])
        out["accuracy"].append(got["accuracy"])
        out["class_accuracy"].append(got["class_accuracy"])
        done = min(i + step, len(codes))
        if time.perf_counter() - last_log > 5.0 or done == len(codes):
            last_log = time.perf_counter()
            log(f"measured {done}/{len(codes)} subnets ({last_log - started:.0f} s)")
    m = Measurements(
        codes, np.concatenate(out["accuracy"]), np.concatenate(out["class_accuracy"]), time.perf_counter() - started
    )
    write_npz_atomic(
        path,
        {
            "codes": m.codes,
            "accuracy": m.accuracy,
            "class_accuracy": m.class_accuracy,
            "seconds": np.float64(m.seconds),
            "key": np.frombuffer(json.dumps(key).encode(), dtype=np.uint8),
        },
    )
    return m


def ensure_predictors(
    cache_dir: str | Path,
    config: SupernetTrainConfig | str | Path = "demo",
    n_archs: int = 400,
    seed: int = 0,
    progress: bool = True,
    log: Log = _quiet,
) -> dict[str, Any]:
    """Train (or reuse) the supernet, measure ``n_archs`` subnets and fit both predictors in ``cache_dir``.

    Returns ``{"trained", "space", "measurements", "accuracy_predictor", "class_predictor", "report"}``;
    ``report`` holds the held-out (20 %) RMSE / Kendall τ of the accuracy predictor.
    """
    cache = Path(cache_dir)
    trained = ensure_trained(config, cache / "supernet", progress=progress, log=log)
    m = ensure_measurements(trained, cache / MEASUREMENTS_FILE, n=n_archs, seed=seed, log=log)
    space: MobileNetV3Space = trained.space
    n_test = max(2, round(0.2 * len(m.codes)))
    test, train = slice(0, n_test), slice(n_test, None)
    acc = AccuracyPredictor(space, hidden=PREDICTOR_HIDDEN, seed=seed).fit(m.codes[train], m.accuracy[train])
    report = {"n_train": len(m.codes) - n_test, "n_holdout": n_test, **acc.evaluate(m.codes[test], m.accuracy[test])}
    # The per-class model is for weighting by a device's label mix: fit on every measured arch.
    per_class = np.nan_to_num(m.class_accuracy, nan=float(np.nanmean(m.class_accuracy)))
    cls = AccuracyPredictor(space, hidden=PREDICTOR_HIDDEN, seed=seed, metric="class_accuracy").fit(m.codes, per_class)
    acc_full = AccuracyPredictor(space, hidden=PREDICTOR_HIDDEN, seed=seed).fit(m.codes, m.accuracy)
    acc_full.training["holdout_before_refit"] = report
    acc_full.save(cache / ACCURACY_PREDICTOR_FILE)
    cls.save(cache / CLASS_PREDICTOR_FILE)
    write_text_atomic(cache / SPACE_FILE, json.dumps(trained.config.space, indent=2, default=list) + "\n")
    log(
        f"accuracy predictor: held-out RMSE {report['rmse']:.2f} points, Kendall tau {report['kendall_tau']:.3f} "
        f"({n_test} archs); saved {cache / ACCURACY_PREDICTOR_FILE} and {cache / CLASS_PREDICTOR_FILE}"
    )
    return {
        "trained": trained,
        "space": space,
        "measurements": m,
        "accuracy_predictor": acc_full,
        "class_predictor": cls,
        "report": report,
    }


def ensure_class_predictor(cache_dir: str | Path, progress: bool = True) -> Path:
    """Path of the per-class accuracy predictor for the demo supernet, built in ``cache_dir`` if missing.

    The space it belongs to is ``make_space(json.load(cache_dir / "space.json"))``.
    """
    cache = Path(cache_dir)
    path = cache / CLASS_PREDICTOR_FILE
    if path.is_file() and (cache / SPACE_FILE).is_file():
        return path
    ensure_predictors(
        cache, progress=progress, log=(lambda s: print(f"[artefacts] {s}", flush=True)) if progress else _quiet
    )
    return path


def space_of(cache_dir: str | Path) -> MobileNetV3Space:
    """The space the predictors in ``cache_dir`` were fitted for."""
    return make_space(json.loads((Path(cache_dir) / SPACE_FILE).read_text()))
