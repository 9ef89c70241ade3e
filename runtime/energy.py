"""DVFS-aware energy per inference, and the choice of operating point under a deadline.

The model, per inference at an operating point (f, V):

    t(f)   = t_mem + cycles / f                       roofline latency (see runtime.hardware.workload)
    a(f)   = (cycles / f) / t(f)                      fraction of t the cores compute
    P(f)   = k V^2 f a(f) + P_static + P_mem          k = dynamic_power_coefficient x active cores
    E(f)   = P(f) t(f) + P_idle (deadline - t(f))     idle term only with a deadline, and only if met

``k`` follows Linux's ``dynamic-power-coefficient`` convention: uW per MHz per V^2 per core, so
``k V^2 f`` is in uW (converted to W here). The dynamic energy ``k V^2 f a t = k V^2 cycles``
does not depend on f at a fixed voltage: lowering f only pays off through a lower V. The static
and memory terms grow with t, and idle time until the deadline costs only ``P_idle <= P_static``.
That trade-off is what ``optimal_opp`` resolves.

Every function is vectorised over operating points (``estimate_all``) or over many workloads
given as ``(t_mem, cycles)`` arrays (``energy_from_split``, used by the vectorised search costs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from runtime.hardware.profile import DeviceProfile, OperatingPoint
from runtime.hardware.workload import Workload, workload_of
from runtime.metrics import edp
from runtime.netspec import NetSpec

_UW = 1e-6  # uW -> W


@dataclass(frozen=True)
class EnergyEstimate:
    """One inference at one OPP: latency (s), average active power (W), energy (J) and EDP (J*s).

    ``energy_j`` includes ``idle_energy_j`` (idle power from the end of the inference to the
    deadline, 0 without a deadline or when it is missed); ``power_w`` is the average power while
    the inference runs; ``edp`` is ``energy_j * latency_s``; ``feasible`` says the deadline is met
    (always True without one).
    """

    freq_mhz: float
    voltage_v: float
    latency_s: float
    power_w: float
    energy_j: float
    idle_energy_j: float
    edp: float
    feasible: bool
    activity: float  # fraction of the latency the cores compute (the rest waits on memory)

    @property
    def active_energy_j(self) -> float:
        """Energy of the inference itself (without the idle tail)."""
        return self.energy_j - self.idle_energy_j


@dataclass(frozen=True)
class OppChoice:
    """The chosen operating point, its estimate, whether the deadline is met, and why.

    When no OPP meets the deadline, ``feasible`` is False and ``opp`` is the fastest OPP (the
    best one can do); ``fastest_latency_s`` is the lowest latency any OPP reaches.
    """

    opp: OperatingPoint
    estimate: EnergyEstimate
    feasible: bool
    fastest_latency_s: float
    reason: str
    deadline_s: float | None = None


def _check_deadline(deadline_s: float | None) -> float | None:
    if deadline_s is None:
        return None
    d = float(deadline_s)
    if not math.isfinite(d) or d <= 0:
        raise ValueError(f"deadline_s must be a positive number of seconds or None, got {deadline_s!r}")
    return d


def _check_pair(workload: Workload, device: DeviceProfile) -> None:
    if workload.device_name and workload.device_name != device.name:
        raise ValueError(
            f"the workload was built for device {workload.device_name!r}, not {device.name!r}; "
            "rebuild it with workload_of(net, device)"
        )
    if workload.cores > device.cores:
        raise ValueError(
            f"the workload uses {workload.cores} cores but {device.name} has {device.cores} online"
        )


def _model(
    t_mem: np.ndarray,
    cycles: np.ndarray,
    freq_mhz: np.ndarray,
    voltage_v: np.ndarray,
    device: DeviceProfile,
    cores: int,
    deadline_s: float | None,
) -> dict[str, np.ndarray]:
    """The energy model on broadcastable arrays; returns latency, power, energy, idle, feasible, activity."""
    f = np.asarray(freq_mhz, dtype=np.float64)
    volts = np.asarray(voltage_v, dtype=np.float64)
    busy = np.asarray(cycles, dtype=np.float64) / (f * 1e6)
    t = np.asarray(t_mem, dtype=np.float64) + busy
    activity = np.divide(busy, t, out=np.zeros(np.broadcast(busy, t).shape), where=t > 0)
    k_w = device.dynamic_power_coefficient * cores * _UW  # W per (MHz * V^2)
    power = k_w * volts**2 * f * activity + device.static_power_w + device.memory_power_w
    active = power * t
    if deadline_s is None:
        feasible = np.ones(t.shape, dtype=bool)
        idle = np.zeros(t.shape)
    else:
        feasible = t <= deadline_s
        idle = np.where(feasible, device.idle_power_w * (deadline_s - t), 0.0)
    return {
        "latency": t,
        "power": power,
        "energy": active + idle,
        "idle": idle,
        "feasible": feasible,
        "activity": activity,
    }


def energy_from_split(
    t_mem_s: np.ndarray | float,
    cycles: np.ndarray | float,
    device: DeviceProfile,
    opp: OperatingPoint,
    deadline_s: float | None = None,
    cores: int | None = None,
) -> np.ndarray:
    """Energy in joules per inference for many workloads given by their ``(t_mem, cycles)`` split at ``opp``.

    ``cores`` defaults to all of the device's cores (as ``workload_of`` does). The split must
    have been taken at ``opp.freq_mhz`` (``Workload.split``) for the roofline to hold.
    """
    n = device.cores if cores is None else cores
    terms = _model(
        np.asarray(t_mem_s, dtype=np.float64),
        np.asarray(cycles, dtype=np.float64),
        np.asarray(opp.freq_mhz, dtype=np.float64),
        np.asarray(opp.voltage_v, dtype=np.float64),
        device,
        n,
        _check_deadline(deadline_s),
    )
    return terms["energy"]


def _estimates(
    workload: Workload, device: DeviceProfile, opps: tuple[OperatingPoint, ...], deadline_s: float | None
) -> list[EnergyEstimate]:
    _check_pair(workload, device)
    deadline = _check_deadline(deadline_s)
    freqs = np.array([o.freq_mhz for o in opps], dtype=np.float64)
    volts = np.array([o.voltage_v for o in opps], dtype=np.float64)
    t_mem, cycles = workload.split_many(freqs)
    m = _model(t_mem, cycles, freqs, volts, device, workload.cores, deadline)
    return [
        EnergyEstimate(
            freq_mhz=float(freqs[i]),
            voltage_v=float(volts[i]),
            latency_s=float(m["latency"][i]),
            power_w=float(m["power"][i]),
            energy_j=float(m["energy"][i]),
            idle_energy_j=float(m["idle"][i]),
            edp=float(edp(m["energy"][i], m["latency"][i])),
            feasible=bool(m["feasible"][i]),
            activity=float(m["activity"][i]),
        )
        for i in range(len(opps))
    ]


def estimate(
    workload: Workload, device: DeviceProfile, opp: OperatingPoint, deadline_s: float | None = None
) -> EnergyEstimate:
    """Latency, power and energy of one inference of ``workload`` at ``opp`` (idle up to ``deadline_s``)."""
    return _estimates(workload, device, (opp,), deadline_s)[0]


def estimate_all(
    workload: Workload, device: DeviceProfile, deadline_s: float | None = None
) -> list[EnergyEstimate]:
    """One ``EnergyEstimate`` per device OPP, slowest first (computed in one vectorised pass)."""
    return _estimates(workload, device, device.opps, deadline_s)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.4g} ms"


def _choose(workload: Workload, device: DeviceProfile, deadline_s: float | None, criterion: str) -> OppChoice:
    ests = estimate_all(workload, device, deadline_s)
    deadline = _check_deadline(deadline_s)
    latency = np.array([e.latency_s for e in ests])
    fastest = int(np.flatnonzero(latency == latency.min())[-1])  # the highest frequency among the fastest
    feasible = [i for i, e in enumerate(ests) if e.feasible]
    if not feasible:
        # Only reachable with a deadline: without one every OPP is feasible.
        e, d = ests[fastest], float(deadline or 0.0)
        reason = (
            f"no OPP meets the {_ms(d)} deadline: the fastest, {e.freq_mhz:g} MHz, takes "
            f"{_ms(e.latency_s)} ({e.latency_s / d:.2f}x the deadline); running there"
        )
        return OppChoice(device.opps[fastest], e, False, e.latency_s, reason, deadline)
    value = np.array([ests[i].energy_j if criterion == "energy" else ests[i].edp for i in feasible])
    best_value = value.min()
    # Ties (e.g. equal voltages on a fully memory-bound net) go to the faster OPP: same cost, more slack.
    tied = [feasible[j] for j in np.flatnonzero(value <= best_value * (1 + 1e-12))]
    best = max(tied, key=lambda i: ests[i].freq_mhz)
    e = ests[best]
    what = "energy" if criterion == "energy" else "energy-delay product"
    amount = f"{e.energy_j * 1e3:.4g} mJ" if criterion == "energy" else f"{e.edp * 1e6:.4g} mJ*ms"
    scope = (
        f"the {len(feasible)} of {len(ests)} OPPs that meet the {_ms(deadline)} deadline"
        if deadline is not None
        else f"all {len(ests)} OPPs (no deadline)"
    )
    reason = (
        f"{e.freq_mhz:g} MHz at {e.voltage_v:g} V: lowest {what} ({amount}, {_ms(e.latency_s)}) among {scope}"
    )
    return OppChoice(device.opps[best], e, True, float(latency.min()), reason, deadline)


def optimal_opp(workload: Workload, device: DeviceProfile, deadline_s: float | None) -> OppChoice:
    """The lowest-energy OPP meeting ``deadline_s`` (idle energy included); never raises if none does.

    With no feasible OPP the choice is the fastest one, ``feasible=False`` and a ``reason``.
    """
    return _choose(workload, device, deadline_s, "energy")


def min_edp_opp(workload: Workload, device: DeviceProfile, deadline_s: float | None = None) -> OppChoice:
    """The OPP with the lowest energy-delay product among those meeting ``deadline_s`` (cf. optimal_opp)."""
    return _choose(workload, device, deadline_s, "edp")


def dominated_opps(device: DeviceProfile) -> tuple[OperatingPoint, ...]:
    """OPPs that can never be energy-optimal: a faster OPP runs at the same or a lower voltage.

    Why: at fixed V the dynamic energy ``k V^2 cycles`` does not depend on f, and a faster clock
    shortens t, so static and memory energy ``(P_static + P_mem) t`` shrink while the idle tail
    ``P_idle (deadline - t)`` grows by less (profiles guarantee ``P_idle <= P_static``). A lower
    voltage only cuts the dynamic term further, and a faster OPP meets every deadline the slower
    one meets. So the faster OPP costs no more energy in every case (race to idle); on an exact
    tie ``optimal_opp`` picks the faster one, so a dominated OPP is never chosen.
    """
    volts = np.array([o.voltage_v for o in device.opps])
    # Minimum voltage over the strictly faster OPPs (OPPs are sorted by frequency).
    faster_min = np.append(np.minimum.accumulate(volts[::-1])[::-1][1:], np.inf)
    return tuple(o for o, vmin in zip(device.opps, faster_min, strict=True) if vmin <= o.voltage_v)


def energy_per_inference(
    netspec: NetSpec,
    device: DeviceProfile,
    dtype: str = "float32",
    opp: OperatingPoint | None = None,
    deadline_s: float | None = None,
) -> EnergyEstimate:
    """Energy, latency and power of one inference of ``netspec`` at ``opp`` (default the fastest OPP)."""
    return estimate(workload_of(netspec, device, dtype), device, opp or device.max_opp, deadline_s)


__all__ = [
    "EnergyEstimate",
    "OppChoice",
    "dominated_opps",
    "energy_from_split",
    "energy_per_inference",
    "estimate",
    "estimate_all",
    "min_edp_opp",
    "optimal_opp",
]
