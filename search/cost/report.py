"""Cost of one NetSpec: counts, memory, roofline latency and DVFS energy, per layer and in total.

This is the scalar, readable path; ``search.cost.table`` is the vectorised one for search and is
tested against this module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from runtime.energy import EnergyEstimate, estimate
from runtime.hardware import DeviceProfile, OperatingPoint
from runtime.hardware.workload import workload_of
from runtime.netspec import DTYPE_BYTES, NetSpec
from search.cost.memory import critical_path, peak_activation_bytes


@dataclass(frozen=True)
class LayerRow:
    """One layer of the breakdown (latency fields are None without a device)."""

    name: str
    op: str
    out_shape: tuple[int, int, int]
    macs: int
    flops: int
    params: int
    bytes_moved: int
    arithmetic_intensity: float
    latency_ms: float | None = None
    bound: str | None = None  # "compute" or "memory" on the device


@dataclass(frozen=True)
class CostReport:
    """Totals for a network (and, with a device, latency/energy at one operating point)."""

    name: str
    dtype: str
    macs: int
    flops: int
    params: int
    weight_bytes: int
    activation_bytes: int  # inputs + outputs read/written by all layers
    bytes_moved: int  # weights + activations, each touched once (roofline lower bound)
    arithmetic_intensity: float  # FLOPs per byte moved
    peak_activation_bytes: int
    critical_path_layers: int
    layers: tuple[LayerRow, ...]
    device: str | None = None
    freq_mhz: float | None = None
    latency_ms: float | None = None
    critical_path_ms: float | None = None
    energy_mj: float | None = None
    power_w: float | None = None
    edp_mj_ms: float | None = None

    def to_json(self, per_layer: bool = False) -> dict[str, Any]:
        """JSON-ready dict; the per-layer breakdown only when asked (it is long)."""
        out = asdict(self)
        out["layers"] = [asdict(r) for r in self.layers] if per_layer else len(self.layers)
        return out


def cost_netspec(
    net: NetSpec,
    device: DeviceProfile | None = None,
    dtype: str | None = None,
    opp: OperatingPoint | None = None,
    deadline_s: float | None = None,
) -> CostReport:
    """Cost ``net`` (in ``dtype``, default the net's own); with a device add roofline latency and energy.

    The operating point defaults to the device's fastest; ``deadline_s`` adds idle energy until
    the deadline (see ``runtime.energy``).
    """
    dtype = dtype or net.dtype
    nbytes = DTYPE_BYTES[dtype]
    c = net.cost_arrays()
    moved = (c["weight_elems"] + c["input_elems"] + c["output_elems"]) * nbytes
    flops_total = int(c["flops"].sum())
    latencies: np.ndarray | None = None
    bounds: list[str | None] = [None] * len(net.layers)
    extra: dict[str, Any] = {}
    if device is not None:
        opp = opp or device.max_opp
        work = workload_of(net, device, dtype)
        latencies = work.layer_latency_s(opp.freq_mhz)
        compute_s = work.compute_cycles / (opp.freq_mhz * 1e6)
        bounds = ["compute" if cs >= ms else "memory" for cs, ms in zip(compute_s, work.memory_seconds, strict=True)]
        energy: EnergyEstimate = estimate(work, device, opp, deadline_s=deadline_s)
        extra = {
            "device": device.name,
            "freq_mhz": opp.freq_mhz,
            "latency_ms": float(latencies.sum() * 1e3),
            "critical_path_ms": critical_path(net, latencies) * 1e3,
            "energy_mj": energy.energy_j * 1e3,
            "power_w": energy.power_w,
            "edp_mj_ms": energy.energy_j * 1e3 * energy.latency_s * 1e3,
        }
    rows = tuple(
        LayerRow(
            name=layer.name or f"{layer.op}{i}",
            op=layer.op,
            out_shape=net.shapes[i],
            macs=int(c["macs"][i]),
            flops=int(c["flops"][i]),
            params=int(c["params"][i]),
            bytes_moved=int(moved[i]),
            arithmetic_intensity=float(c["flops"][i] / moved[i]) if moved[i] else 0.0,
            latency_ms=None if latencies is None else float(latencies[i] * 1e3),
            bound=bounds[i],
        )
        for i, layer in enumerate(net.layers)
    )
    return CostReport(
        name=net.name,
        dtype=dtype,
        macs=int(c["macs"].sum()),
        flops=flops_total,
        params=int(c["params"].sum()),
        weight_bytes=int(c["weight_elems"].sum() * nbytes),
        activation_bytes=int((c["input_elems"].sum() + c["output_elems"].sum()) * nbytes),
        bytes_moved=int(moved.sum()),
        arithmetic_intensity=flops_total / int(moved.sum()),
        peak_activation_bytes=peak_activation_bytes(net, dtype),
        critical_path_layers=int(critical_path(net)),
        layers=rows,
        **extra,
    )
