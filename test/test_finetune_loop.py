"""The closed loop over real DDS: `ros2 launch genil_ros loop.launch.py` starts the sim, the policy node, the
rollout recorder, the trainer node and the fine-tuner; the test waits until a rollout bag has trained the
discriminator, the fine-tuner has written a checkpoint from its reward and the policy node has hot-reloaded
it, while the arm keeps being commanded. And the policy node with discriminator-guided selection, driving a
fake robot. Policies are small and untrained: this checks the wiring, not what the loop learns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("launch_ros")

REPO = Path(__file__).resolve().parent.parent
NODES = Path(__file__).parent / "nodes"
sys.path.insert(0, str(NODES))
from fake_robot_policy import make_checkpoint  # noqa: E402

CMD_TOPIC = "/forward_position_controller/commands"


def ament_prefix(root: Path) -> Path:
    """A minimal ament prefix for this checkout: the package marker, share/genil_ros (links to launch/,
    config/, models/, package.xml) and lib/genil_ros/<console script> launchers (what colcon installs)."""
    import ast

    prefix = root / "ament"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "genil_ros").write_text("")
    share = prefix / "share" / "genil_ros"
    share.mkdir(parents=True)
    os.symlink(REPO / "package.xml", share / "package.xml")
    for name in ("launch", "config"):  # real folders of file links: `ros2 launch` walks them (os.walk)
        for f in (REPO / name).rglob("*"):
            if f.is_file():
                (share / f.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
                os.symlink(f, share / f.relative_to(REPO))
    lib = prefix / "lib" / "genil_ros"
    lib.mkdir(parents=True)
    tree = ast.parse((REPO / "setup.py").read_text())
    scripts = [ast.literal_eval(e) for n in ast.walk(tree) if isinstance(n, ast.Dict)
               for k, v in zip(n.keys, n.values) if isinstance(k, ast.Constant) and k.value == "console_scripts"
               for e in v.elts]
    for spec in scripts:
        name, target = (x.strip() for x in spec.split("="))
        module, func = target.split(":")
        exe = lib / name
        exe.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import sys; from {module} import {func}; "
                       f"sys.exit({func}())' \"$@\"\n")
        exe.chmod(0o755)
    return prefix


def loop_checkpoint(path: Path) -> Path:
    """A small untrained joints-only policy of the sim arm (the node and the fine-tuner both run it)."""
    import torch

    from genil_ros.config import config_from_dict
    from genil_ros.policy import DiffusionPolicy, save_checkpoint
    from genil_ros.sim.env import JOINT_LIMITS, JOINT_NAMES

    cfg = config_from_dict({
        "task": {"joint_names": JOINT_NAMES, "control_rate_hz": 10.0,
                 "horizon": {"n_obs_steps": 2, "horizon": 8, "n_action_steps": 4}},
        "dataset": {"action_source": "command", "action_topic": CMD_TOPIC, "max_staleness_s": 0.25},
        "policy": {"down_dims": [16, 32], "diffusion_step_embed_dim": 16, "num_inference_steps": 4},
        "adversarial": {"algo": "amp", "disc_hidden": [32, 32], "disc_batch_size": 64},
        "finetune": {"task": "reach", "hidden": [32], "minibatch_size": 8, "critic_warmup_iters": 0},
    }, source="loop test")
    torch.manual_seed(0)
    policy = DiffusionPolicy(cfg)
    lo, hi = (np.asarray(v, np.float32) for v in JOINT_LIMITS)
    mid, half = 0.5 * (lo + hi), 0.25 * (hi - lo)  # a quarter of the range around the middle: gentle motions
    for key in ("state", "action"):
        policy.normalizer.fit(key, mid - half, mid + half)
    return save_checkpoint(path, policy)


def expert_bags(folder: Path, episodes: int = 3) -> Path:
    from genil_ros.adversarial.bagio import write_rollout_bag
    from genil_ros.sim.env import JOINT_NAMES, ArmEnv
    from genil_ros.sim.expert import ScriptedExpert

    env = ArmEnv(variant="reach", render=False, terminate_on_success=False)
    for k in range(episodes):
        ex = ScriptedExpert(env, seed=k)
        obs, _ = env.reset(seed=k)
        S, A = [], []
        for _ in range(30):
            a = ex.act(obs)
            S.append(obs["joint_pos"])
            A.append(a)
            obs, *_ = env.step(a)
        write_rollout_bag(folder / f"expert_{k}", np.array(S), np.array(A), JOINT_NAMES, command_topic=CMD_TOPIC)
    return folder


class Watcher:
    """Latest messages of the topics the test looks at, and the policy node's parameters."""

    def __init__(self, ctx):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import Float64MultiArray, String

        self.node = rclpy.create_node("loop_tester", context=ctx)
        self.ex = SingleThreadedExecutor(context=ctx)
        self.ex.add_node(self.node)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.metrics: dict = {}
        self.models: list[str] = []
        self.commands: list[float] = []
        self.node.create_subscription(String, "/finetune_node/metrics", self._metrics("finetune"), latched)
        self.node.create_subscription(String, "/trainer_node/metrics", self._metrics("trainer"), latched)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diag, 10)
        self.node.create_subscription(Float64MultiArray, CMD_TOPIC, lambda m: self.commands.append(time.monotonic()),
                                      10)

    def _metrics(self, key):
        return lambda msg: self.metrics.__setitem__(key, json.loads(msg.data))

    def _diag(self, msg):
        for st in msg.status:
            vals = {kv.key: kv.value for kv in st.values}
            if "model" in vals:
                self.models.append(vals["model"])

    def wait(self, pred, timeout, what, procs=(), log=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ex.spin_once(timeout_sec=0.1)
            for p in procs:
                assert p.poll() is None, f"{what}: the launch ended early"
            if log is not None:
                assert "process has died" not in log.read_text(errors="replace"), f"{what}: a node died"
            v = pred()
            if v:
                return v
        raise AssertionError(f"timed out waiting for {what}; metrics {self.metrics}")

    def get_param(self, node: str, name: str):
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        cli = self.node.create_client(GetParameters, f"{node}/get_parameters")
        assert cli.wait_for_service(timeout_sec=30.0)
        fut = cli.call_async(GetParameters.Request(names=[name]))
        self.ex.spin_until_future_complete(fut, timeout_sec=30.0)
        return parameter_value_to_python(fut.result().values[0])

    def close(self):
        self.ex.shutdown(timeout_sec=1.0)
        self.node.destroy_node()


def test_loop_launch_runs_end_to_end(ros_env, ros_context, tmp_path):
    _, env = ros_env
    ck = loop_checkpoint(tmp_path / "bc")
    expert = expert_bags(tmp_path / "expert")
    work = tmp_path / "loop"
    prefix = ament_prefix(tmp_path)
    env = dict(env, AMENT_PREFIX_PATH=str(prefix), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MUJOCO_GL="egl",
               ROS_LOG_DIR=str(tmp_path / "roslog"))
    logf = tmp_path / "launch.log"
    log = open(logf, "wb")
    ros2 = Path(sys.executable).with_name("ros2")
    launch = subprocess.Popen(
        [str(ros2), "launch", "genil_ros", "loop.launch.py", f"checkpoint:={ck}", f"expert:={expert}",
         f"work_dir:={work}", "task:=reach", "real_time_factor:=2.0", "episode_s:=3.0", "updates_per_bag:=10",
         "iterations_per_round:=1", "episodes_per_iter:=2", "episode_steps:=12"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    w = Watcher(ros_context)
    try:
        # a rollout bag trains the discriminator...
        w.wait(lambda: w.metrics.get("trainer", {}).get("bags_processed", 0) >= 1, 240, "a rollout bag", [launch],
               logf)
        assert (work / "discriminator" / "meta.json").is_file()
        assert sorted(p.name for p in (work / "rollouts").iterdir() if p.name.startswith("rollout_"))[0] == \
            "rollout_0000"
        # ...the fine-tuner improves the policy against it and the policy node reloads the result
        w.wait(lambda: w.metrics.get("finetune", {}).get("reloads", 0) >= 1, 240, "a reload", [launch], logf)
        m = w.metrics["finetune"]
        assert m["rounds"] >= 1 and m["iterations"] >= 1 and m["last_error"] is None, m
        info = json.loads((work / "policy" / "finetune.json").read_text())
        assert info["style"] == "amp" and info["task"] == "reach"
        assert Path(w.get_param("/policy_node", "checkpoint")) == (work / "policy").resolve()
        w.wait(lambda: any("noise policy" in d for d in w.models), 30, "the reloaded model in /diagnostics", [launch])
        n = len(w.commands)
        w.wait(lambda: len(w.commands) >= n + 10, 30, "commands after the reload", [launch])
    except AssertionError:
        print((tmp_path / "launch.log").read_text(errors="replace")[-6000:])
        raise
    finally:
        w.close()
        if launch.poll() is None:
            launch.send_signal(signal.SIGINT)  # launch stops its nodes (SIGINT, then SIGTERM after 5 s)
            try:
                launch.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(launch.pid, signal.SIGKILL)
                launch.wait(10)
        log.close()


def test_policy_node_with_guided_selection(spawn, ros_context, tmp_path):
    """The node loads a trainer-style discriminator checkpoint as its scorer and drives a robot with the
    best of K chunks; its diagnostics say so."""
    from genil_ros.adversarial.algorithms import make_adversary
    from genil_ros.adversarial.discriminators import DiscriminatorTrainer

    ck = make_checkpoint(tmp_path / "ck")
    adv = make_adversary("amp", 3)
    rng = np.random.default_rng(0)
    s = rng.uniform(-1, 1, (500, 3)).astype(np.float32)
    d = DiscriminatorTrainer(adv, adv.features(s, None, s + 0.01), hidden=[16], seed=0,
                             record={"num_joints": 3, "joint_names": ["a", "b", "c"], "use_velocity": False})
    d.update(adv.features(s, None, s), 5)
    d.save(tmp_path / "disc", "discriminator")
    rec = tmp_path / "robot.jsonl"
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    robot = spawn([sys.executable, NODES / "fake_robot.py", "--record", rec], extra_env=env, name="robot")
    node = spawn([sys.executable, "-m", "genil_ros.ros.policy_node", "--ros-args", "-p", f"checkpoint:={ck}",
                  "-p", "device:=cpu", "-p", "autostart:=true", "-p", f"guide_checkpoint:={tmp_path / 'disc'}",
                  "-p", "guide_samples:=4", "-p", "max_step_rad:=100.0"], extra_env=env, name="policy")

    def records(kind):
        if not rec.exists():
            return []
        out = []
        for line in rec.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r["kind"] == kind:
                out.append(r)
        return out

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(records("traj")) < 10:
        assert node.alive() and robot.alive(), node.output()[-3000:]
        time.sleep(0.2)
    assert len(records("traj")) >= 10, node.output()[-3000:]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any("best of 4" in d["values"].get("model", "")
                                                  for d in records("diag")):
        time.sleep(0.2)
    assert any("best of 4 by the amp discriminator" in d["values"]["model"] for d in records("diag"))
    assert "configured:" in node.output() and "best of 4" in node.output()
    assert node.stop() == 0
