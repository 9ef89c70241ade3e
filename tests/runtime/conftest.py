"""Shared fixtures: small bundles built from the mnist-sized MobileNetV3 space (fast to run)."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.bundle_build import ModeSpec, build_bundle
from search.arch import Arch
from search.space import MobileNetV3Config, MobileNetV3Space


def tiny_space() -> MobileNetV3Space:
    """A small space with two resolutions, so a low mode can run at a lower resolution."""
    base = MobileNetV3Config.preset("mnist")
    cfg = MobileNetV3Config(**{**base.__dict__, "name": "tiny", "resolutions": (20, 28)})
    return MobileNetV3Space(cfg)


def three_modes(space: MobileNetV3Space | None = None) -> list[ModeSpec]:
    """high / balanced / low subnets of one backbone (largest → smallest), names shared by layer."""
    sp = space or tiny_space()
    res = sp.config.resolutions
    archs = {
        "high": Arch.create(
            sp.name, resolution=res[-1], width=1.0, depths=[4, 4, 4], kernels=[[7] * 4] * 3, expands=[[6] * 4] * 3
        ),
        "balanced": Arch.create(
            sp.name, resolution=res[-1], width=1.0, depths=[3, 3, 3], kernels=[[5] * 3] * 3, expands=[[4] * 3] * 3
        ),
        "low": Arch.create(
            sp.name, resolution=res[0], width=1.0, depths=[2, 2, 2], kernels=[[3] * 2] * 3, expands=[[3] * 2] * 3
        ),
    }
    return [ModeSpec(name, sp.to_netspec(a, alignment=8), arch=a.to_json()) for name, a in archs.items()]


@pytest.fixture(scope="session")
def shared_bundle(tmp_path_factory):
    from runtime.hardware import load_device

    out = tmp_path_factory.mktemp("bundles") / "shared"
    return build_bundle(
        three_modes(), out, share_weights=True, devices=[load_device("rpi4")], target_device=load_device("rpi4"), seed=1
    )


@pytest.fixture(scope="session")
def probe_input():
    return np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
