"""Chunk handover strategies: when the next inference starts, what it is told, and what the loop executes
once its chunk arrives. One interface, four strategies; :func:`make_handover` is the one place a name is
looked up (node parameter ``handover``, ``genil-ros eval --handover``), after :func:`resolve_handover` has
turned the default ``auto`` into the strategy that won the delay grids (``inpaint`` - replacement, no
guidance, 4 soft ticks - where the model samples with DDIM, else ``receding_horizon``).

Every strategy counts delay in control ticks consumed: ``lead`` is the number of ticks an inference is
expected to take (the node and the evaluator measure it as arrival tick - window tick of recent chunks,
:class:`genil_ros.control.timing.DelayTicks`), never a wall-clock latency converted once.

``receding_horizon`` (:class:`RecedingHorizon`)
    Diffusion Policy's loop with latency compensation: the next inference starts ``lead`` ticks before
    the current plan's T_a actions run out, and its chunk replaces the plan on arrival; its entries for
    the ticks that passed meanwhile are skipped. The seam is wherever the new chunk disagrees with the old.
``temporal_ensemble`` (:class:`TemporalEnsemble`)
    ACT's temporal ensembling: an inference starts whenever the previous one is done; every tick executes
    the weighted mean of all received chunks that cover it, chunk i (0 = oldest) weighted
    ``exp(-weight * i)``. Smooth by averaging; it also averages modes and reacts late.
``inpaint`` (:class:`InpaintPrefix`)
    Real-Time Chunking (Black et al. 2025, arXiv 2506.07339): scheduled as the receding horizon, but the
    job carries the committed prefix - the actions executed at the window's past ticks and the ones the
    current plan will execute before the new chunk can arrive (``lead`` ticks) - and the denoiser is
    guided to continue from it (:mod:`genil_ros.policy.prefix`); the rest of the current plan pulls
    softly on the following ``soft_ticks`` entries (RTC's soft mask, default 4). Measured
    (bench/handover_grid.py): the soft ticks are what make it win - at 300 ms they halve the handover jumps
    (p99 0.23 -> 0.14 rad/tick on the obstacle task) and keep pick-and-place success (0.87 vs 0.76 without,
    on the prefix-conditioned model); guidance (``guidance`` > 0) changed nothing measurable.
``prefix_conditioning`` (:class:`ConditionOnPrefix`)
    Training-time action conditioning (arXiv 2512.05964): the same schedule and prefix, given clean to a
    model trained with ``policy.prefix_conditioning`` (random delays, the prefix masked from the loss).

A strategy object holds only its settings; the state (the current plan) is the caller's, so one object
serves every episode of a batched evaluation.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from genil_ros.control.plan import ActionPlan, EnsemblePlan, Handover, Prefix
from genil_ros.errors import GenilError

SOFT_TICKS = 4  # inpainting's default soft mask: the grids' winner (README "Chunk handover under delay")

__all__ = ["HandoverStrategy", "RecedingHorizon", "ReplaceOnArrival", "TemporalEnsemble", "InpaintPrefix",
           "ConditionOnPrefix", "HANDOVERS", "SOFT_TICKS", "make_handover", "resolve_handover", "check_handover",
           "committed_prefix"]


class HandoverStrategy:
    """The interface. ``prefix_method`` says what a model must support for this strategy (None: nothing)."""

    name = "?"
    prefix_method: Optional[str] = None

    def wants_next(self, current: Optional[ActionPlan], tick: int, lead: int) -> bool:
        """Should an inference start at ``tick`` (the worker being free), given that one takes ``lead`` ticks?"""
        return current is None or current.remaining_after(tick) < lead

    def prefix(self, current: Optional[ActionPlan], tick: int, lead: int, n_obs_steps: int,
               horizon: int) -> Optional[Prefix]:
        """What the job for the window ending at ``tick`` is told about its first entries (None: nothing)."""
        return None

    def switch(self, current: Optional[ActionPlan], new: ActionPlan, tick: int) -> Handover:
        """Move from ``current`` to the chunk ``new`` that arrived at ``tick``."""
        late = current is not None and tick > current.nominal_end + 1
        new.follow(current, tick)
        return Handover(new, late, max(0, tick - new.tick))

    def describe(self) -> str:
        return self.name


class RecedingHorizon(HandoverStrategy):
    """Receding horizon with latency compensation (Diffusion Policy; the node's behaviour before strategies)."""

    name = "receding_horizon"


ReplaceOnArrival = RecedingHorizon  # the name it had when it was the only strategy


class TemporalEnsemble(HandoverStrategy):
    """ACT's temporal ensembling with weights ``exp(-weight * i)``, i = 0 for the oldest chunk."""

    name = "temporal_ensemble"

    def __init__(self, weight: float = 0.01):
        if not math.isfinite(weight):
            raise GenilError(f"parameter handover_ensemble_weight: {weight} is not a number")
        self.weight = float(weight)

    def wants_next(self, current, tick, lead) -> bool:
        return True  # as often as the worker allows

    def switch(self, current, new, tick) -> Handover:
        late = current is not None and tick > current.last_tick
        new.start = tick
        members = current.members if isinstance(current, EnsemblePlan) else ([current] if current else [])
        keep = [m for m in members if m.last_tick >= tick] + [new]
        plan = EnsemblePlan(keep, self.weight)
        plan.follow(current, tick)
        return Handover(plan, late, max(0, tick - new.tick))

    def describe(self) -> str:
        return f"{self.name} (weight {self.weight:g})"


def committed_prefix(current: Optional[ActionPlan], tick: int, lead: int, n_obs_steps: int, horizon: int,
                     soft_ticks: int = 0) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(values (T_p, A), weights (T_p,)) of the chunk for the window ending at ``tick``: entries for the
    window's past ticks and for ticks ``tick .. tick + lead - 1`` are fixed to what ``current`` executed or
    will execute; the ``soft_ticks`` entries after them get RTC's decaying weights towards the rest of
    ``current`` (``c (e^c - 1) / (e - 1)``, c falling linearly from 1 to 0). None when nothing is known."""
    if current is None:
        return None
    t0 = tick - (n_obs_steps - 1)  # the tick of entry 0
    n_fixed = n_obs_steps - 1 + max(0, lead)
    rows = []
    for e in range(min(n_fixed, horizon)):
        r = current.executed(t0 + e)
        if r is None:
            break
        rows.append(r)
    if not rows:
        return None
    values = np.zeros((horizon, rows[0].shape[0]))
    weights = np.zeros(horizon)
    values[: len(rows)] = np.stack(rows)
    weights[: len(rows)] = 1.0
    if len(rows) == n_fixed:  # the soft part follows a complete fixed part only
        for i in range(soft_ticks):
            e = n_fixed + i
            r = current.entry(t0 + e) if e < horizon else None
            if r is None:
                break
            c = 1.0 - (i + 1) / (soft_ticks + 1)
            values[e] = r
            weights[e] = c * (math.exp(c) - 1.0) / (math.e - 1.0)
    return values, weights


class InpaintPrefix(HandoverStrategy):
    """Real-Time Chunking: the receding-horizon schedule, the committed prefix inpainted by the denoiser."""

    name = "inpaint"
    prefix_method = "inpaint"

    def __init__(self, soft_ticks: int = SOFT_TICKS, guidance: float = 0.0):
        if soft_ticks < 0:
            raise GenilError(f"parameter handover_soft_ticks: {soft_ticks} must be >= 0")
        if not guidance >= 0:
            raise GenilError(f"parameter handover_guidance: {guidance} must be >= 0")
        self.soft_ticks = int(soft_ticks)
        self.guidance = float(guidance)

    def prefix(self, current, tick, lead, n_obs_steps, horizon) -> Optional[Prefix]:
        got = committed_prefix(current, tick, lead, n_obs_steps, horizon, self.soft_ticks)
        return None if got is None else Prefix(got[0], got[1], self.prefix_method, self.guidance)

    def describe(self) -> str:
        return f"{self.name} (guidance {self.guidance:g}, soft {self.soft_ticks} ticks)"


class ConditionOnPrefix(InpaintPrefix):
    """Training-time prefix conditioning: the committed prefix given clean to a model trained for it."""

    name = "prefix_conditioning"
    prefix_method = "condition"

    def __init__(self):
        super().__init__(0, 0.0)

    def describe(self) -> str:
        return self.name


HANDOVERS = ("auto", "receding_horizon", "temporal_ensemble", "inpaint", "prefix_conditioning")


def resolve_handover(name: str, prefix_methods) -> str:
    """The strategy ``name`` stands for with a model whose ``prefix_methods`` are given. ``auto`` (the
    default of the node and of ``eval``) is what won the delay grids (docs/figures/handover_*.json):
    ``inpaint`` (with the default 4 soft ticks) where the model samples with DDIM, else ``receding_horizon``."""
    if name == "auto":
        return "inpaint" if "inpaint" in prefix_methods else "receding_horizon"
    return name


def make_handover(name: str, ensemble_weight: float = 0.01, soft_ticks: int = SOFT_TICKS,
                  guidance: float = 0.0) -> HandoverStrategy:
    """The strategy called ``name`` (one of :data:`HANDOVERS` but ``auto``, see :func:`resolve_handover`)
    with its settings."""
    if name == "receding_horizon":
        return RecedingHorizon()
    if name == "temporal_ensemble":
        return TemporalEnsemble(ensemble_weight)
    if name == "inpaint":
        return InpaintPrefix(soft_ticks, guidance)
    if name == "prefix_conditioning":
        return ConditionOnPrefix()
    if name == "auto":
        raise GenilError("handover 'auto': resolve it with the model's prefix methods first (resolve_handover)")
    raise GenilError(f"handover {name!r}: not one of {', '.join(HANDOVERS)}")


def check_handover(strategy: HandoverStrategy, prefix_methods, checkpoint: str) -> None:
    """GenilError naming the parameter when the model (its ``prefix_methods``) cannot serve ``strategy``."""
    need = strategy.prefix_method
    if need and need not in prefix_methods:
        what = ("a checkpoint trained with policy.prefix_conditioning > 0" if need == "condition"
                else "a diffusion checkpoint sampled with ddim")
        others = ["receding_horizon", "temporal_ensemble"] + [n for n, m in (("inpaint", "inpaint"),)
                                                             if m in prefix_methods]
        raise GenilError(f"parameter handover: {strategy.name} needs {what}; {checkpoint} is not one "
                         f"(use {' or '.join(others)})")
