"""How close a policy's motion is to the expert's, measured without the training discriminator.

- ``motion_features``: the transitions of episodes as ``[s, s' - s]`` (joint positions and per-tick
  joint steps; ``algorithms.amp_features``), whatever algorithm trained the policy.
- ``motion_w1``: mean over feature dimensions of the 1-D Wasserstein-1 distance between expert and
  policy motion features, each dimension standardised by the expert's std. 0 = same marginal
  distributions.
- ``motion_stats``: mean joint step per tick |q' - q| and mean joint "acceleration" |q'' - 2q' + q| (rad),
  i.e. speed and smoothness of the motion, over the first ``window`` ticks of each episode (the motion,
  not the hold at the goal).
- ``classifier_accuracy``: balanced held-out accuracy of a fresh classifier (same MLP as GAIL's D) trained
  to tell expert from policy transitions. 0.5 = indistinguishable, 1.0 = trivially separable.
"""

from __future__ import annotations

import numpy as np
import torch

from genil_ros.adversarial.algorithms import GAIL, amp_features
from genil_ros.adversarial.discriminators import Discriminator

__all__ = ["motion_features", "motion_w1", "classifier_accuracy", "motion_stats"]


def motion_features(episodes) -> np.ndarray:
    """``[s, s' - s]`` of every transition; an episode without ``next_state`` (a dataset's) uses the next
    row, its last state held."""
    out = []
    for e in episodes:
        s = e["state"]
        nxt = e["next_state"] if "next_state" in e else np.concatenate([s[1:], s[-1:]])
        out.append(amp_features(s, nxt))
    return np.concatenate(out)


def motion_w1(expert: np.ndarray, policy: np.ndarray, n_quantiles: int = 200) -> float:
    expert = np.asarray(expert, np.float64)
    policy = np.asarray(policy, np.float64)
    std = expert.std(0) + 1e-6
    qs = (np.arange(n_quantiles) + 0.5) / n_quantiles
    qe = np.quantile(expert / std, qs, axis=0)
    qp = np.quantile(policy / std, qs, axis=0)
    return float(np.abs(qe - qp).mean())


def classifier_accuracy(expert: np.ndarray, policy: np.ndarray, seed: int = 0, steps: int = 400,
                        hidden=(64, 64), batch: int = 256) -> float:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    expert = np.asarray(expert, np.float32)
    policy = np.asarray(policy, np.float32)

    def split(x):
        idx = rng.permutation(len(x))
        k = max(1, int(0.7 * len(x)))
        return x[idx[:k]], x[idx[k:]] if len(x) > k else x[idx[:1]]

    etr, ete = split(expert)
    ptr, pte = split(policy)
    d = Discriminator(expert.shape[1], hidden)
    d.norm.update(np.concatenate([etr, ptr]))
    opt = torch.optim.Adam(d.parameters(), lr=1e-3)
    for _ in range(steps):
        e = torch.as_tensor(etr[rng.integers(0, len(etr), batch)])
        p = torch.as_tensor(ptr[rng.integers(0, len(ptr), batch)])
        loss = GAIL.loss(d(e), d(p))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc_e = GAIL.judged_expert(d(torch.as_tensor(ete))).float().mean().item()
        acc_p = GAIL.judged_policy(d(torch.as_tensor(pte))).float().mean().item()
    return 0.5 * (acc_e + acc_p)


def motion_stats(episodes, window: int = 30, num_joints: int = None) -> dict:
    steps, accs = [], []
    for e in episodes:
        q = np.concatenate([e["state"][:1], e["next_state"]], 0)[: window + 1]
        if num_joints:
            q = q[:, :num_joints]
        d = np.diff(q, axis=0)
        steps.append(np.abs(d).mean())
        if len(d) > 1:
            accs.append(np.abs(np.diff(d, axis=0)).mean())
    return {"step_mean": float(np.mean(steps)), "accel_mean": float(np.mean(accs)) if accs else 0.0}
