"""MultiModeRuntime: correct outputs per mode, atomic switching under load, metrics, reload."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from runtime.bundle import BundleError
from runtime.engine import MultiModeRuntime, ThreadingConfig


@pytest.fixture(scope="module")
def runtimes(shared_bundle):
    private = MultiModeRuntime(shared_bundle, weight_sharing=False, deadline_ms=50.0)
    shared = MultiModeRuntime(shared_bundle, weight_sharing=True)
    return private, shared


def test_layouts_give_the_same_outputs(runtimes, probe_input):
    private, shared = runtimes
    for mode in private.modes:
        private.switch(mode)
        shared.switch(mode)
        a, b = private.infer(probe_input), shared.infer(probe_input)
        assert a.shape == (2, 10)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_modes_differ_and_match_the_reference(runtimes, shared_bundle, probe_input):
    from runtime.engine import read_shared_weights
    from runtime.onnx_builder import reference_forward, slice_shared, weight_shapes

    private, _ = runtimes
    full = read_shared_weights(shared_bundle.root, shared_bundle.manifest.shared_weights)
    outs = {}
    for mode in ("high", "balanced"):  # same resolution as the input: no resize in the way
        net = shared_bundle.manifest.mode(mode).netspec
        weights = {k: slice_shared(full[k], s) for k, s in weight_shapes(net).items()}
        private.switch(mode)
        outs[mode] = private.infer(probe_input)
        np.testing.assert_allclose(outs[mode], reference_forward(net, weights, probe_input), rtol=1e-3, atol=1e-4)
    assert not np.allclose(outs["high"], outs["balanced"])


def test_concurrent_switching_never_fails_or_misroutes(shared_bundle, probe_input):
    rt = MultiModeRuntime(shared_bundle, threading_config=ThreadingConfig(intra_op_threads=1))
    x = probe_input[:1]
    expected = {}
    for mode in rt.modes:
        rt.switch(mode, "probe")
        expected[mode] = rt.infer(x)
    errors: list[BaseException] = []
    misrouted = []
    stop = threading.Event()
    counts = [0, 0]

    def worker(k: int) -> None:
        try:
            while not stop.is_set():
                out, mode = rt.infer(x, return_mode=True)
                if not np.allclose(out, expected[mode], rtol=1e-5, atol=1e-6):
                    misrouted.append(mode)
                counts[k] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    modes = rt.modes
    for i in range(3000):
        rt.switch(modes[i % len(modes)], "stress")
    stop.set()
    for t in threads:
        t.join()
    assert not errors and not misrouted
    assert rt.failed_requests == 0
    assert sum(counts) > 0
    assert len(rt.switches) == 3000 + len(modes)


def test_metrics_are_json_with_quantiles_and_energy(runtimes, probe_input):
    private, _ = runtimes
    private.switch("low", "battery 15%")
    for _ in range(20):
        private.infer(probe_input[:1])
    m = json.loads(json.dumps(private.metrics()))
    low = m["modes"]["low"]
    assert low["inferences"] >= 20
    lat = low["latency"]
    assert 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"] * 1.0001
    assert low["energy"]["device"] == "rpi4" and low["energy"]["energy_mj"] > 0
    assert low["energy"]["freq_source"] in ("cpufreq", "nominal")
    assert low["energy"]["optimal_freq_mhz"] is not None
    assert m["modes"]["high"]["energy"]["energy_mj"] > low["energy"]["energy_mj"]
    assert m["switches"][-1]["reason"] == "battery 15%" and m["switches"][-1]["to"] == "low"
    assert private.latency_quantile_ms(0.95) is not None


def test_unknown_mode_is_a_clear_error(runtimes):
    with pytest.raises(ValueError, match="unknown mode 'turbo'; modes: high, balanced, low"):
        runtimes[0].switch("turbo")


def test_failed_reload_keeps_serving_the_previous_bundle(shared_bundle, tmp_path, probe_input):
    import shutil

    rt = MultiModeRuntime(shared_bundle)
    before = rt.infer(probe_input)
    broken = tmp_path / "broken"
    shutil.copytree(shared_bundle.root, broken)
    (broken / "balanced.onnx").write_bytes(b"garbage")
    with pytest.raises(BundleError, match=r"balanced\.onnx"):
        rt.reload(broken)
    np.testing.assert_array_equal(rt.infer(probe_input), before)
    assert rt.bundle.root == shared_bundle.root


def test_successful_reload_swaps_bundles(shared_bundle, tmp_path, probe_input):
    from runtime.bundle_build import build_bundle
    from tests.runtime.conftest import three_modes

    rt = MultiModeRuntime(shared_bundle, mode="balanced")
    new = build_bundle(three_modes(), tmp_path / "v2", seed=99, bundle_version="0.2.0")
    rt.reload(new)
    assert rt.current_mode == "balanced" and rt.bundle.manifest.bundle_version == "0.2.0"
    assert rt.switches[-1].reason == "bundle reloaded"
    assert rt.infer(probe_input).shape == (2, 10)


def test_bad_threading_strategy():
    with pytest.raises(ValueError, match="allowed: no_spin, global, default"):
        ThreadingConfig(strategy="turbo")
