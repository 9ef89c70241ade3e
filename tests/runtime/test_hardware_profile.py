"""Device profiles: the shipped catalogue, lookups, power modes, and validation errors."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from runtime.hardware import (
    DeviceProfile,
    DeviceProfileError,
    FrozenMap,
    OperatingPoint,
    list_devices,
    load_device,
)

SHIPPED = {"rpi4", "rk3399_big", "jetson_nano", "orin_nx", "cortex_a76", "stm32h7"}


# ---- the catalogue ---------------------------------------------------------------------------
def test_catalogue_ships_the_documented_devices() -> None:
    assert set(list_devices()) >= SHIPPED
    assert list_devices() == sorted(list_devices())


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_catalogue_device_loads_consistently(name: str) -> None:
    d = load_device(name)
    assert d.name == name
    assert d.sources and all(s.strip() for s in d.sources)
    freqs = [o.freq_mhz for o in d.opps]
    assert freqs == sorted(set(freqs)) and d.max_opp.freq_mhz == freqs[-1] and d.min_opp.freq_mhz == freqs[0]
    assert all(0.5 <= o.voltage_v <= 1.5 for o in d.opps)
    assert 0 <= d.idle_power_w <= d.static_power_w
    assert set(d.utilisation) == {"conv", "depthwise", "linear", "elementwise"}
    for dt in d.supported_dtypes:
        assert d.alignment(dt) >= 1
        assert d.peak_flops(dt) == pytest.approx(d.flops_per_cycle[dt] * d.cores * d.max_opp.freq_mhz * 1e6)
    # JSON round trip gives an equal, equally hashed profile; to_json is plain JSON/YAML data.
    text = json.dumps(d.to_json())
    again = DeviceProfile.from_dict(json.loads(text), source="roundtrip")
    assert again == d and hash(again) == hash(d)
    assert DeviceProfile.from_dict(yaml.safe_load(yaml.safe_dump(d.to_json()))) == d
    for mode in d.power_modes:
        restricted = d.with_power_mode(mode.name)
        assert restricted.cores == mode.cores
        assert restricted.max_opp.freq_mhz <= mode.max_freq_mhz


def test_profiles_are_immutable_and_hashable() -> None:
    d = load_device("rpi4")
    with pytest.raises(AttributeError):
        d.cores = 8  # type: ignore[misc]
    assert isinstance(d.flops_per_cycle, FrozenMap)
    with pytest.raises(TypeError):
        d.flops_per_cycle["float32"] = 16  # type: ignore[index]
    assert {d: 1}[load_device("rpi4")] == 1


def test_rk3399_big_opp_table_and_coefficient_are_the_device_tree_values() -> None:
    d = load_device("rk3399_big")
    assert [(o.freq_mhz, o.voltage_v) for o in d.opps] == [
        (408, 0.80), (600, 0.80), (816, 0.825), (1008, 0.875),
        (1200, 0.95), (1416, 1.025), (1608, 1.10), (1800, 1.20),
    ]  # fmt: skip
    assert d.dynamic_power_coefficient == 436
    assert d.cores == 2 and d.kind == "cpu"


def test_rpi4_peaks_and_opps() -> None:
    d = load_device("rpi4")
    assert [o.freq_mhz for o in d.opps] == [float(f) for f in range(600, 1501, 100)]
    # 4 cores x 8 FLOP/cycle x 1.5 GHz = 48 GFLOP/s; the fp32 alias works too.
    assert d.peak_flops("fp32") == 48e9
    assert d.peak_flops("float32", freq_mhz=600, cores=1) == 8 * 600e6
    assert d.alignment() == 4 and d.alignment("int8") == 16
    with pytest.raises(DeviceProfileError, match=r"'float16'.*allowed: float32, int8, uint8"):
        d.alignment("float16")


def test_cortex_a76_has_fp16_with_alignment_8() -> None:
    d = load_device("cortex_a76")
    assert "float16" in d.supported_dtypes and d.alignment("float16") == 8
    assert d.flops_per_cycle["float16"] == 2 * d.flops_per_cycle["float32"]


def test_stm32h7_is_an_mcu_with_flash_and_sram() -> None:
    d = load_device("stm32h7")
    assert d.kind == "mcu" and d.cores == 1 and d.max_opp.freq_mhz == 480
    assert d.flash_bytes == 2 * 2**20 and d.sram_bytes == 512 * 2**10
    assert set(d.supported_dtypes) == {"int8", "float32"}
    assert d.alignment("int8") == 4 and d.alignment("float32") == 4


def test_opp_at_returns_the_exact_or_next_faster_opp() -> None:
    d = load_device("rk3399_big")
    assert d.opp_at(1200) == OperatingPoint(1200, 0.95)
    assert d.opp_at(1000) == OperatingPoint(1008, 0.875)  # cpufreq rounds a request up
    assert d.opp_at(100) == d.min_opp
    with pytest.raises(DeviceProfileError, match=r"1900 MHz.*408, 600"):
        d.opp_at(1900)


# ---- power modes ------------------------------------------------------------------------------
def test_jetson_nano_power_modes_cap_cores_and_frequency() -> None:
    d = load_device("jetson_nano")
    five = d.with_power_mode("5W")
    assert five.cores == 2 and five.power_mode == "5W"
    assert five.max_opp.freq_mhz == 918
    assert [o.freq_mhz for o in five.opps] == [204, 306, 408, 510, 612, 714, 816, 918]
    maxn = d.with_power_mode("MAXN")
    assert maxn.cores == 4 and maxn.max_opp.freq_mhz == 1479 and len(maxn.opps) == len(d.opps)
    assert d.cores == 4 and d.power_mode is None  # the original is untouched


def test_orin_nx_power_modes() -> None:
    d = load_device("orin_nx")
    expected = {"10W": (4, 1190.4), "15W": (4, 1420.8), "20W": (6, 1497.6), "40W": (6, 1984.0)}
    for name, (cores, fmax) in expected.items():
        r = d.with_power_mode(name)
        assert (r.cores, r.max_opp.freq_mhz) == (cores, fmax)
        assert all(o.freq_mhz <= fmax for o in r.opps)
        assert r.with_power_mode(name) is r  # idempotent
        assert DeviceProfile.from_dict(r.to_json()) == r  # a restricted profile round-trips too
    with pytest.raises(DeviceProfileError, match="already restricted"):
        d.with_power_mode("10W").with_power_mode("40W")
    with pytest.raises(DeviceProfileError, match=r"'25W'.*allowed: 10W, 15W, 20W, 40W"):
        d.with_power_mode("25W")
    with pytest.raises(DeviceProfileError, match="defines none"):
        load_device("rpi4").with_power_mode("MAXN")


# ---- loading from files and names -------------------------------------------------------------
BASE: dict[str, Any] = {
    "name": "toy_board",
    "kind": "cpu",
    "cores": 2,
    "flops_per_cycle": {"float32": 8},
    "memory_bandwidth_gbps": 4.0,
    "opps": [{"freq_mhz": 500, "voltage_v": 0.8}, {"freq_mhz": 1000, "voltage_v": 1.0}],
    "dynamic_power_coefficient": 100,
    "static_power_w": 0.5,
    "ram_bytes": 1 << 30,
}


def _write(tmp_path: Path, data: Any, name: str = "bad_board.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_a_minimal_file_loads_with_documented_defaults(tmp_path: Path) -> None:
    d = load_device(_write(tmp_path, BASE, "toy_board.yaml"))
    assert d.name == "toy_board"
    assert d.idle_power_w == d.static_power_w == 0.5  # idle defaults to static
    assert d.memory_power_w == 0.0 and d.memory_utilisation == 0.7
    assert d.utilisation == {"conv": 0.6, "depthwise": 0.25, "linear": 0.3, "elementwise": 0.15}
    assert d.supported_dtypes == ("float32",) and d.alignment() == 4  # 128-bit SIMD / 32-bit lanes
    assert d.sources == () and d.power_modes == () and d.supported_ops is None
    # Same file by str path, and a JSON file, load identically.
    assert load_device(str(tmp_path / "toy_board.yaml")) == d
    json_path = tmp_path / "toy_board.json"
    json_path.write_text(json.dumps(d.to_json()))
    assert load_device(json_path) == d


def test_partial_utilisation_is_completed_from_defaults(tmp_path: Path) -> None:
    data = {**BASE, "utilisation": {"conv": 0.8}}
    d = DeviceProfile.from_yaml(_write(tmp_path, data))
    assert d.utilisation["conv"] == 0.8 and d.utilisation["depthwise"] == 0.25


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.__setitem__(key, value)


BAD_CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str, str]] = [
    ("unknown key", _set("frequency_ghz", 1.5), "frequency_ghz", "allowed: name, kind"),
    ("missing field", lambda d: d.pop("cores"), "cores", "missing"),
    ("negative bandwidth", _set("memory_bandwidth_gbps", -3), "memory_bandwidth_gbps", "must be > 0"),
    ("unsorted OPPs", lambda d: d["opps"].reverse(), "opps[1].freq_mhz", "sorted by strictly increasing"),
    (
        "duplicate OPP",
        lambda d: d["opps"].append({"freq_mhz": 1000, "voltage_v": 1.1}),
        "opps[2].freq_mhz",
        "duplicates",
    ),
    ("negative voltage", lambda d: d["opps"][1].update(voltage_v=-1.0), "opps[1].voltage_v", "must be > 0"),
    ("OPP missing voltage", lambda d: d["opps"][0].pop("voltage_v"), "opps[0].voltage_v", "missing"),
    (
        "OPP unknown key",
        lambda d: d["opps"][0].update(volts=1),
        "opps[0].volts",
        "allowed: freq_mhz, voltage_v",
    ),
    (
        "bad dtype in flops_per_cycle",
        lambda d: d["flops_per_cycle"].update(bfloat16=16),
        "flops_per_cycle.bfloat16",
        "allowed: float32, float16, int8, uint8",
    ),
    (
        "bad dtype in supported_dtypes",
        _set("supported_dtypes", ["float32", "float64"]),
        "supported_dtypes[1]",
        "allowed: float32, float16, int8, uint8",
    ),
    ("dtype without peak", _set("supported_dtypes", ["int8"]), "supported_dtypes[0]", "flops_per_cycle"),
    ("wrong type", _set("cores", "four"), "cores", "expected an integer"),
    ("bool is not a number", _set("static_power_w", True), "static_power_w", "expected a number"),
    ("unknown kind", _set("kind", "fpga"), "kind", "allowed: cpu, gpu, npu, mcu"),
    ("idle above static", _set("idle_power_w", 1.0), "idle_power_w", "idle must be <= static"),
    ("utilisation above 1", _set("utilisation", {"conv": 1.5}), "utilisation.conv", "must be <= 1"),
    ("unknown layer class", _set("utilisation", {"attention": 0.5}), "utilisation.attention", "depthwise"),
    ("mcu without flash", _set("kind", "mcu"), "flash_bytes", "required for kind 'mcu'"),
    ("flash on a cpu", _set("flash_bytes", 1024), "flash_bytes", "only for kind 'mcu'"),
    (
        "power mode with too many cores",
        _set("power_modes", [{"name": "turbo", "cores": 8, "max_freq_mhz": 1000}]),
        "power_modes[0].cores",
        "exceeds the device's 2 cores",
    ),
    (
        "power mode below the slowest OPP",
        _set("power_modes", [{"name": "eco", "cores": 1, "max_freq_mhz": 100}]),
        "power_modes[0].max_freq_mhz",
        "below the lowest OPP",
    ),
    ("unknown op", _set("supported_ops", ["conv", "attention"]), "supported_ops[1]", "allowed: conv, linear"),
    ("unknown cache level", _set("caches_kb", {"l4": 1}), "caches_kb.l4", "allowed: l1d, l1i, l2, l3, slc"),
    ("empty OPP list", _set("opps", []), "opps", "at least one"),
    ("opps not a list", _set("opps", "fast"), "opps", "expected a list"),
    (
        "YAML exponent read as text",
        _set("memory_bandwidth_gbps", "4.0e9"),
        "memory_bandwidth_gbps",
        "with a sign",
    ),
]


@pytest.mark.parametrize(("case", "mutate", "path", "hint"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_profile_errors_name_the_file_and_field(
    tmp_path: Path, case: str, mutate: Callable[[dict[str, Any]], Any], path: str, hint: str
) -> None:
    data = copy.deepcopy(BASE)
    mutate(data)
    file = _write(tmp_path, data)
    with pytest.raises(DeviceProfileError) as info:
        load_device(file)
    msg = str(info.value)
    assert "bad_board.yaml" in msg, msg
    assert f"field '{path}'" in msg, msg
    assert hint in msg, msg


def test_file_not_found_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_board.yaml"
    with pytest.raises(DeviceProfileError, match=r"no_such_board\.yaml: field '<top level>': file not found"):
        load_device(missing)


@pytest.mark.parametrize("text", ["- just\n- a list\n", "42\n", ""])
def test_not_a_mapping_names_the_file_and_top_level(tmp_path: Path, text: str) -> None:
    with pytest.raises(DeviceProfileError, match=r"bad_board\.yaml: field '<top level>': expected a mapping"):
        load_device(_write(tmp_path, text))


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DeviceProfileError, match=r"bad_board\.yaml: field '<top level>': not valid YAML"):
        load_device(_write(tmp_path, "name: [unclosed\n"))


def test_unknown_catalogue_name_lists_known_devices() -> None:
    with pytest.raises(DeviceProfileError) as info:
        load_device("no_such_board_xyz")
    msg = str(info.value)
    assert "no_such_board_xyz" in msg
    for name in SHIPPED:
        assert name in msg


def test_direct_construction_validates_and_freezes() -> None:
    d = DeviceProfile(
        name="direct",
        kind="npu",
        cores=1,
        flops_per_cycle={"int8": 512},
        memory_bandwidth_gbps=8,
        opps=[OperatingPoint(800, 0.8)],  # type: ignore[arg-type]  # a list is accepted and frozen
        dynamic_power_coefficient=50,
        static_power_w=0.2,
        ram_bytes=1 << 20,
        supported_ops=["conv", "add"],  # type: ignore[arg-type]
    )
    assert d.opps == (OperatingPoint(800.0, 0.8),) and d.supported_ops == ("conv", "add")
    assert isinstance(d.memory_bandwidth_gbps, float) and d.alignment("int8") == 16
    with pytest.raises(DeviceProfileError, match=r"DeviceProfile 'direct': field 'opps\[0\]\.voltage_v'"):
        DeviceProfile(
            name="direct", kind="npu", cores=1, flops_per_cycle={"int8": 512}, memory_bandwidth_gbps=8,
            opps=(OperatingPoint(800, 0.0),), dynamic_power_coefficient=50, static_power_w=0.2,
            ram_bytes=1 << 20,
        )  # fmt: skip


# ---- the optional `measured` section (written by `fleetnas profile`) ----------------------------
MEASURED = {
    "lut": "dev.lut.json",
    "predictor": "dev.predictor.json",
    "roofline": {"peak_gflops": 220.5, "bandwidth_gbps": 12.25},
    "provenance": {
        "machine": "host",
        "cpu": "Some CPU",
        "ort_version": "1.32.0",
        "threads": 0,
        "strategy": "no_spin",
        "date": "2025-01-02T03:04:05+00:00",
        "fleetnas_version": "0.1.0",
        "quick": True,
    },
}


def _measured_profile_dict() -> dict[str, Any]:
    data = load_device("rpi4").to_json()
    data["measured"] = copy.deepcopy(MEASURED)
    return data


def test_profiles_without_measured_keep_their_json_form() -> None:
    d = load_device("rpi4")
    assert d.measured is None and "measured" not in d.to_json()


def test_measured_section_round_trips_through_yaml_and_resolves_paths(tmp_path: Path) -> None:
    d = DeviceProfile.from_dict(_measured_profile_dict(), source="t")
    assert d.measured is not None and d.measured.roofline["peak_gflops"] == 220.5
    assert d.measured.provenance["quick"] is True and d.measured.predictor == "dev.predictor.json"
    path = tmp_path / "sub" / "dev.yaml"
    path.parent.mkdir()
    path.write_text(d.to_yaml())
    again = DeviceProfile.from_yaml(path)
    assert again == d and hash(again) == hash(d)
    assert again.measured is not None
    assert again.measured.resolve(again.measured.lut) == path.parent / "dev.lut.json"
    assert again.measured.resolve("/abs/table.json") == Path("/abs/table.json")
    assert DeviceProfile.from_yaml(_write_yaml(tmp_path, again.to_yaml())) == d  # and once more


def _write_yaml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "again.yaml"
    p.write_text(text)
    return p


def test_unquoted_yaml_date_and_version_are_read_as_text(tmp_path: Path) -> None:
    text = yaml.safe_dump(_measured_profile_dict())
    text = text.replace("'2025-01-02T03:04:05+00:00'", "2025-01-02 03:04:05").replace(
        "fleetnas_version: 0.1.0", "fleetnas_version: 0.2"
    )
    d = DeviceProfile.from_yaml(_write_yaml(tmp_path, text))
    assert d.measured is not None
    assert d.measured.provenance["date"] == "2025-01-02T03:04:05"
    assert d.measured.provenance["fleetnas_version"] == "0.2"


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda m: m.update(extra=1), r"field 'measured.extra': unknown key; allowed: lut, predictor"),
        (lambda m: m.pop("lut"), r"field 'measured.lut': missing"),
        (lambda m: m["roofline"].pop("bandwidth_gbps"), r"field 'measured.roofline.bandwidth_gbps': missing"),
        (lambda m: m["roofline"].update(peak_gflops=-1), r"field 'measured.roofline.peak_gflops': must be > 0"),
        (lambda m: m["provenance"].pop("date"), r"field 'measured.provenance.date': missing"),
        (lambda m: m["provenance"].update(colour="red"), r"field 'measured.provenance.colour': unknown key"),
        (lambda m: m["provenance"].update(threads="two"), r"field 'measured.provenance.threads': expected an integer"),
        (lambda m: m["provenance"].update(quick="yes"), r"field 'measured.provenance.quick': expected true or false"),
        (lambda m: m.update(lut=""), r"field 'measured.lut': expected a non-empty string"),
    ],
)
def test_bad_measured_sections_name_the_dotted_field(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], Any], pattern: str
) -> None:
    data = _measured_profile_dict()
    mutate(data["measured"])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(DeviceProfileError, match=str(path).replace("\\", "\\\\") + ": " + pattern):
        DeviceProfile.from_yaml(path)
