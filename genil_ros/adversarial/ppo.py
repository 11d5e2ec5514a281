"""Proximal Policy Optimisation (clipped objective) with generalised advantage estimation.

A Gaussian MLP policy with a state-independent log-std and a separate value MLP, both on running-normalised
observations. Actions are sampled unbounded (the log-probability is that of the raw sample) and mapped
to the robot by the caller (see ``envs.ActionMap``); that is the usual continuous-control PPO recipe.

Truncated episodes (time limit) are bootstrapped by adding ``gamma * V(final obs)`` to the last reward;
terminated ones are not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from genil_ros.adversarial.discriminators import RunningNorm

__all__ = ["ActorCritic", "compute_gae", "PPO", "Rollout", "RolloutBatch"]


def _mlp(i: int, hidden: Sequence[int], o: int, out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = i
    for h in hidden:
        lin = nn.Linear(d, h)
        nn.init.orthogonal_(lin.weight, gain=np.sqrt(2))
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.Tanh()]
        d = h
    out = nn.Linear(d, o)
    nn.init.orthogonal_(out.weight, gain=out_gain)
    nn.init.zeros_(out.bias)
    layers.append(out)
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (64, 64), init_log_std: float = -0.5):
        super().__init__()
        self.obs_norm = RunningNorm(obs_dim, clip=10.0)
        self.pi = _mlp(obs_dim, hidden, act_dim, 0.01)
        self.v = _mlp(obs_dim, hidden, 1, 1.0)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))

    def dist(self, obs_n: torch.Tensor) -> torch.distributions.Normal:
        mean = self.pi(obs_n)
        return torch.distributions.Normal(mean, self.log_std.clamp(-5.0, 1.0).exp().expand_as(mean))

    def value(self, obs_n: torch.Tensor) -> torch.Tensor:
        return self.v(obs_n).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False, generator=None):
        """obs (N, obs_dim) raw -> (action (N, A), logp (N,), value (N,)) as numpy."""
        o = self.obs_norm(torch.as_tensor(obs, dtype=torch.float32))
        d = self.dist(o)
        if deterministic:
            a = d.mean
        else:
            a = d.mean + d.stddev * torch.randn(d.mean.shape, generator=generator)
        return a.numpy(), d.log_prob(a).sum(-1).numpy(), self.value(o).numpy()

    @torch.no_grad()
    def predict_value(self, obs: np.ndarray) -> np.ndarray:
        return self.value(self.obs_norm(torch.as_tensor(obs, dtype=torch.float32))).numpy()


def compute_gae(rewards: np.ndarray, values: np.ndarray, terminated: np.ndarray, episode_end: np.ndarray,
                last_values: np.ndarray, gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """GAE over (T, N) arrays. ``terminated[t]``: no bootstrap after step t; ``episode_end[t]``: the next
    row belongs to a new episode (terminated or truncated; truncation's bootstrap is already in the reward).
    Returns (advantages, returns)."""
    T = rewards.shape[0]
    adv = np.zeros_like(rewards, dtype=np.float32)
    last = np.zeros(rewards.shape[1], dtype=np.float32)
    for t in reversed(range(T)):
        next_v = last_values if t == T - 1 else values[t + 1]
        nonterm = 1.0 - terminated[t].astype(np.float32)
        cont = 1.0 - episode_end[t].astype(np.float32)
        delta = rewards[t] + gamma * next_v * nonterm * cont - values[t]
        last = delta + gamma * lam * cont * last
        adv[t] = last
    return adv, adv + values


@dataclass
class Rollout:
    """One iteration's experience from ``N`` environments over ``T`` steps, time-major: row ``t`` holds
    step ``t`` of every environment (arrays are (T, N, ...)); episodes end and restart inside it."""

    observations: np.ndarray  # (T, N, obs_dim) policy inputs, raw (the model normalises them)
    actions: np.ndarray  # (T, N, A) raw Gaussian samples u, before ActionMap turns them into joint targets
    log_probs: np.ndarray  # (T, N) log-probability of each action under the policy that collected it
    values: np.ndarray  # (T, N) the critic's V(observation) at collection time
    task_rewards: np.ndarray  # (T, N) the environment's reward
    bootstrap: np.ndarray  # (T, N) gamma * V(final observation) where an episode was truncated, else 0
    terminated: np.ndarray  # (T, N) bool: the episode ended in a terminal state (nothing to bootstrap)
    episode_ends: np.ndarray  # (T, N) bool: terminated or truncated; the next row is a new episode
    disc_features: np.ndarray  # (T, N, F) the discriminator's input for each transition
    last_observations: np.ndarray  # (N, obs_dim) policy inputs after the last step, for the GAE bootstrap
    finished_returns: list[float] = field(default_factory=list)  # task return of each episode that ended
    finished_successes: list[bool] = field(default_factory=list)  # whether it succeeded, same order

    @classmethod
    def zeros(cls, steps: int, num_envs: int, obs_dim: int, action_dim: int, feature_dim: int) -> "Rollout":
        """Storage for ``steps`` steps of ``num_envs`` environments, to be filled row by row."""
        T, N = steps, num_envs
        return cls(observations=np.zeros((T, N, obs_dim), np.float32), actions=np.zeros((T, N, action_dim), np.float32),
                   log_probs=np.zeros((T, N), np.float32), values=np.zeros((T, N), np.float32),
                   task_rewards=np.zeros((T, N), np.float32), bootstrap=np.zeros((T, N), np.float32),
                   terminated=np.zeros((T, N), bool), episode_ends=np.zeros((T, N), bool),
                   disc_features=np.zeros((T, N, feature_dim), np.float32),
                   last_observations=np.zeros((N, obs_dim), np.float32))

    @property
    def num_steps(self) -> int:
        """Transitions in the rollout, T * N."""
        return self.task_rewards.size

    def batch(self, advantages: np.ndarray, returns: np.ndarray) -> "RolloutBatch":
        """The (T, N) arrays flattened to the (T * N) minibatch source of :meth:`PPO.update`."""
        m = self.num_steps
        return RolloutBatch(self.observations.reshape(m, -1), self.actions.reshape(m, -1), self.log_probs.reshape(-1),
                            advantages.reshape(-1), returns.reshape(-1), self.values.reshape(-1))


@dataclass
class RolloutBatch:
    """A rollout flattened over time and environments: the minibatch source of :meth:`PPO.update`."""

    obs: np.ndarray  # (M, obs_dim)
    actions: np.ndarray  # (M, A) raw policy samples
    logp: np.ndarray  # (M,)
    advantages: np.ndarray  # (M,)
    returns: np.ndarray  # (M,)
    values: np.ndarray  # (M,)


class PPO:
    def __init__(self, model: ActorCritic, lr: float = 3e-4, clip: float = 0.2, epochs: int = 5,
                 minibatch_size: int = 256, value_coef: float = 0.5, entropy_coef: float = 0.0,
                 max_grad_norm: float = 0.5, seed: int = 0):
        self.model = model
        self.opt = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-5)
        self.clip = clip
        self.epochs = epochs
        self.minibatch_size = minibatch_size
        self.value_coef = value_coef
        self.entropy_coef = entropy_coef
        self.max_grad_norm = max_grad_norm
        self.rng = np.random.default_rng(seed)

    def update(self, b: RolloutBatch) -> dict:
        m = self.model
        obs = torch.as_tensor(b.obs, dtype=torch.float32)
        act = torch.as_tensor(b.actions, dtype=torch.float32)
        old_logp = torch.as_tensor(b.logp, dtype=torch.float32)
        adv_all = torch.as_tensor(b.advantages, dtype=torch.float32)
        ret = torch.as_tensor(b.returns, dtype=torch.float32)
        with torch.no_grad():
            obs_n = m.obs_norm(obs)
        n = len(obs)
        stats = {"policy_loss": [], "value_loss": [], "entropy": [], "approx_kl": [], "clip_frac": []}
        for _ in range(self.epochs):
            perm = self.rng.permutation(n)
            for s in range(0, n, self.minibatch_size):
                idx = torch.as_tensor(perm[s:s + self.minibatch_size])
                if len(idx) < 2:
                    continue
                d = m.dist(obs_n[idx])
                logp = d.log_prob(act[idx]).sum(-1)
                ratio = torch.exp(logp - old_logp[idx])
                adv = adv_all[idx]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg = -torch.min(ratio * adv, torch.clamp(ratio, 1 - self.clip, 1 + self.clip) * adv).mean()
                vloss = 0.5 * ((m.value(obs_n[idx]) - ret[idx]) ** 2).mean()
                ent = d.entropy().sum(-1).mean()
                loss = pg + self.value_coef * vloss - self.entropy_coef * ent
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(m.parameters(), self.max_grad_norm)
                self.opt.step()
                with torch.no_grad():
                    lr_ = logp - old_logp[idx]
                    stats["approx_kl"].append(((torch.exp(lr_) - 1) - lr_).mean().item())
                    stats["clip_frac"].append(((ratio - 1).abs() > self.clip).float().mean().item())
                stats["policy_loss"].append(pg.item())
                stats["value_loss"].append(vloss.item())
                stats["entropy"].append(ent.item())
        out = {k: float(np.mean(v)) if v else 0.0 for k, v in stats.items()}
        out["std"] = float(m.log_std.exp().mean().item())
        return out
