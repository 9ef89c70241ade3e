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
