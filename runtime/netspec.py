"""NetSpec: the concrete network an architecture compiles to.

A NetSpec is an ordered list of layers forming a DAG in topological order. Each layer names its
inputs by index (``-1`` is the network input; by default a layer reads the layer before it), so
residual adds and squeeze-excite branches are explicit. Tensor shapes are ``(C, H, W)`` without
the batch dimension; a vector of ``F`` features is ``(F, 1, 1)``.

Everything downstream — cost models, the ONNX graph builder, the supernet, bundle manifests —
consumes a NetSpec, never an architecture encoding, so a user can cost or build any network,
including one that belongs to no search space.

It lives in ``runtime`` because a device needs it too (bundle manifests, energy estimates), and
``runtime`` may import nothing of ours.

JSON form (``NetSpec.to_json`` / ``NetSpec.from_json``)::

    {
      "format": "fleetnas.netspec/1",
      "name": "my_net",
      "input": {"shape": [3, 224, 224], "dtype": "float32"},
      "layers": [
        {"op": "conv", "name": "stem", "out": 16, "kernel": 3, "stride": 2, "act": "hswish"},
        {"op": "conv", "out": 16, "kernel": 3, "groups": 16, "act": "relu"},
        {"op": "se", "reduced": 8},
        {"op": "conv", "out": 16, "kernel": 1},
        {"op": "add", "inputs": [0, 3]},
        {"op": "pool", "kind": "avg", "global": true},
        {"op": "linear", "out": 10}
      ]
    }

Layer fields (defaults in brackets):

- ``conv``: ``out``, ``kernel`` [1], ``stride`` [1], ``groups`` [1], ``padding`` [kernel // 2],
  ``bias`` [false], ``bn`` [true], ``act`` [none]. ``groups == in == out`` is a depthwise conv.
- ``linear``: ``out``, ``bias`` [true], ``act`` [none]; a spatial input is flattened.
- ``pool``: ``kind`` (``avg`` | ``max``), ``global`` [false] or ``kernel`` [2] / ``stride`` [kernel] /
  ``padding`` [0] (each side, ``0 <= padding < kernel``) / ``count_include_pad`` [false] (an ``avg``
  window divides by all ``kernel²`` cells, padding included, instead of by its in-bounds cells;
  ``max`` pads with −∞). A global pool takes no padding.
- ``act``: ``kind`` (one of ``ACTIVATIONS``).
- ``se``: squeeze-and-excite on its input: global average pool, FC to ``reduced`` + ReLU,
  FC back + ``gate`` [hsigmoid], channel-wise multiply.
- ``add``: element-wise sum of its ``inputs`` (two or more, same shape).

Every layer takes an optional ``name`` and ``inputs`` (list of layer indices, ``-1`` = input).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

NETSPEC_FORMAT = "fleetnas.netspec/1"
ACTIVATIONS: tuple[str, ...] = ("relu", "relu6", "hswish", "hsigmoid", "sigmoid")
POOL_KINDS: tuple[str, ...] = ("avg", "max")
DTYPE_BYTES: Mapping[str, int] = {"float32": 4, "float16": 2, "int8": 1, "uint8": 1}

# Element-wise FLOPs per output element of each activation, counting compare/add/mul/div as one
# each: relu = max; relu6 = max + min; hsigmoid = add, max, min, mul; hswish = hsigmoid + mul;
# sigmoid ≈ exp, add, div (exp counted as one, as ONNX Runtime's vectorised exp is ~one op/elem).
ACTIVATION_FLOPS: Mapping[str, int] = {"relu": 1, "relu6": 2, "hsigmoid": 4, "hswish": 5, "sigmoid": 3}

Shape = tuple[int, int, int]


class NetSpecError(ValueError):
    """A NetSpec (or its JSON file) is malformed; the message names the layer and field."""


def _where(source: str | None, index: int | None, name: str | None = None) -> str:
    parts = []
    if source:
        parts.append(source)
    if index is not None:
        parts.append(f"layers[{index}]" + (f" ({name})" if name else ""))
    return ": ".join(parts) if parts else "netspec"


@dataclass(frozen=True)
class LayerCost:
    """Counts for one layer at batch 1: MACs, FLOPs, parameters, weight and activation elements."""

    macs: int
    flops: int
    params: int
    weight_elems: int  # stored at inference (BatchNorm folded into a per-channel bias)
    input_elems: int  # all inputs read by the layer
    output_elems: int


@dataclass(frozen=True)
class Layer:
    """Base of all layers: ``inputs`` are indices of earlier layers (-1 = network input)."""

    op: ClassVar[str] = ""
    name: str = ""
    inputs: tuple[int, ...] = ()

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:  # pragma: no cover - abstract
        """The output shape for the given input shapes; raises NetSpecError if they don't fit."""
        raise NotImplementedError

    def cost(self, in_shapes: Sequence[Shape], out: Shape) -> LayerCost:  # pragma: no cover
        """Counts for this layer given its resolved input and output shapes."""
        raise NotImplementedError

    @property
    def fused_act(self) -> str | None:
        """The activation fused into this layer, if any."""
        return None

    def to_json(self) -> dict[str, Any]:
        """The layer's JSON object (defaults omitted only for ``name`` and ``inputs``)."""
        out: dict[str, Any] = {"op": self.op}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "name" and not value:
                continue
            if f.name == "inputs":
                if value:
                    out["inputs"] = list(value)
                continue
            out[_JSON_NAME.get(f.name, f.name)] = value
        return out


# Python field name -> JSON key, where they differ (``global`` is a keyword; ``out`` is short).
_JSON_NAME = {"out_channels": "out", "global_pool": "global"}
_PY_NAME = {v: k for k, v in _JSON_NAME.items()}


def _n_elems(shape: Shape) -> int:
    return shape[0] * shape[1] * shape[2]


def _single(in_shapes: Sequence[Shape], layer: Layer) -> Shape:
    if len(in_shapes) != 1:
        raise NetSpecError(f"field 'inputs': op '{layer.op}' takes exactly one input, got {len(in_shapes)}")
    return in_shapes[0]


@dataclass(frozen=True)
class Conv(Layer):
    """2-D convolution (+ folded BatchNorm + fused activation); covers depthwise/pointwise/grouped."""

    op: ClassVar[str] = "conv"
    out_channels: int = 0
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    padding: int | None = None
    bias: bool = False
    bn: bool = True
    act: str | None = None

    @property
    def pad(self) -> int:
        """Padding used on each side: the given one, else ``kernel // 2`` ("same" at stride 1)."""
        return self.kernel // 2 if self.padding is None else self.padding

    @property
    def fused_act(self) -> str | None:
        return self.act

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        c, h, w = _single(in_shapes, self)
        if c % self.groups or self.out_channels % self.groups:
            raise NetSpecError(
                f"field 'groups': {self.groups} must divide input channels {c} and 'out' {self.out_channels}"
            )
        ho = (h + 2 * self.pad - self.kernel) // self.stride + 1
        wo = (w + 2 * self.pad - self.kernel) // self.stride + 1
        if ho < 1 or wo < 1:
            raise NetSpecError(f"field 'kernel': {self.kernel} does not fit the {h}x{w} input")
        return (self.out_channels, ho, wo)

    def cost(self, in_shapes: Sequence[Shape], out: Shape) -> LayerCost:
        cin = in_shapes[0][0]
        out_elems = _n_elems(out)
        weights = self.out_channels * (cin // self.groups) * self.kernel * self.kernel
        macs = out_elems * (cin // self.groups) * self.kernel * self.kernel
        params = weights + (self.out_channels if self.bias else 0) + (2 * self.out_channels if self.bn else 0)
        has_bias = self.bias or self.bn
        flops = 2 * macs + (out_elems if has_bias else 0) + ACTIVATION_FLOPS.get(self.act or "", 0) * out_elems
        return LayerCost(
            macs=macs,
            flops=flops,
            params=params,
            weight_elems=weights + (self.out_channels if has_bias else 0),
            input_elems=_n_elems(in_shapes[0]),
            output_elems=out_elems,
        )


@dataclass(frozen=True)
class Linear(Layer):
    """Fully connected layer; a spatial input is flattened first."""

    op: ClassVar[str] = "linear"
    out_channels: int = 0
    bias: bool = True
    act: str | None = None

    @property
    def fused_act(self) -> str | None:
        return self.act

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        _single(in_shapes, self)
        return (self.out_channels, 1, 1)

    def cost(self, in_shapes: Sequence[Shape], out: Shape) -> LayerCost:
        fin = _n_elems(in_shapes[0])
        macs = fin * self.out_channels
        bias = self.out_channels if self.bias else 0
        flops = 2 * macs + bias + ACTIVATION_FLOPS.get(self.act or "", 0) * self.out_channels
        return LayerCost(macs, flops, macs + bias, macs + bias, fin, self.out_channels)


@dataclass(frozen=True)
class Pool(Layer):
    """Average or max pooling, windowed (optionally zero/−∞ padded) or global."""

    op: ClassVar[str] = "pool"
    kind: str = "avg"
    global_pool: bool = False
    kernel: int = 2
    stride: int | None = None
    padding: int = 0
    # ONNX AveragePool's attribute of the same name; False (also PyTorch's
    # ``count_include_pad=False``) averages a border window over its in-bounds cells only.
    count_include_pad: bool = False

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        c, h, w = _single(in_shapes, self)
        if self.global_pool:
            return (c, 1, 1)
        s, p = self.stride or self.kernel, self.padding
        ho, wo = (h + 2 * p - self.kernel) // s + 1, (w + 2 * p - self.kernel) // s + 1
        if ho < 1 or wo < 1:
            raise NetSpecError(f"field 'kernel': {self.kernel} does not fit the {h}x{w} input")
        return (c, ho, wo)

    def cost(self, in_shapes: Sequence[Shape], out: Shape) -> LayerCost:
        # A padded border window reads fewer real cells, but the kernels run the full window.
        c, h, w = in_shapes[0]
        window = h * w if self.global_pool else self.kernel * self.kernel
        return LayerCost(0, _n_elems(out) * window, 0, 0, c * h * w, _n_elems(out))


@dataclass(frozen=True)
class Activation(Layer):
    """A stand-alone activation (when it cannot be fused into the layer before it)."""

    op: ClassVar[str] = "act"
    kind: str = "relu"

    @property
    def fused_act(self) -> str | None:
        return self.kind

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        return _single(in_shapes, self)

    def cost(self, in_shapes: Sequence[Shape], out: Shape) -> LayerCost:
        n = _n_elems(out)
        return LayerCost(0, ACTIVATION_FLOPS[self.kind] * n, 0, 0, n, n)


@dataclass(frozen=True)
class SqueezeExcite(Layer):
    """Squeeze-and-excite: pool → FC(reduced)+ReLU → FC(C)+gate → channel-wise scale."""

    op: ClassVar[str] = "se"
    reduced: int = 0
    gate: str = "hsigmoid"

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        return _single(in_shapes, self)

    def cost(self, in_shapes: Sequence[Shape], out: Shape) -> LayerCost:
        c = out[0]
        n = _n_elems(out)
        fc_macs = 2 * c * self.reduced
        params = c * self.reduced + self.reduced + self.reduced * c + c
        # Common MAC counters (and the MobileNetV3 paper) count only the two FCs as MACs; the
        # pooling adds, gate and the broadcast multiply are element-wise FLOPs.
        flops = (
            n  # global average pool
            + 2 * fc_macs
            + self.reduced * (1 + ACTIVATION_FLOPS["relu"])
            + c * (1 + ACTIVATION_FLOPS[self.gate])
            + n  # channel-wise scale
        )
        return LayerCost(fc_macs, flops, params, params, n, n)


@dataclass(frozen=True)
class Add(Layer):
    """Element-wise sum of two or more same-shaped tensors (residual connection)."""

    op: ClassVar[str] = "add"

    def out_shape(self, in_shapes: Sequence[Shape]) -> Shape:
        if len(in_shapes) < 2:
            raise NetSpecError("field 'inputs': op 'add' needs at least two inputs")
        if len(set(in_shapes)) != 1:
            raise NetSpecError(f"field 'inputs': op 'add' got differently shaped inputs {list(in_shapes)}")
        return in_shapes[0]

    def cost(self, in_shapes: Sequence[Shape], out: Shape) -> LayerCost:
        n = _n_elems(out)
        return LayerCost(0, n * (len(in_shapes) - 1), 0, 0, n * len(in_shapes), n)


LAYER_TYPES: Mapping[str, type[Layer]] = {cls.op: cls for cls in (Conv, Linear, Pool, Activation, SqueezeExcite, Add)}


def _check_layer(layer: Layer) -> None:
    """Validate the per-layer fields a user can get wrong; raises NetSpecError naming the field."""
    positive = {
        Conv: ("out_channels", "kernel", "stride", "groups"),
        Linear: ("out_channels",),
        SqueezeExcite: ("reduced",),
    }.get(type(layer), ())
    for name in positive:
        value = getattr(layer, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            key = _JSON_NAME.get(name, name)
            raise NetSpecError(f"field '{key}': must be a positive integer, got {value!r}")
    act = layer.fused_act
    if act is not None and act not in ACTIVATIONS:
        key = "kind" if isinstance(layer, Activation) else "act"
        raise NetSpecError(f"field '{key}': unknown activation {act!r}; allowed: {', '.join(ACTIVATIONS)}")
    if isinstance(layer, SqueezeExcite) and layer.gate not in ACTIVATIONS:
        raise NetSpecError(f"field 'gate': unknown activation {layer.gate!r}; allowed: {', '.join(ACTIVATIONS)}")
    if isinstance(layer, Pool):
        if layer.kind not in POOL_KINDS:
            raise NetSpecError(f"field 'kind': unknown pooling {layer.kind!r}; allowed: {', '.join(POOL_KINDS)}")
        if not isinstance(layer.count_include_pad, bool):
            raise NetSpecError(f"field 'count_include_pad': must be true or false, got {layer.count_include_pad!r}")
        pad = layer.padding
        if not isinstance(pad, int) or isinstance(pad, bool):
            raise NetSpecError(f"field 'padding': must be an integer, got {pad!r}")
        if layer.global_pool:
            if pad != 0:
                raise NetSpecError(f"field 'padding': a global pool takes no padding, got {pad}; allowed: 0")
        else:
            if layer.kernel < 1 or (layer.stride is not None and layer.stride < 1):
                raise NetSpecError("field 'kernel'/'stride': pooling window must be positive")
            # A pad of kernel or more makes windows that hold only padding (ONNX Runtime refuses them).
            if not 0 <= pad < layer.kernel:
                raise NetSpecError(
                    f"field 'padding': {pad} is out of range for kernel {layer.kernel}; allowed: 0..{layer.kernel - 1}"
                )
    if isinstance(layer, Conv) and layer.padding is not None and layer.padding < 0:
        raise NetSpecError(f"field 'padding': must be >= 0, got {layer.padding}")


@dataclass(frozen=True)
class NetSpec:
    """A validated network: input shape + layers in topological order, with resolved shapes.

    Construction checks every layer (fields, input references, shape compatibility) and raises
    ``NetSpecError`` naming the layer index and field of the first problem.
    """

    input_shape: Shape
    layers: tuple[Layer, ...]
    name: str = "net"
    dtype: str = "float32"
    # Resolved at construction; not part of equality (they are a function of the fields above).
    shapes: tuple[Shape, ...] = field(default=(), compare=False, repr=False)
    layer_inputs: tuple[tuple[int, ...], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_BYTES:
            raise NetSpecError(f"field 'input.dtype': {self.dtype!r}; allowed: {', '.join(DTYPE_BYTES)}")
        if len(self.input_shape) != 3 or any((not isinstance(d, int)) or d < 1 for d in self.input_shape):
            raise NetSpecError(f"field 'input.shape': need [C, H, W] positive integers, got {self.input_shape}")
        if not self.layers:
            raise NetSpecError("field 'layers': a network needs at least one layer")
        shapes: list[Shape] = []
        resolved: list[tuple[int, ...]] = []
        for i, layer in enumerate(self.layers):
            try:
                _check_layer(layer)
                ins = layer.inputs or (i - 1,)
                for j in ins:
                    if not (-1 <= j < i):
                        raise NetSpecError(
                            f"field 'inputs': {j} is not an earlier layer (allowed -1 for the input, 0..{i - 1})"
                        )
                in_shapes = [self.input_shape if j == -1 else shapes[j] for j in ins]
                shapes.append(layer.out_shape(in_shapes))
                resolved.append(tuple(ins))
            except NetSpecError as exc:
                raise NetSpecError(f"{_where(None, i, layer.name)}: {exc}") from None
        object.__setattr__(self, "shapes", tuple(shapes))
        object.__setattr__(self, "layer_inputs", tuple(resolved))

    # ---- shapes and counts -------------------------------------------------------------------
    @property
    def output_shape(self) -> Shape:
        """Shape of the last layer's output."""
        return self.shapes[-1]

    def input_shapes_of(self, i: int) -> list[Shape]:
        """Shapes of the tensors layer ``i`` reads."""
        return [self.input_shape if j == -1 else self.shapes[j] for j in self.layer_inputs[i]]

    def layer_costs(self) -> list[LayerCost]:
        """Per-layer counts at batch 1, in layer order."""
        return [layer.cost(self.input_shapes_of(i), self.shapes[i]) for i, layer in enumerate(self.layers)]

    def cost_arrays(self) -> dict[str, np.ndarray]:
        """Per-layer counts as int64 arrays keyed by ``LayerCost`` field name (for vectorised use)."""
        costs = self.layer_costs()
        return {f.name: np.array([getattr(c, f.name) for c in costs], dtype=np.int64) for f in fields(LayerCost)}

    def last_use(self) -> np.ndarray:
        """For each tensor (index 0 = network input, i+1 = layer i's output) the last step reading it.

        A tensor nobody reads (the network output) is live until the end.
        """
        n = len(self.layers)
        last = np.arange(-1, n)  # a tensor is live at least at the step producing it
        last[-1] = n - 1
        for i, ins in enumerate(self.layer_inputs):
            for j in ins:
                last[j + 1] = max(last[j + 1], i)
        return last

    # ---- JSON --------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The documented JSON form (see module docstring)."""
        return {
            "format": NETSPEC_FORMAT,
            "name": self.name,
            "input": {"shape": list(self.input_shape), "dtype": self.dtype},
            "layers": [layer.to_json() for layer in self.layers],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str | None = None) -> NetSpec:
        """Parse and validate the JSON form; errors name ``source``, the layer index and the field."""
        where = source or "netspec"
        if not isinstance(data, Mapping):
            raise NetSpecError(f"{where}: top level must be an object")
        unknown = set(data) - {"format", "name", "input", "layers"}
        if unknown:
            raise NetSpecError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: format, name, input, layers")
        fmt = data.get("format", NETSPEC_FORMAT)
        if fmt != NETSPEC_FORMAT:
            raise NetSpecError(f"{where}: field 'format': {fmt!r} is not supported; allowed: {NETSPEC_FORMAT}")
        inp = data.get("input")
        if not isinstance(inp, Mapping) or "shape" not in inp:
            raise NetSpecError(f"{where}: field 'input': need an object with 'shape' [C, H, W] (and 'dtype')")
        raw_layers = data.get("layers")
        if not isinstance(raw_layers, list):
            raise NetSpecError(f"{where}: field 'layers': need a list of layer objects")
        layers = [_layer_from_json(raw, source, i) for i, raw in enumerate(raw_layers)]
        shape = inp["shape"]
        if not isinstance(shape, list | tuple):
            raise NetSpecError(f"{where}: field 'input.shape': need [C, H, W], got {shape!r}")
        try:
            return cls(
                input_shape=tuple(shape),  # type: ignore[arg-type]
                layers=tuple(layers),
                name=str(data.get("name", "net")),
                dtype=str(inp.get("dtype", "float32")),
            )
        except NetSpecError as exc:
            raise NetSpecError(f"{where}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> NetSpec:
        """Read a NetSpec JSON file; errors name the file."""
        from runtime.fileio import load_json

        return cls.from_json(load_json(path, NetSpecError), source=str(Path(path)))

    def with_name(self, name: str) -> NetSpec:
        """A copy under another name."""
        return replace(self, name=name)


def _layer_from_json(raw: Any, source: str | None, index: int) -> Layer:
    if not isinstance(raw, Mapping):
        raise NetSpecError(f"{_where(source, index)}: each layer must be an object")
    op = raw.get("op")
    if not isinstance(op, str) or op not in LAYER_TYPES:
        raise NetSpecError(f"{_where(source, index)}: field 'op': unknown {op!r}; allowed: {', '.join(LAYER_TYPES)}")
    cls = LAYER_TYPES[op]
    allowed = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "op":
            continue
        py = _PY_NAME.get(key, key)
        if py not in allowed:
            names = sorted(_JSON_NAME.get(a, a) for a in allowed)
            raise NetSpecError(
                f"{_where(source, index, raw.get('name'))}: unknown field {key!r} for op '{op}'; "
                f"allowed: {', '.join(names)}"
            )
        if py == "inputs":
            if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
                raise NetSpecError(f"{_where(source, index)}: field 'inputs': need a list of layer indices")
            value = tuple(value)
        kwargs[py] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise NetSpecError(f"{_where(source, index)}: {exc}") from None


def make_divisible(value: float, divisor: int, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor``, never dropping more than 10 %.

    This is the rounding MobileNetV2/V3 (and Once-for-All) apply to width-scaled channels; the
    divisor is the device's channel alignment (4 for NEON fp32, 8 for fp16, 16 for tensor cores).
    """
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def conv_out_size(size: int, kernel: int, stride: int, padding: int | None = None) -> int:
    """Spatial output size of a convolution with 'same'-style padding ``kernel // 2`` by default."""
    pad = kernel // 2 if padding is None else padding
    return (size + 2 * pad - kernel) // stride + 1


__all__ = [
    "ACTIVATIONS",
    "ACTIVATION_FLOPS",
    "DTYPE_BYTES",
    "LAYER_TYPES",
    "NETSPEC_FORMAT",
    "Activation",
    "Add",
    "Conv",
    "Layer",
    "LayerCost",
    "Linear",
    "NetSpec",
    "NetSpecError",
    "Pool",
    "SqueezeExcite",
    "conv_out_size",
    "make_divisible",
]
