"""NetSpec: shapes, hand-computed counts, JSON round trip and the errors users see."""

import json

import pytest

from runtime.netspec import Add, Conv, Linear, NetSpec, NetSpecError, Pool, SqueezeExcite, make_divisible

EXAMPLE = {
    "format": "fleetnas.netspec/1",
    "name": "example",
    "input": {"shape": [3, 32, 32], "dtype": "float32"},
    "layers": [
        {"op": "conv", "name": "stem", "out": 16, "kernel": 3, "stride": 2, "act": "hswish"},
        {"op": "conv", "out": 16, "kernel": 3, "groups": 16, "act": "relu"},
        {"op": "se", "reduced": 8},
        {"op": "conv", "out": 16, "kernel": 1},
        {"op": "add", "inputs": [0, 3]},
        {"op": "pool", "kind": "avg", "global": True},
        {"op": "linear", "out": 10},
    ],
}


def test_shapes_and_hand_counts():
    net = NetSpec.from_json(EXAMPLE)
    assert net.shapes[0] == (16, 16, 16)
    assert net.output_shape == (10, 1, 1)
    costs = net.layer_costs()
    # stem: 16 out × 16×16 positions × 3 in × 3×3 = 110,592 MACs; weights 432 + BN 32
    assert costs[0].macs == 16 * 16 * 16 * 3 * 9
    assert costs[0].params == 432 + 32
    # depthwise: 16 × 16×16 × 1 × 9
    assert costs[1].macs == 16 * 256 * 9
    # SE: two FCs 16→8→16, with biases
    assert costs[2].macs == 2 * 16 * 8
    assert costs[2].params == 16 * 8 + 8 + 8 * 16 + 16
    assert costs[4].macs == 0 and costs[4].flops == 16 * 256
    assert costs[6].macs == 160 and costs[6].params == 170


def test_linear_flattens_spatial_input():
    net = NetSpec((4, 3, 3), (Linear(out_channels=5),))
    assert net.layer_costs()[0].macs == 36 * 5


def test_json_round_trip(tmp_path):
    net = NetSpec.from_json(EXAMPLE)
    again = NetSpec.from_json(json.loads(json.dumps(net.to_json())))
    assert again == net
    path = tmp_path / "net.json"
    path.write_text(json.dumps(EXAMPLE))
    assert NetSpec.load(path) == net


def _with_layer(index, **changes):
    data = json.loads(json.dumps(EXAMPLE))
    data["layers"][index].update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (_with_layer(1, op="conv3d"), r"layers\[1\].*'op'.*allowed: conv"),
        (_with_layer(1, act="gelu"), r"layers\[1\].*'act'.*allowed: relu"),
        (_with_layer(0, out=-3), r"layers\[0\] \(stem\).*'out'"),
        (_with_layer(1, groups=5), r"layers\[1\].*'groups'"),
        (_with_layer(4, inputs=[0, 9]), r"layers\[4\].*'inputs'.*0\.\.3"),
        (_with_layer(4, inputs=[-1, 3]), r"layers\[4\].*differently shaped"),
        (_with_layer(0, kernal=3), r"layers\[0\].*unknown field 'kernal'.*allowed"),
        (_with_layer(5, kind="median"), r"layers\[5\].*'kind'.*avg, max"),
        ({**EXAMPLE, "format": "fleetnas.netspec/9"}, r"'format'.*fleetnas.netspec/1"),
        ({**EXAMPLE, "input": {"shape": [3, 32]}}, r"input.shape"),
        ({**EXAMPLE, "input": {"shape": [3, 32, 32], "dtype": "bf16"}}, r"input.dtype.*float32"),
        ({**EXAMPLE, "extra": 1}, r"unknown field.*extra"),
    ],
)
def test_errors_name_the_layer_and_field(data, pattern):
    with pytest.raises(NetSpecError, match=pattern):
        NetSpec.from_json(data, source="my.json")


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(NetSpecError, match=r"missing.json.*not found"):
        NetSpec.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(NetSpecError, match=r"bad.json.*not valid JSON"):
        NetSpec.load(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(_with_layer(2, reduced=0)))
    with pytest.raises(NetSpecError, match=r"wrong.json: layers\[2\].*'reduced'"):
        NetSpec.load(wrong)


def test_kernel_too_big_for_input():
    with pytest.raises(NetSpecError, match="kernel"):
        NetSpec((3, 4, 4), (Conv(out_channels=4, kernel=7, padding=0),))
    with pytest.raises(NetSpecError, match="kernel"):
        NetSpec((3, 4, 4), (Pool(kernel=5),))


def test_constructed_layers_equal_parsed():
    net = NetSpec(
        (3, 32, 32),
        (
            Conv(name="stem", out_channels=16, kernel=3, stride=2, act="hswish"),
            Conv(out_channels=16, kernel=3, groups=16, act="relu"),
            SqueezeExcite(reduced=8),
            Conv(out_channels=16, kernel=1),
            Add(inputs=(0, 3)),
            Pool(kind="avg", global_pool=True),
            Linear(out_channels=10),
        ),
        name="example",
    )
    assert net == NetSpec.from_json(EXAMPLE)


@pytest.mark.parametrize(
    ("value", "divisor", "expected"), [(16, 8, 16), (20, 8, 24), (3.2, 8, 8), (36, 16, 48), (34, 4, 36)]
)
def test_make_divisible(value, divisor, expected):
    assert make_divisible(value, divisor) == expected


# ---- padded pooling ---------------------------------------------------------------------------
PADDED = {
    "format": "fleetnas.netspec/1",
    "name": "padded",
    "input": {"shape": [4, 7, 7], "dtype": "float32"},
    "layers": [
        {"op": "pool", "name": "avg", "kind": "avg", "kernel": 3, "stride": 1, "padding": 1},
        {
            "op": "pool",
            "name": "avg_incl",
            "kind": "avg",
            "kernel": 3,
            "stride": 2,
            "padding": 1,
            "count_include_pad": True,
        },
        {"op": "pool", "name": "max", "kind": "max", "kernel": 2, "stride": 2, "padding": 1, "inputs": [0]},
        {"op": "pool", "name": "plain", "kind": "max", "kernel": 3, "inputs": [-1]},
    ],
}


def test_padded_pool_shapes_and_costs():
    net = NetSpec.from_json(PADDED)
    # (h + 2p − k) // s + 1: (7+2−3)//1+1 = 7, (7+2−3)//2+1 = 4, (7+2−2)//2+1 = 4, (7−3)//3+1 = 2
    assert net.shapes == ((4, 7, 7), (4, 4, 4), (4, 4, 4), (4, 2, 2))
    costs = net.layer_costs()
    for cost, window in zip(costs, (9, 9, 4, 9), strict=True):
        assert cost.macs == 0 and cost.params == 0 and cost.weight_elems == 0
        assert cost.flops == cost.output_elems * window
    assert costs[0].flops == 4 * 7 * 7 * 9 and costs[0].input_elems == 4 * 7 * 7
    layers = net.layers
    assert isinstance(layers[1], Pool) and layers[1].padding == 1 and layers[1].count_include_pad is True
    assert isinstance(layers[3], Pool) and layers[3].padding == 0 and layers[3].count_include_pad is False


def test_padded_pool_json_round_trip(tmp_path):
    net = NetSpec.from_json(PADDED)
    data = net.to_json()
    assert data["layers"][0]["padding"] == 1 and data["layers"][0]["count_include_pad"] is False
    assert data["layers"][1]["padding"] == 1 and data["layers"][1]["count_include_pad"] is True
    assert data["layers"][3]["padding"] == 0
    again = NetSpec.from_json(json.loads(json.dumps(data)))
    assert again == net and again.shapes == net.shapes
    path = tmp_path / "padded.json"
    path.write_text(json.dumps(PADDED))
    assert NetSpec.load(path) == net
    # padding is part of the layer: the same pool without it is another (smaller) network
    unpadded = json.loads(json.dumps(PADDED))
    del unpadded["layers"][0]["padding"]
    assert NetSpec.from_json(unpadded) != net and NetSpec.from_json(unpadded).shapes[0] == (4, 5, 5)


def _padded_with(index, **changes):
    data = json.loads(json.dumps(PADDED))
    data["layers"][index].update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (_padded_with(0, padding=-1), r"layers\[0\] \(avg\).*'padding'.*-1.*allowed: 0\.\.2"),
        (_padded_with(0, padding=3), r"layers\[0\] \(avg\).*'padding'.*3.*kernel 3.*allowed: 0\.\.2"),
        (_padded_with(2, padding=2), r"layers\[2\] \(max\).*'padding'.*kernel 2.*allowed: 0\.\.1"),
        (_padded_with(0, padding="1"), r"layers\[0\].*'padding'.*integer"),
        (_padded_with(0, padding=True), r"layers\[0\].*'padding'.*integer"),
        (_padded_with(1, count_include_pad="yes"), r"layers\[1\].*'count_include_pad'.*true or false"),
        (_with_layer(5, padding=1), r"layers\[5\].*'padding'.*global pool takes no padding.*allowed: 0"),
        (_padded_with(0, pad=1), r"layers\[0\].*unknown field 'pad'.*count_include_pad.*padding"),
    ],
)
def test_padded_pool_errors_name_the_field(data, pattern):
    with pytest.raises(NetSpecError, match=pattern):
        NetSpec.from_json(data, source="my.json")


def test_padding_does_not_rescue_a_too_big_window():
    NetSpec((3, 1, 1), (Pool(kind="avg", kernel=3, stride=1, padding=1),))  # 1 + 2 − 3 fits
    with pytest.raises(NetSpecError, match="kernel"):
        NetSpec((3, 1, 1), (Pool(kind="avg", kernel=4, stride=1, padding=1),))
    # a global pool with explicit zero padding is fine
    assert NetSpec((3, 5, 5), (Pool(global_pool=True, padding=0),)).output_shape == (3, 1, 1)
