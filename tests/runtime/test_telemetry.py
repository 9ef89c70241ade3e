"""Telemetry: sources (psutil, sysfs cpufreq, traces, manual), validation and EMA smoothing."""

from __future__ import annotations

import json
import math
import threading
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from runtime.telemetry import (
    SIGNAL_FIELDS,
    ManualSource,
    PsutilSource,
    Sampler,
    Signals,
    TelemetryError,
    TelemetrySource,
    TelemetryWarning,
    ThermalStatus,
    TraceSource,
    load_trace,
    read_cpufreq_mhz,
    validate_signals,
    write_trace,
)

TRACES = Path(__file__).resolve().parents[1] / "data" / "traces"
GiB = 1024**3


# ---- helpers --------------------------------------------------------------------------------------


class ListSource:
    """Returns the given readings in order (the last one forever)."""

    def __init__(self, readings: list[Signals]) -> None:
        self.readings = list(readings)
        self.i = 0

    def read(self) -> Signals:
        r = self.readings[min(self.i, len(self.readings) - 1)]
        self.i += 1
        return r


class FakePsutil:
    """The parts of psutil that PsutilSource uses, scripted."""

    def __init__(self, cpu_values: list[float], battery: Any = None, temps: Any = None) -> None:
        self.cpu_values = list(cpu_values)
        self.cpu_calls = 0
        self._battery = battery
        self._temps = {} if temps is None else temps

    def cpu_percent(self, interval: float | None = None) -> float:
        assert interval is None  # the source must never block
        value = self.cpu_values[min(self.cpu_calls, len(self.cpu_values) - 1)]
        self.cpu_calls += 1
        return value

    def virtual_memory(self) -> Any:
        return SimpleNamespace(available=3 * GiB, percent=42.5, total=8 * GiB)

    def sensors_battery(self) -> Any:
        if isinstance(self._battery, Exception):
            raise self._battery
        return self._battery

    def sensors_temperatures(self) -> Any:
        return self._temps


def temp(current: float) -> Any:
    return SimpleNamespace(label="", current=current, high=None, critical=None)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# ---- Signals --------------------------------------------------------------------------------------


def test_signals_fields_default_to_missing_and_round_trip_to_dict() -> None:
    s = Signals(t=1.5, battery_percent=80.0)
    assert SIGNAL_FIELDS[0] == "t" and len(SIGNAL_FIELDS) == 9
    assert s.cpu_percent is None and s.plugged is None and s.thermal_status is None
    assert Signals(**s.to_dict()) == s
    assert ThermalStatus.SEVERE == 3 and ThermalStatus.SHUTDOWN == 6


# ---- PsutilSource ---------------------------------------------------------------------------------


def test_psutil_source_on_this_machine() -> None:
    src = PsutilSource()
    assert isinstance(src, TelemetrySource)
    first = src.read()
    assert first.cpu_percent is None  # the first reading in a thread is discarded
    second = src.read()
    assert second.cpu_percent is not None and 0.0 <= second.cpu_percent <= 100.0
    assert second.t >= first.t
    assert second.mem_available_bytes is not None and second.mem_available_bytes > 0
    assert second.mem_percent is not None and 0.0 <= second.mem_percent <= 100.0
    battery = psutil.sensors_battery()
    if battery is None:  # this VM: no battery must mean None fields, not a crash
        assert second.battery_percent is None and second.plugged is None
    else:
        assert second.battery_percent == pytest.approx(battery.percent, abs=1.0)
    assert second.temperature_c is None or -40 <= second.temperature_c <= 150
    assert second.cpu_freq_mhz is None or second.cpu_freq_mhz > 0
    assert second.thermal_status is None
    # whatever this machine has, the reading passes validation untouched
    assert validate_signals(second) == (second, ())


def test_psutil_source_discards_the_first_cpu_reading_per_thread() -> None:
    # 99.9 stands for psutil's meaningless first value; a correct source never reports it.
    fake = FakePsutil([99.9, 12.5, 99.9, 30.0])
    src = PsutilSource(psutil_module=fake, clock=lambda: 7.0, sysfs_root="/nonexistent")
    first = src.read()
    second = src.read()
    assert fake.cpu_calls == 2  # the first call is made (to start psutil's interval), not skipped
    assert first.cpu_percent is None
    assert second.cpu_percent == 12.5
    assert second.t == 7.0
    # psutil keeps the baseline per thread: another thread's first reading is discarded too
    out: list[Signals] = []
    worker = threading.Thread(target=lambda: out.extend([src.read(), src.read()]))
    worker.start()
    worker.join()
    assert [s.cpu_percent for s in out] == [None, 30.0]


def test_psutil_source_battery_and_temperature_variants() -> None:
    bat = SimpleNamespace(percent=64.0, secsleft=1000, power_plugged=True)
    temps = {
        "cpu_thermal": [temp(47.5), temp(float("nan"))],
        "acpitz": [temp(255.0), temp(-273.0)],  # unconnected sensors: ignored, not the max
        "nvme": [temp(52.0)],
    }
    s = PsutilSource(psutil_module=FakePsutil([0.0], battery=bat, temps=temps), sysfs_root="/none").read()
    assert s.battery_percent == 64.0 and s.plugged is True
    assert s.temperature_c == 52.0
    assert s.mem_available_bytes == 3 * GiB and s.mem_percent == 42.5

    unknown_plug = SimpleNamespace(percent=20, secsleft=-1, power_plugged=None)
    s = PsutilSource(psutil_module=FakePsutil([0.0], battery=unknown_plug), sysfs_root="/none").read()
    assert s.battery_percent == 20.0 and s.plugged is None and s.temperature_c is None

    s = PsutilSource(psutil_module=FakePsutil([0.0], battery=RuntimeError("no ACPI")), sysfs_root="/none").read()
    assert s.battery_percent is None and s.plugged is None


def test_psutil_source_without_optional_sensor_functions() -> None:
    class Minimal:  # e.g. a platform where psutil has no sensors_* at all
        def cpu_percent(self, interval: float | None = None) -> float:
            return 5.0

        def virtual_memory(self) -> Any:
            return SimpleNamespace(available=GiB, percent=10.0)

    src = PsutilSource(psutil_module=Minimal(), sysfs_root="/none")
    src.read()
    s = src.read()
    assert (s.battery_percent, s.plugged, s.temperature_c, s.cpu_percent) == (None, None, None, 5.0)


# ---- cpufreq --------------------------------------------------------------------------------------


def fake_sysfs(root: Path, cpu: int, content: str) -> None:
    d = root / "devices" / "system" / "cpu" / f"cpu{cpu}" / "cpufreq"
    d.mkdir(parents=True)
    (d / "scaling_cur_freq").write_text(content)


def test_read_cpufreq_from_a_fake_sysfs_tree(tmp_path: Path) -> None:
    fake_sysfs(tmp_path, 0, "1416000\n")  # kHz, as Linux writes it
    fake_sysfs(tmp_path, 1, "garbage\n")
    fake_sysfs(tmp_path, 2, "0\n")
    assert read_cpufreq_mhz(0, tmp_path) == 1416.0
    assert read_cpufreq_mhz(1, tmp_path) is None
    assert read_cpufreq_mhz(2, tmp_path) is None
    assert read_cpufreq_mhz(3, tmp_path) is None  # not exposed
    assert read_cpufreq_mhz(0, tmp_path / "missing") is None
    with pytest.raises(ValueError, match="cpu"):
        read_cpufreq_mhz(-1, tmp_path)
    s = PsutilSource(psutil_module=FakePsutil([0.0]), sysfs_root=tmp_path).read()
    assert s.cpu_freq_mhz == 1416.0


# ---- trace files ----------------------------------------------------------------------------------


def test_csv_trace_parsing(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "t.csv",
        "# a comment line\n"
        "t, battery_percent,plugged,thermal_status,mem_available_bytes,temperature_c\n"
        "0,90,true,0,2147483648,40.5\n"
        "\n"
        "1.5,,FALSE,2.0,,nan\n"
        "3,80,no\n",  # a short row: the remaining fields are missing
    )
    samples = load_trace(p)
    assert samples[0] == Signals(
        t=0.0, battery_percent=90.0, plugged=True, thermal_status=0, mem_available_bytes=2 * GiB, temperature_c=40.5
    )
    assert samples[1].battery_percent is None and samples[1].plugged is False
    assert samples[1].thermal_status == 2 and isinstance(samples[1].thermal_status, int)
    assert samples[1].temperature_c is not None and math.isnan(samples[1].temperature_c)  # the Sampler drops it
    assert samples[2] == Signals(t=3.0, battery_percent=80.0, plugged=False)


def test_json_trace_parsing_both_forms_and_round_trip(tmp_path: Path) -> None:
    rows = [{"t": 0, "battery_percent": 50, "plugged": False}, {"t": 2, "cpu_percent": 12.5, "plugged": None}]
    a = load_trace(write(tmp_path, "a.json", json.dumps(rows)))
    b = load_trace(write(tmp_path, "b.json", json.dumps({"samples": rows, "meta": {"device": "rpi4"}})))
    assert a == b == (Signals(t=0.0, battery_percent=50.0, plugged=False), Signals(t=2.0, cpu_percent=12.5))
    for suffix in (".csv", ".json"):
        full = Signals(1.0, 55.5, True, 12.0, 123456789, 61.25, 48.0, 1, 1800.0)
        out = write_trace(tmp_path / f"rt{suffix}", [full, Signals(t=2.0)])
        assert load_trace(out) == (full, Signals(t=2.0))


def test_shipped_traces_load() -> None:
    for name in ("battery_drain", "cpu_spikes", "thermal_event", "charger_plugged"):
        samples = load_trace(TRACES / f"{name}.csv")
        assert len(samples) > 10 and all(validate_signals(s)[1] == () for s in samples)


@pytest.mark.parametrize(
    ("name", "text", "fragments"),
    [
        ("unknown.csv", "t,battery\n0,1\n", ["header (line 1)", "'battery'", "unknown column", "allowed"]),
        ("nonnum.csv", "t,cpu_percent\n0,10\n1,abc\n", ["row 2 (line 3)", "'cpu_percent'", "expected a number"]),
        ("no_t_col.csv", "battery_percent\n50\n", ["header (line 1)", "'t'", "missing column"]),
        ("no_t_val.csv", "# c\nt,battery_percent\n0,50\n,40\n", ["row 2 (line 4)", "'t'", "missing"]),
        ("same_t.csv", "t,battery_percent\n0,50\n1,40\n1,30\n", ["row 3 (line 4)", "'t'", "must increase"]),
        ("back_t.csv", "t\n5\n4\n", ["row 2 (line 3)", "'t'", "not greater"]),
        ("dup.csv", "t,t\n0,0\n", ["header (line 1)", "'t'", "duplicate"]),
        ("bool.csv", "t,plugged\n0,maybe\n", ["row 1 (line 2)", "'plugged'", "true/false"]),
        ("int.csv", "t,thermal_status\n0,2.5\n", ["row 1 (line 2)", "'thermal_status'", "integer"]),
        ("cells.csv", "t,cpu_percent\n0,1,2\n", ["row 1 (line 2)", "3 cells"]),
        ("inf_t.csv", "t\ninf\n", ["row 1 (line 2)", "'t'", "finite"]),
        ("empty.csv", "# only a comment\n", ["empty file"]),
        ("header_only.csv", "t,cpu_percent\n", ["no samples"]),
        ("unknown.json", '[{"t": 0, "cpu": 3}]', ["samples[0]", "'cpu'", "unknown field", "allowed"]),
        ("nonnum.json", '[{"t": 0}, {"t": 1, "battery_percent": "80"}]', ["samples[1]", "'battery_percent'", "number"]),
        ("bool_num.json", '[{"t": 0, "cpu_percent": true}]', ["samples[0]", "'cpu_percent'", "number"]),
        ("no_t.json", '[{"t": 0}, {"cpu_percent": 3}]', ["samples[1]", "'t'", "missing"]),
        ("null_t.json", '[{"t": null}]', ["samples[0]", "'t'", "missing"]),
        ("order.json", '{"samples": [{"t": 1}, {"t": 0.5}]}', ["samples[1]", "'t'", "must increase"]),
        ("top.json", '{"rows": []}', ["'rows'", "samples"]),
        ("scalar.json", "42", ["'<top level>'", "list of samples"]),
        ("item.json", "[1, 2]", ["samples[0]", "expected an object"]),
        ("broken.json", "[{", ["not valid JSON"]),
        ("trace.txt", "t\n0\n", ["unknown trace format", ".csv, .json"]),
    ],
)
def test_bad_trace_files_name_file_row_and_field(tmp_path: Path, name: str, text: str, fragments: list[str]) -> None:
    p = write(tmp_path, name, text)
    with pytest.raises(TelemetryError) as info:
        load_trace(p)
    message = str(info.value)
    assert message.startswith(str(p))
    for fragment in fragments:
        assert fragment in message, message
    assert isinstance(info.value, ValueError)


def test_missing_trace_file(tmp_path: Path) -> None:
    with pytest.raises(TelemetryError, match="not found"):
        load_trace(tmp_path / "nope.csv")


# ---- TraceSource ----------------------------------------------------------------------------------


def test_trace_source_returns_the_latest_sample_at_the_injected_clock() -> None:
    now = [0.0]
    samples = [Signals(t=t, battery_percent=b) for t, b in ((1.0, 90), (2.0, 80), (4.0, 70))]
    src = TraceSource(samples, clock=lambda: now[0])
    assert src.read() == Signals(t=0.0)  # before the first sample: everything missing
    expected = {1.0: 90, 1.99: 90, 2.0: 80, 3.5: 80, 4.0: 70, 100.0: 70}
    for t, battery in expected.items():
        now[0] = t
        assert src.read().battery_percent == battery
    assert src.finished() and (src.start, src.end) == (1.0, 4.0)
    now[0] = 3.0
    assert not src.finished()


def test_trace_source_default_clock_is_scaled_wall_time() -> None:
    wall = [100.0]
    samples = [Signals(t=10.0, cpu_percent=1), Signals(t=20.0, cpu_percent=2), Signals(t=30.0, cpu_percent=3)]
    src = TraceSource(samples, speed=4.0, wall_clock=lambda: wall[0])
    assert src.read().cpu_percent == 1  # the first read starts the clock at samples[0].t
    wall[0] = 102.4  # 2.4 s x 4 = 9.6 s of trace time
    assert src.now() == pytest.approx(19.6) and src.read().cpu_percent == 1
    wall[0] = 102.5
    assert src.read().cpu_percent == 2
    wall[0] = 105.0
    assert src.read().cpu_percent == 3
    with pytest.raises(ValueError, match="speed"):
        TraceSource(samples, speed=0)
    with pytest.raises(TelemetryError, match="no samples"):
        TraceSource([])
    with pytest.raises(TelemetryError, match=r"samples\[1\].*'t'"):
        TraceSource([Signals(t=1.0), Signals(t=1.0)])


def test_trace_source_from_file() -> None:
    src = TraceSource.from_file(TRACES / "battery_drain.csv", clock=lambda: 85.0)
    assert src.read().t == 80.0 and src.read().battery_percent == 42.0
    assert len(src.samples) == 16


# ---- ManualSource ---------------------------------------------------------------------------------


def test_manual_source_updates_and_errors() -> None:
    src = ManualSource(clock=lambda: 3.0, battery_percent=40)
    src.update(plugged=False, thermal_status=ThermalStatus.MODERATE, mem_available_bytes=5e8)
    s = src.read()
    assert s == Signals(t=3.0, battery_percent=40.0, plugged=False, thermal_status=2, mem_available_bytes=500_000_000)
    src.update(battery_percent=None)
    assert src.read().battery_percent is None
    with pytest.raises(TelemetryError) as info:
        src.update(battery=50, cpu_percent=3)
    assert "'battery'" in str(info.value) and "allowed: battery_percent, plugged" in str(info.value)
    assert src.read().cpu_percent is None  # all-or-nothing
    for bad in ({"t": 5.0}, {"cpu_percent": "high"}, {"plugged": 1}, {"thermal_status": 1.5}):
        with pytest.raises(TelemetryError):
            src.update(**bad)


def test_manual_source_is_thread_safe() -> None:
    src = ManualSource(clock=lambda: 0.0)
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(500):
                src.update(cpu_percent=float(k), battery_percent=float(k))
                s = src.read()
                assert s.cpu_percent is not None and s.battery_percent is not None
                assert s.cpu_percent in range(8) and i >= 0
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    s = src.read()
    assert s.cpu_percent == s.battery_percent  # updates are applied as a unit


# ---- validation and smoothing ---------------------------------------------------------------------


def test_validation_drops_bad_readings_with_a_warning() -> None:
    good = Signals(t=0.0, battery_percent=50, cpu_percent=20, temperature_c=40, thermal_status=1, mem_percent=30)
    bad = Signals(
        t=1.0,
        battery_percent=float("nan"),
        cpu_percent=120.0,
        temperature_c=-55.0,
        thermal_status=7,
        mem_percent=-1.0,
        mem_available_bytes=-5,
        cpu_freq_mhz=0.0,
    )
    sampler = Sampler(ListSource([good, bad, Signals(t=2.0, battery_percent=150.0)]), alpha=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a good reading warns about nothing
        sampler.step()
    with pytest.warns(TelemetryWarning) as record:
        out = sampler.step()
    messages = [str(w.message) for w in record]
    assert len(messages) == 7
    for name in ("battery_percent", "cpu_percent", "temperature_c", "thermal_status", "mem_percent",
                 "mem_available_bytes", "cpu_freq_mhz"):
        assert any(m.startswith(f"t=1: {name}=") and "dropped" in m for m in messages), name
    # never propagated: dropped fields keep their last good value (or stay missing)
    assert out == Signals(t=1.0, battery_percent=50.0, cpu_percent=20.0, temperature_c=40.0, thermal_status=1,
                          mem_percent=30.0)
    with pytest.warns(TelemetryWarning, match=r"battery_percent=150\.0 dropped \(expected a number in \[0, 100\]\)"):
        assert sampler.step().battery_percent == 50.0


def test_validate_signals_edges() -> None:
    edge = Signals(t=0.0, battery_percent=0, cpu_percent=100, temperature_c=150, thermal_status=6, mem_percent=0.0,
                   mem_available_bytes=0, cpu_freq_mhz=0.1)
    assert validate_signals(edge) == (edge, ())
    clean, problems = validate_signals(Signals(t=0.0, plugged=1, temperature_c=float("inf")))  # type: ignore[arg-type]
    assert clean == Signals(t=0.0) and len(problems) == 2


def test_ema_smoothing_by_hand() -> None:
    readings = [
        Signals(t=0.0, cpu_percent=10.0, battery_percent=80.0, mem_available_bytes=1000, plugged=False,
                thermal_status=0),
        Signals(t=1.0, cpu_percent=20.0, battery_percent=None, mem_available_bytes=2001, plugged=True,
                thermal_status=3),
        Signals(t=2.0, cpu_percent=40.0, battery_percent=60.0, mem_available_bytes=None, plugged=None,
                thermal_status=1),
    ]
    seen: list[Signals] = []
    sampler = Sampler(ListSource(readings), alpha=0.5, on_sample=[seen.append])
    assert sampler.latest() is None
    s0, s1, s2 = sampler.step(), sampler.step(), sampler.step()
    assert s0.cpu_percent == 10.0  # seeded by the first value
    assert s1.cpu_percent == 15.0  # 0.5 * 20 + 0.5 * 10
    assert s2.cpu_percent == 27.5  # 0.5 * 40 + 0.5 * 15
    assert (s0.battery_percent, s1.battery_percent, s2.battery_percent) == (80.0, 80.0, 70.0)  # missing: held
    assert s1.mem_available_bytes == 1500 and s2.mem_available_bytes == 1500  # 1500.5 rounds to even
    assert isinstance(s1.mem_available_bytes, int)
    assert [s.plugged for s in (s0, s1, s2)] == [False, True, True]  # not smoothed; missing holds
    assert [s.thermal_status for s in (s0, s1, s2)] == [0, 3, 1]  # not smoothed: latest
    assert [s.t for s in (s0, s1, s2)] == [0.0, 1.0, 2.0]
    assert seen == [s0, s1, s2] and sampler.latest() == s2 and sampler.samples_taken == 3
    assert sampler.latest_raw() == readings[2]
    sampler.reset()
    assert sampler.latest() is None


def test_ema_alpha_one_is_no_smoothing_and_parameters_are_checked() -> None:
    readings = [Signals(t=float(i), cpu_percent=float(v)) for i, v in enumerate([10, 90, 30])]
    sampler = Sampler(ListSource(readings), alpha=1.0)
    assert [sampler.step().cpu_percent for _ in readings] == [10.0, 90.0, 30.0]
    for bad in ({"alpha": 0.0}, {"alpha": 1.5}, {"interval_s": 0}, {"interval_s": -1.0}):
        with pytest.raises(ValueError):
            Sampler(ListSource(readings), **bad)


def test_step_propagates_source_errors_and_rejects_a_bad_time() -> None:
    class Broken:
        def read(self) -> Signals:
            raise OSError("sensor gone")

    with pytest.raises(OSError, match="sensor gone"):
        Sampler(Broken()).step()
    with pytest.raises(TelemetryError, match="'t'"):
        Sampler(ListSource([Signals(t=float("nan"))])).step()


def test_sampler_thread_starts_samples_and_stops() -> None:
    got = threading.Event()
    src = ManualSource(battery_percent=70.0)
    with Sampler(src, interval_s=0.01, on_sample=[lambda s: got.set()]) as sampler:
        assert sampler.running
        assert got.wait(30)
    assert not sampler.running
    assert sampler.samples_taken >= 1
    assert (latest := sampler.latest()) is not None and latest.battery_percent == 70.0
    sampler.stop()  # idempotent


def test_sampler_thread_survives_failing_reads() -> None:
    calls = {"n": 0}
    recovered = threading.Event()

    class Flaky:
        def read(self) -> Signals:
            calls["n"] += 1
            if calls["n"] == 1:
                raise OSError("transient")
            return Signals(t=float(calls["n"]), cpu_percent=5.0)

    sampler = Sampler(Flaky(), interval_s=0.01, on_sample=[lambda s: recovered.set()])
    sampler.start()
    try:
        assert recovered.wait(30)
    finally:
        sampler.stop()
    assert sampler.errors == 1 and isinstance(sampler.last_error, OSError)
    assert not sampler.running


def test_temperature_rises_at_once_but_cools_smoothly():
    from runtime.telemetry import Sampler, Signals, TraceSource

    temps = [50.0, 86.0, 86.0, 50.0, 50.0]
    now = [0.0]
    source = TraceSource([Signals(t=float(i), temperature_c=v) for i, v in enumerate(temps)], clock=lambda: now[0])
    sampler = Sampler(source, alpha=0.3)
    seen = []
    for i in range(len(temps)):
        now[0] = float(i)
        seen.append(sampler.step().temperature_c)
    assert seen[:3] == [50.0, 86.0, 86.0]
    assert seen[3] == pytest.approx(0.3 * 50 + 0.7 * 86)
    assert seen[4] == pytest.approx(0.3 * 50 + 0.7 * seen[3])
