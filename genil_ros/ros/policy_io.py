"""The policy node's inputs and outputs: one subscription per observation topic, one publisher (with its own
safety filter) per action entry, the predicted chunk and their diagnostics.

:class:`NodeInputs` subscribes once per topic (entries that share a topic, e.g. joint positions, velocities
and a gripper from ``/joint_states``, share the subscription and its :class:`~genil_ros.control.streams.TopicRing`).
The callbacks only append the message with its header stamp (the receive time for messages without a
header, or a zero stamp) and receive time; entries are decoded at the control tick
(:func:`genil_ros.control.streams.sample_inputs`), each by its type:

- joint_position / joint_velocity / joint_effort / gripper: sensor_msgs/JointState, by joint NAME;
- pose: geometry_msgs/PoseStamped -> position + 6-D rotation, checking the frame_id and that the
  orientation is a unit quaternion (within 0.01, then normalised, as the dataset builder does);
- wrench: geometry_msgs/WrenchStamped (frame_id checked); vector: std_msgs/Float64MultiArray with exactly
  len(dims) values (no header: stamped with the receive time);
- camera: sensor_msgs/Image or CompressedImage, decoded and resized at most once per message the tick uses.
Low-dim entries are read by the dataset builder's own readers (:func:`genil_ros.ros.conversions.observation_decoder`).

:class:`NodeOutputs` publishes each action entry's rows through its filter (:mod:`genil_ros.control.safety`):
``joint_trajectory`` (this tick's target and the rest of the plan at (i + 1) * period),
``float64_multi_array`` (this tick's values), ``twist_stamped`` / ``pose_stamped`` (this tick's, with the
entry's frame_id) and ``gripper_command`` (control_msgs/GripperCommand, only where control_msgs imports).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
from rclpy.qos import qos_profile_sensor_data

from genil_ros.control.safety import GripperFilter, JointFilter, PoseFilter, TwistFilter, VectorFilter
from genil_ros.control.streams import InputEntry, TopicRing
from genil_ros.errors import GenilError
from genil_ros.ros.conversions import (
    float64_array_msg,
    gripper_command_class,
    gripper_command_msg,
    joint_trajectory_msg,
    observation_decoder,
    pose_stamped_msg,
    twist_stamped_msg,
)
from genil_ros.ros.policy_entries import ENTRY_KEYS, IOPlan, OutputSpec, is_entry_parameter

__all__ = ["NodeInputs", "NodeOutputs", "EntryParameters", "message_class"]

CAMERA_RING = 8  # undecoded images kept per camera topic (a VGA rgb8 frame is 0.9 MB)
LOWDIM_RING = 256  # messages kept per low-dim topic (256 ms of joint states at 1 kHz)


def message_class(msgtype: str):
    """'pkg/msg/Type' -> the rclpy message class."""
    import importlib

    pkg, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


class NodeInputs:
    """Subscriptions of every observation entry; :attr:`entries` are what the control tick samples. Each
    subscription is appended to ``created`` as it is made (the node destroys them)."""

    def __init__(self, node, plan: IOPlan, warn: Callable[[str, str, float], None], created: list):
        self.entries: list[InputEntry] = []
        self.rings: dict[str, TopicRing] = {}
        types: dict[str, tuple[str, str]] = {}
        for index, spec in enumerate(plan.inputs):
            first = types.setdefault(spec.topic, (spec.msgtype, spec.name))
            if first[0] != spec.msgtype:
                raise GenilError(f"observations {first[1]!r} and {spec.name!r} share topic {spec.topic} but need "
                                 f"{first[0]} and {spec.msgtype}")
            ring = self.rings.get(spec.topic)
            if ring is None:
                ring = self.rings[spec.topic] = TopicRing(spec.topic, CAMERA_RING if spec.entry.is_camera
                                                          else LOWDIM_RING)
            label = f"observation {spec.name!r} ({spec.topic})"
            decode = observation_decoder(spec.entry, index, spec.frame_id, where=label)
            self.entries.append(InputEntry(spec.name, spec.topic, ring, decode, spec.state_slice))
        clock = node.get_clock()
        for topic, (msgtype, _) in types.items():
            ring = self.rings[topic]
            stamped = msgtype != "std_msgs/msg/Float64MultiArray"

            def callback(msg, ring=ring, stamped=stamped, topic=topic):
                """Constant, small work: no decoding here (see genil_ros.control.streams)."""
                recv = clock.now().nanoseconds
                if stamped:
                    st = msg.header.stamp
                    stamp = st.sec * 1_000_000_000 + st.nanosec
                    if stamp == 0:
                        warn("zero-stamp:" + topic, f"{topic}: header stamps are zero; using the receive time", 30.0)
                        stamp = recv
                else:
                    stamp = recv
                ring.add(stamp, recv, msg)

            created.append(node.create_subscription(message_class(msgtype), topic, callback,
                                                    qos_profile_sensor_data))

    def clear(self) -> None:
        for ring in self.rings.values():
            ring.clear()

    def describe(self) -> str:
        return "; ".join(f"{e.name} <- {e.topic}" for e in self.entries)

    def diagnostics(self, ages: dict) -> dict[str, str]:
        kv = {}
        for e in self.entries:
            kv[f"staleness_s {e.name}"] = f"{ages.get(e.name, float('nan')):.3f}"
        for topic, ring in self.rings.items():
            kv[f"received_messages {topic}"] = str(ring.received)
            kv[f"decoded_messages {topic}"] = str(ring.decoded)
            kv[f"rejected_messages {topic}"] = str(ring.rejected)
        return kv


class _Output:
    """One action entry: its filter, publisher and message builder, and the last command it sent."""

    def __init__(self, node, spec: OutputSpec, period_s: float, created: list):
        a, v = spec.entry, spec.values
        self.spec = spec
        self.name = a.name
        self.period_s = period_s
        k = spec.key
        if a.type == "joint_position":
            self.filter = JointFilter(a.name, a.joints, v["lower_limits"], v["upper_limits"], v["max_step"],
                                      a.mode == "delta", key=k)
        elif a.type == "gripper":
            self.filter = GripperFilter(a.name, a.joints, v["lower_limits"], v["upper_limits"], v["max_rate"],
                                        period_s, a.binary, v["open_position"], v["closed_position"], key=k)
        elif a.type == "twist":
            self.filter = TwistFilter(a.name, v["max_linear_speed"], v["max_angular_speed"], v["workspace_min"],
                                      v["workspace_max"], period_s, key=k)
        elif a.type == "pose":
            self.filter = PoseFilter(a.name, v["max_linear_speed"], v["max_angular_speed"], v["workspace_min"],
                                     v["workspace_max"], period_s, key=k)
        else:
            self.filter = VectorFilter(a.name, a.dims, v["lower_limits"], v["upper_limits"], v["max_step"], key=k)
        self.build = self._builder(spec)
        cls = self._gripper_cls if spec.msg == "gripper_command" else message_class(
            {"joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
             "float64_multi_array": "std_msgs/msg/Float64MultiArray",
             "twist_stamped": "geometry_msgs/msg/TwistStamped",
             "pose_stamped": "geometry_msgs/msg/PoseStamped"}[spec.msg])
        self.publisher = node.create_publisher(cls, spec.topic, 10)
        created.append(self.publisher)
        self.last: Optional[np.ndarray] = None

    def _builder(self, spec: OutputSpec) -> Callable[[np.ndarray, int], object]:
        a, v, period = spec.entry, spec.values, self.period_s
        names = list(a.dim_names)
        if spec.msg == "joint_trajectory":
            return lambda rows, now: joint_trajectory_msg(names, rows, period, now)
        if spec.msg == "float64_multi_array":
            return lambda rows, now: float64_array_msg(rows[0])
        if spec.msg == "twist_stamped":
            return lambda rows, now: twist_stamped_msg(rows[0], v["frame_id"], now)
        if spec.msg == "pose_stamped":
            return lambda rows, now: pose_stamped_msg(rows[0], v["frame_id"], now)
        if a.dim != 1:
            raise GenilError(f"parameter actions.{a.name}.msg: gripper_command carries one position, but "
                             f"{a.name!r} has {a.dim} joints {list(a.joints)}")
        self._gripper_cls = gripper_command_class(f"parameter actions.{a.name}.msg")
        effort = float(v["max_effort"])
        return lambda rows, now: gripper_command_msg(rows[0][0], effort, self._gripper_cls)

    def prepare(self, rows: np.ndarray, state: Optional[np.ndarray], now_ns: int) -> tuple[np.ndarray, object]:
        """(the filtered rows, the message) for this tick; GenilError naming the entry."""
        measured = None if (state is None or self.spec.measured is None) else state[self.spec.measured]
        try:
            safe = self.filter.apply(rows, self.last, measured)
            return safe, self.build(safe, now_ns)
        except (GenilError, ValueError) as e:
            raise GenilError(f"action {self.name!r}: {e}") from None

    def send(self, safe: np.ndarray, msg) -> None:
        self.publisher.publish(msg)
        self.last = safe[0].copy()

    def hold(self, now_ns: int) -> None:
        if self.last is not None:
            self.publisher.publish(self.build(self.filter.hold(self.last)[None], now_ns))


class NodeOutputs:
    """A publisher with its safety filter per action entry, and the predicted chunk. Each publisher is
    appended to ``created`` as it is made (the node destroys them)."""

    def __init__(self, node, plan: IOPlan, period_s: float, created: list):
        from trajectory_msgs.msg import JointTrajectory

        self.outputs = [_Output(node, spec, period_s, created) for spec in plan.outputs]
        self.period_s = period_s
        self.chunk_publisher = node.create_publisher(JointTrajectory, "~/predicted_chunk", 10)
        created.append(self.chunk_publisher)
        self.chunk_names = self._chunk_names(plan.outputs)

    @staticmethod
    def _chunk_names(specs: list[OutputSpec]) -> list[str]:
        """Joint and gripper dims by joint name (RViz can show them on the robot), others 'entry/dim'."""
        names = []
        for s in specs:
            joints = s.entry.type in ("joint_position", "gripper")
            names += [d if joints else f"{s.name}/{d}" for d in s.entry.dim_names]
        if len(set(names)) != len(names):
            names = [f"{s.name}/{d}" for s in specs for d in s.entry.dim_names]
        return names

    @property
    def commanded(self) -> bool:
        return any(o.last is not None for o in self.outputs)

    def command(self, rows: np.ndarray, state: Optional[np.ndarray], now_ns: int) -> None:
        """Publish every entry's slice of ``rows`` (this tick's action and the rest of the plan). Every entry
        is filtered first, so a failure of any one (GenilError) publishes nothing."""
        ready = [o.prepare(rows[:, o.spec.action_slice], state, now_ns) for o in self.outputs]
        for o, (safe, msg) in zip(self.outputs, ready):
            o.send(safe, msg)

    def hold(self, now_ns: int) -> None:
        """One hold command per entry that has commanded (the filter's hold: the last command, a zero twist)."""
        for o in self.outputs:
            o.hold(now_ns)

    def reset(self) -> None:
        for o in self.outputs:
            o.last = None

    def publish_chunk(self, rows: np.ndarray, tick_ns: int) -> None:
        self.chunk_publisher.publish(joint_trajectory_msg(self.chunk_names, rows, self.period_s, tick_ns,
                                                          first_time_s=0.0))

    def topics(self) -> str:
        return ", ".join(o.spec.topic for o in self.outputs)

    def describe(self) -> str:
        return "; ".join(f"{o.name} -> {o.spec.topic} ({o.spec.msg})" for o in self.outputs)

    def diagnostics(self) -> dict[str, str]:
        kv = {}
        for o in self.outputs:
            kv[f"command_topic {o.name}"] = o.spec.topic
            kv[f"command_msg {o.name}"] = o.spec.msg
            kv[f"clamped_commands {o.name}"] = str(o.filter.clamped)
        return kv


class EntryParameters:
    """The per-entry parameters on the node: declared at configure with the values in force (``ros2 param
    list / get`` show them), undeclared at cleanup (another checkpoint may have other entries), remembering
    the values the user set meanwhile for the next configure."""

    def __init__(self):
        self.declared: dict = {}  # name -> the value declared at configure
        self.user_values: dict = {}  # name -> a value the user set while configured

    def given(self, node) -> dict:
        """What the user gave: the params file and -p values, then what was set while configured."""
        overrides = getattr(node, "_parameter_overrides", {})  # rclpy keeps them for undeclared names here
        given = {k: p.value for k, p in overrides.items() if is_entry_parameter(k)}
        given.update(self.user_values)
        return given

    def declare(self, node, values: dict) -> None:
        from rcl_interfaces.msg import ParameterDescriptor

        for name, value in values.items():
            group, _, key = name.split(".")
            if not node.has_parameter(name):
                node.declare_parameter(name, value, ParameterDescriptor(
                    description=ENTRY_KEYS[group][key][1] + " (read at configure)", dynamic_typing=True))
            self.declared[name] = value

    def undeclare(self, node) -> None:
        for name, declared in self.declared.items():
            if node.has_parameter(name):
                value = _plain(node.get_parameter(name).value)
                if value != _plain(declared):
                    self.user_values[name] = value
                node.undeclare_parameter(name)
        self.declared = {}


def _plain(value):
    """A parameter value comparable with ==: arrays as lists."""
    return list(value) if hasattr(value, "__len__") and not isinstance(value, str) else value
