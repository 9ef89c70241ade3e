"""NetSpec → ONNX: graphs with numpy weights, a numpy reference forward pass, shared weight files.

``build_model`` turns a NetSpec into an ONNX model with ``onnx.helper`` only (no torch), so a
device or a CI box without torch can build the same graphs the bundles ship and that latency is
measured on. Weights are a ``{name: array}`` mapping whose names and shapes ``weight_shapes``
defines (``f"{layer_key}.weight"`` / ``.bias``; BatchNorm is folded into the conv bias).

Tensor layout follows what ``torch.onnx`` emits for the same network: NCHW everywhere until a
``Linear`` layer, whose ``Flatten`` + ``Gemm`` output stays 2-D ``(N, F)`` — NetSpec's ``(F, 1, 1)``
vector — so a classifier head has no Unsqueeze/Flatten pairs a real export would not have. A
2-D tensor is unsqueezed back to ``(N, F, 1, 1)`` only when a spatial op reads it.
``layer_output_names`` says which tensor holds each layer's output.

Shared weights (several mode models, one file). ``shared_union`` gives, per weight name, the
element-wise largest shape over the modes; ``write_shared`` writes those full tensors to one raw
file; ``build_model(net, shared=layout)`` then declares every weight as an initializer
``shared::{name}`` of the full shape stored as ONNX external data in that file, and carves the
mode's tensor out of it with a ``Slice``: the leading channels on dims 0 and 1 (Once-for-All's
"first channels" convention) and the centre crop of the spatial kernel dims. ``slice_shared`` is
the same rule in numpy, so a mode's weights *are* ``slice_shared(full, shape)``.

With ONNX Runtime the shared initializers can be overridden by one in-memory copy for all modes
(``SessionOptions.add_initializer(shared_name(name), OrtValue.ortvalue_from_numpy(array))``);
keep the arrays and OrtValues alive as long as the session, and disable ``ConstantFolding`` or
ORT folds each ``Slice`` into a private copy of the weights.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper, numpy_helper

from runtime.fileio import atomic_writer
from runtime.netspec import Activation, Add, Conv, Layer, Linear, NetSpec, Pool, SqueezeExcite

SHARED_PREFIX = "shared::"
SHARED_ALIGNMENT = 64  # bytes; a cache line, and a multiple of every element size
MIN_OPSET = 13  # Unsqueeze/Slice with tensor inputs; HardSwish (14) is decomposed below it
BIAS_STD = 0.05

__all__ = [
    "MIN_OPSET",
    "SHARED_ALIGNMENT",
    "SHARED_PREFIX",
    "SharedEntry",
    "SharedWeights",
    "build_model",
    "init_weights",
    "layer_key",
    "layer_output_names",
    "read_shared",
    "reference_forward",
    "save_model",
    "shared_name",
    "shared_union",
    "slice_shared",
    "weight_shapes",
    "write_shared",
]


# ---- names and shapes -----------------------------------------------------------------------
def layer_key(net: NetSpec, i: int) -> str:
    """The stable prefix of layer ``i``'s weights and graph names: its name, else ``f"{op}{i}"``."""
    layer = net.layers[i]
    return layer.name or f"{layer.op}{i}"


def _keys(net: NetSpec) -> list[str]:
    """Every layer's key; raises ValueError if two layers share one (their weights would clash)."""
    keys = [layer_key(net, i) for i in range(len(net.layers))]
    seen: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key in seen:
            raise ValueError(f"layers[{i}] and layers[{seen[key]}] share the name {key!r}; layer names must be unique")
        seen[key] = i
    return keys


def weight_shapes(net: NetSpec) -> dict[str, tuple[int, ...]]:
    """Every parameter tensor the ONNX graph needs, by name, in layer order."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (key, layer) in enumerate(zip(_keys(net), net.layers, strict=True)):
        c, h, w = net.input_shapes_of(i)[0]
        if isinstance(layer, Conv):
            k = layer.kernel
            shapes[f"{key}.weight"] = (layer.out_channels, c // layer.groups, k, k)
            if layer.bias or layer.bn:  # BatchNorm folds into a per-channel bias at inference
                shapes[f"{key}.bias"] = (layer.out_channels,)
        elif isinstance(layer, Linear):
            shapes[f"{key}.weight"] = (layer.out_channels, c * h * w)
            if layer.bias:
                shapes[f"{key}.bias"] = (layer.out_channels,)
        elif isinstance(layer, SqueezeExcite):
            r = layer.reduced
            shapes[f"{key}.fc1.weight"] = (r, c, 1, 1)
            shapes[f"{key}.fc1.bias"] = (r,)
            shapes[f"{key}.fc2.weight"] = (c, r, 1, 1)
            shapes[f"{key}.fc2.bias"] = (c,)
    return shapes


def _ranks(net: NetSpec) -> list[int]:
    """Rank (2 or 4) of each layer's output tensor in the graph: Linear emits 2-D ``(N, F)``."""
    ranks: list[int] = []
    for i, layer in enumerate(net.layers):
        in_ranks = [4 if j == -1 else ranks[j] for j in net.layer_inputs[i]]
        if isinstance(layer, Linear):
            ranks.append(2)
        elif isinstance(layer, Activation | Add):
            ranks.append(2 if all(r == 2 for r in in_ranks) else 4)
        else:
            ranks.append(4)
    return ranks


def _needs_flatten(net: NetSpec, ranks: Sequence[int]) -> bool:
    """Whether the last output is a ``(N, C, 1, 1)`` tensor that becomes ``(N, C)`` logits."""
    return ranks[-1] == 4 and net.output_shape[1:] == (1, 1)


def layer_output_names(net: NetSpec, output_name: str = "logits") -> list[str]:
    """The graph tensor holding each layer's output (as built with the same ``output_name``).

    It is the layer key, except for the last layer when its output is the graph output as is. A
    tensor is ``(N,) + shape`` or, for a ``(F, 1, 1)`` vector after a Linear layer, ``(N, F)``.
    """
    names = _keys(net)
    ranks = _ranks(net)
    if not _needs_flatten(net, ranks):
        names[-1] = output_name
    return names


def shared_name(name: str) -> str:
    """The initializer name under which weight ``name`` lives in a shared-layout model."""
    return SHARED_PREFIX + name


# ---- weights ----------------------------------------------------------------------------------
def init_weights(net: NetSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights: He-normal weights, N(0, 0.05²) biases; deterministic per seed.

    Each tensor draws from its own stream keyed by (seed, name), so a layer keeps its values when
    other layers change — two networks sharing a layer name and shape get the same tensor.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: need a non-negative integer, got {seed!r}")
    out: dict[str, np.ndarray] = {}
    for name, shape in weight_shapes(net).items():
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        if name.endswith(".weight"):
            fan_in = int(np.prod(shape[1:]))
            std = np.sqrt(2.0 / fan_in)
        else:
            std = BIAS_STD
        out[name] = (rng.standard_normal(shape) * std).astype(np.float32)
    return out


def _checked_weights(net: NetSpec, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``weights`` as C-contiguous float32 arrays, checked against ``weight_shapes``.

    Raises ValueError naming the first missing, unexpected or wrongly shaped tensor.
    """
    expected = weight_shapes(net)
    extra = sorted(set(weights) - set(expected))
    if extra:
        raise ValueError(f"weights: unexpected tensor(s) {extra} for network {net.name!r}")
    out: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        if name not in weights:
            raise ValueError(f"weights: missing tensor {name!r} of shape {shape}")
        arr = np.asarray(weights[name])
        if arr.shape != shape:
            raise ValueError(f"weights: tensor {name!r} has shape {arr.shape}, need {shape}")
        out[name] = np.ascontiguousarray(arr, dtype=np.float32)
    return out


# ---- shared layout ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SharedEntry:
    """Where one full tensor lives in a shared weight file: byte offset, shape and dtype."""

    offset: int
    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype != "float32":
            raise ValueError(f"field 'dtype': {self.dtype!r} is not supported; allowed: float32")
        if self.offset < 0 or self.offset % 4:
            raise ValueError(f"field 'offset': {self.offset} must be a non-negative multiple of 4")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if any(d < 1 for d in self.shape):
            raise ValueError(f"field 'shape': {self.shape} must have positive dimensions")

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes."""
        return 4 * int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class SharedWeights:
    """The layout of ONE weight file shared by several mode models.

    ``location`` is the file's path relative to the models (they are saved beside it);
    ``entries`` maps each weight name to its full tensor's place in the file.
    """

    location: str
    entries: Mapping[str, SharedEntry] = field(hash=False)

    def __post_init__(self) -> None:
        loc = PurePosixPath(self.location)
        # ONNX Runtime refuses external data outside the model's directory, so refuse it here first.
        if not self.location or loc.is_absolute() or ".." in loc.parts or "\\" in self.location:
            raise ValueError(f"field 'location': {self.location!r} must be a relative path below the model's folder")
        object.__setattr__(self, "entries", MappingProxyType(dict(self.entries)))

    @property
    def nbytes(self) -> int:
        """The smallest file size holding every entry."""
        return max((e.offset + e.nbytes for e in self.entries.values()), default=0)

    def to_json(self) -> dict[str, Any]:
        """JSON form: ``{"location": ..., "entries": {name: {"offset", "shape", "dtype"}}}``."""
        return {
            "location": self.location,
            "entries": {
                name: {"offset": e.offset, "shape": list(e.shape), "dtype": e.dtype} for name, e in self.entries.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SharedWeights:
        """Parse ``to_json``'s form; raises ValueError naming the bad field."""
        try:
            entries = {
                str(name): SharedEntry(int(e["offset"]), tuple(e["shape"]), str(e.get("dtype", "float32")))
                for name, e in dict(data["entries"]).items()
            }
            return cls(str(data["location"]), entries)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"shared layout: malformed JSON ({exc!r}); need location and entries") from None


def _fit_error(name: str, shape: Sequence[int], full: Sequence[int]) -> str | None:
    """Why a ``shape`` tensor cannot be sliced out of a ``full`` one by ``slice_shared``'s rule."""
    if len(shape) != len(full):
        return f"tensor {name!r}: rank {len(shape)} {tuple(shape)} does not match rank {len(full)} {tuple(full)}"
    for axis, (d, big) in enumerate(zip(shape, full, strict=True)):
        if d > big:
            return f"tensor {name!r}: dim {axis} of {tuple(shape)} exceeds the shared {tuple(full)}"
        if axis >= 2 and (big - d) % 2:
            return (
                f"tensor {name!r}: kernel dim {axis} of {tuple(shape)} and {tuple(full)} differ by an odd amount, "
                "so there is no centre crop"
            )
    return None


def _slices(shape: Sequence[int], full: Sequence[int]) -> list[tuple[int, int]]:
    """(start, end) per axis: leading channels on dims 0–1, the centre crop on kernel dims."""
    spans = []
    for axis, (d, big) in enumerate(zip(shape, full, strict=True)):
        start = (big - d) // 2 if axis >= 2 else 0
        spans.append((start, start + d))
    return spans


def shared_union(shape_sets: Iterable[Mapping[str, Sequence[int]]]) -> dict[str, tuple[int, ...]]:
    """For each weight name in any mode, the element-wise largest shape over the modes.

    Raises ValueError naming the tensor if its ranks differ between modes or its kernel sizes
    differ by an odd amount (no centre crop of the larger one gives the smaller).
    """
    sets = [{name: tuple(int(d) for d in s) for name, s in shapes.items()} for shapes in shape_sets]
    union: dict[str, tuple[int, ...]] = {}
    for shapes in sets:
        for name, shape in shapes.items():
            prev = union.get(name, shape)
            if len(prev) != len(shape):
                raise ValueError(f"tensor {name!r}: modes disagree on the rank, {prev} vs {shape}")
            union[name] = tuple(max(a, b) for a, b in zip(prev, shape, strict=True))
    for shapes in sets:
        for name, shape in shapes.items():
            error = _fit_error(name, shape, union[name])
            if error:
                raise ValueError(error)
    return union


def slice_shared(full: np.ndarray, shape: Sequence[int], name: str = "tensor") -> np.ndarray:
    """The ``shape`` tensor a mode uses out of the ``full`` shared one (a view, not a copy).

    Leading channels on dims 0 and 1, centre crop on the kernel dims — the rule the ``Slice``
    nodes of a shared-layout model implement. Raises ValueError if ``shape`` does not fit.
    """
    error = _fit_error(name, tuple(shape), full.shape)
    if error:
        raise ValueError(error)
    return full[tuple(slice(a, b) for a, b in _slices(shape, full.shape))]


def write_shared(
    path: str | Path, arrays: Mapping[str, np.ndarray], *, alignment: int = SHARED_ALIGNMENT
) -> SharedWeights:
    """Write ``arrays`` as raw little-endian float32 C-order tensors to ``path``; returns the layout.

    Tensors go back to back in the mapping's order, each at an offset that is a multiple of
    ``alignment`` bytes (zero padding between). The file is replaced atomically.
    """
    if alignment < 4 or alignment % 4:
        raise ValueError(f"alignment: {alignment} must be a positive multiple of 4 bytes")
    p = Path(path)
    entries: dict[str, SharedEntry] = {}
    with atomic_writer(p, sync=True) as f:
        offset = 0
        for name, value in arrays.items():
            arr = np.asarray(value)
            if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                raise ValueError(f"tensor {name!r}: dtype {arr.dtype} cannot be stored as float32")
            data = np.ascontiguousarray(arr, dtype="<f4")
            pad = -offset % alignment
            f.write(bytes(pad))
            offset += pad
            entries[name] = SharedEntry(offset, data.shape)
            f.write(data.data)
            offset += data.nbytes
    return SharedWeights(p.name, entries)


def read_shared(path: str | Path, layout: SharedWeights, mmap: bool = True) -> dict[str, np.ndarray]:
    """The full tensors of a shared weight file: read-only, C-contiguous float32 views by name.

    With ``mmap`` the views map the file (pages shared with every process mapping it); without,
    they view one in-memory copy. Raises ValueError if the file is shorter than the layout.
    """
    p = Path(path)
    size = p.stat().st_size
    if size < layout.nbytes:
        raise ValueError(f"{p}: {size} bytes, but the layout needs {layout.nbytes}")
    if not layout.entries:
        return {}
    if mmap:
        buf = np.asarray(np.memmap(p, dtype=np.uint8, mode="r"))
    else:
        buf = np.fromfile(p, dtype=np.uint8)
        buf.flags.writeable = False
    return {
        name: buf[e.offset : e.offset + e.nbytes].view("<f4").reshape(e.shape) for name, e in layout.entries.items()
    }


def _external_initializer(name: str, entry: SharedEntry, location: str) -> TensorProto:
    """A float32 initializer whose data is ``entry``'s bytes in the external file ``location``."""
    t = TensorProto()
    t.name = name
    t.data_type = TensorProto.FLOAT
    t.dims.extend(entry.shape)
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(entry.offset)), ("length", str(entry.nbytes))):
        t.external_data.add(key=key, value=value)
    return t


# ---- graph assembly ---------------------------------------------------------------------------
class _Graph:
    """Mutable, local helper: collects nodes and initializers, converts between 2-D and 4-D."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self._names: set[str] = set()
        self._converted: dict[tuple[str, int], str] = {}

    def node(self, op: str, inputs: Sequence[str], output: str, name: str, **attrs: Any) -> str:
        """Append one node; returns its output tensor name."""
        self.nodes.append(helper.make_node(op, list(inputs), [output], name=name, **attrs))
        return output

    def const(self, name: str, value: np.ndarray) -> str:
        """An initializer added once however often it is asked for; returns its name."""
        if name not in self._names:
            self._names.add(name)
            self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def add_initializer(self, tensor: TensorProto) -> str:
        """Append a ready-made initializer; returns its name."""
        self._names.add(tensor.name)
        self.initializers.append(tensor)
        return tensor.name

    def to_rank(self, tensor: str, have: int, want: int) -> str:
        """``tensor`` as a rank-``want`` tensor (Flatten to 2-D, Unsqueeze to 4-D), made once."""
        if have == want:
            return tensor
        cached = self._converted.get((tensor, want))
        if cached:
            return cached
        if want == 2:
            out = self.node("Flatten", [tensor], f"{tensor}/Flatten:0", f"{tensor}/Flatten", axis=1)
        else:
            axes = self.const("const::axes_hw", np.array([2, 3], dtype=np.int64))
            out = self.node("Unsqueeze", [tensor, axes], f"{tensor}/Unsqueeze:0", f"{tensor}/Unsqueeze")
        self._converted[(tensor, want)] = out
        return out

    def act(self, kind: str | None, x: str, out: str, prefix: str) -> str:
        """``kind`` applied to ``x`` as ``out`` (nothing for None); returns the result's name."""
        if kind is None:
            return x
        name = f"{prefix}/{kind}"
        if kind == "relu":
            return self.node("Relu", [x], out, name)
        if kind == "relu6":
            lo = self.const("const::zero", np.array(0.0, dtype=np.float32))
            hi = self.const("const::six", np.array(6.0, dtype=np.float32))
            return self.node("Clip", [x, lo, hi], out, name)
        if kind == "hsigmoid":  # PyTorch's relu6(x + 3) / 6
            return self.node("HardSigmoid", [x], out, name, alpha=1.0 / 6.0, beta=0.5)
        if kind == "hswish":
            if self.opset >= 14:
                return self.node("HardSwish", [x], out, name)
            gate = self.node("HardSigmoid", [x], f"{name}:gate", f"{name}/gate", alpha=1.0 / 6.0, beta=0.5)
            return self.node("Mul", [x, gate], out, name)
        if kind == "sigmoid":
            return self.node("Sigmoid", [x], out, name)
        raise ValueError(f"unknown activation {kind!r}")  # NetSpec validation makes this unreachable


def _emit_layer(
    g: _Graph, layer: Layer, key: str, ins: Sequence[tuple[str, int]], out: str, w: Mapping[str, str]
) -> None:
    """Append the nodes computing ``layer`` from ``ins`` ((tensor, rank) pairs) into ``out``."""
    x, rank = ins[0]
    if isinstance(layer, Conv):
        inputs = [g.to_rank(x, rank, 4), w[f"{key}.weight"]]
        if f"{key}.bias" in w:
            inputs.append(w[f"{key}.bias"])
        k, s, p = layer.kernel, layer.stride, layer.pad
        y = out if layer.act is None else f"{key}/Conv:0"
        g.node(
            "Conv", inputs, y, f"{key}/Conv", kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p], group=layer.groups
        )
        g.act(layer.act, y, out, key)
    elif isinstance(layer, Linear):
        inputs = [g.to_rank(x, rank, 2), w[f"{key}.weight"]]
        if f"{key}.bias" in w:
            inputs.append(w[f"{key}.bias"])
        y = out if layer.act is None else f"{key}/Gemm:0"
        g.node("Gemm", inputs, y, f"{key}/Gemm", transB=1)
        g.act(layer.act, y, out, key)
    elif isinstance(layer, Pool):
        x4 = g.to_rank(x, rank, 4)
        if layer.global_pool:
            g.node("GlobalAveragePool" if layer.kind == "avg" else "GlobalMaxPool", [x4], out, f"{key}/Pool")
        else:
            k, s, p = layer.kernel, layer.stride or layer.kernel, layer.padding
            attrs: dict[str, Any] = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p, p, p, p]}
            if layer.kind == "avg":
                attrs["count_include_pad"] = int(layer.count_include_pad)
            # MaxPool's padding never wins the max (ONNX pads it with −∞), as in NetSpec.
            g.node("AveragePool" if layer.kind == "avg" else "MaxPool", [x4], out, f"{key}/Pool", **attrs)
    elif isinstance(layer, Activation):
        g.act(layer.kind, x, out, key)
    elif isinstance(layer, SqueezeExcite):
        x4 = g.to_rank(x, rank, 4)
        pooled = g.node("GlobalAveragePool", [x4], f"{key}/squeeze:0", f"{key}/squeeze")
        fc1 = [pooled, w[f"{key}.fc1.weight"], w[f"{key}.fc1.bias"]]
        h = g.node("Conv", fc1, f"{key}/fc1:0", f"{key}/fc1", kernel_shape=[1, 1])
        h = g.act("relu", h, f"{key}/fc1/relu:0", f"{key}/fc1")
        fc2 = [h, w[f"{key}.fc2.weight"], w[f"{key}.fc2.bias"]]
        z = g.node("Conv", fc2, f"{key}/fc2:0", f"{key}/fc2", kernel_shape=[1, 1])
        gate = g.act(layer.gate, z, f"{key}/gate:0", f"{key}/fc2")
        g.node("Mul", [x4, gate], out, f"{key}/scale")
    elif isinstance(layer, Add):
        # Mixed ranks would broadcast (N, C) against (N, C, 1, 1) wrongly, so lift all to 4-D.
        want = 2 if all(r == 2 for _, r in ins) else 4
        terms = [g.to_rank(t, r, want) for t, r in ins]
        acc = terms[0]
        for n, term in enumerate(terms[1:], start=1):
            last = n == len(terms) - 1
            acc = g.node("Add", [acc, term], out if last else f"{key}/Add_{n}:0", f"{key}/Add_{n}")
    else:  # pragma: no cover - LAYER_TYPES is closed
        raise ValueError(f"layer {key!r}: op {layer.op!r} has no ONNX lowering")


def _weight_inputs(
    g: _Graph, net: NetSpec, weights: Mapping[str, np.ndarray] | None, seed: int, shared: SharedWeights | None
) -> dict[str, str]:
    """Declare the weights (embedded or shared + Slice); returns weight name → graph tensor."""
    shapes = weight_shapes(net)
    if shared is None:
        values = _checked_weights(net, weights) if weights is not None else init_weights(net, seed)
        return {name: g.add_initializer(numpy_helper.from_array(arr, name)) for name, arr in values.items()}
    if weights is not None:
        raise ValueError("weights: give either weights or shared, not both (a shared mode's weights are slices)")
    names: dict[str, str] = {}
    for name, shape in shapes.items():
        entry = shared.entries.get(name)
        if entry is None:
            raise ValueError(f"shared layout {shared.location!r}: no entry for tensor {name!r} of shape {shape}")
        error = _fit_error(name, shape, entry.shape)
        if error:
            raise ValueError(f"shared layout {shared.location!r}: {error}")
        full = g.add_initializer(_external_initializer(shared_name(name), entry, shared.location))
        if shape == entry.shape:
            names[name] = full
            continue
        spans = _slices(shape, entry.shape)
        cut = [(axis, span) for axis, span in enumerate(spans) if shape[axis] != entry.shape[axis]]
        starts = g.const(f"{name}/Slice.starts", np.array([s for _, (s, _) in cut], dtype=np.int64))
        ends = g.const(f"{name}/Slice.ends", np.array([e for _, (_, e) in cut], dtype=np.int64))
        axes = g.const(f"{name}/Slice.axes", np.array([a for a, _ in cut], dtype=np.int64))
        names[name] = g.node("Slice", [full, starts, ends, axes], name, f"{name}/Slice")
    return names


def build_model(
    net: NetSpec,
    weights: Mapping[str, np.ndarray] | None = None,
    *,
    seed: int = 0,
    input_name: str = "input",
    output_name: str = "logits",
    opset: int = 17,
    dynamic_batch: bool = True,
    shared: SharedWeights | None = None,
) -> onnx.ModelProto:
    """The ONNX model of ``net``: input ``(N, C, H, W)`` float32, output the last layer's output.

    A final ``(N, C, 1, 1)`` output is flattened to ``(N, C)`` logits. Weights are embedded —
    ``weights`` (checked against ``weight_shapes``) or ``init_weights(net, seed)`` — unless
    ``shared`` is given: then each one is a ``Slice`` of the full tensor in the shared file (see
    the module docstring), and the model must be saved beside that file. The graph is always
    float32, whatever ``net.dtype`` says; quantisation is a later pass.
    """
    latest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= latest:
        raise ValueError(f"opset: {opset} is not supported; allowed: {MIN_OPSET}..{latest}")
    keys = _keys(net)
    taken = set(keys)
    for field_name, value in (("input_name", input_name), ("output_name", output_name)):
        if not value or value in taken:
            raise ValueError(f"{field_name}: {value!r} is empty or clashes with a layer name / the other graph name")
        taken.add(value)

    g = _Graph(opset)
    w = _weight_inputs(g, net, weights, seed, shared)
    ranks = _ranks(net)
    outs = layer_output_names(net, output_name)
    for i, layer in enumerate(net.layers):
        ins = [(input_name, 4) if j == -1 else (outs[j], ranks[j]) for j in net.layer_inputs[i]]
        _emit_layer(g, layer, keys[i], ins, outs[i], w)
    if _needs_flatten(net, ranks):
        g.node("Flatten", [outs[-1]], output_name, f"{keys[-1]}/Flatten", axis=1)

    batch: str | int = "batch" if dynamic_batch else 1
    c, h, wd = net.output_shape
    out_dims: list[str | int] = [batch, c] if ranks[-1] == 2 or _needs_flatten(net, ranks) else [batch, c, h, wd]
    graph = helper.make_graph(
        g.nodes,
        net.name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, *net.input_shape])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, out_dims)],
        initializer=g.initializers,
    )
    opsets = [helper.make_opsetid("", opset)]
    # The lowest IR version that carries this opset keeps the model loadable by older runtimes.
    model = helper.make_model(
        graph, opset_imports=opsets, producer_name="fleetnas", ir_version=helper.find_min_ir_version_for(opsets)
    )
    helper.set_model_props(model, {"fleetnas.netspec": _netspec_json(net)})
    return model


def _netspec_json(net: NetSpec) -> str:
    """The NetSpec's JSON text, stored in the model so a device can recover what it runs."""
    return json.dumps(net.to_json(), separators=(",", ":"))


def save_model(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write ``model`` to ``path`` atomically, as one protobuf file; returns the path.

    Embedded weights stay embedded (no external-data conversion); initializers that already
    point to external data keep pointing there, so save beside that file.
    """
    p = Path(path)
    data = model.SerializeToString()  # raises for models over protobuf's 2 GiB limit
    with atomic_writer(p, sync=True) as f:
        f.write(data)
    return p


# ---- numpy reference --------------------------------------------------------------------------
_NP_ACTS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "hsigmoid": lambda x: np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "hswish": lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
}


def _np_act(kind: str | None, x: np.ndarray) -> np.ndarray:
    return x if kind is None else _NP_ACTS[kind](x)


def _np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int, pad: int, groups: int) -> np.ndarray:
    """Grouped 2-D convolution of NCHW ``x`` with OIHW ``w``, symmetric zero padding."""
    n = x.shape[0]
    o, cg, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]  # N, C, Ho, Wo, k, k
    ho, wo = win.shape[2:4]
    win = win.reshape(n, groups, cg, ho, wo, k, k)
    wg = w.reshape(groups, o // groups, cg, k, k)
    y = np.einsum("ngchwij,gocij->ngohw", win, wg, optimize=True).reshape(n, o, ho, wo)
    return y if b is None else y + b[None, :, None, None]


def _np_pool(x: np.ndarray, layer: Pool) -> np.ndarray:
    """``layer`` applied to NCHW ``x``: max pads with −∞, avg counts the zero padding only if ``count_include_pad``."""
    if layer.global_pool:
        return (np.mean if layer.kind == "avg" else np.max)(x, axis=(2, 3), keepdims=True)
    k, s, p = layer.kernel, layer.stride or layer.kernel, layer.padding
    hw = ((0, 0), (0, 0), (p, p), (p, p))

    def windows(a: np.ndarray) -> np.ndarray:
        return sliding_window_view(a, (k, k), axis=(2, 3))[:, :, ::s, ::s]

    if layer.kind == "max":
        return windows(np.pad(x, hw, constant_values=-np.inf)).max(axis=(-2, -1))
    total = windows(np.pad(x, hw)).sum(axis=(-2, -1))
    if layer.count_include_pad:
        return total / (k * k)
    valid = windows(np.pad(np.ones((1, 1, *x.shape[2:])), hw)).sum(axis=(-2, -1))
    return total / valid


def reference_forward(net: NetSpec, weights: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """``net``'s output for the NCHW batch ``x`` in plain numpy (float64 inside, float32 out).

    Slow and obvious on purpose: the oracle the ONNX graphs are tested against. A final
    ``(N, C, 1, 1)`` output is returned as ``(N, C)``, as ``build_model``'s graph does.
    """
    xin = np.asarray(x, dtype=np.float64)
    if xin.ndim != 4 or xin.shape[1:] != net.input_shape:
        raise ValueError(f"x: shape {xin.shape} does not match (N, {', '.join(map(str, net.input_shape))})")
    w = {name: arr.astype(np.float64) for name, arr in _checked_weights(net, weights).items()}
    keys = _keys(net)
    outs: list[np.ndarray] = []
    for i, layer in enumerate(net.layers):
        ins = [xin if j == -1 else outs[j] for j in net.layer_inputs[i]]
        key, a = keys[i], ins[0]
        if isinstance(layer, Conv):
            y = _np_conv(a, w[f"{key}.weight"], w.get(f"{key}.bias"), layer.stride, layer.pad, layer.groups)
            y = _np_act(layer.act, y)
        elif isinstance(layer, Linear):
            y = a.reshape(a.shape[0], -1) @ w[f"{key}.weight"].T
            if f"{key}.bias" in w:
                y = y + w[f"{key}.bias"]
            y = _np_act(layer.act, y)[:, :, None, None]
        elif isinstance(layer, Pool):
            y = _np_pool(a, layer)
        elif isinstance(layer, Activation):
            y = _np_act(layer.kind, a)
        elif isinstance(layer, SqueezeExcite):
            s = a.mean(axis=(2, 3))
            s = np.maximum(s @ w[f"{key}.fc1.weight"][:, :, 0, 0].T + w[f"{key}.fc1.bias"], 0.0)
            s = _np_act(layer.gate, s @ w[f"{key}.fc2.weight"][:, :, 0, 0].T + w[f"{key}.fc2.bias"])
            y = a * s[:, :, None, None]
        elif isinstance(layer, Add):
            y = np.sum(ins, axis=0)
        else:  # pragma: no cover - LAYER_TYPES is closed
            raise ValueError(f"layer {key!r}: op {layer.op!r} has no reference implementation")
        outs.append(y)
    out = outs[-1]
    if out.shape[2:] == (1, 1):
        out = out.reshape(out.shape[0], -1)
    return out.astype(np.float32)
