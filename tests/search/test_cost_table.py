"""The vectorised cost tables agree exactly with costing each compiled NetSpec (the scalar path)."""

import numpy as np
import pytest

from runtime.energy import estimate
from runtime.hardware import load_device
from runtime.hardware.workload import workload_of
from search.cost.report import cost_netspec
from search.cost.table import SpaceCostTable
from search.space import MobileNetV3Config, MobileNetV3Space, load_space

EXACT = (
    "macs",
    "flops",
    "params",
    "weight_bytes",
    "bytes_moved",
    "peak_activation_bytes",
    "critical_path_layers",
)


@pytest.mark.parametrize(
    ("space", "device"),
    [
        (load_space("imagenet"), "rpi4"),
        (load_space("mnist"), "stm32h7"),
        (MobileNetV3Space(MobileNetV3Config(widths=(0.75, 1.0, 1.25), resolutions=(128, 224))), "rk3399_big"),
    ],
)
def test_vectorised_equals_scalar(space, device):
    dev = load_device(device)
    table = SpaceCostTable(space, dev)
    codes = space.sample(40, np.random.default_rng(7))
    vec = table.evaluate(codes)
    for i, arch in enumerate(space.decode_batch(codes)):
        rep = cost_netspec(space.to_netspec(arch, alignment=dev.alignment("float32")), dev)
        for key in EXACT:
            assert vec[key][i] == getattr(rep, key), (key, i)
        assert vec["latency_ms"][i] == pytest.approx(rep.latency_ms, rel=1e-9)
        assert vec["energy_mj"][i] == pytest.approx(rep.energy_mj, rel=1e-9)
        assert vec["arithmetic_intensity"][i] == pytest.approx(rep.arithmetic_intensity, rel=1e-12)


def test_without_device_only_counts():
    space = load_space("imagenet")
    out = SpaceCostTable(space).evaluate(space.sample(10, np.random.default_rng(0)))
    assert "latency_ms" not in out and "energy_mj" not in out
    assert np.all(out["macs"] > 0)


def test_deadline_adds_idle_energy_and_opp_changes_latency():
    space = load_space("imagenet")
    dev = load_device("rk3399_big")
    codes = space.sample(20, np.random.default_rng(1))
    fast = SpaceCostTable(space, dev).evaluate(codes)
    slow = SpaceCostTable(space, dev, opp=dev.opps[0]).evaluate(codes)
    assert np.all(slow["latency_ms"] > fast["latency_ms"])
    deadline = float(slow["latency_ms"].max()) / 1e3 * 2
    idle = SpaceCostTable(space, dev, deadline_s=deadline).evaluate(codes)
    assert np.all(idle["energy_mj"] > fast["energy_mj"])
    arch = space.decode(codes[0])
    work = workload_of(space.to_netspec(arch, alignment=dev.alignment("float32")), dev)
    assert idle["energy_mj"][0] == pytest.approx(estimate(work, dev, dev.max_opp, deadline_s=deadline).energy_j * 1e3)


def test_bigger_choices_cost_more():
    space = load_space("imagenet")
    table = SpaceCostTable(space, load_device("rpi4"))
    small = np.zeros((1, space.encoding_length), dtype=np.int64)
    big = space.cardinalities[None, :] - 1
    s, b = table.evaluate(small), table.evaluate(big)
    for key in ("macs", "params", "latency_ms", "energy_mj", "peak_activation_bytes"):
        assert b[key][0] > s[key][0]
