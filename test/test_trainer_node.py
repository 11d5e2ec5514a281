"""trainer_node over real DDS: expert bags in, a rollout bag dropped into the watched folder is read with
the dataset reader and trains the discriminator (metrics and an atomic checkpoint follow); corrupt and
mismatched bags are reported and skipped while the node keeps running; live joint states get a reward;
a new policy checkpoint makes it call the policy node's reload service. Without DDS: its parameter table
against config/trainer_node.yaml and trainer.launch.py, and the folder watcher."""

import ast
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from genil_ros.sim.env import JOINT_NAMES

ROOT = Path(__file__).resolve().parent.parent

CMD_TOPIC = "/forward_position_controller/commands"


def write_config(tmp_path: Path) -> Path:
    p = tmp_path / "task.yaml"
    p.write_text(textwrap.dedent(f"""
        task:
          joint_names: {JOINT_NAMES}
          cameras: []
          control_rate_hz: 10.0
        dataset:
          action_source: command
          action_topic: {CMD_TOPIC}
          max_staleness_s: 0.25
        adversarial:
          algo: amp
          disc_hidden: [32, 32]
          disc_batch_size: 64
    """))
    return p


def write_rollout_bag(path: Path, states, actions, names=JOINT_NAMES, start_s=100.0):
    from genil_ros.adversarial.bagio import write_rollout_bag as write

    return write(path, states, actions, names, command_topic=CMD_TOPIC, start_s=start_s)


def sim_episode(seed: int, policy: str):
    from genil_ros.sim.env import ArmEnv
    from genil_ros.sim.expert import ScriptedExpert

    env = ArmEnv(variant="reach", render=False, seed=seed, terminate_on_success=False, max_episode_steps=30)
    ex = ScriptedExpert(env, seed=seed)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    S, A = [], []
    for _ in range(30):
        a = ex.act(obs) if policy == "expert" else obs["joint_pos"] + rng.uniform(-0.15, 0.15, 4).astype(np.float32)
        S.append(obs["joint_pos"])
        A.append(a)
        obs, *_ = env.step(a)
    return np.array(S), np.array(A)


class Probe:
    """The test's own node: metrics / reward subscriber, joint-state publisher, fake policy reload service."""

    def __init__(self, ctx):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64, String
        from std_srvs.srv import Trigger

        self.node = rclpy.create_node("trainer_probe", context=ctx)
        self.ex = SingleThreadedExecutor(context=ctx)
        self.ex.add_node(self.node)
        self.metrics = None
        self.rewards = []
        self.reload_calls = 0
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(String, "/trainer_node/metrics", self._on_metrics, latched)
        self.node.create_subscription(Float64, "/trainer_node/reward", lambda m: self.rewards.append(m.data), 10)
        self.js_pub = self.node.create_publisher(JointState, "/joint_states", 10)
        self.JointState = JointState

        def reload(req, res):
            self.reload_calls += 1
            res.success = True
            res.message = "reloaded"
            return res

        self.node.create_service(Trigger, "/policy_node/reload", reload)

    def _on_metrics(self, msg):
        self.metrics = json.loads(msg.data)

    def wait(self, cond, timeout, proc=None, what=""):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.ex.spin_once(timeout_sec=0.1)
            if cond():
                return True
            if proc is not None and not proc.alive():
                pytest.fail(f"trainer_node died while waiting for {what}:\n{proc.output()[-3000:]}")
        pytest.fail(f"timed out waiting for {what}; last metrics {self.metrics}\n"
                    f"{proc.output()[-3000:] if proc else ''}")

    def publish_joints(self, q):
        msg = self.JointState()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.name = list(reversed(JOINT_NAMES))  # reordered by name, never by index
        msg.position = [float(v) for v in reversed(q)]
        self.js_pub.publish(msg)

    def close(self):
        self.ex.shutdown()
        self.node.destroy_node()


def test_trainer_node_processes_rollout_bags(tmp_path, spawn, ros_context):
    pytest.importorskip("rclpy")
    cfg = write_config(tmp_path)
    expert_dir = tmp_path / "expert"
    expert_dir.mkdir()
    for k in range(2):
        write_rollout_bag(expert_dir / f"demo_{k}", *sim_episode(k, "expert"))
    staging = tmp_path / "staging"
    staging.mkdir()
    write_rollout_bag(staging / "rollout_000", *sim_episode(10, "random"))
    (staging / "broken.mcap").write_bytes(b"this is not an mcap file" * 10)
    names = list(JOINT_NAMES)
    names[2] = "forearm_joint"  # a robot with other joint names
    write_rollout_bag(staging / "other_robot", *sim_episode(11, "random"), names=names)

    watch = tmp_path / "rollouts"
    policy_ckpt = tmp_path / "policy_latest"
    proc = spawn([sys.executable, "-m", "genil_ros.ros.trainer_node", "--ros-args",
                  "-p", f"config:={cfg}", "-p", f"expert:={expert_dir}", "-p", f"rollout_dir:={watch}",
                  "-p", "poll_period_s:=0.3", "-p", "updates_per_bag:=30", "-p", f"policy_checkpoint:={policy_ckpt}",
                  "-p", "reload_service:=/policy_node/reload"],
                 extra_env={"OMP_NUM_THREADS": "1"}, name="trainer")
    probe = Probe(ros_context)
    try:
        probe.wait(lambda: probe.metrics is not None, 120, proc, "the first metrics")
        m0 = probe.metrics
        assert m0["algo"] == "amp" and m0["bags_processed"] == 0 and m0["expert_samples"] > 40

        # a rollout bag appears (atomically, as a finished recording would)
        shutil.copytree(staging / "rollout_000", watch / ".rollout_000.part")  # a rosbag2 directory
        (watch / ".rollout_000.part").rename(watch / "rollout_000")
        probe.wait(lambda: probe.metrics["bags_processed"] == 1, 60, proc, "the rollout bag to be processed")
        m1 = probe.metrics
        assert m1["num_updates"] == 30 and m1["replay_size"] > 20
        assert m1["last_bag"].endswith("rollout_000") and m1["last_error"] is None
        assert m1["disc"]["bag_reward_after"] < m1["disc"]["bag_reward_before"]  # D learnt to spot the rollout
        ck = watch / "_discriminator"
        meta = json.loads((ck / "meta.json").read_text())
        assert meta["algo"] == "amp" and meta["num_updates"] == 30 and meta["joint_names"] == list(JOINT_NAMES)
        assert (ck / "disc.safetensors").stat().st_size > 0
        assert not list(watch.glob("_discriminator.tmp-*"))

        # bad bags: reported with the file and reason, skipped, the node survives
        shutil.copy(staging / "broken.mcap", watch / "broken.mcap")
        shutil.copytree(staging / "other_robot", watch / "other_robot")
        probe.wait(lambda: probe.metrics["bags_failed"] == 2, 60, proc, "the bad bags to be rejected")
        assert probe.metrics["bags_processed"] == 1 and proc.alive()
        out = proc.output()
        assert "broken.mcap" in out
        assert "other_robot" in out and "elbow_joint" in out  # names the file and the missing joint
        assert "Traceback" not in out

        # live reward from joint states
        q = np.array([0.0, 1.0, -2.0, -0.5])

        def move():
            probe.publish_joints(q + 0.02 * np.sin(time.monotonic()) * np.ones(4))
            return len(probe.rewards) >= 5

        probe.wait(move, 30, proc, "live rewards")
        assert all(math.isfinite(r) and 0.0 <= r <= 1.0 for r in probe.rewards)

        # a new policy checkpoint -> ~/reload of the policy node
        tmp = tmp_path / "policy_latest.tmp"
        tmp.mkdir()
        (tmp / "meta.json").write_text('{"format_version": 1}')
        tmp.rename(policy_ckpt)
        probe.wait(lambda: probe.reload_calls == 1 and probe.metrics["policy_reloads"] == 1, 30, proc,
                   "the policy reload call")
    finally:
        probe.close()
    assert proc.stop() in (0, -2, 130)


def test_trainer_node_without_expert_exits_with_one_line(tmp_path, ros_env):
    pytest.importorskip("rclpy")
    _, env = ros_env
    out = subprocess.run([sys.executable, "-m", "genil_ros.ros.trainer_node", "--ros-args",
                          "-p", f"config:={write_config(tmp_path)}", "-p", f"expert:={tmp_path / 'nope'}",
                          "-p", f"rollout_dir:={tmp_path / 'r'}"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "nope" in out.stderr and "expert data not found" in out.stderr and "Traceback" not in out.stderr


# --------------------------------------------------------------------------- without DDS


def _trainer_parameters() -> dict:
    pytest.importorskip("rclpy")
    from genil_ros.ros.params import parameter_table
    from genil_ros.ros.trainer_node import TrainerSettings

    return {p.name: p for p in parameter_table(TrainerSettings)}


def test_params_file_sets_every_declared_parameter_to_its_default():
    table = _trainer_parameters()
    assert len(table) >= 14
    data = yaml.safe_load((ROOT / "config" / "trainer_node.yaml").read_text(encoding="utf-8"))
    body = data["/**"]["ros__parameters"]
    assert sorted(set(body) - set(table)) == [], "config/trainer_node.yaml sets parameters the node does not declare"
    assert sorted(set(table) - set(body)) == [], "config/trainer_node.yaml does not show every parameter"
    for name, value in body.items():
        assert value == table[name].default and type(value) is type(table[name].default), name


def test_settings_from_the_params_file_are_checked():
    pytest.importorskip("rclpy")
    from genil_ros.errors import GenilError
    from genil_ros.ros.params import settings_from_values
    from genil_ros.ros.trainer_node import TrainerSettings

    body = yaml.safe_load((ROOT / "config" / "trainer_node.yaml").read_text(encoding="utf-8"))["/**"]["ros__parameters"]
    s = settings_from_values(TrainerSettings, dict(body, expert="bags", rollout_dir="r", updates_per_bag=7))
    assert (s.expert, s.rollout_dir, s.updates_per_bag, s.algo) == ("bags", "r", 7, "")
    with pytest.raises(GenilError, match="parameter expert"):
        settings_from_values(TrainerSettings, body)
    with pytest.raises(GenilError, match="parameter algo: 'sac' is not one of gail, amp"):
        settings_from_values(TrainerSettings, dict(body, expert="bags", rollout_dir="r", algo="sac"))
    with pytest.raises(GenilError, match="parameter updates_per_bag"):
        settings_from_values(TrainerSettings, dict(body, expert="bags", rollout_dir="r", updates_per_bag=0))


def test_launch_file_overrides_declared_parameters():
    table = _trainer_parameters()
    tree = ast.parse((ROOT / "launch" / "trainer.launch.py").read_text(encoding="utf-8"))
    args = next(n.value for n in tree.body
                if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "ARGUMENTS")
    passed = {row.elts[0].value for row in args.elts} - {"params_file", "namespace", "log_level"}
    assert passed and passed <= set(table), sorted(passed - set(table))


def test_bag_watcher_reports_each_finished_bag_once(tmp_path):
    from genil_ros.adversarial.bagio import BagWatcher

    S, A = np.zeros((5, 4)), np.zeros((5, 4))
    watch = BagWatcher(tmp_path)
    assert watch.poll() == []
    write_rollout_bag(tmp_path / "rollout_000", S, A)
    (tmp_path / "old_robot.bag").write_bytes(b"ROS 1 bag")  # recognised by name; reading it is the reader's job
    (tmp_path / "rollout_001.mcap.tmp-4242.mcap").write_bytes(b"half written")  # an unfinished atomic write
    shutil.copytree(tmp_path / "rollout_000", tmp_path / "_discriminator")  # the node's own folder
    (tmp_path / "notes.txt").write_text("not a bag")
    assert watch.poll() == []  # new: wait one poll for the writer to finish
    assert watch.poll() == [tmp_path / "old_robot.bag", tmp_path / "rollout_000"]
    assert watch.poll() == []  # reported once
    f = tmp_path / "old_robot.bag"
    f.write_bytes(b"ROS 1 bag, rewritten")
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    assert watch.poll() == []
    assert watch.poll() == [f]
