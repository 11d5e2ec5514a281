"""Synchronisation of message streams onto the fixed control-rate timeline (pure numpy, no bags).

All times are int64 nanoseconds. A stream's value at tick ``t`` is its latest message stamped at or before
``t`` (zero-order hold) and is *stale* when that message is older than ``max_staleness``. Ticks where
any stream is stale or missing are invalid; the valid ticks form spans, which are never interpolated
across. The action of tick ``t`` is the command in force just before the next tick (stamped before
``t + dt``): a command computed from the observation at ``t`` is published a little after ``t``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np

__all__ = ["zoh", "make_ticks", "find_spans", "TimelinePlan", "plan_timeline"]


def zoh(stamps: np.ndarray, ticks: np.ndarray, max_staleness_ns: int, strict: bool = False):
    """(index of the held message per tick, -1 if none; valid mask). ``strict``: stamps < tick only."""
    stamps = np.asarray(stamps, dtype=np.int64)
    idx = np.searchsorted(stamps, ticks, side="left" if strict else "right") - 1
    ok = idx >= 0
    if len(stamps):
        age = ticks - stamps[np.maximum(idx, 0)]
        ok &= age <= max_staleness_ns
    else:
        ok[:] = False
    return idx, ok


def make_ticks(t0: int, t_end: int, rate_hz: float) -> np.ndarray:
    if t_end < t0:
        return np.zeros(0, dtype=np.int64)
    n = int(np.floor((t_end - t0) * rate_hz / 1e9 + 1e-9)) + 1
    return t0 + np.round(np.arange(n) * (1e9 / rate_hz)).astype(np.int64)


def find_spans(valid: np.ndarray, breaks: Optional[np.ndarray] = None) -> list[tuple[int, int]]:
    """[start, stop) runs of ``valid``; ``breaks[k]`` starts a new run at ``k``."""
    spans, start = [], None
    for k, v in enumerate(valid):
        if v and start is not None and breaks is not None and breaks[k]:
            spans.append((start, k))
            start = k
        elif v and start is None:
            start = k
        elif not v and start is not None:
            spans.append((start, k))
            start = None
    if start is not None:
        spans.append((start, len(valid)))
    return spans


@dataclass
class TimelinePlan:
    ticks: np.ndarray  # all ticks (ns)
    valid: np.ndarray  # per tick
    spans: list  # [(start, stop)] into ticks, kept as episodes
    dropped: list  # spans shorter than min_steps
    index: dict = field(default_factory=dict)  # stream name -> held message index per tick
    stale: dict = field(default_factory=dict)  # stream name -> number of stale / missing ticks
    unusable: dict = field(default_factory=dict)  # stream name -> number of ticks holding an unusable message


def plan_timeline(streams: dict, rate_hz: float, max_staleness_s: float, episode_gap_s: float,
                  min_steps: int, reference: str, action: Union[str, Sequence[str], None] = None,
                  next_state: bool = False, unusable: Optional[dict] = None) -> TimelinePlan:
    """Plan the ticks of one bag.

    ``streams``: name -> sorted int64 stamps; ``reference`` names the stream whose gaps longer than
    ``episode_gap_s`` always cut (the joint states, or the task's first observation); ``action`` names
    the command stream(s) (each held until just before the next tick). ``next_state``: an action is the
    next tick's observation, so each span loses its last tick.
    ``unusable``: name -> bool per message (e.g. non-finite values): a tick that would hold such a message
    is invalid, so the span is cut there as at a gap (the message is not skipped for an older one).
    """
    commands = {action} if isinstance(action, str) else set(action or ())
    dt = int(round(1e9 / rate_hz))
    stale_ns = int(round(max_staleness_s * 1e9))
    firsts = []
    for name, st in streams.items():
        if not len(st):
            return TimelinePlan(np.zeros(0, np.int64), np.zeros(0, bool), [], [], {}, {name: -1})
        firsts.append(int(st[0]) - (dt if name in commands else 0))
    ref = np.asarray(streams[reference], dtype=np.int64)
    t0, t_end = max(firsts), int(ref[-1])
    ticks = make_ticks(t0, t_end, rate_hz)
    valid = np.ones(len(ticks), dtype=bool)
    index, stale, bad_ticks = {}, {}, {}
    for name, st in streams.items():
        if name in commands:
            idx, ok = zoh(st, ticks + dt, stale_ns, strict=True)
        else:
            idx, ok = zoh(st, ticks, stale_ns)
        index[name], stale[name] = idx, int((~ok).sum())
        valid &= ok
        if unusable is not None and name in unusable:
            bad = np.asarray(unusable[name], dtype=bool)[np.maximum(idx, 0)] & (idx >= 0)
            bad_ticks[name] = int(bad.sum())
            valid &= ~bad
    # a joint-state gap longer than episode_gap_s between two ticks always cuts
    breaks = np.zeros(len(ticks), dtype=bool)
    if len(ticks) > 1 and len(ref) > 1:
        big = np.r_[0, (np.diff(ref) > episode_gap_s * 1e9).astype(np.int64)]  # big[i]: gap before message i
        cum = np.cumsum(big)
        ri = index[reference]
        a, b = ri[:-1], ri[1:]
        have = (a >= 0) & (b >= 0)
        breaks[1:] = have & (cum[np.maximum(b, 0)] - cum[np.maximum(a, 0)] > 0)
    spans = find_spans(valid, breaks)
    need = min_steps + (1 if next_state else 0)
    kept = [s for s in spans if s[1] - s[0] >= need]
    dropped = [s for s in spans if s[1] - s[0] < need]
    return TimelinePlan(ticks, valid, kept, dropped, index, stale, bad_ticks)
