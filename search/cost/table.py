"""Vectorised costing of a MobileNetV3 space: many encodings per call, no NetSpec per arch.

A block's cost depends only on (resolution, width, stage, position, kernel, expand): its input
channels and spatial size are fixed by the stage it sits in, not by the other choices. So we cost
every such block variant once — through the same NetSpec path as ``search.cost.report``, so both
agree exactly — and an architecture's cost is a gather-and-sum over its active blocks (peak
memory is a max, since a block's live tensors never outlive the next block). This is what makes
costing hundreds of thousands of architectures per second on one core possible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime.energy import energy_from_split
from runtime.hardware import DeviceProfile, OperatingPoint
from runtime.hardware.workload import workload_of
from runtime.netspec import DTYPE_BYTES, NetSpec
from search.arch import Arch
from search.builder import NetBuilder
from search.cost.memory import critical_path, peak_activation_bytes
from search.space.mobilenetv3 import MobileNetV3Space

ADDITIVE = ("macs", "flops", "params", "weight_bytes", "bytes_moved", "critical_path_layers")
TIMED = ("latency_s", "t_mem_s", "cycles")
PEAK = "peak_activation_bytes"


def _fragment_metrics(
    net: NetSpec, dtype: str, device: DeviceProfile | None, opp: OperatingPoint | None
) -> dict[str, float]:
    c = net.cost_arrays()
    nbytes = DTYPE_BYTES[dtype]
    out = {
        "macs": float(c["macs"].sum()),
        "flops": float(c["flops"].sum()),
        "params": float(c["params"].sum()),
        "weight_bytes": float(c["weight_elems"].sum() * nbytes),
        "bytes_moved": float((c["weight_elems"] + c["input_elems"] + c["output_elems"]).sum() * nbytes),
        "critical_path_layers": critical_path(net),
        PEAK: float(peak_activation_bytes(net, dtype)),
    }
    if device is not None and opp is not None:
        work = workload_of(net, device, dtype)
        t_mem, cycles = work.split(opp.freq_mhz)
        out.update(latency_s=float(work.latency_s(opp.freq_mhz)), t_mem_s=float(t_mem), cycles=float(cycles))
    return out


class SpaceCostTable:
    """Per-block cost tables of a MobileNetV3 space for one device (optional), dtype and OPP.

    ``evaluate(codes)`` returns a dict of ``(n,)`` arrays: macs, flops, params, weight_bytes,
    bytes_moved, arithmetic_intensity, peak_activation_bytes, critical_path_layers and, with a
    device, latency_ms, energy_mj (at ``opp``, idle energy up to ``deadline_s`` if given).
    """

    def __init__(
        self,
        space: MobileNetV3Space,
        device: DeviceProfile | None = None,
        dtype: str = "float32",
        opp: OperatingPoint | None = None,
        alignment: int | None = None,
        deadline_s: float | None = None,
    ) -> None:
        self.space = space
        self.device = device
        self.dtype = dtype
        self.opp = (opp or device.max_opp) if device is not None else None
        self.alignment = alignment or (device.alignment(dtype) if device is not None else 8)
        self.deadline_s = deadline_s
        self.metrics = ADDITIVE + (TIMED if device is not None else ()) + (PEAK,)
        self._col = {m: i for i, m in enumerate(self.metrics)}
        self._build()

    def _row(self, net: NetSpec) -> np.ndarray:
        values = _fragment_metrics(net, self.dtype, self.device, self.opp)
        return np.array([values[m] for m in self.metrics])

    def _build(self) -> None:
        sp, c = self.space, self.space.config
        R, W, S, D = len(c.resolutions), len(c.widths), sp.num_stages, sp.max_depth
        K, E, M = len(c.kernels), len(c.expands), len(self.metrics)
        self.fixed = np.zeros((R, W, M))
        self.blocks = np.zeros((R, W, S, D, K, E, M))
        for r, res in enumerate(c.resolutions):
            for w, width in enumerate(c.widths):
                ch = sp.channels(width, self.alignment)
                stem = NetBuilder((c.in_channels, res, res), dtype=self.dtype)
                stem.conv(ch["stem"], 3, c.stem_stride, act="hswish")
                if ch["first"]:
                    stem.inverted_residual(ch["first"], 3, 1, stem.channels, "relu", None)
                stem_net = stem.build()
                shape = stem_net.output_shape
                self.fixed[r, w] = self._row(stem_net)
                for s in range(S):
                    for j in range(D):
                        stride = c.stage_strides[s] if j == 0 else 1
                        for k, kernel in enumerate(c.kernels):
                            for e, expand in enumerate(c.expands):
                                mid, reduced = sp.block_mid(shape[0], expand, self.alignment)
                                blk = NetBuilder(shape, dtype=self.dtype)
                                blk.inverted_residual(
                                    ch["stages"][s],
                                    kernel,
                                    stride,
                                    mid,
                                    c.stage_acts[s],
                                    reduced if c.stage_se[s] else None,
                                )
                                net = blk.build()
                                self.blocks[r, w, s, j, k, e] = self._row(net)
                        if j == 0:
                            shape = net.output_shape  # later blocks of the stage see this shape
                head = NetBuilder(shape, dtype=self.dtype)
                head.classifier_head(c.num_classes, last_conv=ch["head"], hidden=ch["feature"], act="hswish")
                head_row = self._row(head.build())
                additive = self._additive_mask().astype(bool)
                self.fixed[r, w, additive] += head_row[additive]
                self.fixed[r, w, ~additive] = np.maximum(self.fixed[r, w, ~additive], head_row[~additive])
        self._flat_blocks = self.blocks.reshape(-1, M)

    def _additive_mask(self) -> np.ndarray:
        return np.array([m != PEAK for m in self.metrics], dtype=float)

    def evaluate(self, codes: np.ndarray, chunk: int = 16384) -> dict[str, np.ndarray]:
        """Costs of every row of ``codes`` (``(n, L)`` encodings of this space)."""
        sp = self.space
        arr = sp.check_codes(codes)
        n = arr.shape[0]
        totals = np.empty((n, len(self.metrics)))
        S, D = sp.num_stages, sp.max_depth
        K, E = self.blocks.shape[4], self.blocks.shape[5]
        slot = np.arange(S * D)
        peak = self._col[PEAK]
        additive = self._additive_mask().astype(bool)
        for start in range(0, n, chunk):
            rows = arr[start : start + chunk]
            r, w = rows[:, 0], rows[:, 1]
            k = rows[:, sp.kernel_offset : sp.kernel_offset + S * D]
            e = rows[:, sp.expand_offset : sp.expand_offset + S * D]
            # flat index into blocks[r, w, s, j, k, e] with (s, j) = slot
            base = ((r * self.blocks.shape[1] + w) * (S * D))[:, None] + slot[None, :]
            flat = (base * K + k) * E + e
            active = sp.active_slots(rows).reshape(rows.shape[0], S * D)
            gathered = self._flat_blocks[flat]  # (m, S*D, M)
            fixed = self.fixed[r, w]
            sums = (gathered[:, :, additive] * active[:, :, None]).sum(axis=1) + fixed[:, additive]
            block_peak = np.where(active, gathered[:, :, peak], 0.0).max(axis=1)
            out = totals[start : start + chunk]
            out[:, additive] = sums
            out[:, peak] = np.maximum(block_peak, fixed[:, peak])
        result = {m: totals[:, i] for i, m in enumerate(self.metrics)}
        result["arithmetic_intensity"] = result["flops"] / result["bytes_moved"]
        if self.device is not None and self.opp is not None:
            result["latency_ms"] = result.pop("latency_s") * 1e3
            energy = energy_from_split(
                result.pop("t_mem_s"), result.pop("cycles"), self.device, self.opp, deadline_s=self.deadline_s
            )
            result["energy_mj"] = energy * 1e3
        return result

    def evaluate_archs(self, archs: Sequence[Arch]) -> dict[str, np.ndarray]:
        """Costs of a list of Archs of this space."""
        return self.evaluate(self.space.encode_batch(archs))
