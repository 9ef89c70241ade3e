"""Peak activation memory (MCUNet's definition) and critical path, on hand-built networks."""

from runtime.netspec import Add, Conv, NetSpec, Pool
from search.cost.memory import critical_path, live_bytes_per_step, peak_activation_bytes


def test_sequential_peak_is_largest_input_plus_output():
    net = NetSpec(
        (4, 8, 8),
        (Conv(out_channels=8, kernel=3), Conv(out_channels=2, kernel=1), Pool(global_pool=True)),
    )
    # step 0: in 256 + out 512; step 1: 512 + 128; step 2: 128 + 2 (float32: ×4 bytes)
    assert list(live_bytes_per_step(net)) == [768 * 4, 640 * 4, 130 * 4]
    assert peak_activation_bytes(net) == 768 * 4
    assert peak_activation_bytes(net, "int8") == 768


def test_residual_input_stays_live_until_the_add():
    net = NetSpec(
        (4, 8, 8),
        (
            Conv(out_channels=16, kernel=1),  # 0: in 256 → 1024
            Conv(out_channels=16, kernel=3, groups=16),  # 1: 1024 → 1024, input (256) still live
            Conv(out_channels=4, kernel=1),  # 2: 1024 → 256, input still live
            Add(inputs=(-1, 2)),  # 3: 256 + 256 → 256
        ),
    )
    assert list(live_bytes_per_step(net, "int8")) == [256 + 1024, 256 + 1024 + 1024, 256 + 1024 + 256, 768]
    assert critical_path(net) == 4


def test_critical_path_takes_the_longest_branch():
    net = NetSpec(
        (4, 8, 8),
        (
            Conv(out_channels=4, kernel=1),  # 0
            Conv(out_channels=4, kernel=1),  # 1
            Conv(out_channels=4, kernel=1, inputs=(-1,)),  # 2: a short branch from the input
            Add(inputs=(1, 2)),  # 3
        ),
    )
    assert critical_path(net) == 3  # 0 → 1 → 3
    assert critical_path(net, [1.0, 1.0, 5.0, 1.0]) == 6.0  # the weighted branch 2 → 3 wins
