"""Reference networks as NetSpecs: MobileNetV2 1.0 and MobileNetV3-Large/Small 1.0.

Layer tables follow the papers (Sandler et al. 2018, table 2; Howard et al. 2019, tables 1–2)
with the channel rounding of their reference implementations (``make_divisible(·, 8)``,
squeeze-excite width ``make_divisible(expanded / 4, 8)``). Published figures at 224×224, 1000
classes: MobileNetV2 300M MACs / 3.4M params, MobileNetV3-Large 219M / 5.4M, MobileNetV3-Small
56M / 2.5M; ``tests/search/test_references.py`` checks ours against them.
"""

from __future__ import annotations

from collections.abc import Callable

from runtime.netspec import NetSpec, make_divisible
from search.builder import NetBuilder

# (kernel, expanded, out, squeeze-excite, activation, stride) per bneck, from the MobileNetV3 paper.
_V3_LARGE = (
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hswish", 2),
    (3, 200, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 184, 80, False, "hswish", 1),
    (3, 480, 112, True, "hswish", 1),
    (3, 672, 112, True, "hswish", 1),
    (5, 672, 160, True, "hswish", 2),
    (5, 960, 160, True, "hswish", 1),
    (5, 960, 160, True, "hswish", 1),
)
_V3_SMALL = (
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hswish", 2),
    (5, 240, 40, True, "hswish", 1),
    (5, 240, 40, True, "hswish", 1),
    (5, 120, 48, True, "hswish", 1),
    (5, 144, 48, True, "hswish", 1),
    (5, 288, 96, True, "hswish", 2),
    (5, 576, 96, True, "hswish", 1),
    (5, 576, 96, True, "hswish", 1),
)
# (expansion t, out c, repeats n, first stride s), MobileNetV2 paper table 2.
_V2 = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _mobilenetv3(
    table: tuple[tuple[int, int, int, bool, str, int], ...],
    last_conv: int,
    hidden: int,
    name: str,
    width: float,
    resolution: int,
    num_classes: int,
    alignment: int,
) -> NetSpec:
    b = NetBuilder((3, resolution, resolution), name=name)
    b.conv(make_divisible(16 * width, alignment), 3, 2, act="hswish", name="stem")
    for i, (k, exp, out, se, act, stride) in enumerate(table):
        mid = make_divisible(exp * width, alignment)
        reduced = make_divisible(mid // 4, alignment) if se else None
        b.inverted_residual(make_divisible(out * width, alignment), k, stride, mid, act, reduced, name=f"bneck{i}")
    b.classifier_head(
        num_classes,
        last_conv=make_divisible(last_conv * width, alignment),
        hidden=make_divisible(hidden * width, alignment) if width > 1.0 else hidden,
        act="hswish",
    )
    return b.build()


def mobilenetv3_large(
    width: float = 1.0, resolution: int = 224, num_classes: int = 1000, alignment: int = 8
) -> NetSpec:
    """MobileNetV3-Large as a NetSpec (219M MACs, 5.4M params at 1.0 / 224 per the paper)."""
    return _mobilenetv3(
        _V3_LARGE,
        960,
        1280,
        f"mobilenetv3_large_{round(width * 100):03d}",
        width,
        resolution,
        num_classes,
        alignment,
    )


def mobilenetv3_small(
    width: float = 1.0, resolution: int = 224, num_classes: int = 1000, alignment: int = 8
) -> NetSpec:
    """MobileNetV3-Small as a NetSpec (56M MACs, 2.5M params at 1.0 / 224 per the paper)."""
    return _mobilenetv3(
        _V3_SMALL,
        576,
        1024,
        f"mobilenetv3_small_{round(width * 100):03d}",
        width,
        resolution,
        num_classes,
        alignment,
    )


def mobilenetv2(width: float = 1.0, resolution: int = 224, num_classes: int = 1000, alignment: int = 8) -> NetSpec:
    """MobileNetV2 as a NetSpec (300M MACs, 3.4M params at 1.0 / 224 per the paper)."""
    b = NetBuilder((3, resolution, resolution), name=f"mobilenetv2_{round(width * 100):03d}")
    b.conv(make_divisible(32 * width, alignment), 3, 2, act="relu6", name="stem")
    block = 0
    for t, c, n, s in _V2:
        out = make_divisible(c * width, alignment)
        for i in range(n):
            b.inverted_residual(out, 3, s if i == 0 else 1, b.channels * t, "relu6", name=f"block{block}")
            block += 1
    last = make_divisible(1280 * max(1.0, width), alignment)
    b.classifier_head(num_classes, last_conv=last, hidden=None, act="relu6")
    return b.build()


REFERENCES: dict[str, Callable[[], NetSpec]] = {
    "mobilenetv2_100": mobilenetv2,
    "mobilenetv3_large_100": mobilenetv3_large,
    "mobilenetv3_small_100": mobilenetv3_small,
}


def reference(name: str) -> NetSpec:
    """The named reference network; raises KeyError listing the known names."""
    try:
        return REFERENCES[name]()
    except KeyError:
        raise KeyError(f"unknown reference {name!r}; known: {', '.join(sorted(REFERENCES))}") from None
