"""What the control loop measures (inference latency, tick periods, counters) and the inference lead time.

The lead - how many ticks ahead of need an inference must start - is counted in control ticks consumed
(:class:`DelayTicks`: arrival tick - window tick of recent chunks), not derived from a wall-clock latency:
a slow first inference or a clock that is not wall time (``use_sim_time``) cannot skew it.
:func:`inference_lead` (from latency percentiles) is the fallback before the first chunk has arrived."""

from __future__ import annotations

import math
from collections import deque

import numpy as np

__all__ = ["RollingStats", "LoopStats", "DelayTicks", "inference_lead"]


class RollingStats:
    """The last ``n`` values of a measurement, with percentiles."""

    def __init__(self, n: int = 200):
        self._v: deque[float] = deque(maxlen=n)

    def add(self, v: float) -> None:
        self._v.append(float(v))

    def __len__(self) -> int:
        return len(self._v)

    def values(self) -> list[float]:
        return list(self._v)

    def last(self) -> float:
        return self._v[-1] if self._v else float("nan")

    def pct(self, q: float) -> float:
        return float(np.percentile(np.asarray(self._v), q)) if self._v else float("nan")

    def clear(self) -> None:
        self._v.clear()


def inference_lead(latency: RollingStats, period_s: float) -> int:
    """Ticks ahead of need to start an inference: ceil(p90 latency / period), at least 1."""
    if not len(latency):
        return 1
    return max(1, math.ceil(latency.pct(90) / period_s))


class DelayTicks:
    """Control ticks consumed by recent inferences (arrival tick - the tick their window ended at)."""

    def __init__(self, n: int = 5):
        self._v: deque[int] = deque(maxlen=n)

    def add(self, ticks: int) -> None:
        self._v.append(int(ticks))

    def __len__(self) -> int:
        return len(self._v)

    def estimate(self, default: int) -> int:
        """The most ticks any of the last ``n`` inferences took (conservative: a prefix that is too short
        leaves a seam), or ``default`` before the first one."""
        return max(self._v) if self._v else int(default)

    def clear(self) -> None:
        self._v.clear()


COUNTERS = ("chunks", "skipped_actions", "late_chunks", "missed_ticks", "holds", "model_errors", "nonfinite_chunks",
            "stale_ticks")


class LoopStats:
    """What the control loop measures and counts, reported in the node's diagnostics."""

    def __init__(self):
        self.latency = RollingStats()  # inference, s
        self.obs_to_command = RollingStats()  # oldest input stamp of a chunk's window -> its first command, s
        self.periods = RollingStats()  # measured control periods, s
        self.staleness: dict[str, float] = {}  # observation entry -> age of its sample at the last tick, s
        self.counts = dict.fromkeys(COUNTERS, 0)

    def values(self, nominal_period_s: float) -> dict[str, str]:
        """Diagnostic key/values: control rate, period jitter and latencies (milliseconds, 'nan' while
        unknown), the counters. (The inputs' staleness is in ``staleness``, keyed by entry.)"""
        ms = lambda v: f"{v * 1e3:.2f}" if np.isfinite(v) else "nan"  # noqa: E731
        jitter = RollingStats()
        for v in self.periods.values():
            jitter.add(abs(v - nominal_period_s))
        kv = {
            "control_rate_hz": f"{1.0 / nominal_period_s:g}",
            "measured_control_rate_hz": f"{1.0 / self.periods.pct(50):.2f}" if len(self.periods) else "nan",
            "control_period_jitter_median_ms": ms(jitter.pct(50)),
            "control_period_jitter_p99_ms": ms(jitter.pct(99)),
            "inference_latency_last_ms": ms(self.latency.last()),
            "inference_latency_median_ms": ms(self.latency.pct(50)),
            "inference_latency_p99_ms": ms(self.latency.pct(99)),
            "obs_to_command_latency_median_ms": ms(self.obs_to_command.pct(50)),
            "obs_to_command_latency_p99_ms": ms(self.obs_to_command.pct(99)),
        }
        kv.update((k, str(v)) for k, v in self.counts.items())
        return kv
