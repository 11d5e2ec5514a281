"""`rollout_recorder`: the policy's episodes as rollout bags, one rosbag2 (mcap) per episode, for the trainer.

Per episode: call the robot's reset service (the bundled sim's ``/sim_node/reset``: a new target and start
pose; empty = none, e.g. a real arm whose operator resets the scene), call the policy node's ``~/reset``
(fresh observation window), record ``topics`` for ``episode_s`` seconds of the node's clock (sim time with
``use_sim_time``) with :class:`~genil_ros.ros.recorder_node.BagRecorder`, and publish the bag under its
final name ``<rollout_dir>/rollout_NNNN`` only once it is closed (recorded as ``rollout_NNNN.tmp-<pid>``,
then renamed): the trainer node never reads half a bag. ``max_episodes`` 0 = until stopped. Publishes
``~/episodes`` (std_msgs/String JSON, transient local): the number of bags written and the last one.

Parameters: :class:`RolloutSettings`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from std_srvs.srv import Trigger

from genil_ros.errors import GenilError
from genil_ros.ros.params import NodeSettings, declare_parameters, param, read_settings
from genil_ros.ros.runner import ignore_shutdown_signals

__all__ = ["NODE_NAME", "RolloutSettings", "RolloutRecorder", "main"]

NODE_NAME = "rollout_recorder"
KNOWN_TYPES = {"/joint_states": "sensor_msgs/msg/JointState",
               "/forward_position_controller/commands": "std_msgs/msg/Float64MultiArray"}


@dataclass
class RolloutSettings(NodeSettings):
    rollout_dir: str = param("", "REQUIRED: folder the bags go to (the trainer node's rollout_dir)")
    topics: list[str] = param(["/joint_states", "/forward_position_controller/commands"],
                              "topics recorded (the trainer's dataset reader needs joint states and commands)")
    episode_s: float = param(5.0, "length of an episode in seconds of the node's clock", minimum=0.1)
    robot_reset_service: str = param("/sim_node/reset", "std_srvs/Trigger called before each episode; empty: none")
    policy_reset_service: str = param("/policy_node/reset", "std_srvs/Trigger of the policy; empty: none")
    max_episodes: int = param(0, "stop after this many bags (0: until stopped)", minimum=0)
    settle_s: float = param(0.3, "seconds after the resets before recording starts", minimum=0.0)

    def validate(self) -> None:
        if not self.rollout_dir:
            raise GenilError("parameter rollout_dir: give the folder for the rollout bags")
        if not self.topics:
            raise GenilError("parameter topics: give at least one topic to record")


class RolloutRecorder(Node):
    """Resets, records one bag per episode, publishes it atomically; see the module docstring.

    Everything runs on the executor's thread (a timer steps the episode: reset -> settle -> record ->
    publish): rclpy entities (the recorder's subscriptions) must not be created or destroyed elsewhere."""

    def __init__(self):
        super().__init__(NODE_NAME)
        declare_parameters(self, RolloutSettings)
        self.s = read_settings(self, RolloutSettings)
        self.dir = Path(self.s.rollout_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.index = self._next_index()
        self.written = 0
        self.reset_clients = [(name, self.create_client(Trigger, name))
                              for name in (self.s.robot_reset_service, self.s.policy_reset_service) if name]
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.create_publisher(String, "~/episodes", latched)
        self.phase = "reset"
        self.pending: list = []  # (service name, future) of the resets in flight
        self.until_ns = 0
        self.rec = None
        self.tmp: Optional[Path] = None
        self._waiting_since = time.monotonic()
        self.create_timer(0.05, self._step)

    def _next_index(self) -> int:
        done = [int(p.name.split("_")[1]) for p in self.dir.glob("rollout_*")
                if p.name.split("_")[1].isdigit()]
        return max(done, default=-1) + 1

    # ------------------------------------------------------------------ the episode, one step per timer tick
    def _now(self) -> int:
        return self.get_clock().now().nanoseconds

    def _step(self) -> None:
        try:
            getattr(self, f"_{self.phase}")()
        except GenilError as e:
            self.get_logger().error(f"episode {self.index}: {e}; starting over")
            self._abort()

    def _reset(self) -> None:
        if self.s.max_episodes and self.written >= self.s.max_episodes:
            self.phase = "done"
            return
        for name, cli in self.reset_clients:
            if not cli.service_is_ready():
                if time.monotonic() - self._waiting_since > 10.0:
                    self.get_logger().warning(f"waiting for {name}")
                    self._waiting_since = time.monotonic()
                return
        self.pending = [(name, cli.call_async(Trigger.Request())) for name, cli in self.reset_clients]
        self.phase = "resetting"

    def _resetting(self) -> None:
        if not all(f.done() for _, f in self.pending):
            return
        for name, f in self.pending:
            if not f.result().success:
                raise GenilError(f"{name}: refused: {f.result().message}")
        self.pending = []
        self.until_ns = self._now() + int(self.s.settle_s * 1e9)
        self.phase = "settling"

    def _settling(self) -> None:
        from genil_ros.ros.recorder_node import BagRecorder

        if self._now() < self.until_ns:
            return
        final = self.dir / f"rollout_{self.index:04d}"
        self.tmp = self.dir / f"{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.rec = BagRecorder(self, self.tmp, {t: KNOWN_TYPES.get(t) for t in self.s.topics})
        self.until_ns = self._now() + int(self.s.episode_s * 1e9)
        self.phase = "recording"

    def _recording(self) -> None:
        if self._now() < self.until_ns:
            return
        self.rec.stop()
        final = self.dir / f"rollout_{self.index:04d}"
        os.replace(self.tmp, final)
        counts = {k: int(v) for k, v in self.rec.counts.items()}
        self.rec, self.tmp = None, None
        self.index += 1
        self.written += 1
        self.get_logger().info(f"wrote {final} ({counts})")
        self.pub.publish(String(data=json.dumps({"bags": self.written, "last": str(final), "counts": counts})))
        self.phase = "reset"

    def _done(self) -> None:
        pass

    def _abort(self) -> None:
        """Drop a partial episode (stopped or failed mid-way): it is no rollout."""
        if self.rec is not None:
            self.rec.stop()
            self.rec = None
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        self.pending = []
        self.phase = "reset"

    def destroy_node(self):
        ignore_shutdown_signals()  # a second Ctrl-C must not cut the clean-up short
        self._abort()
        return super().destroy_node()


def main(argv: Optional[list] = None) -> int:
    from genil_ros.ros.runner import run_node

    return run_node(NODE_NAME, RolloutRecorder, argv)


if __name__ == "__main__":
    sys.exit(main())
