"""Success and motion-likeness of a (steered, optionally guided) diffusion policy on a bundled sim task.

Episode i uses seed ``seed + i`` (1000.. by default, never a fine-tuning seed), runs ``steps`` ticks without
early termination, and succeeds if the task's success holds at any tick. Motion-likeness is the metric of
``docs/figures`` (``adversarial/metrics.py``): ``motion_w1``, the per-dimension Wasserstein-1 distance of the
arm's transitions ``[q, q' - q]`` to the expert's, in the expert's standard deviations (0 = the same
distributions), against expert episodes run on other seeds.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from genil_ros.finetune.rollouts import EpisodeBatch, expert_batch, run_batch

__all__ = ["evaluate", "expert_motion", "summarise"]

EVAL_SEED = 1000
EXPERT_SEED = 500_000  # the expert reference episodes' seeds (apart from evaluation and training seeds)


def expert_motion(adapter, episodes: int, steps: int, seed: int = EXPERT_SEED) -> EpisodeBatch:
    """The scripted expert's own fixed-length episodes (the reference of ``motion_w1``)."""
    envs = adapter.make_envs(1, seed)
    return expert_batch(adapter, envs, list(range(seed, seed + episodes)), steps, expert_seed=seed)


def summarise(batch: EpisodeBatch, expert: Optional[EpisodeBatch]) -> dict:
    """success rate, task return, motion_w1 (vs ``expert``), speed / smoothness of the motion."""
    from genil_ros.adversarial.metrics import motion_features, motion_stats, motion_w1

    out = {"episodes": batch.num_episodes, "success_rate": float(batch.success.mean()),
           "task_return": float(batch.task_rewards.sum(1).mean()),
           **motion_stats(batch.motion_episodes())}
    if expert is not None:
        out["motion_w1"] = motion_w1(motion_features(expert.motion_episodes()),
                                     motion_features(batch.motion_episodes()))
    dist = [i.get("distance") for i in batch.infos if "distance" in i]
    if dist:
        out["final_distance"] = float(np.mean(dist))
    return out


def evaluate(steered, adapter, episodes: int = 100, steps: Optional[int] = None, seed: int = EVAL_SEED,
             batch_size: int = 50, scorer=None, num_samples: int = 1, expert: Optional[EpisodeBatch] = None,
             progress: bool = False) -> dict:
    """Run ``episodes`` episodes (``batch_size`` in lockstep); with ``scorer`` (a ``guided.ChunkScorer``) the
    best of ``num_samples`` chunks by the discriminator is executed at every decision."""
    from tqdm import tqdm

    steps = int(steps or adapter.task.episode_steps)
    K = int(num_samples) if scorer is not None else 1
    n_env = min(batch_size, episodes)
    envs = adapter.make_envs(n_env, seed)

    def decide(windows, images):
        out = steered.sample(steered.obs_dict(windows, images), K)
        chunks = out["chunks"].detach().cpu().numpy()  # (B, K, T_p, A)
        if K == 1:
            return chunks[:, 0], {}
        best, scores = scorer.select(windows[:, -1], chunks)
        return chunks[np.arange(len(best)), best], {"best_score": scores.max(1), "mean_score": scores.mean(1)}

    parts = []
    with torch.no_grad(), tqdm(total=episodes, desc="evaluating", unit="ep", disable=not progress) as bar:
        for start in range(0, episodes, n_env):
            seeds = list(range(seed + start, seed + min(start + n_env, episodes)))
            parts.append(run_batch(adapter, envs, decide, seeds, steps, steered.n_obs_steps, steered.n_action_steps))
            bar.update(len(seeds))
    for e in envs:
        e.close()
    batch = _concat(parts)
    res = summarise(batch, expert)
    res.update(seed=seed, steps=steps, num_samples=K, guided=scorer is not None,
               success=[bool(s) for s in batch.success])
    if "best_score" in batch.decisions:
        res["guide_score_best"] = float(batch.decisions["best_score"].mean())
        res["guide_score_mean"] = float(batch.decisions["mean_score"].mean())
    return res


def _concat(parts: list[EpisodeBatch]) -> EpisodeBatch:
    if len(parts) == 1:
        return parts[0]
    keys = set(parts[0].decisions)
    return EpisodeBatch(np.concatenate([p.states for p in parts]), np.concatenate([p.actions for p in parts]),
                        np.concatenate([p.task_rewards for p in parts]), np.concatenate([p.success for p in parts]),
                        np.concatenate([p.arm_q for p in parts]), sum((p.seeds for p in parts), []), parts[0].ranges,
                        {k: np.concatenate([p.decisions[k] for p in parts]) for k in keys},
                        sum((p.infos for p in parts), []))
