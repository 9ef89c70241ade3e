"""The privacy ledger: every noisy release of a federated run charged to one RDP accountant.

It wraps Flower's ``RdpAccountant`` (``flwr[dp]``, over Google's dp-accounting) rather than
re-deriving RDP, so the ε we report is the one Flower's own DP strategies would report for the
same releases; weight rounds (``DifferentialPrivacyClientSideFixedClipping``) and score/union
releases go into the same ledger. What it adds: a budget check that never mutates
(``would_exceed``), charges that refuse to pass the budget (``charge`` raises
``PrivacyBudgetExceeded`` and records nothing — charge *before* you release), the δ spent by the
set union's thresholding (``charge_delta``, outside RDP), a readable history, and a JSON form for
resuming a run.

Sampling: the accountant is configured for Poisson sampling with add/remove-one-client neighbours;
a charge's ``sampling_rate`` q becomes ``round(q · population_size)`` of ``population_size`` (Flower's
event takes integers), and q = 1 is exactly the unamplified Gaussian mechanism (dp-accounting's
Poisson-subsampled RDP at q = 1 is α/(2σ²)).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.serverapp import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    RdpAccountant,
    SamplingMethod,
)

__all__ = ["LEDGER_FORMAT", "LedgerError", "PrivacyBudgetExceeded", "PrivacyLedger"]

LEDGER_FORMAT = "fleetnas.privacy_ledger/1"
DEFAULT_POPULATION = 1_000_000


class PrivacyBudgetExceeded(RuntimeError):
    """A charge would take ε (or δ) past the configured budget; nothing was recorded."""


class LedgerError(ValueError):
    """A ledger argument or file a user got wrong; the message names the field."""


@dataclass
class PrivacyLedger:
    """Cumulative (ε, δ) of a run: ``epsilon`` at ``delta``, plus thresholding δ in ``delta_total``.

    ``max_epsilon`` (None: no limit) is the budget ``would_exceed``/``charge`` enforce; ``max_delta``
    (None: no limit) bounds ``delta_total``. ``population_size`` only sets the resolution of
    sampling rates (1/population_size).
    """

    delta: float
    max_epsilon: float | None = None
    max_delta: float | None = None
    population_size: int = DEFAULT_POPULATION
    history: list[dict[str, Any]] = field(default_factory=list)
    extra_deltas: list[dict[str, Any]] = field(default_factory=list)
    _accountant: RdpAccountant = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.delta, int | float) and 0 < self.delta < 1):
            raise LedgerError(f"ledger: field 'delta': {self.delta!r}; need a number in (0, 1)")
        if self.max_epsilon is not None and not (math.isfinite(self.max_epsilon) and self.max_epsilon > 0):
            raise LedgerError(f"ledger: field 'max_epsilon': {self.max_epsilon!r}; need a number > 0 or null")
        if self.max_delta is not None and not 0 < self.max_delta < 1:
            raise LedgerError(f"ledger: field 'max_delta': {self.max_delta!r}; need a number in (0, 1) or null")
        p = self.population_size
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise LedgerError(f"ledger: field 'population_size': {p!r}; need an integer >= 1")
        self._accountant = RdpAccountant(self._config())

    def _config(self) -> PrivacyConfig:
        return PrivacyConfig(
            target_delta=float(self.delta),
            population_size=self.population_size,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.POISSON,
            max_epsilon=None,
        )

    def _event(self, noise_multiplier: float, sampling_rate: float, count: int) -> GaussianPrivacyEvent:
        if isinstance(noise_multiplier, bool) or not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
            raise LedgerError(f"charge: field 'noise_multiplier': {noise_multiplier!r}; need a finite number > 0")
        if not 0 < sampling_rate <= 1:
            raise LedgerError(f"charge: field 'sampling_rate': {sampling_rate!r}; need a number in (0, 1]")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise LedgerError(f"charge: field 'count': {count!r}; need an integer >= 1")
        sample = min(self.population_size, max(1, round(sampling_rate * self.population_size)))
        return GaussianPrivacyEvent(float(noise_multiplier), sample, self.population_size)

    # ---- queries -------------------------------------------------------------------------
    @property
    def epsilon(self) -> float:
        """Cumulative ε at ``delta`` (0 before the first charge)."""
        if self._accountant.num_releases == 0:
            return 0.0
        return float(self._accountant.get_epsilon(self.delta))

    @property
    def delta_total(self) -> float:
        """``delta`` plus every δ recorded by ``charge_delta`` (the run's total δ)."""
        return float(self.delta + sum(e["delta"] for e in self.extra_deltas))

    @property
    def num_releases(self) -> int:
        """Gaussian releases charged so far."""
        return int(self._accountant.num_releases)

    def epsilon_at(self, delta: float) -> float:
        """Cumulative ε at another δ."""
        if self._accountant.num_releases == 0:
            return 0.0
        return float(self._accountant.get_epsilon(delta))

    def would_exceed(self, noise_multiplier: float, sampling_rate: float = 1.0, count: int = 1) -> bool:
        """True if charging these releases would take ε past ``max_epsilon`` (never mutates the ledger)."""
        event = self._event(noise_multiplier, sampling_rate, count)
        if self.max_epsilon is None:
            return False
        return bool(self._accountant.would_exceed(event, max_epsilon=self.max_epsilon, count=count))

    def epsilon_if(self, noise_multiplier: float, sampling_rate: float = 1.0, count: int = 1) -> float:
        """ε after charging these releases, without charging them."""
        event = self._event(noise_multiplier, sampling_rate, count)
        projected = RdpAccountant(self._config())
        projected.load_state_dict(self._accountant.state_dict())
        projected.compose(event, count)
        return float(projected.get_epsilon(self.delta))

    # ---- charges -------------------------------------------------------------------------
    def charge(self, noise_multiplier: float, sampling_rate: float = 1.0, count: int = 1, label: str = "") -> float:
        """Record ``count`` Gaussian releases with noise multiplier σ at sampling rate q; returns ε after.

        Raises PrivacyBudgetExceeded (recording nothing) if that would pass ``max_epsilon``.
        """
        event = self._event(noise_multiplier, sampling_rate, count)
        if self.max_epsilon is not None and self._accountant.would_exceed(event, self.max_epsilon, count):
            raise PrivacyBudgetExceeded(
                f"charge {label!r} (σ={noise_multiplier:.4g}, q={sampling_rate:.4g}, ×{count}) would take ε from "
                f"{self.epsilon:.4g} to {self.epsilon_if(noise_multiplier, sampling_rate, count):.4g} > budget "
                f"{self.max_epsilon:.4g} at δ={self.delta:.3g}"
            )
        self._accountant.compose(event, count)
        eps = self.epsilon
        self.history.append(
            {
                "label": label,
                "noise_multiplier": float(noise_multiplier),
                "sampling_rate": event.sample_size / event.population_size,
                "count": int(count),
                "epsilon": eps,
            }
        )
        return eps

    def charge_delta(self, extra_delta: float, label: str = "") -> float:
        """Record δ spent outside RDP (a set union's thresholding); returns ``delta_total`` after."""
        if not (isinstance(extra_delta, int | float) and 0 <= extra_delta < 1):
            raise LedgerError(f"charge_delta: field 'extra_delta': {extra_delta!r}; need a number in [0, 1)")
        after = self.delta_total + float(extra_delta)
        if self.max_delta is not None and after > self.max_delta * (1 + 1e-12):
            raise PrivacyBudgetExceeded(
                f"charge_delta {label!r} would take δ to {after:.3g} > budget {self.max_delta:.3g}"
            )
        self.extra_deltas.append({"label": label, "delta": float(extra_delta)})
        return self.delta_total

    # ---- files ---------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """JSON form (``from_json`` resumes from it)."""
        return {
            "format": LEDGER_FORMAT,
            "delta": self.delta,
            "max_epsilon": self.max_epsilon,
            "max_delta": self.max_delta,
            "population_size": self.population_size,
            "epsilon": self.epsilon,
            "delta_total": self.delta_total,
            "accountant": self._accountant.state_dict(),
            "history": [dict(h) for h in self.history],
            "extra_deltas": [dict(e) for e in self.extra_deltas],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "ledger") -> PrivacyLedger:
        """The ledger ``to_json`` wrote; LedgerError names ``source`` and the field it rejects."""
        if not isinstance(data, Mapping):
            raise LedgerError(f"{source}: need a JSON object, got {type(data).__name__}")
        if data.get("format") != LEDGER_FORMAT:
            raise LedgerError(f"{source}: field 'format': {data.get('format')!r}; allowed: {LEDGER_FORMAT}")
        for key in ("delta", "accountant", "history"):
            if key not in data:
                raise LedgerError(f"{source}: field {key!r}: missing")
        try:
            ledger = cls(
                delta=data["delta"],
                max_epsilon=data.get("max_epsilon"),
                max_delta=data.get("max_delta"),
                population_size=data.get("population_size", DEFAULT_POPULATION),
                history=[dict(h) for h in data["history"]],
                extra_deltas=[dict(e) for e in data.get("extra_deltas", [])],
            )
        except (TypeError, ValueError) as exc:
            raise LedgerError(f"{source}: {exc}") from None
        try:
            ledger._accountant.load_state_dict(dict(data["accountant"]))
        except (TypeError, ValueError) as exc:
            raise LedgerError(f"{source}: field 'accountant': {exc}") from None
        return ledger

    def save(self, path: str | Path) -> Path:
        """Write ``to_json`` to ``path`` atomically; returns the path."""
        from runtime.fileio import write_text_atomic

        return write_text_atomic(path, json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PrivacyLedger:
        """The ledger saved at ``path`` (errors name the file)."""
        from runtime.fileio import load_json

        return cls.from_json(load_json(path, LedgerError), source=str(path))
