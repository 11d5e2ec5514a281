"""GAIL and AMP discriminators, their objectives and rewards, running input normalisation and the
replay buffer of policy transitions.

Features (what the discriminator sees) are built only from what a rosbag records, so that expert data
from bags and policy rollouts from the sim (or a real arm) are comparable:

- ``state``  : the dataset's low-dim state = joint positions in ``task.joint_names`` order
               (+ joint velocities when ``task.use_velocity``), exactly ``EpisodeStore`` ``"state"``.
- ``action`` : absolute joint position targets (``EpisodeStore`` ``"action"``).

GAIL (Ho & Ermon 2016) scores state-action pairs: ``x = [s, a - q]`` where ``q`` are the joint
positions in ``s`` (the commanded step, which carries the "style" of the motion and does not depend on
where in the workspace the arm is). Objective: binary cross-entropy, expert -> 1, policy -> 0, on logits
``l``; ``D = sigmoid(l)``; reward ``-log(1 - D) = softplus(l)``.

AMP (Peng et al. 2021) scores state transitions (s, s'), fed as ``x = [s, s' - s]`` (see ``amp_features``). Objective: least squares, expert -> +1,
policy -> -1, plus ``w_gp / 2 * E_expert[ ||grad_x D||^2 ]`` (the gradient penalty on expert samples);
style reward ``max(0, 1 - 0.25 (D - 1)^2)``. Total reward ``w_G * task + w_S * style``.

Both add the stabilisers of the reference implementations: a logit regulariser (squared weights of the
output layer), an L2 weight decay on every weight, running mean/std input normalisation, a replay buffer
of past policy transitions (so D does not overfit the latest policy), and accuracy logging.
The gradient penalty is taken with respect to the *normalised* input (what the network sees).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "RunningNorm",
    "ReplayBuffer",
    "Discriminator",
    "DiscriminatorTrainer",
    "gail_features",
    "amp_features",
    "gail_loss_from_logits",
    "amp_loss_from_outputs",
    "gail_reward_from_logits",
    "amp_style_reward",
    "combine_rewards",
]


# --------------------------------------------------------------------------- features


def gail_features(state: np.ndarray, action: np.ndarray, num_joints: int) -> np.ndarray:
    """GAIL input ``[s, a - q]`` (q = the first ``num_joints`` entries of s, the joint positions)."""
    state = np.asarray(state, dtype=np.float32)
    action = np.asarray(action, dtype=np.float32)
    return np.concatenate([state, action - state[..., :num_joints]], axis=-1).astype(np.float32)


def amp_features(state: np.ndarray, next_state: np.ndarray) -> np.ndarray:
    """AMP input for the transition (s, s'): ``[s, s' - s]``.

    The same information as ``[s, s']``, but after per-dimension normalisation the per-tick change is on
    the scale of its own spread instead of being a tiny difference of two large, almost equal inputs;
    with positions-only states (bags without velocities) that is what lets D see the motion under the
    gradient penalty."""
    state = np.asarray(state, np.float32)
    return np.concatenate([state, np.asarray(next_state, np.float32) - state], axis=-1)


# --------------------------------------------------------------------------- objectives and rewards


def gail_loss_from_logits(expert_logits: torch.Tensor, policy_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy, expert labelled 1 and policy 0: ``-mean log D(e) - mean log(1 - D(p))``
    (each half averaged over its own batch, then summed)."""
    return (F.binary_cross_entropy_with_logits(expert_logits, torch.ones_like(expert_logits))
            + F.binary_cross_entropy_with_logits(policy_logits, torch.zeros_like(policy_logits)))


def amp_loss_from_outputs(expert_d: torch.Tensor, policy_d: torch.Tensor) -> torch.Tensor:
    """Least squares: ``mean (D(e) - 1)^2 + mean (D(p) + 1)^2``, halved as in AMP's code."""
    return 0.5 * (((expert_d - 1.0) ** 2).mean() + ((policy_d + 1.0) ** 2).mean())


def gail_reward_from_logits(logits):
    """``-log(1 - sigmoid(l)) = softplus(l)`` (numerically stable); numpy or torch in, same out."""
    if isinstance(logits, torch.Tensor):
        return F.softplus(logits)
    x = np.asarray(logits, dtype=np.float64)
    return (np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))).astype(np.float32)


def amp_style_reward(d):
    """``max(0, 1 - 0.25 (d - 1)^2)``: 1 where D says "expert" (+1), 0 at or beyond "policy" (-1)."""
    if isinstance(d, torch.Tensor):
        return torch.clamp(1.0 - 0.25 * (d - 1.0) ** 2, min=0.0)
    d = np.asarray(d, dtype=np.float32)
    return np.maximum(0.0, 1.0 - 0.25 * (d - 1.0) ** 2).astype(np.float32)


def combine_rewards(task, style, w_task: float, w_style: float):
    """``w_G * task + w_S * style``."""
    return w_task * np.asarray(task, np.float32) + w_style * np.asarray(style, np.float32)


# --------------------------------------------------------------------------- normalisation


class RunningNorm(nn.Module):
    """Running mean / variance (parallel Welford over batches), ``(x - mean) / sqrt(var + eps)`` clipped.

    State lives in buffers, so it is saved in the module's state_dict (safetensors checkpoints)."""

    def __init__(self, dim: int, clip: float = 5.0, eps: float = 1e-5):
        super().__init__()
        self.clip = clip
        self.eps = eps
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x) -> None:
        x = torch.as_tensor(np.asarray(x), dtype=torch.float64).reshape(-1, self.mean.shape[0])
        n = x.shape[0]
        if n == 0:
            return
        bmean = x.mean(0)
        bvar = x.var(0, unbiased=False)
        tot = self.count + n
        delta = bmean - self.mean
        new_mean = self.mean + delta * (n / tot)
        m2 = self.var * self.count + bvar * n + delta ** 2 * self.count * n / tot
        self.mean.copy_(new_mean)
        self.var.copy_(m2 / tot)
        self.count.fill_(tot)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x - self.mean.to(x.dtype)) / torch.sqrt(self.var.to(x.dtype) + self.eps)
        return torch.clamp(y, -self.clip, self.clip)

    def numpy(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.forward(torch.as_tensor(np.asarray(x, np.float32))).numpy()


# --------------------------------------------------------------------------- replay buffer


class ReplayBuffer:
    """A fixed-size ring buffer of policy feature vectors (oldest overwritten first)."""

    def __init__(self, capacity: int, dim: int):
        self.capacity = int(capacity)
        self.data = np.zeros((self.capacity, dim), dtype=np.float32)
        self.size = 0
        self.pos = 0

    def __len__(self) -> int:
        return self.size

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32).reshape(-1, self.data.shape[1])
        if len(x) >= self.capacity:
            x = x[-self.capacity:]
        n = len(x)
        end = self.pos + n
        if end <= self.capacity:
            self.data[self.pos:end] = x
        else:
            k = self.capacity - self.pos
            self.data[self.pos:] = x[:k]
            self.data[: n - k] = x[k:]
        self.pos = end % self.capacity
        self.size = min(self.capacity, self.size + n)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.size == 0:
            raise ValueError("sample from an empty replay buffer")
        return self.data[rng.integers(0, self.size, size=n)]

    def state_arrays(self) -> dict:
        return {"data": self.data[: self.size].copy() if self.size < self.capacity else
                np.roll(self.data, -self.pos, axis=0)}

    def load_arrays(self, arrays: dict) -> None:
        self.size = 0
        self.pos = 0
        self.add(arrays["data"])


# --------------------------------------------------------------------------- network


class Discriminator(nn.Module):
    """MLP on normalised features; ``kind`` "gail" (logit) or "amp" (least-squares score)."""

    def __init__(self, kind: str, in_dim: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        if kind not in ("gail", "amp"):
            raise ValueError(f"discriminator kind must be 'gail' or 'amp', not {kind!r}")
        self.kind = kind
        self.in_dim = in_dim
        self.norm = RunningNorm(in_dim)
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(d, 1)

    def forward_normalized(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(z)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw output: a logit (GAIL) or the least-squares score (AMP)."""
        return self.forward_normalized(self.norm(x))

    def objective(self, expert_out: torch.Tensor, policy_out: torch.Tensor) -> torch.Tensor:
        if self.kind == "gail":
            return gail_loss_from_logits(expert_out, policy_out)
        return amp_loss_from_outputs(expert_out, policy_out)

    @torch.no_grad()
    def reward(self, x) -> np.ndarray:
        """Per-sample reward: GAIL ``-log(1 - D)``, AMP style ``max(0, 1 - 0.25 (D - 1)^2)``."""
        out = self.forward(torch.as_tensor(np.asarray(x, np.float32)))
        r = gail_reward_from_logits(out) if self.kind == "gail" else amp_style_reward(out)
        return r.numpy().astype(np.float32)

    @torch.no_grad()
    def score(self, x) -> np.ndarray:
        return self.forward(torch.as_tensor(np.asarray(x, np.float32))).numpy()

    def weight_l2(self) -> torch.Tensor:
        return sum((m.weight ** 2).sum() for m in self.modules() if isinstance(m, nn.Linear))

    def logit_l2(self) -> torch.Tensor:
        return (self.head.weight ** 2).sum()


class DiscriminatorTrainer:
    """Owns a :class:`Discriminator`, its optimiser, the expert features and the policy replay buffer.

    ``update(new_policy_features)`` adds the rollout to the replay buffer, refreshes the input
    normaliser with expert and policy samples, and does ``n`` minibatch steps of the objective plus
    gradient penalty (on expert samples), logit regulariser and weight decay. It returns metrics:
    ``loss``, ``objective``, ``grad_penalty``, ``acc_expert`` (share of expert samples called expert),
    ``acc_policy`` (share of policy samples called policy), ``accuracy`` (their mean), ``d_expert``,
    ``d_policy`` (mean raw outputs).
    """

    def __init__(self, kind: str, expert_features: np.ndarray, *, hidden: Sequence[int] = (256, 256),
                 lr: float = 1e-4, weight_decay: float = 1e-4, logit_reg: float = 0.05, grad_penalty: float = 10.0,
                 batch_size: int = 256, replay_size: int = 100000, seed: int = 0):
        expert_features = np.asarray(expert_features, dtype=np.float32)
        if expert_features.ndim != 2 or len(expert_features) == 0:
            raise ValueError("expert_features must be a non-empty (N, D) array")
        torch.manual_seed(seed)
        self.kind = kind
        self.expert = expert_features
        self.disc = Discriminator(kind, expert_features.shape[1], hidden)
        self.opt = torch.optim.Adam(self.disc.parameters(), lr=lr)
        self.weight_decay = weight_decay
        self.logit_reg = logit_reg
        self.grad_penalty = grad_penalty
        self.batch_size = batch_size
        self.replay = ReplayBuffer(replay_size, expert_features.shape[1])
        self.rng = np.random.default_rng(seed)
        self.disc.norm.update(expert_features)
        self.num_updates = 0

    @property
    def dim(self) -> int:
        return self.expert.shape[1]

    def losses(self, expert_x: torch.Tensor, policy_x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        ze = self.disc.norm(expert_x).requires_grad_(self.grad_penalty > 0)
        zp = self.disc.norm(policy_x)
        de = self.disc.forward_normalized(ze)
        dp = self.disc.forward_normalized(zp)
        obj = self.disc.objective(de, dp)
        loss = obj
        gp = torch.zeros(())
        if self.grad_penalty > 0:
            (g,) = torch.autograd.grad(de.sum(), ze, create_graph=True)
            gp = (g ** 2).sum(-1).mean()
            loss = loss + 0.5 * self.grad_penalty * gp
        if self.logit_reg > 0:
            loss = loss + self.logit_reg * self.disc.logit_l2()
        if self.weight_decay > 0:
            loss = loss + self.weight_decay * self.disc.weight_l2()
        with torch.no_grad():
            acc_e = (de > 0).float().mean().item()
            acc_p = (dp < 0).float().mean().item()
        info = {"loss": loss.item(), "objective": obj.item(), "grad_penalty": gp.item(), "acc_expert": acc_e,
                "acc_policy": acc_p, "accuracy": 0.5 * (acc_e + acc_p), "d_expert": de.mean().item(),
                "d_policy": dp.mean().item()}
        return loss, info

    def update(self, policy_features: Optional[np.ndarray], num_updates: int) -> dict:
        if policy_features is not None and len(policy_features):
            policy_features = np.asarray(policy_features, np.float32)
            if policy_features.shape[1] != self.dim:
                raise ValueError(f"policy features have {policy_features.shape[1]} dims, the discriminator {self.dim}")
            self.replay.add(policy_features)
            self.disc.norm.update(policy_features)
            self.disc.norm.update(self.expert[self.rng.integers(0, len(self.expert), size=len(policy_features))])
        if len(self.replay) == 0:
            raise ValueError("no policy transitions yet: the discriminator needs some to update")
        infos = []
        self.disc.train()
        for _ in range(num_updates):
            e = torch.as_tensor(self.expert[self.rng.integers(0, len(self.expert), size=self.batch_size)])
            p = torch.as_tensor(self.replay.sample(self.batch_size, self.rng))
            loss, info = self.losses(e, p)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            infos.append(info)
            self.num_updates += 1
        return {k: float(np.mean([i[k] for i in infos])) for k in infos[0]} if infos else {}

    def reward(self, features: np.ndarray) -> np.ndarray:
        self.disc.eval()
        return self.disc.reward(features)

    @torch.no_grad()
    def evaluate(self, policy_features: np.ndarray, max_n: int = 4096) -> dict:
        """Accuracy and mean outputs on (a sample of) expert data and the given policy features."""
        self.disc.eval()
        e = self.expert if len(self.expert) <= max_n else self.expert[self.rng.integers(0, len(self.expert), max_n)]
        de = self.disc.score(e)
        dp = self.disc.score(np.asarray(policy_features, np.float32)[:max_n])
        return {"acc_expert": float((de > 0).mean()), "acc_policy": float((dp < 0).mean()),
                "d_expert": float(de.mean()), "d_policy": float(dp.mean()),
                "reward_policy": float(self.disc.reward(policy_features[:max_n]).mean())}

    # ---- checkpoint state (tensors only: safetensors-friendly)
    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"disc.{k}": v.detach().clone().contiguous() for k, v in self.disc.state_dict().items()}
        out.update({f"disc_opt.{k}": v for k, v in optimizer_tensors(self.opt).items()})
        out["disc_replay"] = torch.from_numpy(self.replay.state_arrays()["data"].copy())
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
        sd = {k[5:]: v for k, v in tensors.items() if k.startswith("disc.")}
        load_module_strict(self.disc, sd, where)
        opt = {k[9:]: v for k, v in tensors.items() if k.startswith("disc_opt.")}
        if opt:
            load_optimizer_tensors(self.opt, opt)
        if "disc_replay" in tensors:
            self.replay.load_arrays({"data": tensors["disc_replay"].numpy()})


# --------------------------------------------------------------------------- state-dict helpers


def load_module_strict(module: nn.Module, sd: dict, where: str) -> None:
    from genil_ros.errors import CheckpointError

    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    extra = sorted(set(sd) - set(own))
    if missing or extra:
        raise CheckpointError(f"{where}: tensors do not match the model (missing {missing[:3]}, unexpected {extra[:3]})")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"{where}: tensor {k!r} has shape {tuple(v.shape)}, the model expects "
                                  f"{tuple(own[k].shape)} (other feature dims or hidden sizes?)")
    module.load_state_dict(sd)


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam-style optimiser state as flat tensors ``"<param index>.<key>"`` (no pickle needed)."""
    out = {}
    for pid, st in opt.state_dict()["state"].items():
        for key, val in st.items():
            t = val if isinstance(val, torch.Tensor) else torch.tensor(val)
            out[f"{pid}.{key}"] = t.detach().clone().contiguous()
    return out


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict = {}
    for name, t in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = t.clone()
    sd["state"] = state
    opt.load_state_dict(sd)


def logit_to_prob(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))
