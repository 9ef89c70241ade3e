"""AutoSwitcher: telemetry → policy → mode switches on anything that implements ``Switchable``.

``MultiModeRuntime`` (``runtime.engine``) is the intended target, but the controller only needs
the four members of ``Switchable``, so it is tested against a fake and can drive other engines.

Each sample of the ``Sampler`` (validated, smoothed telemetry) becomes one policy decision; a
decision for another mode calls ``target.switch(mode, reason)``. Every decision is logged
(``decisions``) and passed to the listeners (``fleetnas runtime run`` prints them).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from runtime.policy import Policy, PolicyError, PolicyState, RuleBasedPolicy, TimedDecision
from runtime.telemetry import Sampler, Signals, TelemetrySource

__all__ = ["AutoSwitcher", "Switchable"]

Listener = Callable[[TimedDecision], None]


@runtime_checkable
class Switchable(Protocol):
    """A multi-mode engine as the controller sees it.

    ``switch`` may return anything (``MultiModeRuntime.switch`` returns a ``SwitchRecord``); it is
    ignored. ``latency_quantile_ms`` is the ``q`` quantile over the current mode's last ``window``
    inferences, or None before it has any.
    """

    @property
    def modes(self) -> tuple[str, ...]:
        """Mode names, most capable first."""
        ...

    @property
    def current_mode(self) -> str:
        """The mode serving inferences now."""
        ...

    def switch(self, mode: str, reason: str) -> object:
        """Make ``mode`` current (``reason`` is recorded by the target)."""
        ...

    def latency_quantile_ms(self, q: float, window: int = 200) -> float | None:
        """Recent latency quantile of the current mode in ms (None without data)."""
        ...


class AutoSwitcher:
    """Drives ``target``'s mode from ``source`` telemetry through ``policy`` (default ``RuleBasedPolicy()``).

    - ``step()``: one synchronous sample + decision (deterministic with an injected ``clock`` and a
      ``TraceSource``); returns the ``TimedDecision``.
    - ``start()`` / ``stop()`` / ``with``: the same on the Sampler's daemon thread every ``interval_s``.
    - ``deadline_ms``: the latency SLO; the policy then sees ``target.latency_quantile_ms(
      latency_quantile, latency_window)`` of the current mode (not queried without a deadline), and
      the last such value of every mode that ran before (``PolicyState.observed_p95_ms``).
    - ``clock`` gives decision times (``now``, ``since``); for a ``TraceSource`` pass the same clock.
    - ``decisions``: the last ``log_size`` decisions; ``listeners`` get each one as it is made.

    The time the current mode was entered is the controller's start (first decision) or its last
    switch; if the target's mode changes behind the controller's back (a manual switch), the
    change is noticed at the next decision and the dwell restarts from then.
    """

    def __init__(
        self,
        target: Switchable,
        source: TelemetrySource,
        policy: Policy | None = None,
        interval_s: float = 0.5,
        deadline_ms: float | None = None,
        alpha: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
        *,
        latency_quantile: float = 0.95,
        latency_window: int = 200,
        log_size: int = 1000,
        listeners: Iterable[Listener] = (),
    ) -> None:
        if deadline_ms is not None and not deadline_ms > 0:
            raise ValueError(f"deadline_ms must be > 0 or None, got {deadline_ms!r}")
        if not 0 < latency_quantile < 1:
            raise ValueError(f"latency_quantile must be in (0, 1), got {latency_quantile!r}")
        if log_size < 1:
            raise ValueError(f"log_size must be >= 1, got {log_size!r}")
        self.target = target
        self.policy: Policy = policy if policy is not None else RuleBasedPolicy()
        self.deadline_ms = deadline_ms
        self.latency_quantile = latency_quantile
        self.latency_window = latency_window
        self.listeners: list[Listener] = list(listeners)
        self._clock = clock
        self._lock = threading.RLock()
        self._log: deque[TimedDecision] = deque(maxlen=log_size)
        self._local = threading.local()  # step() picks up the decision its own sample produced
        self._mode_seen: str | None = None
        self._since: float | None = None
        self._observed: dict[str, tuple[float, float]] = {}  # mode -> (last p95 while current, when)
        self._switches = 0
        self.sampler = Sampler(source, interval_s=interval_s, alpha=alpha, name="fleetnas-autoswitch")
        self.sampler.on_sample.append(self._on_sample)

    # ---- decisions ------------------------------------------------------------------------------
    def _on_sample(self, signals: Signals) -> None:
        with self._lock:
            now = float(self._clock())
            modes = tuple(self.target.modes)
            current = self.target.current_mode
            if current != self._mode_seen or self._since is None:
                self._mode_seen, self._since = current, now
            p95 = None
            if self.deadline_ms is not None:
                p95 = self.target.latency_quantile_ms(self.latency_quantile, self.latency_window)
                if p95 is not None:
                    self._observed[current] = (float(p95), now)
            state = PolicyState(modes, current, self._since, now, p95, self.deadline_ms, self._observed)
            decision = self.policy.decide(signals, state)
            if decision.mode not in modes:
                raise PolicyError(
                    f"{type(self.policy).__name__}.decide: field 'mode': {decision.mode!r} "
                    f"is not one of {', '.join(modes)}"
                )
            switched = decision.mode != current
            if switched:
                self.target.switch(decision.mode, decision.reason)
                self._mode_seen, self._since = decision.mode, now
                self._switches += 1
            entry = TimedDecision(now, decision.mode, decision.reason, switched, current, decision.rule, signals)
            self._log.append(entry)
            self._local.last = entry
            listeners = tuple(self.listeners)
        for listener in listeners:
            listener(entry)

    def step(self) -> TimedDecision:
        """Sample once, decide, switch if needed; returns the decision (also logged)."""
        # Not under self._lock: the sampler thread takes the sampler's lock, then ours.
        self._local.last = None
        self.sampler.step()
        entry: TimedDecision | None = self._local.last
        if entry is None:  # someone removed _on_sample from sampler.on_sample
            raise RuntimeError("AutoSwitcher.step: the sampler did not reach the policy")
        return entry

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(decision)`` after every decision (in the sampling thread)."""
        self.listeners.append(listener)

    @property
    def decisions(self) -> list[TimedDecision]:
        """The logged decisions, oldest first (at most ``log_size``)."""
        with self._lock:
            return list(self._log)

    @property
    def switches(self) -> list[TimedDecision]:
        """The logged decisions that switched mode."""
        return [d for d in self.decisions if d.switch]

    @property
    def switch_count(self) -> int:
        """Switches made since construction (not limited by ``log_size``)."""
        with self._lock:
            return self._switches

    def latest_signals(self) -> Signals | None:
        """The last smoothed telemetry reading (None before the first)."""
        return self.sampler.latest()

    # ---- background operation ---------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while the sampling thread is alive."""
        return self.sampler.running

    def start(self) -> None:
        """Sample and decide every ``interval_s`` on a daemon thread (first decision at once)."""
        self.sampler.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread and wait for it (an in-flight decision completes)."""
        self.sampler.stop(timeout)

    def __enter__(self) -> AutoSwitcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
