"""Fine-tuning the diffusion policy with the adversarial reward: PPO over the initial noise (noise-space RL).

Why noise space (DSRL, arXiv 2506.15799) and not PPO on the denoising chain (DPPO, arXiv 2409.00588): the
diffusion policy stays a frozen black box, so one decision per executed chunk is one PPO step (not one per
denoising step, K times more and through the U-Net's gradients); the noise policy is a small MLP that
trains in seconds per iteration on two CPU cores; and every chunk it can produce is one the diffusion
policy produces from some x_T, so it cannot leave the demonstrations' manifold the way a fine-tuned
denoiser can drift. A KL term to N(0, I) (``finetune.kl_coef``) keeps x_T typical.

One iteration (:meth:`NoiseRL.iterate`): ``finetune.episodes_per_iter`` episodes of ``episode_steps`` ticks
in lockstep in the bundled sim (``rollouts.run_batch``; at each decision the noise policy draws x_T for
every episode and the policy denoises them in one batched call); per tick the reward

    r = adversarial.task_reward_weight * task + adversarial.style_reward_weight * style

with the style term of ``adversarial.algo``'s discriminator (GAIL ``-log(1 - D)``, AMP
``max(0, 1 - 0.25 (D - 1)^2)``) under the discriminator as it is *before* this iteration's steps; the
per-tick rewards of a decision are summed with discount gamma per tick; GAE over decisions (bootstrapped
from the critic at the episode's end: a time limit, not a terminal state); then the discriminator's steps
on expert vs replayed policy transitions, then PPO on the noise policy.

The pitfalls the issue lists, and what this does about each:

- reward form: GAIL's reward is ``-log(1 - D)`` (``algorithms.GAIL.reward``), positive;
- no reward normalisation on tasks with termination: rewards are used as they are, and episodes never end
  early (``tasks.py``), so a positive (or negative) per-step reward gives no incentive to end or prolong
  an episode; only advantages are standardised per batch;
- discriminator saturation (scores pinned at their targets, the reward flat for the policy): the gradient
  penalty, logit regulariser and replay buffer of ``DiscriminatorTrainer``, and its steps are skipped while
  its separation of expert and fresh policy samples (``Adversary.saturation``) is above
  ``finetune.disc_max_saturation`` (``disc/saturation``, ``disc/skipped`` in the metrics);
- warm start from BC: the noise policy starts as N(0, I), exactly the BC policy; the critic and the
  discriminator get ``critic_warmup_iters`` iterations before the noise policy moves;
- AMP's mode collapse without a task term: the default reward has both terms.

A fixed reward (``style=LearnedReward``, ``disc_updates_per_iter`` ignored) is the loop's case: the trainer
node owns the discriminator and the fine-tuner only reads it.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from genil_ros.finetune.noise_policy import NoisePolicy
from genil_ros.finetune.rollouts import EpisodeBatch, run_batch
from genil_ros.finetune.steering import SteeredPolicy

__all__ = ["NoiseRL", "gae"]


def gae(rewards: np.ndarray, values: np.ndarray, last_values: np.ndarray, discounts: np.ndarray,
        lam: float) -> tuple[np.ndarray, np.ndarray]:
    """GAE over decisions: rewards / values (E, n), last_values (E,) (the bootstrap after the last
    decision), discounts (n,) (decision d's reward is followed by a factor discounts[d]). -> (adv, returns)."""
    E, n = rewards.shape
    adv = np.zeros((E, n), np.float32)
    last = np.zeros(E, np.float32)
    for d in reversed(range(n)):
        nxt = last_values if d == n - 1 else values[:, d + 1]
        delta = rewards[:, d] + discounts[d] * nxt - values[:, d]
        last = delta + discounts[d] * lam * last
        adv[:, d] = last
    return adv, adv + values


class NoiseRL:
    """PPO over the DDIM noise of ``policy`` on ``adapter``'s sim task.

    ``cfg``: the ExperimentConfig whose ``finetune`` and ``adversarial`` sections apply. ``style``: a
    ``DiscriminatorTrainer`` (trained here, online), a ``LearnedReward`` (fixed) or None (task reward only).
    """

    def __init__(self, cfg, policy, adapter, style=None, seed: Optional[int] = None):
        f = cfg.finetune
        self.cfg = cfg
        self.f = f
        self.seed = f.seed if seed is None else int(seed)
        self.adapter = adapter
        self.style = style
        self.adversary = getattr(style, "adversary", None)
        torch.manual_seed(self.seed)
        obs_dim = int(policy.obs_encoder.output_dim)
        self.noise = NoisePolicy(obs_dim, (policy.horizon, policy.action_dim), f.hidden, f.init_log_std)
        self.steered = SteeredPolicy(policy, self.noise, seed=self.seed)
        self.opt = torch.optim.Adam(self.noise.parameters(), lr=f.lr)
        self.envs = adapter.make_envs(f.episodes_per_iter, self.seed, cfg.task.control_rate_hz)
        self.iteration = 0
        self.episodes = 0
        self.rng = np.random.default_rng(self.seed)

    # ---- rollouts
    def decide(self, windows: np.ndarray, images: Optional[np.ndarray]):
        """One batched decision: x_T from the noise policy, the chunks, and what PPO needs later."""
        out = self.steered.sample(self.steered.obs_dict(windows, images), 1)
        feats = out["features"]
        with torch.no_grad():
            value = self.noise.value(feats)
        return out["chunks"][:, 0].cpu().numpy(), {
            "features": feats.cpu().numpy(), "noise": out["noise"][:, 0].cpu().numpy(),
            "log_prob": out["log_prob"][:, 0].cpu().numpy(), "value": value.cpu().numpy()}

    def episode_seeds(self) -> list[int]:
        """This iteration's episode seeds (never the evaluation seeds 1000..1999 of ``evaluate.py``)."""
        base = 10_000_000 + self.seed * 1_000_003 + self.iteration * self.f.episodes_per_iter
        return list(range(base, base + self.f.episodes_per_iter))

    def collect(self) -> EpisodeBatch:
        p = self.steered.policy
        return run_batch(self.adapter, self.envs, self.decide, self.episode_seeds(), self.f.episode_steps,
                         p.n_obs_steps, p.n_action_steps)

    def style_rewards(self, batch: EpisodeBatch) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """(E, S) style reward per tick under the current discriminator, and the transitions' features."""
        E, S = batch.actions.shape[:2]
        if self.style is None:
            return np.zeros((E, S), np.float32), None
        s, a, s2 = batch.transitions()
        feats = self.adversary.features(s, a, s2)
        if hasattr(self.style, "update"):  # DiscriminatorTrainer
            r = self.style.reward(feats)
        else:  # LearnedReward
            r = self.style(s, a, s2)
        return np.asarray(r, np.float32).reshape(E, S), feats

    # ---- one iteration
    def iterate(self) -> dict:
        a, f = self.cfg.adversarial, self.f
        batch = self.collect()
        style, feats = self.style_rewards(batch)
        w_task, w_style = a.task_reward_weight, (a.style_reward_weight if self.style is not None else 0.0)
        per_tick = w_task * batch.task_rewards + w_style * style
        rewards, discounts = batch.per_decision(per_tick, f.gamma)
        dec = batch.decisions
        last_v = self._last_values(batch)
        adv, ret = gae(rewards, dec["value"], last_v, discounts, f.gae_lambda)
        m = {"iteration": self.iteration + 1, "episodes": self.episodes + batch.num_episodes,
             "episode/success": float(batch.success.mean()),
             "reward/task": float(batch.task_rewards.mean()), "reward/style": float(style.mean()),
             "reward/total": float(per_tick.mean())}
        if feats is not None and hasattr(self.style, "update") and f.disc_updates_per_iter > 0:
            m.update(self._update_discriminator(feats))
        m.update(self._update_policy(dec, adv, ret, train_policy=self.iteration >= f.critic_warmup_iters))
        self.iteration += 1
        self.episodes += batch.num_episodes
        return m

    @torch.no_grad()
    def _last_values(self, batch: EpisodeBatch) -> np.ndarray:
        """The critic at each episode's final window (the bootstrap of the time limit)."""
        T_o = self.steered.n_obs_steps
        win = batch.states[:, -T_o:]
        if win.shape[1] < T_o:
            win = np.concatenate([np.repeat(win[:, :1], T_o - win.shape[1], 1), win], 1)
        if self.adapter.camera is not None:  # the last frames were not kept: no bootstrap for camera policies
            return np.zeros(batch.num_episodes, np.float32)
        feats = self.steered.features(self.steered.obs_dict(win))
        return self.noise.value(feats).cpu().numpy()

    def _update_discriminator(self, feats: np.ndarray) -> dict:
        d = self.style
        n = min(4096, len(feats))
        de = d.scores(d.expert[self.rng.integers(0, len(d.expert), n)])
        dp = d.scores(feats[self.rng.integers(0, len(feats), n)])
        sat = self.adversary.saturation(de, dp)
        acc = 0.5 * (float(self.adversary.judged_expert(de).mean()) + float(self.adversary.judged_policy(dp).mean()))
        out = {"disc/accuracy_before": acc, "disc/saturation": sat, "disc/d_policy": float(dp.mean()),
               "disc/d_expert": float(de.mean())}
        if sat > self.f.disc_max_saturation:  # saturated: let the policy catch up before D sharpens further
            d.replay.add(feats)
            return {**out, "disc/skipped": 1.0}
        info = self.style.update(feats, self.f.disc_updates_per_iter)
        return {**out, "disc/skipped": 0.0, **{f"disc/{k}": v for k, v in info.items()}}

    def _update_policy(self, dec: dict, adv: np.ndarray, ret: np.ndarray, train_policy: bool) -> dict:
        f = self.f
        dev = self.steered.device
        feats = torch.as_tensor(dec["features"].reshape(-1, dec["features"].shape[-1]), device=dev)
        noise = torch.as_tensor(dec["noise"].reshape(feats.shape[0], -1), device=dev)
        old_logp = torch.as_tensor(dec["log_prob"].reshape(-1), device=dev)
        adv_t = torch.as_tensor(adv.reshape(-1), device=dev)
        adv_t = (adv_t - adv_t.mean()) / (adv_t.std() + 1e-8)
        ret_t = torch.as_tensor(ret.reshape(-1), device=dev)
        N = feats.shape[0]
        stats: dict[str, list] = {"pg_loss": [], "value_loss": [], "kl_prior": [], "approx_kl": [], "clip_frac": []}
        self.noise.train()
        for _ in range(f.ppo_epochs):
            for idx in np.array_split(self.rng.permutation(N), max(1, N // f.minibatch_size)):
                i = torch.as_tensor(idx, device=dev)
                v_loss = ((self.noise.value(feats[i]) - ret_t[i]) ** 2).mean()
                loss = f.value_coef * v_loss
                if train_policy:
                    logp = self.noise.log_prob(feats[i], noise[i])
                    ratio = (logp - old_logp[i]).exp()
                    a = adv_t[i]
                    pg = -torch.min(ratio * a, ratio.clamp(1 - f.ppo_clip, 1 + f.ppo_clip) * a).mean()
                    kl = self.noise.kl_to_prior(feats[i]).mean()
                    loss = loss + pg + f.kl_coef * kl
                    with torch.no_grad():
                        stats["pg_loss"].append(pg.item())
                        stats["kl_prior"].append(kl.item())
                        stats["approx_kl"].append((old_logp[i] - logp).mean().item())
                        stats["clip_frac"].append(((ratio - 1).abs() > f.ppo_clip).float().mean().item())
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.noise.parameters(), f.max_grad_norm)
                self.opt.step()
                stats["value_loss"].append(v_loss.item())
        self.noise.eval()
        out = {f"ppo/{k}": float(np.mean(v)) for k, v in stats.items() if v}
        out["ppo/noise_std"] = float(self.noise.log_std.exp().mean().item())
        out["ppo/policy_updated"] = float(train_policy)
        return out

    # ---- state for --resume (tensors; the caller writes them atomically)
    def state_tensors(self) -> dict[str, torch.Tensor]:
        from genil_ros.adversarial.discriminators import optimizer_tensors

        out = {f"noise.{k}": v.detach().cpu().clone().contiguous() for k, v in self.noise.state_dict().items()}
        out.update({f"opt.{k}": v.cpu() for k, v in optimizer_tensors(self.opt).items()})
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], where: str, iteration: int, episodes: int) -> None:
        from genil_ros.adversarial.discriminators import load_module_strict, load_optimizer_tensors

        load_module_strict(self.noise, {k[6:]: v for k, v in tensors.items() if k.startswith("noise.")}, where)
        opt = {k[4:]: v for k, v in tensors.items() if k.startswith("opt.")}
        if opt:
            load_optimizer_tensors(self.opt, opt)
        self.iteration, self.episodes = int(iteration), int(episodes)
        self.rng = np.random.default_rng(self.seed + 7 * self.iteration)
        self.steered.gen.manual_seed(self.seed + self.iteration)
