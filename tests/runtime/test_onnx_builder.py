"""runtime.onnx_builder: NetSpec → ONNX graphs checked against a numpy oracle, and shared weights.

Every graph is validated by ``onnx.checker`` (full check), its inferred per-layer shapes are
compared with the NetSpec's, and ONNX Runtime's output is compared with ``reference_forward``.
The shared-layout tests build several modes of the mnist space over one weight file and run them
both ways a device can: external data read by ORT, and ``add_initializer`` of one mapped copy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, shape_inference

from runtime.netspec import Activation, Add, Conv, Linear, NetSpec, Pool, SqueezeExcite
from runtime.onnx_builder import (
    SharedEntry,
    SharedWeights,
    build_model,
    init_weights,
    layer_key,
    layer_output_names,
    read_shared,
    reference_forward,
    save_model,
    shared_name,
    shared_union,
    slice_shared,
    weight_shapes,
    write_shared,
)
from search.arch import Arch
from search.references import mobilenetv3_small
from search.space import load_space
from search.space.nasbench201 import NasBench201Config, NasBench201Space


# ---- networks under test ------------------------------------------------------------------------
def all_ops_net() -> NetSpec:
    """Every layer type, activation and pool kind; 2-D (after Linear) and 4-D tensors mixed."""
    layers = (
        Conv(name="stem", out_channels=8, kernel=3, stride=2, act="hswish"),  # 0 (8,6,6), BN bias
        Conv(name="dw", out_channels=8, kernel=3, groups=8, act="relu6"),  # 1 depthwise
        SqueezeExcite(name="se", reduced=4, gate="hsigmoid"),  # 2
        Conv(name="proj", out_channels=8, kernel=1, bias=True, bn=False),  # 3 bias without BN
        Add(name="add3", inputs=(0, 1, 3)),  # 4 three inputs
        Activation(kind="sigmoid"),  # 5 unnamed -> "act5"
        Conv(name="grouped", out_channels=12, kernel=3, groups=4, padding=0, bn=False, act="hsigmoid"),  # 6 (12,4,4)
        SqueezeExcite(name="se2", reduced=3, gate="sigmoid"),  # 7
        Pool(name="maxpool", kind="max", kernel=3, stride=1),  # 8 (12,2,2)
        Pool(name="avgpool", kind="avg", kernel=2, stride=1, inputs=(7,)),  # 9 (12,3,3)
        Activation(kind="relu", inputs=(9,)),  # 10 unnamed
        Linear(name="fc_spatial", out_channels=10, act="relu6"),  # 11 flattens 12*3*3
        Activation(name="fc_act", kind="hswish"),  # 12 on a 2-D tensor
        Linear(name="fc_nobias", out_channels=10, bias=False, inputs=(8,)),  # 13 flattens 12*2*2
        Add(name="add2d", inputs=(12, 13)),  # 14 2-D + 2-D
        Pool(name="gmax", kind="max", global_pool=True, inputs=(8,)),  # 15 (12,1,1)
        Conv(name="conv_vec", out_channels=10, kernel=1, act="relu"),  # 16 (10,1,1)
        Add(name="add_mixed", inputs=(14, 16)),  # 17 2-D + 4-D
        Conv(name="conv_on_2d", out_channels=6, kernel=1, act="sigmoid", inputs=(12,)),  # 18 reads a 2-D tensor
        SqueezeExcite(name="se_on_2d", reduced=2, inputs=(14,)),  # 19
        Pool(name="gavg", kind="avg", global_pool=True, inputs=(18,)),  # 20
        Conv(name="mix", out_channels=10, kernel=1),  # 21
        Add(name="add_final", inputs=(17, 19, 21)),  # 22
        Linear(name="classifier", out_channels=5),  # 23 -> logits (N, 5)
    )
    return NetSpec((3, 12, 12), layers, name="all_ops")


def spatial_out_net() -> NetSpec:
    """Ends on a spatial tensor: the graph output stays (N, C, H, W)."""
    layers = (
        Conv(out_channels=4, kernel=3, stride=2, act="relu6"),
        Pool(kind="avg", kernel=2, stride=1),
        Activation(kind="hswish"),
    )
    return NetSpec((2, 9, 9), layers, name="spatial_out")


def pool_out_net() -> NetSpec:
    """Ends on a global pool: the (N, C, 1, 1) output is flattened to (N, C)."""
    layers = (Conv(out_channels=6, kernel=3, act="relu"), Pool(kind="max", global_pool=True))
    return NetSpec((1, 8, 8), layers, name="pool_out")


def padded_pool_net() -> NetSpec:
    """Padded windowed pools: avg with and without the padding counted, max, strided, odd sizes."""
    layers = (
        Conv(name="c", out_channels=5, kernel=3, act="relu6"),  # 0 (5,7,7)
        Pool(name="avg_excl", kind="avg", kernel=3, stride=1, padding=1),  # 1 (5,7,7)
        Pool(
            name="avg_incl", kind="avg", kernel=3, stride=2, padding=1, count_include_pad=True, inputs=(0,)
        ),  # (5,4,4)
        Pool(name="max_pad", kind="max", kernel=3, stride=2, padding=2, inputs=(0,)),  # 3 (5,5,5)
        Pool(name="avg_excl2", kind="avg", kernel=4, stride=3, padding=3, inputs=(0,)),  # 4 (5,4,4)
        Add(name="sum", inputs=(2, 4)),  # 5
        Linear(name="fc", out_channels=3, inputs=(5,)),  # 6
        Linear(name="fc_max", out_channels=3, inputs=(3,)),  # 7
        Linear(name="fc_avg", out_channels=3, inputs=(1,)),  # 8
        Add(name="out", inputs=(6, 7, 8)),  # 9
    )
    return NetSpec((2, 7, 7), layers, name="padded_pools")


def nasbench201_net() -> NetSpec:
    """NAS-Bench-201's arch 0 at 16×16: avg_pool_3x3 edges (padded, count_include_pad=False)."""
    space = NasBench201Space(NasBench201Config(resolution=16, cells_per_stage=1))
    cell = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|skip_connect~1|nor_conv_3x3~2|"
    return space.to_netspec(Arch.create(space.name, cell=cell))


def mnist_net(i: int) -> NetSpec:
    """The ``i``-th of three seeded samples of the mnist space."""
    return mnist_nets()[i]


def mnist_nets(n: int = 3, seed: int = 0) -> list[NetSpec]:
    """``n`` networks sampled (seeded) from the mnist space."""
    space = load_space("mnist")
    codes = space.sample(n, np.random.default_rng(seed))
    return [space.to_netspec(space.decode(code)) for code in codes]


NETS: dict[str, Callable[[], NetSpec]] = {
    "all_ops": all_ops_net,
    "spatial_out": spatial_out_net,
    "pool_out": pool_out_net,
    "padded_pools": padded_pool_net,
    "nasbench201": nasbench201_net,
    "mobilenetv3_small_64": lambda: mobilenetv3_small(resolution=64),
    **{f"mnist{i}": partial(mnist_net, i) for i in range(3)},
}

# Three modes of the mnist space: different kernels, expands and depths, same block names.
MODES = (
    {"depths": [2, 2, 2], "kernels": [[3, 3], [3, 5], [5, 3]], "expands": [[3, 3], [4, 3], [3, 4]]},
    {"depths": [4, 3, 2], "kernels": [[7, 5, 3, 7], [7, 7, 3], [7, 5]], "expands": [[6, 4, 6, 3], [6, 6, 4], [6, 6]]},
    {
        "depths": [3, 4, 3],
        "kernels": [[5, 5, 5], [3, 7, 5, 3], [3, 3, 7]],
        "expands": [[4, 4, 4], [3, 6, 3, 4], [4, 3, 6]],
    },
)


def mode_nets() -> list[NetSpec]:
    space = load_space("mnist")
    return [space.to_netspec(Arch.create(space.name, resolution=28, width=1.0, **m)) for m in MODES]


# ---- helpers ----------------------------------------------------------------------------------
def random_input(net: NetSpec, batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *net.input_shape)).astype(np.float32)


def assert_close(got: np.ndarray, ref: np.ndarray) -> None:
    """Equal to 1e-4 relative to the output's scale (element-wise rtol fails near zero)."""
    assert got.shape == ref.shape
    assert np.isfinite(ref).all() and np.abs(ref).max() > 0
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


def run(model: onnx.ModelProto | Path, x: np.ndarray, so: ort.SessionOptions | None = None, **kw: object) -> np.ndarray:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"], **kw)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def inferred_shapes(model: onnx.ModelProto) -> dict[str, tuple[int | str, ...]]:
    inferred = shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    out = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims)
    return out


def random_full(shapes: Mapping[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        std = np.sqrt(2.0 / np.prod(shape[1:])) if len(shape) > 1 else 0.05
        out[name] = (rng.standard_normal(shape) * std).astype(np.float32)
    return out


def sliced(net: NetSpec, full: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: slice_shared(full[name], shape, name) for name, shape in weight_shapes(net).items()}


# ---- embedded weights -------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(NETS))
def test_graph_is_valid_and_matches_reference(name: str) -> None:
    net = NETS[name]()
    weights = init_weights(net, seed=1)
    model = build_model(net, weights)
    onnx.checker.check_model(model, full_check=True)
    x = random_input(net)
    assert_close(run(model, x), reference_forward(net, weights, x))


@pytest.mark.parametrize("name", list(NETS))
def test_inferred_layer_shapes_match_netspec(name: str) -> None:
    net = NETS[name]()
    shapes = inferred_shapes(build_model(net, dynamic_batch=False))
    for i, tensor in enumerate(layer_output_names(net)):
        got, want = shapes[tensor], net.shapes[i]
        if len(got) == 2:  # a Linear's (N, F) is NetSpec's (F, 1, 1) vector
            assert want[1:] == (1, 1) and got == (1, want[0]), (i, tensor, got, want)
        else:
            assert got == (1, *want), (i, tensor, got, want)
    c, h, w = net.output_shape
    assert shapes["logits"] == ((1, c) if (h, w) == (1, 1) else (1, c, h, w))


def test_linear_outputs_stay_two_dimensional() -> None:
    net = all_ops_net()
    shapes = inferred_shapes(build_model(net, dynamic_batch=False))
    names = layer_output_names(net)
    for i, layer in enumerate(net.layers):
        if isinstance(layer, Linear):
            assert len(shapes[names[i]]) == 2
    # the mixed add is lifted to 4-D; the pure 2-D add is not
    assert len(shapes["add_mixed"]) == 4 and len(shapes["add2d"]) == 2


def test_dynamic_and_fixed_batch() -> None:
    net = mnist_nets(1)[0]
    weights = init_weights(net)
    dynamic = build_model(net, weights)
    dims = dynamic.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == list(net.input_shape)
    for batch in (1, 3):
        x = random_input(net, batch)
        assert_close(run(dynamic, x), reference_forward(net, weights, x))
    fixed = build_model(net, weights, dynamic_batch=False, input_name="image", output_name="scores")
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    assert fixed.graph.input[0].name == "image" and fixed.graph.output[0].name == "scores"
    x = random_input(net, 1)
    assert_close(run(fixed, x), reference_forward(net, weights, x))


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_opsets(opset: int) -> None:
    net = all_ops_net()
    weights = init_weights(net, seed=2)
    model = build_model(net, weights, opset=opset)
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert ("HardSwish" in ops) == (opset >= 14)  # decomposed to HardSigmoid * x below 14
    x = random_input(net)
    assert_close(run(model, x), reference_forward(net, weights, x))


def test_operators_and_node_names() -> None:
    net = all_ops_net()
    model = build_model(net)
    nodes = {n.name: n for n in model.graph.node}
    assert len(nodes) == len(model.graph.node) and all(nodes)  # unique, non-empty
    assert nodes["dw/Conv"].op_type == "Conv"
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes["dw/Conv"].attribute}
    assert attrs == {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "group": 8}
    clip = nodes["dw/relu6"]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert clip.op_type == "Clip" and inits[clip.input[1]] == 0.0 and inits[clip.input[2]] == 6.0
    hsig = {a.name: a.f for a in nodes["grouped/hsigmoid"].attribute}
    assert hsig == pytest.approx({"alpha": 1 / 6, "beta": 0.5})
    assert nodes["classifier/Gemm"].op_type == "Gemm"
    assert {a.name: a.i for a in nodes["classifier/Gemm"].attribute} == {"transB": 1}
    assert nodes["act5/sigmoid"].op_type == "Sigmoid"
    assert [nodes[f"add3/Add_{k}"].op_type for k in (1, 2)] == ["Add", "Add"]
    assert nodes["se/scale"].op_type == "Mul"
    assert nodes["maxpool/Pool"].op_type == "MaxPool" and nodes["gavg/Pool"].op_type == "GlobalAveragePool"
    assert nodes["gmax/Pool"].op_type == "GlobalMaxPool" and nodes["avgpool/Pool"].op_type == "AveragePool"
    # no bias input when the conv has neither bias nor BN
    assert len(nodes["grouped/Conv"].input) == 2 and len(nodes["stem/Conv"].input) == 3


def test_model_metadata_recovers_the_netspec() -> None:
    net = all_ops_net()
    model = build_model(net)
    props = {p.key: p.value for p in model.metadata_props}
    assert NetSpec.from_json(json.loads(props["fleetnas.netspec"])) == net
    assert model.producer_name == "fleetnas" and model.graph.name == "all_ops"


# ---- weights ----------------------------------------------------------------------------------
def test_weight_shapes_by_hand() -> None:
    net = all_ops_net()
    shapes = weight_shapes(net)
    assert shapes["stem.weight"] == (8, 3, 3, 3) and shapes["stem.bias"] == (8,)  # BN folded
    assert shapes["dw.weight"] == (8, 1, 3, 3)
    assert shapes["grouped.weight"] == (12, 2, 3, 3) and "grouped.bias" not in shapes
    assert shapes["proj.bias"] == (8,)
    assert shapes["se.fc1.weight"] == (4, 8, 1, 1) and shapes["se.fc1.bias"] == (4,)
    assert shapes["se.fc2.weight"] == (8, 4, 1, 1) and shapes["se.fc2.bias"] == (8,)
    assert shapes["fc_spatial.weight"] == (10, 12 * 3 * 3) and shapes["fc_spatial.bias"] == (10,)
    assert shapes["fc_nobias.weight"] == (10, 12 * 2 * 2) and "fc_nobias.bias" not in shapes
    # parameter count agrees with the cost model's stored weights (BN folded)
    stored = sum(c.weight_elems for c in net.layer_costs())
    assert sum(int(np.prod(s)) for s in shapes.values()) == stored


def test_init_weights_is_deterministic_and_he_scaled() -> None:
    net = mobilenetv3_small(resolution=64)
    a, b, c = init_weights(net, 0), init_weights(net, 0), init_weights(net, 1)
    assert a.keys() == weight_shapes(net).keys()
    assert all(a[k].dtype == np.float32 and a[k].shape == weight_shapes(net)[k] for k in a)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["stem.weight"], c["stem.weight"])
    big = a["head.classifier.weight"]  # 1000 × 1024
    assert big.std() == pytest.approx(np.sqrt(2 / 1024), rel=0.02)
    with pytest.raises(ValueError, match="seed"):
        init_weights(net, -1)


def test_layer_keys_and_name_clashes() -> None:
    net = all_ops_net()
    assert layer_key(net, 0) == "stem" and layer_key(net, 5) == "act5"
    clash = NetSpec((1, 4, 4), (Conv(name="a", out_channels=2), Conv(name="a", out_channels=2)))
    with pytest.raises(ValueError, match="'a'"):
        weight_shapes(clash)
    with pytest.raises(ValueError, match="output_name"):
        build_model(net, output_name="stem")


def test_bad_weights_are_named() -> None:
    net = pool_out_net()
    good = init_weights(net)
    with pytest.raises(ValueError, match=r"conv0\.bias"):
        build_model(net, {k: v for k, v in good.items() if k != "conv0.bias"})
    with pytest.raises(ValueError, match=r"conv0.weight.*\(6, 1, 3, 3\)"):
        build_model(net, {**good, "conv0.weight": np.zeros((6, 1, 5, 5), np.float32)})
    with pytest.raises(ValueError, match="nope"):
        reference_forward(net, {**good, "nope": np.zeros(1)}, random_input(net))
    with pytest.raises(ValueError, match="opset"):
        build_model(net, opset=9)


def test_reference_conv_and_activations_by_hand() -> None:
    """The oracle itself, against loops: padded strided grouped conv, bias and hswish."""
    net = NetSpec((4, 5, 5), (Conv(name="c", out_channels=6, kernel=3, stride=2, groups=2, act="hswish"),))
    w = init_weights(net, seed=3)
    x = random_input(net, 1)
    xp = np.pad(x[0].astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    want = np.zeros((6, 3, 3))
    for o in range(6):
        g = o // 3
        for i in range(3):
            for j in range(3):
                patch = xp[2 * g : 2 * g + 2, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
                want[o, i, j] = (patch * w["c.weight"][o]).sum() + w["c.bias"][o]
    want = want * np.clip(want + 3, 0, 6) / 6
    np.testing.assert_allclose(reference_forward(net, w, x)[0], want, rtol=1e-5, atol=1e-6)


def _one_pool(layer: Pool, shape: tuple[int, int, int] = (3, 6, 5)) -> NetSpec:
    return NetSpec(shape, (layer,), name="one_pool")


@pytest.mark.parametrize(
    "layer",
    [
        Pool(name="p", kind="avg", kernel=3, stride=1, padding=1, count_include_pad=False),
        Pool(name="p", kind="avg", kernel=3, stride=1, padding=1, count_include_pad=True),
        Pool(name="p", kind="avg", kernel=3, stride=2, padding=2, count_include_pad=False),
        Pool(name="p", kind="avg", kernel=2, stride=2, padding=1, count_include_pad=True),
        Pool(name="p", kind="max", kernel=3, stride=1, padding=1),
        Pool(name="p", kind="max", kernel=3, stride=2, padding=2),
        Pool(name="p", kind="avg", kernel=2, stride=1),
    ],
    ids=lambda layer: f"{layer.kind}-k{layer.kernel}s{layer.stride}p{layer.padding}-incl{int(layer.count_include_pad)}",
)
def test_padded_pool_matches_onnxruntime(layer: Pool) -> None:
    net = _one_pool(layer)
    model = build_model(net)
    onnx.checker.check_model(model, full_check=True)
    node = model.graph.node[0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    p, k, s = layer.padding, layer.kernel, layer.stride
    want = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p, p, p, p]}
    if layer.kind == "avg":
        want["count_include_pad"] = int(layer.count_include_pad)
    assert node.op_type == ("AveragePool" if layer.kind == "avg" else "MaxPool") and attrs == want
    # all-negative inputs: a max pool that let the padding in would output 0 at the borders
    x = -np.abs(random_input(net, 3, seed=4)) - 0.5
    got = run(model, x)
    ref = reference_forward(net, {}, x)
    assert got.shape == ref.shape == (3, *net.output_shape)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    if layer.kind == "max":
        assert ref.max() < -0.5


def test_reference_padded_pool_by_hand() -> None:
    """The oracle itself: a 3×3/1 pool padded by 1 over a 4×4 map of ones, and a max over −∞ padding."""
    ones = np.ones((1, 1, 4, 4), dtype=np.float32)
    excl = Pool(kind="avg", kernel=3, stride=1, padding=1, count_include_pad=False)
    incl = Pool(kind="avg", kernel=3, stride=1, padding=1, count_include_pad=True)
    np.testing.assert_allclose(reference_forward(_one_pool(excl, (1, 4, 4)), {}, ones)[0, 0], np.ones((4, 4)))
    # corners see 4 of 9 cells, edges 6, the inside 9
    edge = np.array([4, 6, 6, 4]) / 9
    want = np.vstack([edge, edge * 1.5, edge * 1.5, edge])
    np.testing.assert_allclose(reference_forward(_one_pool(incl, (1, 4, 4)), {}, ones)[0, 0], want, rtol=1e-6)
    # avg without the padding counted = mean of the in-bounds cells, checked by loops
    x = random_input(_one_pool(excl, (2, 5, 4)), 1, seed=7)
    got = reference_forward(_one_pool(excl, (2, 5, 4)), {}, x)[0]
    for c in range(2):
        for i in range(5):
            for j in range(4):
                cells = x[0, c, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2]
                assert got[c, i, j] == pytest.approx(cells.mean(), rel=1e-5)
    maxp = Pool(kind="max", kernel=2, stride=2, padding=1)
    y = reference_forward(_one_pool(maxp, (1, 3, 3)), {}, -np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3))
    np.testing.assert_array_equal(y[0, 0], [[-1, -2], [-4, -5]])


# ---- shared layout ----------------------------------------------------------------------------
def test_shared_union_takes_elementwise_max() -> None:
    union = shared_union(
        [
            {"a.weight": (8, 4, 3, 3), "a.bias": (8,)},
            {"a.weight": (16, 2, 7, 7), "b.weight": (5, 6)},
            {"a.weight": (4, 8, 5, 5)},
        ]
    )
    assert union == {"a.weight": (16, 8, 7, 7), "a.bias": (8,), "b.weight": (5, 6)}


@pytest.mark.parametrize(
    "sets",
    [
        [{"x.weight": (8, 4, 3, 3)}, {"x.weight": (8, 4, 4, 4)}],  # odd kernel difference
        [{"x.weight": (8, 4, 3, 3)}, {"x.weight": (8, 36)}],  # rank
    ],
)
def test_shared_union_rejects_incompatible_shapes(sets: list[dict[str, tuple[int, ...]]]) -> None:
    with pytest.raises(ValueError, match=r"'x\.weight'"):
        shared_union(sets)


def test_slice_shared_takes_leading_channels_and_centre_crop() -> None:
    full = np.arange(6 * 4 * 7 * 7, dtype=np.float32).reshape(6, 4, 7, 7)
    part = slice_shared(full, (3, 2, 3, 3))
    np.testing.assert_array_equal(part, full[:3, :2, 2:5, 2:5])
    assert np.shares_memory(part, full)
    assert slice_shared(full, full.shape) is not None and slice_shared(full, full.shape).shape == full.shape
    with pytest.raises(ValueError, match="'w'"):
        slice_shared(full, (7, 4, 7, 7), name="w")
    with pytest.raises(ValueError, match="centre crop"):
        slice_shared(full, (6, 4, 4, 4))


def test_write_and_read_shared(tmp_path: Path) -> None:
    arrays = random_full({"a": (3, 5), "b": (7,), "c": (2, 3, 3, 3)}, seed=4)
    arrays["i"] = np.arange(5)  # integers are stored as float32 too
    layout = write_shared(tmp_path / "shared.bin", arrays)
    assert layout.location == "shared.bin"
    assert [e.offset % 64 for e in layout.entries.values()] == [0, 0, 0, 0]
    assert (tmp_path / "shared.bin").stat().st_size == layout.nbytes
    assert [p.name for p in tmp_path.iterdir()] == ["shared.bin"]  # no temp file left behind
    raw = np.fromfile(tmp_path / "shared.bin", dtype="<f4")
    np.testing.assert_array_equal(raw[layout.entries["b"].offset // 4 :][:7], arrays["b"])
    for mmap in (True, False):
        back = read_shared(tmp_path / "shared.bin", layout, mmap=mmap)
        assert back.keys() == arrays.keys()
        for name, arr in back.items():
            np.testing.assert_array_equal(arr, arrays[name].astype(np.float32))
            assert arr.dtype == np.float32 and arr.flags.c_contiguous and not arr.flags.writeable
    assert SharedWeights.from_json(json.loads(json.dumps(layout.to_json()))) == layout
    with pytest.raises(ValueError, match="bytes"):
        read_shared(tmp_path / "shared.bin", SharedWeights("shared.bin", {"z": SharedEntry(1 << 20, (4,))}))
    with pytest.raises(ValueError, match="location"):
        SharedWeights("../shared.bin", {})


def test_shared_layout_errors_name_the_tensor(tmp_path: Path) -> None:
    net = mode_nets()[1]
    union = shared_union([weight_shapes(net)])
    small = {**union, "stage0.block0.dw.weight": (8, 1, 3, 3)}
    layout = write_shared(tmp_path / "shared.bin", random_full(small))
    with pytest.raises(ValueError, match=r"stage0\.block0\.dw\.weight"):
        build_model(net, shared=layout)
    missing = write_shared(tmp_path / "other.bin", random_full({k: v for k, v in union.items() if k != "stem.bias"}))
    with pytest.raises(ValueError, match=r"stem\.bias"):
        build_model(net, shared=missing)
    with pytest.raises(ValueError, match="not both"):
        build_model(net, init_weights(net), shared=layout)


@pytest.fixture(scope="module")
def shared_modes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SharedWeights, list[NetSpec], dict]:
    """Three mnist modes over one shared file, each model saved beside it."""
    folder = tmp_path_factory.mktemp("bundle")
    nets = mode_nets()
    full = random_full(shared_union([weight_shapes(n) for n in nets]), seed=5)
    layout = write_shared(folder / "shared.bin", full)
    for i, net in enumerate(nets):
        save_model(build_model(net, shared=layout), folder / f"mode{i}.onnx")
    return folder, layout, nets, full


@pytest.mark.parametrize("mode", range(len(MODES)))
def test_shared_modes_match_reference(shared_modes: tuple, mode: int) -> None:
    folder, layout, nets, full = shared_modes
    net, path = nets[mode], folder / f"mode{mode}.onnx"
    onnx.checker.check_model(str(path), full_check=True)  # by path: resolves the external file
    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name: t for t in model.graph.initializer}
    shapes = weight_shapes(net)
    for name in shapes:
        t = inits[shared_name(name)]
        assert t.data_location == TensorProto.EXTERNAL and tuple(t.dims) == layout.entries[name].shape
        assert name not in inits  # the mode's own weights are not embedded
    n_slices = sum(shape != layout.entries[name].shape for name, shape in shapes.items())
    assert sum(n.op_type == "Slice" for n in model.graph.node) == n_slices > 0

    x = random_input(net, 2, seed=mode)
    ref = reference_forward(net, sliced(net, full), x)
    # (a) ORT reads the external data itself; ConstantFolding may fold the Slices.
    assert_close(run(path, x), ref)
    # (b) one mapped copy of the file overrides the initializers; the Slices must stay in the graph.
    arrays = read_shared(folder / layout.location, layout)
    so = ort.SessionOptions()
    values = {}  # keep the OrtValues (and the arrays behind them) alive for the session's lifetime
    for name in shapes:
        values[name] = ort.OrtValue.ortvalue_from_numpy(arrays[name])
        so.add_initializer(shared_name(name), values[name])
    assert_close(run(path, x, so, disabled_optimizers=["ConstantFolding"]), ref)


def test_add_initializer_shares_the_buffer(shared_modes: tuple) -> None:
    """Without ConstantFolding a Slice reads the caller's array at every run: no private copy."""
    folder, layout, nets, full = shared_modes
    net, path = nets[0], folder / "mode0.onnx"
    arrays = {name: full[name].copy() for name in weight_shapes(net)}
    so = ort.SessionOptions()
    values = [ort.OrtValue.ortvalue_from_numpy(arrays[name]) for name in arrays]
    for name, value in zip(arrays, values, strict=True):
        so.add_initializer(shared_name(name), value)
    session = ort.InferenceSession(str(path), so, disabled_optimizers=["ConstantFolding"])
    x = random_input(net)
    before = session.run(None, {"input": x})[0]
    target = "stage0.block0.dw.weight"  # sliced in this mode (kernel 3 of 7, fewer channels)
    assert weight_shapes(net)[target] != layout.entries[target].shape
    arrays[target] *= -1.0  # in place: the OrtValue views this buffer
    after = session.run(None, {"input": x})[0]
    assert not np.allclose(before, after)
    assert_close(after, reference_forward(net, sliced(net, arrays), x))


def test_save_model_is_atomic_and_embeds(tmp_path: Path) -> None:
    net = mobilenetv3_small(resolution=64)
    model = build_model(net)
    path = save_model(model, tmp_path / "m.onnx")
    save_model(model, path)  # overwriting works
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no external data, no temp file
    again = onnx.load(str(path))
    assert again == model
    assert all(t.data_location != TensorProto.EXTERNAL for t in again.graph.initializer)
