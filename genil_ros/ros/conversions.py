"""ROS 2 messages <-> numpy, for the nodes. Decoding is shared with the bag reader (``data/images.py``);
this module only adds the rclpy message types, stamps and the command messages.

Every decoder raises :class:`genil_ros.errors.DataError` whose message names the topic (``where``).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from genil_ros.data.images import decode_compressed, decode_image, image_from_numpy, reorder_joints, resize_image
from genil_ros.errors import DataError

__all__ = [
    "stamp_to_ns",
    "ns_to_stamp",
    "duration_msg",
    "joint_state_to_array",
    "image_msg_to_array",
    "compressed_msg_to_array",
    "camera_msg_to_array",
    "numpy_to_image_msg",
    "numpy_to_compressed_msg",
    "joint_state_msg",
    "joint_trajectory_msg",
    "trajectory_to_array",
    "float64_array_msg",
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
