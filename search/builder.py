"""NetBuilder: assemble a NetSpec block by block (stems, inverted residuals, heads).

The reference networks and the search spaces build their NetSpecs through this one builder, so
an inverted-residual block means exactly the same layers everywhere (and the vectorised cost
tables, built from single blocks, agree with whole-network costing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runtime.netspec import Add, Conv, Layer, Linear, NetSpec, Pool, Shape, SqueezeExcite


@dataclass
class NetBuilder:
    """Mutable, local helper: append layers, track the current tensor and its channel count."""

    input_shape: Shape
    name: str = "net"
    dtype: str = "float32"
    layers: list[Layer] = field(default_factory=list)
    current: int = -1  # index of the layer whose output is the current tensor (-1 = input)
    channels: int = 0

    def __post_init__(self) -> None:
        self.channels = self.input_shape[0]

    def add(self, layer: Layer, channels: int | None = None) -> int:
        """Append ``layer`` (reading the current tensor unless it names inputs); returns its index."""
        self.layers.append(layer)
        self.current = len(self.layers) - 1
        if channels is not None:
            self.channels = channels
        return self.current

    def conv(
        self,
        out: int,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: str | None = None,
        name: str = "",
    ) -> int:
        """Append a conv (+ folded BN + fused act); returns its index."""
        return self.add(Conv(name=name, out_channels=out, kernel=kernel, stride=stride, groups=groups, act=act), out)

    def inverted_residual(
        self,
        out: int,
        kernel: int,
        stride: int,
        mid: int,
        act: str,
        se_reduced: int | None = None,
        name: str = "block",
    ) -> int:
        """Append a MobileNetV2/V3 inverted-residual block; returns the index of its last layer.

        1×1 expand to ``mid`` (skipped when ``mid`` equals the input channels, as in MobileNetV3's
        first block) → k×k depthwise → optional squeeze-excite → 1×1 linear projection → residual
        add when the stride is 1 and the channel counts match.
        """
        block_input, cin = self.current, self.channels
        if mid != cin:
            self.conv(mid, 1, act=act, name=f"{name}.expand")
        self.conv(mid, kernel, stride, groups=mid, act=act, name=f"{name}.dw")
        if se_reduced:
            self.add(SqueezeExcite(name=f"{name}.se", reduced=se_reduced))
        self.conv(out, 1, name=f"{name}.project")
        if stride == 1 and cin == out:
            self.add(Add(name=f"{name}.add", inputs=(block_input, self.current)))
        return self.current

    def classifier_head(
        self,
        num_classes: int,
        last_conv: int | None,
        hidden: int | None,
        act: str,
        last_conv_act: str | None = None,
        name: str = "head",
    ) -> int:
        """Append 1×1 conv (optional) → global average pool → linear(hidden)+act (optional) → linear.

        Returns the index of the classifier layer.
        """
        if last_conv:
            self.conv(last_conv, 1, act=last_conv_act or act, name=f"{name}.conv")
        self.add(Pool(name=f"{name}.pool", kind="avg", global_pool=True))
        if hidden:
            self.add(Linear(name=f"{name}.hidden", out_channels=hidden, act=act), hidden)
        return self.add(Linear(name=f"{name}.classifier", out_channels=num_classes), num_classes)

    def build(self) -> NetSpec:
        """The validated NetSpec."""
        return NetSpec(self.input_shape, tuple(self.layers), name=self.name, dtype=self.dtype)
