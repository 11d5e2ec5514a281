"""The noise policy of noise-space fine-tuning (DSRL, arXiv 2506.15799): a Gaussian over the initial noise
x_T of the diffusion policy's DDIM chain, conditioned on the policy's own observation features, and a critic.

With DDIM (eta 0) the chunk is a deterministic function of (observation, x_T), so choosing x_T is choosing
the chunk among those the diffusion policy can produce: the policy's weights stay untouched, and any x_T
near N(0, I) gives a chunk on the demonstrations' manifold. The mean head starts at zero and the log std
at ``init_log_std`` (0: std 1), so the untrained noise policy IS the behaviour-cloned policy (x_T ~ N(0, I)).
``kl_to_prior`` (KL to N(0, I), per noise dimension) is the regulariser that keeps it there.

Weights are plain tensors (safetensors); :meth:`NoisePolicy.describe` is what a checkpoint records to
rebuild it.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn

__all__ = ["NoisePolicy"]


def _mlp(inp: int, hidden: Sequence[int], out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = inp
    for h in hidden:
        layers += [nn.Linear(d, h), nn.Tanh()]
        d = h
    layers.append(nn.Linear(d, out))
    return nn.Sequential(*layers)


class NoisePolicy(nn.Module):
    """``pi(x_T | c)`` = N(mean(c), diag(exp(log_std))^2) over ``noise_shape`` = (T_p, A), and ``V(c)``.

    ``c`` is the diffusion policy's global conditioning (``DiffusionPolicy.encode_obs``: the normalised
    state window, plus image features for a camera policy), ``obs_dim`` values."""

    def __init__(self, obs_dim: int, noise_shape: Sequence[int], hidden: Sequence[int] = (256, 256),
                 init_log_std: float = 0.0):
        super().__init__()
        self.obs_dim = int(obs_dim)
        self.noise_shape = tuple(int(n) for n in noise_shape)
        self.hidden = [int(h) for h in hidden]
        self.init_log_std = float(init_log_std)
        self.noise_dim = int(math.prod(self.noise_shape))
        self.mean = _mlp(self.obs_dim, self.hidden, self.noise_dim)
        nn.init.zeros_(self.mean[-1].weight)  # mean 0 at start: the untrained noise policy is the BC policy
        nn.init.zeros_(self.mean[-1].bias)
        self.log_std = nn.Parameter(torch.full((self.noise_dim,), self.init_log_std))
        self.critic = _mlp(self.obs_dim, self.hidden, 1)

    def describe(self) -> dict:
        return {"obs_dim": self.obs_dim, "noise_shape": list(self.noise_shape), "hidden": self.hidden,
                "init_log_std": self.init_log_std}

    @classmethod
    def from_description(cls, d: dict) -> "NoisePolicy":
        return cls(int(d["obs_dim"]), [int(n) for n in d["noise_shape"]], [int(h) for h in d["hidden"]],
                   float(d.get("init_log_std", 0.0)))

    def policy_parameters(self) -> list[nn.Parameter]:
        return list(self.mean.parameters()) + [self.log_std]

    # ---- the distribution
    def distribution(self, obs: torch.Tensor) -> torch.distributions.Normal:
        mean = self.mean(obs)
        return torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False,
            generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(noise (B, *noise_shape), log-prob (B,)); ``deterministic`` = the mean."""
        dist = self.distribution(obs)
        if deterministic:
            flat = dist.mean
        else:
            eps = torch.randn(dist.mean.shape, generator=generator, device=obs.device)
            flat = dist.mean + dist.stddev * eps
        return flat.reshape(-1, *self.noise_shape), dist.log_prob(flat).sum(-1)

    def log_prob(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.distribution(obs).log_prob(noise.reshape(noise.shape[0], -1)).sum(-1)

    def kl_to_prior(self, obs: torch.Tensor) -> torch.Tensor:
        """KL(pi(. | c) || N(0, I)) per sample, averaged over the noise dimensions: (B,)."""
        mean = self.mean(obs)
        var = (2 * self.log_std).exp()
        return (0.5 * (mean ** 2 + var - 1.0) - self.log_std).mean(-1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)
