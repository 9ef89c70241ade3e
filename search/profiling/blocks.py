"""The block configurations of a MobileNetV3 space, each as a small NetSpec fragment with a readable key.

A network of a ``MobileNetV3Space`` is a sequence of fragments: the stem conv, the fixed
expand-1 block, one inverted-residual block per active slot, and the classifier head. This is
the decomposition ``search.cost.table.SpaceCostTable`` costs analytically — a block's shape
depends only on (resolution, width, stage, position, kernel, expand) — rebuilt here with the same
``NetBuilder`` calls so the fragments are the layers the whole network has, block for block.

Each fragment gets a key that says what it computes, independent of any library version or
table index (Once-for-All's lookup-table idea with readable keys)::

    conv:k3:cin3:cout16:hw160:s2:act=hswish                       stem
    mbconv:k5:e4:cin24:mid96:cout40:hw40:s2:se24:act=relu          block (se0 = no squeeze-excite)
    head:cin160:hw5:conv960:fc1280:out1000:act=hswish             1x1 conv, pool, hidden FC, classifier

``hw`` is the fragment's input size; ``mid`` and ``se`` are the expanded and squeeze widths after
channel alignment (two alignments can give one expand ratio different widths). Blocks at
positions 2.. of a stage see the same shapes, so they share keys: the ImageNet space's 900
(r, w, s, j, k, e) slots are 430 distinct blocks; with 5 stems, 5 first blocks and 5 heads
that is 445 fragments to time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from runtime.netspec import NetSpec
from search.builder import NetBuilder
from search.space.mobilenetv3 import MobileNetV3Space

KINDS = ("conv", "mbconv", "head")


def conv_key(kernel: int, cin: int, cout: int, hw: int, stride: int, act: str | None) -> str:
    """The LUT key of a plain conv (+ folded BN + activation) fragment."""
    return f"conv:k{kernel}:cin{cin}:cout{cout}:hw{hw}:s{stride}:act={act or 'none'}"


def mbconv_key(
    kernel: int, expand: float, cin: int, mid: int, cout: int, hw: int, stride: int, se: int, act: str
) -> str:
    """The LUT key of an inverted-residual block (``se`` = squeeze width, 0 without squeeze-excite)."""
    return f"mbconv:k{kernel}:e{expand:g}:cin{cin}:mid{mid}:cout{cout}:hw{hw}:s{stride}:se{se}:act={act}"


def head_key(cin: int, hw: int, conv: int, hidden: int, classes: int, act: str) -> str:
    """The LUT key of a classifier head (1x1 conv, global pool, hidden FC, classifier)."""
    return f"head:cin{cin}:hw{hw}:conv{conv}:fc{hidden}:out{classes}:act={act}"


@dataclass(frozen=True)
class Fragment:
    """One block configuration: its key, kind (conv | mbconv | head) and NetSpec (batch-1 shapes)."""

    key: str
    kind: str
    net: NetSpec


@dataclass(frozen=True, eq=False)
class SpaceBlocks:
    """A space's decomposition into fragments.

    ``block_keys[r, w, s, j, k, e]`` is the key of the block at stage ``s``, position ``j`` with
    kernel option ``k`` and expand option ``e`` at resolution option ``r`` and width option ``w``;
    ``fixed_keys[r][w]`` are the keys every network at (r, w) runs (stem, first block, head);
    ``fragments`` maps every key to its fragment. Arrays make it identity-compared.
    """

    space: MobileNetV3Space
    alignment: int
    dtype: str
    block_keys: np.ndarray  # (R, W, S, D, K, E) object array of str
    fixed_keys: tuple[tuple[tuple[str, ...], ...], ...]  # [r][w] -> keys
    fragments: Mapping[str, Fragment]

    @property
    def keys(self) -> tuple[str, ...]:
        """Every distinct key, fixed fragments first, in a stable order."""
        return tuple(self.fragments)

    def arch_keys(self, code: np.ndarray) -> list[str]:
        """The keys of the fragments one encoding runs, in network order (for checks and loops)."""
        sp = self.space
        row = sp.canonicalise(sp.check_codes(code))[0]
        r, w = int(row[0]), int(row[1])
        S, D = sp.num_stages, sp.max_depth
        active = sp.active_slots(row[None, :])[0]
        fixed = self.fixed_keys[r][w]
        keys = list(fixed[:-1])
        for s in range(S):
            for j in range(D):
                if active[s, j]:
                    k = int(row[sp.kernel_offset + s * D + j])
                    e = int(row[sp.expand_offset + s * D + j])
                    keys.append(str(self.block_keys[r, w, s, j, k, e]))
        keys.append(fixed[-1])
        return keys


def _mbconv(
    shape: tuple[int, int, int], cout: int, kernel: int, stride: int, mid: int, act: str, se: int | None, dtype: str
) -> NetSpec:
    b = NetBuilder(shape, name="block", dtype=dtype)
    b.inverted_residual(cout, kernel, stride, mid, act, se, name="block")
    return b.build()


def decompose(space: MobileNetV3Space, alignment: int = 8, dtype: str = "float32") -> SpaceBlocks:
    """Every fragment of ``space`` at channel ``alignment``, keyed, with the per-slot key index."""
    c = space.config
    R, W, S, D = len(c.resolutions), len(c.widths), space.num_stages, space.max_depth
    K, E = len(c.kernels), len(c.expands)
    fragments: dict[str, Fragment] = {}
    block_keys = np.empty((R, W, S, D, K, E), dtype=object)
    fixed: list[list[tuple[str, ...]]] = []

    def add(key: str, kind: str, net: NetSpec) -> str:
        fragments.setdefault(key, Fragment(key, kind, net))
        return key

    for res in c.resolutions:
        row: list[tuple[str, ...]] = []
        r = c.resolutions.index(res)
        for w, width in enumerate(c.widths):
            ch = space.channels(width, alignment)
            stem = NetBuilder((c.in_channels, res, res), name="stem", dtype=dtype)
            stem.conv(ch["stem"], 3, c.stem_stride, act="hswish", name="stem")
            stem_net = stem.build()
            keys = [add(conv_key(3, c.in_channels, ch["stem"], res, c.stem_stride, "hswish"), "conv", stem_net)]
            shape = stem_net.output_shape
            if ch["first"]:
                cin = shape[0]
                net = _mbconv(shape, ch["first"], 3, 1, cin, "relu", None, dtype)
                keys.append(add(mbconv_key(3, 1, cin, cin, ch["first"], shape[1], 1, 0, "relu"), "mbconv", net))
                shape = net.output_shape
            for s in range(S):
                next_shape = shape
                for j in range(D):
                    stride = c.stage_strides[s] if j == 0 else 1
                    cin, hw = shape[0], shape[1]
                    for k, kernel in enumerate(c.kernels):
                        for e, expand in enumerate(c.expands):
                            mid, reduced = space.block_mid(cin, expand, alignment)
                            se = (reduced or 0) if c.stage_se[s] else 0
                            key = mbconv_key(kernel, expand, cin, mid, ch["stages"][s], hw, stride, se, c.stage_acts[s])
                            if key not in fragments:
                                net = _mbconv(
                                    shape, ch["stages"][s], kernel, stride, mid, c.stage_acts[s], se or None, dtype
                                )
                                add(key, "mbconv", net)
                            block_keys[r, w, s, j, k, e] = key
                            next_shape = fragments[key].net.output_shape
                    if j == 0:
                        shape = next_shape  # later blocks of the stage see this shape
            head = NetBuilder(shape, name="head", dtype=dtype)
            head.classifier_head(c.num_classes, last_conv=ch["head"], hidden=ch["feature"], act="hswish")
            keys.append(
                add(
                    head_key(shape[0], shape[1], ch["head"], ch["feature"], c.num_classes, "hswish"),
                    "head",
                    head.build(),
                )
            )
            row.append(tuple(keys))
        fixed.append(row)
    ordered = {k: fragments[k] for k in sorted(fragments, key=lambda k: (KINDS.index(k.split(":", 1)[0]), k))}
    return SpaceBlocks(space, alignment, dtype, block_keys, tuple(tuple(r) for r in fixed), ordered)


def iter_fragments(blocks: SpaceBlocks, kinds: tuple[str, ...] = KINDS) -> Iterator[Fragment]:
    """The fragments of ``blocks`` whose kind is in ``kinds``, in key order."""
    return (f for f in blocks.fragments.values() if f.kind in kinds)


__all__ = ["KINDS", "Fragment", "SpaceBlocks", "conv_key", "decompose", "head_key", "iter_fragments", "mbconv_key"]
