"""AutoSwitcher: telemetry -> policy -> switch calls on a fake Switchable, stepped deterministically."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from runtime.controller import AutoSwitcher, Switchable
from runtime.policy import Decision, PolicyConfig, PolicyError, PolicyState, RuleBasedPolicy, TimedDecision, replay
from runtime.telemetry import ManualSource, Signals, TraceSource, load_trace

TRACES = Path(__file__).resolve().parents[1] / "data" / "traces"
MODES = ("high", "balanced", "low")


class FakeEngine:
    """A Switchable that records what the controller asks of it."""

    def __init__(self, modes: tuple[str, ...] = MODES, latency: dict[str, float] | None = None) -> None:
        self._modes = modes
        self._current = modes[0]
        self.latency = latency or {}
        self.switch_calls: list[tuple[str, str]] = []
        self.latency_calls: list[tuple[float, int]] = []
        self.fail_next_switch = False

    @property
    def modes(self) -> tuple[str, ...]:
        return self._modes

    @property
    def current_mode(self) -> str:
        return self._current

    def switch(self, mode: str, reason: str) -> None:
        if self.fail_next_switch:
            self.fail_next_switch = False
            raise RuntimeError("session lost")
        assert mode in self._modes and mode != self._current
        self.switch_calls.append((mode, reason))
        self._current = mode

    def latency_quantile_ms(self, q: float, window: int = 200) -> float | None:
        self.latency_calls.append((q, window))
        return self.latency.get(self._current)


class Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def drive(switcher: AutoSwitcher, clock: Clock, times: list[float]) -> list[TimedDecision]:
    out = []
    for t in times:
        clock.t = t
        out.append(switcher.step())
    return out


def test_fake_engine_is_switchable() -> None:
    assert isinstance(FakeEngine(), Switchable)


@pytest.mark.parametrize("trace", ["battery_drain", "cpu_spikes", "thermal_event", "charger_plugged"])
def test_autoswitcher_from_a_trace_matches_replay(trace: str) -> None:
    samples = load_trace(TRACES / f"{trace}.csv")
    clock = Clock()
    engine = FakeEngine()
    heard: list[TimedDecision] = []
    # alpha=1: no smoothing, so the controller must reproduce the pure replay exactly
    switcher = AutoSwitcher(engine, TraceSource(samples, clock=clock), alpha=1.0, clock=clock, listeners=[heard.append])
    got = drive(switcher, clock, [s.t for s in samples])
    expected = replay(RuleBasedPolicy(), samples, MODES)
    assert [(d.t, d.mode, d.switch, d.rule, d.reason) for d in got] == [
        (d.t, d.mode, d.switch, d.rule, d.reason) for d in expected
    ]
    assert [m for m, _ in engine.switch_calls] == [d.mode for d in expected if d.switch]
    assert [r for _, r in engine.switch_calls] == [d.reason for d in expected if d.switch]
    assert switcher.decisions == got == heard
    assert switcher.switches == [d for d in got if d.switch] and switcher.switch_count == len(engine.switch_calls)
    assert all(d.signals is not None for d in got)
    assert engine.latency_calls == []  # no deadline: latency is not even queried


def test_decisions_between_samples_hold_the_latest_sample() -> None:
    samples = load_trace(TRACES / "charger_plugged.csv")
    clock = Clock()
    engine = FakeEngine()
    switcher = AutoSwitcher(engine, TraceSource(samples, clock=clock), alpha=1.0, clock=clock)
    drive(switcher, clock, [x * 0.5 for x in range(0, 2 * 12)])  # twice per trace second, to t=11.5
    assert [(d.t, d.mode) for d in switcher.switches] == [(0.0, "low"), (5.0, "balanced"), (10.0, "high")]
    assert len(switcher.decisions) == 24


def test_smoothing_filters_short_cpu_spikes() -> None:
    samples = load_trace(TRACES / "cpu_spikes.csv")
    clock = Clock()
    engine = FakeEngine()
    switcher = AutoSwitcher(engine, TraceSource(samples, clock=clock), alpha=0.3, clock=clock)
    got = drive(switcher, clock, [s.t for s in samples])
    # raw replay switches 6 times; the EMA keeps the smoothed CPU at or below 40 %, inside the band
    assert engine.switch_calls == []
    sig = got[4].signals
    assert sig is not None and sig.cpu_percent is not None and 30 < sig.cpu_percent <= 40


def test_deadline_drives_slo_step_downs_through_the_target_latency() -> None:
    clock = Clock()
    engine = FakeEngine(latency={"high": 45.0, "balanced": 12.0, "low": 5.0})
    source = ManualSource(clock=clock, battery_percent=90.0, cpu_percent=5.0)
    switcher = AutoSwitcher(engine, source, deadline_ms=30.0, clock=clock, latency_quantile=0.9, latency_window=50)
    got = drive(switcher, clock, [float(t) for t in range(12)])
    assert [(d.t, d.mode, d.rule) for d in got if d.switch] == [(2.0, "balanced", "slo")]
    assert set(engine.latency_calls) == {(0.9, 50)}
    # balanced has headroom (12 <= 15 ms) but high was seen at 45 ms: no climb back into the miss
    assert got[-1].rule == "hold" and "high ran at p95 45 ms" in got[-1].reason


def test_external_switch_restarts_the_dwell() -> None:
    clock = Clock()
    engine = FakeEngine()
    switcher = AutoSwitcher(engine, ManualSource(clock=clock, battery_percent=90.0, cpu_percent=5.0), clock=clock)
    drive(switcher, clock, [0.0, 1.0])
    engine._current = "low"  # someone switched by hand at t=1..3
    got = drive(switcher, clock, [3.0, 7.9, 8.0])
    assert [d.rule for d in got] == ["hold", "hold", "upgrade"]
    assert got[-1].mode == "balanced" and engine.switch_calls == [("balanced", got[-1].reason)]


def test_failing_switch_and_rogue_policy_propagate_from_step() -> None:
    clock = Clock()
    engine = FakeEngine()
    source = ManualSource(clock=clock, battery_percent=5.0)
    switcher = AutoSwitcher(engine, source, clock=clock)
    engine.fail_next_switch = True
    with pytest.raises(RuntimeError, match="session lost"):
        switcher.step()
    assert engine.current_mode == "high" and switcher.decisions == []
    assert switcher.step().mode == "low"  # the next decision retries

    class Rogue:
        def decide(self, signals: Signals, state: PolicyState) -> Decision:
            return Decision("turbo", "", True)

    with pytest.raises(PolicyError, match="turbo"):
        AutoSwitcher(FakeEngine(), source, policy=Rogue(), clock=clock).step()
    with pytest.raises(ValueError, match="deadline_ms"):
        AutoSwitcher(engine, source, deadline_ms=0)


def test_custom_policy_and_config() -> None:
    clock = Clock()
    engine = FakeEngine()
    policy = RuleBasedPolicy(PolicyConfig(cpu_busy_mode="balanced"))
    source = ManualSource(clock=clock, battery_percent=90.0, cpu_percent=80.0)
    assert AutoSwitcher(engine, source, policy=policy, alpha=1.0, clock=clock).step().mode == "balanced"


def test_start_stop_thread_makes_decisions_and_stops_cleanly() -> None:
    engine = FakeEngine()
    decided = threading.Event()
    switcher = AutoSwitcher(engine, ManualSource(battery_percent=5.0), interval_s=0.01)
    switcher.add_listener(lambda d: decided.set())
    with switcher:
        assert switcher.running
        assert decided.wait(30)
    assert not switcher.running
    assert len(switcher.decisions) >= 1
    assert engine.current_mode == "low"  # critical battery
    assert switcher.sampler.errors == 0
    switcher.stop()  # stopping twice is harmless
