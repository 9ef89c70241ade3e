"""The numpy MLP accuracy predictor: fitting, rank metrics, the version-independent file format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from search.predictors.mlp import (
    FORMAT_VERSION,
    AccuracyPredictor,
    PredictorError,
    class_mix_evaluator,
    fit_predictor_from_supernet,
    kendall_tau,
    rankdata,
    spearman,
)
from search.space import MobileNetV3Config, MobileNetV3Space, load_space
from search.space.base import SearchSpace

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return load_space("mnist")


def _smooth_target(space: SearchSpace, codes: np.ndarray) -> np.ndarray:
    """A smooth 'accuracy' of the encoding: bigger kernels/expands/depths help, with diminishing returns."""
    p = AccuracyPredictor(space, feature_map="ordinal")
    f = p.features(codes)
    w = np.asarray(np.random.default_rng(7).uniform(0.5, 1.5, size=f.shape[1]))
    score = f @ w / w.sum()
    return 60.0 + 30.0 * np.tanh(2.0 * score) + 2.0 * np.sin(3.0 * f[:, 0])


@pytest.fixture(scope="module")
def data(space: SearchSpace) -> tuple[np.ndarray, np.ndarray]:
    codes = space.canonicalise(space.sample(900, np.random.default_rng(0)))
    return codes, _smooth_target(space, codes)


@pytest.fixture(scope="module")
def fitted(space: SearchSpace, data: tuple[np.ndarray, np.ndarray]) -> AccuracyPredictor:
    codes, y = data
    return AccuracyPredictor(space, hidden=(64, 64), seed=0).fit(codes[:700], y[:700])


# ---- features ---------------------------------------------------------------------------------
def test_onehot_features_mask_inactive_slots(space: MobileNetV3Space) -> None:
    p = AccuracyPredictor(space)
    shallow = space.encode(space.decode(np.zeros(space.encoding_length, dtype=np.int64)))  # depth 2 everywhere
    f = p.features(shallow[None])[0]
    # 3 depths + (2 active slots × kernel + expand) × 3 stages: one 1 per used gene, none for unused slots
    assert f.sum() == 3 + 2 * 2 * 3
    assert p.n_features == f.size == int(space.cardinalities[space.cardinalities > 1].sum())
    # changing an inactive slot's gene does not change the features (it is not run)
    other = shallow.copy()
    other[space.kernel_offset + 3] = 2  # stage 0, slot 3 (depth is 2)
    assert np.array_equal(p.features(other[None])[0], f)


# ---- fitting ----------------------------------------------------------------------------------
def test_fits_a_smooth_function(fitted: AccuracyPredictor, data: tuple[np.ndarray, np.ndarray]) -> None:
    codes, y = data
    report = fitted.evaluate(codes[700:], y[700:])
    assert report["rmse"] < 0.25 * y[700:].std()
    assert report["kendall_tau"] > 0.9
    assert report["spearman"] > 0.97
    assert fitted.training["n_val"] == 70 and fitted.training["best_epoch"] >= 1


def test_fit_is_seeded(space: SearchSpace, data: tuple[np.ndarray, np.ndarray]) -> None:
    codes, y = data
    a = AccuracyPredictor(space, hidden=(16,), epochs=5, seed=3).fit(codes[:200], y[:200]).predict(codes[200:260])
    b = AccuracyPredictor(space, hidden=(16,), epochs=5, seed=3).fit(codes[:200], y[:200]).predict(codes[200:260])
    c = AccuracyPredictor(space, hidden=(16,), epochs=5, seed=4).fit(codes[:200], y[:200]).predict(codes[200:260])
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_default_is_ofa_sized(space: SearchSpace) -> None:
    p = AccuracyPredictor(space)
    assert p.layer_sizes == (81, 400, 400, 400, 1)


def test_as_evaluator(fitted: AccuracyPredictor, data: tuple[np.ndarray, np.ndarray]) -> None:
    codes = data[0][:5]
    out = fitted.as_evaluator()(codes)
    assert set(out) == {"accuracy"} and np.array_equal(out["accuracy"], fitted.predict(codes))
    assert set(fitted.as_evaluator("acc_pred")(codes)) == {"acc_pred"}


def test_unfitted_and_bad_options(space: SearchSpace) -> None:
    with pytest.raises(PredictorError, match="not fitted"):
        AccuracyPredictor(space).predict(space.sample(2, np.random.default_rng(0)))
    with pytest.raises(PredictorError, match="feature_map"):
        AccuracyPredictor(space, feature_map="binary")
    with pytest.raises(PredictorError, match="2 encodings but 3 values"):
        AccuracyPredictor(space).fit(space.sample(2, np.random.default_rng(0)), [1.0, 2.0, 3.0])


def test_fit_from_an_evaluator(space: SearchSpace) -> None:
    calls: list[int] = []

    def evaluator(codes: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(len(codes))
        return {"accuracy": _smooth_target(space, codes)}

    pred, report = fit_predictor_from_supernet(evaluator, space, n=400, seed=1, hidden=(64, 64))
    assert calls == [400]  # one batched call over distinct archs
    assert report["n_train"] == 320 and report["n_holdout"] == 80
    assert report["holdout"]["kendall_tau"] > 0.85
    assert pred.is_fitted


# ---- files ------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path: Path, fitted: AccuracyPredictor, space: SearchSpace, data) -> None:
    path = fitted.save(tmp_path / "pred.npz")
    loaded = AccuracyPredictor.load(path, space)
    codes = data[0][700:]
    assert np.array_equal(loaded.predict(codes), fitted.predict(codes))
    assert loaded.layer_sizes == fitted.layer_sizes and loaded.metric == "accuracy"
    with np.load(path, allow_pickle=False) as z:  # no object arrays anywhere
        assert all(z[k].dtype != object for k in z.files)
        header = json.loads(z["__header__"].tobytes())
    assert header["format_version"] == FORMAT_VERSION
    assert header["space"] == {"name": space.name, "cardinalities": [int(c) for c in space.cardinalities]}


def test_loads_without_torch(tmp_path: Path, fitted: AccuracyPredictor) -> None:
    path = fitted.save(tmp_path / "pred.npz")
    code = (
        "import sys, numpy as np\n"
        "from search.space import load_space\n"
        "from search.predictors.mlp import AccuracyPredictor\n"
        f"p = AccuracyPredictor.load({str(path)!r}, load_space('mnist'))\n"
        "p.predict(load_space('mnist').sample(3, np.random.default_rng(0)))\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _rewrite(src: Path, dst: Path, header_edit=None, drop: str | None = None) -> Path:
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays["__header__"].tobytes())
    if header_edit:
        header_edit(header)
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    if drop:
        arrays.pop(drop)
    np.savez(dst, **arrays)
    return dst


def test_load_errors_name_file_and_field(tmp_path: Path, fitted: AccuracyPredictor, space: SearchSpace) -> None:
    good = fitted.save(tmp_path / "good.npz")

    bad = _rewrite(good, tmp_path / "v99.npz", lambda h: h.update(format_version=99))
    with pytest.raises(PredictorError, match=r"v99\.npz: field 'format_version': 99"):
        AccuracyPredictor.load(bad, space)

    bad = _rewrite(good, tmp_path / "nonorm.npz", lambda h: h.pop("normalisation"))
    with pytest.raises(PredictorError, match=r"nonorm\.npz: field 'normalisation': missing"):
        AccuracyPredictor.load(bad, space)

    bad = _rewrite(good, tmp_path / "now1.npz", drop="W1")
    with pytest.raises(PredictorError, match=r"now1\.npz: field 'W1': array missing"):
        AccuracyPredictor.load(bad, space)

    # same name, different options (one kernel size less): the cardinalities no longer match
    import dataclasses

    other = MobileNetV3Space(dataclasses.replace(MobileNetV3Config.preset("mnist"), kernels=(3, 5)))
    with pytest.raises(PredictorError, match=r"good\.npz: field 'space\.cardinalities'"):
        AccuracyPredictor.load(good, other)

    with pytest.raises(PredictorError, match=r"field 'space\.name'"):
        AccuracyPredictor.load(good, MobileNetV3Space())

    with pytest.raises(PredictorError, match=r"missing\.npz: file not found"):
        AccuracyPredictor.load(tmp_path / "missing.npz", space)


# ---- multi-output (per-class accuracy) ----------------------------------------------------------
def _per_class_target(space: SearchSpace, codes: np.ndarray) -> np.ndarray:
    """(n, 3) 'per-class accuracies' on very different scales: per-column normalisation must handle them."""
    base = _smooth_target(space, codes)
    f = AccuracyPredictor(space, feature_map="ordinal").features(codes)
    return np.column_stack([base, 0.1 * base + 90.0 + 0.5 * f[:, 1], 2.0 * base - 60.0 - 5.0 * f[:, 2]])


@pytest.fixture(scope="module")
def per_class(space: SearchSpace, data: tuple[np.ndarray, np.ndarray]) -> tuple[AccuracyPredictor, np.ndarray]:
    codes = data[0]
    y = _per_class_target(space, codes)
    return AccuracyPredictor(space, hidden=(64, 64), seed=0).fit(codes[:700], y[:700]), y


def test_multi_output_fits_every_column(per_class, data) -> None:
    pred, y = per_class
    codes = data[0]
    assert pred.n_outputs == 3 and pred.layer_sizes[-1] == 3
    out = pred.predict(codes[700:])
    assert out.shape == (200, 3)
    report = pred.evaluate(codes[700:], y[700:])
    assert set(report["per_output"]) == {"rmse", "kendall_tau", "spearman"}
    for j in range(3):
        assert report["per_output"]["rmse"][j] < 0.3 * y[700:, j].std()  # each column in its own units
        assert report["per_output"]["kendall_tau"][j] > 0.85
    assert report["kendall_tau"] == pytest.approx(np.mean(report["per_output"]["kendall_tau"]))
    # one normalisation per column (the training rows are a seeded 90 % of the first 700)
    assert isinstance(pred.y_std, np.ndarray) and pred.y_std.shape == (3,)
    assert np.all(np.abs(pred.y_mean - y[:700].mean(axis=0)) <= 0.1 * y[:700].std(axis=0))
    assert np.allclose(pred.y_std, y[:700].std(axis=0), rtol=0.1)
    assert len(pred.training["val_rmse_per_output"]) == 3


def test_single_column_matrix_is_one_output(space: SearchSpace, data) -> None:
    codes, y = data
    a = AccuracyPredictor(space, hidden=(16,), epochs=5, seed=3).fit(codes[:200], y[:200, None])
    b = AccuracyPredictor(space, hidden=(16,), epochs=5, seed=3).fit(codes[:200], y[:200])
    assert a.n_outputs == 1 and a.predict(codes[:5]).shape == (5,)
    assert np.array_equal(a.predict(codes[200:260]), b.predict(codes[200:260]))
    assert isinstance(a.y_mean, float)
    with pytest.raises(PredictorError, match=r"200 encodings but 199 values"):
        AccuracyPredictor(space).fit(codes[:200], np.zeros((199, 3)))
    with pytest.raises(PredictorError, match=r"values of shape \(5, 2\)"):
        a.evaluate(codes[:5], np.zeros((5, 2)))


def test_multi_output_save_load_round_trip(tmp_path: Path, per_class, space: SearchSpace, data) -> None:
    pred, _ = per_class
    path = pred.save(tmp_path / "per_class.npz")
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(z["__header__"].tobytes())
    assert header["n_outputs"] == 3 and len(header["normalisation"]["y_mean"]) == 3
    loaded = AccuracyPredictor.load(path, space)
    assert loaded.n_outputs == 3
    assert np.array_equal(loaded.predict(data[0][700:]), pred.predict(data[0][700:]))
    bad = _rewrite(path, tmp_path / "k2.npz", lambda h: h.update(n_outputs=2))
    with pytest.raises(PredictorError, match=r"k2\.npz: field 'normalisation': need 2 value"):
        AccuracyPredictor.load(bad, space)


def test_files_without_n_outputs_load_as_one_output(tmp_path: Path, fitted: AccuracyPredictor, space, data) -> None:
    good = fitted.save(tmp_path / "good.npz")
    old = _rewrite(good, tmp_path / "old.npz", lambda h: h.pop("n_outputs"))
    with np.load(old, allow_pickle=False) as z:
        assert "n_outputs" not in json.loads(z["__header__"].tobytes())
    loaded = AccuracyPredictor.load(old, space)
    assert loaded.n_outputs == 1
    assert np.array_equal(loaded.predict(data[0][700:]), fitted.predict(data[0][700:]))


def test_class_mix_evaluator(per_class, data) -> None:
    pred, _ = per_class
    codes = data[0][:20]
    counts = np.array([30, 10, 0])  # a client's label histogram: counts, normalised inside
    out = class_mix_evaluator(pred, counts)(codes)
    assert set(out) == {"accuracy"}
    assert np.allclose(out["accuracy"], pred.predict(codes) @ np.array([0.75, 0.25, 0.0]))
    one_hot = class_mix_evaluator(pred, [0, 0, 1], metric="acc_own")(codes)["acc_own"]
    assert np.allclose(one_hot, pred.predict(codes)[:, 2])
    uniform = pred.as_evaluator()(codes)["accuracy"]
    assert np.allclose(uniform, class_mix_evaluator(pred, np.ones(3))(codes)["accuracy"])
    with pytest.raises(PredictorError, match=r"field 'class_weights': 10 weights but the predictor has 3 output"):
        class_mix_evaluator(pred, np.ones(10))
    with pytest.raises(PredictorError, match=r"field 'class_weights': need finite weights >= 0"):
        class_mix_evaluator(pred, [1.0, -1.0, 1.0])


# ---- rank statistics --------------------------------------------------------------------------
@pytest.mark.parametrize("n, levels", [(50, None), (300, 7), (1201, 3), (20, 2)])
def test_kendall_tau_matches_scipy(n: int, levels: int | None) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(size=n)
    y = x + rng.normal(size=n)
    if levels:  # many ties on both sides
        x, y = np.round(x * levels / 3), np.round(y * levels / 3)
    want = stats.kendalltau(x, y).statistic
    assert kendall_tau(x, y, chunk=64) == pytest.approx(want, abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert np.array_equal(rankdata(y), stats.rankdata(y))


def test_kendall_tau_edge_cases() -> None:
    assert kendall_tau(np.arange(5), np.arange(5)) == pytest.approx(1.0)
    assert kendall_tau(np.arange(5), -np.arange(5)) == pytest.approx(-1.0)
    assert np.isnan(kendall_tau(np.ones(4), np.arange(4)))
    assert np.isnan(kendall_tau([1.0], [2.0]))
