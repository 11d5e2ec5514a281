"""Writing rosbags without ROS: synthetic demonstrations for tests and benchmarks (through ``rosbags``).

:class:`BagFile` writes individual messages (JointState, Image, CompressedImage, JointTrajectory,
Float64MultiArray) into a rosbag2 (mcap or sqlite3, optionally zstd-compressed) or a ROS 1 bag;
:func:`write_demo_bag` writes a whole demonstration whose values are known functions of time:
joint ``j`` is at ``joint_value(t, j)`` and camera frame ``k`` is filled with ``frame_colour(k)``;
:func:`write_task_bag` one of an arm with a gripper, a perception vector and a vector command (PoseStamped,
WrenchStamped, TwistStamped and GripperCommand writers are in :class:`BagFile`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

__all__ = ["BagFile", "write_demo_bag", "write_task_bag", "joint_value", "frame_colour", "gripper_value",
           "object_value", "command_vector"]


def joint_value(t: float, j: int) -> float:
    return math.sin(0.5 * t + j) + 0.1 * j


def frame_colour(k: int) -> tuple[int, int, int]:
    """RGB of frame ``k`` (distinct for 250 frames, channels distinguishable to catch BGR/RGB swaps)."""
    v = k % 250
    return (v, 255 - v, (3 * v) % 256)


class BagFile:
    """Write messages into a new bag. ``storage``: "mcap", "sqlite3" or "ros1";
    ``compression``: None, "message" or "file" (zstd, rosbag2 only). Times are ns."""

    def __init__(self, path: Union[str, Path], storage: str = "mcap", compression: Optional[str] = None):
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        self.ros1 = storage == "ros1"
        self.ts = get_typestore(Stores.ROS1_NOETIC if self.ros1 else Stores.ROS2_KILTED)
        if self.ros1:
            from rosbags.rosbag1 import Writer as W1

            self.writer = W1(self.path)
        else:
            from rosbags.rosbag2 import StoragePlugin, Writer
            from rosbags.rosbag2.enums import CompressionFormat, CompressionMode

            plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
            self.writer = Writer(self.path, version=9, storage_plugin=plugin)
            if compression:
                mode = {"message": CompressionMode.MESSAGE, "file": CompressionMode.FILE}[compression]
                self.writer.set_compression(mode, CompressionFormat.ZSTD)
        self.writer.open()
        self.conns = {}

    def __enter__(self) -> "BagFile":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _conn(self, topic: str, msgtype: str):
        c = self.conns.get(topic)
        if c is None:
            c = self.conns[topic] = self.writer.add_connection(topic, msgtype, typestore=self.ts)
        return c

    def raw(self, topic: str, msgtype: str, t_ns: int, data: bytes) -> None:
        self.writer.write(self._conn(topic, msgtype), int(t_ns), data)

    def write(self, topic: str, msg, t_ns: int) -> None:
        mt = msg.__msgtype__
        data = self.ts.serialize_ros1(msg, mt) if self.ros1 else self.ts.serialize_cdr(msg, mt)
        self.raw(topic, mt, t_ns, bytes(data))

    # -- message builders
    def header(self, stamp_ns: int, frame_id: str = ""):
        T, H = self.ts.types["builtin_interfaces/msg/Time"], self.ts.types["std_msgs/msg/Header"]
        stamp = T(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))
        if self.ros1:
            return H(seq=0, stamp=stamp, frame_id=frame_id)
        return H(stamp=stamp, frame_id=frame_id)

    def joint_state(self, topic: str, t_ns: int, stamp_ns: int, names: Sequence[str], position, velocity=()):
        JS = self.ts.types["sensor_msgs/msg/JointState"]
        f = lambda v: np.asarray(v, dtype=np.float64)  # noqa: E731
        self.write(topic, JS(header=self.header(stamp_ns), name=list(names), position=f(position),
                             velocity=f(velocity), effort=f(())), t_ns)

    def image(self, topic: str, t_ns: int, stamp_ns: int, img: np.ndarray, encoding: Optional[str] = None,
              step: Optional[int] = None):
        from genil_ros.data.images import image_from_numpy

        Image = self.ts.types["sensor_msgs/msg/Image"]
        if encoding is None:
            encoding, h, w, st, data = image_from_numpy(img)
        else:
            h, w = img.shape[:2]
            st = img.shape[1] * (img.shape[2] if img.ndim == 3 else 1)
            data = np.ascontiguousarray(img).tobytes()
        self.write(topic, Image(header=self.header(stamp_ns), height=h, width=w, encoding=encoding, is_bigendian=0,
                                step=step if step is not None else st, data=np.frombuffer(data, np.uint8)), t_ns)

    def compressed(self, topic: str, t_ns: int, stamp_ns: int, img: np.ndarray, fmt: str = "jpeg"):
        import cv2

        CI = self.ts.types["sensor_msgs/msg/CompressedImage"]
        ok, buf = cv2.imencode(".png" if "png" in fmt else ".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        assert ok
        self.write(topic, CI(header=self.header(stamp_ns), format=fmt, data=buf.reshape(-1)), t_ns)

    def trajectory(self, topic: str, t_ns: int, stamp_ns: int, names: Sequence[str], positions):
        JT = self.ts.types["trajectory_msgs/msg/JointTrajectory"]
        P = self.ts.types["trajectory_msgs/msg/JointTrajectoryPoint"]
        D = self.ts.types["builtin_interfaces/msg/Duration"]
        e = np.zeros(0, dtype=np.float64)
        pts = [] if positions is None else [P(positions=np.asarray(positions, np.float64), velocities=e,
                                                accelerations=e, effort=e,
                                                time_from_start=D(sec=0, nanosec=100_000_000))]
        self.write(topic, JT(header=self.header(stamp_ns), joint_names=list(names), points=pts), t_ns)

    def multiarray(self, topic: str, t_ns: int, values):
        MA = self.ts.types["std_msgs/msg/Float64MultiArray"]
        L = self.ts.types["std_msgs/msg/MultiArrayLayout"]
        self.write(topic, MA(layout=L(dim=[], data_offset=0), data=np.asarray(values, np.float64)), t_ns)

    def _vec3(self, v):
        return self.ts.types["geometry_msgs/msg/Vector3"](x=float(v[0]), y=float(v[1]), z=float(v[2]))

    def pose(self, topic: str, t_ns: int, stamp_ns: int, position, quat_xyzw, frame_id: str = ""):
        """geometry_msgs/PoseStamped; ``quat_xyzw`` is written as given (not normalised)."""
        T = self.ts.types
        p = T["geometry_msgs/msg/Point"](x=float(position[0]), y=float(position[1]), z=float(position[2]))
        x, y, z, w = (float(v) for v in quat_xyzw)
        q = T["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)
        msg = T["geometry_msgs/msg/PoseStamped"](header=self.header(stamp_ns, frame_id),
                                                 pose=T["geometry_msgs/msg/Pose"](position=p, orientation=q))
        self.write(topic, msg, t_ns)

    def wrench(self, topic: str, t_ns: int, stamp_ns: int, force, torque, frame_id: str = ""):
        T = self.ts.types
        w = T["geometry_msgs/msg/Wrench"](force=self._vec3(force), torque=self._vec3(torque))
        self.write(topic, T["geometry_msgs/msg/WrenchStamped"](header=self.header(stamp_ns, frame_id), wrench=w), t_ns)

    def twist(self, topic: str, t_ns: int, stamp_ns: int, linear, angular, frame_id: str = ""):
        T = self.ts.types
        tw = T["geometry_msgs/msg/Twist"](linear=self._vec3(linear), angular=self._vec3(angular))
        self.write(topic, T["geometry_msgs/msg/TwistStamped"](header=self.header(stamp_ns, frame_id), twist=tw), t_ns)

    def gripper_command(self, topic: str, t_ns: int, position: float, max_effort: float = 20.0):
        """control_msgs/msg/GripperCommand (registered from its definition: no PyPI wheel has control_msgs;
        the bag carries the definition, as ``ros2 bag record`` writes it)."""
        name = "control_msgs/msg/GripperCommand"
        if name not in self.ts.types:
            from rosbags.typesys import get_types_from_msg

            self.ts.register(get_types_from_msg("float64 position\nfloat64 max_effort\n", name))
        GC = self.ts.types[name]
        self.write(topic, GC(position=float(position), max_effort=float(max_effort)), t_ns)


def write_demo_bag(path: Union[str, Path], *, joint_names: Sequence[str] = ("j0", "j1", "j2"), duration_s: float = 3.0,
                   start_s: float = 1000.0, js_rate: float = 50.0, cam_rate: float = 20.0, image_size=(24, 32),
                   camera_topic: Optional[str] = "/camera/image_raw", encoding: str = "rgb8",
                   compressed: Optional[str] = None,
                   action: Optional[str] = "multiarray", action_topic: str = "/commands", action_rate: float = 10.0,
                   storage: str = "mcap", compression: Optional[str] = None, header_stamps: bool = True,
                   latency_s: float = 0.002, receive_offset_s: float = 50.0, gaps: Sequence[tuple] = (),
                   js_topic: str = "/joint_states", nonfinite: Sequence[tuple] = (), progress=None) -> Path:
    """A demonstration whose values are known functions of the header time ``t`` (seconds):
    joint ``j`` (by name, published in reversed order) is ``joint_value(t, j)``; frame ``k`` of the camera has
    colour ``frame_colour(k)``; the command published at ``t`` is ``joint_value(t + 0.1, j)``.
    Receive times are header times + ``receive_offset_s`` + ``latency_s``. ``gaps``: (t0, t1) in seconds
    from the start where nothing is published. ``nonfinite``: (field, first, count, j, value) entries, field
    "position", "velocity" or "command": that value of joint ``j`` is ``value`` (e.g. NaN) in ``count``
    messages of the joint states (or commands) from message ``first`` on."""

    def poisoned(field: str, k: int, values: list) -> list:
        for f, first, count, j, value in nonfinite:
            if f == field and first <= k < first + count:
                values[j] = value
        return values

    names = list(joint_names)
    t_end = start_s + duration_s
    events = []  # (receive ns, kind, header ns, k)

    def add(kind, rate):
        n = int(math.floor(duration_s * rate + 1e-9)) + 1
        for k in range(n):
            t = start_s + k / rate
            if t > t_end + 1e-9 or any(a <= t - start_s < b for a, b in gaps):
                continue
            hdr = int(round(t * 1e9))
            events.append((hdr + int(round((receive_offset_s + latency_s) * 1e9)), kind, hdr, k))

    add("js", js_rate)
    if camera_topic:
        add("cam", cam_rate)
    if action:
        add("act", action_rate)
    events.sort()
    h, w = image_size
    with BagFile(path, storage=storage, compression=compression) as bag:
        for recv, kind, hdr, k in events:
            stamp = hdr if header_stamps else 0
            t = hdr / 1e9
            if kind == "js":
                order = list(reversed(range(len(names))))
                pos = poisoned("position", k, [joint_value(t, j) for j in range(len(names))])
                vel = poisoned("velocity", k, [0.5 * math.cos(0.5 * t + j) for j in range(len(names))])
                bag.joint_state(js_topic, recv, stamp, [names[j] for j in order], [pos[j] for j in order],
                                [vel[j] for j in order])
            elif kind == "cam":
                img = np.empty((h, w, 3), np.uint8)
                img[:] = frame_colour(k)
                if compressed:
                    bag.compressed(camera_topic, recv, stamp, img, compressed)
                elif encoding == "rgb8":
                    bag.image(camera_topic, recv, stamp, img)
                else:
                    import cv2

                    conv = {"bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA, "bgra8": cv2.COLOR_RGB2BGRA,
                            "mono8": cv2.COLOR_RGB2GRAY}[encoding]
                    bag.image(camera_topic, recv, stamp, cv2.cvtColor(img, conv), encoding=encoding)
            else:
                vals = poisoned("command", k, [joint_value(t + 0.1, j) for j in range(len(names))])
                if action == "multiarray":
                    bag.multiarray(action_topic, recv, vals)
                else:
                    bag.trajectory(action_topic, recv, stamp, list(reversed(names)), list(reversed(vals)))
            if progress is not None:
                progress.update(1)
    return Path(path)


def gripper_value(t: float) -> float:
    """The finger joint's opening (m) at time ``t``: open 0.04, closing to 0.01 (an object) and back."""
    return 0.04 if math.sin(1.3 * t) > 0 else 0.01


def object_value(t: float) -> list[float]:
    """The perceived object position (x, y, z) at time ``t``."""
    return [0.5 + 0.05 * math.sin(t), -0.1 * math.cos(t), 0.02]


def command_vector(t: float, n: int) -> list[float]:
    """The ``n`` values of the vector command published at time ``t``."""
    return [math.cos(0.7 * t + i) for i in range(n)]


def write_task_bag(path: Union[str, Path], *, joints: Sequence[str] = ("j0", "j1", "j2"),
                   finger: str = "finger_joint", duration_s: float = 3.0, start_s: float = 1000.0,
                   js_rate: float = 50.0, obj_rate: float = 15.0, cmd_rate: float = 10.0, command_dims: int = 2,
                   js_topic: str = "/joint_states", obj_topic: str = "/object/position",
                   cmd_topic: str = "/arm/commands", gripper_topic: str = "/gripper/command",
                   gripper_msg: str = "multiarray", open_position: float = 0.04, closed_position: float = 0.0,
                   storage: str = "mcap", edit=None) -> Path:
    """A demonstration of an arm with a gripper, without cameras: ``js_topic`` JointState with ``joints`` at
    ``joint_value(t, j)`` and ``finger`` at ``gripper_value(t)``; ``obj_topic`` Float64MultiArray
    ``object_value(t)`` (no header: stamped by receive time = header time); ``cmd_topic`` Float64MultiArray of
    ``command_dims`` values ``command_vector(t)`` (a length other than the joints'); ``gripper_topic`` the
    gripper command, ``closed_position`` while the finger closes else ``open_position``, as Float64MultiArray
    (``gripper_msg="multiarray"``) or control_msgs/GripperCommand (``"gripper_command"``).
    ``edit(bag, kind, k, t_ns)`` may write a message itself (return True) to inject bad input."""
    names = list(joints) + [finger]
    events = []
    for kind, rate in (("js", js_rate), ("obj", obj_rate), ("cmd", cmd_rate), ("grip", cmd_rate)):
        n = int(math.floor(duration_s * rate + 1e-9)) + 1
        events += [(int(round((start_s + k / rate) * 1e9)), kind, k) for k in range(n)]
    events.sort()
    with BagFile(path, storage=storage) as bag:
        for t_ns, kind, k in events:
            t = t_ns / 1e9
            if edit is not None and edit(bag, kind, k, t_ns):
                continue
            if kind == "js":
                pos = [joint_value(t, j) for j in range(len(joints))] + [gripper_value(t)]
                bag.joint_state(js_topic, t_ns, t_ns, names[::-1], pos[::-1], [0.0] * len(names))
            elif kind == "obj":
                bag.multiarray(obj_topic, t_ns, object_value(t))
            elif kind == "cmd":
                bag.multiarray(cmd_topic, t_ns, command_vector(t, command_dims))
            else:
                g = closed_position if gripper_value(t + 0.1) < 0.02 else open_position
                if gripper_msg == "gripper_command":
                    bag.gripper_command(gripper_topic, t_ns, g)
                else:
                    bag.multiarray(gripper_topic, t_ns, [g])
    return Path(path)
