"""Task entries read out of recorded messages: one :class:`EntryReader` per observation entry (and per
action entry with ``source: command``), each turning one message of its topic into the entry's vector.

The messages are ``rosbags`` messages; rclpy messages have the same field names, so a reader works on
both. Every error is a :class:`~genil_ros.errors.DataError` whose message the caller prefixes with the
bag and topic; it names the entry (``observation 'ee'`` and its key ``task.observations[2]``) and what is
wrong with the message (a missing joint or field, a frame id, a vector of the wrong length, a quaternion
that is not a rotation). Non-finite values are returned as they are: the builder decides (error or cut,
``dataset.nonfinite``) and names the dimension with :meth:`EntryReader.describe`.

=============== ============================== =============================================================
entry type      message                        vector
=============== ============================== =============================================================
joint_position  sensor_msgs/JointState         ``position`` of ``joints``, matched by name
joint_velocity  sensor_msgs/JointState         ``velocity`` of ``joints``
joint_effort    sensor_msgs/JointState         ``effort`` of ``joints``
gripper (obs)   sensor_msgs/JointState         ``position`` of ``joints``
pose            geometry_msgs/PoseStamped      position + 6-D rotation (``data/rotations.py``)
wrench          geometry_msgs/WrenchStamped    force + torque
vector          std_msgs/Float64MultiArray     ``data``, exactly ``len(dims)`` values
joint / gripper Float64MultiArray (``joints`` order), JointTrajectory (first point, by name),
command         control_msgs/GripperCommand (one joint; when the bag carries its definition)
twist command   geometry_msgs/TwistStamped     linear + angular
pose command    geometry_msgs/PoseStamped      position + 6-D rotation
=============== ============================== =============================================================
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from genil_ros.data.rotations import QUAT_NORM_TOLERANCE, normalize_quat, quat_to_rot6d
from genil_ros.errors import DataError
from genil_ros.schema import JOINT_OBS, ActionEntry, ObservationEntry

__all__ = ["EntryReader", "observation_reader", "command_reader", "JOINT_STATE", "IMAGE", "COMPRESSED",
           "TRAJECTORY", "MULTIARRAY", "POSE", "WRENCH", "TWIST", "GRIPPER_COMMAND", "HEADERLESS",
           "joint_state_vector"]

JOINT_STATE = "sensor_msgs/msg/JointState"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
MULTIARRAY = "std_msgs/msg/Float64MultiArray"
POSE = "geometry_msgs/msg/PoseStamped"
WRENCH = "geometry_msgs/msg/WrenchStamped"
TWIST = "geometry_msgs/msg/TwistStamped"
GRIPPER_COMMAND = "control_msgs/msg/GripperCommand"
HEADERLESS = (MULTIARRAY, GRIPPER_COMMAND)  # messages without a std_msgs/Header: timed by receive time

_JOINT_FIELD = {"joint_position": "position", "joint_velocity": "velocity", "joint_effort": "effort",
                "gripper": "position"}
_COMMAND_TYPES = {
    "joint_position": (MULTIARRAY, TRAJECTORY),
    "gripper": (MULTIARRAY, TRAJECTORY, GRIPPER_COMMAND),
    "twist": (TWIST,),
    "pose": (POSE,),
    "vector": (MULTIARRAY,),
}


def _stamp_s(msg) -> Optional[float]:
    h = getattr(msg, "header", None)
    if h is None:
        return None
    return h.stamp.sec + h.stamp.nanosec * 1e-9


class EntryReader:
    """Reads one entry's vector from one message. ``key`` is the store's name of the entry's array
    (``obs.<name>`` / ``act.<name>``), ``where`` its config key (``task.observations[i]``)."""

    msgtypes: tuple[str, ...] = ()

    def __init__(self, entry, kind: str, index: int, topic: str):
        self.entry = entry
        self.kind = kind  # "obs" | "act"
        self.key = f"{kind}.{entry.name}"
        self.where = f"task.{'observations' if kind == 'obs' else 'actions'}[{index}]"
        self.label = f"{'observation' if kind == 'obs' else 'action'} {entry.name!r}"
        self.topic = topic
        self.dim_names = list(entry.dim_names)

    def read(self, msg, msgtype: str) -> Optional[np.ndarray]:
        """The entry's values (dim,) float64 from one message; None to skip the message (a trajectory
        without points); DataError for a message that cannot be this entry."""
        raise NotImplementedError

    def describe(self, d: int) -> str:
        """Dimension ``d`` in words, for errors about non-finite values."""
        return f"{self.dim_names[d]} of {self.label}"

    def _error(self, msg, what: str, key: str = "") -> DataError:
        t = _stamp_s(msg)
        when = f"message at t = {t:.3f} s: " if t else ""
        return DataError(f"{when}{what} ({self.label}, {self.where}{key})")


class _ByName:
    """Picks named values out of a (names, values) message field; caches the order while names repeat."""

    def __init__(self, wanted: Sequence[str]):
        self.wanted = list(wanted)
        self._names: Optional[tuple] = None
        self._idx: Optional[np.ndarray] = None

    def __call__(self, names, values, what: str, field: str = "") -> np.ndarray:
        names = tuple(names)
        if len(values) != len(names):
            raise DataError(f"{what} has {len(names)} names but {len(values)} {field + ' ' if field else ''}values")
        if names != self._names:
            index = {n: i for i, n in enumerate(names)}
            missing = [j for j in self.wanted if j not in index]
            if missing:
                raise DataError(f"{what} is missing joint(s) {missing} (it has {list(names)})")
            self._names, self._idx = names, np.array([index[j] for j in self.wanted], dtype=np.int64)
        return np.asarray(values, dtype=np.float64)[self._idx]


class JointStateReader(EntryReader):
    """position / velocity / effort of named joints from sensor_msgs/JointState."""

    msgtypes = (JOINT_STATE,)

    def __init__(self, entry: ObservationEntry, index: int):
        super().__init__(entry, "obs", index, entry.resolved_topic)
        self.field = _JOINT_FIELD[entry.type]
        self._pick = _ByName(entry.joints)

    def read(self, msg, msgtype):
        values = getattr(msg, self.field)
        if len(values) == 0 and len(msg.name):
            raise self._error(msg, f"JointState has no {self.field} values but {self.label} ({self.entry.type}) "
                                   "needs them")
        try:
            return self._pick(msg.name, values, "JointState", self.field)
        except DataError as e:
            raise DataError(f"{e} ({self.label}, {self.where})") from None

    def describe(self, d):
        return f"{self.field} of joint {self.dim_names[d]}"


class _FramedReader(EntryReader):
    def _frame(self, msg) -> None:
        want = self.entry.frame_id
        if want and msg.header.frame_id != want:
            raise self._error(msg, f"frame_id is {msg.header.frame_id!r}, the config says {want!r}", ".frame_id")


def _pose_vector(reader: EntryReader, msg) -> np.ndarray:
    p, o = msg.pose.position, msg.pose.orientation
    q = np.array([o.x, o.y, o.z, o.w], dtype=np.float64)
    out = np.empty(9)
    out[:3] = (p.x, p.y, p.z)
    if not np.all(np.isfinite(q)):
        out[3:] = np.nan  # a non-finite orientation: dataset.nonfinite decides
        return out
    unit, ok = normalize_quat(q)
    if not ok:
        raise reader._error(msg, f"orientation (x, y, z, w) = ({o.x:g}, {o.y:g}, {o.z:g}, {o.w:g}) is not a unit "
                                 f"quaternion (norm {np.linalg.norm(q):.4f}, more than {QUAT_NORM_TOLERANCE:g} "
                                 "from 1)")
    out[3:] = quat_to_rot6d(unit)
    return out


class PoseReader(_FramedReader):
    """geometry_msgs/PoseStamped -> position + 6-D rotation; a near-unit quaternion is normalised."""

    msgtypes = (POSE,)

    def __init__(self, entry, kind: str, index: int):
        super().__init__(entry, kind, index, entry.topic)

    def read(self, msg, msgtype):
        self._frame(msg)
        return _pose_vector(self, msg)


class WrenchReader(_FramedReader):
    msgtypes = (WRENCH,)

    def __init__(self, entry: ObservationEntry, index: int):
        super().__init__(entry, "obs", index, entry.topic)

    def read(self, msg, msgtype):
        self._frame(msg)
        f, t = msg.wrench.force, msg.wrench.torque
        return np.array([f.x, f.y, f.z, t.x, t.y, t.z], dtype=np.float64)


class TwistReader(_FramedReader):
    msgtypes = (TWIST,)

    def __init__(self, entry: ActionEntry, index: int):
        super().__init__(entry, "act", index, entry.topic)

    def read(self, msg, msgtype):
        self._frame(msg)
        v, w = msg.twist.linear, msg.twist.angular
        return np.array([v.x, v.y, v.z, w.x, w.y, w.z], dtype=np.float64)


class VectorReader(EntryReader):
    """std_msgs/Float64MultiArray with exactly ``len(dims)`` values (a vector entry)."""

    msgtypes = (MULTIARRAY,)

    def __init__(self, entry, kind: str, index: int):
        super().__init__(entry, kind, index, entry.topic)

    def read(self, msg, msgtype):
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape != (len(self.dim_names),):
            raise self._error(msg, f"Float64MultiArray has {data.size} values, expected {len(self.dim_names)} "
                                   f"(dims {self.dim_names})", ".dims")
        return data


class JointCommandReader(EntryReader):
    """Joint or gripper targets: Float64MultiArray in ``joints`` order, JointTrajectory's first point by
    joint name (messages without points are skipped), or control_msgs/GripperCommand (one joint)."""

    def __init__(self, entry: ActionEntry, index: int):
        super().__init__(entry, "act", index, entry.topic)
        self.msgtypes = _COMMAND_TYPES[entry.type]
        self._pick = _ByName(entry.joints)
        self.skipped = 0

    def read(self, msg, msgtype):
        joints = self.entry.joints
        if msgtype == MULTIARRAY:
            data = np.asarray(msg.data, dtype=np.float64)
            if data.shape != (len(joints),):
                raise self._error(msg, f"Float64MultiArray has {data.size} values, expected {len(joints)} "
                                       f"(joints {joints})", ".joints")
            return data
        if msgtype == TRAJECTORY:
            if not msg.points:
                self.skipped += 1
                return None
            try:
                return self._pick(msg.joint_names, msg.points[0].positions, "JointTrajectory", "positions")
            except DataError as e:
                raise DataError(f"{e} ({self.label}, {self.where})") from None
        if len(joints) != 1:
            raise self._error(msg, f"GripperCommand carries one position, {self.label} has {len(joints)} joints")
        return np.array([msg.position], dtype=np.float64)

    def describe(self, d):
        return f"command for joint {self.dim_names[d]}"


def observation_reader(entry: ObservationEntry, index: int) -> EntryReader:
    """The reader of a low-dimensional observation entry (cameras are decoded by the builder itself)."""
    if entry.type in JOINT_OBS:
        return JointStateReader(entry, index)
    if entry.type == "pose":
        return PoseReader(entry, "obs", index)
    if entry.type == "wrench":
        return WrenchReader(entry, index)
    if entry.type == "vector":
        return VectorReader(entry, "obs", index)
    raise ValueError(f"no reader for observation type {entry.type!r}")


def command_reader(entry: ActionEntry, index: int) -> EntryReader:
    """The reader of an action entry's recorded commands (``source: command``)."""
    if entry.type in ("joint_position", "gripper"):
        return JointCommandReader(entry, index)
    if entry.type == "twist":
        return TwistReader(entry, index)
    if entry.type == "pose":
        return PoseReader(entry, "act", index)
    return VectorReader(entry, "act", index)


def joint_state_vector(entries: Sequence[ObservationEntry], name, position, velocity=(), effort=(),
                       where: str = "/joint_states") -> np.ndarray:
    """The concatenated low-dim state of ``entries`` (all of JointState types) from one JointState's fields,
    reordered by joint name; DataError naming ``where``, the joint, the missing field or a non-finite value."""
    fields = {"position": position, "velocity": velocity, "effort": effort}
    parts = []
    for e in entries:
        if e.type not in JOINT_OBS:
            raise DataError(f"{where}: observation {e.name!r} is a {e.type}, not read from a JointState")
        f = _JOINT_FIELD[e.type]
        values = fields[f]
        if len(values) == 0 and len(name):
            raise DataError(f"{where}: JointState has no {f} values but observation {e.name!r} needs them")
        try:
            v = _ByName(e.joints)(name, values, "JointState", f)
        except DataError as err:
            raise DataError(f"{where}: {err}") from None
        if not np.all(np.isfinite(v)):
            bad = [j for j, x in zip(e.joints, v) if not np.isfinite(x)]
            raise DataError(f"{where}: JointState has non-finite {f} values for joint(s) {bad}")
        parts.append(v)
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
