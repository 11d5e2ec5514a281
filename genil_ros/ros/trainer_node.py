"""`trainer_node`: the GAIL / AMP discriminator as a ROS 2 node.

It loads expert demonstrations (a dataset directory or rosbags), watches a folder for rollout bags (as the
recorder node writes them), reads each new bag with the dataset builder's reader (``genil_ros.data``: the
same topics, joint reordering and control-rate sync as ``genil-ros dataset build``), and takes
discriminator steps on expert vs rollout transitions. After each bag it writes the discriminator
checkpoint atomically (``adversarial/checkpoint.py`` layout) and publishes metrics. For live transitions
it publishes the learned reward: every control tick, from the last two ``/joint_states`` (AMP: (s, s'))
or the last state and command (GAIL: (s, a)). When the watched policy checkpoint changes it calls the
policy node's reload service.

Parameters (config/trainer_node.yaml):
  config (sim_task.yaml)   experiment YAML: task joints/topics, dataset sync, adversarial section
  algo ("")                gail | amp; empty = adversarial.algo of the config
  expert                   dataset directory, rosbag2 file/directory, or a directory of bags (required)
  rollout_dir              folder polled for new rollout bags (.mcap / .db3 files, rosbag2 directories)
  poll_period_s (1.0)      how often the folder and the policy checkpoint are checked
  checkpoint_dir ("")      discriminator checkpoint; empty = <rollout_dir>/_discriminator
  resume (false)           start from checkpoint_dir when it exists
  updates_per_bag (50)     discriminator steps after each rollout bag
  policy_checkpoint ("")   policy checkpoint directory (or file) to watch; empty = off
  reload_service (/policy_node/reload)   std_srvs/Trigger called when it changes
  joint_states_topic, command_topic     live inputs (defaults from the config)
  reward_rate_hz (0 = task.control_rate_hz)
Publishes: ~/reward (std_msgs/Float64), ~/metrics (std_msgs/String, JSON; transient local), /diagnostics.

A bag that cannot be used (corrupt, missing topics, other joints) is logged with the reason and the file,
counted in the metrics (``bags_failed``, ``last_error``) and skipped; the node keeps running.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

NODE_NAME = "trainer_node"
BAG_SUFFIXES = (".mcap", ".db3")


def _bag_entries(folder: Path) -> list[Path]:
    """Rollout bags in ``folder``: .mcap/.db3 files and rosbag2 directories (metadata.yaml), not hidden
    or underscore-prefixed entries (our own checkpoint, temp files)."""
    out = []
    try:
        entries = sorted(folder.iterdir())
    except FileNotFoundError:
        return []
    for p in entries:
        if p.name.startswith((".", "_")) or ".tmp-" in p.name:
            continue
        if p.is_file() and p.suffix in BAG_SUFFIXES:
            out.append(p)
        elif p.is_dir() and (p / "metadata.yaml").is_file():
            out.append(p)
    return out


def _signature(p: Path) -> Optional[tuple]:
    """Changes when the file / directory's content is rewritten (size and mtimes of its files)."""
    try:
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file())
            return tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files) + (p.stat().st_ino,)
        st = p.stat()
        return (st.st_size, st.st_mtime_ns, st.st_ino)
    except FileNotFoundError:
        return None


def make_node(argv=None):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64, Float64MultiArray, String
    from std_srvs.srv import Trigger

    from genil_ros.adversarial.checkpoint import load_checkpoint_dir, save_checkpoint_dir
    from genil_ros.adversarial.discriminators import DiscriminatorTrainer, amp_features, gail_features
    from genil_ros.adversarial.expert import features_from_episodes, load_bags, load_expert
    from genil_ros.config import dump_config, load_config
    from genil_ros.errors import CheckpointError, GenilError
    from genil_ros.paths import config_path
    from genil_ros.ros.conversions import joint_state_to_array

    class TrainerNode(Node):
        def __init__(self):
            super().__init__(NODE_NAME)
            p = self.declare_parameter
            p("config", "sim_task.yaml")
            p("algo", "")
            p("expert", "")
            p("rollout_dir", "")
            p("poll_period_s", 1.0)
            p("checkpoint_dir", "")
            p("resume", False)
            p("updates_per_bag", 50)
            p("policy_checkpoint", "")
            p("reload_service", "/policy_node/reload")
            p("joint_states_topic", "")
            p("command_topic", "")
            p("reward_rate_hz", 0.0)
            p("seed", 0)
            g = lambda n: self.get_parameter(n).value  # noqa: E731

            self.cfg = load_config(config_path(g("config")))
            a = self.cfg.adversarial
            self.algo = g("algo") or a.algo
            if self.algo not in ("gail", "amp"):
                raise GenilError(f"{NODE_NAME}: parameter algo: {self.algo!r} is not 'gail' or 'amp'")
            if not g("expert"):
                raise GenilError(f"{NODE_NAME}: parameter expert: give a dataset directory or rosbags")
            if not g("rollout_dir"):
                raise GenilError(f"{NODE_NAME}: parameter rollout_dir: give the folder to watch for rollout bags")
            self.joint_names = list(self.cfg.task.joint_names)
            self.nj = len(self.joint_names)
            self.rollout_dir = Path(g("rollout_dir"))
            self.rollout_dir.mkdir(parents=True, exist_ok=True)
            self.ckpt_dir = Path(g("checkpoint_dir") or self.rollout_dir / "_discriminator")
            self.updates_per_bag = int(g("updates_per_bag"))
            self.poll_period = float(g("poll_period_s"))

            t0 = time.monotonic()
            expert = load_expert(g("expert"), self.cfg)
            feats = features_from_episodes(expert.episodes, self.algo, self.nj, where=expert.source)
            self.disc = DiscriminatorTrainer(self.algo, feats, hidden=a.disc_hidden, lr=a.disc_lr,
                                             weight_decay=a.disc_weight_decay, logit_reg=a.disc_logit_reg,
                                             grad_penalty=a.grad_penalty, batch_size=a.disc_batch_size,
                                             replay_size=a.replay_buffer_size, seed=int(g("seed")))
            self.expert_source = expert.source
            self.get_logger().info(f"expert: {expert.source}: {len(expert.episodes)} episodes, {len(feats)} "
                                   f"{self.algo} samples ({time.monotonic() - t0:.1f} s)")
            self.stats = {"algo": self.algo, "expert": expert.source, "expert_samples": int(len(feats)),
                          "bags_processed": 0, "bags_failed": 0, "last_bag": None, "last_error": None,
                          "num_updates": 0, "replay_size": 0, "disc": {}, "policy_reloads": 0,
                          "policy_reload_failures": 0, "rewards_published": 0, "last_reward": None,
                          "checkpoint": str(self.ckpt_dir)}
            if g("resume") and (self.ckpt_dir / "meta.json").is_file():
                meta, t = load_checkpoint_dir(self.ckpt_dir, ("disc",))
                if meta.get("algo") != self.algo or meta.get("feature_dim") != self.disc.dim:
                    raise CheckpointError(f"{self.ckpt_dir}: checkpoint is {meta.get('algo')} with "
                                          f"{meta.get('feature_dim')} features; this node is {self.algo} with "
                                          f"{self.disc.dim}")
                self.disc.load_state_tensors(t["disc"], str(self.ckpt_dir))
                self.disc.num_updates = int(meta.get("num_updates", 0))
                self.stats["bags_processed"] = int(meta.get("bags_processed", 0))
                self.get_logger().info(f"resumed the discriminator from {self.ckpt_dir}")
            self.stats["num_updates"] = self.disc.num_updates
            self._config_yaml = dump_config(self.cfg)
            self._load_bags = load_bags
            self._save = save_checkpoint_dir
            self._gail_features, self._amp_features = gail_features, amp_features

            self.lock = threading.Lock()  # guards self.disc between the worker and the reward timer
            self.seen: dict[Path, tuple] = {}  # bag -> signature when processed (or failed)
            self.pending: dict[Path, tuple] = {}  # bag -> signature at the last poll (must be stable)
            self.policy_ckpt = Path(g("policy_checkpoint")) if g("policy_checkpoint") else None
            self.policy_sig = _signature(self.policy_ckpt) if self.policy_ckpt else None
            self.reload_client = self.create_client(Trigger, g("reload_service"))
            self.reload_service = g("reload_service")
            self._reload_future = None

            latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                                 reliability=ReliabilityPolicy.RELIABLE)
            self.metrics_pub = self.create_publisher(String, "~/metrics", latched)
            self.reward_pub = self.create_publisher(Float64, "~/reward", 10)
            self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
            self._msgs = (Float64, String, DiagnosticArray, DiagnosticStatus, KeyValue, Trigger)

            js_topic = g("joint_states_topic") or self.cfg.task.joint_states_topic
            cmd_topic = g("command_topic") or self.cfg.dataset.action_topic or "/forward_position_controller/commands"
            self.js_topic = js_topic
            self._joint_state_to_array = joint_state_to_array
            self.latest_state: Optional[np.ndarray] = None
            self.latest_state_t = 0.0
            self.latest_cmd: Optional[np.ndarray] = None
            self.prev: Optional[tuple] = None  # (state, command) at the previous tick
            self._bad_js_logged = False
            self.create_subscription(JointState, js_topic, self._on_joint_state, qos_profile_sensor_data)
            self.create_subscription(Float64MultiArray, cmd_topic, self._on_command, 10)
            rate = float(g("reward_rate_hz")) or self.cfg.task.control_rate_hz
            self.create_timer(1.0 / rate, self._on_tick)
            self.create_timer(max(0.1, self.poll_period), self._check_policy)
            self.create_timer(2.0, self._publish_metrics)

            self._stop = threading.Event()
            self.worker = threading.Thread(target=self._watch_loop, name="rollout-watcher", daemon=True)
            self.worker.start()
            self._publish_metrics()
            self.get_logger().info(f"watching {self.rollout_dir} for rollout bags; reward on "
                                   f"{self.resolve_topic_name('~/reward')} from {js_topic}")

        # ------------------------------------------------------------------ rollout bags
        def _watch_loop(self) -> None:
            while not self._stop.wait(self.poll_period):
                try:
                    self._poll_once()
                except Exception as e:  # a bug must not kill the watcher silently
                    self.get_logger().error(f"rollout watcher: {type(e).__name__}: {e}")

        def _poll_once(self) -> None:
            for bag in _bag_entries(self.rollout_dir):
                sig = _signature(bag)
                if sig is None or self.seen.get(bag) == sig:
                    continue
                if self.pending.get(bag) != sig:  # new or still being written: wait one more poll
                    self.pending[bag] = sig
                    continue
                self.pending.pop(bag, None)
                self.seen[bag] = sig
                self._process(bag)
                if self._stop.is_set():
                    return

        def _process(self, bag: Path) -> None:
            t0 = time.monotonic()
            try:
                rollout = self._load_bags([bag], self.cfg, where=str(bag))
                feats = features_from_episodes(rollout.episodes, self.algo, self.nj, where=str(bag))
            except GenilError as e:
                self.stats["bags_failed"] += 1
                self.stats["last_error"] = str(e)
                self.get_logger().error(f"rollout bag skipped: {e}")
                self._publish_metrics()
                return
            except Exception as e:  # e.g. a reader bug on a strange file: still a skipped bag, not a dead node
                self.stats["bags_failed"] += 1
                self.stats["last_error"] = f"{bag}: {type(e).__name__}: {e}"
                self.get_logger().error(f"rollout bag skipped: {bag}: {type(e).__name__}: {e}")
                self._publish_metrics()
                return
            with self.lock:
                before = self.disc.evaluate(feats)
                info = self.disc.update(feats, self.updates_per_bag)
                after = self.disc.evaluate(feats)
                tensors = self.disc.state_tensors()
            self.stats["bags_processed"] += 1
            self.stats["last_bag"] = str(bag)
            self.stats["num_updates"] = self.disc.num_updates
            self.stats["replay_size"] = len(self.disc.replay)
            self.stats["disc"] = {**{k: round(v, 5) for k, v in info.items()},
                                  "bag_samples": int(len(feats)),
                                  "bag_reward_before": round(before["reward_policy"], 5),
                                  "bag_reward_after": round(after["reward_policy"], 5),
                                  "acc_policy_after": round(after["acc_policy"], 5),
                                  "acc_expert_after": round(after["acc_expert"], 5)}
            meta = {"kind": "discriminator", "algo": self.algo, "feature_dim": int(self.disc.dim),
                    "num_joints": self.nj, "joint_names": self.joint_names,
                    "use_velocity": bool(self.cfg.task.use_velocity), "disc_goal": False,
                    "features": "[s, a - q]" if self.algo == "gail" else "[s, s' - s]",
                    "disc_hidden": list(self.cfg.adversarial.disc_hidden), "num_updates": self.disc.num_updates,
                    "bags_processed": self.stats["bags_processed"], "last_bag": str(bag),
                    "expert_source": self.expert_source}
            try:
                self._save(self.ckpt_dir, {"disc": tensors}, meta, self._config_yaml)
            except OSError as e:
                self.stats["last_error"] = f"{self.ckpt_dir}: cannot write the checkpoint: {e}"
                self.get_logger().error(self.stats["last_error"])
            self.get_logger().info(
                f"{bag.name}: {len(feats)} transitions, {self.updates_per_bag} updates in "
                f"{time.monotonic() - t0:.2f} s: loss {info['loss']:.3f}, accuracy {info['accuracy']:.2f}, "
                f"rollout reward {before['reward_policy']:.3f} -> {after['reward_policy']:.3f}")
            self._publish_metrics()

        # ------------------------------------------------------------------ live reward
        def _on_joint_state(self, msg) -> None:
            try:
                self.latest_state = self._joint_state_to_array(msg, self.joint_names, where=self.js_topic,
                                                               use_velocity=self.cfg.task.use_velocity)
                self.latest_state_t = time.monotonic()
            except GenilError as e:
                if not self._bad_js_logged:
                    self.get_logger().error(f"ignoring joint states: {e}")
                    self._bad_js_logged = True

        def _on_command(self, msg) -> None:
            data = np.asarray(msg.data, np.float32)
            if data.shape == (self.nj,):
                self.latest_cmd = data

        def _on_tick(self) -> None:
            s = self.latest_state
            if s is None or time.monotonic() - self.latest_state_t > 1.0:
                self.prev = None
                return
            cur = (s.copy(), None if self.latest_cmd is None else self.latest_cmd.copy())
            prev, self.prev = self.prev, cur
            if prev is None:
                return
            if self.algo == "amp":
                x = self._amp_features(prev[0][None], cur[0][None])
            else:
                if prev[1] is None:
                    return
                x = self._gail_features(prev[0][None], prev[1][None], self.nj)
            if not self.lock.acquire(timeout=0.05):
                return  # an update is running; skip this tick rather than block the executor
            try:
                r = float(self.disc.reward(x)[0])
            finally:
                self.lock.release()
            self.reward_pub.publish(self._msgs[0](data=r))
            self.stats["rewards_published"] += 1
            self.stats["last_reward"] = round(r, 5)

        # ------------------------------------------------------------------ policy reload
        def _check_policy(self) -> None:
            if self.policy_ckpt is None:
                return
            if self._reload_future is not None and self._reload_future.done():
                fut, self._reload_future = self._reload_future, None
                try:
                    res = fut.result()
                    ok, why = bool(res.success), res.message
                except Exception as e:
                    ok, why = False, str(e)
                if ok:
                    self.stats["policy_reloads"] += 1
                    self.get_logger().info(f"policy reloaded via {self.reload_service}: {why}")
                else:
                    self.stats["policy_reload_failures"] += 1
                    self.get_logger().error(f"{self.reload_service} refused the reload: {why}")
                self._publish_metrics()
            sig = _signature(self.policy_ckpt)
            if sig is None or sig == self.policy_sig or self._reload_future is not None:
                return
            self.policy_sig = sig
            if not self.reload_client.service_is_ready():
                self.stats["policy_reload_failures"] += 1
                self.get_logger().warning(f"new policy checkpoint {self.policy_ckpt}, but {self.reload_service} "
                                          f"is not available")
                return
            self.get_logger().info(f"new policy checkpoint {self.policy_ckpt}: calling {self.reload_service}")
            self._reload_future = self.reload_client.call_async(self._msgs[5].Request())

        # ------------------------------------------------------------------ metrics
        def _publish_metrics(self) -> None:
            String, DiagnosticArray, DiagnosticStatus, KeyValue = self._msgs[1], self._msgs[2], self._msgs[3], self._msgs[4]
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

    return TrainerNode()


def main(argv: Optional[list] = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from genil_ros.ros.runner import run_node

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return run_node(NODE_NAME, make_node, argv)


if __name__ == "__main__":
    sys.exit(main())
