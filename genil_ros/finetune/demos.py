"""The behaviour-cloned starting point of fine-tuning, made directly in the sim: scripted-expert episodes
into an episode store (the dataset contract of ``genil-ros dataset build``), and a low-dim diffusion policy
trained on it with the project's training loop (``policy/train.py``).

A user with a robot gets the same from bags (``genil-ros dataset build`` + ``genil-ros train``); this is for
the sim's experiments and tests, where the starting policy is deliberately weak (few demonstrations or few
training steps).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["lowdim_config", "build_demo_store", "train_bc"]


def lowdim_config(task_name: str, policy: Optional[dict] = None, train: Optional[dict] = None,
                  finetune: Optional[dict] = None, adversarial: Optional[dict] = None):
    """An ExperimentConfig for the low-dim policy of a bundled task (``tasks.SimTask.lowdim_entries``)."""
    from genil_ros.config import config_from_dict
    from genil_ros.finetune.tasks import make_task

    task = make_task(task_name)
    d = {"task": task.task_section(),
         "dataset": {"action_source": "command", "action_topic": "/forward_position_controller/commands"},
         "policy": {"down_dims": [64, 128, 256], **(policy or {})},
         "train": {"batch_size": 64, "lr": 1.0e-4, "lr_warmup_steps": 100, "val_fraction": 0.0,
                   "checkpoint_every_epochs": 10_000, **(train or {})},
         "finetune": {"task": task_name, "episode_steps": task.episode_steps, **(finetune or {})},
         "adversarial": dict(adversarial or {})}
    return config_from_dict(d, source=f"low-dim {task_name} policy")


def build_demo_store(adapter, episodes: int, steps: int, seed: int, path, rate_hz: float = 10.0):
    """``episodes`` scripted-expert episodes of ``steps`` ticks (seeds ``seed``..) as an episode store."""
    from genil_ros.data.store import EpisodeStore
    from genil_ros.finetune.rollouts import expert_batch

    envs = adapter.make_envs(1, seed, rate_hz)
    batch = expert_batch(adapter, envs, list(range(seed, seed + episodes)), steps, expert_seed=seed)
    names = list(adapter.task.action_names)
    with EpisodeStore.create(Path(path), joint_names=names, control_rate_hz=rate_hz, state_dim=adapter.state_dim,
                             action_dim=adapter.action_dim, extra={"source": f"scripted {adapter.task.name} expert",
                                                                   "success_rate": float(batch.success.mean())}) as w:
        for i in range(episodes):
            w.add_episode({"state": batch.states[i, :-1], "action": batch.actions[i],
                           "timestamp": np.arange(steps, dtype=np.float64) / rate_hz}, seed=int(batch.seeds[i]))
        store = w.finalize()
    return store


def train_bc(cfg, store_path, out, max_steps: int, seed: int = 0, progress: bool = False,
             log=print) -> Path:
    """Train the diffusion policy of ``cfg`` on the store for ``max_steps`` steps; the final checkpoint."""
    import copy

    from genil_ros.data.dataset import SequenceDataset
    from genil_ros.data.store import EpisodeStore
    from genil_ros.policy.train import train_policy

    cfg = copy.deepcopy(cfg)
    cfg.train.max_steps = int(max_steps)
    cfg.train.seed = int(seed)
    store = EpisodeStore.open(store_path)
    h = cfg.task.horizon
    train_set = SequenceDataset(store, h.n_obs_steps, h.horizon, cameras=[])
    return train_policy(cfg, train_set, None, store.stats(), out, device="cpu", progress=progress, log=log)
