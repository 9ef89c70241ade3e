"""MobileNetV3Space: encoding round trips, canonical forms, variation operators, size, compile."""

import numpy as np
import pytest

from search.arch import Arch
from search.space import MobileNetV3Config, MobileNetV3Space, SpaceError, load_space


@pytest.fixture
def space():
    return load_space("imagenet")


def test_encoding_round_trip_batch(space):
    rng = np.random.default_rng(0)
    codes = space.sample(500, rng)
    archs = space.decode_batch(codes)
    assert np.array_equal(space.encode_batch(archs), codes)
    assert all(space.decode(space.encode(a)) == a for a in archs[:50])
    assert codes.shape == (500, space.encoding_length) == (500, 2 + 5 + 2 * 5 * 4)


def test_canonical_encoding_ignores_inactive_blocks(space):
    rng = np.random.default_rng(1)
    code = space.sample(1, rng)[0]
    code[space.depth_offset] = 0  # depth 2 in stage 0: slots 2 and 3 are inactive
    noisy = code.copy()
    noisy[space.kernel_offset + 2] = 2
    noisy[space.expand_offset + 3] = 1
    assert space.decode(noisy) == space.decode(code)
    assert np.array_equal(space.canonicalise(noisy), space.canonicalise(code))


def test_arch_json_lists_only_active_blocks(space):
    arch = space.decode(space.sample(1, np.random.default_rng(2))[0])
    for s, depth in enumerate(arch["depths"]):
        assert len(arch["kernels"][s]) == depth == len(arch["expands"][s])


def test_sample_covers_every_option(space):
    codes = space.sample(2000, np.random.default_rng(3))
    for gene in range(space.depth_offset + space.num_stages):
        assert set(np.unique(codes[:, gene])) == set(range(space.cardinalities[gene]))


def test_mutate_changes_genes_at_rate_and_stays_valid(space):
    rng = np.random.default_rng(4)
    codes = space.sample(2000, rng)
    assert np.array_equal(space.mutate(codes, 0.0, rng), codes)
    mutated = space.mutate(codes, 0.3, rng)
    space.check_codes(mutated)
    head = slice(0, space.kernel_offset)  # genes that are always active
    changed = (mutated[:, head] != codes[:, head]).mean(axis=0)
    varying = space.cardinalities[head] > 1
    assert np.all(np.abs(changed[varying] - 0.3) < 0.05)
    assert np.all(changed[~varying] == 0)


def test_crossover_takes_genes_from_parents(space):
    rng = np.random.default_rng(5)
    a, b = space.sample(300, rng), space.sample(300, rng)
    child = space.crossover(a, b, rng)
    head = slice(0, space.kernel_offset)
    assert np.all((child[:, head] == a[:, head]) | (child[:, head] == b[:, head]))
    # every active block of the child comes from a parent that runs that block
    active = space.active_slots(child).reshape(len(child), -1)
    sd = space.num_stages * space.max_depth
    for off in (space.kernel_offset, space.expand_offset):
        cols = slice(off, off + sd)
        act_a = space.active_slots(a).reshape(len(a), -1)
        act_b = space.active_slots(b).reshape(len(b), -1)
        from_a = (child[:, cols] == a[:, cols]) & act_a
        from_b = (child[:, cols] == b[:, cols]) & act_b
        assert np.all(~active | from_a | from_b)


def test_size_matches_enumeration_on_a_small_space():
    cfg = MobileNetV3Config(
        name="tiny",
        resolutions=(32,),
        widths=(1.0, 0.5),
        depths=(1, 2),
        kernels=(3, 5),
        expands=(3, 6),
        stage_channels=(8, 16),
        stage_strides=(2, 2),
        stage_se=(False, True),
        stage_acts=("relu", "hswish"),
        num_classes=10,
    )
    space = MobileNetV3Space(cfg)
    # per stage: 4 + 4² = 20 networks; 2 stages, 2 widths
    assert space.size() == 2 * 20**2
    codes = np.concatenate(list(space.enumerate()))
    assert len(codes) == space.size()
    assert len(np.unique(codes, axis=0)) == space.size()
    assert np.array_equal(space.canonicalise(codes), codes)


def test_imagenet_space_size(space):
    # Once-for-All's figure for its MobileNetV3 space: ((3×3)² + (3×3)³ + (3×3)⁴)⁵ ≈ 2×10¹⁹,
    # times our 5 resolutions
    assert space.size() == 5 * (81 + 729 + 6561) ** 5
    with pytest.raises(SpaceError, match="enumeration limit"):
        next(space.enumerate())


def test_to_netspec_respects_alignment_and_strides(space):
    arch = Arch.create(
        "mobilenetv3", resolution=224, width=1.0, depths=[4] * 5, kernels=[[7] * 4] * 5, expands=[[6] * 4] * 5
    )
    for alignment in (4, 8, 16):
        net = space.to_netspec(arch, alignment=alignment)
        assert all(layer.out_channels % alignment == 0 for layer in net.layers if layer.op == "conv")
    net = space.to_netspec(arch)
    pool = next(i for i, layer in enumerate(net.layers) if layer.op == "pool")
    assert net.shapes[pool - 1] == (960, 7, 7)  # 224 / 32, head 6 × 160
    assert net.output_shape == (1000, 1, 1)


def test_mnist_preset_serves_28x28_inputs():
    space = load_space("mnist")
    net = space.to_netspec(space.decode(space.sample(1, np.random.default_rng(0))[0]))
    assert net.input_shape == (1, 28, 28)
    assert net.output_shape == (10, 1, 1)


def test_bad_arch_and_codes_are_named(space):
    arch = space.decode(space.sample(1, np.random.default_rng(0))[0])
    with pytest.raises(SpaceError, match=r"resolution.*allowed"):
        space.encode(arch.replace(resolution=100))
    with pytest.raises(SpaceError, match=r"kernels\[0\]"):
        space.encode(arch.replace(kernels=[[3]] * 5))
    with pytest.raises(SpaceError, match="gene 0"):
        space.check_codes(np.full(space.encoding_length, 99))


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(SpaceError, match="stage_strides"):
        MobileNetV3Config(
            stage_channels=(8, 16), stage_strides=(2,), stage_se=(False, True), stage_acts=("relu", "relu")
        )
    bad = tmp_path / "space.yaml"
    bad.write_text("preset: mnist\nkernal: [3]\n")
    with pytest.raises(SpaceError, match=r"space.yaml.*kernal.*allowed"):
        load_space(bad)
    good = tmp_path / "ok.yaml"
    good.write_text("preset: mnist\nkernels: [3, 5]\n")
    assert load_space(good).config.kernels == (3, 5)
    wrong_type = tmp_path / "types.yaml"
    wrong_type.write_text("depths: 3\n")
    with pytest.raises(SpaceError, match=r"types.yaml: field 'depths': need a list"):
        load_space(wrong_type)
    wrong_item = tmp_path / "items.yaml"
    wrong_item.write_text("kernels: [3, five]\n")
    with pytest.raises(SpaceError, match=r"field 'kernels': need a list of int"):
        load_space(wrong_item)
    widths = tmp_path / "widths.yaml"
    widths.write_text("widths: [1, 1.25]\n")
    assert load_space(widths).config.widths == (1.0, 1.25)
