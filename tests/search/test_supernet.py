"""The Once-for-All supernet: elastic layers, extraction ≡ active path ≡ NetSpec, BN recalibration, ONNX.

The supernets under test have their BatchNorm statistics, affine parameters, kernel transforms and
classifier weights scrambled (``_scramble``): at initialisation BN is the identity, transforms are
identities and logits are ~0, which would let slicing or ordering mistakes pass unnoticed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from runtime.netspec import Conv, Linear, SqueezeExcite
from runtime.onnx_builder import build_model, layer_key, reference_forward, weight_shapes
from search.arch import Arch
from search.space import MobileNetV3Config, MobileNetV3Space, SpaceError, load_space
from search.supernet import (
    ElasticBatchNorm2d,
    ElasticDepthwiseConv,
    ElasticInvertedResidual,
    ElasticLinear,
    MobileNetV3Supernet,
    NetSpecModule,
    export_onnx,
    folded_weights,
    recalibrate_bn,
    resize_input,
)
from search.supernet.elastic import ElasticConv2d

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Two cores here: one thread keeps the many tiny convs fast and the results reproducible.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _scramble(net: nn.Module, seed: int) -> nn.Module:
    """Give every BN, transform, bias and linear layer non-trivial values; returns ``net``."""
    g = torch.Generator().manual_seed(seed)

    def rand(t: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        return torch.rand(t.shape, generator=g) * (hi - lo) + lo

    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                bn: Any = m  # its buffers are typed Optional
                bn.weight.copy_(rand(bn.weight, 0.5, 1.5))
                bn.bias.copy_(rand(bn.bias, -0.2, 0.2))
                bn.running_mean.copy_(rand(bn.running_mean, -0.2, 0.2))
                bn.running_var.copy_(rand(bn.running_var, 0.5, 2.0))
            elif isinstance(m, ElasticDepthwiseConv):
                for t in m.transforms.values():
                    t.add_(0.05 * torch.randn(t.shape, generator=g))
            elif isinstance(m, ElasticLinear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features**0.5)
            if isinstance(m, ElasticConv2d | ElasticLinear) and m.bias is not None:
                m.bias.copy_(rand(m.bias, -0.1, 0.1))
    return net


def _supernet(space: MobileNetV3Space, alignment: int = 8, seed: int = 0) -> MobileNetV3Supernet:
    """A scrambled supernet whose BN statistics keep activations O(1) (so outputs depend on inputs)."""
    torch.manual_seed(seed)
    net = MobileNetV3Supernet(space, alignment)
    _scramble(net, seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    c = space.config
    res = max(c.resolutions)
    recalibrate_bn(net, [torch.randn((16, c.in_channels, res, res), generator=g)])
    with torch.no_grad():  # then move every channel's statistics a little, differently
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                bn: Any = m
                bn.running_mean.add_(0.1 * bn.running_var.sqrt() * torch.randn(bn.num_features, generator=g))
                bn.running_var.mul_(torch.rand(bn.num_features, generator=g) * 0.7 + 0.7)
    return net.eval()


def _netspec_params(space: MobileNetV3Space, arch: Arch, alignment: int) -> int:
    return sum(c.params for c in space.to_netspec(arch, alignment).layer_costs())


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def mnist() -> MobileNetV3Space:
    return load_space("mnist")  # type: ignore[return-value]


@pytest.fixture(scope="module")
def elastic_width() -> MobileNetV3Space:
    """Elastic width, an expand ratio of 1 (the expand conv is skipped), kernels {3, 5}, no first block."""
    config = dataclasses.replace(
        MobileNetV3Config.preset("mnist"),
        widths=(0.5, 1.0, 1.25),
        expands=(1, 3, 6),
        kernels=(3, 5),
        first_block_channels=0,
    )
    return MobileNetV3Space(config)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.randn((4, 1, 28, 28), generator=g) * 0.8 + 0.3


# ---- the package ------------------------------------------------------------------------------
def test_import_is_lazy_and_torch_free() -> None:
    code = (
        "import sys, search.supernet as s\n"
        "print('torch' in sys.modules, 'MobileNetV3Supernet' in dir(s))\n"
        "s.MobileNetV3Supernet\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "True"]


# ---- elastic layers -----------------------------------------------------------------------------
def test_kernel_transforms_start_as_centre_crops_and_chain_7_5_3() -> None:
    torch.manual_seed(0)
    dw = ElasticDepthwiseConv(6, (3, 5, 7))
    w = dw.weight.detach()
    assert set(dw.transforms) == {"7to5", "5to3"}
    assert dw.transforms["7to5"].shape == (25, 25) and dw.transforms["5to3"].shape == (9, 9)
    torch.testing.assert_close(dw.kernel_weight(7), w, rtol=0, atol=0)
    torch.testing.assert_close(dw.kernel_weight(5), w[:, :, 1:6, 1:6], rtol=0, atol=0)
    torch.testing.assert_close(dw.kernel_weight(3), w[:, :, 2:5, 2:5], rtol=0, atol=0)
    torch.testing.assert_close(dw.kernel_weight(3, channels=4), w[:4, :, 2:5, 2:5], rtol=0, atol=0)

    with torch.no_grad():
        dw.transforms["7to5"].add_(0.1 * torch.randn(25, 25))
        dw.transforms["5to3"].add_(0.1 * torch.randn(9, 9))
    m75, m53 = dw.transforms["7to5"].detach(), dw.transforms["5to3"].detach()
    w5 = (w[:, :, 1:6, 1:6].reshape(6, 25) @ m75.T).reshape(6, 1, 5, 5)
    w3 = (w5[:, :, 1:4, 1:4].reshape(6, 9) @ m53.T).reshape(6, 1, 3, 3)
    torch.testing.assert_close(dw.kernel_weight(5).detach(), w5)
    torch.testing.assert_close(dw.kernel_weight(3).detach(), w3)  # 3×3 comes from the *transformed* 5×5
    with pytest.raises(ValueError, match="kernel"):
        dw.kernel_weight(9)


def test_elastic_batchnorm_runs_and_updates_only_the_leading_channels() -> None:
    bn: Any = ElasticBatchNorm2d(8)
    _scramble(bn, 3)
    x = torch.randn(4, 5, 3, 3)
    bn.eval()
    want = F.batch_norm(x, bn.running_mean[:5], bn.running_var[:5], bn.weight[:5], bn.bias[:5], False, 0.0, bn.eps)
    torch.testing.assert_close(bn(x), want, rtol=0, atol=0)

    before_mean, before_var = bn.running_mean.clone(), bn.running_var.clone()
    bn.train()
    bn.momentum = None  # cumulative average: after one batch the stats *are* the batch's
    bn.reset_running_stats()
    bn.running_mean[5:] = before_mean[5:]
    bn.running_var[5:] = before_var[5:]
    bn(x)
    torch.testing.assert_close(bn.running_mean[:5], x.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(bn.running_var[:5], x.var(dim=(0, 2, 3), unbiased=True))
    torch.testing.assert_close(bn.running_mean[5:], before_mean[5:], rtol=0, atol=0)
    torch.testing.assert_close(bn.running_var[5:], before_var[5:], rtol=0, atol=0)


# ---- supernet: choosing subnets -----------------------------------------------------------------
def test_constructor_and_set_active_reject_bad_input(mnist: MobileNetV3Space) -> None:
    with pytest.raises(TypeError, match="MobileNetV3Space"):
        MobileNetV3Supernet(load_space("nasbench201"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alignment"):
        MobileNetV3Supernet(mnist, alignment=0)
    net = MobileNetV3Supernet(mnist)
    arch = net.max_arch()
    with pytest.raises(SpaceError, match="kernels"):
        net.set_active(arch.replace(kernels=[[9] * 4] * 3))
    with pytest.raises(SpaceError, match="space"):
        net.set_active(Arch.create("other", **arch.as_dict()))
    with pytest.raises(SpaceError, match="Arch"):
        net.set_active(arch.to_json())  # type: ignore[arg-type]
    assert net.active_arch == arch  # a rejected arch changes nothing
    with pytest.raises(ValueError, match="x: need"):
        net(torch.zeros(1, 3, 28, 28))


def test_max_min_and_seeded_sampling(mnist: MobileNetV3Space) -> None:
    net = MobileNetV3Supernet(mnist)
    big, small = net.max_arch(), net.min_arch()
    assert net.active_arch == big
    assert big["depths"] == (4, 4, 4) and all(set(k) == {7} for k in big["kernels"])
    assert small["depths"] == (2, 2, 2) and all(set(e) == {3} for e in small["expands"])
    assert _netspec_params(mnist, big, 8) > _netspec_params(mnist, small, 8)
    # The supernet stores exactly the largest subnet's weights, plus the kernel transforms.
    transforms = sum(p.numel() for name, p in net.named_parameters() if ".transforms." in name)
    assert _n_params(net) - transforms == _netspec_params(mnist, big, 8)
    first = [net.sample_active(np.random.default_rng(5)) for _ in range(2)]
    assert first[0] == first[1] == net.active_arch
    assert len({net.sample_active(np.random.default_rng(s)) for s in range(10)}) == 10


# ---- extraction -----------------------------------------------------------------------------------
def _check_extraction(space: MobileNetV3Space, alignment: int, archs: list[Arch], x: torch.Tensor) -> list[float]:
    net = _supernet(space, alignment)
    g = torch.Generator().manual_seed(21)
    calibration = [torch.randn((16, *x.shape[1:]), generator=g) * 0.8 + 0.3]
    outputs = []
    for arch in archs:
        spec = space.to_netspec(arch, alignment)
        sub = net.extract(arch)
        assert isinstance(sub, NetSpecModule) and not sub.training
        # One submodule per NetSpec layer, by name, with the NetSpec's channel counts.
        for i, layer in enumerate(spec.layers):
            module: Any = sub.get_submodule(layer_key(spec, i))
            if isinstance(layer, Conv):
                assert module.conv.out_channels == layer.out_channels and module.conv.groups == layer.groups
                assert module.conv.in_channels == spec.input_shapes_of(i)[0][0]
                assert module.conv.kernel_size == (layer.kernel, layer.kernel)
            elif isinstance(layer, SqueezeExcite):
                assert module.fc1.out_channels == layer.reduced
            elif isinstance(layer, Linear):
                assert module.linear.out_features == layer.out_channels
        assert _n_params(sub) == _netspec_params(space, arch, alignment)
        assert not any(isinstance(m, ElasticBatchNorm2d | ElasticConv2d) for m in sub.modules())
        # Statistics of this subnet keep its logits input-dependent (a random deep net's are not).
        net.set_active(arch)
        recalibrate_bn(net, calibration)
        sub = net.extract(arch)
        with torch.no_grad():
            want = net(x)
            got = sub(x)
        assert got.shape == (x.shape[0], space.config.num_classes)
        assert float(want.std(dim=0).mean()) > 0.01  # outputs depend on the input, well above 1e-5
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        outputs.append(float(want[0, 0]))
    with torch.no_grad():  # the subnet holds copies: changing the supernet leaves it alone
        before = sub(x)
        cast(Any, net.stem.conv).weight.mul_(2.0)
        torch.testing.assert_close(sub(x), before, rtol=0, atol=0)
    return outputs


def test_extracted_subnets_equal_the_active_path(mnist: MobileNetV3Space, images: torch.Tensor) -> None:
    archs = [mnist.decode(c) for c in mnist.sample(22, np.random.default_rng(11))]
    net = MobileNetV3Supernet(mnist)
    archs += [net.max_arch(), net.min_arch()]
    outputs = _check_extraction(mnist, 8, archs, images)
    assert len(set(outputs)) == len(outputs)  # 24 different networks


def test_extraction_with_elastic_width_and_skipped_expand(
    elastic_width: MobileNetV3Space, images: torch.Tensor
) -> None:
    space = elastic_width
    archs = [space.decode(c) for c in space.sample(10, np.random.default_rng(12))]
    archs.append(Arch.create(space.name, **{**archs[0].as_dict(), "expands": [[1] * d for d in archs[0]["depths"]]}))
    assert {a["width"] for a in archs} == {0.5, 1.0, 1.25}
    # An expand ratio of 1 compiles to a block without an expand conv; the supernet skips it too.
    assert not any(layer.name.endswith(".expand") for layer in space.to_netspec(archs[-1], 4).layers)
    _check_extraction(space, 4, archs, images)


def test_params_equal_netspec_for_many_archs(mnist: MobileNetV3Space, elastic_width: MobileNetV3Space) -> None:
    for space, alignment in ((mnist, 8), (mnist, 16), (elastic_width, 4)):
        net = MobileNetV3Supernet(space, alignment)
        for code in space.sample(40, np.random.default_rng(13)):
            arch = space.decode(code)
            assert _n_params(net.extract(arch)) == _netspec_params(space, arch, alignment), (alignment, arch)


def test_params_equal_netspec_on_the_imagenet_space() -> None:
    # Once-for-All's space at 128 px; the parameter count does not depend on the resolution.
    space = MobileNetV3Space(MobileNetV3Config(resolutions=(128,)))
    net = MobileNetV3Supernet(space)
    arch = space.decode(space.sample(1, np.random.default_rng(14))[0])
    for a in (net.max_arch(), arch):
        sub = net.extract(a)
        assert _n_params(sub) == _netspec_params(space, a, 8)
    with torch.no_grad():
        assert sub(torch.zeros(1, 3, 128, 128)).shape == (1, 1000)


def test_gradients_reach_only_the_weights_the_active_subnet_uses(mnist: MobileNetV3Space) -> None:
    net = _supernet(mnist).train()
    arch = net.min_arch()  # depth 2, kernel 3, expand 3 everywhere
    net.set_active(arch)
    net(torch.randn(2, 1, 28, 28)).square().mean().backward()
    block = net.stage(0)["block0"]
    assert isinstance(block, ElasticInvertedResidual) and block.expand is not None
    dw: Any = block.dw.conv
    grad = dw.weight.grad
    assert grad is not None
    mid = mnist.block_mid(16, 3, 8)[0]
    outer = grad.clone()
    outer[:, :, 1:6, 1:6] = 0  # the 3×3 kernel is made from the (transformed) centre 5×5
    assert outer.abs().max() == 0 and grad[:mid].abs().sum() > 0 and grad[mid:].abs().max() == 0
    assert dw.transforms["7to5"].grad is not None
    expand_grad = block.expand.conv.weight.grad
    assert expand_grad is not None and expand_grad[mid:].abs().max() == 0
    assert all(p.grad is None for p in net.stage(0)["block3"].parameters())  # beyond the stage's depth


# ---- channel re-sorting -----------------------------------------------------------------------------
def test_reorder_by_importance_keeps_the_largest_network(mnist: MobileNetV3Space, images: torch.Tensor) -> None:
    net = _supernet(mnist, seed=4)
    small = net.min_arch()
    with torch.no_grad():
        before = net(images)
        net.set_active(small)
        small_before = net(images)
        net.set_active(net.max_arch())
    assert net.sort_channels() == mnist.num_stages * mnist.max_depth  # every block has an expand conv
    with torch.no_grad():
        torch.testing.assert_close(net(images), before, rtol=0, atol=1e-5)
        net.set_active(small)
        small_after = net(images)
    assert (small_after - small_before).abs().max() > 1e-3  # the small subnet now keeps other channels
    for s in range(mnist.num_stages):
        for block in net.stage(s).values():
            assert isinstance(block, ElasticInvertedResidual)
            importance = block.project.conv.weight.abs().sum(dim=(0, 2, 3))
            assert torch.all(importance[:-1] >= importance[1:])
            if block.se is not None:
                se_importance = block.se.fc2.weight.abs().sum(dim=(0, 2, 3))
                assert torch.all(se_importance[:-1] >= se_importance[1:])


# ---- BatchNorm recalibration --------------------------------------------------------------------------
def _bn_inputs(module: nn.Module, batches: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """Each BN's input per batch, in train mode (what recalibration averages over)."""
    probe = copy.deepcopy(module).train()
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = [
        m.register_forward_hook(lambda _m, ins, _out, name=name: seen.setdefault(name, []).append(ins[0]))
        for name, m in probe.named_modules()
        if isinstance(m, nn.BatchNorm2d)
    ]
    with torch.no_grad():
        for x in batches:
            probe(x)
    for h in hooks:
        h.remove()
    return seen


def test_recalibrate_bn_sets_the_batch_statistics(mnist: MobileNetV3Space) -> None:
    net = _supernet(mnist, seed=6)
    arch = mnist.decode(mnist.sample(1, np.random.default_rng(15))[0])
    sub = net.extract(arch)
    g = torch.Generator().manual_seed(7)
    batches = [torch.randn((16, 1, 28, 28), generator=g) * 0.7 + 0.4 for _ in range(2)]
    with torch.no_grad():
        before = sub(batches[0])
    labels = torch.zeros(16, dtype=torch.long)
    assert recalibrate_bn(sub, [(b, labels) for b in batches], num_images=32) == 32
    assert not sub.training  # mode and momenta restored
    assert all(m.momentum == 0.1 for m in sub.modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        after = sub(batches[0])
    assert (after - before).abs().max() > 1e-2

    # momentum=None: a cumulative average of the two (equal) batches' per-channel statistics.
    inputs = _bn_inputs(sub, batches)
    assert len(inputs) == sum(isinstance(m, nn.BatchNorm2d) for m in sub.modules())
    for name, xs in inputs.items():
        bn: Any = sub.get_submodule(name)
        mean = torch.stack([x.mean(dim=(0, 2, 3)) for x in xs]).mean(0)
        var = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x in xs]).mean(0)
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-4, atol=1e-5)
        assert int(bn.num_batches_tracked) == 2

    assert recalibrate_bn(sub, batches, num_images=20) == 20  # the second batch is cut to 4 images
    with pytest.raises(ValueError, match="no images"):
        recalibrate_bn(sub, [])


def test_recalibrating_the_supernet_path_equals_recalibrating_the_subnet(mnist: MobileNetV3Space) -> None:
    net = _supernet(mnist, seed=8)
    arch = mnist.decode(mnist.sample(1, np.random.default_rng(16))[0])
    g = torch.Generator().manual_seed(9)
    batches = [torch.randn((8, 1, 28, 28), generator=g) for _ in range(3)]
    sub = net.extract(arch)
    recalibrate_bn(sub, batches)
    net.set_active(arch)
    assert recalibrate_bn(net, batches) == 24
    again = net.extract(arch)
    for name, buf in sub.named_buffers():
        torch.testing.assert_close(again.get_buffer(name), buf, rtol=1e-5, atol=1e-6)


def test_resize_input() -> None:
    x = torch.randn(2, 1, 28, 28)
    assert resize_input(x, 28) is x
    y = resize_input(x, 20)
    assert y.shape == (2, 1, 20, 20)
    torch.testing.assert_close(resize_input(torch.ones(1, 3, 7, 7), 13), torch.ones(1, 3, 13, 13))
    with pytest.raises(ValueError, match="resolution"):
        resize_input(x, 0)


# ---- export ---------------------------------------------------------------------------------------------
def test_onnx_export_matches_torch_and_has_no_batchnorm(
    mnist: MobileNetV3Space, images: torch.Tensor, tmp_path: Path
) -> None:
    net = _supernet(mnist, seed=10)
    archs = [net.max_arch(), net.min_arch(), mnist.decode(mnist.sample(1, np.random.default_rng(17))[0])]
    for i, arch in enumerate(archs):
        sub = net.extract(arch)
        path = export_onnx(sub, (1, 28, 28), tmp_path / f"sub{i}.onnx")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"sub{j}.onnx" for j in range(i + 1))
        model = onnx.load(path)
        ops = {node.op_type for node in model.graph.node}
        assert "BatchNormalization" not in ops and "Identity" not in ops and "Conv" in ops
        props = {p.key: p.value for p in model.metadata_props}
        assert json.loads(props["fleetnas.netspec"]) == mnist.to_netspec(arch).to_json()
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [t.name for t in session.get_inputs()] == ["input"]
        assert [t.name for t in session.get_outputs()] == ["logits"]
        with torch.no_grad():
            want = sub(images).numpy()
        (got,) = session.run(None, {"input": images.numpy()})  # batch 4: the batch axis is dynamic
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    # A supernet exports its active subnet.
    net.set_active(archs[2])
    path = export_onnx(net, (1, 28, 28), tmp_path / "active.onnx")
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": images.numpy()})
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    for bad in ((28, 28), (1, 32, 32)):
        with pytest.raises(ValueError, match="input_shape"):
            export_onnx(sub, bad, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


def test_folded_weights_build_the_same_network_without_torch(mnist: MobileNetV3Space, images: torch.Tensor) -> None:
    net = _supernet(mnist, seed=12)
    arch = mnist.decode(mnist.sample(1, np.random.default_rng(18))[0])
    spec = mnist.to_netspec(arch)
    sub = net.extract(arch)
    weights = folded_weights(sub)
    assert {k: v.shape for k, v in weights.items()} == weight_shapes(spec)
    with torch.no_grad():
        want = sub(images[:2]).numpy()
    np.testing.assert_allclose(reference_forward(spec, weights, images[:2].numpy()), want, rtol=0, atol=1e-4)
    session = ort.InferenceSession(build_model(spec, weights).SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": images.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, sub(images).numpy(), rtol=0, atol=1e-4)
