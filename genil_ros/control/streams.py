"""Input streams on the control timeline: buffers sorted by header stamp, the sample of every input at a
control tick (zero-order hold), and the window of the last T_o samples the policy sees.

Every control tick samples the newest joint state and camera frame whose header stamp is not after the
tick (aligned by header stamps; the node uses the receive time when a stamp is zero) into a window of
consecutive ticks. An input older than ``max_staleness_s`` at a tick, or missing, makes the tick stale:
the node clears the window and holds until it has T_o fresh ticks again.
"""

from __future__ import annotations

from bisect import insort
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

__all__ = ["StreamBuffer", "CameraInput", "ObsSample", "ObservationWindow", "sample_inputs"]


class StreamBuffer:
    """Recent messages of one input stream, kept sorted by header stamp (ns)."""

    def __init__(self, name: str, maxlen: int = 64):
        self.name = name
        self.maxlen = maxlen
        self._items: list[tuple[int, int, Any]] = []  # (stamp_ns, seq, value)
        self._seq = 0
        self.received = 0
        self.rejected = 0
        self.last_error: Optional[str] = None
        self.last_error_ns = -1
        self.last_good_ns = -1

    def add(self, stamp_ns: int, value: Any, now_ns: int) -> None:
        self._seq += 1
        insort(self._items, (int(stamp_ns), self._seq, value), key=lambda x: (x[0], x[1]))
        if len(self._items) > self.maxlen:
            del self._items[: len(self._items) - self.maxlen]
        self.received += 1
        self.last_good_ns = now_ns

    def reject(self, error: str, now_ns: int) -> None:
        self.rejected += 1
        self.last_error = error
        self.last_error_ns = now_ns

    def sample(self, t_ns: int, tol_ns: int = 0) -> Optional[tuple[int, Any]]:
        """The newest (stamp, value) with stamp <= t + tol, or None."""
        for stamp, _, value in reversed(self._items):
            if stamp <= t_ns + tol_ns:
                return stamp, value
        return None

    def newest_stamp(self) -> Optional[int]:
        return self._items[-1][0] if self._items else None

    def clear(self) -> None:
        self._items.clear()


@dataclass
class CameraInput:
    """One camera input: where it comes from, the policy's image size for it, and its buffer."""

    name: str
    topic: str
    compressed: bool  # sensor_msgs/CompressedImage instead of Image
    height: int
    width: int
    buffer: StreamBuffer = field(init=False)

    def __post_init__(self):
        self.buffer = StreamBuffer(self.topic)


@dataclass
class ObsSample:
    """Every input as sampled at one control tick."""

    tick: int
    tick_ns: int
    state: np.ndarray
    images: dict  # camera name -> (H, W, 3) uint8
    oldest_stamp_ns: int  # the oldest of the input stamps used at this tick


def sample_inputs(state: StreamBuffer, images: Mapping[str, StreamBuffer], tick: int, now_ns: int, tol_ns: int,
                  max_age_s: float, ages: dict) -> tuple[Optional[ObsSample], Optional[str]]:
    """Sample every input at tick time ``now_ns``: ``(sample, None)``, or ``(None, why not)`` when an input
    is missing, ahead of the clock or older than ``max_age_s``.

    Each input's newest message stamped no later than ``now_ns + tol_ns`` is used (zero-order hold by
    header stamp); ``ages[buffer.name]`` is set to its age in seconds at this tick."""
    values: dict[Optional[str], Any] = {}
    oldest = now_ns
    streams = [(state, "joint state", None)] + [(buf, "image", name) for name, buf in images.items()]
    for buf, kind, key in streams:
        got = buf.sample(now_ns, tol_ns)
        if got is None:
            newest = buf.newest_stamp()
            if newest is not None:
                why = (f"{buf.name}: {kind} stamps are {(newest - now_ns) / 1e9:.2f} s ahead of this node's clock "
                       f"(use_sim_time set on one side only?)")
            elif buf.last_error:
                why = buf.last_error
            else:
                why = f"{buf.name}: no {kind} received yet"
            return None, why
        stamp, value = got
        age = (now_ns - stamp) / 1e9
        ages[buf.name] = age
        if age > max_age_s:
            if buf.last_error and buf.last_error_ns > buf.last_good_ns:
                return None, buf.last_error
            return None, f"{buf.name}: newest {kind} is {age:.2f} s old (max_staleness_s {max_age_s:g})"
        values[key] = value
        oldest = min(oldest, stamp)
    cams = {k: v for k, v in values.items() if k is not None}
    return ObsSample(tick, now_ns, values[None], cams, oldest), None


class ObservationWindow:
    """The last T_o samples on consecutive control ticks."""

    def __init__(self, n_obs_steps: int):
        self.n = n_obs_steps
        self._q: deque[ObsSample] = deque(maxlen=n_obs_steps)

    def push(self, s: ObsSample) -> None:
        if self._q and self._q[-1].tick != s.tick - 1:
            self._q.clear()
        self._q.append(s)

    def clear(self) -> None:
        self._q.clear()

    def full(self) -> bool:
        return len(self._q) == self.n

    def last(self) -> Optional[ObsSample]:
        return self._q[-1] if self._q else None

    def as_obs(self) -> dict:
        """The window as the model's input: ``{"state": (T_o, D) float32, "<camera>": (T_o, 3, H, W) uint8}``."""
        obs = {"state": np.stack([s.state for s in self._q]).astype(np.float32)}
        for name in self._q[-1].images:
            obs[name] = np.stack([np.transpose(s.images[name], (2, 0, 1)) for s in self._q])
        return obs
