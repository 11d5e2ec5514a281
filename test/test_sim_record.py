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


def _bag_messages(bag):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    out = {}
    with Reader(bag) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, ts.deserialize_cdr(raw, conn.msgtype)))
    return out


def test_record_pick_place_demos(spawn, ros_env, tmp_path):
    """pick_place over ROS: the expert reads the perceived object position, commands the arm and the gripper
    on their own topics; the bags hold joint states with the gripper joint, the object vector and both
    command streams."""
    _, env = ros_env
    proc = spawn([sys.executable, "-m", "genil_ros.ros.sim_node", "--ros-args", "-p", "seed:=21",
                  "-p", "variant:=pick_place", "-p", "real_time_factor:=2.0"], name="sim")
    out = tmp_path / "demos"
    rec = subprocess.run([sys.executable, "-m", "genil_ros.ros.record_demos", "--variant", "pick_place",
                          "--episodes", "2", "--out", str(out), "--no-spawn-sim", "--seed", "4"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert rec.returncode == 0, rec.stdout[-3000:] + rec.stderr[-3000:] + proc.output()[-2000:]
    summary = json.loads((out / "demos.json").read_text())
    kept = [e for e in summary["episodes"] if e["bag"]]
    assert len(kept) == 2 and all(e["success"] and not e["dropped"] for e in kept)
    assert summary["topics"] == ["/joint_states", "/object/position", "/forward_position_controller/commands",
                                 "/gripper_controller/commands"]
    msgs = _bag_messages(out / kept[0]["bag"])
    assert set(msgs) == set(summary["topics"])
    assert list(msgs["/joint_states"][-1][1].name)[-1] == "gripper_finger_joint"
    arm = np.array([list(m.data) for _, m in msgs["/forward_position_controller/commands"]])
    grip = np.array([list(m.data) for _, m in msgs["/gripper_controller/commands"]])
    assert arm.shape[1] == 4 and grip.shape == (len(arm), 1) and len(arm) >= 40
    # the gripper is commanded open, closed on the object, and open again over the bin (metres, not 0/1)
    assert grip[0, 0] > 0.035 and grip.min() < 0.005 and grip[-1, 0] > 0.035
    assert np.any((grip > 0.005) & (grip < 0.035))  # ramped, not switched
    obj = np.array([list(m.data) for _, m in msgs["/object/position"]])
    assert obj.shape[1] == 3 and np.allclose(obj[0, :2], kept[0]["object_xy"], atol=0.01)
    assert abs(abs(obj[-1, 1]) - 0.20) < 0.06  # ends in a bin (y = +-0.20)

    # the typed task turns them into a dataset: state = arm (4) + gripper (1) + object (3), action = arm + gripper
    from genil_ros.data.build import build_dataset

    cfg = load_config(config_path("pick_place_task.yaml"))
    store = build_dataset(cfg, [str(out / e["bag"]) for e in kept], tmp_path / "ds", progress=False)
    assert store.num_episodes == 2
    ep = store.episode(0)
    n = len(ep["state"])
    assert n >= 40 and ep["state"].shape == (n, 8) and ep["action"].shape == (n, 5)
    assert np.allclose(ep["obs.object"][0, :2], kept[0]["object_xy"], atol=0.01)
    g = ep["act.gripper"][:, 0]
    assert g[0] > 0.035 and g.min() < 0.005 and g[-1] > 0.035  # open, closed on the object, open over the bin
    assert np.max(np.abs(ep["state"][-1, :4] - ep["action"][-1, :4])) < 0.05  # the arm follows its commands


def test_record_demos_refuses_a_sim_of_another_variant(spawn, ros_env, tmp_path):
    _, env = ros_env
    spawn([sys.executable, "-m", "genil_ros.ros.sim_node", "--ros-args", "-p", "real_time_factor:=2.0"], name="sim")
    rec = subprocess.run([sys.executable, "-m", "genil_ros.ros.record_demos", "--variant", "pick_place",
                          "--episodes", "1", "--out", str(tmp_path / "d"), "--no-spawn-sim"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert rec.returncode == 2, rec.stderr[-2000:]
    assert "'obstacle' task" in rec.stderr and "variant:=pick_place" in rec.stderr and "Traceback" not in rec.stderr
