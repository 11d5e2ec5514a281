"""Input streams on the control timeline: the messages of each topic as received, the sample of every
observation entry at a control tick (zero-order hold by header stamp), and the window of the last T_o
samples the policy sees.

Input floods: a subscription callback only appends the message, its header stamp and its receive time
to its topic's :class:`TopicRing` (constant, small work: no decoding, no copying, no lock), so a robot
publishing joint states at 1 kHz and VGA images at 60 Hz costs the node one append per message. Decoding
happens at the control tick, and only for what the tick uses: each observation entry decodes the newest
message of its topic stamped no later than the tick (then older ones only if that one is bad), each
message at most once per entry (the result, or the error, is kept with the message). An image is decoded
and resized once per message the tick uses, not once per message received.

Several entries may read one topic (joint positions, velocities and the gripper from ``/joint_states``):
one subscription, one ring; each entry takes the newest message it can use, so joint states that arrive
from two publishers on one topic work too.

An entry whose newest usable message is older than ``max_staleness_s`` at a tick, or that has none, makes
the tick stale; the reason names the entry and its topic. The node then clears the window and holds until
it has T_o fresh ticks again. Plain Python and numpy (no ROS): the decoders are passed in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from genil_ros.errors import GenilError

__all__ = ["TopicRing", "InputEntry", "ObsSample", "ObservationWindow", "sample_inputs"]


class _Slot:
    """One received message and what each entry made of it (decoded at most once per entry)."""

    __slots__ = ("stamp_ns", "recv_ns", "msg", "results", "rejected")

    def __init__(self, stamp_ns: int, recv_ns: int, msg: Any):
        self.stamp_ns = stamp_ns
        self.recv_ns = recv_ns
        self.msg = msg
        self.results: Optional[dict] = None  # entry name -> (ok, value or error text)
        self.rejected = False


class TopicRing:
    """The last ``maxlen`` messages of one topic, in arrival order, undecoded."""

    def __init__(self, topic: str, maxlen: int = 256):
        self.topic = topic
        self._q: deque[_Slot] = deque(maxlen=maxlen)
        self.received = 0  # messages appended
        self.decoded = 0  # decoder calls (at most one per message and entry, only for what ticks use)
        self.rejected = 0  # messages some entry could not use (counted once per message)

    def add(self, stamp_ns: int, recv_ns: int, msg: Any) -> None:
        """Called by the subscription: O(1), nothing decoded."""
        self._q.append(_Slot(stamp_ns, recv_ns, msg))
        self.received += 1

    def newest_first(self) -> Iterator[_Slot]:
        """The messages by header stamp, newest first (the later arrival first among equal stamps); a
        snapshot, safe even if a callback appends meanwhile. Nearly always in order already: O(n)."""
        items = list(enumerate(self._q))
        items.sort(key=lambda x: (x[1].stamp_ns, x[0]), reverse=True)
        return (slot for _, slot in items)

    def newest_stamp(self) -> Optional[int]:
        return max((s.stamp_ns for s in list(self._q)), default=None)

    def __len__(self) -> int:
        return len(self._q)

    def clear(self) -> None:
        self._q.clear()


@dataclass
class InputEntry:
    """One observation entry as the node reads it: its topic's ring, its decoder (message -> value; a
    GenilError's text must name the entry and topic, e.g. from :meth:`label`) and where its value goes (a
    slice of ``state``, or an image)."""

    name: str
    topic: str
    ring: TopicRing
    decode: Callable[[Any], np.ndarray]
    state_slice: Optional[slice] = None  # None: a camera

    @property
    def is_camera(self) -> bool:
        return self.state_slice is None

    def label(self) -> str:
        return f"observation {self.name!r} ({self.topic})"

    def value_of(self, slot: _Slot) -> tuple[bool, Any]:
        """(True, value) or (False, why): the slot's message decoded for this entry, once."""
        if slot.results is None:
            slot.results = {}
        got = slot.results.get(self.name)
        if got is None:
            self.ring.decoded += 1
            try:
                got = (True, self.decode(slot.msg))
            except Exception as e:  # a decoder's GenilError, or a library's error on a malformed message
                text = str(e) if isinstance(e, GenilError) else f"{self.label()}: {type(e).__name__}: {e}"
                got = (False, text)
                if not slot.rejected:
                    slot.rejected = True
                    self.ring.rejected += 1
            slot.results[self.name] = got
        return got


@dataclass
class ObsSample:
    """Every input as sampled at one control tick."""

    tick: int
    tick_ns: int
    state: np.ndarray  # the low-dim entries concatenated in layout order, float32
    images: dict  # camera name -> (H, W, 3) uint8
    oldest_stamp_ns: int  # the oldest of the input stamps used at this tick


def _sample_entry(entry: InputEntry, now_ns: int, tol_ns: int, max_age_ns: int) -> tuple[Optional[tuple], str]:
    """((stamp, value), "") for the newest usable message, or (None, why not)."""
    newest_ahead: Optional[int] = None
    error = ""
    seen = False
    for slot in entry.ring.newest_first():
        seen = True
        if slot.stamp_ns > now_ns + tol_ns:
            newest_ahead = slot.stamp_ns if newest_ahead is None else max(newest_ahead, slot.stamp_ns)
            continue
        if now_ns - slot.stamp_ns > max_age_ns:
            break  # older ones are stale anyway: not decoded
        ok, value = entry.value_of(slot)
        if ok:
            return (slot.stamp_ns, value), ""
        error = error or value  # the newest message's error
    if error:
        return None, error
    if not seen:
        return None, f"{entry.label()}: no message received yet"
    newest = entry.ring.newest_stamp()
    if newest_ahead is not None and (newest is None or newest == newest_ahead):
        return None, (f"{entry.label()}: stamps are {(newest_ahead - now_ns) / 1e9:.2f} s ahead of this node's "
                      f"clock (use_sim_time set on one side only?)")
    return None, f"{entry.label()}: newest message is {(now_ns - newest) / 1e9:.2f} s old"


def sample_inputs(entries: Sequence[InputEntry], tick: int, now_ns: int, tol_ns: int, max_age_s: float,
                  ages: dict) -> tuple[Optional[ObsSample], Optional[str]]:
    """Sample every entry at tick time ``now_ns``: ``(sample, None)``, or ``(None, why not)`` for the first
    entry that is missing, ahead of the clock, bad or older than ``max_age_s``.

    Each entry uses the newest message of its topic stamped no later than ``now_ns + tol_ns`` that it can
    decode (zero-order hold by header stamp); ``ages[entry name]`` is set to its age in seconds."""
    max_age_ns = int(max_age_s * 1e9)
    state_len = max((e.state_slice.stop for e in entries if e.state_slice is not None), default=0)
    state = np.zeros(state_len, np.float32)
    images: dict = {}
    oldest = now_ns
    for entry in entries:
        got, why = _sample_entry(entry, now_ns, tol_ns, max_age_ns)
        if got is None:
            if why.endswith(" old"):
                why += f" (max_staleness_s {max_age_s:g})"
            return None, why
        stamp, value = got
        ages[entry.name] = (now_ns - stamp) / 1e9
        if entry.is_camera:
            images[entry.name] = value
        else:
            state[entry.state_slice] = value
        oldest = min(oldest, stamp)
    return ObsSample(tick, now_ns, state, images, oldest), None


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
