"""The discriminator network and its trainer, shared by ``genil-ros train-adversarial`` and the trainer
node: built from the config, trained, described, saved and resumed in one place.

The algorithm (GAIL or AMP: features, loss, reward) is an :class:`~genil_ros.adversarial.algorithms.Adversary`;
this module adds what both use: running mean/std input normalisation, a replay buffer of past policy
transitions (so D does not overfit the latest policy), a gradient penalty on expert samples (AMP's; for
GAIL optional), a logit regulariser (squared weights of the output layer), an L2 weight decay on every
weight, and accuracy logging. The gradient penalty is taken with respect to the *normalised* input (what
the network sees).

Checkpoint (``adversarial/checkpoint.py`` layout): ``disc.safetensors`` holds ``disc.<network tensor>``
(normaliser included), ``disc_opt.<param>.<key>`` (Adam state) and ``disc_replay`` (the replay buffer,
oldest first); ``meta.json`` holds :meth:`DiscriminatorTrainer.describe` plus what the caller adds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from genil_ros.adversarial.algorithms import Adversary, make_adversary
from genil_ros.adversarial.checkpoint import load_checkpoint_dir, save_checkpoint_dir
from genil_ros.errors import CheckpointError, GenilError

__all__ = ["RunningNorm", "ReplayBuffer", "Discriminator", "DiscriminatorTrainer", "LearnedReward",
           "load_module_strict", "optimizer_tensors", "load_optimizer_tensors"]


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


class Discriminator(nn.Module):
    """MLP on normalised features. Its raw output is high for expert samples (GAIL: a logit; AMP: a
    least-squares score), see :mod:`~genil_ros.adversarial.algorithms`."""

    def __init__(self, in_dim: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
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
        """Raw output (expert is high) for raw features ``x``."""
        return self.forward_normalized(self.norm(x))

    def weight_l2(self) -> torch.Tensor:
        return sum((m.weight ** 2).sum() for m in self.modules() if isinstance(m, nn.Linear))

    def logit_l2(self) -> torch.Tensor:
        return (self.head.weight ** 2).sum()


class DiscriminatorTrainer:
    """Owns a :class:`Discriminator` (``net``), its optimiser, the expert features and the policy replay buffer.

    ``update(new_policy_features, n)`` adds the rollout to the replay buffer, refreshes the input
    normaliser with expert and policy samples, and does ``n`` minibatch steps of the adversary's loss plus
    gradient penalty (on expert samples), logit regulariser and weight decay. It returns metrics:
    ``loss``, ``objective``, ``grad_penalty``, ``acc_expert`` (share of expert samples called expert),
    ``acc_policy`` (share of policy samples called policy), ``accuracy`` (their mean), ``d_expert``,
    ``d_policy`` (mean raw outputs). ``reward(features)`` is the adversary's reward under the current net.
    """

    def __init__(self, adversary: Adversary, expert_features: np.ndarray, *, hidden: Sequence[int] = (256, 256),
                 lr: float = 1e-4, weight_decay: float = 1e-4, logit_reg: float = 0.05, grad_penalty: float = 10.0,
                 batch_size: int = 256, replay_size: int = 100000, seed: int = 0, record: Optional[dict] = None):
        expert_features = np.asarray(expert_features, dtype=np.float32)
        if expert_features.ndim != 2 or len(expert_features) == 0:
            raise ValueError("expert_features must be a non-empty (N, D) array")
        torch.manual_seed(seed)
        self.adversary = adversary
        self.expert = expert_features
        self.net = Discriminator(expert_features.shape[1], hidden)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.weight_decay = weight_decay
        self.logit_reg = logit_reg
        self.grad_penalty = grad_penalty
        self.batch_size = batch_size
        self.replay = ReplayBuffer(replay_size, expert_features.shape[1])
        self.rng = np.random.default_rng(seed)
        self.net.norm.update(expert_features)
        self.num_updates = 0
        # what the checkpoint records about the data D was built for (joints, state layout, expert source)
        self.record = {"disc_hidden": list(hidden), "seed": int(seed), **(record or {})}

    @classmethod
    def from_config(cls, cfg, expert, *, algo: Optional[str] = None, seed: Optional[int] = None,
                    goal_in_state: bool = False) -> "DiscriminatorTrainer":
        """The trainer of ``cfg.adversarial`` (``algo`` overrides its ``algo``, ``seed`` its ``seed``) on an
        expert set (``episodes``, ``joint_names``, ``source``, ``layout``; see ``expert.ExpertSet``).
        GAIL's ``a - q`` pairs come from the expert's layout (data from a dataset or bags: the task's
        entries), else the first ``len(joint_names)`` dimensions (the sim's arms).
        ``goal_in_state``: the states carry ``[goal, ee_pos - goal]`` (``adversarial.disc_goal``)."""
        from genil_ros.adversarial.algorithms import JointPairs

        a = cfg.adversarial
        lay = getattr(expert, "layout", None)
        pairs = JointPairs.from_layout(lay) if lay is not None else JointPairs.first(len(expert.joint_names))
        adversary = make_adversary(algo or a.algo, pairs=pairs)
        features = adversary.episodes_features(expert.episodes, where=expert.source)
        record = {"num_joints": adversary.num_joints, "joint_names": list(expert.joint_names),
                  "use_velocity": bool(cfg.task.use_velocity), "disc_goal": bool(goal_in_state),
                  "expert_source": expert.source}
        if lay is not None:
            record["layout"] = lay.to_dict()
        return cls(adversary, features, hidden=a.disc_hidden, lr=a.disc_lr, weight_decay=a.disc_weight_decay,
                   logit_reg=a.disc_logit_reg, grad_penalty=a.grad_penalty, batch_size=a.disc_batch_size,
                   replay_size=a.replay_buffer_size, seed=a.seed if seed is None else seed, record=record)

    @property
    def dim(self) -> int:
        return self.expert.shape[1]

    # ---- training
    def losses(self, expert_x: torch.Tensor, policy_x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        ze = self.net.norm(expert_x).requires_grad_(self.grad_penalty > 0)
        zp = self.net.norm(policy_x)
        de = self.net.forward_normalized(ze)
        dp = self.net.forward_normalized(zp)
        obj = self.adversary.loss(de, dp)
        loss = obj
        gp = torch.zeros(())
        if self.grad_penalty > 0:
            (g,) = torch.autograd.grad(de.sum(), ze, create_graph=True)
            gp = (g ** 2).sum(-1).mean()
            loss = loss + 0.5 * self.grad_penalty * gp
        if self.logit_reg > 0:
            loss = loss + self.logit_reg * self.net.logit_l2()
        if self.weight_decay > 0:
            loss = loss + self.weight_decay * self.net.weight_l2()
        with torch.no_grad():
            acc_e = self.adversary.judged_expert(de).float().mean().item()
            acc_p = self.adversary.judged_policy(dp).float().mean().item()
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
            self.net.norm.update(policy_features)
            self.net.norm.update(self.expert[self.rng.integers(0, len(self.expert), size=len(policy_features))])
        if len(self.replay) == 0:
            raise ValueError("no policy transitions yet: the discriminator needs some to update")
        infos = []
        self.net.train()
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

    # ---- reading D
    @torch.no_grad()
    def scores(self, features) -> np.ndarray:
        """Raw outputs (expert is high) for features (N, F)."""
        self.net.eval()
        return self.net(torch.as_tensor(np.asarray(features, np.float32))).numpy()

    @torch.no_grad()
    def reward(self, features) -> np.ndarray:
        """Per-sample reward (N,) float32: GAIL ``-log(1 - D)``, AMP style ``max(0, 1 - 0.25 (D - 1)^2)``."""
        self.net.eval()
        out = self.net(torch.as_tensor(np.asarray(features, np.float32)))
        return self.adversary.reward(out).numpy().astype(np.float32)

    @torch.no_grad()
    def evaluate(self, policy_features: np.ndarray, max_n: int = 4096) -> dict:
        """Accuracy and mean outputs on (a sample of) expert data and the given policy features."""
        e = self.expert if len(self.expert) <= max_n else self.expert[self.rng.integers(0, len(self.expert), max_n)]
        de = self.scores(e)
        dp = self.scores(np.asarray(policy_features, np.float32)[:max_n])
        return {"acc_expert": float(self.adversary.judged_expert(de).mean()),
                "acc_policy": float(self.adversary.judged_policy(dp).mean()),
                "d_expert": float(de.mean()), "d_policy": float(dp.mean()),
                "reward_policy": float(self.reward(policy_features[:max_n]).mean())}

    # ---- checkpoints
    def describe(self) -> dict:
        """What meta.json says about this discriminator: algorithm, feature layout and size, the data it
        was built for, its network and how many steps it has taken."""
        return {**self.adversary.describe(), "feature_dim": int(self.dim), **self.record,
                "num_updates": int(self.num_updates)}

    def snapshot(self, kind: str, **meta) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
        """``(meta, {"disc": tensors})`` of this moment, copied: it can be written after a lock is released.
        ``kind`` and ``meta`` are the caller's (``"adversarial"`` + counters, ``"discriminator"`` + bags)."""
        return {"kind": kind, **self.describe(), **meta}, {"disc": self.state_tensors()}

    def save(self, directory, kind: str, config_yaml: Optional[str] = None,
             extra_tensors: Optional[dict[str, dict[str, torch.Tensor]]] = None, **meta) -> Path:
        """Write the checkpoint directory atomically (``extra_tensors``: more files, e.g. ``{"policy": ...}``)."""
        m, tensors = self.snapshot(kind, **meta)
        return save_checkpoint_dir(directory, {**tensors, **(extra_tensors or {})}, m, config_yaml)

    def resume(self, directory, stems: tuple[str, ...] = ("disc",)) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
        """Load the discriminator from a checkpoint directory of the same algorithm and feature size;
        returns ``(meta, {stem: tensors})`` for the caller's own parts. CheckpointError naming the directory."""
        meta, tensors = load_checkpoint_dir(directory, stems)
        if meta.get("algo") != self.adversary.name or meta.get("feature_dim") != self.dim:
            raise CheckpointError(f"{directory}: checkpoint is {meta.get('algo')!r} with {meta.get('feature_dim')} "
                                  f"features, this run is {self.adversary.name!r} with {self.dim}")
        self.load_state_tensors(tensors["disc"], str(directory))
        self.num_updates = int(meta.get("num_updates", 0))
        return meta, tensors

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Network, optimiser state and replay buffer as flat tensors (safetensors, no pickle)."""
        out = {f"disc.{k}": v.detach().clone().contiguous() for k, v in self.net.state_dict().items()}
        out.update({f"disc_opt.{k}": v for k, v in optimizer_tensors(self.opt).items()})
        out["disc_replay"] = torch.from_numpy(self.replay.state_arrays()["data"].copy())
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
        sd = {k[5:]: v for k, v in tensors.items() if k.startswith("disc.")}
        load_module_strict(self.net, sd, where)
        opt = {k[9:]: v for k, v in tensors.items() if k.startswith("disc_opt.")}
        if opt:
            load_optimizer_tensors(self.opt, opt)
        if "disc_replay" in tensors:
            self.replay.load_arrays({"data": tensors["disc_replay"].numpy()})


class LearnedReward:
    """A trained discriminator as a reward function of transitions, loaded from a checkpoint of
    :class:`DiscriminatorTrainer` (no expert data, no optimiser): what a policy needs to score what it is
    about to do, e.g. sampled action chunks by their predicted transitions."""

    def __init__(self, adversary: Adversary, net: Discriminator, meta: Optional[dict] = None):
        self.adversary = adversary
        self.net = net.eval()
        self.meta = dict(meta or {})

    @classmethod
    def load(cls, directory) -> "LearnedReward":
        """CheckpointError naming the file for a missing or unreadable checkpoint or meta.json entry."""
        meta, tensors = load_checkpoint_dir(directory, ("disc",))
        mp = Path(directory) / "meta.json"
        missing = [k for k in ("algo", "num_joints", "feature_dim", "disc_hidden") if k not in meta]
        if missing:
            raise CheckpointError(f"{mp}: no {missing[0]!r} (not a discriminator checkpoint?)")
        from genil_ros.adversarial.algorithms import JointPairs

        try:  # joint_pairs since the task schema; before it, the first num_joints dimensions
            pairs = JointPairs.from_dict(meta.get("joint_pairs"))
            adversary = make_adversary(meta["algo"], int(meta["num_joints"]), where=f"{mp}: algo", pairs=pairs)
        except GenilError as e:
            raise CheckpointError(str(e)) from None
        net = Discriminator(int(meta["feature_dim"]), [int(h) for h in meta["disc_hidden"]])
        load_module_strict(net, {k[5:]: v for k, v in tensors["disc"].items() if k.startswith("disc.")}, str(directory))
        return cls(adversary, net, meta)

    @torch.no_grad()
    def __call__(self, state, action=None, next_state=None) -> np.ndarray:
        """Reward (N,) float32 of N transitions (s, a, s'); the algorithm reads the parts it uses
        (``adversary.uses_action`` / ``uses_next_state``)."""
        x = torch.as_tensor(self.adversary.features(state, action, next_state))
        return self.adversary.reward(self.net(x)).numpy().astype(np.float32)


# --------------------------------------------------------------------------- state-dict helpers


def load_module_strict(module: nn.Module, sd: dict, where: str) -> None:
    """``module.load_state_dict(sd)`` with a CheckpointError naming ``where`` for missing, extra or
    differently shaped tensors."""
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    extra = sorted(set(sd) - set(own))
    if missing or extra:
        raise CheckpointError(f"{where}: tensors do not match the model "
                              f"(missing {missing[:3]}, unexpected {extra[:3]})")
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
