"""The action plan the control loop executes, and how it hands over from one chunk to the next.

An :class:`ActionPlan` is one predicted chunk placed on the control timeline. A handover strategy decides
when the next inference should start and what the loop executes once its chunk arrives. This module has
the receding-horizon strategy of Diffusion Policy, :class:`ReplaceOnArrival`; other strategies (temporal
ensembling of overlapping chunks, inpainting of the already committed prefix) are further classes with
the same two methods, ``wants_next`` and ``switch``.

Timeline: with the observation window ending at tick k, chunk entry ``T_o - 1`` is the action for tick
k; the plan covers ticks k .. k + T_a - 1. The next inference is started ``lead`` ticks before the plan
runs out (``lead = ceil(p90 inference latency / period)``, :func:`genil_ros.control.timing.inference_lead`),
so the next chunk normally arrives before the current one ends. When a chunk arrives at tick j > k, its
entries for ticks k .. j-1 are skipped (latency compensation). If it is late anyway, the current chunk
keeps being executed past T_a (up to its last entry) and the overrun is counted; only then does the
node hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["ActionPlan", "Handover", "ReplaceOnArrival"]


class ActionPlan:
    """A chunk predicted from the window ending at ``tick``: entry T_o-1+d is the action for tick+d."""

    def __init__(self, chunk: np.ndarray, tick: int, n_obs_steps: int, n_action_steps: int, obs_stamp_ns: int = 0):
        self.chunk = chunk
        self.tick = tick
        self.first = n_obs_steps - 1
        self.n_action_steps = n_action_steps
        self.obs_stamp_ns = obs_stamp_ns
        self.commanded = 0  # ticks commanded from this plan

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

    def actions_from(self, tick: int) -> Optional[np.ndarray]:
        """Rows for ticks tick .. nominal_end (at least the current one while past T_a), or None."""
        d = tick - self.tick
        if d < 0 or tick > self.last_tick:
            return None
        end = max(self.nominal_end, tick) - self.tick
        return self.chunk[self.first + d: self.first + end + 1]


@dataclass
class Handover:
    """What switching to a newly arrived chunk did."""

    plan: ActionPlan  # the plan to execute from now on
    late: bool  # the previous plan had run past its T_a actions before the new chunk came
    skipped: int  # actions of the new chunk for ticks that passed during its inference (not executed)


class ReplaceOnArrival:
    """Receding horizon: the next inference starts ``lead`` ticks before the current plan's T_a actions
    run out, and its chunk replaces the plan as soon as it arrives (its entries for ticks that passed
    meanwhile are skipped: latency compensation)."""

    def wants_next(self, current: Optional[ActionPlan], tick: int, lead: int) -> bool:
        """Should an inference start at ``tick``, given that one takes about ``lead`` ticks?"""
        return current is None or current.remaining_after(tick) < lead

    def switch(self, current: Optional[ActionPlan], new: ActionPlan, tick: int) -> Handover:
        """Move from ``current`` to the chunk ``new`` that arrived at ``tick``."""
        late = current is not None and tick > current.nominal_end + 1
        return Handover(new, late, max(0, tick - new.tick))
