"""The action plan the control loop executes: predicted chunks placed on the control timeline.

Timeline: a chunk predicted from the observation window ending at tick k has its entry ``T_o - 1 + d``
for tick k + d (entries 0 .. T_o - 2 are for the ticks of the window before k, already past). Its T_a
"nominal" actions cover ticks k .. k + T_a - 1; the entries after that are used only while the next chunk
is late (an overrun, counted by the node), up to the chunk's last entry.

An :class:`ActionPlan` is one chunk on that timeline, executed from the tick it arrived at (``start``);
``prev`` keeps the plan executed before it, so :meth:`ActionPlan.executed` knows what was commanded at the
last few ticks (the committed prefix of the next chunk). An :class:`EnsemblePlan` executes a weighted mean
of several overlapping chunks (temporal ensembling). How the loop moves from one plan to the next is a
handover strategy (:mod:`genil_ros.control.handover`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

__all__ = ["ActionPlan", "EnsemblePlan", "Handover", "Prefix"]

_ids = itertools.count(1)


class ActionPlan:
    """A chunk predicted from the window ending at ``tick``: entry T_o-1+d is the action for tick+d."""

    def __init__(self, chunk: np.ndarray, tick: int, n_obs_steps: int, n_action_steps: int, obs_stamp_ns: int = 0):
        self.chunk = chunk
        self.tick = tick
        self.first = n_obs_steps - 1
        self.n_action_steps = n_action_steps
        self.obs_stamp_ns = obs_stamp_ns
        self.commanded = 0  # ticks commanded from this plan
        self.id = next(_ids)  # which chunk an executed action came from (the boundary metric's "source")
        self.start = tick  # the first tick executed from this plan (its arrival tick, set by a handover)
        self.prev: Optional[ActionPlan] = None  # the plan executed before this one (its last ticks)

    @property
    def source(self) -> int:
        """The id of the (newest) chunk the actions of this plan come from."""
        return self.id

    @property
    def nominal_end(self) -> int:
        """The last tick of the T_a executed actions."""
        return self.tick + self.n_action_steps - 1

    @property
    def last_tick(self) -> int:
        """The last tick the chunk has an entry for (used only when the next chunk is late)."""
        return self.tick + self.chunk.shape[0] - 1 - self.first

    def remaining_after(self, tick: int) -> int:
        return self.nominal_end - tick

    def entry(self, tick: int) -> Optional[np.ndarray]:
        """The chunk's row for ``tick`` (past ticks of the window included), or None outside the chunk."""
        e = tick - self.tick + self.first
        return self.chunk[e] if 0 <= e < self.chunk.shape[0] else None

    def executed(self, tick: int) -> Optional[np.ndarray]:
        """The action executed (or due) at ``tick``: this plan's from ``start`` on, the previous plan's before."""
        if tick >= self.start:
            return self.entry(tick)
        return self.prev.executed(tick) if self.prev is not None else None

    def actions_from(self, tick: int) -> Optional[np.ndarray]:
        """Rows for ticks tick .. nominal_end (at least the current one while past T_a), or None."""
        d = tick - self.tick
        if d < 0 or tick > self.last_tick:
            return None
        end = max(self.nominal_end, tick) - self.tick
        return self.chunk[self.first + d: self.first + end + 1]

    def follow(self, previous: Optional["ActionPlan"], tick: int) -> None:
        """Start executing this plan at ``tick``, after ``previous`` (kept two plans deep for :meth:`executed`)."""
        self.start = tick
        self.prev = previous
        if previous is not None and previous.prev is not None:
            previous.prev.prev = None


class EnsemblePlan(ActionPlan):
    """Temporal ensembling (ACT): each tick executes the weighted mean of every chunk received that has
    an entry for it, chunk ``i`` (0 = the oldest) weighted ``exp(-weight * i)`` - a positive weight
    favours the older chunks, as in ACT. The newest chunk sets the plan's timeline (its T_a, its end)."""

    def __init__(self, members: Sequence[ActionPlan], weight: float):
        newest = members[-1]
        super().__init__(newest.chunk, newest.tick, newest.first + 1, newest.n_action_steps, newest.obs_stamp_ns)
        self.id = newest.id
        self.members = list(members)
        self.weight = float(weight)

    def actions_from(self, tick: int) -> Optional[np.ndarray]:
        if tick < self.tick or tick > self.last_tick:
            return None
        rows = []
        for t in range(tick, max(self.nominal_end, tick) + 1):
            got = [r for r in (m.entry(t) for m in self.members if t >= m.start) if r is not None]  # oldest first
            w = np.exp(-self.weight * np.arange(len(got)))
            rows.append(np.tensordot(w / w.sum(), np.stack(got), axes=1))
        return np.stack(rows)

    def executed(self, tick: int) -> Optional[np.ndarray]:
        rows = self.actions_from(tick) if tick >= self.start else None
        if rows is not None:
            return rows[0]
        return self.prev.executed(tick) if self.prev is not None else None


@dataclass
class Handover:
    """What switching to a newly arrived chunk did."""

    plan: ActionPlan  # the plan to execute from now on
    late: bool  # the previous plan had run past its T_a actions before the new chunk came
    skipped: int  # actions of the new chunk for ticks that passed during its inference (not executed)


@dataclass
class Prefix:
    """What a job asks of a prefix-aware model: the first entries of the chunk it predicts are already
    decided (executed, or due before the chunk can arrive).

    ``values`` (T_p, A) raw units; ``weights`` (T_p,) per entry: 1 = fixed (the leading committed entries),
    between 0 and 1 = pulled towards the value (soft guidance, inpainting only), 0 = free. ``method``:
    ``"inpaint"`` (guided denoising of a model trained without prefixes) or ``"condition"`` (a model
    trained with prefix conditioning is given the fixed entries clean); ``guidance``: inpainting's
    guidance strength (0: replacement only, see :mod:`genil_ros.policy.prefix`)."""

    values: np.ndarray
    weights: np.ndarray
    method: str
    guidance: float = 0.0

    @property
    def n_fixed(self) -> int:
        """How many leading entries are fixed."""
        free = np.flatnonzero(self.weights < 1.0)
        return int(free[0]) if len(free) else int(len(self.weights))
