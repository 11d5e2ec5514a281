"""The DDIM chain with its coefficients computed once per timestep grid, and warm-started chunks.

diffusers' ``DDIMScheduler`` stays the source of the schedule (its ``alphas_cumprod``, its timestep
spacing, its clipping settings); :class:`FastDdim` reads them once per grid into a :class:`DdimPlan` of
plain floats, so a denoising step is four tensor ops on the sample's device instead of diffusers' per-step
table look-ups, 0-dim tensor arithmetic and output objects. The arithmetic is the one of
``DDIMScheduler.step`` with ``eta = 0``, in the same order and precision (the results match diffusers' own
loop to float32 rounding; test/test_policy_sampling.py checks it). The network is called as ``step(x, i)``
for step ``i`` of the plan, so a backend can compute everything that does not depend on ``x`` (the FiLM
vectors of every step) once per chunk.

Warm start (few-step sampling): the chunk due next is mostly known already - the previous chunk, shifted
by the ticks that passed since it was predicted (:func:`shift_chunk`). It is noised to a chosen noise
level and denoised in ``k`` steps spread evenly below that level ("trailing" spacing:
:meth:`FastDdim.warm_plan`), so the level and the number of steps are independent: one step from level
0.4 is one DDIM jump from timestep 39 to the clean chunk. Level 1 means no warm start: pure noise and the
usual ``k``-step grid.

Consistency sampling (a policy distilled by ``genil-ros distill``, policy/distill.py): the network is read
as a consistency function ``f(x, t) = c_skip(t) x + c_out(t) x0(x, t)`` that maps a sample at any
timestep of the teacher's DDIM grid straight to the end of the teacher's DDIM chain
(:class:`ConsistencySampler`). One step maps noise to a chunk; with more steps the chunk is noised again
to a lower timestep of the grid and mapped again. ``c_skip`` / ``c_out`` are the boundary-condition
scalings of latent consistency models (sigma_data 0.5, timesteps scaled by 10: f(x, 0) = x).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

__all__ = ["DdimPlan", "FastDdim", "ConsistencyPlan", "ConsistencySampler", "shift_chunk", "supports_fast_ddim",
           "boundary_scalings", "predicted_clean", "DEFAULT_WARM_NOISE", "CONSISTENCY_GRID"]

StepHook = Callable[[int, torch.Tensor], torch.Tensor]
StepNet = Callable[[torch.Tensor, int], torch.Tensor]  # (x, step index in the plan) -> network output

DEFAULT_WARM_NOISE = 0.4  # noise level of a warm start, as a fraction of the training noise schedule
CONSISTENCY_GRID = 10  # the teacher's DDIM grid a consistency policy is distilled on (and samples from)
SIGMA_DATA, TIMESTEP_SCALING = 0.5, 10.0  # consistency boundary-condition constants (as diffusers' LCMScheduler)


def predicted_clean(prediction_type: str, out, x, sqrt_alpha, sqrt_beta):
    """The clean sample the network output ``out`` implies at a noise level (floats or broadcastable
    tensors): ``DDIMScheduler``'s ``pred_original_sample``."""
    if prediction_type == "epsilon":
        return (x - sqrt_beta * out) / sqrt_alpha
    if prediction_type == "sample":
        return out
    return sqrt_alpha * x - sqrt_beta * out  # v_prediction


def boundary_scalings(t):
    """(c_skip, c_out) of a consistency function at timestep ``t`` (a number or a tensor): c_skip(0) = 1,
    c_out(0) = 0, and c_skip ~ 0 from timestep 1 on."""
    scaled = t * TIMESTEP_SCALING
    c_skip = SIGMA_DATA ** 2 / (scaled ** 2 + SIGMA_DATA ** 2)
    c_out = scaled / (scaled ** 2 + SIGMA_DATA ** 2) ** 0.5
    return c_skip, c_out


def supports_fast_ddim(scheduler) -> bool:
    """True for a diffusers DDIMScheduler this module reproduces exactly (no dynamic thresholding)."""
    from diffusers import DDIMScheduler

    return (isinstance(scheduler, DDIMScheduler) and not scheduler.config.thresholding
            and scheduler.config.prediction_type in ("epsilon", "sample", "v_prediction"))


@dataclass(frozen=True)
class DdimPlan:
    """One DDIM chain: descending ``timesteps`` and, per step, the float coefficients ``sqrt(alpha_t)``,
    ``sqrt(1 - alpha_t)``, ``sqrt(alpha_prev)``, ``sqrt(1 - alpha_prev)`` (alpha = alphas_cumprod,
    computed in float32 as diffusers does; prev = the next timestep of the chain, the final alpha after
    the last)."""

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
        x0 = predicted_clean(self.prediction_type, out, x, sa, sb)
        if self.prediction_type == "epsilon":
            eps = out
        elif self.prediction_type == "sample":
            eps = (x - sa * x0) / sb
        else:  # v_prediction
            eps = sa * out + sb * x
        if self.clip is not None:
            x0 = x0.clamp(-self.clip, self.clip)
        return self.sqrt_alpha_prev[i] * x0 + self.sqrt_beta_prev[i] * eps

    def noised(self, i: int, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x0`` noised to the level of step ``i`` (``DDIMScheduler.add_noise`` at ``timesteps[i]``)."""
        return self.sqrt_alpha[i] * x0 + self.sqrt_beta[i] * noise


class FastDdim:
    """DDIM sampling over a diffusers ``DDIMScheduler``'s schedule with precomputed coefficients.

    Plans are cached per grid (``plan(n)``: diffusers' own ``n``-step grid; ``warm_plan(k, level)``: ``k``
    steps below a noise level), the timestep tensors per device.
    """

    def __init__(self, scheduler):
        if not supports_fast_ddim(scheduler):
            raise ValueError(f"FastDdim needs a diffusers DDIMScheduler without thresholding, got "
                             f"{type(scheduler).__name__}")
        self.scheduler = scheduler
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self._plans: dict[tuple, DdimPlan] = {}
        self._t_dev: dict[tuple, torch.Tensor] = {}

    def plan(self, num_steps: int) -> DdimPlan:
        """diffusers' ``num_steps``-step DDIM grid (its ``set_timesteps`` spacing)."""
        key = ("grid", num_steps)
        if key not in self._plans:
            self.scheduler.set_timesteps(num_steps)  # diffusers decides the spacing
            self._plans[key] = self.plan_for([int(t) for t in self.scheduler.timesteps])
        return self._plans[key]

    def warm_plan(self, steps: int, level: float) -> DdimPlan:
        """``steps`` DDIM steps from noise level ``level`` (0 < level <= 1, a fraction of the training
        schedule) down to the clean sample, evenly spaced, the first at timestep ``round(level * T) - 1``.
        Level 1 (pure noise) is the usual grid, :meth:`plan`."""
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"warm-start steps {steps!r} must be an int >= 1")
        if not 0.0 < level <= 1.0:
            raise ValueError(f"warm-start noise level {level!r} must be in (0, 1] (1 = pure noise)")
        if level >= 1.0:
            return self.plan(steps)
        key = ("warm", steps, float(level))
        if key not in self._plans:
            top = max(1, min(self.num_train_timesteps, round(level * self.num_train_timesteps)))
            ts = [max(0, round(top - j * top / steps) - 1) for j in range(steps)]
            if len(set(ts)) != len(ts):
                raise ValueError(f"warm start: {steps} steps do not fit below noise level {level:g} "
                                 f"({top} of {self.num_train_timesteps} timesteps); use fewer steps")
            self._plans[key] = self.plan_for(ts)
        return self._plans[key]

    def plan_for(self, timesteps: Sequence[int]) -> DdimPlan:
        """The DDIM chain through ``timesteps`` (strictly descending, in 0 .. T - 1)."""
        s = self.scheduler
        ts = [int(t) for t in timesteps]
        if not ts or any(b >= a for a, b in zip(ts, ts[1:])) or ts[0] >= self.num_train_timesteps or ts[-1] < 0:
            raise ValueError(f"timesteps {ts} must descend strictly within 0..{self.num_train_timesteps - 1}")
        ac = s.alphas_cumprod.to("cpu", torch.float32)
        final = torch.as_tensor(s.final_alpha_cumprod, dtype=torch.float32)
        sa, sb, sap, sbp = [], [], [], []
        for i, t in enumerate(ts):
            a = ac[t]
            ap = ac[ts[i + 1]] if i + 1 < len(ts) else final
            sa.append(float(a ** 0.5))
            sb.append(float((1 - a) ** 0.5))
            sap.append(float(ap ** 0.5))
            sbp.append(float((1 - ap) ** 0.5))
        clip = float(s.config.clip_sample_range) if s.config.clip_sample else None
        return DdimPlan(tuple(ts), tuple(sa), tuple(sb), tuple(sap), tuple(sbp), s.config.prediction_type, clip)

    def timesteps_on(self, plan: DdimPlan | int, device: torch.device) -> torch.Tensor:
        """The plan's timesteps as an int64 tensor on ``device`` (cached)."""
        plan = self.plan(plan) if isinstance(plan, int) else plan
        key = (plan.timesteps, str(device))
        if key not in self._t_dev:
            self._t_dev[key] = torch.tensor(plan.timesteps, dtype=torch.long, device=device)
        return self._t_dev[key]

    def run(self, step: StepNet, x: torch.Tensor, plan: DdimPlan, first: int = 0,
            hook: Optional[StepHook] = None) -> torch.Tensor:
        """Steps ``first .. len(plan) - 1`` of ``plan`` from ``x`` (the sample at the level of step
        ``first``); ``step(x, i)`` is the network at step ``i``. ``hook(i, x)``, when given, sees (and may
        replace) the sample after each step ``i``: e.g. to re-impose a known prefix noised to
        ``plan.sqrt_alpha_prev[i]``."""
        if not 0 <= first < len(plan):
            raise ValueError(f"first step {first} must be in 0..{len(plan) - 1}")
        for i in range(first, len(plan)):
            x = plan.step(i, step(x, i).to(x.dtype), x)
            if hook is not None:
                x = hook(i, x)
        return x

    def denoise(self, net, x: torch.Tensor, cond: torch.Tensor, num_steps: int, first: int = 0,
                hook: Optional[StepHook] = None) -> torch.Tensor:
        """:meth:`run` over diffusers' ``num_steps`` grid with ``net(x, t, cond) -> out`` (``t`` a (B,)
        int64 tensor on the sample's device)."""
        plan = self.plan(num_steps)
        tdev = self.timesteps_on(plan, x.device)
        B = x.shape[0]
        return self.run(lambda xi, i: net(xi, tdev[i].expand(B), cond), x, plan, first, hook)

    def warm_start(self, init: torch.Tensor, noise: torch.Tensor, steps: int,
                   level: float = DEFAULT_WARM_NOISE) -> tuple[torch.Tensor, DdimPlan]:
        """The start of a ``steps``-step warm-started chain: ``init`` (a clean chunk, normalised) noised
        to ``level``, and the plan to run from it. Level 1 starts from ``noise`` alone (the usual sampler,
        whatever ``init`` holds)."""
        plan = self.warm_plan(steps, level)
        if level >= 1.0:
            return noise, plan
        return plan.noised(0, init, noise), plan


@dataclass(frozen=True)
class ConsistencyPlan:
    """Consistency sampling through ``timesteps`` (descending, on the teacher's DDIM grid): per step the
    noise level (``sqrt_alpha``, ``sqrt_beta``) and the boundary scalings ``c_skip``, ``c_out``."""

    timesteps: tuple[int, ...]
    sqrt_alpha: tuple[float, ...]
    sqrt_beta: tuple[float, ...]
    c_skip: tuple[float, ...]
    c_out: tuple[float, ...]
    prediction_type: str
    clip: Optional[float]

    def __len__(self) -> int:
        return len(self.timesteps)

    def clean(self, i: int, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The consistency function at step ``i``: the clean sample (clipped like DDIM's)."""
        x0 = predicted_clean(self.prediction_type, out, x, self.sqrt_alpha[i], self.sqrt_beta[i])
        if self.clip is not None:
            x0 = x0.clamp(-self.clip, self.clip)
        return self.c_skip[i] * x + self.c_out[i] * x0


class ConsistencySampler:
    """Multistep consistency sampling over a diffusers ``DDIMScheduler``'s schedule: ``plan(k)`` takes
    ``k`` evenly spaced timesteps of its ``CONSISTENCY_GRID``-step grid (1: the top one; 2: the top and
    the middle one, as diffusers' LCMScheduler picks them)."""

    def __init__(self, scheduler, grid: int = CONSISTENCY_GRID):
        if not supports_fast_ddim(scheduler):
            raise ValueError(f"consistency sampling needs a diffusers DDIMScheduler schedule, got "
                             f"{type(scheduler).__name__}")
        self.scheduler = scheduler
        self.grid_steps = min(int(grid), int(scheduler.config.num_train_timesteps))
        scheduler.set_timesteps(self.grid_steps)
        self.grid = tuple(int(t) for t in scheduler.timesteps)  # descending, e.g. 90, 80, ..., 0
        self._plans: dict[int, ConsistencyPlan] = {}

    def plan(self, steps: int) -> ConsistencyPlan:
        if not isinstance(steps, int) or not 1 <= steps <= self.grid_steps:
            raise ValueError(f"consistency steps {steps!r} must be in 1..{self.grid_steps} (the distillation grid)")
        if steps not in self._plans:
            s = self.scheduler
            ts = [self.grid[(j * self.grid_steps) // steps] for j in range(steps)]
            ac = s.alphas_cumprod.to("cpu", torch.float32)
            sa = [float(ac[t] ** 0.5) for t in ts]
            sb = [float((1 - ac[t]) ** 0.5) for t in ts]
            cs = [boundary_scalings(float(t)) for t in ts]
            clip = float(s.config.clip_sample_range) if s.config.clip_sample else None
            self._plans[steps] = ConsistencyPlan(tuple(ts), tuple(sa), tuple(sb), tuple(c[0] for c in cs),
                                                 tuple(c[1] for c in cs), s.config.prediction_type, clip)
        return self._plans[steps]

    def run(self, step: StepNet, x: torch.Tensor, plan: ConsistencyPlan,
            generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """From noise ``x`` (taken as the sample at ``plan.timesteps[0]``) to a clean sample; between
        steps the clean estimate is noised to the next timestep with fresh noise from ``generator``."""
        from diffusers.utils.torch_utils import randn_tensor

        for i in range(len(plan)):
            x0 = plan.clean(i, step(x, i).to(x.dtype), x)
            if i + 1 == len(plan):
                return x0
            noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = plan.sqrt_alpha[i + 1] * x0 + plan.sqrt_beta[i + 1] * noise
        return x


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
