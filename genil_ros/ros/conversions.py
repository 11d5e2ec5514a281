"""ROS 2 messages <-> numpy, for the nodes. Decoding is shared with the bag reader (``data/images.py``);
this module only adds the rclpy message types, stamps and the command messages.

Every decoder raises :class:`genil_ros.errors.DataError` whose message starts with ``where`` (the node
passes the entry and its topic), and never returns a non-finite value. Observation types of the task
schema (``genil_ros/schema.py``): JointState fields by joint name (:func:`joint_field_to_array`),
PoseStamped as position + 6-D rotation (:func:`pose_msg_to_array`), WrenchStamped
(:func:`wrench_msg_to_array`), Float64MultiArray of a fixed length (:func:`vector_msg_to_array`), images
(:func:`camera_msg_to_array`). Commands: JointTrajectory, Float64MultiArray, TwistStamped, PoseStamped and
control_msgs/GripperCommand (:func:`gripper_command_msg`, only where control_msgs is importable).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from genil_ros.data.images import decode_compressed, decode_image, image_from_numpy, reorder_joints, resize_image
from genil_ros.data.rotations import quaternion_to_sixd, sixd_to_quaternion
from genil_ros.errors import DataError, GenilError

__all__ = [
    "stamp_to_ns",
    "ns_to_stamp",
    "duration_msg",
    "joint_state_to_array",
    "joint_field_to_array",
    "pose_msg_to_array",
    "wrench_msg_to_array",
    "vector_msg_to_array",
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
    "UNIT_QUATERNION_TOLERANCE",
]

UNIT_QUATERNION_TOLERANCE = 1e-3  # | |q| - 1 | above this: not an orientation (a driver bug or a zero quaternion)


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


def joint_field_to_array(msg, joints: Sequence[str], field: str = "position", *,
                         where: str = "/joint_states") -> np.ndarray:
    """One field (position, velocity or effort) of a sensor_msgs/JointState, float32 in ``joints`` order.

    DataError naming ``where`` and the joint(s) when a joint is missing, the field is empty (a driver that
    does not publish velocities or efforts) or a value is NaN/Inf."""
    values = getattr(msg, field)
    if len(values) == 0 and len(msg.name) > 0:
        raise DataError(f"{where}: JointState has no {field} values")
    out = reorder_joints(msg.name, values, joints, where=where, field=field)
    if not np.all(np.isfinite(out)):
        bad = [joints[i] for i in np.flatnonzero(~np.isfinite(out))]
        raise DataError(f"{where}: JointState has non-finite {field} values for joint(s) {bad}")
    return out


def _check_frame(msg, frame_id: str, kind: str, where: str) -> None:
    if frame_id and msg.header.frame_id != frame_id:
        raise DataError(f"{where}: {kind} is in frame {msg.header.frame_id!r}, expected {frame_id!r}")


def _finite(values: np.ndarray, names: Sequence[str], kind: str, where: str) -> np.ndarray:
    if not np.all(np.isfinite(values)):
        bad = [names[i] for i in np.flatnonzero(~np.isfinite(values))]
        raise DataError(f"{where}: {kind} has non-finite values in {bad}")
    return values


def pose_msg_to_array(msg, frame_id: str = "", *, where: str = "pose") -> np.ndarray:
    """geometry_msgs/PoseStamped -> float32 (9,) ``[x, y, z, r11, r21, r31, r12, r22, r32]`` (position, then
    the 6-D rotation: the first two columns of the rotation matrix).

    DataError when ``frame_id`` is set and the header's differs, when the orientation is not a unit
    quaternion (| |q| - 1 | > UNIT_QUATERNION_TOLERANCE, e.g. an all-zero one) or a value is NaN/Inf."""
    _check_frame(msg, frame_id, "PoseStamped", where)
    p, o = msg.pose.position, msg.pose.orientation
    pos = _finite(np.array([p.x, p.y, p.z]), ["x", "y", "z"], "PoseStamped position", where)
    q = _finite(np.array([o.x, o.y, o.z, o.w]), ["x", "y", "z", "w"], "PoseStamped orientation", where)
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > UNIT_QUATERNION_TOLERANCE:
        raise DataError(f"{where}: PoseStamped orientation is not a unit quaternion (norm {norm:.4g})")
    return np.concatenate([pos, quaternion_to_sixd(q)]).astype(np.float32)


def wrench_msg_to_array(msg, frame_id: str = "", *, where: str = "wrench") -> np.ndarray:
    """geometry_msgs/WrenchStamped -> float32 (6,) ``[fx, fy, fz, tx, ty, tz]``; DataError on a wrong frame
    (when ``frame_id`` is set) or NaN/Inf."""
    _check_frame(msg, frame_id, "WrenchStamped", where)
    f, t = msg.wrench.force, msg.wrench.torque
    out = np.array([f.x, f.y, f.z, t.x, t.y, t.z])
    return _finite(out, ["fx", "fy", "fz", "tx", "ty", "tz"], "WrenchStamped", where).astype(np.float32)


def vector_msg_to_array(msg, dims: Sequence[str], *, where: str = "vector") -> np.ndarray:
    """std_msgs/Float64MultiArray -> float32 (len(dims),); DataError unless it has exactly that many
    finite values."""
    data = np.asarray(msg.data, dtype=np.float64)
    if data.shape != (len(dims),):
        raise DataError(f"{where}: Float64MultiArray has {data.size} values, expected {len(dims)} ({list(dims)})")
    return _finite(data, dims, "Float64MultiArray", where).astype(np.float32)


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
        q = sixd_to_quaternion(row[3:])
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
