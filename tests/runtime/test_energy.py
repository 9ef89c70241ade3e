"""Roofline workload, DVFS energy model, OPP choice and seed metrics, against hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.energy import (
    dominated_opps,
    energy_from_split,
    energy_per_inference,
    estimate,
    estimate_all,
    min_edp_opp,
    optimal_opp,
)
from runtime.hardware import (
    DeviceProfile,
    OperatingPoint,
    Workload,
    layer_class,
    load_device,
    roofline_latency_ms,
    workload_of,
)
from runtime.metrics import edp, efficiency_score, mnas_reward, weighted_cost
from runtime.netspec import Activation, Add, Conv, Linear, NetSpec, Pool, SqueezeExcite

SLOW, FAST = OperatingPoint(500, 0.8), OperatingPoint(1000, 1.0)


def toy_device(static: float = 0.1, idle: float = 0.02, mem: float = 0.05, **extra: object) -> DeviceProfile:
    """2 cores, 4 FLOP/cycle, 1 GB/s fully attained, dpc 500 uW/MHz/V^2, OPPs 500 MHz/0.8 V, 1 GHz/1.0 V."""
    return DeviceProfile(
        name="toy",
        kind="cpu",
        cores=2,
        flops_per_cycle={"float32": 4},
        memory_bandwidth_gbps=1.0,
        memory_utilisation=1.0,
        utilisation={"conv": 0.5, "depthwise": 0.5, "linear": 0.5, "elementwise": 0.5},
        opps=(SLOW, FAST),
        dynamic_power_coefficient=500,
        static_power_w=static,
        idle_power_w=idle,
        memory_power_w=mem,
        ram_bytes=1 << 20,
        **extra,  # type: ignore[arg-type]
    )


def toy_workload() -> Workload:
    """Layer 0: 2e6 cycles vs 1 ms of memory; layer 1: 1e5 cycles vs 1 ms of memory."""
    return Workload(
        layer_names=("conv", "add"),
        layer_classes=("conv", "elementwise"),
        flops=np.array([16e6, 0.8e6]),
        bytes_moved=np.array([1e6, 1e6]),
        compute_cycles=np.array([2e6, 1e5]),
        memory_seconds=np.array([1e-3, 1e-3]),
        device_name="toy",
        cores=2,
    )


def tiny_conv_net() -> NetSpec:
    """One 3x3 conv, 3 -> 4 channels on 8x8 (BN folded, no activation)."""
    return NetSpec(input_shape=(3, 8, 8), layers=(Conv(out_channels=4, kernel=3),), name="tiny")


def mobile_block_net() -> NetSpec:
    """A small MobileNetV3-style net exercising every layer class."""
    return NetSpec(
        input_shape=(3, 64, 64),
        layers=(
            Conv(name="stem", out_channels=16, kernel=3, stride=2, act="hswish"),  # 0
            Conv(out_channels=64, kernel=1, act="relu"),  # 1 expand
            Conv(out_channels=64, kernel=5, groups=64, act="relu"),  # 2 depthwise
            SqueezeExcite(reduced=16),  # 3
            Conv(out_channels=16, kernel=1),  # 4 project
            Add(inputs=(0, 4)),  # 5 residual
            Activation(kind="hswish"),  # 6
            Pool(kind="avg", global_pool=True),  # 7
            Linear(out_channels=10),  # 8
        ),
        name="mobile_block",
    )


# ---- workload ------------------------------------------------------------------------------------
def test_layer_classes() -> None:
    net = mobile_block_net()
    classes = [layer_class(layer, net.input_shapes_of(i)[0][0]) for i, layer in enumerate(net.layers)]
    elementwise = ["elementwise"] * 3
    assert classes == ["conv", "conv", "depthwise", "elementwise", "conv", *elementwise, "linear"]
    # A grouped conv that is not depthwise stays "conv"; so does a 1-channel conv with groups=1.
    assert layer_class(Conv(out_channels=8, groups=2), 4) == "conv"
    assert layer_class(Conv(out_channels=1, groups=1), 1) == "conv"


def test_workload_of_a_tiny_conv_by_hand() -> None:
    w = workload_of(tiny_conv_net(), toy_device())
    # MACs = 4*8*8 outputs * 3*3*3 = 6912; FLOPs = 2*6912 + 256 (folded-BN bias) = 14080.
    assert w.flops.tolist() == [14080.0]
    # Bytes = (weights 4*3*3*3 + bias 4 = 112, input 192, output 256) * 4 B = 2240.
    assert w.bytes_moved.tolist() == [2240.0]
    # Cycles = 14080 / (4 FLOP/cycle * 2 cores * 0.5 utilisation) = 3520; memory = 2240 B / 1 GB/s.
    assert w.compute_cycles.tolist() == [3520.0]
    assert w.memory_seconds[0] == pytest.approx(2.24e-6, rel=1e-12)
    # At 1 GHz the conv is compute-bound (3.52 us > 2.24 us); at 100 MHz even more so.
    assert w.latency_s(1000) == pytest.approx(3.52e-6, rel=1e-12)
    assert roofline_latency_ms(tiny_conv_net(), toy_device()) == pytest.approx(3.52e-3, rel=1e-12)
    assert w.layer_classes == ("conv",) and w.cores == 2 and w.dtype == "float32"
    with pytest.raises(ValueError):
        w.compute_cycles[0] = 0.0  # read-only arrays


def test_workload_uses_dtype_bytes_cores_and_class_utilisation() -> None:
    rpi = load_device("rpi4")
    net = mobile_block_net()
    w32, w8 = workload_of(net, rpi, "float32"), workload_of(net, rpi, "int8")
    np.testing.assert_allclose(w8.bytes_moved * 4, w32.bytes_moved)
    # int8 has twice the peak per cycle on the A72 -> half the cycles.
    np.testing.assert_allclose(w8.compute_cycles * 2, w32.compute_cycles)
    one = workload_of(net, rpi, "float32", cores=1)
    np.testing.assert_allclose(one.compute_cycles, w32.compute_cycles * 4)
    # Depthwise runs at 0.25 of peak, conv at 0.6: cycles = flops / (8 * 4 * util).
    assert w32.compute_cycles[2] == pytest.approx(w32.flops[2] / (8 * 4 * 0.25))
    assert w32.compute_cycles[1] == pytest.approx(w32.flops[1] / (8 * 4 * 0.6))


def test_workload_rejects_what_the_device_cannot_run() -> None:
    net = mobile_block_net()
    with pytest.raises(ValueError, match=r"'float16'.*allowed: float32, int8, uint8"):
        workload_of(net, load_device("rpi4"), "float16")
    with pytest.raises(ValueError, match=r"1\.\.4"):
        workload_of(net, load_device("rpi4"), cores=5)
    npu = toy_device(supported_ops=("conv", "pool", "linear"))
    with pytest.raises(ValueError, match=r"layers\[3\].*'se'.*supported ops: conv, pool, linear"):
        workload_of(net, npu)


@pytest.mark.parametrize("device_name", ["rpi4", "rk3399_big", "stm32h7", "orin_nx"])
def test_split_reproduces_the_roofline_sum_at_every_frequency(device_name: str) -> None:
    device = load_device(device_name)
    w = workload_of(mobile_block_net(), device, "int8" if device.kind == "mcu" else "float32")
    freqs = np.array([o.freq_mhz for o in device.opps] + [50.0, 5000.0])
    bound_counts = set()
    for f in freqs:
        t_mem, cycles = w.split(f)
        assert t_mem + cycles / (f * 1e6) == pytest.approx(w.layer_latency_s(f).sum(), rel=1e-12)
        assert w.latency_s(f) == pytest.approx(float(w.layer_latency_s(f).sum()), rel=1e-12)
        bound_counts.add(int(w.compute_bound(f).sum()))
    assert len(bound_counts) > 1, "the sweep should move some layer between compute- and memory-bound"
    t_mem_v, cycles_v = w.split_many(freqs)
    for i, f in enumerate(freqs):
        assert (t_mem_v[i], cycles_v[i]) == pytest.approx(w.split(f), rel=1e-12)
    np.testing.assert_allclose(w.latency_s_many(freqs), [w.latency_s(f) for f in freqs], rtol=1e-12)


# ---- the energy model by hand -----------------------------------------------------------------
def test_estimate_by_hand_at_both_opps() -> None:
    dev, w = toy_device(), toy_workload()
    # 1 GHz: layer 0 computes 2 ms (> 1 ms memory), layer 1 computes 0.1 ms (< 1 ms): t = 3 ms,
    # t_mem = 1 ms, cycles = 2e6, activity = 2/3.
    assert w.split(1000) == pytest.approx((1e-3, 2e6))
    fast = estimate(w, dev, FAST)
    assert fast.latency_s == pytest.approx(3e-3)
    assert fast.activity == pytest.approx(2 / 3)
    # P = 500 uW/MHz/V^2 * 2 cores * 1.0^2 * 1000 MHz * 2/3 = 0.6667 W, + 0.1 static + 0.05 memory.
    assert fast.power_w == pytest.approx(0.816667, rel=1e-5)
    # E = 0.816667 W * 3 ms = 2.45 mJ (dynamic 2.0 mJ = k V^2 cycles, static+mem 0.45 mJ).
    assert fast.energy_j == pytest.approx(2.45e-3)
    assert fast.idle_energy_j == 0.0 and fast.feasible
    assert fast.edp == pytest.approx(2.45e-3 * 3e-3)
    # 500 MHz / 0.8 V: layer 0 computes 4 ms, layer 1 0.2 ms (< 1 ms): t = 5 ms, activity 0.8.
    slow = estimate(w, dev, SLOW)
    assert slow.latency_s == pytest.approx(5e-3)
    # P = 1000 * 0.64 * 500 * 0.8 uW = 0.256 W, + 0.15 W = 0.406 W; E = 2.03 mJ.
    assert slow.power_w == pytest.approx(0.406)
    assert slow.energy_j == pytest.approx(2.03e-3)


def test_deadline_adds_idle_energy_until_the_deadline() -> None:
    dev, w = toy_device(), toy_workload()
    fast = estimate(w, dev, FAST, deadline_s=10e-3)
    # Idle 0.02 W for 10 - 3 = 7 ms = 0.14 mJ on top of 2.45 mJ.
    assert fast.idle_energy_j == pytest.approx(1.4e-4)
    assert fast.energy_j == pytest.approx(2.59e-3)
    assert fast.active_energy_j == pytest.approx(2.45e-3)
    assert fast.edp == pytest.approx(2.59e-3 * 3e-3)
    slow = estimate(w, dev, SLOW, deadline_s=10e-3)
    assert slow.energy_j == pytest.approx(2.03e-3 + 0.02 * 5e-3)
    missed = estimate(w, dev, SLOW, deadline_s=4e-3)
    assert not missed.feasible and missed.idle_energy_j == 0.0


def test_estimate_all_is_vectorised_and_matches_single_estimates() -> None:
    dev, w = toy_device(), toy_workload()
    for deadline in (None, 4e-3, 10e-3):
        many = estimate_all(w, dev, deadline)
        assert [e.freq_mhz for e in many] == [500, 1000]
        assert many == [estimate(w, dev, opp, deadline) for opp in dev.opps]


def test_energy_from_split_matches_estimate_for_many_workloads() -> None:
    dev = load_device("rk3399_big")
    rng = np.random.default_rng(0)
    nets = [mobile_block_net(), tiny_conv_net()]
    works = [workload_of(n, dev) for n in nets]
    opp = dev.opps[3]
    t_mem, cycles = np.array([w.split(opp.freq_mhz) for w in works]).T
    for deadline in (None, float(rng.uniform(0.01, 0.1))):
        energies = energy_from_split(t_mem, cycles, dev, opp, deadline_s=deadline)
        expected = [estimate(w, dev, opp, deadline).energy_j for w in works]
        np.testing.assert_allclose(energies, expected, rtol=1e-12)


# ---- choosing the operating point -------------------------------------------------------------
def test_loose_deadline_lets_the_lower_opp_win_when_static_power_is_small() -> None:
    # 500 MHz: 2.03 + 0.02 * 5 ms = 2.13 mJ;  1 GHz: 2.45 + 0.02 * 7 ms = 2.59 mJ.
    choice = optimal_opp(toy_workload(), toy_device(), deadline_s=10e-3)
    assert choice.feasible and choice.opp == SLOW
    assert choice.estimate.energy_j == pytest.approx(2.13e-3)
    assert choice.fastest_latency_s == pytest.approx(3e-3)
    assert "500 MHz" in choice.reason and "2 of 2" in choice.reason


def test_large_static_power_makes_racing_to_idle_win() -> None:
    dev = toy_device(static=2.0)
    # 1 GHz: 2.0 mJ dynamic + 2.05 W * 3 ms + 0.02 W * 7 ms = 8.29 mJ.
    # 500 MHz: 1.28 mJ dynamic + 2.05 W * 5 ms + 0.02 W * 5 ms = 11.63 mJ.
    choice = optimal_opp(toy_workload(), dev, deadline_s=10e-3)
    assert choice.opp == FAST and choice.estimate.energy_j == pytest.approx(8.29e-3)
    assert estimate(toy_workload(), dev, SLOW, 10e-3).energy_j == pytest.approx(11.63e-3)


def test_tight_deadline_leaves_only_the_fast_opp() -> None:
    choice = optimal_opp(toy_workload(), toy_device(), deadline_s=4e-3)
    assert choice.feasible and choice.opp == FAST
    assert "1 of 2" in choice.reason


def test_infeasible_deadline_reports_instead_of_raising() -> None:
    choice = optimal_opp(toy_workload(), toy_device(), deadline_s=2e-3)
    assert not choice.feasible
    assert choice.opp == FAST and choice.fastest_latency_s == pytest.approx(3e-3)
    assert not choice.estimate.feasible
    assert "no OPP meets the 2 ms deadline" in choice.reason and "3 ms" in choice.reason
    assert "1.50x" in choice.reason


def test_no_deadline_minimises_active_energy_and_edp() -> None:
    w, dev = toy_workload(), toy_device()
    assert optimal_opp(w, dev, None).opp == SLOW  # 2.03 mJ < 2.45 mJ
    # EDP: 2.45 mJ * 3 ms = 7.35e-6 J*s at 1 GHz < 2.03 mJ * 5 ms = 1.015e-5 J*s at 500 MHz.
    choice = min_edp_opp(w, dev)
    assert choice.opp == FAST and choice.estimate.edp == pytest.approx(7.35e-6)
    with pytest.raises(ValueError, match="deadline_s"):
        optimal_opp(w, dev, -1.0)


def test_exact_ties_go_to_the_faster_opp() -> None:
    # Fully memory-bound: t = 1 ms and no compute cycles at either OPP, so both cost
    # (0.1 + 0.05) W * 1 ms + 0.02 W * 9 ms = 0.33 mJ; the faster one leaves more slack.
    one = np.ones(1)
    w = Workload(
        ("copy",), ("elementwise",), 0 * one, 1e6 * one, 10 * one, 1e-3 * one, device_name="toy", cores=2
    )
    ests = estimate_all(w, toy_device(), 10e-3)
    assert ests[0].energy_j == ests[1].energy_j == pytest.approx(3.3e-4)
    assert optimal_opp(w, toy_device(), 10e-3).opp == FAST


def test_mismatched_workload_and_device_are_rejected() -> None:
    with pytest.raises(ValueError, match="built for device 'toy'"):
        estimate(toy_workload(), load_device("rpi4"), load_device("rpi4").max_opp)
    nano = load_device("jetson_nano")
    work = workload_of(mobile_block_net(), nano)  # 4 cores
    with pytest.raises(ValueError, match="4 cores"):
        optimal_opp(work, nano.with_power_mode("5W"), 1.0)


def test_power_mode_restricts_the_choice() -> None:
    nano = load_device("jetson_nano").with_power_mode("5W")
    work = workload_of(mobile_block_net(), nano)
    assert work.cores == 2
    choice = optimal_opp(work, nano, deadline_s=1e-6)  # impossible deadline
    assert not choice.feasible and choice.opp.freq_mhz == 918


# ---- dominated OPPs ---------------------------------------------------------------------------
def test_dominated_opps_on_rk3399() -> None:
    assert dominated_opps(load_device("rk3399_big")) == (OperatingPoint(408, 0.80),)


def test_dominated_opps_on_other_devices() -> None:
    nano = dominated_opps(load_device("jetson_nano"))
    assert [o.freq_mhz for o in nano] == [204, 306, 1326]  # 0.84 V floor; 1.09 V shared with 1479
    a76 = dominated_opps(load_device("cortex_a76"))
    assert [o.freq_mhz for o in a76] == [408, 600, 816, 1008, 2256, 2304, 2352]
    assert dominated_opps(load_device("rpi4")) == ()
    assert dominated_opps(toy_device()) == ()


@pytest.mark.parametrize("device_name", ["rk3399_big", "jetson_nano", "cortex_a76", "orin_nx"])
def test_a_dominated_opp_never_costs_less_and_is_never_chosen(device_name: str) -> None:
    device = load_device(device_name)
    dominated = set(dominated_opps(device))
    assert dominated
    rng = np.random.default_rng(1)
    for net in (mobile_block_net(), tiny_conv_net()):
        work = workload_of(net, device)
        fastest = work.latency_s(device.max_opp.freq_mhz)
        for deadline in [None, *(fastest * rng.uniform(1.0, 50.0, size=8))]:
            choice = optimal_opp(work, device, deadline)
            assert choice.opp not in dominated
            by_opp = dict(zip(device.opps, estimate_all(work, device, deadline), strict=True))
            for slow in dominated:
                faster = [
                    o for o in device.opps if o.freq_mhz > slow.freq_mhz and o.voltage_v <= slow.voltage_v
                ]
                assert by_opp[faster[0]].energy_j <= by_opp[slow].energy_j * (1 + 1e-12)


# ---- energy_per_inference on a NetSpec ------------------------------------------------------
def test_energy_per_inference_of_a_small_netspec_by_hand() -> None:
    net, dev = tiny_conv_net(), toy_device()
    # Default OPP = 1 GHz: compute-bound, t = 3520 cycles / 1 GHz = 3.52 us, activity 1.
    # E = 1e-12 * 500 * 2 cores * 1.0^2 * 3520 = 3.52 uJ dynamic + 0.15 W * 3.52 us = 0.528 uJ.
    e = energy_per_inference(net, dev)
    assert e.freq_mhz == 1000 and e.latency_s == pytest.approx(3.52e-6)
    assert e.power_w == pytest.approx(1.15)
    assert e.energy_j == pytest.approx(4.048e-6)
    # 500 MHz / 0.8 V: t = 7.04 us; E = 1e-12 * 1000 * 0.64 * 3520 + 0.15 * 7.04e-6 = 3.3088 uJ.
    slow = energy_per_inference(net, dev, opp=SLOW)
    assert slow.latency_s == pytest.approx(7.04e-6) and slow.energy_j == pytest.approx(3.3088e-6)
    # With a 10 us deadline the fast OPP idles 6.48 us at 0.02 W.
    assert energy_per_inference(net, dev, deadline_s=10e-6).energy_j == pytest.approx(
        4.048e-6 + 0.02 * 6.48e-6
    )


def test_energy_per_inference_on_catalogue_devices_is_plausible() -> None:
    net = mobile_block_net()
    for name in ("rpi4", "rk3399_big", "jetson_nano", "orin_nx", "cortex_a76"):
        device = load_device(name)
        e = energy_per_inference(net, device)
        assert 0 < e.latency_s < 0.1 and device.static_power_w < e.power_w < 15
    mcu = load_device("stm32h7")
    e = energy_per_inference(net, mcu, "int8")
    assert e.power_w < 1.0 and e.latency_s > energy_per_inference(net, load_device("rpi4"), "int8").latency_s


# ---- seed metrics ------------------------------------------------------------------------------
def test_weighted_cost() -> None:
    # 1e-6 * 1e6 + 1e-5 * 2e5 + 100 * 3e-3 = 1 + 2 + 0.3
    assert weighted_cost(1e6, 2e5, 3e-3, 1e-6, 1e-5, 100) == pytest.approx(3.3)
    np.testing.assert_allclose(weighted_cost([1, 2], [3, 4], [5, 6], 1, 2, 3), [22.0, 28.0])


def test_efficiency_score() -> None:
    assert efficiency_score(0.75, 2.0, 0.5) == pytest.approx(0.75)  # 0.75 / (2 * 0.5)
    assert efficiency_score(0.75, 2.0, 0.5, a=2, b=1, c=2) == pytest.approx(1.125)  # 0.5625 / (2 * 0.25)
    np.testing.assert_allclose(efficiency_score([0.5, 0.8], [1.0, 4.0], 0.5, 1, 1, 1), [1.0, 0.4])
    with pytest.raises(ValueError, match="energy"):
        efficiency_score(0.7, [1.0, 0.0], 1.0)


def test_edp_metric() -> None:
    assert edp(2e-3, 5e-3) == pytest.approx(1e-5)
    np.testing.assert_allclose(edp([1.0, 2.0], [3.0, 4.0]), [3.0, 8.0])


def test_mnas_reward() -> None:
    assert mnas_reward(0.75, 80.0, 80.0) == pytest.approx(0.75)
    # 2^-0.07 = 0.952638: twice the target costs ~4.7 % of the accuracy.
    assert mnas_reward(0.75, 160.0, 80.0) == pytest.approx(0.714479, rel=1e-5)
    # Faster than the target is rewarded: (0.5)^-0.07 = 1.049717.
    np.testing.assert_allclose(mnas_reward([0.75, 0.75], [40.0, 80.0], 80.0), [0.787288, 0.75], rtol=1e-5)
    assert mnas_reward(0.75, 160.0, 80.0, w=0.0) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="latency"):
        mnas_reward(0.75, 0.0, 80.0)
