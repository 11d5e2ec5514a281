"""Demonstrations recorded the way a user records them: the scripted expert drives sim_node over ROS 2
topics (a separate process), the recorder writes one mcap bag per episode, and the dataset builder turns
them into a training set with config/sim_task.yaml."""

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("rclpy")

from genil_ros.config import load_config  # noqa: E402
from genil_ros.paths import config_path  # noqa: E402


def test_record_two_expert_demos_and_build_dataset(spawn, ros_env, tmp_path):
    _, env = ros_env
    spawn([sys.executable, "-m", "genil_ros.ros.sim_node", "--ros-args", "-p", "seed:=11",
           "-p", "real_time_factor:=2.0"], name="sim")
    out = tmp_path / "demos"
    rec = subprocess.run([sys.executable, "-m", "genil_ros.ros.record_demos", "--episodes", "2", "--out", str(out),
                          "--no-spawn-sim", "--seed", "3"], env=env, capture_output=True, text=True, timeout=240)
    assert rec.returncode == 0, rec.stdout[-3000:] + rec.stderr[-3000:]
    bags = sorted(out.glob("episode_*"))
    assert [b.name for b in bags] == ["episode_0000", "episode_0001"]
    assert all((b / "metadata.yaml").is_file() and list(b.glob("*.mcap")) for b in bags)
    summary = json.loads((out / "demos.json").read_text())
    kept = [e for e in summary["episodes"] if e["bag"]]
    assert len(kept) == 2 and all(e["success"] and e["mode"] in ("left", "right") for e in kept)

    from genil_ros.data.build import build_dataset

    cfg = load_config(config_path("sim_task.yaml"))
    store = build_dataset(cfg, [str(b) for b in bags], tmp_path / "ds", progress=False)
    assert store.num_episodes >= 2
    ep = store.episode(0)
    n = len(ep["state"])
    assert n >= 25 and ep["action"].shape == (n, 4) and ep["front"].shape == (n, 96, 96, 3)
    # the recorded actions are the expert's smooth joint targets, and the arm follows them
    assert np.max(np.abs(np.diff(ep["action"], axis=0))) < 0.25
    assert np.max(np.abs(ep["state"][-1] - ep["action"][-1])) < 0.05
    assert np.abs(ep["state"][-1] - ep["state"][0]).max() > 0.3
