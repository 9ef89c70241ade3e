"""MobileNetV3Space: the Once-for-All family of MobileNetV3 networks.

Per stage a depth from ``depths`` (the stage runs its first d blocks); per block a kernel size
from ``kernels`` and an expand ratio from ``expands``; per network an input resolution and a
width multiplier. Squeeze-excite and activation are fixed per stage, as in MobileNetV3. The stem
stride, the number of stages and their strides/channels are configuration, so the same space
serves 28×28 digits (preset ``mnist``) and 224×224 ImageNet (preset ``imagenet``, Once-for-All's
``ofa_mbv3_d234_e346_k357``).

Encoding (L = 2 + S + 2·S·D, D = max depth): ``[resolution, width, depth_1..depth_S,
kernel_{1,1}..kernel_{S,D}, expand_{1,1}..expand_{S,D}]``, each an option index. Kernel and
expand genes of blocks beyond a stage's depth are canonicalised to 0.

Arch JSON: ``{"space": "mobilenetv3", "resolution": 224, "width": 1.0, "depths": [2, 3, ...],
"kernels": [[3, 5], [7, 7, 3], ...], "expands": [[4, 6], ...]}`` — per-stage lists of the
active blocks only, so a user reads what the network is.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from runtime.netspec import ACTIVATIONS, NetSpec, make_divisible
from search.arch import Arch
from search.builder import NetBuilder
from search.space.base import Encoding, SearchSpace, SpaceError


@dataclass(frozen=True)
class MobileNetV3Config:
    """The shape of a MobileNetV3 space; every field has a default (Once-for-All's ImageNet space)."""

    name: str = "mobilenetv3"
    in_channels: int = 3
    num_classes: int = 1000
    resolutions: tuple[int, ...] = (160, 176, 192, 208, 224)
    widths: tuple[float, ...] = (1.0,)
    depths: tuple[int, ...] = (2, 3, 4)
    kernels: tuple[int, ...] = (3, 5, 7)
    expands: tuple[int, ...] = (3, 4, 6)
    stem_channels: int = 16
    stem_stride: int = 2
    first_block_channels: int = 16  # the fixed expand-1 block after the stem (0 = none)
    stage_channels: tuple[int, ...] = (24, 40, 80, 112, 160)
    stage_strides: tuple[int, ...] = (2, 2, 2, 1, 2)
    stage_se: tuple[bool, ...] = (False, True, False, True, True)
    stage_acts: tuple[str, ...] = ("relu", "relu", "hswish", "hswish", "hswish")
    head_expand: int = 6  # final 1×1 conv to head_expand × last stage channels (960 for 160)
    feature_channels: int = 1280  # pooled feature mix, as in MobileNetV3's head
    se_ratio: float = 0.25

    def __post_init__(self) -> None:
        where = f"space config {self.name!r}"
        for key in ("resolutions", "widths", "depths", "kernels", "expands"):
            values = getattr(self, key)
            if not values or any(v <= 0 for v in values) or len(set(values)) != len(values):
                raise SpaceError(f"{where}: field '{key}': need distinct positive values, got {list(values)}")
        if any(k % 2 == 0 for k in self.kernels):
            raise SpaceError(f"{where}: field 'kernels': kernel sizes must be odd, got {list(self.kernels)}")
        n = len(self.stage_channels)
        if n == 0:
            raise SpaceError(f"{where}: field 'stage_channels': need at least one stage")
        for key in ("stage_strides", "stage_se", "stage_acts"):
            if len(getattr(self, key)) != n:
                raise SpaceError(
                    f"{where}: field '{key}': need one value per stage ({n}, as in stage_channels), "
                    f"got {len(getattr(self, key))}"
                )
        for act in self.stage_acts:
            if act not in ACTIVATIONS:
                raise SpaceError(f"{where}: field 'stage_acts': unknown {act!r}; allowed: {', '.join(ACTIVATIONS)}")
        if any(s not in (1, 2) for s in (*self.stage_strides, self.stem_stride)):
            raise SpaceError(f"{where}: field 'stage_strides'/'stem_stride': allowed values 1, 2")
        for key in ("in_channels", "num_classes", "stem_channels", "head_expand", "feature_channels"):
            if getattr(self, key) < 1:
                raise SpaceError(f"{where}: field '{key}': must be >= 1")
        smallest = min(self.resolutions) // self.stem_stride // int(np.prod(self.stage_strides))
        if smallest < 1:
            raise SpaceError(f"{where}: field 'resolutions': {min(self.resolutions)} is too small for the strides")

    @classmethod
    def preset(cls, name: str) -> MobileNetV3Config:
        """A named configuration: ``imagenet`` (Once-for-All) or ``mnist`` (28×28 grey digits)."""
        if name == "imagenet":
            return cls()
        if name == "mnist":
            return cls(
                name="mobilenetv3-mnist",
                in_channels=1,
                num_classes=10,
                resolutions=(28,),
                stem_channels=16,
                stem_stride=1,
                first_block_channels=16,
                stage_channels=(24, 40, 80),
                stage_strides=(2, 2, 2),
                stage_se=(False, True, True),
                stage_acts=("relu", "hswish", "hswish"),
                feature_channels=256,
            )
        raise SpaceError(f"unknown space preset {name!r}; allowed: imagenet, mnist")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "space config") -> MobileNetV3Config:
        """Validate a mapping (e.g. parsed YAML); unknown keys are errors naming the allowed ones."""
        if not isinstance(data, Mapping):
            raise SpaceError(f"{source}: top level must be a mapping")
        allowed = {f.name for f in fields(cls)}
        base: dict[str, Any] = {}
        if "preset" in data:
            base = asdict(cls.preset(str(data["preset"])))
        unknown = set(data) - allowed - {"preset"}
        if unknown:
            raise SpaceError(
                f"{source}: unknown field(s) {sorted(unknown)}; allowed: preset, {', '.join(sorted(allowed))}"
            )
        merged = {**base, **{k: v for k, v in data.items() if k != "preset"}}
        defaults = cls()
        converted: dict[str, Any] = {}
        for key, value in merged.items():
            default = getattr(defaults, key)
            if isinstance(default, tuple):
                if not isinstance(value, list | tuple):
                    raise SpaceError(f"{source}: field '{key}': need a list, got {value!r}")
                kind = type(default[0])
                value = tuple(float(v) if kind is float and isinstance(v, int) else v for v in value)
                if not all(isinstance(v, kind) or (kind is float and isinstance(v, int)) for v in value):
                    raise SpaceError(f"{source}: field '{key}': need a list of {kind.__name__}, got {list(value)!r}")
            elif isinstance(default, bool | str | int) and type(value) is not type(default):
                raise SpaceError(f"{source}: field '{key}': need {type(default).__name__}, got {value!r}")
            elif isinstance(default, float) and not isinstance(value, int | float):
                raise SpaceError(f"{source}: field '{key}': need a number, got {value!r}")
            converted[key] = value
        try:
            return cls(**converted)
        except SpaceError as exc:
            raise SpaceError(f"{source}: {exc}") from None
        except TypeError as exc:
            raise SpaceError(f"{source}: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> MobileNetV3Config:
        """Load and validate a YAML space configuration file."""
        from runtime.fileio import load_yaml

        return cls.from_dict(load_yaml(path, SpaceError) or {}, source=str(Path(path)))


class MobileNetV3Space(SearchSpace):
    """Once-for-All-style MobileNetV3 space (see module docstring for the encoding)."""

    def __init__(self, config: MobileNetV3Config | None = None) -> None:
        self.config = config or MobileNetV3Config()
        c = self.config
        self.name = c.name
        self.num_stages = len(c.stage_channels)
        self.max_depth = max(c.depths)
        s, d = self.num_stages, self.max_depth
        self._card = np.array(
            [len(c.resolutions), len(c.widths)]
            + [len(c.depths)] * s
            + [len(c.kernels)] * (s * d)
            + [len(c.expands)] * (s * d),
            dtype=np.int64,
        )
        self.depth_offset = 2
        self.kernel_offset = 2 + s
        self.expand_offset = 2 + s + s * d
        # depth option index -> depth; used to find the active block slots of many rows at once
        self._depth_values = np.array(c.depths, dtype=np.int64)
        self._gene_names = (
            "resolution",
            "width",
            *(f"depth[{i}]" for i in range(s)),
            *(f"kernel[{i}][{j}]" for i in range(s) for j in range(d)),
            *(f"expand[{i}][{j}]" for i in range(s) for j in range(d)),
        )

    # ---- encoding ----------------------------------------------------------------------------
    @property
    def cardinalities(self) -> np.ndarray:
        return self._card

    @property
    def gene_names(self) -> tuple[str, ...]:
        return self._gene_names

    def active_slots(self, codes: Encoding) -> np.ndarray:
        """Boolean ``(n, S, D)``: which block slots are run by each row's depths."""
        arr = np.asarray(codes)
        depth = self._depth_values[arr[:, self.depth_offset : self.kernel_offset]]
        return np.arange(self.max_depth)[None, None, :] < depth[:, :, None]

    def canonicalise(self, codes: Encoding) -> Encoding:
        arr = np.array(codes, dtype=np.int64, copy=True)
        if arr.ndim == 1:
            return self.canonicalise(arr[None, :])[0]
        inactive = ~self.active_slots(arr).reshape(arr.shape[0], -1)
        sd = self.num_stages * self.max_depth
        arr[:, self.kernel_offset : self.kernel_offset + sd][inactive] = 0
        arr[:, self.expand_offset : self.expand_offset + sd][inactive] = 0
        return arr

    def _index(self, field: str, options: Sequence[Any], value: Any) -> int:
        try:
            return list(options).index(value)
        except ValueError:
            raise SpaceError(
                f"{self.name}: field '{field}': {value!r} is not an option; allowed: {', '.join(map(str, options))}"
            ) from None

    def encode(self, arch: Arch) -> Encoding:
        c = self.config
        if arch.space != self.name:
            raise SpaceError(f"field 'space': arch belongs to {arch.space!r}, this space is {self.name!r}")
        expected = {"resolution", "width", "depths", "kernels", "expands"}
        if set(arch.names) != expected:
            raise SpaceError(
                f"{self.name}: arch fields {sorted(arch.names)} do not match the space; need {sorted(expected)}"
            )
        code = np.zeros(self.encoding_length, dtype=np.int64)
        code[0] = self._index("resolution", c.resolutions, arch["resolution"])
        code[1] = self._index("width", c.widths, arch["width"])
        depths, kernels, expands = arch["depths"], arch["kernels"], arch["expands"]
        for key, value in (("depths", depths), ("kernels", kernels), ("expands", expands)):
            if not isinstance(value, tuple) or len(value) != self.num_stages:
                raise SpaceError(f"{self.name}: field '{key}': need one entry per stage ({self.num_stages})")
        d = self.max_depth
        for s in range(self.num_stages):
            code[self.depth_offset + s] = self._index(f"depths[{s}]", c.depths, depths[s])
            for key, value in (("kernels", kernels[s]), ("expands", expands[s])):
                if not isinstance(value, tuple) or len(value) != depths[s]:
                    raise SpaceError(
                        f"{self.name}: field '{key}[{s}]': need {depths[s]} values (the stage depth), got {value!r}"
                    )
            for j in range(depths[s]):
                code[self.kernel_offset + s * d + j] = self._index(f"kernels[{s}][{j}]", c.kernels, kernels[s][j])
                code[self.expand_offset + s * d + j] = self._index(f"expands[{s}][{j}]", c.expands, expands[s][j])
        return code

    def decode(self, code: Encoding) -> Arch:
        c = self.config
        row = self.canonicalise(self.check_codes(code))[0]
        d = self.max_depth
        depths = [c.depths[row[self.depth_offset + s]] for s in range(self.num_stages)]
        kernels = [
            [c.kernels[row[self.kernel_offset + s * d + j]] for j in range(depths[s])] for s in range(self.num_stages)
        ]
        expands = [
            [c.expands[row[self.expand_offset + s * d + j]] for j in range(depths[s])] for s in range(self.num_stages)
        ]
        return Arch.create(
            self.name,
            resolution=c.resolutions[row[0]],
            width=c.widths[row[1]],
            depths=depths,
            kernels=kernels,
            expands=expands,
        )

    # ---- variation ---------------------------------------------------------------------------
    def crossover(self, a: Encoding, b: Encoding, rng: np.random.Generator) -> Encoding:
        """Uniform crossover that never loses a parent's block to canonical zeros.

        A block slot the child runs takes its genes from a parent that runs it too: if the coin
        picks a parent whose stage is shallower there, the other parent supplies that block.
        """
        pa, pb = self.check_codes(a), self.check_codes(b)
        if pa.shape != pb.shape:
            raise SpaceError(f"{self.name}: crossover needs equal batches, got {pa.shape} and {pb.shape}")
        take_a = rng.random(pa.shape) < 0.5
        n, sd = pa.shape[0], self.num_stages * self.max_depth
        active_a = self.active_slots(pa).reshape(n, sd)
        active_b = self.active_slots(pb).reshape(n, sd)
        for off in (self.kernel_offset, self.expand_offset):
            cols = slice(off, off + sd)
            take_a[:, cols] = np.where(
                active_a & ~active_b, True, np.where(active_b & ~active_a, False, take_a[:, cols])
            )
        return self.canonicalise(np.where(take_a, pa, pb))

    # ---- size --------------------------------------------------------------------------------
    def size(self) -> int:
        c = self.config
        per_block = len(c.kernels) * len(c.expands)
        per_stage = sum(per_block**depth for depth in c.depths)
        return len(c.resolutions) * len(c.widths) * per_stage**self.num_stages

    def enumerate(self, limit: int = 1_000_000) -> Iterator[Encoding]:
        """Every canonical encoding, one ``(n, L)`` batch per (resolution, width, depths)."""
        total = self.size()
        if total > limit:
            raise SpaceError(f"{self.name}: {total:.3e} networks exceed the enumeration limit {limit:,}")
        c, d = self.config, self.max_depth
        for r, w in itertools.product(range(len(c.resolutions)), range(len(c.widths))):
            for depth_idx in itertools.product(range(len(c.depths)), repeat=self.num_stages):
                slots = [s * d + j for s in range(self.num_stages) for j in range(c.depths[depth_idx[s]])]
                choices = itertools.product(range(len(c.kernels) * len(c.expands)), repeat=len(slots))
                combos = np.array(list(choices), dtype=np.int64).reshape(-1, len(slots))
                batch = np.zeros((combos.shape[0], self.encoding_length), dtype=np.int64)
                batch[:, 0], batch[:, 1] = r, w
                batch[:, self.depth_offset : self.kernel_offset] = depth_idx
                slot_idx = np.array(slots, dtype=np.int64)
                batch[:, self.kernel_offset + slot_idx] = combos // len(c.expands)
                batch[:, self.expand_offset + slot_idx] = combos % len(c.expands)
                yield batch

    # ---- compile -----------------------------------------------------------------------------
    def channels(self, width: float, alignment: int) -> dict[str, Any]:
        """Channel counts after width scaling and rounding to the device alignment."""
        c = self.config
        last = make_divisible(c.stage_channels[-1] * width, alignment)
        return {
            "stem": make_divisible(c.stem_channels * width, alignment),
            "first": make_divisible(c.first_block_channels * width, alignment) if c.first_block_channels else 0,
            "stages": [make_divisible(ch * width, alignment) for ch in c.stage_channels],
            "head": make_divisible(last * c.head_expand, alignment),
            "feature": make_divisible(c.feature_channels * max(1.0, width), alignment),
        }

    def block_mid(self, cin: int, expand: int, alignment: int) -> tuple[int, int | None]:
        """Expanded channels of a block and its squeeze-excite width (None without SE)."""
        mid = make_divisible(round(cin * expand), alignment)
        return mid, make_divisible(mid * self.config.se_ratio, alignment)

    def to_netspec(self, arch: Arch, alignment: int = 8, dtype: str = "float32") -> NetSpec:
        self.encode(arch)  # validates every field against the options
        c = self.config
        ch = self.channels(arch["width"], alignment)
        res = arch["resolution"]
        b = NetBuilder((c.in_channels, res, res), name=f"{self.name}", dtype=dtype)
        b.conv(ch["stem"], 3, c.stem_stride, act="hswish", name="stem")
        if ch["first"]:
            b.inverted_residual(ch["first"], 3, 1, b.channels, "relu", None, name="first")
        for s in range(self.num_stages):
            for j in range(arch["depths"][s]):
                mid, reduced = self.block_mid(b.channels, arch["expands"][s][j], alignment)
                b.inverted_residual(
                    ch["stages"][s],
                    arch["kernels"][s][j],
                    c.stage_strides[s] if j == 0 else 1,
                    mid,
                    c.stage_acts[s],
                    reduced if c.stage_se[s] else None,
                    name=f"stage{s}.block{j}",
                )
        b.classifier_head(c.num_classes, last_conv=ch["head"], hidden=ch["feature"], act="hswish")
        return b.build()

    def describe(self) -> dict[str, object]:
        c = self.config
        return {
            **super().describe(),
            "stages": self.num_stages,
            "resolutions": list(c.resolutions),
            "widths": list(c.widths),
            "depths": list(c.depths),
            "kernels": list(c.kernels),
            "expands": list(c.expands),
            "stage_channels": list(c.stage_channels),
            "stage_strides": list(c.stage_strides),
            "stem_stride": c.stem_stride,
        }
