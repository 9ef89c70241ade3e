"""Latency recording for the runtime: an all-time log-bucket histogram plus a rolling window.

The histogram gives p50/p95/p99 over every inference in bounded memory (buckets 2.5 % wide, so
a quantile is off by at most half a bucket ≈ 1.2 %); the rolling window gives the recent p95 the
switching policy compares with the app's deadline. Recording is a lock, an index and two array
writes: cheap next to even the smallest model's inference.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

_MIN_S = 1e-6  # 1 µs
_MAX_S = 100.0
_GROWTH = 1.025
_N_BUCKETS = math.ceil(math.log(_MAX_S / _MIN_S) / math.log(_GROWTH)) + 1


@dataclass(frozen=True)
class LatencySummary:
    """Count and quantiles in milliseconds (None when nothing was recorded)."""

    count: int
    mean_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    def to_json(self) -> dict[str, float | int | None]:
        """JSON form."""
        return {
            "count": self.count,
            "mean_ms": self.mean_ms,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
        }


class LatencyRecorder:
    """Thread-safe latency statistics for one mode."""

    def __init__(self, window: int = 512) -> None:
        self._lock = threading.Lock()
        self._buckets = np.zeros(_N_BUCKETS, dtype=np.int64)
        self._window = np.full(window, np.nan)
        self._next = 0
        self.count = 0
        self._sum = 0.0
        self._max = 0.0

    def record(self, seconds: float) -> None:
        """Add one latency observation."""
        s = min(max(seconds, _MIN_S), _MAX_S)
        bucket = int(math.log(s / _MIN_S) / math.log(_GROWTH))
        with self._lock:
            self._buckets[bucket] += 1
            self._window[self._next % len(self._window)] = seconds
            self._next += 1
            self.count += 1
            self._sum += seconds
            self._max = max(self._max, seconds)

    def reset_window(self) -> None:
        """Forget the rolling window (the all-time histogram stays): a mode re-entered later
        should be judged on its new latencies, not on those of its previous stint."""
        with self._lock:
            self._window[:] = np.nan
            self._next = 0

    def quantile_ms(self, q: float) -> float | None:
        """All-time quantile ``q`` (0..1) in ms, from the histogram (bucket geometric centre)."""
        with self._lock:
            if self.count == 0:
                return None
            cum = np.cumsum(self._buckets)
            idx = int(np.searchsorted(cum, q * self.count, side="left"))
        centre = _MIN_S * _GROWTH ** (idx + 0.5)
        return min(centre, self._max) * 1e3

    def window_quantile_ms(self, q: float, last: int | None = None) -> float | None:
        """Quantile ``q`` of the most recent ``last`` observations (default: the whole window), in ms."""
        with self._lock:
            n = min(self._next, len(self._window))
            if n == 0:
                return None
            k = n if last is None else max(1, min(last, n))
            end = self._next % len(self._window)
            idx = (end - 1 - np.arange(k)) % len(self._window)
            values = self._window[idx]
        return float(np.quantile(values, q) * 1e3)

    def summary(self) -> LatencySummary:
        """Count, mean and p50/p95/p99/max in ms."""
        if self.count == 0:
            return LatencySummary(0, None, None, None, None, None)
        return LatencySummary(
            count=self.count,
            mean_ms=self._sum / self.count * 1e3,
            p50_ms=self.quantile_ms(0.50),
            p95_ms=self.quantile_ms(0.95),
            p99_ms=self.quantile_ms(0.99),
            max_ms=self._max * 1e3,
        )
