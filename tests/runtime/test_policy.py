"""Mode policy: recorded traces give exact decision sequences; hysteresis, dwell, emergencies, SLO,
memory pressure, missing signals, any number of modes, configuration errors, custom policies."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.policy import (
    Decision,
    Policy,
    PolicyConfig,
    PolicyError,
    PolicyState,
    RuleBasedPolicy,
    TimedDecision,
    load_policy,
    replay,
    tier_indices,
)
from runtime.telemetry import Signals, load_trace

TRACES = Path(__file__).resolve().parents[1] / "data" / "traces"
MODES = ("high", "balanced", "low")
MiB = 1024 * 1024


def switches(decisions: list[TimedDecision]) -> list[tuple[float, str, str]]:
    return [(d.t, d.mode, d.rule) for d in decisions if d.switch]


def steady(n: int, dt: float = 1.0, t0: float = 0.0, **fields: object) -> list[Signals]:
    return [Signals(t=t0 + i * dt, **fields) for i in range(n)]  # type: ignore[arg-type]


# ---- recorded traces: exact decision sequences ----------------------------------------------------


@pytest.mark.parametrize(
    ("trace", "expected"),
    [
        # 90 % -> 5 %: high holds down to 48 % (>= 45), balanced down to 18 % (>= 15); critical later changes nothing
        ("battery_drain", [(80.0, "balanced", "battery"), (130.0, "low", "battery")]),
        # 35-38 % is in the band; 45 % leaves high for low at once; each climb step waits the 5 s dwell
        ("cpu_spikes", [(4.0, "low", "cpu"), (9.0, "balanced", "upgrade"), (14.0, "high", "upgrade"),
                        (15.0, "low", "cpu"), (20.0, "balanced", "upgrade"), (25.0, "high", "upgrade")]),
        # 82 °C: lowest at once; warm (>= 70 °C) blocks upgrades until 69 °C at t=10; SEVERE status at t=17
        ("thermal_event", [(4.0, "low", "thermal"), (10.0, "balanced", "upgrade"), (15.0, "high", "upgrade"),
                           (17.0, "low", "thermal"), (22.0, "balanced", "upgrade"), (27.0, "high", "upgrade")]),
        # 12 % unplugged -> low; plugged counts as 100 % -> two slow steps up; unplugged at 27 % -> balanced
        ("charger_plugged", [(0.0, "low", "battery"), (5.0, "balanced", "upgrade"), (10.0, "high", "upgrade"),
                             (20.0, "balanced", "battery")]),
    ],
)
def test_recorded_traces_give_the_exact_decision_sequence(trace: str, expected: list[tuple[float, str, str]]) -> None:
    samples = load_trace(TRACES / f"{trace}.csv")
    decisions = replay(RuleBasedPolicy(), samples, MODES)
    assert len(decisions) == len(samples)
    assert switches(decisions) == expected
    assert [d.t for d in decisions] == [s.t for s in samples]
    assert all(d.signals is samples[i] for i, d in enumerate(decisions))
    # the log is self-consistent: each decision starts where the previous one ended
    for prev, d in itertools.pairwise(decisions):
        assert d.previous == prev.mode


def test_reasons_are_human_readable() -> None:
    by_t = {d.t: d for d in replay(RuleBasedPolicy(), load_trace(TRACES / "battery_drain.csv"), MODES)}
    assert by_t[80.0].reason == "battery 42% < 45% and >= 15%: balanced"
    assert by_t[130.0].reason == "battery 12% < 15%: low"
    assert by_t[140.0].reason == "battery 6% <= 10% (critical): low"
    by_t = {d.t: d for d in replay(RuleBasedPolicy(), load_trace(TRACES / "thermal_event.csv"), MODES)}
    assert by_t[4.0].reason == "temperature 82°C >= 80°C: low"
    assert by_t[17.0].reason == "thermal status 3 (SEVERE) >= 3 (SEVERE): low"
    assert "temperature 79°C >= 70°C" in by_t[6.0].reason and by_t[6.0].rule == "hold"
    by_t = {d.t: d for d in replay(RuleBasedPolicy(), load_trace(TRACES / "charger_plugged.csv"), MODES)}
    assert by_t[5.0].reason == "battery 100% (plugged in) > 55% and cpu 10% < 30%: balanced (towards high)"
    assert "dwell 5 s" in by_t[7.0].reason


def test_replay_is_pure_and_deterministic() -> None:
    samples = load_trace(TRACES / "cpu_spikes.csv")
    policy = RuleBasedPolicy()
    a = replay(policy, samples, MODES)
    b = replay(policy, list(samples), list(MODES))
    assert a == b
    assert samples == load_trace(TRACES / "cpu_spikes.csv")


# ---- hysteresis -----------------------------------------------------------------------------------


def test_hysteresis_prevents_flapping_on_a_noisy_trace() -> None:
    rng = np.random.default_rng(0)
    n = 400
    battery = 50 + rng.uniform(-4, 4, n)  # oscillates around the nominal 50 % threshold
    cpu = 35 + rng.uniform(-4, 4, n)  # and around the middle of the 30/40 CPU band
    samples = [Signals(t=float(i), battery_percent=float(b), cpu_percent=float(c)) for i, (b, c) in
               enumerate(zip(battery, cpu, strict=True))]
    no_band = PolicyConfig(high_enter_battery=50, high_exit_battery=50, high_enter_cpu=35, high_exit_cpu=35,
                           min_dwell_s=0)
    flappy = switches(replay(RuleBasedPolicy(no_band), samples, MODES))
    assert len(flappy) > 100  # the problem is real without hysteresis
    for start in MODES:
        calm = switches(replay(RuleBasedPolicy(), samples, MODES, start_mode=start))
        assert len(calm) <= 1, (start, calm)
    # battery alone in the band: whichever side it starts on, it stays
    battery_only = [Signals(t=float(i), battery_percent=float(b), cpu_percent=10.0) for i, b in enumerate(battery)]
    assert switches(replay(RuleBasedPolicy(), battery_only, MODES, start_mode="high")) == []
    assert switches(replay(RuleBasedPolicy(), battery_only, MODES, start_mode="balanced")) == []


def test_cpu_band_edges() -> None:
    policy = RuleBasedPolicy()
    in_high = PolicyState(MODES, "high", since=0.0, now=100.0)
    assert policy.decide(Signals(t=100, battery_percent=80, cpu_percent=40.0), in_high).mode == "high"
    assert policy.decide(Signals(t=100, battery_percent=80, cpu_percent=40.1), in_high).mode == "low"
    in_low = PolicyState(MODES, "low", since=0.0, now=100.0)
    assert policy.decide(Signals(t=100, battery_percent=80, cpu_percent=30.0), in_low).mode == "low"
    assert policy.decide(Signals(t=100, battery_percent=80, cpu_percent=29.9), in_low).mode == "balanced"
    # the busy-CPU tier is configurable: step down to balanced only
    gentle = RuleBasedPolicy(PolicyConfig(cpu_busy_mode="balanced"))
    d = gentle.decide(Signals(t=100, battery_percent=80, cpu_percent=90), in_high)
    assert (d.mode, d.rule) == ("balanced", "cpu")


def test_battery_band_edges_and_busy_cpu_at_mid_battery() -> None:
    policy = RuleBasedPolicy()
    for current, battery, expected in [
        ("high", 45.0, "high"), ("high", 44.9, "balanced"), ("balanced", 55.0, "balanced"),
        ("balanced", 55.1, "high"), ("balanced", 15.0, "balanced"), ("balanced", 14.9, "low"),
        ("low", 25.0, "low"), ("low", 25.1, "balanced"),
    ]:
        state = PolicyState(MODES, current, since=0.0, now=100.0)
        assert policy.decide(Signals(t=100, battery_percent=battery, cpu_percent=10), state).mode == expected
    # battery 50 % is balanced by the rule set whatever the CPU: a busy CPU must not push it to low
    state = PolicyState(MODES, "balanced", since=0.0, now=100.0)
    assert policy.decide(Signals(t=100, battery_percent=50, cpu_percent=95), state).mode == "balanced"
    state = PolicyState(MODES, "high", since=0.0, now=100.0)
    assert policy.decide(Signals(t=100, battery_percent=50, cpu_percent=95), state).mode == "balanced"


# ---- dwell and slow upgrades ----------------------------------------------------------------------


def test_dwell_and_one_step_upgrades() -> None:
    samples = steady(13, battery_percent=95.0, cpu_percent=5.0)
    assert switches(replay(RuleBasedPolicy(), samples, MODES, start_mode="low")) == [
        (5.0, "balanced", "upgrade"),
        (10.0, "high", "upgrade"),
    ]
    # without a dwell it still climbs one mode per decision, never skipping one
    quick = RuleBasedPolicy(PolicyConfig(min_dwell_s=0))
    assert switches(replay(quick, samples, MODES, start_mode="low")) == [
        (0.0, "balanced", "upgrade"),
        (1.0, "high", "upgrade"),
    ]
    longer = RuleBasedPolicy(PolicyConfig(min_dwell_s=7.5))
    five = ("m0", "m1", "m2", "m3", "m4")
    got = switches(replay(longer, steady(40, battery_percent=95.0), five, start_mode="m4"))
    assert got == [(8.0, "m3", "upgrade"), (16.0, "m2", "upgrade"), (24.0, "m1", "upgrade"), (32.0, "m0", "upgrade")]


def test_downgrades_ignore_the_dwell() -> None:
    # just upgraded into high (since == now): a drained battery still drops at once, several tiers at once
    state = PolicyState(MODES, "high", since=10.0, now=10.0)
    d = RuleBasedPolicy().decide(Signals(t=10.0, battery_percent=12.0, cpu_percent=5.0), state)
    assert (d.mode, d.switch, d.rule) == ("low", True, "battery")


# ---- emergencies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signals", "rule"),
    [
        (Signals(t=1.0, battery_percent=90, temperature_c=80.0), "thermal"),
        (Signals(t=1.0, battery_percent=90, thermal_status=3), "thermal"),
        (Signals(t=1.0, battery_percent=90, thermal_status=6), "thermal"),
        (Signals(t=1.0, battery_percent=10.0, plugged=False), "critical"),
        (Signals(t=1.0, battery_percent=3.0), "critical"),
    ],
)
def test_thermal_and_critical_battery_go_straight_to_the_lowest_mode(signals: Signals, rule: str) -> None:
    modes = ("a", "b", "c", "d")
    for current in ("a", "b"):
        state = PolicyState(modes, current, since=1.0, now=1.0)  # no dwell
        d = RuleBasedPolicy().decide(signals, state)
        assert (d.mode, d.switch, d.rule) == ("d", True, rule)
    d = RuleBasedPolicy().decide(signals, PolicyState(modes, "d", since=0.0, now=1.0))
    assert (d.mode, d.switch) == ("d", False)


def test_not_critical_or_hot_just_below_the_thresholds() -> None:
    state = PolicyState(MODES, "high", since=0.0, now=100.0)
    policy = RuleBasedPolicy()
    assert policy.decide(Signals(t=1, battery_percent=90, temperature_c=79.9, thermal_status=2), state).mode == "high"
    # plugged in at 5 %: charging counts as 100 %, so not critical
    assert policy.decide(Signals(t=1, battery_percent=5, plugged=True), state).mode == "high"
    strict_plug = RuleBasedPolicy(PolicyConfig(battery_when_plugged=None))
    assert strict_plug.decide(Signals(t=1, battery_percent=5, plugged=True), state).rule == "critical"


# ---- latency SLO ----------------------------------------------------------------------------------


def test_slo_miss_steps_down_one_mode_at_a_time_and_remembers_the_miss() -> None:
    samples = steady(80, battery_percent=90.0, cpu_percent=5.0)
    latency = {"high": 40.0, "balanced": 35.0, "low": 8.0}
    got = replay(RuleBasedPolicy(), samples, MODES, deadline_ms=30.0, latency_p95_ms=latency)
    # 2 s settle in each mode before the next step; low has headroom (8 <= 0.5 x 30 ms), but balanced
    # was seen missing the deadline at t=4, so it is re-entered only after slo_memory_s (60 s)
    assert switches(got) == [(2.0, "balanced", "slo"), (4.0, "low", "slo"), (64.0, "balanced", "upgrade"),
                             (66.0, "low", "slo")]
    assert got[0].rule == "slo" and "settle 2 s" in got[0].reason
    assert got[2].reason == "p95 latency 40 ms > deadline 30 ms: balanced"
    assert got[9].rule == "hold" and "balanced ran at p95 35 ms > deadline 30 ms 5 s ago" in got[9].reason
    # without the memory it would probe the missing mode after every dwell
    forgetful = RuleBasedPolicy(PolicyConfig(slo_memory_s=0))
    got = replay(forgetful, samples[:20], MODES, deadline_ms=30.0, latency_p95_ms=latency)
    assert switches(got)[2:] == [(9.0, "balanced", "upgrade"), (11.0, "low", "slo"), (16.0, "balanced", "upgrade"),
                                 (18.0, "low", "slo")]


def test_slo_headroom_blocks_upgrades_and_no_deadline_means_no_slo() -> None:
    samples = steady(30, battery_percent=90.0, cpu_percent=5.0)
    latency = {"high": 40.0, "balanced": 20.0, "low": 8.0}
    got = replay(RuleBasedPolicy(), samples, MODES, deadline_ms=30.0, latency_p95_ms=latency)
    assert switches(got) == [(2.0, "balanced", "slo")]  # 20 ms > 0.5 x 30 ms: stays, no flapping
    assert got[-1].rule == "hold" and "p95 latency 20 ms > deadline 30 ms × 0.5" in got[-1].reason
    assert switches(replay(RuleBasedPolicy(), samples, MODES, latency_p95_ms=latency)) == []
    # a callable latency model sees (t, current mode)
    calls: list[tuple[float, str]] = []

    def model(t: float, mode: str) -> float | None:
        calls.append((t, mode))
        return None

    replay(RuleBasedPolicy(), samples[:3], MODES, deadline_ms=30.0, latency_p95_ms=model)
    assert calls == [(0.0, "high"), (1.0, "high"), (2.0, "high")]


# ---- memory pressure ------------------------------------------------------------------------------


def test_memory_pressure_steps_down_and_blocks_upgrades_until_released() -> None:
    policy = RuleBasedPolicy()
    base = {"battery_percent": 90.0, "cpu_percent": 5.0}
    low_mem = steady(6, mem_available_bytes=200 * MiB, **base)
    assert switches(replay(policy, low_mem, MODES)) == [(2.0, "balanced", "memory"), (4.0, "low", "memory")]
    by_pct = steady(3, mem_percent=95.0, **base)
    got = replay(policy, by_pct, MODES)
    assert switches(got) == [(2.0, "balanced", "memory")]
    assert "memory 95% used > 90%" in got[-1].reason
    # between pressure (256 MiB) and release (384 MiB): no step down, no upgrade
    middle = steady(20, mem_available_bytes=300 * MiB, **base)
    assert switches(replay(policy, middle, MODES)) == []
    got = replay(policy, middle, MODES, start_mode="low")
    assert switches(got) == [] and "available memory 300 MiB < 384 MiB" in got[-1].reason
    plenty = steady(11, mem_available_bytes=2048 * MiB, mem_percent=40.0, **base)
    assert switches(replay(policy, plenty, MODES, start_mode="low")) == [
        (5.0, "balanced", "upgrade"),
        (10.0, "high", "upgrade"),
    ]


# ---- missing signals ------------------------------------------------------------------------------


def test_missing_signals_never_switch_on_their_own() -> None:
    empty = steady(20)
    assert switches(replay(RuleBasedPolicy(), empty, MODES)) == []  # from high, with a deadline or not
    assert switches(replay(RuleBasedPolicy(), empty, MODES, deadline_ms=10.0)) == []
    hold = RuleBasedPolicy(PolicyConfig(battery_when_missing=None))
    for start in MODES:
        got = replay(hold, empty, MODES, start_mode=start, deadline_ms=10.0)
        assert switches(got) == [], start
        assert "battery unknown" in got[-1].reason
    # a desktop: no battery counts as 100 %, unknown CPU is not busy -> high and stays there
    desktop = steady(20, cpu_percent=None, mem_available_bytes=4096 * MiB)
    got = replay(RuleBasedPolicy(), desktop, MODES, start_mode="low")
    assert switches(got) == [(5.0, "balanced", "upgrade"), (10.0, "high", "upgrade")]
    assert "battery 100% (no reading)" in got[-1].reason and "cpu unknown" in got[-1].reason
    # a phone whose CPU reading disappears while in high stays in high
    phone = [Signals(t=0, battery_percent=80, cpu_percent=10), *steady(10, t0=1, battery_percent=80)]
    assert switches(replay(RuleBasedPolicy(), phone, MODES)) == []


# ---- any number of modes --------------------------------------------------------------------------


def test_tier_mapping_for_any_number_of_modes() -> None:
    assert tier_indices(1) == (0, 0, 0)
    assert tier_indices(2) == (0, 1, 1)
    assert tier_indices(3) == (0, 1, 2)
    assert tier_indices(4) == (0, 2, 3)
    assert tier_indices(5) == (0, 2, 4)
    with pytest.raises(ValueError):
        tier_indices(0)
    one = replay(RuleBasedPolicy(), [Signals(t=0, battery_percent=5), Signals(t=1, temperature_c=99)], ("only",))
    assert switches(one) == []
    two = ("big", "small")
    drain = load_trace(TRACES / "battery_drain.csv")
    assert switches(replay(RuleBasedPolicy(), drain, two)) == [(80.0, "small", "battery")]  # balanced = low
    four = ("a", "b", "c", "d")
    assert switches(replay(RuleBasedPolicy(), drain, four)) == [(80.0, "c", "battery"), (130.0, "d", "battery")]
    # an in-between mode is held inside the hysteresis band and left downwards below it
    b_state = PolicyState(four, "b", since=0.0, now=100.0)
    assert RuleBasedPolicy().decide(Signals(t=1, battery_percent=50, cpu_percent=5), b_state).mode == "b"
    assert RuleBasedPolicy().decide(Signals(t=1, battery_percent=44, cpu_percent=5), b_state).mode == "c"


# ---- configuration --------------------------------------------------------------------------------


def test_defaults_and_yaml_loading(tmp_path: Path) -> None:
    c = PolicyConfig()
    assert (c.high_enter_battery, c.high_exit_battery, c.high_enter_cpu, c.high_exit_cpu) == (55, 45, 30, 40)
    assert (c.balanced_enter_battery, c.balanced_exit_battery, c.critical_battery) == (25, 15, 10)
    assert (c.min_dwell_s, c.thermal_temperature_c, c.thermal_status_severe) == (5.0, 80.0, 3)
    p = tmp_path / "policy.yaml"
    p.write_text("# tuned for a fanless box\nmin_dwell_s: 10\nthermal_temperature_c: 75\nthermal_release_c: 65\n"
                 "mem_pressure_percent: null\ncpu_busy_mode: balanced\n")
    cfg = PolicyConfig.from_yaml(p)
    assert cfg.min_dwell_s == 10.0 and isinstance(cfg.min_dwell_s, float)
    assert cfg.thermal_temperature_c == 75.0 and cfg.mem_pressure_percent is None
    assert cfg.cpu_busy_mode == "balanced" and cfg.high_enter_battery == 55.0
    assert PolicyConfig.from_dict(cfg.to_dict()) == cfg
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert PolicyConfig.from_yaml(empty) == PolicyConfig()
    assert isinstance(load_policy(str(p)), RuleBasedPolicy)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("min_dwell: 5\n", ["field 'min_dwell'", "unknown key", "allowed: high_enter_battery", "min_dwell_s"]),
        ("min_dwell_s: soon\n", ["field 'min_dwell_s'", "str", "a number >= 0"]),
        ("high_enter_battery: 120\n", ["field 'high_enter_battery'", "120", "<= 100"]),
        ("critical_battery: true\n", ["field 'critical_battery'", "bool"]),
        ("thermal_status_severe: 2.5\n", ["field 'thermal_status_severe'", "an integer"]),
        ("thermal_status_severe: 9\n", ["field 'thermal_status_severe'", "<= 6"]),
        ("slo_factor: 0\n", ["field 'slo_factor'", "> 0"]),
        ("cpu_busy_mode: medium\n", ["field 'cpu_busy_mode'", "one of low, balanced"]),
        ("min_dwell_s: null\n", ["field 'min_dwell_s'", "must not be null"]),
        ("high_exit_battery: 60\n", ["field 'high_exit_battery'", "must be <= high_enter_battery"]),
        ("high_enter_cpu: 50\n", ["field 'high_enter_cpu'", "must be <= high_exit_cpu"]),
        ("thermal_release_c: 90\n", ["field 'thermal_release_c'", "thermal_temperature_c"]),
        ("- 1\n- 2\n", ["field '<top level>'", "mapping"]),
        ("a: [\n", ["not valid YAML"]),
    ],
)
def test_yaml_config_errors_name_the_field(tmp_path: Path, text: str, fragments: list[str]) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(PolicyError) as info:
        PolicyConfig.from_yaml(p)
    message = str(info.value)
    assert message.startswith(str(p)), message
    for fragment in fragments:
        assert fragment in message, message


def test_config_errors_outside_yaml(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not found"):
        PolicyConfig.from_yaml(tmp_path / "missing.yaml")
    with pytest.raises(PolicyError, match=r"^PolicyConfig: field 'critical_battery'"):
        PolicyConfig(critical_battery=-1)
    with pytest.raises(PolicyError, match=r"^<dict>: field 'x': unknown key"):
        PolicyConfig.from_dict({"x": 1})
    assert isinstance(PolicyError("x"), ValueError)


# ---- protocol, custom policies, loader ------------------------------------------------------------


class AlwaysLowest:
    def decide(self, signals: Signals, state: PolicyState) -> Decision:
        mode = state.modes[-1]
        return Decision(mode, "always the lowest", mode != state.current, "custom")


def test_custom_policies_plug_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(AlwaysLowest(), Policy) and isinstance(RuleBasedPolicy(), Policy)
    got = replay(AlwaysLowest(), steady(3), MODES)
    assert switches(got) == [(0.0, "low", "custom")]
    (tmp_path / "my_policies.py").write_text(
        "from runtime.policy import Decision, RuleBasedPolicy, PolicyConfig\n"
        "class Stay:\n"
        "    def decide(self, signals, state):\n"
        "        return Decision(state.current, 'stay', False)\n"
        "instance = Stay()\n"
        "def make():\n"
        "    return RuleBasedPolicy(PolicyConfig(min_dwell_s=1))\n"
        "class Bad:\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_policies", raising=False)
    assert type(load_policy("my_policies:Stay")).__name__ == "Stay"
    assert type(load_policy("my_policies:instance")).__name__ == "Stay"
    made = load_policy("my_policies:make")
    assert isinstance(made, RuleBasedPolicy) and made.config.min_dwell_s == 1.0
    assert isinstance(load_policy("runtime.policy:RuleBasedPolicy"), RuleBasedPolicy)
    for spec, fragment in [
        ("my_policies", "expected 'package.module:attr'"),
        ("no_such_module_xyz:P", "cannot import"),
        ("my_policies:Nope", "no attribute 'Nope'"),
        ("my_policies:Bad", "no decide"),
    ]:
        with pytest.raises(PolicyError, match=fragment):
            load_policy(spec)


def test_replay_rejects_bad_inputs() -> None:
    class Rogue:
        def decide(self, signals: Signals, state: PolicyState) -> Decision:
            return Decision("turbo", "why not", True)

    with pytest.raises(PolicyError, match="'turbo' is not one of high, balanced, low"):
        replay(Rogue(), steady(1), MODES)
    with pytest.raises(ValueError, match="start_mode"):
        replay(RuleBasedPolicy(), steady(1), MODES, start_mode="medium")
    with pytest.raises(ValueError, match="before the previous"):
        replay(RuleBasedPolicy(), [Signals(t=2.0), Signals(t=1.0)], MODES)
    with pytest.raises(ValueError):
        replay(RuleBasedPolicy(), steady(1), ())
    assert replay(RuleBasedPolicy(), [], MODES) == []
    with pytest.raises(ValueError, match="current"):
        PolicyState(MODES, "medium", 0.0, 0.0)
    with pytest.raises(ValueError, match="duplicate"):
        PolicyState(("a", "a"), "a", 0.0, 0.0)
