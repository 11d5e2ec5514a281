"""`sim_node`: the bundled MuJoCo arm as a ROS 2 robot that behaves like a ros2_control one.

Variants (parameter ``variant``): ``obstacle`` (reach the red target around a post), ``reach`` (no post),
``pick_place`` (the arm with a parallel gripper puts a cylinder into one of two identical bins).

Publishes (all in sim time, which it also publishes on ``/clock``):
  - ``/joint_states`` (sensor_msgs/JointState: name, position, velocity, effort) every physics tick (``rate_hz``):
    the four arm joints, plus ``gripper_finger_joint`` (one finger's travel from closed, metres) in pick_place
  - ``/camera/image_raw`` (sensor_msgs/Image rgb8, sensor-data QoS) at ``camera_rate_hz``
  - ``/object/position`` (std_msgs/Float64MultiArray: the cylinder's centre [x, y, z] in metres, world frame;
    pick_place only) at ``object_rate_hz``: what a perception node would publish (no header, as such nodes'
    Float64MultiArray outputs have none)
  - ``/clock`` (rosgraph_msgs/Clock) every tick
  - ``~/success`` (std_msgs/Bool) at ``status_rate_hz``, latched until the next reset (a lost message loses
    nothing): obstacle/reach: the tool tip reached the target without touching the post; pick_place: the
    object came to rest inside either bin, released (gripper open, nothing touching it), never dropped
  - ``~/status`` (std_msgs/String, JSON) at ``status_rate_hz``: episode, sim_time, episode_time, success,
    success_now and the task's info (obstacle: collided, distance; pick_place: dropped, grasped, bin,
    released, distance)
  - ``~/episode`` (std_msgs/String, JSON, transient-local): the episode's description at each reset (index,
    seed, start time and the scene: goal/target/obstacle, or object and bins). It is privileged: for scripted
    experts and evaluation, never for the policy.
Subscribes (each a ros2_control-style command group; the newest command of a group replaces its previous one):
  - ``/forward_position_controller/commands`` (std_msgs/Float64MultiArray): arm joint position targets in
    ``JOINT_NAMES`` order, applied at once (like forward_command_controller)
  - ``/joint_trajectory_controller/joint_trajectory`` and ``/gripper_controller/joint_trajectory``
    (trajectory_msgs/JointTrajectory): joints matched by name (any of the robot's joints on either topic; a
    subset is fine: the others hold), points interpolated linearly by ``time_from_start`` from the command
    at receipt; ``header.stamp`` zero = start now; an empty trajectory stops (holds)
  - ``/gripper_controller/commands`` (std_msgs/Float64MultiArray, pick_place): one value, the position target
    of ``gripper_finger_joint`` in metres (0 closed .. 0.04 open; clipped)
Services: ``~/reset`` (std_srvs/Trigger): a new episode (new scene, start pose); the response's message is
the episode JSON.

``real_time_factor``: 1 = real time, 2 = twice as fast, 0 = as fast as the CPU allows. When the CPU cannot
keep up, sim time runs slower than asked (never jumps), so nodes with ``use_sim_time`` stay consistent.

Run: ``ros2 run genil_ros sim_node --ros-args --params-file config/sim_node.yaml`` or ``genil-ros sim``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, MultiArrayDimension, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from genil_ros.errors import GenilError
from genil_ros.ros.conversions import ns_to_stamp, numpy_to_image_msg, stamp_to_ns
from genil_ros.ros.params import NodeSettings, declare_parameters, param, read_settings
from genil_ros.sim.binding import OBJECT_TOPIC, VARIANTS, make_env
from genil_ros.sim.env import JOINT_NAMES

__all__ = ["NODE_NAME", "SimSettings", "SimNode", "make_node", "spin", "main", "add_arguments", "ros_argv", "run"]

NODE_NAME = "sim_node"


@dataclass
class SimSettings(NodeSettings):
    """The sim node's parameters (defaults = config/sim_node.yaml). Rates are in sim time."""

    variant: str = param("obstacle", "task: obstacle (two ways around a post), reach (no post) or pick_place "
                         "(gripper, object, two bins)", choices=VARIANTS)
    rate_hz: float = param(100.0, "physics tick = /joint_states and /clock rate, in sim time")
    real_time_factor: float = param(1.0, "sim seconds per wall second; 0 = as fast as possible", minimum=0.0)
    camera_rate_hz: float = param(20.0, "camera image rate in sim time")
    status_rate_hz: float = param(10.0, "~/success and ~/status rate in sim time")
    object_rate_hz: float = param(20.0, "pick_place: object position rate in sim time")
    image_size: list[int] = param([96, 96], "camera image [height, width]")
    seed: int = param(-1, "seed of the first episode (episode k uses seed + k); -1 = random")
    joint_states_topic: str = param("/joint_states", "sensor_msgs/JointState output (every physics tick)")
    camera_topic: str = param("/camera/image_raw", "sensor_msgs/Image (rgb8) output")
    camera_frame_id: str = param("front_camera", "header.frame_id of the camera images")
    object_topic: str = param(OBJECT_TOPIC, "pick_place: std_msgs/Float64MultiArray output, object [x, y, z] (m)")
    position_topic: str = param("/forward_position_controller/commands",
                                "std_msgs/Float64MultiArray arm commands (the four arm joints)")
    trajectory_topic: str = param("/joint_trajectory_controller/joint_trajectory", "trajectory_msgs/JointTrajectory")
    gripper_topic: str = param("/gripper_controller/commands",
                               "pick_place: std_msgs/Float64MultiArray gripper command, one value (m, 0 = closed)")
    gripper_trajectory_topic: str = param("/gripper_controller/joint_trajectory",
                                          "pick_place: trajectory_msgs/JointTrajectory for gripper_finger_joint")
    publish_clock: bool = param(True, "publish /clock (sim time)")

    def validate(self) -> None:
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise GenilError(f"parameter image_size: {self.image_size} must be [height, width]")
        for key in ("rate_hz", "camera_rate_hz", "status_rate_hz", "object_rate_hz"):
            if not getattr(self, key) > 0:
                raise GenilError(f"parameter {key}: {getattr(self, key)} must be > 0")


class _Trajectory:
    """A JointTrajectory being executed: positions (N, J) at sim times (N,), interpolated linearly."""

    def __init__(self, t0: float, q0: np.ndarray, times: np.ndarray, positions: np.ndarray):
        self.t0 = t0
        self.times = np.concatenate([[0.0], times]) if times[0] > 0 else times
        self.positions = np.vstack([q0, positions]) if times[0] > 0 else positions

    def sample(self, t: float) -> np.ndarray:
        rel = t - self.t0
        if rel <= self.times[0]:
            return self.positions[0].copy()
        if rel >= self.times[-1]:
            return self.positions[-1].copy()
        return np.array([np.interp(rel, self.times, self.positions[:, j]) for j in range(self.positions.shape[1])])


class _Group:
    """A command group (what one ros2_control controller drives): its joints, how to read and set their
    targets, and the trajectory it is executing (None = hold the last target)."""

    def __init__(self, name: str, joints: list, get: Callable[[], np.ndarray], set_: Callable[[np.ndarray], object]):
        self.name, self.joints, self.get, self.set = name, list(joints), get, set_
        self.trajectory: Optional[_Trajectory] = None

    def tick(self, t: float) -> None:
        if self.trajectory is not None:
            self.set(self.trajectory.sample(t))


class SimNode(Node):
    """The bundled arm as a ROS 2 robot. It steps no clock of its own: :func:`spin` calls :meth:`tick`
    at ``rate_hz * real_time_factor`` (wall clock) and serves the callbacks in between."""

    def __init__(self):
        super().__init__(NODE_NAME)
        declare_parameters(self, SimSettings)
        s = self.settings = read_settings(self, SimSettings)
        height, width = s.image_size
        self.env = make_env(s.variant, image_size=(height, width), render=True, control_rate_hz=s.rate_hz)
        self.pick_place = s.variant == "pick_place"
        self.joint_names = list(JOINT_NAMES)  # the arm joints (position_topic's order)
        self.groups = [_Group("arm", JOINT_NAMES, lambda: self.env.command.copy(), self.env.set_command)]
        if self.pick_place:
            from genil_ros.sim.pick_place import GRIPPER_JOINT

            self.groups.append(_Group("gripper", [GRIPPER_JOINT], lambda: np.array([self.env.gripper_command]),
                                      lambda v: self.env.set_gripper(v[0])))
        self.robot_joints = [j for g in self.groups for j in g.joints]
        self.tick_ns = int(round(self.env.dt * 1e9))  # whole physics timesteps per tick
        self.camera_period_ns = int(round(1e9 / s.camera_rate_hz))
        self.status_period_ns = int(round(1e9 / s.status_rate_hz))
        self.object_period_ns = int(round(1e9 / s.object_rate_hz))
        self.rtf = s.real_time_factor
        self.now_ns = 0  # sim time; monotonic across episodes
        self.episode_start_ns = 0
        self.next_camera_ns = self.next_status_ns = self.next_object_ns = 0
        self.episode_index = -1
        self.base_seed = s.seed if s.seed >= 0 else int(np.random.SeedSequence().entropy % 2**31)
        self.succeeded = False
        self.frames = 0

        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_js = self.create_publisher(JointState, s.joint_states_topic, 10)
        self.pub_img = self.create_publisher(Image, s.camera_topic, qos_profile_sensor_data)
        self.pub_object = self.create_publisher(Float64MultiArray, s.object_topic, 10) if self.pick_place else None
        self.pub_clock = self.create_publisher(Clock, "/clock", 10) if s.publish_clock else None
        self.pub_success = self.create_publisher(Bool, "~/success", 10)
        self.pub_status = self.create_publisher(String, "~/status", 10)
        self.pub_episode = self.create_publisher(String, "~/episode", latched)
        self.create_subscription(Float64MultiArray, s.position_topic, self._on_position, 10)
        self.create_subscription(JointTrajectory, s.trajectory_topic,
                                 lambda m: self._on_trajectory(m, s.trajectory_topic), 10)
        if self.pick_place:
            self.create_subscription(Float64MultiArray, s.gripper_topic, self._on_gripper, 10)
            self.create_subscription(JointTrajectory, s.gripper_trajectory_topic,
                                     lambda m: self._on_trajectory(m, s.gripper_trajectory_topic), 10)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.reset_episode()
        self.get_logger().info(
            f"variant={s.variant} rate={s.rate_hz} Hz camera={s.camera_rate_hz} Hz "
            f"real_time_factor={self.rtf or 'max'} image={height}x{width} seed={self.base_seed}")

    # -------------------------------------------------------------- episode
    def reset_episode(self) -> dict:
        self.episode_index += 1
        seed = (self.base_seed + self.episode_index) % 2**31
        self.env.reset(seed=seed)
        for g in self.groups:
            g.trajectory = None
        self.succeeded = False
        self.episode_start_ns = self.now_ns
        self.next_camera_ns = self.next_status_ns = self.next_object_ns = self.now_ns
        info = self.env.episode_info()
        info.update(episode=self.episode_index, start_time=self.now_ns * 1e-9)
        self.pub_episode.publish(String(data=json.dumps(info)))
        self._publish_state()
        return info

    def _on_reset(self, request, response):
        info = self.reset_episode()
        scene = info.get("goal", info.get("object_xy"))
        self.get_logger().info(f"episode {info['episode']} (seed {info['seed']}): "
                               f"{'goal' if 'goal' in info else 'object'} {np.round(scene, 3).tolist()}")
        response.success = True
        response.message = json.dumps(info)
        return response

    # -------------------------------------------------------------- commands
    def _vector_command(self, msg, topic: str, names: list) -> Optional[np.ndarray]:
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape != (len(names),):
            self.get_logger().error(f"{topic}: expected {len(names)} value(s) ({', '.join(names)}), got "
                                    f"{data.size}; ignored", throttle_duration_sec=2.0)
            return None
        if not np.all(np.isfinite(data)):
            self.get_logger().error(f"{topic}: non-finite command {data.tolist()}; ignored",
                                    throttle_duration_sec=2.0)
            return None
        return data

    def _on_position(self, msg) -> None:
        data = self._vector_command(msg, self.settings.position_topic, self.joint_names)
        if data is not None:
            self.groups[0].trajectory = None
            self.env.set_command(data)

    def _on_gripper(self, msg) -> None:
        group = self.groups[1]
        data = self._vector_command(msg, self.settings.gripper_topic, group.joints)
        if data is not None:
            group.trajectory = None
            self.env.set_gripper(data[0])

    def _on_trajectory(self, msg, topic: str) -> None:
        log = self.get_logger()
        if not msg.points:  # an empty trajectory: stop and hold where the command is now
            for g in self._groups_of(msg.joint_names) or self.groups:
                g.trajectory = None
            return
        unknown = [j for j in msg.joint_names if j not in self.robot_joints]
        if unknown or len(set(msg.joint_names)) != len(msg.joint_names) or not msg.joint_names:
            log.error(f"{topic}: unknown or duplicate joint(s) {unknown or list(msg.joint_names)} "
                      f"(this robot has {self.robot_joints}); trajectory rejected")
            return
        times, rows = [], []
        for k, pt in enumerate(msg.points):
            if len(pt.positions) != len(msg.joint_names):
                log.error(f"{topic}: point {k} has {len(pt.positions)} positions for "
                          f"{len(msg.joint_names)} joints; trajectory rejected")
                return
            rows.append(list(pt.positions))
            times.append(pt.time_from_start.sec + pt.time_from_start.nanosec * 1e-9)
        times = np.asarray(times)
        rows = np.asarray(rows, dtype=np.float64)
        if np.any(np.diff(times) <= 0) or times[0] < 0 or not np.all(np.isfinite(rows)):
            log.error(f"{topic}: time_from_start must increase strictly and positions be finite; "
                      "trajectory rejected")
            return
        start_ns = stamp_to_ns(msg.header.stamp)
        t0 = (start_ns if start_ns > 0 else self.now_ns) * 1e-9
        names = list(msg.joint_names)
        for g in self._groups_of(names):
            q0 = g.get()
            full = np.tile(q0, (len(times), 1))  # joints of the group the trajectory leaves out hold
            for j, joint in enumerate(g.joints):
                if joint in names:
                    full[:, j] = rows[:, names.index(joint)]
            g.trajectory = _Trajectory(t0, q0, times, full)

    def _groups_of(self, joint_names) -> list:
        return [g for g in self.groups if any(j in g.joints for j in joint_names)]

    # -------------------------------------------------------------- stepping
    def tick(self) -> None:
        for g in self.groups:
            g.tick(self.now_ns * 1e-9)
        self.env.advance(self.env.dt)
        self.now_ns += self.tick_ns
        self._publish_state()

    def _publish_state(self) -> None:
        stamp = ns_to_stamp(self.now_ns)
        if self.pub_clock is not None:
            self.pub_clock.publish(Clock(clock=stamp))
        names, pos, vel, eff = self.env.joint_state()
        js = JointState()
        js.header.stamp = stamp
        js.name = list(names)
        js.position = pos.astype(float).tolist()
        js.velocity = vel.astype(float).tolist()
        js.effort = eff.astype(float).tolist()
        self.pub_js.publish(js)
        if self.env.is_success():
            self.succeeded = True
        if self.pub_object is not None and self.now_ns >= self.next_object_ns:
            self.next_object_ns += self.object_period_ns
            msg = Float64MultiArray(data=self.env.object_pos().astype(float).tolist())
            msg.layout.dim = [MultiArrayDimension(label="object_xyz", size=3, stride=3)]
            self.pub_object.publish(msg)
        if self.now_ns >= self.next_camera_ns:
            self.next_camera_ns += self.camera_period_ns
            self.pub_img.publish(numpy_to_image_msg(self.env.render(), self.now_ns, self.settings.camera_frame_id))
            self.frames += 1
        if self.now_ns >= self.next_status_ns:
            self.next_status_ns += self.status_period_ns
            self.pub_success.publish(Bool(data=self.succeeded))
            info = {k: v for k, v in self.env.info().items() if k not in ("success", "is_success")}
            status = {"variant": self.settings.variant, "episode": self.episode_index,
                      "sim_time": self.now_ns * 1e-9, "episode_time": (self.now_ns - self.episode_start_ns) * 1e-9,
                      "success": self.succeeded, "success_now": self.env.is_success(), **info}
            self.pub_status.publish(String(data=json.dumps(status)))

    def destroy_node(self):
        self.env.close()
        return super().destroy_node()


def make_node(node_args: Optional[list] = None) -> SimNode:
    """Build the SimNode (rclpy must be initialised); for run_node() and in-process tests."""
    return SimNode()


def spin(node, executor, stop=None) -> None:
    """Tick the sim at rate_hz * real_time_factor (wall clock) while serving callbacks; 0 = flat out."""
    period = 0.0 if node.rtf == 0 else node.tick_ns * 1e-9 / node.rtf
    next_t = time.monotonic()
    while stop is None or not stop():
        now = time.monotonic()
        if now < next_t:
            executor.spin_once(timeout_sec=next_t - now)
            continue
        try:
            node.tick()
            executor.spin_once(timeout_sec=0.0)
        except Exception:
            if stop is not None and stop():  # shut down (SIGINT/SIGTERM) in the middle of a tick
                return
            raise
        next_t += period
        if time.monotonic() - next_t > 0.25:  # cannot keep up: slow sim time down rather than jump
            next_t = time.monotonic()


def main(argv: Optional[list] = None) -> int:
    import rclpy

    from genil_ros.ros.runner import run_node

    return run_node(NODE_NAME, make_node, argv,
                    spin=lambda node, executor: spin(node, executor, stop=lambda: not rclpy.ok()))


# --------------------------------------------------------------------------- `genil-ros sim`


def add_arguments(parser) -> None:
    parser.add_argument("--params-file", default="sim_node.yaml",
                        help="ROS params file (default: the package's config/sim_node.yaml)")
    parser.add_argument("--variant", choices=list(VARIANTS), help="task variant")
    parser.add_argument("--real-time-factor", type=float, help="sim seconds per wall second; 0 = as fast as possible")
    parser.add_argument("--rate-hz", type=float, help="physics tick / joint_states rate")
    parser.add_argument("--camera-rate-hz", type=float, help="camera rate")
    parser.add_argument("--seed", type=int, help="seed of the first episode")
    parser.add_argument("ros_args", nargs="*", help="extra ROS arguments after --ros-args (e.g. -r __ns:=/arm)")


def ros_argv(args) -> list:
    """The argv for main() that `genil-ros sim` options stand for."""
    from genil_ros.paths import config_path

    argv = [NODE_NAME, "--ros-args"]
    if args.params_file:
        path = config_path(args.params_file)
        if not path.is_file():
            raise GenilError(f"{path}: params file not found")
        argv += ["--params-file", str(path)]
    for opt, name in (("variant", "variant"), ("real_time_factor", "real_time_factor"), ("rate_hz", "rate_hz"),
                      ("camera_rate_hz", "camera_rate_hz"), ("seed", "seed")):
        val = getattr(args, opt, None)
        if val is not None:
            argv += ["-p", f"{name}:={val}"]
    return argv + list(args.ros_args or [])


def run(args) -> int:
    return main(ros_argv(args))


if __name__ == "__main__":
    sys.exit(main())
