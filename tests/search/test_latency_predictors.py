"""search.predictors.latency: LUT sum, roofline calibration, learned model, files, energy, search integration."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.hardware import load_device
from search.config import SearchConfig
from search.cost.table import SpaceCostTable
from search.job import build_problem, run_search
from search.predictors.features import FEATURES, FeatureTable, MissingBlockError, space_features
from search.predictors.latency import (
    DeviceScaledCost,
    LatencyPredictor,
    LatencyPredictorError,
    LatencyTable,
    PeakMemoryPredictor,
    RooflineParams,
    accuracy_report,
    calibrate_roofline,
    fit_flops,
    fit_learned,
    fit_lut,
    fit_roofline,
    measured_predictor,
    roofline_fragment_ms,
)
from search.profiling.blocks import decompose
from search.profiling.run import machine_profile
from search.space import load_space


def synthetic_table(space, alignment=8, seed=0, source="table.json") -> LatencyTable:
    """Block 'latencies' from the MACs plus noise: realistic scale, known values."""
    blocks = decompose(space, alignment)
    rng = np.random.default_rng(seed)
    entries = {
        k: 0.01 + f.net.cost_arrays()["macs"].sum() / 2e8 * (1 + 0.2 * rng.random())
        for k, f in blocks.fragments.items()
    }
    return LatencyTable(entries, 0.004, source=source)


@pytest.fixture(scope="module")
def space():
    return load_space("imagenet")


@pytest.fixture(scope="module")
def blocks(space):
    return decompose(space, 8)


def test_lut_sum_vectorised_equals_the_per_arch_sum(space, blocks) -> None:
    table = synthetic_table(space)
    pred = fit_lut(space, table, blocks=blocks)
    codes = space.sample(300, np.random.default_rng(1))
    expected = [sum(table.lookup(k) for k in blocks.arch_keys(c)) + table.run_overhead_ms for c in codes]
    np.testing.assert_allclose(pred.predict(codes), expected, rtol=1e-12)
    assert pred.predict(space.sample(10_000, np.random.default_rng(2))).shape == (10_000,)
    evaluator = pred.as_evaluator()
    np.testing.assert_allclose(evaluator(codes)["latency_ms_measured"], expected, rtol=1e-12)


def test_a_mis_keyed_table_names_the_missing_key_and_file(space, blocks, tmp_path) -> None:
    table = synthetic_table(space)
    path = tmp_path / "board.lut.json"
    data = table.to_json()
    victim = "mbconv:k5:e4:cin40:mid160:cout40:hw20:s1:se40:act=relu"
    assert victim in data["entries"]
    data["entries"]["mbconv:k5:e4:cin40:mid160:cout40:hw20:s1:se40:act=RELU"] = data["entries"].pop(victim)
    path.write_text(json.dumps(data))
    loaded = LatencyTable.load(path)
    with pytest.raises(MissingBlockError, match=rf"{path}: no entry for block '{victim}'"):
        fit_lut(space, loaded, blocks=blocks)
    with pytest.raises(MissingBlockError, match=rf"{path}: no entry for block '{victim}'.*fleetnas profile"):
        loaded.lookup(victim)
    # a table for another space lacks whole families of keys: the error says how many
    with pytest.raises(MissingBlockError, match=r"and \d+ more"):
        FeatureTable(blocks, {k: 1.0 for k in list(blocks.keys)[:10]}, "other.json")


def test_table_file_errors_name_the_field(tmp_path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"format": "fleetnas.latency_lut", "format_version": 1, "entries": {"a": {"ms": "x"}}}))
    with pytest.raises(LatencyPredictorError, match=r"t.json: field 'entries.a.ms': expected a finite number"):
        LatencyTable.load(path)
    path.write_text(json.dumps({"format": "nn-meter"}))
    with pytest.raises(LatencyPredictorError, match=r"field 'format'"):
        LatencyTable.load(path)


def _network_truth(space, blocks, table, codes):
    """A 'measured' latency with what isolated blocks miss: 0.9 x the sum, cheaper residual adds, a constant."""
    feats = FeatureTable(blocks, space_features(blocks), "f").sum(codes)
    lut = FeatureTable(blocks, dict(table.entries), "t").sum(codes)[:, 0]
    add = feats[:, FEATURES.index("add_melems")]
    boundary = feats[:, FEATURES.index("boundary_melems")]
    return 0.9 * lut - 0.8 * add - 0.3 * boundary + 0.2


def test_learned_model_captures_what_the_lut_sum_misses(space, blocks) -> None:
    table = synthetic_table(space)
    rng = np.random.default_rng(4)
    train, test = space.sample(150, rng), space.sample(150, rng)
    y_train = _network_truth(space, blocks, table, train) * (1 + 0.01 * rng.standard_normal(150))
    y_test = _network_truth(space, blocks, table, test)
    learned = fit_learned(space, table, train, y_train, blocks=blocks)
    lut = fit_lut(space, table, train, y_train, blocks=blocks)
    flops = fit_flops(space, train, y_train, blocks=blocks)
    r_learned, r_lut, r_flops = (p.evaluate(test, y_test) for p in (learned, lut, flops))
    assert r_learned["rmse_pct"] < 1.0 and r_learned["within_5pct"] == 1.0
    assert r_lut["rmse_pct"] > 3 * r_learned["rmse_pct"]
    assert r_learned["kendall_tau"] > r_flops["kendall_tau"]


def test_roofline_calibration_recovers_known_utilisation(space, blocks) -> None:
    truth = RooflineParams(200.0, 10.0, {"conv": 0.5, "depthwise": 0.2, "linear": 0.3, "elementwise": 0.15}, 0.6, 0.002)
    table = LatencyTable(roofline_fragment_ms(blocks, truth), 0.0)
    got = calibrate_roofline(blocks, table, 200.0, 10.0)
    assert got.utilisation["conv"] == pytest.approx(0.5, rel=0.02)
    assert got.memory_utilisation == pytest.approx(0.6, rel=0.02)
    assert got.layer_overhead_ms == pytest.approx(0.002, rel=0.05)
    again = roofline_fragment_ms(blocks, got)
    np.testing.assert_allclose([again[k] for k in table.entries], list(table.entries.values()), rtol=0.02)
    codes = space.sample(40, np.random.default_rng(0))
    y = FeatureTable(blocks, dict(table.entries), "t").sum(codes)[:, 0] * 1.1 + 0.05
    pred = fit_roofline(space, table, 200.0, 10.0, codes, y, blocks=blocks)
    assert pred.evaluate(codes, y)["rmse_pct"] < 2.0


def test_predictor_save_load_in_a_fresh_process(space, blocks, tmp_path) -> None:
    table = synthetic_table(space)
    rng = np.random.default_rng(5)
    train = space.sample(60, rng)
    pred = fit_learned(space, table, train, _network_truth(space, blocks, table, train), blocks=blocks)
    path = pred.save(tmp_path / "p.json")
    codes = space.sample(50, rng)
    np.save(tmp_path / "codes.npy", codes)
    script = (
        "import json, sys, numpy as np\n"
        "from search.predictors.latency import LatencyPredictor\n"
        f"p = LatencyPredictor.load({str(path)!r})\n"
        f"print(json.dumps([p.kind, p.predict(np.load({str(tmp_path / 'codes.npy')!r})).tolist()]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    kind, values = json.loads(done.stdout)
    assert kind == "learned"
    np.testing.assert_allclose(values, pred.predict(codes), rtol=1e-12)
    assert "pickle" not in path.read_text()
    again = LatencyPredictor.load(path, space)
    np.testing.assert_allclose(again.predict(codes), pred.predict(codes), rtol=1e-12)
    with pytest.raises(LatencyPredictorError, match=r"p.json: field 'space'"):
        LatencyPredictor.load(path, load_space("mnist"))


def test_accuracy_report_and_peak_memory_fit() -> None:
    r = accuracy_report([1.0, 2.15, 2.9, 4.5], [1.0, 2.0, 3.0, 4.0])
    assert r["within_10pct"] == 0.75 and r["within_5pct"] == 0.5 and r["kendall_tau"] == 1.0
    assert r["rmse_pct"] == pytest.approx(100 * np.sqrt((0 + 0.075**2 + (0.1 / 3) ** 2 + 0.125**2) / 4))
    a = np.array([1e6, 2e6, 3e6, 5e6])
    mem = PeakMemoryPredictor.fit(a, 1.1 * a + 2e5)
    assert mem.scale == pytest.approx(1.1) and mem.offset == pytest.approx(2e5)


def test_device_scaled_cost_scales_latency_and_energy(space, blocks) -> None:
    here = load_device("rk3399_big")
    target = load_device("rpi4")
    codes = space.sample(20, np.random.default_rng(6))
    roof_here = SpaceCostTable(space, here, alignment=8).evaluate(codes)["latency_ms"]
    values = {k: [1.0] for k in blocks.keys}
    pred = LatencyPredictor(space, "lut", ["x"], values, [0.0], 0.0, blocks=blocks)
    pred.bias = 0.0
    twice = _FixedPredictor(pred, 2.0 * roof_here, codes)
    out = DeviceScaledCost(twice, here, target)(codes)  # type: ignore[arg-type]
    ref = SpaceCostTable(space, target).evaluate(codes)
    np.testing.assert_allclose(out["latency_ms"], 2.0 * ref["latency_ms"], rtol=1e-9)
    np.testing.assert_allclose(out["energy_mj"], 2.0 * ref["energy_mj"], rtol=1e-9)


class _FixedPredictor:
    """Returns given latencies for given codes (what a perfect predictor would)."""

    def __init__(self, base: LatencyPredictor, values: np.ndarray, codes: np.ndarray) -> None:
        self.space, self.alignment, self._values, self._codes = base.space, 8, values, codes

    def predict(self, codes: np.ndarray) -> np.ndarray:
        assert np.array_equal(codes, self._codes)
        return self._values


# ---- the search uses a measured profile ----------------------------------------------------------
def _measured_device(tmp_path: Path, space) -> Path:
    table = synthetic_table(space, source=str(tmp_path / "dev.lut.json"))
    table.save(tmp_path / "dev.lut.json")
    profile = machine_profile(
        "dev",
        roofline=(100.0, 10.0),
        utilisation={"conv": 0.5, "depthwise": 0.2, "linear": 0.3, "elementwise": 0.15},
        memory_utilisation=0.6,
        simd_bits=256,
        lut="dev.lut.json",
        predictor=None,
        provenance={
            "machine": "m",
            "cpu": "c",
            "ort_version": "1",
            "threads": 0,
            "strategy": "no_spin",
            "date": "d",
            "fleetnas_version": "0",
            "alignment": 8,
        },
    )
    path = tmp_path / "dev.yaml"
    path.write_text(profile.to_yaml())
    return path


def test_search_uses_a_measured_profile_as_an_objective(space, tmp_path) -> None:
    device = _measured_device(tmp_path, space)
    cfg = SearchConfig.from_dict(
        {
            "space": "imagenet",
            "device": str(device),
            "objectives": [{"metric": "macs", "direction": "max"}, {"metric": "latency_ms_measured"}],
            "constraints": [{"metric": "latency_ms_measured", "max": 20.0}],
            "strategy": {"name": "nsga2", "seed": 0, "pop_size": 20},
            "budget": {"evaluations": 200},
        },
        source="t",
    )
    _, problem, dev, _ = build_problem(cfg)
    codes = space.sample(30, np.random.default_rng(7))
    metrics = problem.metrics(codes)
    expected = fit_lut(space, LatencyTable.load(tmp_path / "dev.lut.json")).predict(codes)
    np.testing.assert_allclose(metrics["latency_ms_measured"], expected, rtol=1e-12)
    np.testing.assert_allclose(measured_predictor(dev, space).predict(codes), expected, rtol=1e-12)
    report = run_search(cfg, tmp_path / "out", progress=False)
    front = json.loads((tmp_path / "out" / "front.json").read_text())["front"]
    assert report["evaluations"] == 200 and front
    assert all(p["metrics"]["latency_ms_measured"] <= 20.0 for p in front)


def test_platforms_are_scaled_from_the_measured_latency(space, tmp_path) -> None:
    device = _measured_device(tmp_path, space)
    cfg = SearchConfig.from_dict(
        {
            "space": "imagenet",
            "device": str(device),
            "platforms": {"rpi4": 0.5, "cortex_a76": 0.5},
            "objectives": [{"metric": "macs", "direction": "max"}, {"metric": "weighted_latency_ms"}],
        },
        source="t",
    )
    _, problem, dev, _ = build_problem(cfg)
    codes = space.sample(10, np.random.default_rng(8))
    m = problem.metrics(codes)
    pred = measured_predictor(dev, space)
    rpi = DeviceScaledCost(pred, dev, load_device("rpi4"))(codes)
    a76 = DeviceScaledCost(pred, dev, load_device("cortex_a76"))(codes)
    np.testing.assert_allclose(m["weighted_latency_ms"], 0.5 * rpi["latency_ms"] + 0.5 * a76["latency_ms"])
    assert "macs" in m and "latency_ms_measured" in m


def test_a_predictor_fitted_for_another_alignment_warns_and_falls_back_to_the_table(space, tmp_path) -> None:
    device = _measured_device(tmp_path, space)  # simd 256 bits: the device builds channels at alignment 8
    wide = synthetic_table(space, alignment=16, source=str(tmp_path / "wide.lut.json"))
    fit_lut(space, wide, alignment=16).save(tmp_path / "dev.predictor.json")
    text = device.read_text().replace("  lut: dev.lut.json\n", "  lut: dev.lut.json\n  predictor: dev.predictor.json\n")
    assert "predictor: dev.predictor.json" in text
    device.write_text(text)
    dev = load_device(str(device))
    codes = space.sample(12, np.random.default_rng(9))
    with pytest.warns(UserWarning, match=r"alignment 16.*block-table sum"):
        pred = measured_predictor(dev, space)
    expected = fit_lut(space, LatencyTable.load(tmp_path / "dev.lut.json")).predict(codes)
    np.testing.assert_allclose(pred.predict(codes), expected, rtol=1e-12)
