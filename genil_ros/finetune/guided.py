"""Discriminator-guided chunk selection: sample K chunks in one batched pass, score each by the trainer's
discriminator over the transitions the chunk predicts, execute the best (value-guided selection, V-GPS
arXiv 2410.13816, with the adversarial critic in place of an offline value).

The transitions a chunk predicts: from the current state ``s_0`` (the newest row of the observation window)
the executed entries ``a_k`` = chunk[T_o - 1 + k], k < T_a, are joint position targets that the arm tracks,
so ``s_{k+1}`` is ``s_k`` with its commanded dimensions (the discriminator's joint pairs: the
joint_position observation dims its absolute joint targets command) set to ``a_k``; with ``use_velocity``
states the velocities become ``(a_k - q_k) * rate``; every other dimension (a target or object position) is
held. A chunk's score is the discriminator's mean reward over its ``T_a`` transitions (GAIL ``-log(1 - D)``
on ``(s_k, a_k)``, AMP's style reward on ``(s_k, s_{k+1})``).

- :class:`ChunkScorer` scores chunks (numpy, no ROS): ``scores(states, chunks) -> (B, K)``.
- :class:`GuidedChunkModel` is a ChunkModel (``policy/chunk_model.py``) around one that can sample K
  chunks (``sample_chunks(obs, K)``): what the policy node runs when ``guide_checkpoint`` is set.
- :func:`guide_model` is the node's hook: the model unchanged when no discriminator is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from genil_ros.errors import CheckpointError, GenilError
from genil_ros.policy.chunk_model import ChunkModel

__all__ = ["ChunkScorer", "GuidedChunkModel", "guide_model"]


class ChunkScorer:
    """Scores candidate chunks by a learned reward (``adversarial.discriminators.LearnedReward``)."""

    def __init__(self, reward, n_obs_steps: int, n_action_steps: int, rate_hz: float, state_dim: int,
                 use_velocity: bool = False, source: str = "discriminator", action_dim: int = 0):
        self.reward = reward
        self.adversary = reward.adversary
        self.nj = int(reward.adversary.num_joints)
        pairs = getattr(self.adversary, "pairs", None)  # which action dims are targets of which state dims
        self.state_idx = list(pairs.state) if pairs else list(range(self.nj))
        self.action_idx = list(pairs.action) if pairs else list(range(self.nj))
        self.T_o, self.T_a = int(n_obs_steps), int(n_action_steps)
        self.rate = float(rate_hz)
        self.state_dim = int(state_dim)
        self.action_dim = int(action_dim) or max(self.action_idx, default=-1) + 1 or self.nj
        # velocities follow the joint positions only in the joint_names form (q first, then dq)
        self.use_velocity = (bool(use_velocity) and self.state_dim >= 2 * self.nj
                             and self.state_idx == list(range(self.nj)))
        self.source = source
        if not 1 <= self.nj <= self.state_dim or max(self.state_idx) >= self.state_dim:
            raise CheckpointError(f"{source}: the discriminator's joints {self.state_idx} do not fit a state of "
                                  f"{self.state_dim} values")
        probe = np.zeros((1, self.state_dim), np.float32)
        got = self.adversary.features(probe, np.zeros((1, self.action_dim), np.float32), probe).shape[1]
        want = int(reward.meta.get("feature_dim", got))
        if got != want:
            raise CheckpointError(f"{source}: the discriminator takes {want} features, this policy's state "
                                  f"({self.state_dim} values) gives {got} (trained for another task?)")

    @classmethod
    def load(cls, checkpoint, spec_like, rate_hz: Optional[float] = None) -> "ChunkScorer":
        """From a discriminator checkpoint (trainer node, ``genil-ros finetune``, ``train-adversarial``) for a
        policy described by ``spec_like`` (``n_obs_steps``, ``n_action_steps``, ``state_dim``, optional
        ``joint_names`` / ``control_rate_hz``)."""
        from genil_ros.adversarial.discriminators import LearnedReward

        d = Path(checkpoint)
        reward = LearnedReward.load(d)
        names = reward.meta.get("joint_names")
        mine = list(getattr(spec_like, "joint_names", []) or [])
        if names and mine and list(names)[:len(mine)] != mine[:len(names)]:
            raise CheckpointError(f"{d}: the discriminator was trained on joints {names}, the policy commands {mine}")
        rate = rate_hz or float(getattr(spec_like, "control_rate_hz", 0) or reward.meta.get("rate_hz", 10.0))
        return cls(reward, spec_like.n_obs_steps, spec_like.n_action_steps, rate, spec_like.state_dim,
                   bool(reward.meta.get("use_velocity", False)), source=str(d),
                   action_dim=int(getattr(spec_like, "action_dim", 0) or 0))

    def describe(self) -> str:
        return f"{self.adversary.name} discriminator {self.source}"

    def transitions(self, states: np.ndarray, chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predicted (s, a, s') of every executed entry: states (B, D), chunks (B, K, T_p, A) ->
        three arrays (B * K * T_a, ...)."""
        states = np.asarray(states, np.float32)
        chunks = np.asarray(chunks, np.float32)
        B, K = chunks.shape[:2]
        acts = chunks[:, :, self.T_o - 1:self.T_o - 1 + self.T_a]  # (B, K, T_a, A)
        T = acts.shape[2]
        s = np.repeat(states[:, None, None, :], K, 1).repeat(T + 1, 2)  # (B, K, T + 1, D)
        q = acts[..., self.action_idx]
        s[:, :, 1:, self.state_idx] = q
        if self.use_velocity:
            prev = np.concatenate([states[:, None, None, :self.nj].repeat(K, 1), q[:, :, :-1]], 2)
            s[:, :, 1:, self.nj:2 * self.nj] = (q - prev) * self.rate
        n = B * K * T
        return (s[:, :, :-1].reshape(n, -1), acts.reshape(n, -1), s[:, :, 1:].reshape(n, -1))

    def scores(self, states: np.ndarray, chunks: np.ndarray) -> np.ndarray:
        """(B, K): the mean reward of each chunk's predicted transitions."""
        B, K = np.asarray(chunks).shape[:2]
        s, a, s2 = self.transitions(states, chunks)
        r = self.reward(s, a, s2)
        return np.asarray(r, np.float64).reshape(B, K, -1).mean(-1)

    def select(self, states: np.ndarray, chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index of the best chunk per row (B,), scores (B, K))."""
        sc = self.scores(states, chunks)
        return sc.argmax(1), sc


class GuidedChunkModel(ChunkModel):
    """Best of ``num_samples`` chunks of ``base`` (which must offer ``sample_chunks(obs, K)``) by ``scorer``.
    ``last_scores`` holds the scores of the latest call (for diagnostics and tests)."""

    def __init__(self, base: ChunkModel, scorer: ChunkScorer, num_samples: int):
        if not hasattr(base, "sample_chunks"):
            raise GenilError(f"guided selection: {type(base).__name__} cannot sample several chunks per call")
        if num_samples < 2:
            raise GenilError(f"parameter guide_samples: {num_samples} must be >= 2 (1 is no selection)")
        self.base = base
        self.scorer = scorer
        self.num_samples = int(num_samples)
        self.spec = base.spec
        self.device = base.device
        self.description = f"{base.description}; best of {self.num_samples} by the {scorer.describe()}"
        self.last_scores: Optional[np.ndarray] = None

    def __call__(self, obs: dict) -> np.ndarray:
        chunks = np.asarray(self.base.sample_chunks(obs, self.num_samples), np.float64)  # (K, T_p, A)
        best, scores = self.scorer.select(np.asarray(obs["state"])[-1:], chunks[None])
        self.last_scores = scores[0]
        return chunks[int(best[0])]


def guide_model(model: ChunkModel, checkpoint: str, num_samples: int) -> ChunkModel:
    """The policy node's hook: ``model`` itself when ``checkpoint`` is empty (guided selection off), else
    ``model`` guided by the discriminator in ``checkpoint`` (CheckpointError naming it when it does not fit)."""
    if not checkpoint:
        return model
    return GuidedChunkModel(model, ChunkScorer.load(checkpoint, model.spec), num_samples)
