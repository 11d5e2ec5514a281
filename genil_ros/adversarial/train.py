"""`genil-ros train-adversarial`: GAIL or AMP discriminator + PPO on the bundled sim (state observations).

::

    genil-ros train-adversarial --algo amp --config config/sim_task.yaml --out runs/amp
        [--expert DATASET_DIR_OR_BAGS] [--resume] [--steps N] [--seed S]

Without ``--expert`` the scripted expert of the sim provides ``adversarial.expert_episodes`` episodes.
Per iteration: ``num_envs x rollout_steps`` transitions with the current policy; the reward
``w_G * task + w_S * style`` (GAIL's style term is ``-log(1 - D)``, AMP's ``max(0, 1 - 0.25 (D - 1)^2)``)
is computed with the current discriminator; the discriminator then takes ``disc_updates_per_iter``
steps on expert vs replayed policy transitions; PPO updates the policy. TensorBoard logs go to
``<out>/tb``, the checkpoint to ``<out>/checkpoint`` (atomic) and the final evaluation to
``<out>/eval.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["AdversarialTrainer", "make_env", "make_expert_actor", "scripted_expert_set", "algo_names", "log_iteration",
           "add_arguments", "run"]


# --------------------------------------------------------------------------- environments


def make_env(cfg, seed: int):
    a = cfg.adversarial
    if a.env == "point":
        from genil_ros.adversarial.envs import PointReachEnv

        return PointReachEnv(seed=seed, max_episode_steps=a.max_episode_steps,
                             control_rate_hz=cfg.task.control_rate_hz)
    from genil_ros.sim.env import ArmEnv

    return ArmEnv(variant=a.variant, render=False, seed=seed, control_rate_hz=cfg.task.control_rate_hz,
                  max_episode_steps=a.max_episode_steps, terminate_on_success=a.terminate_on_success)


def env_joint_info(cfg) -> tuple[list[str], Optional[np.ndarray], Optional[np.ndarray]]:
    if cfg.adversarial.env == "point":
        from genil_ros.adversarial.envs import PointReachEnv

        lo, hi = PointReachEnv.JOINT_LIMITS
        return list(PointReachEnv.JOINT_NAMES), lo, hi
    from genil_ros.sim import env as sim_env

    lo, hi = sim_env.JOINT_LIMITS
    return list(sim_env.JOINT_NAMES), np.asarray(lo), np.asarray(hi)


def make_expert_actor(cfg, env, seed: int):
    if cfg.adversarial.env == "point":
        from genil_ros.adversarial.envs import PointReachExpert

        ex = PointReachExpert(env, seed=seed)
    else:
        from genil_ros.sim.expert import ScriptedExpert

        ex = ScriptedExpert(env, seed=seed)
    return ex


def scripted_expert_set(cfg, n_episodes: int, seed: int):
    """Roll out the scripted expert: (ExpertSet, EpisodeLog)."""
    from genil_ros.adversarial.envs import ObsSpec
    from genil_ros.adversarial.expert import ExpertSet, run_episodes

    spec = ObsSpec(cfg.task.use_velocity, cfg.adversarial.disc_goal)
    env = make_env(cfg, seed)
    ex = make_expert_actor(cfg, env, seed)
    log = run_episodes(env, ex.act, n_episodes, seed=seed, max_steps=cfg.adversarial.max_episode_steps,
                       disc_state=spec.disc_state, reset_actor=ex.reset)
    close = getattr(env, "close", None)
    if close:
        close()
    names, _, _ = env_joint_info(cfg)
    eps = [{"state": e["state"], "action": e["action"], "next_state": e["next_state"]} for e in log.episodes]
    return ExpertSet(eps, names, f"scripted expert ({cfg.adversarial.env}, {n_episodes} episodes, seed {seed})",
                     {"success_rate": log.success_rate, "mean_return": log.mean_return}), log


# --------------------------------------------------------------------------- trainer


class AdversarialTrainer:
    """PPO on ``cfg.adversarial.num_envs`` sim environments with the reward ``w_G * task + w_S * style``,
    the style term from a :class:`~genil_ros.adversarial.discriminators.DiscriminatorTrainer` that learns
    expert vs policy transitions as it goes. One :meth:`iterate` = collect, reward, discriminator steps,
    PPO update."""

    def __init__(self, cfg, algo: str, expert, out: Optional[Path] = None, seed: Optional[int] = None):
        import torch

        from genil_ros.adversarial.discriminators import DiscriminatorTrainer
        from genil_ros.adversarial.envs import ActionMap, ObsSpec, VecEnv
        from genil_ros.adversarial.ppo import PPO, ActorCritic

        a = cfg.adversarial
        self.cfg = cfg
        self.seed = a.seed if seed is None else seed
        self.out = Path(out) if out is not None else None
        self.spec = ObsSpec(cfg.task.use_velocity, cfg.adversarial.disc_goal)
        names, lo, hi = env_joint_info(cfg)
        self.joint_names = names
        self.num_joints = len(names)
        if list(expert.joint_names) != names:
            from genil_ros.errors import DataError

            raise DataError(f"{expert.source}: expert joints {list(expert.joint_names)} differ from the env's {names}")
        self.expert = expert
        self.disc = DiscriminatorTrainer.from_config(cfg, expert, algo=algo, seed=self.seed,
                                                     goal_in_state=a.disc_goal)
        self.adversary = self.disc.adversary
        torch.manual_seed(self.seed)  # the policy's initial weights (the discriminator seeded its own)
        self.amap = ActionMap(a.action_scale, lo, hi)
        self.venv = VecEnv([lambda i=i: make_env(cfg, self.seed * 1000 + i) for i in range(a.num_envs)],
                           max_episode_steps=a.max_episode_steps, seed=self.seed)
        obs0 = self.venv.reset()
        obs_dim = len(self.spec.policy_obs(obs0[0]))
        self.model = ActorCritic(obs_dim, self.num_joints, a.policy_hidden, a.init_log_std)
        self.ppo = PPO(self.model, lr=a.policy_lr, clip=a.ppo_clip, epochs=a.ppo_epochs,
                       minibatch_size=a.ppo_minibatch_size, value_coef=a.value_coef, entropy_coef=a.entropy_coef,
                       max_grad_norm=a.max_grad_norm, seed=self.seed)
        self.iteration = 0
        self.env_steps = 0
        self.gen = torch.Generator().manual_seed(self.seed)
        self._ep_ret = np.zeros(a.num_envs)
        self._ep_succ = np.zeros(a.num_envs, dtype=bool)
        self.history: list[dict] = []

    @property
    def algo(self) -> str:
        return self.adversary.name

    # ---- one iteration
    def collect(self):
        """Run the current policy for ``rollout_steps`` in every environment: a :class:`~.ppo.Rollout`."""
        from genil_ros.adversarial.ppo import Rollout

        a = self.cfg.adversarial
        T, N = a.rollout_steps, self.venv.n
        obs = self.venv.obs
        P = len(self.spec.policy_obs(obs[0]))
        ro = Rollout.zeros(T, N, obs_dim=P, action_dim=self.num_joints, feature_dim=self.disc.dim)
        for t in range(T):
            pobs = np.stack([self.spec.policy_obs(o) for o in obs])
            self.model.obs_norm.update(pobs)
            u, logp, v = self.model.act(pobs, generator=self.gen)
            q = np.stack([o["joint_pos"] for o in obs]).astype(np.float32)
            act = np.stack([self.amap(q[i], u[i]) for i in range(N)])
            s = np.stack([self.spec.disc_state(o) for o in obs])
            nobs, r, term, trunc, succ, final = self.venv.step(act)
            s2 = np.stack([self.spec.disc_state(final[i] if final[i] is not None else nobs[i]) for i in range(N)])
            ro.disc_features[t] = self.adversary.features(s, act, s2)
            for i in np.nonzero(trunc)[0]:  # time limit: bootstrap from the value of the state it was cut at
                ro.bootstrap[t, i] = a.gamma * float(self.model.predict_value(self.spec.policy_obs(final[i])[None])[0])
            ro.observations[t], ro.actions[t], ro.log_probs[t], ro.values[t], ro.task_rewards[t] = pobs, u, logp, v, r
            ro.terminated[t] = term
            ro.episode_ends[t] = term | trunc
            self._ep_ret += r
            self._ep_succ |= succ
            for i in np.nonzero(term | trunc)[0]:
                ro.finished_returns.append(self._ep_ret[i])
                ro.finished_successes.append(bool(self._ep_succ[i]))
                self._ep_ret[i] = 0.0
                self._ep_succ[i] = False
            obs = nobs
        ro.last_observations[:] = np.stack([self.spec.policy_obs(o) for o in obs])
        return ro

    def iterate(self) -> dict:
        """Collect, reward with the current discriminator, update the discriminator, update PPO; the metrics."""
        from genil_ros.adversarial.algorithms import combine_rewards
        from genil_ros.adversarial.ppo import compute_gae

        a = self.cfg.adversarial
        ro = self.collect()
        T, N = ro.task_rewards.shape
        feats = ro.disc_features.reshape(T * N, -1)
        style = self.disc.reward(feats).reshape(T, N)
        mixed = combine_rewards(ro.task_rewards, style, a.task_reward_weight, a.style_reward_weight)
        last_v = self.model.predict_value(ro.last_observations)
        adv, ret = compute_gae(mixed + ro.bootstrap, ro.values, ro.terminated, ro.episode_ends, last_v, a.gamma,
                               a.gae_lambda)
        dinfo = self.disc.update(feats, a.disc_updates_per_iter)
        pinfo = self.ppo.update(ro.batch(adv, ret))
        self.iteration += 1
        self.env_steps += ro.num_steps
        m = {"iteration": self.iteration, "env_steps": self.env_steps,
             "reward/task": float(ro.task_rewards.mean()), "reward/style": float(style.mean()),
             "reward/total": float(mixed.mean()),
             **{f"disc/{k}": v for k, v in dinfo.items()}, **{f"ppo/{k}": v for k, v in pinfo.items()}}
        if ro.finished_returns:
            m["episode/task_return"] = float(np.mean(ro.finished_returns))
            m["episode/success"] = float(np.mean(ro.finished_successes))
            m["episode/count"] = len(ro.finished_returns)
        self.history.append(m)
        return m

    # ---- evaluation
    def evaluate(self, episodes: int, seed: int = 10_000) -> dict:
        """Deterministic policy on fixed seeds: success, task return and motion distance to the expert."""
        from genil_ros.adversarial.expert import run_episodes
        from genil_ros.adversarial.metrics import classifier_accuracy, motion_features, motion_stats, motion_w1

        env = make_env(self.cfg, seed)

        def actor(o):
            u, _, _ = self.model.act(self.spec.policy_obs(o)[None], deterministic=True)
            return self.amap(o["joint_pos"].astype(np.float32), u[0])

        log = run_episodes(env, actor, episodes, seed=seed, max_steps=self.cfg.adversarial.max_episode_steps,
                           disc_state=self.spec.disc_state)
        close = getattr(env, "close", None)
        if close:
            close()
        pol = motion_features(log.episodes)
        exp = motion_features(self.expert.episodes)
        ev = self.disc.evaluate(self.adversary.episodes_features(log.episodes, where="evaluation rollouts"))
        return {"success_rate": log.success_rate, "task_return": log.mean_return,
                "mean_length": float(np.mean(log.lengths)), "motion_w1": motion_w1(exp, pol),
                "classifier_accuracy": classifier_accuracy(exp, pol, seed=self.seed),
                "disc_reward": ev["reward_policy"], "disc_acc_policy": ev["acc_policy"], "episodes": episodes,
                "final_distance": float(np.mean(log.final_distance)) if log.final_distance else float("nan"),
                **motion_stats(log.episodes, num_joints=self.num_joints)}

    # ---- checkpoints
    def save(self, directory: Path) -> Path:
        """Discriminator + policy (and both optimisers) + counters, atomically (``checkpoint.py`` layout)."""
        from genil_ros.adversarial.discriminators import optimizer_tensors
        from genil_ros.config import dump_config

        pol = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        pol.update({f"opt.{k}": v for k, v in optimizer_tensors(self.ppo.opt).items()})
        return self.disc.save(directory, "adversarial", dump_config(self.cfg), extra_tensors={"policy": pol},
                              iteration=self.iteration, env_steps=self.env_steps)

    def load(self, directory: Path) -> None:
        """Continue from a checkpoint of :meth:`save` (same algorithm and feature size)."""
        from genil_ros.adversarial.discriminators import load_module_strict, load_optimizer_tensors

        meta, t = self.disc.resume(directory, ("disc", "policy"))
        load_module_strict(self.model, {k[6:]: v for k, v in t["policy"].items() if k.startswith("model.")},
                           str(directory))
        opt = {k[4:]: v for k, v in t["policy"].items() if k.startswith("opt.")}
        if opt:
            load_optimizer_tensors(self.ppo.opt, opt)
        self.iteration = int(meta["iteration"])
        self.env_steps = int(meta["env_steps"])
        self.gen.manual_seed(self.seed + self.iteration)
        self.disc.rng = np.random.default_rng(self.seed + self.iteration)
        self.ppo.rng = np.random.default_rng(self.seed + 7 * self.iteration)


# --------------------------------------------------------------------------- CLI


def log_iteration(writer, stream, m: dict, step: int, skip=("iteration",)) -> None:
    """One iteration's metrics ``m``: each value as a TensorBoard scalar at ``step`` (but the keys in ``skip``),
    the whole dict as one JSON line of the open ``stream`` (metrics.jsonl), flushed."""
    for k, v in m.items():
        if k not in skip:
            writer.add_scalar(k, v, step)
    stream.write(json.dumps(m) + "\n")
    stream.flush()


def algo_names() -> tuple[str, ...]:
    """The names ``adversarial.algo`` accepts, read from the config (not importing torch: ``--help`` stays
    quick); ``algorithms.ADVERSARIES`` has one class per name (checked by the tests)."""
    import typing

    from genil_ros.config import AdversarialConfig

    return typing.get_args(typing.get_type_hints(AdversarialConfig)["algo"])


def add_arguments(parser) -> None:
    parser.add_argument("--algo", choices=algo_names(), default=None, help="default: adversarial.algo of the config")
    parser.add_argument("--config", default="sim_task.yaml", help="experiment YAML (or a name in config/)")
    parser.add_argument("--expert", default=None,
                        help="dataset directory or rosbag2 file/directory of bags; default: the scripted expert")
    parser.add_argument("--out", required=True, help="output directory (tb/, checkpoint/, metrics.jsonl, eval.json)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint")
    parser.add_argument("--steps", type=int, default=None,
                        help="total env steps (overrides adversarial.total_env_steps)")
    parser.add_argument("--seed", type=int, default=None, help="overrides adversarial.seed")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from genil_ros.adversarial.expert import load_expert
    from genil_ros.config import load_config
    from genil_ros.errors import CheckpointError, GenilError
    from genil_ros.fileio import atomic_write_json
    from genil_ros.paths import config_path

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(config_path(args.config))
    algo = args.algo or cfg.adversarial.algo
    cfg.adversarial.algo = algo
    seed = cfg.adversarial.seed if args.seed is None else args.seed
    cfg.adversarial.seed = seed
    total = args.steps or cfg.adversarial.total_env_steps
    out = Path(args.out)
    ckpt = out / "checkpoint"
    if args.resume and not ckpt.is_dir():
        raise CheckpointError(f"{ckpt}: nothing to resume from")
    if not args.resume and ckpt.is_dir():
        raise GenilError(f"{out}: already holds a checkpoint; pass --resume to continue or choose another --out")
    out.mkdir(parents=True, exist_ok=True)

    if args.expert:
        if cfg.adversarial.disc_goal:
            raise GenilError(f"{args.config}: adversarial.disc_goal: datasets and bags do not record the goal; "
                             "set it false or train against the scripted expert (no --expert)")
        expert = load_expert(args.expert, cfg)
        print(f"expert: {expert.source}: {len(expert.episodes)} episodes, {expert.num_steps} steps")
    else:
        expert, _ = scripted_expert_set(cfg, cfg.adversarial.expert_episodes, seed=seed + 777)
        print(f"expert: {expert.source}: success {expert.info['success_rate']:.2f}, "
              f"return {expert.info['mean_return']:.2f}")
    trainer = AdversarialTrainer(cfg, algo, expert, out, seed=seed)
    if args.resume:
        trainer.load(ckpt)
        print(f"resumed from {ckpt} at iteration {trainer.iteration} ({trainer.env_steps} env steps)")

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / "tb"))
    metrics_path = out / "metrics.jsonl"
    bar = tqdm(total=total, initial=min(trainer.env_steps, total), unit="step", desc=f"{algo}", dynamic_ncols=True)
    every = cfg.adversarial.checkpoint_every_iters
    try:
        with metrics_path.open("a", encoding="utf-8") as mf:
            while trainer.env_steps < total:
                m = trainer.iterate()
                log_iteration(writer, mf, m, trainer.env_steps, skip=("iteration", "env_steps"))
                bar.update(m["env_steps"] - bar.n)
                bar.set_postfix(acc=f"{m['disc/accuracy']:.2f}", style=f"{m['reward/style']:.2f}",
                                succ=f"{m.get('episode/success', float('nan')):.2f}")
                if trainer.iteration % every == 0:
                    trainer.save(ckpt)
    finally:
        bar.close()
    trainer.save(ckpt)
    if cfg.adversarial.eval_episodes:
        ev = trainer.evaluate(cfg.adversarial.eval_episodes)
        for k, v in ev.items():
            writer.add_scalar(f"eval/{k}", v, trainer.env_steps)
        atomic_write_json(out / "eval.json", ev)
        print("eval: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in ev.items()))
    writer.close()
    return 0
