"""The privacy ledger over Flower's RDP accountant: ε as dp-accounting computes it, budget checks, resume."""

from __future__ import annotations

import json
from pathlib import Path

import dp_accounting
import pytest
from dp_accounting import rdp

from federation.accounting import LedgerError, PrivacyBudgetExceeded, PrivacyLedger


def direct_epsilon(events: list[tuple[float, float, int]], delta: float) -> float:
    """ε of (σ, q, count) releases composed directly with dp-accounting's RDP accountant."""
    acc = rdp.RdpAccountant()
    for sigma, q, count in events:
        gauss = dp_accounting.GaussianDpEvent(sigma)
        event = gauss if q == 1.0 else dp_accounting.PoissonSampledDpEvent(q, gauss)
        acc.compose(dp_accounting.SelfComposedDpEvent(event, count))
    return acc.get_epsilon(delta)


def test_references_figure_sigma_1_twenty_rounds() -> None:
    ledger = PrivacyLedger(delta=1e-5)
    eps = ledger.charge(1.0, count=20, label="weights")
    assert eps == pytest.approx(30.1, abs=0.05)
    assert eps == pytest.approx(direct_epsilon([(1.0, 1.0, 20)], 1e-5), rel=1e-12)


@pytest.mark.parametrize(
    "events",
    [
        [(2.0, 1.0, 1)],
        [(9.1, 1.0, 5)],
        [(0.8, 0.01, 500)],
        [(4.0, 1.0, 3), (1.5, 0.05, 40), (12.0, 1.0, 1)],  # score, weight and union releases mixed
    ],
)
def test_epsilon_equals_dp_accounting_directly(events: list[tuple[float, float, int]]) -> None:
    ledger = PrivacyLedger(delta=1e-6)
    for i, (sigma, q, count) in enumerate(events):
        ledger.charge(sigma, sampling_rate=q, count=count, label=f"r{i}")
    assert ledger.epsilon == pytest.approx(direct_epsilon(events, 1e-6), rel=1e-9)
    assert ledger.epsilon_at(1e-4) == pytest.approx(direct_epsilon(events, 1e-4), rel=1e-9)
    assert ledger.num_releases == sum(c for _, _, c in events)
    assert [h["label"] for h in ledger.history] == [f"r{i}" for i in range(len(events))]
    assert ledger.history[-1]["epsilon"] == ledger.epsilon


def test_charges_compose_one_by_one_as_in_one_go() -> None:
    a, b = PrivacyLedger(delta=1e-5), PrivacyLedger(delta=1e-5)
    for _ in range(7):
        a.charge(3.0)
    b.charge(3.0, count=7)
    assert a.epsilon == pytest.approx(b.epsilon, rel=1e-12)
    assert [h["epsilon"] for h in a.history] == sorted(h["epsilon"] for h in a.history)  # ε only grows


def test_would_exceed_does_not_mutate_and_charge_refuses_to_pass_the_budget() -> None:
    ledger = PrivacyLedger(delta=1e-5, max_epsilon=1.0)
    assert ledger.epsilon == 0.0 and ledger.num_releases == 0
    ledger.charge(9.1, count=4, label="rounds 1-4")
    before = (ledger.epsilon, ledger.num_releases, len(ledger.history), json.dumps(ledger.to_json()))
    assert not ledger.would_exceed(9.1)  # the 5th round of a 5-round plan fits
    assert ledger.would_exceed(9.1, count=2)
    assert ledger.would_exceed(1.0)
    assert ledger.epsilon_if(9.1) > ledger.epsilon
    assert (ledger.epsilon, ledger.num_releases, len(ledger.history), json.dumps(ledger.to_json())) == before
    with pytest.raises(PrivacyBudgetExceeded, match=r"charge 'round 5' .* > budget 1"):
        ledger.charge(1.0, label="round 5")
    assert (ledger.epsilon, ledger.num_releases, len(ledger.history)) == before[:3]  # nothing recorded
    assert ledger.charge(9.1, label="round 5") <= 1.0
    assert PrivacyLedger(delta=1e-5).would_exceed(0.1, count=1000) is False  # no budget, no limit


def test_delta_total_counts_thresholding() -> None:
    ledger = PrivacyLedger(delta=9e-6, max_delta=1e-5)
    for r in range(5):
        ledger.charge_delta(2e-7, label=f"union r{r}")
    assert ledger.delta_total == pytest.approx(1e-5)
    with pytest.raises(PrivacyBudgetExceeded, match="would take δ"):
        ledger.charge_delta(1e-7, label="one too many")
    assert len(ledger.extra_deltas) == 5


def test_json_round_trip_resumes_the_same_ledger(tmp_path: Path) -> None:
    ledger = PrivacyLedger(delta=1e-5, max_epsilon=5.0)
    ledger.charge(2.0, count=2, label="scores")
    ledger.charge(1.2, sampling_rate=0.1, count=10, label="weights")
    ledger.charge_delta(1e-7, label="union")
    path = ledger.save(tmp_path / "ledger.json")
    resumed = PrivacyLedger.load(path)
    assert resumed.epsilon == ledger.epsilon and resumed.delta_total == ledger.delta_total
    assert resumed.history == ledger.history and resumed.max_epsilon == 5.0
    # continuing after the resume gives what an uninterrupted run gives
    assert resumed.charge(3.0, label="more") == ledger.charge(3.0, label="more")
    assert PrivacyLedger.from_json(json.loads(json.dumps(ledger.to_json()))).to_json() == ledger.to_json()


def test_bad_input_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="field 'delta'"):
        PrivacyLedger(delta=0.0)
    ledger = PrivacyLedger(delta=1e-5)
    with pytest.raises(LedgerError, match="field 'noise_multiplier'"):
        ledger.charge(0.0)
    with pytest.raises(LedgerError, match="field 'sampling_rate'"):
        ledger.charge(1.0, sampling_rate=1.5)
    with pytest.raises(LedgerError, match="field 'count'"):
        ledger.would_exceed(1.0, count=0)
    with pytest.raises(LedgerError, match=r"x\.json: field 'format'"):
        PrivacyLedger.from_json({"format": "other"}, source="x.json")
    bad = ledger.to_json()
    bad["accountant"]["schema_version"] = 99
    with pytest.raises(LedgerError, match=r"field 'accountant'"):
        PrivacyLedger.from_json(bad)
    with pytest.raises(LedgerError, match=r"missing\.json: file not found"):
        PrivacyLedger.load(tmp_path / "missing.json")
