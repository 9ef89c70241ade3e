"""``fleetnas devices``: the device catalogue and single device profiles.

``fleetnas devices [list]`` tabulates the catalogue; ``fleetnas devices show NAME_OR_PATH`` prints
one profile (a catalogue name or a YAML/JSON file of your own) as YAML under a one-line comment, so
``fleetnas devices show rpi4 > my_board.yaml`` starts a new device file. ``--json`` prints the same
data as JSON (for ``show``, the profile's own JSON form).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from runtime.cli_common import add_json_flag, emit, format_table

if TYPE_CHECKING:
    from runtime.hardware import DeviceProfile

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["register"]

_LIST_COLUMNS = (
    ("name", "name"),
    ("kind", "kind"),
    ("cores", "cores"),
    ("max_freq_mhz", "max MHz"),
    ("peak_fp32_gflops", "peak fp32 GFLOP/s"),
    ("memory_bandwidth_gbps", "bandwidth GB/s"),
)


def register(subparsers: Subparsers) -> None:
    """Add ``fleetnas devices`` with its ``list`` and ``show`` actions."""
    p = subparsers.add_parser(
        "devices",
        help="list the device catalogue or show one device profile",
        description="List the device profiles in the catalogue, or show one profile in full.",
        epilog="examples:\n  fleetnas devices\n  fleetnas devices show rpi4 --json > my_board.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_json_flag(p)
    p.set_defaults(func=_list)
    actions = p.add_subparsers(title="actions", metavar="ACTION", dest="devices_action")

    lp = actions.add_parser("list", help="table of the catalogue devices (the default)")
    add_json_flag(lp, nested=True)
    lp.set_defaults(func=_list)

    sp = actions.add_parser(
        "show",
        help="the full profile of one device",
        description="Show one device profile: a catalogue name or the path of a profile file.",
    )
    sp.add_argument("device", metavar="NAME_OR_PATH", help="catalogue device name or profile file path")
    add_json_flag(sp, nested=True)
    sp.set_defaults(func=_show)


def _summary(profile: DeviceProfile) -> dict[str, Any]:
    """The catalogue row of one profile, in display units."""
    return {
        "name": profile.name,
        "kind": profile.kind,
        "cores": profile.cores,
        "max_freq_mhz": profile.max_opp.freq_mhz,
        "peak_fp32_gflops": _peak_fp32_gflops(profile),
        "memory_bandwidth_gbps": profile.memory_bandwidth_gbps,
    }


def _peak_fp32_gflops(profile: DeviceProfile) -> float | None:
    """Peak float32 GFLOP/s at the fastest OPP, or None for a device without float32 (an int8 MCU)."""
    if "float32" not in profile.supported_dtypes:
        return None
    return round(profile.peak_flops("float32") / 1e9, 3)


def _list(args: argparse.Namespace) -> int:
    """Print the catalogue table (or JSON); return 0."""
    from runtime.hardware import list_devices, load_device

    profiles = [d if not isinstance(d, str) else load_device(d) for d in list_devices()]
    payload = {"devices": [_summary(p) for p in profiles]}

    def human(data: dict[str, Any]) -> str:
        if not data["devices"]:
            return "no devices in the catalogue"
        rows = [[row[key] for key, _ in _LIST_COLUMNS] for row in data["devices"]]
        table = format_table([title for _, title in _LIST_COLUMNS], rows)
        return f"{table}\n\n'fleetnas devices show NAME' prints a full profile."

    emit(args, payload, human)
    return 0


def _show(args: argparse.Namespace) -> int:
    """Print one full profile (or its JSON form); return 0."""
    from runtime.hardware import load_device

    profile = load_device(args.device)
    payload = profile.to_json()
    summary = _summary(profile)

    def human(data: dict[str, Any]) -> str:
        peak = _or_dash(summary["peak_fp32_gflops"])
        head = (
            f"# {summary['name']} ({summary['kind']}): {summary['cores']} cores, "
            f"up to {summary['max_freq_mhz']:g} MHz, peak {peak} GFLOP/s fp32, "
            f"{summary['memory_bandwidth_gbps']:g} GB/s memory bandwidth"
        )
        return f"{head}\n{_as_yaml(data).rstrip()}"

    emit(args, payload, human)
    return 0


class _FlowMap(dict[str, Any]):
    """A mapping to print on one line in YAML."""


class _FlowSeq(list[Any]):
    """A sequence to print on one line in YAML."""


def _one_line(value: Any) -> Any:
    """Mark short collections for one-line YAML; lists of long text stay one item a line."""
    if isinstance(value, dict):
        return _FlowMap(value)
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return [_FlowMap(v) for v in value]
        if any(isinstance(v, str) and len(v) > 30 for v in value):
            return value
        return _FlowSeq(value)
    return value


def _as_yaml(data: dict[str, Any]) -> str:
    """A profile as YAML that reads well and loads back: one line per field, OPP or source."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(
        _FlowMap, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True)
    )
    Dumper.add_representer(
        _FlowSeq, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
    )
    doc = {key: _one_line(value) for key, value in data.items()}
    return yaml.dump(doc, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=110)


def _or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
