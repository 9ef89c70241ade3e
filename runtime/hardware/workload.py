"""Roofline workload: a NetSpec's per-layer compute cycles and memory time on one device.

Each layer costs ``max(compute_cycles / f, memory_seconds)``: it is limited either by the
arithmetic units (which scale with the clock) or by DRAM traffic (which, to first order, does not).
Bytes moved per layer are ``(weight_elems + input_elems + output_elems) * bytes_per_element`` —
every tensor touched exactly once, a lower bound that ignores cache misses and re-reads (im2col,
tiling spills). Fusion across layers is not modelled either: each layer reads its input from and
writes its output to memory.

Splitting the layers at a frequency into memory-bound ones (time ``t_mem``, frequency-independent)
and compute-bound ones (``cycles``) gives ``t(f) = t_mem + cycles / f``, exactly the roofline sum
at that ``f``. The DVFS energy model (``runtime.energy``) works on that split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.hardware.profile import LAYER_CLASSES, DeviceProfile, canonical_dtype
from runtime.netspec import DTYPE_BYTES, Conv, Layer, Linear, NetSpec


def layer_class(layer: Layer, in_channels: int) -> str:
    """The utilisation class of a layer: ``depthwise``, ``conv``, ``linear`` or ``elementwise``."""
    if isinstance(layer, Conv):
        depthwise = layer.groups > 1 and layer.groups == in_channels == layer.out_channels
        return "depthwise" if depthwise else "conv"
    if isinstance(layer, Linear):
        return "linear"
    return "elementwise"  # pool, act, se, add: a few operations per element loaded


def _frozen_array(values: Any, name: str, n: int | None) -> np.ndarray:
    arr = np.array(values, dtype=np.float64, copy=True).reshape(-1)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"Workload: field '{name}' has {arr.shape[0]} entries, expected {n} (one per layer)")
    if np.any(~np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"Workload: field '{name}' must hold finite non-negative numbers")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Workload:
    """Per-layer roofline terms of one network on one device (read-only float64 arrays).

    ``compute_cycles`` are wall-clock cycles with ``cores`` cores busy at the device's utilisation
    for the layer's class; ``memory_seconds`` is the layer's DRAM time at the attained bandwidth.
    Arrays make the dataclass unhashable and identity-compared (``eq=False``).
    """

    layer_names: tuple[str, ...]
    layer_classes: tuple[str, ...]
    flops: np.ndarray
    bytes_moved: np.ndarray
    compute_cycles: np.ndarray
    memory_seconds: np.ndarray
    dtype: str = "float32"
    device_name: str = ""
    cores: int = 1

    def __post_init__(self) -> None:
        n = len(self.layer_names)
        if n == 0:
            raise ValueError("Workload: needs at least one layer")
        object.__setattr__(self, "layer_names", tuple(self.layer_names))
        object.__setattr__(self, "layer_classes", tuple(self.layer_classes))
        if len(self.layer_classes) != n:
            raise ValueError(
                f"Workload: field 'layer_classes' has {len(self.layer_classes)} entries, expected {n}"
            )
        for i, c in enumerate(self.layer_classes):
            if c not in LAYER_CLASSES:
                raise ValueError(
                    f"Workload: layer_classes[{i}] {c!r} unknown; allowed: {', '.join(LAYER_CLASSES)}"
                )
        for name in ("flops", "bytes_moved", "compute_cycles", "memory_seconds"):
            object.__setattr__(self, name, _frozen_array(getattr(self, name), name, n))
        if isinstance(self.cores, bool) or not isinstance(self.cores, int) or self.cores < 1:
            raise ValueError(f"Workload: field 'cores' must be a positive integer, got {self.cores!r}")

    @property
    def total_flops(self) -> float:
        """FLOPs of the whole network."""
        return float(self.flops.sum())

    @property
    def total_bytes(self) -> float:
        """Bytes moved by the whole network (roofline lower bound)."""
        return float(self.bytes_moved.sum())

    # ---- one frequency ------------------------------------------------------------------------
    def layer_latency_s(self, freq_mhz: float) -> np.ndarray:
        """Per-layer roofline latency in seconds at ``freq_mhz``: max(compute, memory)."""
        return np.maximum(self.compute_cycles / (float(freq_mhz) * 1e6), self.memory_seconds)

    def latency_s(self, freq_mhz: float) -> float:
        """Whole-network roofline latency in seconds at ``freq_mhz`` (layers run one after another)."""
        return float(self.layer_latency_s(freq_mhz).sum())

    def compute_bound(self, freq_mhz: float) -> np.ndarray:
        """Boolean mask of the layers whose compute time exceeds their memory time at ``freq_mhz``."""
        return self.compute_cycles / (float(freq_mhz) * 1e6) > self.memory_seconds

    def split(self, freq_mhz: float) -> tuple[float, float]:
        """``(t_mem seconds, cycles)`` at ``freq_mhz``, so that ``t_mem + cycles / f`` is the latency.

        Memory-bound layers contribute their memory time, compute-bound ones their cycles.
        """
        t_mem, cycles = self.split_many(np.array([freq_mhz], dtype=np.float64))
        return float(t_mem[0]), float(cycles[0])

    # ---- many frequencies at once -------------------------------------------------------------
    def split_many(self, freqs_mhz: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(t_mem, cycles)`` arrays, one entry per frequency in ``freqs_mhz``."""
        f = np.asarray(freqs_mhz, dtype=np.float64).reshape(-1)
        if np.any(f <= 0):
            raise ValueError("Workload: frequencies must be > 0 MHz")
        compute_s = self.compute_cycles[None, :] / (f[:, None] * 1e6)  # (F, L)
        bound = compute_s > self.memory_seconds[None, :]
        t_mem = np.where(bound, 0.0, self.memory_seconds[None, :]).sum(axis=1)
        cycles = np.where(bound, self.compute_cycles[None, :], 0.0).sum(axis=1)
        return t_mem, cycles

    def latency_s_many(self, freqs_mhz: Sequence[float] | np.ndarray) -> np.ndarray:
        """Whole-network roofline latency in seconds for every frequency in ``freqs_mhz``."""
        f = np.asarray(freqs_mhz, dtype=np.float64).reshape(-1)
        t_mem, cycles = self.split_many(f)
        return t_mem + cycles / (f * 1e6)


def workload_of(
    netspec: NetSpec, device: DeviceProfile, dtype: str = "float32", cores: int | None = None
) -> Workload:
    """The roofline workload of ``netspec`` executed in ``dtype`` on ``cores`` (default all) of ``device``.

    Raises ``ValueError`` if the device does not support the dtype, an op of the net, or that
    many cores.
    """
    dt = canonical_dtype(dtype)
    if dt not in device.supported_dtypes:
        raise ValueError(
            f"{device.name}: dtype {dtype!r} is not supported; allowed: {', '.join(device.supported_dtypes)}"
        )
    n_cores = device.cores if cores is None else cores
    if isinstance(n_cores, bool) or not isinstance(n_cores, int) or not 1 <= n_cores <= device.cores:
        raise ValueError(f"{device.name}: cores must be an integer in 1..{device.cores}, got {cores!r}")
    if device.supported_ops is not None:
        for i, layer in enumerate(netspec.layers):
            if layer.op not in device.supported_ops:
                raise ValueError(
                    f"{device.name}: layers[{i}] ({layer.name or layer.op}) uses op {layer.op!r}, "
                    f"which this device does not run; supported ops: {', '.join(device.supported_ops)}"
                )
    costs = netspec.cost_arrays()
    classes = tuple(
        layer_class(layer, netspec.input_shapes_of(i)[0][0]) for i, layer in enumerate(netspec.layers)
    )
    util = np.array([device.utilisation[c] for c in classes], dtype=np.float64)
    flops = costs["flops"].astype(np.float64)
    moved = (costs["weight_elems"] + costs["input_elems"] + costs["output_elems"]).astype(
        np.float64
    ) * DTYPE_BYTES[dt]
    cycles = flops / (device.flops_per_cycle[dt] * n_cores * util)
    memory_s = moved / (device.memory_bandwidth_gbps * 1e9 * device.memory_utilisation)
    names = tuple(layer.name or f"{layer.op}{i}" for i, layer in enumerate(netspec.layers))
    return Workload(
        layer_names=names,
        layer_classes=classes,
        flops=flops,
        bytes_moved=moved,
        compute_cycles=cycles,
        memory_seconds=memory_s,
        dtype=dt,
        device_name=device.name,
        cores=n_cores,
    )


def roofline_latency_ms(
    netspec: NetSpec, device: DeviceProfile, dtype: str = "float32", freq_mhz: float | None = None
) -> float:
    """Roofline latency of ``netspec`` on ``device`` in ms at ``freq_mhz`` (default the fastest OPP)."""
    f = device.max_opp.freq_mhz if freq_mhz is None else freq_mhz
    return workload_of(netspec, device, dtype).latency_s(f) * 1e3


__all__ = ["Workload", "layer_class", "roofline_latency_ms", "workload_of"]
