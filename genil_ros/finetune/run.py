"""One fine-tuning run: the base checkpoint, the sim task, the expert data, the discriminator and the
noise-space PPO (:class:`~genil_ros.finetune.noise_rl.NoiseRL`), with its output directory::

    OUT/policy/          the fine-tuned policy checkpoint (steering.py layout): the policy node loads it
    OUT/discriminator/   the discriminator (adversarial/checkpoint.py layout, as the trainer node writes it):
                         a reward (LearnedReward) and the scorer of guided selection (guide_checkpoint)
    OUT/state/           everything --resume needs: noise policy + critic + optimiser, discriminator with
                         optimiser and replay buffer (safetensors), counters (state.json)
    OUT/tb/              TensorBoard; OUT/metrics.jsonl one line per iteration; OUT/eval.json

Each of the three checkpoint directories is written atomically (``fileio.write_dir_atomically``); state/
last, so a run killed while saving resumes from the previous complete state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from genil_ros.errors import CheckpointError, DataError, GenilError
from genil_ros.fileio import atomic_write_json, write_dir_atomically

__all__ = ["FinetuneRun", "expert_episodes", "make_discriminator"]

STATE_FORMAT = 1


def expert_episodes(path: Optional[str], adapter, cfg, steps: int, log: Callable[[str], None] = print):
    """Expert episodes in the policy's layout (``state``, ``action``): a dataset directory, rosbags (through
    the dataset builder), or, without ``path``, ``finetune.expert_episodes`` scripted-expert episodes in the
    sim. Returns (episodes, source)."""
    if path is None:
        from genil_ros.finetune.rollouts import expert_batch

        n, seed = cfg.finetune.expert_episodes, 900_000 + cfg.finetune.seed
        envs = adapter.make_envs(1, seed, cfg.task.control_rate_hz)
        batch = expert_batch(adapter, envs, list(range(seed, seed + n)), steps, expert_seed=seed)
        log(f"expert: scripted {adapter.task.name} expert, {n} episodes of {steps} steps, "
            f"success {batch.success.mean():.2f}")
        return batch.policy_episodes(), f"scripted expert ({adapter.task.name}, {n} episodes, seed {seed})"
    p = Path(path)
    if p.is_dir() and (p / "meta.json").is_file():
        from genil_ros.data.store import EpisodeStore

        store = EpisodeStore.open(p)
        eps = [{"state": np.array(store.lowdim(i, "state"), np.float32),
                "action": np.array(store.lowdim(i, "action"), np.float32)} for i in range(store.num_episodes)]
    else:
        from genil_ros.adversarial.expert import load_expert

        eps = load_expert(p, cfg).episodes
    for i, e in enumerate(eps):
        if e["state"].shape[1:] != (adapter.state_dim,) or e["action"].shape[1:] != (adapter.action_dim,):
            raise DataError(f"{p}: episode {i} has state {e['state'].shape} / action {e['action'].shape}, the "
                            f"policy's are ({adapter.state_dim},) / ({adapter.action_dim},)")
    if not eps:
        raise DataError(f"{p}: no expert episodes")
    log(f"expert: {p}: {len(eps)} episodes, {sum(len(e['state']) for e in eps)} steps")
    return eps, str(p)


def make_discriminator(cfg, adapter, episodes, source: str, seed: int):
    """The online DiscriminatorTrainer of ``adversarial.algo`` on the expert episodes (policy layout)."""
    from genil_ros.adversarial.algorithms import make_adversary
    from genil_ros.adversarial.discriminators import DiscriminatorTrainer

    a = cfg.adversarial
    nc = adapter.num_commanded
    if a.algo == "gail" and nc == 0:
        raise GenilError("adversarial.algo gail: the policy's state does not start with the joints it commands "
                         "(GAIL scores a - q); use amp")
    adversary = make_adversary(a.algo, max(nc, 1))
    features = adversary.episodes_features(episodes, where=source)
    names = [n for o in cfg.task.observations if o.type != "camera" for n in o.dim_names]
    record = {"num_joints": max(nc, 1), "joint_names": names[:nc], "use_velocity": False, "disc_goal": False,
              "expert_source": source, "state_names": names, "rate_hz": float(cfg.task.control_rate_hz)}
    return DiscriminatorTrainer(adversary, features, hidden=a.disc_hidden, lr=a.disc_lr,
                                weight_decay=a.disc_weight_decay, logit_reg=a.disc_logit_reg,
                                grad_penalty=a.grad_penalty, batch_size=a.disc_batch_size,
                                replay_size=a.replay_buffer_size, seed=seed, record=record)


class FinetuneRun:
    """Build (or resume) a fine-tuning run of ``base`` (a BC checkpoint) in ``out``.

    ``cfg``: the base checkpoint's config with the ``finetune`` / ``adversarial`` sections to use (see
    ``cli.py``); ``style``: "online" (a discriminator trained here), "none" (task reward only) or a
    discriminator checkpoint directory (a fixed reward)."""

    def __init__(self, base, cfg, out, style: str = "online", expert: Optional[str] = None, device: str = "cpu",
                 log: Callable[[str], None] = print):
        from genil_ros.finetune.noise_rl import NoiseRL
        from genil_ros.finetune.steering import weights_sha256
        from genil_ros.finetune.tasks import SimAdapter, make_task
        from genil_ros.policy.checkpoint import load_policy, resolve_checkpoint_dir

        self.base = resolve_checkpoint_dir(base)
        self.out = Path(out)
        self.cfg = cfg
        self.log = log
        self.policy = load_policy(self.base, device=device)
        self.base_sha = weights_sha256(self.base)
        f = cfg.finetune
        self.adapter = SimAdapter(make_task(f.task), self.policy.cfg.task, where=str(self.base))
        self.style_kind = style
        if style == "online":
            eps, src = expert_episodes(expert, self.adapter, cfg, f.episode_steps, log)
            reward = make_discriminator(cfg, self.adapter, eps, src, f.seed)
        elif style == "none":
            reward = None
        else:
            from genil_ros.adversarial.discriminators import LearnedReward

            reward = LearnedReward.load(style)
        self.rl = NoiseRL(cfg, self.policy, self.adapter, reward, seed=f.seed)

    # ---- the run's record
    def info(self) -> dict:
        a, f = self.cfg.adversarial, self.cfg.finetune
        style = self.rl.adversary.name if self.rl.adversary is not None else None
        return {"algo": "noise_ppo", "style": style, "task": f.task, "base_checkpoint": str(self.base),
                "reward": {"task_weight": a.task_reward_weight,
                           "style_weight": a.style_reward_weight if style else 0.0},
                "iterations": self.rl.iteration, "episodes": self.rl.episodes, "seed": f.seed,
                "style_source": self.style_kind}

    # ---- checkpoints
    def save(self) -> None:
        from safetensors.torch import save_file

        from genil_ros.config import dump_config
        from genil_ros.finetune.steering import save_finetuned

        save_finetuned(self.out / "policy", self.base, self.rl.noise, self.info())
        disc = self.rl.style if hasattr(self.rl.style, "update") else None
        if disc is not None:
            disc.save(self.out / "discriminator", "discriminator", dump_config(self.cfg),
                      iteration=self.rl.iteration, episodes=self.rl.episodes)
        tensors = self.rl.state_tensors()
        disc_tensors = disc.state_tensors() if disc is not None else {}

        def fill(tmp: Path) -> None:
            save_file(tensors, str(tmp / "noise_rl.safetensors"))
            if disc_tensors:
                save_file(disc_tensors, str(tmp / "disc.safetensors"))
            atomic_write_json(tmp / "state.json", {
                "format_version": STATE_FORMAT, "base_weights_sha256": self.base_sha, **self.info(),
                "disc_updates": int(disc.num_updates) if disc is not None else 0})

        write_dir_atomically(self.out / "state", fill)

    def resume(self) -> None:
        from safetensors.torch import load_file

        d = self.out / "state"
        try:
            st = json.loads((d / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{d / 'state.json'}: cannot resume ({type(e).__name__}: {e})") from None
        if st.get("format_version") != STATE_FORMAT:
            raise CheckpointError(f"{d / 'state.json'}: format_version {st.get('format_version')!r} is not "
                                  f"{STATE_FORMAT}")
        if st.get("base_weights_sha256") != self.base_sha:
            raise CheckpointError(f"{d}: the run fine-tuned other base weights than {self.base}")
        mine = self.info()
        for key in ("style", "task"):
            if st.get(key) != mine[key]:
                raise CheckpointError(f"{d}: the run has {key} {st.get(key)!r}, this one {mine[key]!r}")
        self.rl.load_state_tensors(load_file(str(d / "noise_rl.safetensors")), str(d), st["iterations"],
                                   st["episodes"])
        disc = self.rl.style if hasattr(self.rl.style, "update") else None
        if disc is not None:
            disc.load_state_tensors(load_file(str(d / "disc.safetensors")), str(d))
            disc.num_updates = int(st.get("disc_updates", 0))
            disc.rng = np.random.default_rng(self.cfg.finetune.seed + self.rl.iteration)
