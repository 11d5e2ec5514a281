"""ROS 2 messages <-> numpy, for the nodes. Decoding is shared with the bag reader (``data/images.py``);
this module only adds the rclpy message types, stamps and the command messages.

Every decoder raises :class:`genil_ros.errors.DataError` whose message starts with ``where`` (the node
passes the entry and its topic), and never returns a non-finite value. :func:`observation_decoder` turns
one message into an observation entry's value with the dataset builder's own readers
(``genil_ros/data/entries.py``: JointState fields by joint name, PoseStamped as position + 6-D rotation
with its frame and unit-quaternion checks, WrenchStamped, Float64MultiArray of exactly its dims), so the
node sees what training saw; images go through :func:`camera_msg_to_array`. Commands: JointTrajectory,
Float64MultiArray, TwistStamped, PoseStamped and control_msgs/GripperCommand (:func:`gripper_command_msg`,
only where control_msgs is importable).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from genil_ros.data.images import decode_compressed, decode_image, image_from_numpy, reorder_joints, resize_image
from genil_ros.data.rotations import rot6d_to_quat
from genil_ros.errors import DataError, GenilError

__all__ = [
    "stamp_to_ns",
    "ns_to_stamp",
    "duration_msg",
    "joint_state_to_array",
    "observation_decoder",
    "image_msg_to_array",
    "compressed_msg_to_array",
    "camera_msg_to_array",
    "numpy_to_image_msg",
    "numpy_to_compressed_msg",
    "joint_state_msg",
    "joint_trajectory_msg",
    "trajectory_to_array",
    "float64_array_msg",
    "twist_stamped_msg",
    "pose_stamped_msg",
    "gripper_command_class",
    "gripper_command_msg",
]


# --------------------------------------------------------------------------- time


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int):
    from builtin_interfaces.msg import Time

    ns = int(ns)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def duration_msg(seconds: float):
    from builtin_interfaces.msg import Duration

    ns = int(round(seconds * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


# --------------------------------------------------------------------------- decoding


def joint_state_to_array(msg, joint_names: Sequence[str], *, where: str = "/joint_states",
                         use_velocity: bool = False) -> np.ndarray:
    """sensor_msgs/JointState -> float32 (D,) in ``joint_names`` order (positions, then velocities if asked).

    Raises DataError naming the topic and the missing joint, or the non-finite value.
    """
    pos = reorder_joints(msg.name, msg.position, joint_names, where=where, field="position")
    parts = [pos]
    if use_velocity:
        if len(msg.velocity) == 0:
            raise DataError(f"{where}: JointState has no velocity values but the policy uses velocities")
        parts.append(reorder_joints(msg.name, msg.velocity, joint_names, where=where, field="velocity"))
    out = np.concatenate(parts) if len(parts) > 1 else pos
    if not np.all(np.isfinite(out)):
        bad = [joint_names[i % len(joint_names)] for i in np.flatnonzero(~np.isfinite(out))]
        raise DataError(f"{where}: JointState has non-finite values for joint(s) {sorted(set(bad))}")
    return out


def observation_decoder(entry, index: int, frame_id: Optional[str] = None, *, where: str = "observation"):
    """msg -> float32 value of observation ``entry`` (the ``index``-th of the task): the dataset builder's
    reader for low-dim entries (``frame_id``, when given, replaces the entry's), the image decoder for
    cameras. DataError starting with ``where`` for a message that cannot be this entry or has NaN/Inf."""
    import dataclasses

    from genil_ros.data.entries import JOINT_STATE, MULTIARRAY, POSE, WRENCH, observation_reader

    if entry.is_camera:
        return lambda msg: camera_msg_to_array(msg, entry.height, entry.width, where=where)
    if frame_id is not None and entry.type in ("pose", "wrench"):
        entry = dataclasses.replace(entry, frame_id=frame_id)
    reader = observation_reader(entry, index)
    msgtype = {"pose": POSE, "wrench": WRENCH, "vector": MULTIARRAY}.get(entry.type, JOINT_STATE)

    def decode(msg) -> np.ndarray:
        try:
            value = reader.read(msg, msgtype)
        except DataError as e:
            raise DataError(f"{where}: {e}") from None
        bad = np.flatnonzero(~np.isfinite(value))
        if bad.size:
            raise DataError(f"{where}: non-finite {', '.join(reader.describe(int(d)) for d in bad)}")
        return value.astype(np.float32)

    return decode


def image_msg_to_array(msg, height: int, width: int, *, where: str = "image") -> np.ndarray:
    """sensor_msgs/Image -> (height, width, 3) uint8 RGB at the size the policy expects."""
    img = decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, where=where,
                       is_bigendian=msg.is_bigendian)
    return resize_image(img, height, width)


def compressed_msg_to_array(msg, height: int, width: int, *, where: str = "image") -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> (height, width, 3) uint8 RGB."""
    img = decode_compressed(msg.format, msg.data, where=where)
    return resize_image(img, height, width)


def camera_msg_to_array(msg, height: int, width: int, *, where: str = "image") -> np.ndarray:
    """Either image message type -> (height, width, 3) uint8 RGB."""
    if hasattr(msg, "encoding"):
        return image_msg_to_array(msg, height, width, where=where)
    return compressed_msg_to_array(msg, height, width, where=where)


# --------------------------------------------------------------------------- building messages


def numpy_to_image_msg(img: np.ndarray, stamp_ns: int = 0, frame_id: str = "camera"):
    """(H, W, 3) RGB or (H, W) mono uint8 -> sensor_msgs/Image."""
    from sensor_msgs.msg import Image

    enc, h, w, step, data = image_from_numpy(img)
    msg = Image(encoding=enc, height=h, width=w, step=step, is_bigendian=0)
    msg.data = data
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    return msg


def numpy_to_compressed_msg(img: np.ndarray, stamp_ns: int = 0, frame_id: str = "camera", fmt: str = "jpeg",
                            quality: int = 90):
    """(H, W, 3) RGB uint8 -> sensor_msgs/CompressedImage (jpeg or png)."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    bgr = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)
    ext = ".png" if fmt == "png" else ".jpg"
    params = [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise DataError(f"could not encode a {fmt} image of shape {img.shape}")
    msg = CompressedImage(format=fmt)
    msg.data = buf.tobytes()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    return msg


def joint_state_msg(names: Sequence[str], position: Sequence[float], stamp_ns: int = 0,
                    velocity: Optional[Sequence[float]] = None):
    from sensor_msgs.msg import JointState

    msg = JointState()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.name = list(names)
    msg.position = [float(v) for v in position]
    if velocity is not None:
        msg.velocity = [float(v) for v in velocity]
    return msg


def joint_trajectory_msg(joint_names: Sequence[str], positions: np.ndarray, period_s: float, stamp_ns: int,
                         first_time_s: Optional[float] = None):
    """(N, A) positions -> trajectory_msgs/JointTrajectory with points spaced by ``period_s``.

    Point i has ``time_from_start = first_time_s + i * period_s`` (``first_time_s`` defaults to one period).
    """
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    positions = np.asarray(positions, dtype=np.float64).reshape(-1, len(joint_names))
    first = period_s if first_time_s is None else first_time_s
    msg = JointTrajectory()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.joint_names = list(joint_names)
    for i, row in enumerate(positions):
        msg.points.append(JointTrajectoryPoint(positions=row.tolist(),
                                               time_from_start=duration_msg(first + i * period_s)))
    return msg


def trajectory_to_array(msg) -> np.ndarray:
    """trajectory_msgs/JointTrajectory -> (N, A) float64 positions (in the message's joint order)."""
    if not msg.points:
        return np.zeros((0, len(msg.joint_names)))
    return np.array([list(p.positions) for p in msg.points], dtype=np.float64)


def float64_array_msg(values: Sequence[float]):
    from std_msgs.msg import Float64MultiArray

    return Float64MultiArray(data=[float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)])


def twist_stamped_msg(row: Sequence[float], frame_id: str, stamp_ns: int):
    """``[vx, vy, vz, wx, wy, wz]`` -> geometry_msgs/TwistStamped (m/s, rad/s) in ``frame_id``."""
    from geometry_msgs.msg import TwistStamped

    v = [float(x) for x in np.asarray(row, dtype=np.float64).reshape(6)]
    msg = TwistStamped()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = v[:3]
    msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = v[3:]
    return msg


def pose_stamped_msg(row: Sequence[float], frame_id: str, stamp_ns: int):
    """``[x, y, z, r11, r21, r31, r12, r22, r32]`` -> geometry_msgs/PoseStamped; the 6-D rotation becomes a
    unit quaternion by Gram-Schmidt (GenilError when its two columns are parallel or zero)."""
    from geometry_msgs.msg import PoseStamped

    row = np.asarray(row, dtype=np.float64).reshape(9)
    try:
        q = rot6d_to_quat(row[3:])
    except ValueError as e:
        raise GenilError(f"pose command: {e}") from None
    msg = PoseStamped()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = frame_id
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in row[:3])
    msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z, msg.pose.orientation.w = (
        float(v) for v in q)
    return msg


def gripper_command_class(where: str = "gripper_command"):
    """control_msgs/msg/GripperCommand, or GenilError saying how to get it (control_msgs has no PyPI wheel)."""
    try:
        from control_msgs.msg import GripperCommand
    except ImportError:
        raise GenilError(f"{where}: control_msgs/msg/GripperCommand is not importable: control_msgs has no PyPI "
                         f"wheel; source a ROS 2 install that has it (apt install ros-$ROS_DISTRO-control-msgs), "
                         f"or publish the gripper as float64_multi_array / joint_trajectory") from None
    return GripperCommand


def gripper_command_msg(position: float, max_effort: float = 0.0, cls=None):
    """control_msgs/msg/GripperCommand(position, max_effort) (``cls``: the class, already looked up)."""
    cls = cls or gripper_command_class()
    return cls(position=float(position), max_effort=float(max_effort))
