"""How smooth an executed trajectory is at chunk handovers, against inside chunks (no ROS, no torch).

Input, one row per control tick of one episode: the commanded joint positions, the measured ones (the
joint state the loop sampled at that tick) and the id of the chunk each command came from (-1: no
command from a chunk, e.g. holding). A handover is a tick whose command comes from another chunk than
the tick before.

For ``order`` k = 1 (jump), 2 (acceleration), 3 (jerk) the k-th backward difference of the trajectory at
tick t, ``Δ^k q[t]`` (from ticks t-k .. t), is measured as its largest absolute value over the joints, in
rad per tick^k. The difference at t spans a handover h when t-k < h <= t, i.e. t in h .. h+k-1. A
handover's value is the largest over the differences that span it; every other difference (all its
ticks commanded from chunks) is "inside" a chunk. The measured trajectory sees a command one tick later
(the joint state at t+1 is the first to answer the command of t), so its handover windows are shifted by
one tick.

:func:`boundary_metrics` gives, per trajectory (``commanded``, ``measured``) and order, the handover
values and the inside values of one episode; :func:`summarize` pools episodes into p50 / p99 / max.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional

import numpy as np

__all__ = ["ORDERS", "handover_ticks", "boundary_metrics", "summarize"]

ORDERS = {1: "jump", 2: "accel", 3: "jerk"}


def handover_ticks(source: np.ndarray) -> np.ndarray:
    """Ticks whose command comes from another chunk than the previous tick's (both from chunks)."""
    s = np.asarray(source)
    t = np.arange(1, len(s))
    return t[(s[1:] != s[:-1]) & (s[1:] >= 0) & (s[:-1] >= 0)]


def _split(q: np.ndarray, source: np.ndarray, handovers: np.ndarray, order: int,
           lag: int) -> tuple[np.ndarray, np.ndarray]:
    """(one value per handover, the inside values) of the order-k difference of ``q``."""
    n = len(q)
    if n <= order:
        return np.zeros(0), np.zeros(0)
    d = np.abs(np.diff(q, n=order, axis=0)).max(axis=1)  # d[i] is the difference at tick i + order
    at = {t: v for t, v in zip(range(order, n), d)}
    from_chunk = np.asarray(source) >= 0
    spans = set()
    per_handover = []
    for h in handovers:
        ticks = [t for t in range(h + lag, h + lag + order) if t in at]
        spans.update(ticks)
        if ticks:
            per_handover.append(max(at[t] for t in ticks))
    inside = []
    for t in range(order, n):
        window = range(t - order - lag, t + 1 - lag)
        if t not in spans and all(0 <= u < n and from_chunk[u] for u in window):
            inside.append(at[t])
    return np.asarray(per_handover, float), np.asarray(inside, float)


def boundary_metrics(commanded: np.ndarray, measured: Optional[np.ndarray], source: np.ndarray) -> dict:
    """``{"commanded": {"jump": {"handover": [...], "inside": [...]}, "accel": ..., "jerk": ...},
    "measured": {...}, "handovers": n}`` for one episode (values in rad / tick^k, lists of floats)."""
    commanded = np.asarray(commanded, float)
    source = np.asarray(source)
    if commanded.ndim != 2 or len(commanded) != len(source):
        raise ValueError(f"commanded must be (T, joints) with one source per tick, got {commanded.shape} and "
                         f"{source.shape}")
    hs = handover_ticks(source)
    out: dict = {"handovers": int(len(hs))}
    for kind, q, lag in (("commanded", commanded, 0), ("measured", measured, 1)):
        if q is None:
            continue
        q = np.asarray(q, float)
        if q.shape != commanded.shape:
            raise ValueError(f"measured must have the commanded trajectory's shape {commanded.shape}, got {q.shape}")
        out[kind] = {}
        for order, name in ORDERS.items():
            at_h, inside = _split(q, source, hs, order, lag)
            out[kind][name] = {"handover": at_h.tolist(), "inside": inside.tolist()}
    return out


def summarize(episodes: Iterable[Mapping]) -> dict:
    """Pool :func:`boundary_metrics` of many episodes: for each trajectory and order, p50 / p99 / max of
    the handover values and of the inside values (NaN when there are none), and the handover count."""
    episodes = list(episodes)
    out: dict = {"handovers": int(sum(e["handovers"] for e in episodes))}
    for kind in ("commanded", "measured"):
        if not episodes or kind not in episodes[0]:
            continue
        out[kind] = {}
        for name in ORDERS.values():
            row = {}
            for where in ("handover", "inside"):
                v = np.concatenate([np.asarray(e[kind][name][where], float) for e in episodes])
                for q, label in ((50, "p50"), (99, "p99")):
                    row[f"{where}_{label}"] = float(np.percentile(v, q)) if len(v) else float("nan")
                row[f"{where}_max"] = float(v.max()) if len(v) else float("nan")
            out[kind][name] = row
    return out
