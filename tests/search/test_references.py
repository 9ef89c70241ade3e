"""Reference networks against their papers' figures (and torchvision's exact parameter counts)."""

import pytest

from search.references import REFERENCES, mobilenetv3_large, reference

# name: (paper MACs, paper params, tolerance, exact trainable params of the reference
#        implementation (torchvision, BatchNorm affine included), our MAC count — stated exactly so
#        a change to the counting rules shows up). MobileNetV2's paper rounds 3.50M down to "3.4M",
#        hence its 4 % tolerance; the issue asks 3 % for MobileNetV3-Large.
FIGURES = {
    "mobilenetv3_large_100": (219e6, 5.4e6, 0.03, 5_483_032, 216_589_760),
    "mobilenetv3_small_100": (56e6, 2.5e6, 0.03, 2_542_856, 56_510_400),
    "mobilenetv2_100": (300e6, 3.4e6, 0.04, 3_504_872, 300_774_272),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_reference_matches_paper(name):
    paper_macs, paper_params, tolerance, exact_params, our_macs = FIGURES[name]
    costs = REFERENCES[name]().cost_arrays()
    macs, params = int(costs["macs"].sum()), int(costs["params"].sum())
    assert abs(macs - paper_macs) / paper_macs <= tolerance
    assert abs(params - paper_params) / paper_params <= tolerance
    assert params == exact_params
    assert macs == our_macs


def test_mobilenetv3_large_structure():
    net = mobilenetv3_large()
    assert net.input_shape == (3, 224, 224)
    assert net.output_shape == (1000, 1, 1)
    # 15 bnecks; residual adds where stride 1 and channels match (10 of them in the paper's table)
    assert sum(layer.op == "add" for layer in net.layers) == 10
    assert sum(layer.op == "se" for layer in net.layers) == 8
    # the last feature map before pooling is 7×7×960
    pool = next(i for i, layer in enumerate(net.layers) if layer.op == "pool")
    assert net.shapes[pool - 1] == (960, 7, 7)


def test_width_and_resolution_scale_costs():
    base = mobilenetv3_large().cost_arrays()["macs"].sum()
    small = mobilenetv3_large(resolution=160).cost_arrays()["macs"].sum()
    wide = mobilenetv3_large(width=1.25).cost_arrays()["macs"].sum()
    assert small < base < wide
    # MACs scale roughly with resolution² (the classifier does not): 160²/224² ≈ 0.51
    assert 0.45 < small / base < 0.60


def test_unknown_reference_lists_known_names():
    with pytest.raises(KeyError, match="mobilenetv2_100"):
        reference("resnet50")
