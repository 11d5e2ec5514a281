"""The discriminator's stabilisers (gradient penalty, regularisers, normaliser, replay buffer) against
hand-computed values, its checkpoint round trip, PPO on the numpy point-mass task, and the discriminator
separating expert from random data. GAIL / AMP themselves: test_adversarial_algorithms.py."""

import json

import numpy as np
import pytest
import torch

from genil_ros.adversarial.algorithms import AMP, make_adversary
from genil_ros.adversarial.discriminators import DiscriminatorTrainer, LearnedReward, ReplayBuffer, RunningNorm
from genil_ros.adversarial.envs import ActionMap, ObsSpec, PointReachEnv, PointReachExpert, VecEnv
from genil_ros.adversarial.ppo import compute_gae
from genil_ros.errors import CheckpointError

torch.set_num_threads(1)


# --------------------------------------------------------------------------- regularisers


def test_gradient_penalty_and_regularisers_hand_computed():
    """Linear D(z) = w.z + b: grad wrt z is w, so the penalty is |w|^2; logit reg and weight decay too."""
    rng = np.random.default_rng(0)
    expert = rng.normal(size=(64, 3)).astype(np.float32)
    tr = DiscriminatorTrainer(AMP(num_joints=3), expert, hidden=(), grad_penalty=10.0, logit_reg=0.05,
                              weight_decay=1e-3, batch_size=8)
    tr.net.norm.mean.zero_()
    tr.net.norm.var.fill_(1.0 - tr.net.norm.eps)  # identity normalisation
    w = torch.tensor([[0.5, -1.0, 2.0]])
    with torch.no_grad():
        tr.net.head.weight.copy_(w)
        tr.net.head.bias.fill_(0.1)
    e = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    p = torch.tensor([[0.0, 1.0, 0.0]])
    loss, info = tr.losses(e, p)
    de = torch.tensor([0.1, 0.6])
    dp = torch.tensor([-0.9])
    obj = 0.5 * (((de - 1) ** 2).mean() + ((dp + 1) ** 2).mean())
    w2 = (w ** 2).sum()
    assert info["objective"] == pytest.approx(obj.item(), rel=1e-5)
    assert info["grad_penalty"] == pytest.approx(w2.item(), rel=1e-5)
    assert loss.item() == pytest.approx((obj + 0.5 * 10.0 * w2 + 0.05 * w2 + 1e-3 * w2).item(), rel=1e-5)
    assert info["acc_expert"] == 1.0 and info["acc_policy"] == 1.0


# --------------------------------------------------------------------------- normaliser, replay


def test_running_norm_matches_batch_statistics():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, size=(1000, 4)) * np.array([1, 10, 0.1, 1])
    n = RunningNorm(4, clip=100.0)
    for chunk in np.array_split(x, 7):
        n.update(chunk)
    np.testing.assert_allclose(n.mean.numpy(), x.mean(0), rtol=1e-9)
    np.testing.assert_allclose(n.var.numpy(), x.var(0), rtol=1e-9)
    z = n.numpy(x.astype(np.float32))
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-3)


def test_replay_buffer_ring_order_and_sampling():
    rb = ReplayBuffer(5, 1)
    rb.add(np.arange(3)[:, None])
    rb.add(np.arange(3, 7)[:, None])
    assert len(rb) == 5
    np.testing.assert_array_equal(rb.state_arrays()["data"][:, 0], [2, 3, 4, 5, 6])  # oldest first
    s = rb.sample(100, np.random.default_rng(0))
    assert set(s[:, 0].tolist()) <= {2, 3, 4, 5, 6}
    rb2 = ReplayBuffer(5, 1)
    rb2.load_arrays(rb.state_arrays())
    np.testing.assert_array_equal(rb2.state_arrays()["data"], rb.state_arrays()["data"])
    rb.add(np.arange(100, 112)[:, None])  # more than the capacity at once: the newest 5 stay
    np.testing.assert_array_equal(rb.state_arrays()["data"][:, 0], [107, 108, 109, 110, 111])


# --------------------------------------------------------------------------- built from the config, saved, resumed


def _expert_set(rng, n_episodes=3, steps=15):
    from genil_ros.adversarial.expert import ExpertSet

    eps = [{"state": np.cumsum(rng.normal(0, 0.05, (steps, 2)), 0).astype(np.float32),
            "action": rng.normal(0, 0.5, (steps, 2)).astype(np.float32)} for _ in range(n_episodes)]
    return ExpertSet(eps, ["joint_x", "joint_y"], "test expert")


@pytest.mark.parametrize("algo", ["gail", "amp"])
def test_discriminator_from_config_saves_and_resumes(tmp_path, algo):
    from genil_ros.config import config_from_dict

    cfg = config_from_dict({"task": {"joint_names": ["joint_x", "joint_y"]},
                            "adversarial": {"algo": algo, "disc_hidden": [8, 8], "disc_batch_size": 16,
                                            "replay_buffer_size": 64, "seed": 3}})
    rng = np.random.default_rng(0)
    expert = _expert_set(rng)
    tr = DiscriminatorTrainer.from_config(cfg, expert)
    assert tr.adversary.name == algo and tr.dim == 4 and tr.net.head.in_features == 8
    assert len(tr.expert) == (45 if algo == "gail" else 42)  # GAIL: every (s, a); AMP: 14 (s, s') per episode
    policy = tr.adversary.episodes_features(_expert_set(rng).episodes, "policy")
    tr.update(policy, 5)
    x = policy[:10]
    tr.save(tmp_path / "ck", "discriminator", "config: yes\n", bags_processed=2)

    meta = json.loads((tmp_path / "ck" / "meta.json").read_text())
    assert meta["algo"] == algo and meta["kind"] == "discriminator" and meta["feature_dim"] == 4
    assert meta["features"] == tr.adversary.feature_layout and meta["joint_names"] == ["joint_x", "joint_y"]
    assert meta["num_updates"] == 5 and meta["bags_processed"] == 2 and meta["disc_hidden"] == [8, 8]
    assert meta["expert_source"] == "test expert" and meta["seed"] == 3 and meta["format_version"] == 1
    assert (tmp_path / "ck" / "config.yaml").read_text() == "config: yes\n"

    again = DiscriminatorTrainer.from_config(cfg, expert, seed=99)  # other initial weights, same data
    assert not np.allclose(again.reward(x), tr.reward(x))
    meta2, _ = again.resume(tmp_path / "ck")
    assert meta2["bags_processed"] == 2 and again.num_updates == 5
    np.testing.assert_array_equal(again.reward(x), tr.reward(x))
    np.testing.assert_array_equal(again.replay.state_arrays()["data"], tr.replay.state_arrays()["data"])

    other = DiscriminatorTrainer.from_config(cfg, expert, algo="amp" if algo == "gail" else "gail")
    with pytest.raises(CheckpointError, match=f"checkpoint is '{algo}'"):
        other.resume(tmp_path / "ck")

    # the reward alone, as a policy would load it to score transitions (no expert data needed)
    learned = LearnedReward.load(tmp_path / "ck")
    assert learned.adversary.name == algo and learned.meta["num_updates"] == 5
    ep = _expert_set(rng, n_episodes=1).episodes[0]
    s, a, s2 = ep["state"][:-1], ep["action"][:-1], ep["state"][1:]
    np.testing.assert_array_equal(learned(s, a, s2), tr.reward(tr.adversary.features(s, a, s2)))
    meta["algo"] = "sac"
    (tmp_path / "ck" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"meta.json: algo: 'sac' is not one of gail, amp"):
        LearnedReward.load(tmp_path / "ck")


# --------------------------------------------------------------------------- learning


def _expert_transitions(n_episodes=12, seed=0):
    env = PointReachEnv(seed=seed, max_episode_steps=30)
    ex = PointReachExpert(env)
    spec = ObsSpec()
    S, A, S2 = [], [], []
    for k in range(n_episodes):
        obs, _ = env.reset(seed=seed + k)
        for _ in range(30):
            a = ex.act(obs)
            S.append(spec.disc_state(obs))
            A.append(a)
            obs, *_ = env.step(a)
            S2.append(spec.disc_state(obs))
    return np.array(S), np.array(A), np.array(S2)


@pytest.mark.parametrize("algo", ["gail", "amp"])
def test_discriminator_separates_expert_from_random(algo):
    S, A, S2 = _expert_transitions()
    rng = np.random.default_rng(3)
    # random policy: the same positions, uniformly random targets anywhere in the box
    Ar = rng.uniform(-1, 1, size=A.shape).astype(np.float32)
    S2r = S + np.clip(Ar - S, -0.1, 0.1)
    adversary = make_adversary(algo, num_joints=2)
    exp, pol = adversary.features(S, A, S2), adversary.features(S, Ar, S2r)
    tr = DiscriminatorTrainer(adversary, exp, hidden=(64, 64), lr=1e-3, batch_size=128, seed=0,
                              grad_penalty=0.0 if algo == "gail" else 10.0)
    before = tr.evaluate(pol)
    info = tr.update(pol, 150)
    after = tr.evaluate(pol)
    assert after["acc_expert"] > 0.9 and after["acc_policy"] > 0.9, (before, info, after)
    # the reward now prefers expert transitions
    assert tr.reward(exp).mean() > tr.reward(pol).mean() + (0.3 if algo == "amp" else 1.0)


def test_gae_hand_computed():
    r = np.array([[1.0], [1.0], [1.0]], np.float32)
    v = np.array([[0.5], [0.5], [0.5]], np.float32)
    term = np.array([[False], [True], [False]])
    end = term.copy()
    adv, ret = compute_gae(r, v, term, end, np.array([2.0], np.float32), gamma=0.9, lam=0.5)
    # t=2: delta = 1 + 0.9*2 - 0.5 = 2.3 -> A = 2.3
    # t=1: terminal: delta = 1 - 0.5 = 0.5, no carry -> A = 0.5
    # t=0: delta = 1 + 0.9*0.5 - 0.5 = 0.95; A = 0.95 + 0.9*0.5*0.5 = 1.175
    np.testing.assert_allclose(adv[:, 0], [1.175, 0.5, 2.3], rtol=1e-6)
    np.testing.assert_allclose(ret, adv + v)


def test_vec_env_autoreset_and_final_obs():
    venv = VecEnv([lambda: PointReachEnv(seed=0, max_episode_steps=100) for _ in range(2)], max_episode_steps=3)
    obs = venv.reset()
    amap = ActionMap(0.1, *PointReachEnv.JOINT_LIMITS)
    for _ in range(3):
        acts = np.stack([amap(o["joint_pos"], np.ones(2)) for o in obs])
        obs, r, term, trunc, succ, final = venv.step(acts)
    assert trunc.all() and not term.any()
    assert all(f is not None for f in final)
    assert all(np.allclose(o["joint_vel"], 0) for o in obs)  # fresh episodes
    assert not np.allclose(final[0]["joint_pos"], obs[0]["joint_pos"])


def test_action_map_clips_step_and_limits():
    amap = ActionMap(0.2, [-1, -1], [1, 1])
    np.testing.assert_allclose(amap(np.array([0.9, 0.0], np.float32), np.array([5.0, -0.5])), [1.0, -0.1], rtol=1e-6)


def _point_cfg(**over):
    from genil_ros.config import config_from_dict

    adv = {"env": "point", "num_envs": 8, "rollout_steps": 64, "max_episode_steps": 30, "policy_hidden": [32, 32],
           "disc_hidden": [32, 32], "expert_episodes": 10, "ppo_minibatch_size": 128, "task_reward_weight": 1.0,
           "style_reward_weight": 0.0, "action_scale": 0.1, "gamma": 0.95, "policy_lr": 1e-3, "eval_episodes": 10}
    adv.update(over)
    return config_from_dict({"task": {"joint_names": ["joint_x", "joint_y"]}, "adversarial": adv})


def test_ppo_learns_point_reach():
    from genil_ros.adversarial.train import AdversarialTrainer, scripted_expert_set

    cfg = _point_cfg()
    ex, _ = scripted_expert_set(cfg, 10, 1)
    tr = AdversarialTrainer(cfg, "amp", ex, seed=0)
    before = tr.evaluate(10)
    for _ in range(20):
        m = tr.iterate()
    after = tr.evaluate(10)
    assert before["success_rate"] <= 0.2
    assert after["success_rate"] >= 0.8, (before, after, m)
    assert after["task_return"] > before["task_return"] + 5.0
