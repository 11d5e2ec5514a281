"""`trainer_node`: the GAIL / AMP discriminator as a ROS 2 node.

It loads expert demonstrations (a dataset directory or rosbags), watches a folder for rollout bags (as the
recorder node writes them), reads each new bag with the dataset builder's reader (``genil_ros.data``: the
same topics, joint reordering and control-rate sync as ``genil-ros dataset build``), and takes
discriminator steps on expert vs rollout transitions. After each bag it writes the discriminator
checkpoint atomically (``adversarial/checkpoint.py`` layout) and publishes metrics. For live transitions
it publishes the learned reward: every control tick, from the last two ``/joint_states`` (AMP: (s, s'))
or the last state and command (GAIL: (s, a)). The live state is the task's low-dim state read from one
JointState topic, so a live reward needs a task whose observations are all joint entries (positions,
velocities, efforts, gripper) on one topic; for other tasks (poses, wrenches, vectors) only rollout bags
are used, and the node says so. When the watched policy checkpoint changes it calls the policy node's
reload service.

Parameters: :class:`TrainerSettings` (defaults in ``config/trainer_node.yaml``).
Publishes: ``~/reward`` (std_msgs/Float64), ``~/metrics`` (std_msgs/String, JSON; transient local),
``/diagnostics``. Subscribes: joint states (sensor_msgs/JointState, reordered by name) and commands
(std_msgs/Float64MultiArray of the task's action_dim values). Calls: ``reload_service`` (std_srvs/Trigger).

A bag that cannot be used (corrupt, missing topics, other joints) is logged with the reason and the file,
counted in the metrics (``bags_failed``, ``last_error``) and skipped; the node keeps running.

Threads: a worker thread polls the folder and trains on each new bag; the executor's thread runs the
reward tick, the subscriptions and the policy watch. ``lock`` guards the discriminator between them.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, Float64MultiArray, String
from std_srvs.srv import Trigger

from genil_ros.adversarial.algorithms import ADVERSARIES
from genil_ros.adversarial.bagio import BagWatcher, path_signature
from genil_ros.adversarial.checkpoint import save_checkpoint_dir
from genil_ros.adversarial.discriminators import DiscriminatorTrainer
from genil_ros.adversarial.expert import load_bags, load_expert
from genil_ros.config import dump_config, load_config
from genil_ros.data.entries import joint_state_vector
from genil_ros.errors import GenilError
from genil_ros.paths import config_path
from genil_ros.ros.params import NodeSettings, declare_parameters, param, read_settings
from genil_ros.schema import JOINT_OBS

NODE_NAME = "trainer_node"

__all__ = ["NODE_NAME", "TrainerSettings", "TrainerNode", "main"]


@dataclass
class TrainerSettings(NodeSettings):
    """The trainer node's parameters (``config/trainer_node.yaml`` sets each of them)."""

    config: str = param("sim_task.yaml", "experiment YAML (task joints/topics, dataset sync, adversarial "
                         "section): a path or a name in config/")
    algo: str = param("", "gail | amp; empty: the config's adversarial.algo")
    expert: str = param("", "REQUIRED: dataset directory, rosbag2 file/directory, or a folder of bags")
    rollout_dir: str = param("", "REQUIRED: folder polled for new rollout bags (.mcap/.db3/.bag, rosbag2 dirs)")
    poll_period_s: float = param(1.0, "folder / policy checkpoint polling period; a bag must be unchanged for "
                                 "one period", minimum=0.01)
    checkpoint_dir: str = param("", "discriminator checkpoint (atomic); empty: <rollout_dir>/_discriminator")
    resume: bool = param(False, "start from checkpoint_dir when it holds a checkpoint")
    updates_per_bag: int = param(50, "discriminator steps after each rollout bag", minimum=1)
    policy_checkpoint: str = param("", "policy checkpoint to watch; when it changes, reload_service is called; "
                                   "empty: off")
    reload_service: str = param("/policy_node/reload", "std_srvs/Trigger of the policy node")
    joint_states_topic: str = param("", "live reward input; empty: the topic of the task's joint entries "
                                    "(task.joint_states_topic)")
    command_topic: str = param("", "std_msgs/Float64MultiArray commands with the task's action_dim values (GAIL's "
                               "action); empty: the config's dataset.action_topic, or the task's only action topic")
    reward_rate_hz: float = param(0.0, "live reward rate; 0: the config's task.control_rate_hz", minimum=0.0)
    seed: int = param(0, "seed of the discriminator's initial weights and minibatches")

    def validate(self) -> None:
        if self.algo and self.algo not in ADVERSARIES:
            raise GenilError(f"parameter algo: {self.algo!r} is not one of {', '.join(ADVERSARIES)} "
                             "(or empty for the config's adversarial.algo)")
        if not self.expert:
            raise GenilError("parameter expert: give a dataset directory or rosbags")
        if not self.rollout_dir:
            raise GenilError("parameter rollout_dir: give the folder to watch for rollout bags")


class TrainerNode(Node):
    """Expert data + rollout bags -> discriminator updates, checkpoints, metrics and a live reward."""

    def __init__(self):
        super().__init__(NODE_NAME)
        declare_parameters(self, TrainerSettings)
        s = self.settings = read_settings(self, TrainerSettings)

        self.cfg = load_config(config_path(s.config))
        self.cfg.adversarial.algo = s.algo or self.cfg.adversarial.algo  # so the checkpoint's config says it
        task = self.cfg.task
        low = [o for o in task.observations if not o.is_camera]
        js_topics = {o.resolved_topic for o in low}
        # the live state: every low-dim observation read from one JointState topic, or no live reward
        self.state_entries = low if all(o.type in JOINT_OBS for o in low) and len(js_topics) == 1 else None
        self.rollout_dir = Path(s.rollout_dir)
        self.rollout_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir = Path(s.checkpoint_dir or self.rollout_dir / "_discriminator")

        t0 = time.monotonic()
        expert = load_expert(s.expert, self.cfg)
        self.disc = DiscriminatorTrainer.from_config(self.cfg, expert, seed=s.seed)
        self.adversary = self.disc.adversary
        self.get_logger().info(f"expert: {expert.source}: {len(expert.episodes)} episodes, {len(self.disc.expert)} "
                               f"{self.adversary.name} samples ({time.monotonic() - t0:.1f} s)")
        self.stats = {"algo": self.adversary.name, "expert": expert.source,
                      "expert_samples": int(len(self.disc.expert)), "bags_processed": 0, "bags_failed": 0,
                      "last_bag": None, "last_error": None, "num_updates": 0, "replay_size": 0, "disc": {},
                      "policy_reloads": 0, "policy_reload_failures": 0, "rewards_published": 0,
                      "last_reward": None, "checkpoint": str(self.ckpt_dir)}
        if s.resume and (self.ckpt_dir / "meta.json").is_file():
            meta, _ = self.disc.resume(self.ckpt_dir)
            self.stats["bags_processed"] = int(meta.get("bags_processed", 0))
            self.get_logger().info(f"resumed the discriminator from {self.ckpt_dir}")
        self.stats["num_updates"] = self.disc.num_updates
        self._config_yaml = dump_config(self.cfg)

        self.lock = threading.Lock()  # guards self.disc between the worker and the reward timer
        self.watcher = BagWatcher(self.rollout_dir)
        self.policy_ckpt = Path(s.policy_checkpoint) if s.policy_checkpoint else None
        self.policy_sig = path_signature(self.policy_ckpt) if self.policy_ckpt else None
        self.reload_client = self.create_client(Trigger, s.reload_service)
        self._reload_future = None

        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.metrics_pub = self.create_publisher(String, "~/metrics", latched)
        self.reward_pub = self.create_publisher(Float64, "~/reward", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        self.js_topic = s.joint_states_topic or (next(iter(js_topics)) if self.state_entries else "")
        only = task.actions[0].topic if len(task.actions) == 1 else ""
        cmd_topic = s.command_topic or self.cfg.dataset.action_topic or only or (
            "/forward_position_controller/commands" if task.joint_names else "")
        self.latest_state: Optional[np.ndarray] = None
        self.latest_state_t = 0.0
        self.latest_cmd: Optional[np.ndarray] = None
        self.prev: Optional[tuple] = None  # (state, command) at the previous tick
        self._bad_js_logged = False
        live = self.state_entries is not None and (cmd_topic or not self.adversary.uses_action)
        if live:
            self.create_subscription(JointState, self.js_topic, self._on_joint_state, qos_profile_sensor_data)
            if cmd_topic:
                self.create_subscription(Float64MultiArray, cmd_topic, self._on_command, 10)
            self.create_timer(1.0 / (s.reward_rate_hz or task.control_rate_hz), self._on_tick)
        else:
            why = ("its observations are not all joint entries of one JointState topic"
                   if self.state_entries is None else "GAIL needs a command_topic for a task with several actions")
            self.get_logger().warning(f"no live reward: {why}; training on rollout bags only")
        self.create_timer(max(0.1, s.poll_period_s), self._check_policy)
        self.create_timer(2.0, self._publish_metrics)

        self._stop = threading.Event()
        self.worker = threading.Thread(target=self._watch_loop, name="rollout-watcher", daemon=True)
        self.worker.start()
        self._publish_metrics()
        self.get_logger().info(f"watching {self.rollout_dir} for rollout bags; reward on "
                               f"{self.resolve_topic_name('~/reward')} from {self.js_topic}")

    # ------------------------------------------------------------------ rollout bags
    def _watch_loop(self) -> None:
        while not self._stop.wait(self.settings.poll_period_s):
            try:
                for bag in self.watcher.poll():
                    self._process(bag)
                    if self._stop.is_set():
                        return
            except Exception as e:  # a bug must not kill the watcher silently
                self.get_logger().error(f"rollout watcher: {type(e).__name__}: {e}")

    def _process(self, bag: Path) -> None:
        """Train on one rollout bag, then write the checkpoint and publish metrics; a bad bag is skipped."""
        t0 = time.monotonic()
        try:
            rollout = load_bags([bag], self.cfg, where=str(bag))
            feats = self.adversary.episodes_features(rollout.episodes, where=str(bag))
        except GenilError as e:
            self._skip_bag(str(e))
            return
        except Exception as e:  # e.g. a reader bug on a strange file: still a skipped bag, not a dead node
            self._skip_bag(f"{bag}: {type(e).__name__}: {e}")
            return
        n = self.settings.updates_per_bag
        with self.lock:
            before = self.disc.evaluate(feats)
            info = self.disc.update(feats, n)
            after = self.disc.evaluate(feats)
            self.stats["bags_processed"] += 1
            meta, tensors = self.disc.snapshot("discriminator", bags_processed=self.stats["bags_processed"],
                                               last_bag=str(bag))
        self.stats["last_bag"] = str(bag)
        self.stats["num_updates"] = self.disc.num_updates
        self.stats["replay_size"] = len(self.disc.replay)
        self.stats["disc"] = {**{k: round(v, 5) for k, v in info.items()},
                              "bag_samples": int(len(feats)),
                              "bag_reward_before": round(before["reward_policy"], 5),
                              "bag_reward_after": round(after["reward_policy"], 5),
                              "acc_policy_after": round(after["acc_policy"], 5),
                              "acc_expert_after": round(after["acc_expert"], 5)}
        try:
            save_checkpoint_dir(self.ckpt_dir, tensors, meta, self._config_yaml)
        except OSError as e:
            self.stats["last_error"] = f"{self.ckpt_dir}: cannot write the checkpoint: {e}"
            self.get_logger().error(self.stats["last_error"])
        self.get_logger().info(
            f"{bag.name}: {len(feats)} transitions, {n} updates in {time.monotonic() - t0:.2f} s: "
            f"loss {info['loss']:.3f}, accuracy {info['accuracy']:.2f}, "
            f"rollout reward {before['reward_policy']:.3f} -> {after['reward_policy']:.3f}")
        self._publish_metrics()

    def _skip_bag(self, why: str) -> None:
        self.stats["bags_failed"] += 1
        self.stats["last_error"] = why
        self.get_logger().error(f"rollout bag skipped: {why}")
        self._publish_metrics()

    # ------------------------------------------------------------------ live reward
    def _on_joint_state(self, msg: JointState) -> None:
        try:
            self.latest_state = joint_state_vector(self.state_entries, msg.name, msg.position, msg.velocity,
                                                   msg.effort, where=self.js_topic)
            self.latest_state_t = time.monotonic()
        except GenilError as e:
            if not self._bad_js_logged:
                self.get_logger().error(f"ignoring joint states: {e}")
                self._bad_js_logged = True

    def _on_command(self, msg: Float64MultiArray) -> None:
        data = np.asarray(msg.data, np.float32)
        if data.shape == (self.cfg.task.action_dim,) and np.all(np.isfinite(data)):
            self.latest_cmd = data

    def _on_tick(self) -> None:
        """Reward of the transition from the previous tick to this one (skipped while inputs are stale)."""
        s = self.latest_state
        if s is None or time.monotonic() - self.latest_state_t > 1.0:
            self.prev = None
            return
        cur = (s.copy(), None if self.latest_cmd is None else self.latest_cmd.copy())
        prev, self.prev = self.prev, cur
        if prev is None or (self.adversary.uses_action and prev[1] is None):
            return
        x = self.adversary.features(prev[0][None], None if prev[1] is None else prev[1][None], cur[0][None])
        if not self.lock.acquire(timeout=0.05):
            return  # an update is running; skip this tick rather than block the executor
        try:
            r = float(self.disc.reward(x)[0])
        finally:
            self.lock.release()
        self.reward_pub.publish(Float64(data=r))
        self.stats["rewards_published"] += 1
        self.stats["last_reward"] = round(r, 5)

    # ------------------------------------------------------------------ policy reload
    def _check_policy(self) -> None:
        """Collect the answer of a pending reload call; call the reload service when the checkpoint changed."""
        if self.policy_ckpt is None:
            return
        service = self.settings.reload_service
        if self._reload_future is not None and self._reload_future.done():
            fut, self._reload_future = self._reload_future, None
            try:
                res = fut.result()
                ok, why = bool(res.success), res.message
            except Exception as e:
                ok, why = False, str(e)
            if ok:
                self.stats["policy_reloads"] += 1
                self.get_logger().info(f"policy reloaded via {service}: {why}")
            else:
                self.stats["policy_reload_failures"] += 1
                self.get_logger().error(f"{service} refused the reload: {why}")
            self._publish_metrics()
        sig = path_signature(self.policy_ckpt)
        if sig is None or sig == self.policy_sig or self._reload_future is not None:
            return
        self.policy_sig = sig
        if not self.reload_client.service_is_ready():
            self.stats["policy_reload_failures"] += 1
            self.get_logger().warning(f"new policy checkpoint {self.policy_ckpt}, but {service} is not available")
            return
        self.get_logger().info(f"new policy checkpoint {self.policy_ckpt}: calling {service}")
        self._reload_future = self.reload_client.call_async(Trigger.Request())

    # ------------------------------------------------------------------ metrics
    def _publish_metrics(self) -> None:
        self.stats["replay_size"] = len(self.disc.replay)
        self.metrics_pub.publish(String(data=json.dumps(self.stats, sort_keys=True)))
        st = DiagnosticStatus(name=f"{NODE_NAME}: discriminator", hardware_id=NODE_NAME,
                              level=DiagnosticStatus.OK if not self.stats["last_error"] else DiagnosticStatus.WARN,
                              message=self.stats["last_error"] or "ok")
        flat = {k: v for k, v in self.stats.items() if not isinstance(v, dict)}
        flat.update({f"disc.{k}": v for k, v in self.stats["disc"].items()})
        st.values = [KeyValue(key=k, value=str(v)) for k, v in flat.items()]
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)

    def destroy_node(self):
        self._stop.set()
        if self.worker.is_alive():
            self.worker.join(timeout=10.0)
        return super().destroy_node()


def main(argv: Optional[list] = None) -> int:
    import torch

    from genil_ros.ros.runner import run_node

    # at most two torch threads: the node shares the machine with the policy node and the robot's drivers
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return run_node(NODE_NAME, TrainerNode, argv)


if __name__ == "__main__":
    sys.exit(main())
