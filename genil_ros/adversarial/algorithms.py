"""GAIL and AMP as objects behind one interface: what the discriminator sees, how it is trained, what
reward it gives. The algorithm's name ("gail" / "amp", ``adversarial.algo``) is looked up once, in
:func:`make_adversary`; everything after that calls the object.

Features are built only from what a rosbag records, so that expert data from bags and policy rollouts
from the sim (or a real arm) are comparable:

- ``state``      : the dataset's low-dim state, the task's observation entries concatenated in layout
                   order (``schema.layout``), exactly ``EpisodeStore`` ``"state"``;
- ``action``     : the task's action entries concatenated (``EpisodeStore`` ``"action"``);
- ``next_state`` : the state one control tick later.

Where the action holds absolute joint targets of joints the state observes, GAIL scores the commanded
step ``a - q`` instead of ``a`` (:class:`JointPairs`: the first joint_position observation and the
absolute joint_position action, paired by joint name); a task without such a pair (a twist, a vector, delta
commands) is scored on the plain ``[s, a]``.

Sign convention, the same for both: the discriminator's raw output is **high for expert** samples and
low for policy samples, with the decision boundary at 0 (:meth:`Adversary.judged_expert`). GAIL's output
is a logit (``D = sigmoid(output)`` = the probability of "expert"); AMP's is a least-squares score that
aims at +1 for expert and -1 for policy samples. Rewards are high where the output says "expert".

GAIL (Ho & Ermon 2016) scores state-action pairs ``[s, a - q]`` (q = the joint positions in s: the
commanded step carries the style of the motion and does not depend on where the arm is; ``[s, a]`` when
the task pairs no joints); loss: binary cross-entropy, expert -> 1, policy -> 0; reward
``-log(1 - D) = softplus(logit)``.

AMP (Peng et al. 2021) scores state transitions ``[s, s' - s]``; loss: least squares, expert -> +1,
policy -> -1 (halved, as in AMP's code); style reward ``max(0, 1 - 0.25 (score - 1)^2)``. The gradient
penalty on expert samples, the regularisers and the replay buffer are common to both and live in
:class:`~genil_ros.adversarial.discriminators.DiscriminatorTrainer`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from genil_ros.errors import DataError, GenilError

__all__ = ["Adversary", "GAIL", "AMP", "ADVERSARIES", "make_adversary", "amp_features", "combine_rewards",
           "JointPairs"]


@dataclass(frozen=True)
class JointPairs:
    """Which action dimensions are absolute targets of which state dimensions (the joint positions q):
    GAIL scores ``a - q`` there. Indices into the concatenated ``state`` / ``action`` vectors."""

    state: tuple[int, ...]
    action: tuple[int, ...]

    @classmethod
    def first(cls, n: int) -> Optional["JointPairs"]:
        """The first ``n`` dimensions of both (the ``joint_names`` form, the sim's arms); None for 0."""
        return cls(tuple(range(n)), tuple(range(n))) if n > 0 else None

    @classmethod
    def from_layout(cls, lay) -> Optional["JointPairs"]:
        """From a ``schema.Layout``: the first joint_position observation and the first absolute
        joint_position action, their joints in common paired by name; None when there is no such pair."""
        obs = next((e for e in lay.state if e.type == "joint_position"), None)
        act = next((e for e in lay.action if e.type == "joint_position" and not e.mode), None)
        if obs is None or act is None:
            return None
        common = [j for j in act.dim_names if j in obs.dim_names]
        if not common:
            return None
        return cls(tuple(obs.start + obs.dim_names.index(j) for j in common),
                   tuple(act.start + act.dim_names.index(j) for j in common))

    def to_dict(self) -> dict:
        return {"state": list(self.state), "action": list(self.action)}

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> Optional["JointPairs"]:
        return None if not d else cls(tuple(int(i) for i in d["state"]), tuple(int(i) for i in d["action"]))


def amp_features(state: np.ndarray, next_state: np.ndarray) -> np.ndarray:
    """The transition (s, s') as ``[s, s' - s]`` (AMP's input, and the motion features of ``metrics``).

    The same information as ``[s, s']``, but after per-dimension normalisation the per-tick change is on
    the scale of its own spread instead of being a tiny difference of two large, almost equal inputs;
    with positions-only states (bags without velocities) that is what lets D see the motion under the
    gradient penalty."""
    state = np.asarray(state, np.float32)
    return np.concatenate([state, np.asarray(next_state, np.float32) - state], axis=-1)


def combine_rewards(task, style, w_task: float, w_style: float) -> np.ndarray:
    """The RL reward ``w_G * task + w_S * style`` (``adversarial.task_reward_weight`` / ``style_reward_weight``)."""
    return w_task * np.asarray(task, np.float32) + w_style * np.asarray(style, np.float32)


class Adversary(ABC):
    """One adversarial imitation algorithm: its features, its discriminator loss and its reward.

    ``name`` is the config's ``adversarial.algo``; ``feature_layout`` is written into checkpoints;
    ``uses_action`` / ``uses_next_state`` say which parts of a transition :meth:`features` reads (a live
    reward needs the command for GAIL, the next joint state for AMP)."""

    name: ClassVar[str]
    feature_layout: ClassVar[str]
    samples: ClassVar[str]  # what the features are made of, in words (for errors)
    uses_action: ClassVar[bool]
    uses_next_state: ClassVar[bool]

    def __init__(self, num_joints: int = 0, pairs: Optional[JointPairs] = None):
        # GAIL's a - q: ``pairs`` (from the task's layout), or the first num_joints dimensions of both
        self.pairs = pairs if pairs is not None else JointPairs.first(int(num_joints))
        self.num_joints = len(self.pairs.state) if self.pairs else 0

    # ---- what D sees
    @abstractmethod
    def features(self, state: np.ndarray, action: Optional[np.ndarray],
                 next_state: Optional[np.ndarray]) -> np.ndarray:
        """Discriminator inputs (N, F) float32 for N transitions (s, a, s'); unused parts may be None."""

    @abstractmethod
    def episode_features(self, episode: dict, where: str, index: int) -> Optional[np.ndarray]:
        """The features of every transition in one episode dict (``state``, ``action``, optionally
        ``next_state``); None when the episode has none; DataError naming ``where`` when it cannot have any."""

    def episodes_features(self, episodes: Sequence[dict], where: str = "expert") -> np.ndarray:
        """All transitions of ``episodes`` stacked; DataError naming ``where`` when there are none."""
        feats = [f for i, ep in enumerate(episodes) if (f := self.episode_features(ep, where, i)) is not None]
        if not feats or sum(len(f) for f in feats) == 0:
            raise DataError(f"{where}: no usable {self.samples} (episodes too short or empty)")
        return np.concatenate(feats, 0)

    # ---- how D is trained and read
    @staticmethod
    @abstractmethod
    def loss(expert_out: torch.Tensor, policy_out: torch.Tensor) -> torch.Tensor:
        """The discriminator objective on raw outputs (expert-is-high), to be minimised."""

    @staticmethod
    @abstractmethod
    def reward(out):
        """Per-sample reward from raw outputs (numpy in -> float32 numpy out, torch in -> torch out);
        higher where D says "expert"."""

    @staticmethod
    def judged_expert(out):
        """Where D calls a sample expert: its raw output is above the decision boundary 0."""
        return out > 0

    @staticmethod
    def judged_policy(out):
        """Where D calls a sample policy: its raw output is below the decision boundary 0."""
        return out < 0

    def describe(self) -> dict:
        """The checkpoint's record of the algorithm (meta.json)."""
        return {"algo": self.name, "features": self.feature_layout,
                "joint_pairs": self.pairs.to_dict() if self.pairs else None}


class GAIL(Adversary):
    """GAIL: state-action pairs ``[s, a - q]``; the output is a logit, ``D = sigmoid(logit)``."""

    name = "gail"
    samples = "state-action pairs"
    uses_action = True
    uses_next_state = False

    @property
    def feature_layout(self) -> str:  # type: ignore[override]
        return "[s, a - q]" if self.pairs else "[s, a]"

    def features(self, state, action, next_state=None) -> np.ndarray:
        state = np.asarray(state, dtype=np.float32)
        action = np.array(action, dtype=np.float32)  # a copy: the paired dims become a - q
        if self.pairs:
            action[..., list(self.pairs.action)] -= state[..., list(self.pairs.state)]
        return np.concatenate([state, action], axis=-1).astype(np.float32)

    def episode_features(self, episode: dict, where: str, index: int) -> np.ndarray:
        s = np.asarray(episode["state"], np.float32)
        if "action" not in episode:
            raise DataError(f"{where}: episode {index} has no 'action' (GAIL needs state-action pairs)")
        a = np.asarray(episode["action"], np.float32)
        if len(a) != len(s):
            raise DataError(f"{where}: episode {index} has {len(s)} states but {len(a)} actions")
        return self.features(s, a)

    @staticmethod
    def loss(expert_logits: torch.Tensor, policy_logits: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy, expert labelled 1 and policy 0: ``-mean log D(e) - mean log(1 - D(p))``
        (each half averaged over its own batch, then summed)."""
        return (F.binary_cross_entropy_with_logits(expert_logits, torch.ones_like(expert_logits))
                + F.binary_cross_entropy_with_logits(policy_logits, torch.zeros_like(policy_logits)))

    @staticmethod
    def reward(logits):
        """``-log(1 - sigmoid(logit)) = softplus(logit)``, computed stably."""
        if isinstance(logits, torch.Tensor):
            return F.softplus(logits)
        x = np.asarray(logits, dtype=np.float64)
        return (np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))).astype(np.float32)


class AMP(Adversary):
    """AMP: state transitions ``[s, s' - s]``; the output is a least-squares score, expert +1, policy -1."""

    name = "amp"
    feature_layout = "[s, s' - s]"
    samples = "state transitions"
    uses_action = False
    uses_next_state = True

    def features(self, state, action=None, next_state=None) -> np.ndarray:
        return amp_features(state, next_state)

    def episode_features(self, episode: dict, where: str, index: int) -> Optional[np.ndarray]:
        s = np.asarray(episode["state"], np.float32)
        if "next_state" in episode:  # a logged rollout knows the state after its last action
            return self.features(s, None, np.asarray(episode["next_state"], np.float32))
        if len(s) >= 2:  # a dataset episode: consecutive ticks
            return self.features(s[:-1], None, s[1:])
        return None

    @staticmethod
    def loss(expert_scores: torch.Tensor, policy_scores: torch.Tensor) -> torch.Tensor:
        """Least squares: ``0.5 * (mean (D(e) - 1)^2 + mean (D(p) + 1)^2)``."""
        return 0.5 * (((expert_scores - 1.0) ** 2).mean() + ((policy_scores + 1.0) ** 2).mean())

    @staticmethod
    def reward(scores):
        """The style reward ``max(0, 1 - 0.25 (score - 1)^2)``: 1 at "expert" (+1), 0 at or beyond "policy" (-1)."""
        if isinstance(scores, torch.Tensor):
            return torch.clamp(1.0 - 0.25 * (scores - 1.0) ** 2, min=0.0)
        d = np.asarray(scores, dtype=np.float32)
        return np.maximum(0.0, 1.0 - 0.25 * (d - 1.0) ** 2).astype(np.float32)


ADVERSARIES: dict[str, type[Adversary]] = {cls.name: cls for cls in (GAIL, AMP)}


def make_adversary(algo: str, num_joints: int = 0, where: str = "adversarial.algo",
                   pairs: Union[JointPairs, None] = None) -> Adversary:
    """The algorithm named ``algo``; GAIL's ``a - q`` over ``pairs`` (e.g. ``JointPairs.from_layout(task
    layout)``), else over the first ``num_joints`` dimensions, else none. GenilError naming ``where``."""
    try:
        cls = ADVERSARIES[algo]
    except KeyError:
        raise GenilError(f"{where}: {algo!r} is not one of {', '.join(ADVERSARIES)}") from None
    return cls(num_joints, pairs)
