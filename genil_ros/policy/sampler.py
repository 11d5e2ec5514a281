"""The DDIM chain with its coefficients computed once per number of steps, and warm-started chunks.

diffusers' ``DDIMScheduler`` stays the source of the schedule (its ``alphas_cumprod``, its timestep
spacing, its clipping settings); :class:`FastDdim` reads them once per ``num_steps`` into a
:class:`DdimPlan` of plain floats, so a denoising step is four tensor ops on the sample's device instead
of diffusers' per-step table look-ups, 0-dim tensor arithmetic and output objects. The arithmetic is the
one of ``DDIMScheduler.step`` with ``eta = 0``, in the same order and precision (the results match
diffusers' own loop to float32 rounding; test/test_policy_sampling.py checks it).

Warm start (few-step sampling): the chunk due next is mostly known already - the previous chunk,
shifted by the ticks that passed since it was predicted (:func:`shift_chunk`). Noise it to the level of
DDIM step ``N - k`` of the usual ``N``-step grid and run only the last ``k`` steps
(:meth:`FastDdim.warm_start`). With ``k = N`` the start is pure noise, exactly the usual sampler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

__all__ = ["DdimPlan", "FastDdim", "shift_chunk", "supports_fast_ddim"]

StepHook = Callable[[int, torch.Tensor], torch.Tensor]


def supports_fast_ddim(scheduler) -> bool:
    """True for a diffusers DDIMScheduler this module reproduces exactly (no dynamic thresholding)."""
    from diffusers import DDIMScheduler

    return (isinstance(scheduler, DDIMScheduler) and not scheduler.config.thresholding
            and scheduler.config.prediction_type in ("epsilon", "sample", "v_prediction"))


@dataclass(frozen=True)
class DdimPlan:
    """One ``num_steps`` DDIM chain: descending ``timesteps`` and, per step, the float coefficients
    ``sqrt(alpha_t)``, ``sqrt(1 - alpha_t)``, ``sqrt(alpha_prev)``, ``sqrt(1 - alpha_prev)`` (alpha =
    alphas_cumprod, computed in float32 as diffusers does)."""

    timesteps: tuple[int, ...]
    sqrt_alpha: tuple[float, ...]
    sqrt_beta: tuple[float, ...]
    sqrt_alpha_prev: tuple[float, ...]
    sqrt_beta_prev: tuple[float, ...]
    prediction_type: str
    clip: Optional[float]  # clip range of the predicted clean sample, None = no clipping

    def __len__(self) -> int:
        return len(self.timesteps)

    def step(self, i: int, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``DDIMScheduler.step(out, timesteps[i], x, eta=0).prev_sample``."""
        sa, sb = self.sqrt_alpha[i], self.sqrt_beta[i]
        if self.prediction_type == "epsilon":
            x0 = (x - sb * out) / sa
            eps = out
        elif self.prediction_type == "sample":
            x0 = out
            eps = (x - sa * x0) / sb
        else:  # v_prediction
            x0 = sa * x - sb * out
            eps = sa * out + sb * x
        if self.clip is not None:
            x0 = x0.clamp(-self.clip, self.clip)
        return self.sqrt_alpha_prev[i] * x0 + self.sqrt_beta_prev[i] * eps

    def noised(self, i: int, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x0`` noised to the level of step ``i`` (``DDIMScheduler.add_noise`` at ``timesteps[i]``)."""
        return self.sqrt_alpha[i] * x0 + self.sqrt_beta[i] * noise


class FastDdim:
    """DDIM sampling over a diffusers ``DDIMScheduler``'s schedule with precomputed coefficients.

    ``net(x, t, cond) -> out`` is the denoising network (any backend); ``t`` is a (B,) int64 tensor on
    the sample's device. Plans are cached per number of steps, the timestep tensors per device.
    """

    def __init__(self, scheduler):
        if not supports_fast_ddim(scheduler):
            raise ValueError(f"FastDdim needs a diffusers DDIMScheduler without thresholding, got "
                             f"{type(scheduler).__name__}")
        self.scheduler = scheduler
        self._plans: dict[int, DdimPlan] = {}
        self._t_dev: dict[tuple[int, str], torch.Tensor] = {}

    def plan(self, num_steps: int) -> DdimPlan:
        if num_steps not in self._plans:
            self._plans[num_steps] = self._make_plan(num_steps)
        return self._plans[num_steps]

    def _make_plan(self, n: int) -> DdimPlan:
        s = self.scheduler
        s.set_timesteps(n)  # diffusers decides the spacing
        ts = [int(t) for t in s.timesteps]
        ac = s.alphas_cumprod.to("cpu", torch.float32)
        ratio = s.config.num_train_timesteps // n
        sa, sb, sap, sbp = [], [], [], []
        for t in ts:
            a = ac[t]
            prev = t - ratio
            ap = ac[prev] if prev >= 0 else torch.as_tensor(s.final_alpha_cumprod, dtype=torch.float32)
            sa.append(float(a ** 0.5))
            sb.append(float((1 - a) ** 0.5))
            sap.append(float(ap ** 0.5))
            sbp.append(float((1 - ap) ** 0.5))
        clip = float(s.config.clip_sample_range) if s.config.clip_sample else None
        return DdimPlan(tuple(ts), tuple(sa), tuple(sb), tuple(sap), tuple(sbp), s.config.prediction_type, clip)

    def timesteps_on(self, num_steps: int, device: torch.device) -> torch.Tensor:
        key = (num_steps, str(device))
        if key not in self._t_dev:
            self._t_dev[key] = torch.tensor(self.plan(num_steps).timesteps, dtype=torch.long, device=device)
        return self._t_dev[key]

    def denoise(self, net, x: torch.Tensor, cond: torch.Tensor, num_steps: int, first: int = 0,
                hook: Optional[StepHook] = None) -> torch.Tensor:
        """Run steps ``first .. num_steps - 1`` of the ``num_steps`` chain from ``x`` (the sample at the
        level of step ``first``). ``hook(i, x)``, when given, sees (and may replace) the sample after
        each step ``i``: e.g. to re-impose a known prefix noised to ``plan.sqrt_alpha_prev[i]``."""
        plan = self.plan(num_steps)
        if not 0 <= first < len(plan):
            raise ValueError(f"first step {first} must be in 0..{len(plan) - 1}")
        tdev = self.timesteps_on(num_steps, x.device)
        B = x.shape[0]
        for i in range(first, len(plan)):
            out = net(x, tdev[i].expand(B), cond)
            x = plan.step(i, out.to(x.dtype), x)
            if hook is not None:
                x = hook(i, x)
        return x

    def warm_start(self, init: torch.Tensor, noise: torch.Tensor, num_steps: int,
                   steps: int) -> tuple[torch.Tensor, int]:
        """The start of a ``steps``-step run that ends the ``num_steps`` chain: ``init`` (a clean chunk,
        normalised) noised to the level of step ``num_steps - steps``, and that index. ``steps ==
        num_steps`` starts from ``noise`` alone (the usual sampler, whatever ``init`` holds)."""
        if not 1 <= steps <= num_steps:
            raise ValueError(f"warm-start steps {steps} must be in 1..{num_steps} (the number of inference steps)")
        first = num_steps - steps
        if first == 0:
            return noise, 0
        return self.plan(num_steps).noised(first, init, noise), first


def shift_chunk(chunk: torch.Tensor, shift: int) -> torch.Tensor:
    """The chunk (B, T_p, A) as seen ``shift`` ticks later: entry j becomes entry j + shift, the entries
    past the end repeat the last one (the arm holds its last target)."""
    if shift < 0:
        raise ValueError(f"shift {shift} must be >= 0 ticks")
    T = chunk.shape[1]
    if shift == 0:
        return chunk.clone()
    if shift >= T:
        return chunk[:, -1:].expand_as(chunk).clone()
    return torch.cat([chunk[:, shift:], chunk[:, -1:].expand(-1, shift, -1)], dim=1)
