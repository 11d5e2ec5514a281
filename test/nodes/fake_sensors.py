"""The fake robot's other sensors and command listeners, for typed tasks (test/nodes/fake_robot.py imports it).

Sensors, published with the joint states (--rate), each derived from the robot's joint positions so that
commands visibly change them:

  --gripper-topic T --gripper-joint J   sensor_msgs/JointState of the gripper alone (its position follows the
                                        last gripper command received on --gripper-command, else 0.04)
  --pose T --pose-frame F               geometry_msgs/PoseStamped: position = the first three joints, rotated
                                        about z by the first joint
  --wrench T --wrench-frame F           geometry_msgs/WrenchStamped
  --vector T:N                          std_msgs/Float64MultiArray of N values

Listeners: --listen TOPIC=pkg/msg/Type (repeatable) records every message received as kind "cmd" with the
topic and the message as a dict (rosidl_runtime_py.message_to_ordereddict).

Extra modes (``/fake_robot/mode``):

  bad_frame       pose and wrench in frame "wrong_frame"
  non_unit_quat   pose orientation with norm 0.5
  nan_gripper     gripper position NaN
  short_vector    the vector one value short
  no_velocity     /joint_states without velocities (a missing field)
"""

from __future__ import annotations

import math

import numpy as np
from rclpy.qos import qos_profile_sensor_data


def add_arguments(ap) -> None:
    ap.add_argument("--gripper-topic", default=None)
    ap.add_argument("--gripper-joint", default="finger_joint")
    ap.add_argument("--gripper-command", default=None, help="Float64MultiArray topic that moves the gripper")
    ap.add_argument("--pose", default=None)
    ap.add_argument("--pose-frame", default="base")
    ap.add_argument("--wrench", default=None)
    ap.add_argument("--wrench-frame", default="tool0")
    ap.add_argument("--vector", default=None, help="TOPIC:N")
    ap.add_argument("--listen", action="append", default=[], help="TOPIC=pkg/msg/Type")


def setup(node, args, state, pos, now_ns, record):
    """Create the publishers and listeners; returns publish(), called at every joint-state tick."""
    import importlib

    from geometry_msgs.msg import PoseStamped, WrenchStamped
    from rosidl_runtime_py import message_to_ordereddict
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from genil_ros.ros.conversions import joint_state_msg, ns_to_stamp

    pubs = {}
    gripper = {"pos": 0.04}
    if args.gripper_topic:
        pubs["gripper"] = node.create_publisher(JointState, args.gripper_topic, qos_profile_sensor_data)
    if args.gripper_command:
        def on_gripper(msg):
            if len(msg.data):
                gripper["pos"] = float(msg.data[0])
        node.create_subscription(Float64MultiArray, args.gripper_command, on_gripper, 10)
    if args.pose:
        pubs["pose"] = node.create_publisher(PoseStamped, args.pose, qos_profile_sensor_data)
    if args.wrench:
        pubs["wrench"] = node.create_publisher(WrenchStamped, args.wrench, qos_profile_sensor_data)
    vec_n = 0
    if args.vector:
        topic, n = args.vector.rsplit(":", 1)
        vec_n = int(n)
        pubs["vector"] = node.create_publisher(Float64MultiArray, topic, qos_profile_sensor_data)

    for item in args.listen:
        topic, _, msgtype = item.partition("=")
        pkg, _, name = msgtype.split("/")
        cls = getattr(importlib.import_module(f"{pkg}.msg"), name)

        def on_cmd(msg, topic=topic):
            record("cmd", topic=topic, msg=_jsonable(message_to_ordereddict(msg)))

        node.create_subscription(cls, topic, on_cmd, 50)

    def publish():
        mode = state["mode"]
        if mode == "silent":
            return
        stamp = now_ns()
        if "gripper" in pubs:
            g = math.nan if mode == "nan_gripper" else gripper["pos"]
            pubs["gripper"].publish(joint_state_msg([args.gripper_joint], [g], stamp))
        if "pose" in pubs:
            msg = PoseStamped()
            msg.header.stamp = ns_to_stamp(stamp)
            msg.header.frame_id = "wrong_frame" if mode == "bad_frame" else args.pose_frame
            p = list(pos[:3]) + [0.0] * (3 - len(pos[:3]))
            msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in p)
            half = float(pos[0]) / 2
            scale = 0.5 if mode == "non_unit_quat" else 1.0
            msg.pose.orientation.z, msg.pose.orientation.w = math.sin(half) * scale, math.cos(half) * scale
            pubs["pose"].publish(msg)
        if "wrench" in pubs:
            msg = WrenchStamped()
            msg.header.stamp = ns_to_stamp(stamp)
            msg.header.frame_id = "wrong_frame" if mode == "bad_frame" else args.wrench_frame
            msg.wrench.force.z = -9.81 + 0.1 * float(pos[0])
            pubs["wrench"].publish(msg)
        if "vector" in pubs:
            n = vec_n - 1 if mode == "short_vector" else vec_n
            pubs["vector"].publish(Float64MultiArray(data=[0.1 * (i + 1) for i in range(n)]))

    return publish


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "array":
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return list(value)
    return value
