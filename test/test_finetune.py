"""Fine-tuning the diffusion policy with the adversarial reward (genil_ros/finetune/), without ROS: the
sim adapter, batched chunk rollouts, the noise policy and its PPO step, the fine-tuned checkpoint and what
loads it, discriminator-guided chunk selection, and `genil-ros finetune` end to end (with --resume).
Policies here are small and untrained (a real DiffusionPolicy with fitted normalisers); what fine-tuning
reaches from a trained one is measured by scripts/finetune_experiment.py, not asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from genil_ros.errors import CheckpointError, GenilError

REPO = Path(__file__).resolve().parent.parent


def tiny_config(task="reach", **finetune):
    from genil_ros.finetune.demos import lowdim_config

    return lowdim_config(task, policy={"down_dims": [16, 32], "diffusion_step_embed_dim": 16,
                                       "num_inference_steps": 4},
                         finetune={"episodes_per_iter": 3, "iterations": 2, "episode_steps": 12, "hidden": [32],
                                   "expert_episodes": 3, "eval_episodes": 0, "minibatch_size": 8, **finetune},
                         adversarial={"disc_hidden": [32], "disc_batch_size": 32})


def tiny_checkpoint(path, task="reach", **finetune) -> Path:
    """An untrained low-dim policy for ``task`` whose normaliser is fitted to the scripted expert."""
    from genil_ros.finetune.rollouts import expert_batch
    from genil_ros.finetune.tasks import SimAdapter, make_task
    from genil_ros.policy import DiffusionPolicy, save_checkpoint

    cfg = tiny_config(task, **finetune)
    ad = SimAdapter(make_task(task), cfg.task)
    b = expert_batch(ad, ad.make_envs(1, 0), [0, 1], cfg.finetune.episode_steps)
    torch.manual_seed(0)
    policy = DiffusionPolicy(cfg)
    s, a = b.states.reshape(-1, ad.state_dim), b.actions.reshape(-1, ad.action_dim)
    policy.normalizer.fit("state", s.min(0) - 0.1, s.max(0) + 0.1)
    policy.normalizer.fit("action", a.min(0) - 0.1, a.max(0) + 0.1)
    return save_checkpoint(Path(path), policy)


# --------------------------------------------------------------------------- the sim as the policy sees it


def test_adapter_maps_sim_observations_onto_the_policy_layout():
    from genil_ros.finetune.tasks import SimAdapter, make_task

    cfg = tiny_config("reach")
    ad = SimAdapter(make_task("reach"), cfg.task)
    env = ad.make_envs(1, 3)[0]
    obs, _ = env.reset(seed=3)
    assert np.allclose(ad.state(obs), np.concatenate([obs["joint_pos"], obs["goal"]]))
    assert ad.num_commanded == 4 and ad.camera is None
    pp = tiny_config("pick_place")
    ad2 = SimAdapter(make_task("pick_place"), pp.task)
    env2 = ad2.make_envs(1, 0)[0]
    o2, _ = env2.reset(seed=0)
    assert np.allclose(ad2.state(o2), np.concatenate([o2["joint_pos"], o2["gripper_pos"], o2["object_pos"]]))
    assert ad2.num_commanded == 5
    a = np.arange(5, dtype=np.float32)
    assert np.allclose(ad2.policy_action(ad2.env_action(a)), a)
    # the legacy joint_names form (what trainer-node discriminators see): joints only
    from genil_ros.config import config_from_dict
    from genil_ros.sim.env import JOINT_NAMES

    legacy = config_from_dict({"task": {"joint_names": JOINT_NAMES}})
    assert SimAdapter(make_task("obstacle"), legacy.task).state_dim == 4
    # what the sim cannot provide is named
    bad = tiny_config("pick_place")
    with pytest.raises(GenilError, match=r"observation 'gripper'.*\['gripper_finger_joint'\] are not in the reach sim"):
        SimAdapter(make_task("reach"), bad.task)
    with pytest.raises(GenilError, match=r"for each of .*\]; \['gripper_finger_joint'\] not commanded"):
        SimAdapter(make_task("pick_place"), legacy.task)
    with pytest.raises(GenilError, match="finetune.task: 'push' is not a bundled task"):
        make_task("push")


def test_batched_chunk_rollouts_execute_the_right_entries():
    from genil_ros.finetune.rollouts import decision_ranges, run_batch
    from genil_ros.finetune.tasks import SimAdapter, make_task

    cfg = tiny_config("reach")
    ad = SimAdapter(make_task("reach"), cfg.task)
    envs = ad.make_envs(2, 0)
    seen = []

    def decide(win, imgs):  # chunk entry j = the current joints + 0.01 * j: entry T_o - 1 + k is executed
        seen.append(win.copy())
        q = win[:, -1, :4]
        chunk = q[:, None, :] + 0.01 * np.arange(16)[None, :, None]
        return chunk, {"marker": np.full(len(win), len(seen), np.float32)}

    b = run_batch(ad, envs, decide, [5, 6], 10, 2, 4)
    assert b.ranges == decision_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert b.states.shape == (2, 11, 7) and b.actions.shape == (2, 10, 4) and b.decisions["marker"].shape == (2, 3)
    q0 = seen[0][:, -1, :4]
    assert np.allclose(b.actions[:, 0], q0 + 0.01) and np.allclose(b.actions[:, 3], q0 + 0.04)
    assert np.allclose(seen[0][:, 0], seen[0][:, 1])  # the first window is padded with the first observation
    assert np.allclose(seen[1][:, -1], b.states[:, 4]) and np.allclose(seen[1][:, 0], b.states[:, 3])
    r, disc = b.per_decision(np.ones((2, 10), np.float32), 0.5)
    assert np.allclose(r[:, 0], 1 + 0.5 + 0.25 + 0.125) and np.allclose(disc, [0.5 ** 4, 0.5 ** 4, 0.25])
    # the same seeds give the same episodes
    b2 = run_batch(ad, envs, decide, [5, 6], 10, 2, 4)
    assert np.array_equal(b.states, b2.states)


def test_discriminator_saturation_is_the_share_of_the_full_margin():
    from genil_ros.adversarial.algorithms import AMP, GAIL

    assert AMP.saturation([1.0, 1.0], [-1.0, -1.0]) == 1.0 and AMP.saturation([0.1], [-0.1]) == pytest.approx(0.1)
    assert AMP.saturation([-1.0], [1.0]) == 0.0
    assert GAIL.saturation([20.0], [-20.0]) == pytest.approx(1.0) and GAIL.saturation([0.0], [0.0]) == 0.0
    assert 0.1 < GAIL.saturation([1.0], [-1.0]) < 0.5  # sigmoid(1) - sigmoid(-1) = 0.46


def test_gae_over_decisions():
    from genil_ros.finetune.noise_rl import gae

    r = np.array([[1.0, 2.0]], np.float32)
    v = np.array([[0.5, 1.0]], np.float32)
    adv, ret = gae(r, v, np.array([3.0], np.float32), np.array([0.9, 0.8], np.float32), 0.5)
    d1 = 2.0 + 0.8 * 3.0 - 1.0
    d0 = 1.0 + 0.9 * 1.0 - 0.5
    assert np.allclose(adv[0], [d0 + 0.9 * 0.5 * d1, d1]) and np.allclose(ret, adv + v)


# --------------------------------------------------------------------------- noise policy and steering


def test_noise_policy_starts_as_the_prior_and_ppo_moves_it_toward_advantage():
    from genil_ros.finetune.noise_policy import NoisePolicy
    from genil_ros.finetune.noise_rl import NoiseRL

    torch.manual_seed(0)
    net = NoisePolicy(5, (4, 2), [16])
    obs = torch.randn(64, 5)
    assert torch.allclose(net.kl_to_prior(obs), torch.zeros(64), atol=1e-7)
    noise, logp = net.act(obs)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(noise.reshape(64, -1)).sum(-1)
    assert noise.shape == (64, 4, 2) and torch.allclose(logp, ref, atol=1e-5)
    assert NoisePolicy.from_description(net.describe()).noise_dim == 8
    # one PPO update on decisions whose advantage is the sign of the first noise value: the mean moves up
    cfg = tiny_config("reach", ppo_epochs=4, lr=1e-2, minibatch_size=32)
    rl = NoiseRL.__new__(NoiseRL)
    rl.f, rl.noise, rl.rng = cfg.finetune, net, np.random.default_rng(0)
    rl.opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    rl.steered = SimpleNamespace(device=torch.device("cpu"))
    n = noise.reshape(64, -1).numpy()
    adv = np.sign(n[:, 0])[None]
    dec = {"features": obs.numpy()[None], "noise": n[None], "log_prob": logp.numpy()[None]}
    out = rl._update_policy(dec, adv, np.zeros_like(adv), train_policy=True)
    with torch.no_grad():
        mean = net.mean(obs)
    assert mean[:, 0].mean() > 0.05 and abs(float(mean[:, 1].mean())) < 0.05
    assert out["ppo/policy_updated"] == 1.0 and out["ppo/kl_prior"] >= 0


def test_sampling_from_given_noise_is_deterministic(tmp_path):
    from genil_ros.finetune.steering import SteeredPolicy
    from genil_ros.policy.checkpoint import load_policy

    policy = load_policy(tiny_checkpoint(tmp_path / "ck"), device="cpu")
    obs = {"state": torch.zeros(2, 2, 7)}
    noise = torch.randn(2, 3, 16, 4, generator=torch.Generator().manual_seed(1))
    a = policy.sample_actions(obs, 3, noise=noise)
    assert torch.equal(a, policy.sample_actions(obs, 3, noise=noise)) and a.shape == (2, 3, 16, 4)
    assert not torch.allclose(a[:, 0], a[:, 1])
    g = torch.Generator().manual_seed(5)
    drawn = torch.randn(2, 3, 16, 4, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(policy.sample_actions(obs, 3, generator=g), policy.sample_actions(obs, 3, noise=drawn))
    with pytest.raises(ValueError, match="noise must be"):
        policy.sample_actions(obs, 2, noise=noise)
    out = SteeredPolicy(policy).sample(obs, 4)  # no noise policy: N(0, I), the BC policy
    assert out["chunks"].shape == (2, 4, 16, 4) and out["log_prob"] is None


def test_checkpoint_from_before_a_key_rename_still_loads(tmp_path):
    """A BC checkpoint written while finetune.disc_max_accuracy existed loads (with a warning) in everything
    that reads checkpoints: load_policy, genil-ros finetune's config, the node's chunk model."""
    from genil_ros.finetune.cli import finetune_config
    from genil_ros.policy.checkpoint import load_policy
    from genil_ros.policy.chunk_model import load_chunk_model

    ck = tiny_checkpoint(tmp_path / "ck")
    f = ck / "config.yaml"
    text = f.read_text()
    assert "  disc_max_saturation: 0.8\n" in text
    f.write_text(text.replace("  disc_max_saturation: 0.8\n", "  disc_max_accuracy: 0.9\n"))
    with pytest.warns(UserWarning, match="config.yaml: finetune.disc_max_accuracy .* older genil_ros"):
        assert load_policy(ck, device="cpu").cfg.finetune.disc_max_saturation == 0.8
    with pytest.warns(UserWarning, match="disc_max_accuracy"):
        assert finetune_config(ck, overrides={"finetune": {"iterations": 5}}).finetune.iterations == 5
    with pytest.warns(UserWarning, match="disc_max_accuracy"):
        assert load_chunk_model(str(ck), "cpu", seed=0)({"state": np.zeros((2, 7), np.float32)}).shape == (16, 4)


def test_finetuned_checkpoint_loads_in_the_node_model_and_is_checked(tmp_path):
    from genil_ros.finetune.noise_policy import NoisePolicy
    from genil_ros.finetune.steering import SteeredChunkModel, is_finetuned, load_steered, save_finetuned
    from genil_ros.policy.checkpoint import load_policy
    from genil_ros.policy.chunk_model import load_chunk_model

    ck = tiny_checkpoint(tmp_path / "ck")
    policy = load_policy(ck, device="cpu")
    net = NoisePolicy(policy.obs_encoder.output_dim, (16, 4), [8])
    with torch.no_grad():
        net.mean[-1].bias.fill_(0.7)
    out = save_finetuned(tmp_path / "ft", ck, net, {"algo": "noise_ppo", "iterations": 3})
    assert is_finetuned(out) and not is_finetuned(ck) and not is_finetuned(tmp_path / "missing")
    st = load_steered(out, device="cpu")
    assert torch.allclose(st.noise_policy.mean[-1].bias, torch.full((64,), 0.7))
    m = load_chunk_model(str(out), "cpu", seed=3)
    assert isinstance(m, SteeredChunkModel) and "noise policy" in m.description
    obs = {"state": np.zeros((2, 7), np.float32)}
    assert m(obs).shape == (16, 4) and m.sample_chunks(obs, 5).shape == (5, 16, 4)
    # a noise policy belongs to its base weights
    from safetensors.torch import load_file, save_file

    sd = load_file(str(out / "ema.safetensors"))
    k = next(iter(sd))
    sd[k] = sd[k] + 0.01
    save_file(sd, str(out / "ema.safetensors"))
    with pytest.raises(CheckpointError, match="trained for other weights"):
        load_steered(out, device="cpu")


# --------------------------------------------------------------------------- guided selection


def _amp_scorer(tmp_path, state_dim=7, nj=4, updates=300):
    """An AMP discriminator that learned 'joints move by +0.02 per tick' (expert) vs 'stand still'."""
    from genil_ros.adversarial.algorithms import make_adversary
    from genil_ros.adversarial.discriminators import DiscriminatorTrainer
    from genil_ros.finetune.guided import ChunkScorer

    rng = np.random.default_rng(0)
    adv = make_adversary("amp", nj)
    s = rng.uniform(-1, 1, (2000, state_dim)).astype(np.float32)
    s2 = s.copy()
    s2[:, :nj] += 0.02
    still = rng.uniform(-1, 1, (2000, state_dim)).astype(np.float32)
    d = DiscriminatorTrainer(adv, adv.features(s, None, s2), hidden=[32], seed=0,
                             record={"num_joints": nj, "joint_names": [], "use_velocity": False})
    d.update(adv.features(still, None, still), updates)
    d.save(tmp_path / "disc", "discriminator")
    spec = SimpleNamespace(n_obs_steps=2, n_action_steps=4, state_dim=state_dim, control_rate_hz=10.0)
    return ChunkScorer.load(tmp_path / "disc", spec), spec


def test_scorer_predicts_transitions_and_prefers_the_expert_like_chunk(tmp_path):
    scorer, _ = _amp_scorer(tmp_path)
    state = np.array([[0.1, 0.2, 0.3, 0.4, 9.0, 8.0, 7.0]], np.float32)
    moving = state[0, :4] + 0.02 * np.arange(16)[:, None]  # entry j: +0.02 j; the executed ones move +0.02/tick
    still = np.repeat(state[:, :4], 16, 0)
    chunks = np.stack([still, moving, still])[None]  # (1, 3, 16, 4)
    s, a, s2 = scorer.transitions(state, chunks)
    assert s.shape == (12, 7) and np.allclose(s[4], state[0]) and np.allclose(s2[4, :4], moving[1])
    assert np.allclose(s2[4, 4:], state[0, 4:]) and np.allclose(s[5, :4], moving[1])  # the target is held
    best, scores = scorer.select(state, chunks)
    assert best[0] == 1 and scores[0, 1] > scores[0, 0] + 0.1


def test_guided_model_and_node_hook(tmp_path):
    from genil_ros.finetune.guided import ChunkScorer, GuidedChunkModel, guide_model
    from genil_ros.policy.chunk_model import ModelSpec
    from genil_ros.schema import legacy_entries

    scorer, _ = _amp_scorer(tmp_path, state_dim=4)
    obs, act = legacy_entries(["a", "b", "c", "d"], "/joint_states", False, [], "command", None)

    class Candidates:  # a ChunkModel that offers two candidates: still, or moving like the expert
        spec = ModelSpec(obs, act, 10.0, 2, 16, 4, "/joint_states", legacy=True)
        device, description = "cpu", "two candidates"

        def sample_chunks(self, obs, k):
            q = obs["state"][-1]
            still = np.repeat(q[None], 16, 0)
            return np.stack([still, q + 0.02 * np.arange(16)[:, None]] * (k // 2))

    base = Candidates()
    assert guide_model(base, "", 8) is base  # off by default
    m = guide_model(base, str(tmp_path / "disc"), 4)
    assert isinstance(m, GuidedChunkModel) and "best of 4 by the amp discriminator" in m.description
    chunk = m({"state": np.zeros((2, 4), np.float32)})
    assert np.allclose(chunk[1], 0.02) and m.last_scores.shape == (4,)
    with pytest.raises(GenilError, match="guide_samples: 1 must be >= 2"):
        guide_model(base, str(tmp_path / "disc"), 1)
    with pytest.raises(CheckpointError, match=r"takes 8 features, this policy.s state \(8 values\) gives 16"):
        ChunkScorer.load(tmp_path / "disc", SimpleNamespace(n_obs_steps=2, n_action_steps=4, state_dim=8))
    with pytest.raises(CheckpointError, match="nope: no such checkpoint directory"):
        guide_model(base, str(tmp_path / "nope"), 4)


# --------------------------------------------------------------------------- genil-ros finetune


def _cli(*args):
    import subprocess

    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "genil_ros.cli", "finetune", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_finetune_command_writes_a_loadable_policy_and_resumes(tmp_path):
    ck = tiny_checkpoint(tmp_path / "bc")
    out = tmp_path / "ft"
    r = _cli("--checkpoint", str(ck), "--task", "reach", "--out", str(out), "--iterations", "2",
             "--eval-episodes", "2", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "checkpoint:" in r.stdout and "eval over 2 episodes" in r.stdout
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in lines] == [1, 2] and "disc/saturation" in lines[0]
    assert lines[0]["ppo/policy_updated"] == 0.0  # critic warm-up: the noise policy waits
    ev = json.loads((out / "eval.json").read_text())
    assert ev["episodes"] == 2 and "motion_w1" in ev
    info = json.loads((out / "policy" / "finetune.json").read_text())
    assert info["iterations"] == 2 and info["style"] == "amp" and info["task"] == "reach"
    meta = json.loads((out / "discriminator" / "meta.json").read_text())
    assert meta["algo"] == "amp" and meta["num_joints"] == 4
    assert any((out / "tb").iterdir())
    # a second run into the same folder needs --resume; --resume continues where it stopped
    r = _cli("--checkpoint", str(ck), "--task", "reach", "--out", str(out), "--iterations", "3")
    assert r.returncode == 2 and "pass --resume" in r.stderr
    r = _cli("--checkpoint", str(ck), "--task", "reach", "--out", str(out), "--iterations", "3", "--resume",
             "--eval-episodes", "0", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stdout and "at iteration 2" in r.stdout
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in lines] == [1, 2, 3]
    assert json.loads((out / "policy" / "finetune.json").read_text())["iterations"] == 3
    # GAIL alone on another task's policy: a clear error naming what does not fit
    r = _cli("--checkpoint", str(ck), "--task", "pick_place", "--out", str(tmp_path / "x"), "--algo", "gail")
    assert r.returncode == 2 and "pick_place sim" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- the evidence script


def test_experiment_script_end_to_end_at_toy_size_and_refuses_stale_stages(tmp_path, capsys):
    """scripts/finetune_experiment.py at toy size: every stage, rows per training seed, the settings stamp."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("finetune_experiment", REPO / "scripts" / "finetune_experiment.py")
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    out = tmp_path / "exp"
    toy = ["--out", str(out), "--tasks", "reach", "--variants", "gail", "--seeds", "3", "--demos", "2",
           "--bc-steps", "2", "--down-dims", "8", "16", "--episodes-per-iter", "2", "--scorer-rounds", "1",
           "--scorer-updates", "1", "--episodes", "2", "--samples", "2", "--expert-episodes", "2"]
    assert exp.main([*toy, "--iterations", "1"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert {(r["seed"], r["variant"], r["stage"]) for r in res["rows"]} == {
        (3, "all", "bc"), (3, "gail", "bc_guided"), (3, "gail", "ft"), (3, "gail", "ft_guided")}
    assert all(r["eval_seed"] == 1000 and r["episodes"] == 2 for r in res["rows"])
    assert res["budget_total"]["cpu_min"] > 0 and "| reach | GAIL alone | 3 |" in exp.table(res)
    budget = (out / "reach" / "s3" / "budget.json").read_text()
    # the saved stages belong to the settings that made them: another is an error, the same only collects
    with pytest.raises(GenilError, match=r"s3: its saved stages were made with --iterations 1, not 2"):
        exp.main([*toy, "--iterations", "2"])
    capsys.readouterr()
    assert exp.main([*toy, "--iterations", "1", "--collect"]) == 0
    assert "| reach | GAIL alone |" in capsys.readouterr().out
    assert (out / "reach" / "s3" / "budget.json").read_text() == budget  # nothing ran again
    # longer fine-tuning from the same BC policy in another --out: the stages before fine-tuning are reused
    longer = tmp_path / "longer"
    assert exp.main([*toy, "--out", str(longer), "--iterations", "2", "--reuse-bc", str(out)]) == 0
    b = json.loads((longer / "reach" / "s3" / "budget.json").read_text())
    assert b["bc"] == {"cpu_s": 0.0, "wall_s": 0.0, "reused_from": str(out / "reach" / "s3")}
    assert b["ft_gail"]["cpu_s"] > 0 and "reused_from" not in b["eval_gail_ft"]
    assert len((longer / "reach" / "s3" / "ft_gail" / "metrics.jsonl").read_text().splitlines()) == 2
    assert (longer / "reach" / "s3" / "eval_bc.json").read_text() == (out / "reach" / "s3" / "eval_bc.json").read_text()
    with pytest.raises(GenilError, match=r"s3: made with --samples 2, not 3"):
        exp.main([*toy, "--out", str(tmp_path / "other"), "--samples", "3", "--reuse-bc", str(out)])
