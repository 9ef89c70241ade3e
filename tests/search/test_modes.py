"""Mode selection rules on hand-made candidate sets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from search.modes import ModePlan, ModeRules, ModeSelectionError, select_modes

# candidates: accuracy, latency, energy, memory
METRICS = {
    "accuracy": np.array([0.60, 0.70, 0.75, 0.78, 0.80, 0.82, 0.65]),
    "latency_ms": np.array([5.0, 8.0, 12.0, 15.0, 20.0, 40.0, 9.0]),
    "energy_mj": np.array([5.0, 8.0, 12.0, 15.0, 20.0, 40.0, 9.5]),
    "peak_activation_bytes": np.array([1, 1, 1, 1, 1, 9, 1]) * 1e6,
}


def test_high_low_balanced():
    plan = select_modes(METRICS, ModeRules(deadline_ms=25.0, accuracy_floor=0.65))
    assert [m.name for m in plan.modes] == ["high", "balanced", "low"]
    assert plan.mode("high").index == 4  # 0.82 misses the deadline
    assert plan.mode("low").index == 1  # least energy with accuracy >= 0.65 (candidate 6 is dominated)
    assert plan.mode("balanced").index in (2, 3)
    assert "25" in plan.mode("high").reason


def test_memory_limit_and_rules():
    plan = select_modes(METRICS, ModeRules(memory_limit_bytes=2e6))
    assert plan.mode("high").index == 4  # the 0.82 one needs 9 MB
    eff = select_modes(METRICS, ModeRules(balanced="efficiency"))
    mid = select_modes(METRICS, ModeRules(balanced="midpoint"))
    assert eff.mode("high").index == 5 and eff.mode("low").index == 0
    # midpoint of energy 5..40 is 22.5: the front point closest is 20 (index 4)
    assert mid.mode("balanced").index == 4


def test_infeasible_rules_explain_themselves():
    with pytest.raises(ModeSelectionError, match=r"3 ms deadline.*fastest takes 5 ms"):
        select_modes(METRICS, ModeRules(deadline_ms=3.0))
    with pytest.raises(ModeSelectionError, match=r"accuracy floor 0.9.*best reaches 0.82"):
        select_modes(METRICS, ModeRules(accuracy_floor=0.9))
    with pytest.raises(ModeSelectionError, match=r"memory limit.*smallest needs 1e\+06"):
        select_modes(METRICS, ModeRules(memory_limit_bytes=10))
    with pytest.raises(ModeSelectionError, match="allowed: knee, efficiency, midpoint"):
        ModeRules(balanced="best")
    with pytest.raises(ModeSelectionError, match="metric 'accuracy' is missing"):
        select_modes({"energy_mj": np.ones(3)}, ModeRules())


def test_modeplan_json_round_trip(tmp_path):
    archs = [{"space": "s", "i": i} for i in range(7)]
    plan = select_modes(METRICS, ModeRules(deadline_ms=25.0), archs=archs, device="rpi4")
    path = plan.save(tmp_path / "modeplan.json")
    again = ModePlan.from_json(json.loads(path.read_text()))
    assert again == plan
    assert again.mode("high").arch == {"space": "s", "i": 4}


def test_straight_front_has_no_knee_and_splits_the_energy_range():
    energy = np.linspace(10.0, 50.0, 9)
    acc = 0.5 + 0.01 * energy  # a straight accuracy-energy front
    plan = select_modes({"accuracy": acc, "energy_mj": energy}, ModeRules())
    assert plan.mode("balanced").index == 4  # 30 mJ, the middle
    assert "no knee" in plan.mode("balanced").reason
    curved = np.sqrt(energy - 9.0)  # a concave front: a real knee
    plan = select_modes({"accuracy": curved, "energy_mj": energy}, ModeRules())
    assert "knee of the" in plan.mode("balanced").reason
