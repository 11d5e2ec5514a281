"""Sampling a chunk whose first entries are already decided, and training a policy to be told them.

The control loop commits actions before the next chunk can arrive: those executed at the past ticks of
the observation window and those the current plan executes while the inference runs (its ``lead`` ticks).
A chunk that ignores them jumps where the loop switches to it. Two ways to make the new chunk continue
from them (the committed prefix, :class:`genil_ros.control.plan.Prefix`, stacked here as a
:class:`PrefixBatch`):

Inpainting at inference (Real-Time Chunking, Black et al. 2025, arXiv 2506.07339), for this project's
DDIM sampler and epsilon (or sample) prediction. RTC guides a flow-matching policy with a
pseudo-inverse (PiGDM) correction of its velocity. Here, at DDIM step i with noise level
``x_t = sqrt(a) x0 + sqrt(1 - a) eps`` (``sa``, ``sb``):

1. the network gives ``eps`` and the clean estimate ``x0 = (x_t - sb eps) / sa``;
2. guidance (``guidance`` = beta > 0, torch backend): ``g = J^T W (y - x0)``, the vector-Jacobian
   product of ``x0`` w.r.t. ``x_t`` with the weighted error against the prefix ``y`` (one backward pass
   through the U-Net), is added to the score: ``eps <- eps - sb * lam * g``, ``lam = min(beta, a / (1 - a))``.
   With ``J ~ I / sa`` this moves ``x0`` by ``W (y - x0)`` (the whole error) where the signal dominates,
   less at high noise, never more than beta; through the off-diagonal part of J the entries after the
   prefix move with it - that is what makes the chunk *continue* from the prefix, not just contain it;
3. replacement: ``x0`` of the fixed entries (weight 1) is set to ``y`` and soft entries are pulled
   ``x0 <- x0 + w (y - x0)``; then the usual DDIM update ``x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps``.
   The fixed entries of every intermediate sample are thus the prefix noised with the model's own noise
   estimate, and the final chunk holds the prefix exactly.

With ``guidance = 0`` only step 3 runs (replacement inpainting): no backward pass, any backend.

What was found on the shipped obstacle policy (bench/handover_grid.py, docs/figures/handover_obstacle.json):
a trained denoiser's x0 estimate is far less sensitive to ``x_t`` than ``I / sa`` (at the first steps the
correction moved x0 by ~5% of the prefix error), so this guidance changes the chunk little beyond what
replacement already does; PiGDM's own weight ``1 / (1 - a)`` (clipped at beta) overshot instead: 10
episodes at 300 ms, success 0.7 and 1.3 rad jumps. The weight above is the stable one.

Prefix conditioning at training time (arXiv 2512.05964, ``policy.prefix_conditioning = D > 0``): the
U-Net gets one more input channel, a mask of the fixed entries. For each training sample a prefix length
n is drawn uniformly from 0 .. T_o - 1 + D (no prefix, the window's past actions, plus up to D ticks of
delay); the first n entries of the noised chunk are replaced by the clean actions, the mask marks them,
and the loss is taken over the other entries only. At run time the committed prefix is given the same
way (clean, masked) at every denoising step; without a prefix the mask is zero, a plain diffusion policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PrefixBatch", "sample_with_prefix", "conditioned_loss", "with_mask_channel", "prefix_methods", "METHODS"]

METHODS = ("inpaint", "condition")


def prefix_methods(policy) -> tuple:
    """What a committed prefix can be used for with ``policy``: () unless it is a diffusion policy that
    samples with DDIM; ``inpaint`` then; ``condition`` too when it was trained with prefix conditioning."""
    if getattr(policy, "_fast", None) is None or getattr(policy, "objective", "diffusion") == "mse":
        return ()
    return ("inpaint",) + (("condition",) if getattr(policy, "prefix_conditioning", 0) else ())


@dataclass
class PrefixBatch:
    """Committed prefixes of a batch of chunks: ``values`` (B, T_p, A) raw units, ``weights`` (B, T_p)
    (1 fixed, (0, 1) soft, 0 free), one ``method`` for the batch, ``guidance`` (inpainting's beta)."""

    values: torch.Tensor
    weights: torch.Tensor
    method: str
    guidance: float = 0.0

    @classmethod
    def stack(cls, prefixes: Sequence, horizon: int, action_dim: int, guidance: float = 0.0) -> Optional["PrefixBatch"]:
        """From one :class:`genil_ros.control.plan.Prefix` (or None: no prefix) per chunk of the batch;
        None when no chunk has one."""
        given = [p for p in prefixes if p is not None]
        if not given:
            return None
        methods = {p.method for p in given}
        if len(methods) != 1 or next(iter(methods)) not in METHODS:
            raise ValueError(f"prefix methods {sorted(methods)}: one of {METHODS} per batch")
        values = np.zeros((len(prefixes), horizon, action_dim), np.float32)
        weights = np.zeros((len(prefixes), horizon), np.float32)
        for i, p in enumerate(prefixes):
            if p is None:
                continue
            if p.values.shape != (horizon, action_dim) or p.weights.shape != (horizon,):
                raise ValueError(f"prefix {i}: values {p.values.shape} / weights {p.weights.shape}, expected "
                                 f"({horizon}, {action_dim}) / ({horizon},)")
            values[i], weights[i] = p.values, p.weights
        guidance = max([guidance] + [float(getattr(p, "guidance", 0.0)) for p in given])
        return cls(torch.from_numpy(values), torch.from_numpy(weights), next(iter(methods)), guidance)

    def repeat(self, k: int) -> "PrefixBatch":
        """Each chunk's prefix ``k`` times (K samples per observation)."""
        if k == 1:
            return self
        return PrefixBatch(self.values.repeat_interleave(k, 0), self.weights.repeat_interleave(k, 0), self.method,
                           self.guidance)


def with_mask_channel(x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x`` (B, T, A) with the prefix mask (B, T) as one more channel (zeros when None)."""
    m = torch.zeros(x.shape[:2], dtype=x.dtype, device=x.device) if mask is None else mask.to(x.dtype)
    return torch.cat([x, m[..., None]], dim=-1)


def _x0_eps(prediction_type: str, out: torch.Tensor, x: torch.Tensor, sa: float, sb: float):
    if prediction_type == "epsilon":
        return (x - sb * out) / sa, out
    if prediction_type == "sample":
        return out, (x - sa * out) / sb
    raise ValueError(f"prefix sampling supports epsilon and sample prediction, not {prediction_type!r}")


def _guided(policy, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
            sa: float, sb: float, beta: float):
    """(x0, eps) at this step with the PiGDM-style correction of the score (eager torch, one backward pass)."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        net_in = with_mask_channel(xr) if policy.prefix_conditioning else xr  # inpainting: no prefix told
        out = policy.model(net_in, t, cond).float()
        x0, eps = _x0_eps(policy.prediction_type, out, xr, sa, sb)
        g, = torch.autograd.grad(x0, xr, grad_outputs=w[..., None] * (y - x0.detach()))
    lam = min(beta, (sa * sa) / max(sb * sb, 1e-12))
    eps = eps.detach() - sb * lam * g
    return (x - sb * eps) / sa, eps


@torch.no_grad()
def sample_with_prefix(policy, x: torch.Tensor, cond: torch.Tensor, prefix: PrefixBatch) -> torch.Tensor:
    """Denoise ``x`` (B, T_p, A, the start noise) to a normalised chunk whose first entries follow
    ``prefix`` (module docstring); DDIM with ``policy.num_inference_steps`` steps."""
    fast = policy._fast
    if fast is None:
        raise ValueError(f"a committed prefix needs the ddim scheduler (this policy samples with "
                         f"{policy.inference_scheduler_name}; set_inference('ddim', N))")
    if prefix.method == "condition" and not policy.prefix_conditioning:
        raise ValueError("prefix method 'condition' needs a policy trained with policy.prefix_conditioning > 0")
    dev = x.device
    y = policy.normalizer.clamp("action", policy.normalizer.normalize("action", prefix.values.to(dev, torch.float32)))
    w = prefix.weights.to(dev, torch.float32)
    fixed = (w >= 1.0)[..., None]
    plan = fast.plan(policy.num_inference_steps)
    tdev = fast.timesteps_on(plan, dev)
    B = x.shape[0]
    guided = prefix.method == "inpaint" and prefix.guidance > 0 and bool((w > 0).any())
    # the conditioning of every step computed once per chunk (none needed when guidance runs the eager model);
    # told the prefix, the network gets its mask; inpainting goes through the policy's own per-chunk net
    step = (None if guided else policy.backend.chunk_net(cond, tdev) if prefix.method == "condition"
            else policy._chunk_net(cond, tdev))
    for i in range(len(plan)):
        sa, sb = plan.sqrt_alpha[i], plan.sqrt_beta[i]
        if prefix.method == "condition":
            x = torch.where(fixed, y, x)
            out = step(with_mask_channel(x, fixed[..., 0]), i).float()
            x0, eps = _x0_eps(policy.prediction_type, out, x, sa, sb)
        elif guided:
            x0, eps = _guided(policy, x, tdev[i].expand(B), cond, y, w, sa, sb, prefix.guidance)
        else:
            out = step(x, i).float()
            x0, eps = _x0_eps(policy.prediction_type, out, x, sa, sb)
        if plan.clip is not None:
            x0 = x0.clamp(-plan.clip, plan.clip)
        if prefix.method == "inpaint":
            x0 = x0 + w[..., None] * (y - x0)  # weight 1: replaced; soft weights: pulled
        x = plan.sqrt_alpha_prev[i] * x0 + plan.sqrt_beta_prev[i] * eps
    return torch.where(fixed, y, x)


def conditioned_loss(policy, x0: torch.Tensor, cond: torch.Tensor,
                     generator: Optional[torch.Generator]) -> torch.Tensor:
    """The prefix-conditioning training loss on normalised chunks ``x0`` (B, T_p, A) (module docstring)."""
    B, T, A = x0.shape
    dev = x0.device
    gdev = generator.device if generator is not None else dev
    noise = torch.randn(x0.shape, generator=generator, device=gdev).to(dev)
    t = torch.randint(0, policy.noise_scheduler.config.num_train_timesteps, (B,), generator=generator,
                      device=gdev).to(dev)
    n_max = min(T - 1, policy.n_obs_steps - 1 + policy.prefix_conditioning)
    n = torch.randint(0, n_max + 1, (B,), generator=generator, device=gdev).to(dev)
    mask = torch.arange(T, device=dev)[None] < n[:, None]  # (B, T): the given entries
    noisy = torch.where(mask[..., None], x0, policy.noise_scheduler.add_noise(x0, noise, t))
    pred = policy.model(with_mask_channel(noisy, mask), t, cond)
    target = noise if policy.prediction_type == "epsilon" else x0
    free = (~mask)[..., None].to(pred.dtype)
    err = F.mse_loss(pred.float(), target, reduction="none") * free
    return err.sum() / (free.sum() * A).clamp_min(1.0)
