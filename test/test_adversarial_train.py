"""`genil-ros train-adversarial` end to end on the point-mass task (seconds), resume and checkpoint errors,
and expert data from an EpisodeStore and from rosbags (through the dataset reader)."""

import json
import shutil
import textwrap

import numpy as np
import pytest

from genil_ros.cli import main as cli
from genil_ros.config import load_config
from genil_ros.errors import DataError

POINT_CFG = """
task:
  joint_names: [joint_x, joint_y]
  cameras: []
adversarial:
  env: point
  num_envs: 4
  rollout_steps: 32
  total_env_steps: 256
  max_episode_steps: 20
  disc_hidden: [16, 16]
  policy_hidden: [16, 16]
  disc_batch_size: 32
  ppo_minibatch_size: 64
  expert_episodes: 4
  eval_episodes: 2
  checkpoint_every_iters: 1
"""


def _cfg(tmp_path, text=POINT_CFG, name="point.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


@pytest.mark.parametrize("algo", ["gail", "amp"])
def test_cli_trains_checkpoints_and_resumes(tmp_path, algo, capsys):
    cfg = _cfg(tmp_path)
    out = tmp_path / "run"
    assert cli(["train-adversarial", "--algo", algo, "--config", str(cfg), "--out", str(out), "--threads", "1"]) == 0
    meta = json.loads((out / "checkpoint" / "meta.json").read_text())
    assert meta["algo"] == algo and meta["env_steps"] == 256 and meta["iteration"] == 2 and meta["format_version"] == 1
    for f in ("disc.safetensors", "policy.safetensors", "config.yaml"):
        assert (out / "checkpoint" / f).is_file()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in lines] == [1, 2]
    assert {"disc/loss", "disc/accuracy", "reward/style", "reward/task", "ppo/approx_kl"} <= set(lines[0])
    assert list((out / "tb").glob("events.out.tfevents.*"))
    ev = json.loads((out / "eval.json").read_text())
    assert 0.0 <= ev["success_rate"] <= 1.0 and ev["episodes"] == 2

    # same --out without --resume: refused, nothing overwritten
    assert cli(["train-adversarial", "--algo", algo, "--config", str(cfg), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err

    # resume: continues counting from the checkpoint and restores the weights it saved
    from safetensors.torch import load_file

    before = load_file(str(out / "checkpoint" / "disc.safetensors"))
    from genil_ros.adversarial.train import AdversarialTrainer, scripted_expert_set

    c = load_config(cfg)
    ex, _ = scripted_expert_set(c, 2, 0)
    tr = AdversarialTrainer(c, algo, ex)
    tr.load(out / "checkpoint")
    for k, v in before.items():
        if k.startswith("disc.") and not k.startswith("disc.norm"):
            np.testing.assert_array_equal(tr.disc.net.state_dict()[k[5:]].numpy(), v.numpy())
    assert cli(["train-adversarial", "--algo", algo, "--config", str(cfg), "--out", str(out), "--resume",
                "--steps", "384"]) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in lines] == [1, 2, 3]
    assert json.loads((out / "checkpoint" / "meta.json").read_text())["env_steps"] == 384


def test_cli_checkpoint_errors_are_one_line(tmp_path, capsys):
    cfg = _cfg(tmp_path)
    out = tmp_path / "run"
    assert cli(["train-adversarial", "--config", str(cfg), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "nothing to resume from" in err and str(out / "checkpoint") in err
    assert cli(["train-adversarial", "--config", str(cfg), "--out", str(out), "--steps", "128"]) == 0
    capsys.readouterr()
    (out / "checkpoint" / "disc.safetensors").write_bytes(b"\x00\x01 truncated")
    assert cli(["train-adversarial", "--config", str(cfg), "--out", str(out), "--resume", "--steps", "256"]) == 2
    err = capsys.readouterr().err.strip()
    assert "disc.safetensors" in err and len(err.splitlines()) == 1
    # the other algorithm's checkpoint
    assert cli(["train-adversarial", "--algo", "amp", "--config", str(cfg), "--out", str(tmp_path / "r2"),
                "--steps", "128"]) == 0
    capsys.readouterr()
    assert cli(["train-adversarial", "--algo", "gail", "--config", str(cfg), "--out", str(tmp_path / "r2"),
                "--resume"]) == 2
    assert "'amp'" in capsys.readouterr().err


def _store(path, joint_names, episodes):
    from genil_ros.data.store import EpisodeStore

    w = EpisodeStore.create(path, joint_names=joint_names, control_rate_hz=10.0)
    with w:
        for s, a in episodes:
            w.add_episode({"state": s, "action": a, "timestamp": np.arange(len(s)) * 0.1})
        w.finalize()


def test_expert_from_episode_store_and_cli(tmp_path, capsys):
    from genil_ros.adversarial.algorithms import make_adversary
    from genil_ros.adversarial.expert import load_expert

    rng = np.random.default_rng(0)
    eps = [(rng.normal(size=(12, 2)).astype(np.float32), rng.normal(size=(12, 2)).astype(np.float32)) for _ in range(3)]
    _store(tmp_path / "ds", ["joint_x", "joint_y"], eps)
    cfg = load_config(_cfg(tmp_path))
    ex = load_expert(tmp_path / "ds", cfg)
    assert len(ex.episodes) == 3
    np.testing.assert_array_equal(ex.episodes[1]["state"], eps[1][0])
    g = make_adversary("gail", 2).episodes_features(ex.episodes)
    np.testing.assert_allclose(g[:12], np.concatenate([eps[0][0], eps[0][1] - eps[0][0]], 1), rtol=1e-6)
    a = make_adversary("amp", 2).episodes_features(ex.episodes)
    assert a.shape == (3 * 11, 4)
    np.testing.assert_allclose(a[0], np.concatenate([eps[0][0][0], eps[0][0][1] - eps[0][0][0]]), rtol=1e-6)
    # the CLI with it
    assert cli(["train-adversarial", "--algo", "gail", "--config", str(tmp_path / "point.yaml"), "--expert",
                str(tmp_path / "ds"), "--out", str(tmp_path / "run"), "--steps", "128"]) == 0
    assert "3 episodes" in capsys.readouterr().out

    # a store of another robot: the error names the joint
    _store(tmp_path / "ds2", ["joint_x", "joint_z"], eps)
    with pytest.raises(DataError, match=r"joint_y"):
        load_expert(tmp_path / "ds2", cfg)
    with pytest.raises(DataError, match="expert data not found"):
        load_expert(tmp_path / "missing", cfg)
    with pytest.raises(DataError, match="neither a dataset"):
        (tmp_path / "empty").mkdir()
        load_expert(tmp_path / "empty", cfg)


def test_expert_from_rosbags_matches_what_was_recorded(tmp_path):
    from test_trainer_node import write_config, write_rollout_bag

    from genil_ros.adversarial.expert import load_expert

    rng = np.random.default_rng(1)
    S = np.cumsum(rng.normal(0, 0.02, size=(25, 4)), 0).astype(np.float32)
    A = (S + 0.05).astype(np.float32)
    bags = tmp_path / "bags"
    bags.mkdir()
    write_rollout_bag(bags / "ep0", S, A)
    write_rollout_bag(bags / "ep1", S[::-1].copy(), A[::-1].copy(), start_s=500.0)
    shutil.copytree(bags / "ep0", bags / "ep2.tmp-4242")  # an unfinished write: not a bag yet
    shutil.copytree(bags / "ep0", bags / "_old")  # underscore-prefixed: skipped like hidden entries
    cfg = load_config(write_config(tmp_path))
    ex = load_expert(bags, cfg)
    assert len(ex.episodes) == 2 and ex.source == str(bags)
    e0 = ex.episodes[0]
    n = len(e0["state"])
    assert n >= 20
    np.testing.assert_allclose(e0["state"], S[:n], atol=1e-6)  # the joint states at the control ticks
    np.testing.assert_allclose(e0["action"], A[:n], atol=1e-6)  # the command in force at each tick
    one = load_expert(bags / "ep1", cfg)  # one rosbag2 directory
    np.testing.assert_allclose(one.episodes[0]["state"], S[::-1][:len(one.episodes[0]["state"])], atol=1e-6)


def test_disc_goal_refuses_recorded_data(tmp_path, capsys):
    cfg = _cfg(tmp_path, POINT_CFG + "  disc_goal: true\n", "goal.yaml")
    (tmp_path / "ds").mkdir()
    assert cli(["train-adversarial", "--config", str(cfg), "--expert", str(tmp_path / "ds"),
                "--out", str(tmp_path / "run")]) == 2
    assert "disc_goal" in capsys.readouterr().err


def test_expert_and_discriminator_from_bags_of_a_gripper_task(tmp_path):
    """Bags of an arm + gripper task with a vector command: the expert's state / action are the task's
    entries, GAIL pairs no joints (the arm command is a vector) and scores [s, a]; the checkpoint records it."""
    from test_task_policy import pick_task

    from genil_ros.adversarial.discriminators import DiscriminatorTrainer, LearnedReward
    from genil_ros.adversarial.expert import load_expert
    from genil_ros.config import config_from_dict
    from genil_ros.data.build import build_dataset
    from genil_ros.data.synthetic import write_task_bag

    bags = tmp_path / "bags"
    for i in range(2):
        write_task_bag(bags / f"demo_{i}", start_s=1000.0 + 100 * i)
    cfg = config_from_dict({"task": pick_task(), "adversarial": {"algo": "gail", "disc_hidden": [8],
                                                                 "disc_batch_size": 16}})
    ex = load_expert(bags, cfg)
    store = build_dataset(cfg, [bags], tmp_path / "ds", progress=False)
    assert ex.layout.first_difference(store.layout) is None and ex.joint_names == ["j0", "j1", "j2"]
    np.testing.assert_array_equal(ex.episodes[1]["action"], store.episode(1)["action"])
    np.testing.assert_array_equal(load_expert(tmp_path / "ds", cfg).episodes[0]["state"], store.episode(0)["state"])
    tr = DiscriminatorTrainer.from_config(cfg, ex)
    assert tr.adversary.feature_layout == "[s, a]" and tr.dim == 7 + 3
    tr.update(tr.expert[:32] + 0.1, 2)
    tr.save(tmp_path / "disc", "discriminator")
    learned = LearnedReward.load(tmp_path / "disc")
    s, a = ex.episodes[0]["state"][:5], ex.episodes[0]["action"][:5]
    np.testing.assert_array_equal(learned(s, a), tr.reward(tr.adversary.features(s, a)))
    # a dataset that lacks an entry of the task is refused naming it
    other = pick_task()
    other["observations"].append({"name": "ft", "type": "wrench", "topic": "/ft"})
    with pytest.raises(DataError, match="the dataset has no observation 'ft'"):
        load_expert(tmp_path / "ds", config_from_dict({"task": other}))
