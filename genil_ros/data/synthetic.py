"""Writing rosbags without ROS: synthetic demonstrations for tests and benchmarks (through ``rosbags``).

:class:`BagFile` writes individual messages (JointState, Image, CompressedImage, JointTrajectory,
Float64MultiArray) into a rosbag2 (mcap or sqlite3, optionally zstd-compressed) or a ROS 1 bag;
:func:`write_demo_bag` writes a whole demonstration whose values are known functions of time:
joint ``j`` is at ``joint_value(t, j)`` and camera frame ``k`` is filled with ``frame_colour(k)``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

__all__ = ["BagFile", "write_demo_bag", "joint_value", "frame_colour"]


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
