"""The task schema: what a robot observes and what it commands, as typed, named entries.

One description used by every stage (recorder, dataset builder, store, training, checkpoint, policy node,
trainer node, sim). A task lists ``observations`` and ``actions``; each entry names its ROS topic, its
message type, which fields it takes, and the names of its dimensions::

    task:
      observations:
        - {name: arm, type: joint_position, topic: /joint_states, joints: [j1, j2, j3, j4, j5, j6]}
        - {name: gripper, type: gripper, topic: /joint_states, joints: [finger_joint]}
        - {name: ee, type: pose, topic: /tcp_pose, frame_id: base}          # PoseStamped -> 9 dims
        - {name: ft, type: wrench, topic: /ft_sensor/wrench}                # WrenchStamped -> 6 dims
        - {name: object, type: vector, topic: /object/position, dims: [x, y, z]}   # Float64MultiArray
        - {name: front, type: camera, topic: /camera/image_raw, height: 96, width: 96}
      actions:
        - {name: arm, type: joint_position, joints: [j1, ..., j6], source: command,
           topic: /scaled_joint_trajectory_controller/joint_trajectory, msg: joint_trajectory}
        - {name: gripper, type: gripper, joints: [finger_joint], source: command,
           topic: /gripper_controller/commands, msg: float64_multi_array}

The low-dimensional observations are concatenated, in the order listed, into the policy's ``state``
vector; the actions, in the order listed, into its ``action`` vector (:func:`layout`). Each entry is
normalised on its own (``normalization``: ``minmax`` to [-1, 1], ``meanstd``, or ``none``; the default
depends on the type: ``none`` for a binary gripper, ``minmax`` otherwise).

Orientation is never fed as Euler angles or raw quaternions: a pose is ``[x, y, z]`` plus the 6-D rotation
representation (the first two columns of the rotation matrix, Zhou et al. 2019), continuous and unique;
a pose action is turned back into a unit quaternion by Gram-Schmidt (``genil_ros.data.rotations``).

Types (dimension names in brackets):

============== ================================ ======================================================
observation    message                          dimensions
============== ================================ ======================================================
joint_position sensor_msgs/JointState           one per joint in ``joints`` (reordered by name)
joint_velocity sensor_msgs/JointState           one per joint
joint_effort   sensor_msgs/JointState           one per joint
gripper        sensor_msgs/JointState           one per joint in ``joints`` (the finger joint(s))
pose           geometry_msgs/PoseStamped        [x, y, z, r11, r21, r31, r12, r22, r32]
wrench         geometry_msgs/WrenchStamped      [fx, fy, fz, tx, ty, tz]
vector         std_msgs/Float64MultiArray       ``dims`` (the message must have exactly that many)
camera         sensor_msgs/Image/CompressedImage an image (not part of ``state``)
============== ================================ ======================================================

============== ============================================== =========================================
action         ``msg``                                        dimensions
============== ============================================== =========================================
joint_position float64_multi_array | joint_trajectory         one per joint (``mode``: absolute | delta)
gripper        float64_multi_array | joint_trajectory |       one per joint; ``binary``: 0 = open,
               gripper_command (control_msgs, when importable) 1 = closed, sent as open/closed_position
twist          twist_stamped (MoveIt Servo)                   [vx, vy, vz, wx, wy, wz]
pose           pose_stamped                                   [x, y, z, r11, r21, r31, r12, r22, r32]
vector         float64_multi_array                            ``dims``
============== ============================================== =========================================

Where the action values of a recording come from (``source``): ``command``, the commands recorded on
the entry's ``topic`` (a teleop or the expert publishing to the controller; any of the type's message
kinds is read, ``msg`` only says what the node publishes); or ``next_observation``, the
next control tick's value of the observation named by ``observation`` (kinesthetic teaching; joint and
gripper actions). ``mode: delta`` (joint_position only) commands ``observation + action``; a dataset stores
the recorded command (or next value) minus the observation. A ``binary`` gripper's recorded values
(commands, or observed positions with next_observation) are stored as 1 where nearer ``closed_position``
than ``open_position`` (:meth:`ActionEntry.to_binary`), and sent as :meth:`ActionEntry.from_binary`.
Delta and binary change what the numbers mean, so the layout records them (``EntryLayout.mode``) and a
checkpoint or dataset with another mode does not match.

The older form, ``joint_names`` (+ ``joint_states_topic``, ``use_velocity``, ``cameras``) with
``dataset.action_source`` / ``dataset.action_topic``, stays valid and means exactly what it meant:
:func:`legacy_entries` expands it to observations ``joints`` (joint_position) [+ ``joint_velocities``]
+ the cameras, and one action ``joints`` (absolute joint_position), so ``state`` and ``action`` are the
same vectors as before.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Literal, Optional, Sequence

__all__ = [
    "OBSERVATION_TYPES", "ACTION_TYPES", "ObservationEntry", "ActionEntry", "EntryLayout", "Layout",
    "layout", "legacy_entries", "POSE_DIMS", "WRENCH_DIMS", "TWIST_DIMS", "SchemaError", "entries_to_dict",
    "entries_from_dict", "validate_entries", "recorded_topics",
]

ObservationType = Literal["joint_position", "joint_velocity", "joint_effort", "gripper", "pose", "wrench", "vector",
                          "camera"]
ActionType = Literal["joint_position", "gripper", "twist", "pose", "vector"]
OBSERVATION_TYPES = ObservationType.__args__  # type: ignore[attr-defined]
ACTION_TYPES = ActionType.__args__  # type: ignore[attr-defined]
JOINT_OBS = ("joint_position", "joint_velocity", "joint_effort", "gripper")

POSE_DIMS = ["x", "y", "z", "r11", "r21", "r31", "r12", "r22", "r32"]  # position + 6-D rotation (2 columns)
WRENCH_DIMS = ["fx", "fy", "fz", "tx", "ty", "tz"]
TWIST_DIMS = ["vx", "vy", "vz", "wx", "wy", "wz"]

# message type per observation type (ROS names), and the ``msg`` choices per action type
OBSERVATION_MSG = {
    "joint_position": "sensor_msgs/msg/JointState", "joint_velocity": "sensor_msgs/msg/JointState",
    "joint_effort": "sensor_msgs/msg/JointState", "gripper": "sensor_msgs/msg/JointState",
    "pose": "geometry_msgs/msg/PoseStamped", "wrench": "geometry_msgs/msg/WrenchStamped",
    "vector": "std_msgs/msg/Float64MultiArray", "camera": "sensor_msgs/msg/Image",
}
ACTION_MSGS = {
    "joint_position": ("float64_multi_array", "joint_trajectory"),
    "gripper": ("float64_multi_array", "joint_trajectory", "gripper_command"),
    "twist": ("twist_stamped",),
    "pose": ("pose_stamped",),
    "vector": ("float64_multi_array",),
}
MSG_TYPES = {
    "float64_multi_array": "std_msgs/msg/Float64MultiArray",
    "joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
    "gripper_command": "control_msgs/msg/GripperCommand",  # needs a ROS 2 install (no PyPI wheel)
    "twist_stamped": "geometry_msgs/msg/TwistStamped",
    "pose_stamped": "geometry_msgs/msg/PoseStamped",
}
NORMALIZATIONS = ("minmax", "meanstd", "none")


class SchemaError(ValueError):
    """A task entry that is inconsistent; ``key`` is the entry's dotted key relative to ``task``."""

    def __init__(self, key: str, msg: str):
        super().__init__(f"{key}: {msg}")
        self.key = key
        self.msg = msg


def _req(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise SchemaError(key, msg)


def _dups(items: Sequence[str]) -> list[str]:
    return sorted({x for x in items if list(items).count(x) > 1})


@dataclass
class ObservationEntry:
    """One named input of the policy (see the module docstring for the types)."""

    name: str  # identifier; the key of this entry in the store, the normaliser and the node's diagnostics
    type: ObservationType = "joint_position"
    topic: str = ""  # ROS topic; "" = /joint_states for the joint types, required for the others
    joints: list[str] = field(default_factory=list)  # joint types: joint names, in this order
    dims: list[str] = field(default_factory=list)  # vector: one name per element of the Float64MultiArray
    frame_id: str = ""  # pose / wrench: the header.frame_id messages must carry ("" = do not check)
    height: int = 96  # camera: the size the policy sees (images are resized to it)
    width: int = 96
    compressed: bool = False  # camera: sensor_msgs/CompressedImage (jpeg/png) instead of sensor_msgs/Image
    normalization: Optional[Literal["minmax", "meanstd", "none"]] = None  # None: the type's default

    @property
    def is_camera(self) -> bool:
        return self.type == "camera"

    @property
    def dim_names(self) -> list[str]:
        if self.type in JOINT_OBS:
            return list(self.joints)
        if self.type == "pose":
            return list(POSE_DIMS)
        if self.type == "wrench":
            return list(WRENCH_DIMS)
        if self.type == "vector":
            return list(self.dims)
        return []  # camera

    @property
    def dim(self) -> int:
        return len(self.dim_names)

    @property
    def msgtype(self) -> str:
        if self.type == "camera" and self.compressed:
            return "sensor_msgs/msg/CompressedImage"
        return OBSERVATION_MSG[self.type]

    @property
    def norm(self) -> str:
        return self.normalization or "minmax"

    def validate(self, key: str) -> None:
        _req(self.name.isidentifier(), key + ".name", f"{self.name!r} must be an identifier (letters, digits, _)")
        _req(self.name != "state", key + ".name", "'state' is reserved (the concatenated low-dim vector)")
        _req(self.type in OBSERVATION_TYPES, key + ".type",
             f"{self.type!r} is not one of {', '.join(OBSERVATION_TYPES)}")
        _req(self.topic == "" or self.topic.startswith("/") or self.topic[:1].isalpha(), key + ".topic",
             f"{self.topic!r} is not a topic name")
        if self.type in JOINT_OBS:
            _req(len(self.joints) > 0, key + ".joints", f"a {self.type} observation must list its joints")
            _req(not _dups(self.joints), key + ".joints", f"duplicate joint names {_dups(self.joints)}")
        else:
            _req(not self.joints, key + ".joints", f"only joint observations take joints (this is a {self.type})")
            _req(bool(self.topic), key + ".topic", f"a {self.type} observation needs its topic")
        if self.type == "vector":
            _req(len(self.dims) > 0, key + ".dims", "a vector observation must name its dimensions")
            _req(not _dups(self.dims), key + ".dims", f"duplicate dimension names {_dups(self.dims)}")
        else:
            _req(not self.dims, key + ".dims", f"only vector observations take dims (this is a {self.type})")
        _req(not self.frame_id or self.type in ("pose", "wrench"), key + ".frame_id",
             "only pose and wrench observations carry a frame_id")
        if self.type == "camera":
            _req(self.height > 0 and self.width > 0, key + ".height", "height and width must be > 0")
            _req(self.normalization is None, key + ".normalization", "cameras are not normalised per dimension")

    @property
    def resolved_topic(self) -> str:
        return self.topic or ("/joint_states" if self.type in JOINT_OBS else "")


@dataclass
class ActionEntry:
    """One named output of the policy, published on its own topic (see the module docstring)."""

    name: str  # identifier
    type: ActionType = "joint_position"
    topic: str = ""  # where the node publishes it (and, with source: command, where the recording has it)
    msg: str = ""  # message kind, one of ACTION_MSGS[type]; "" = the first (the type's default)
    joints: list[str] = field(default_factory=list)  # joint_position / gripper: joint names, in this order
    dims: list[str] = field(default_factory=list)  # vector: one name per element
    frame_id: str = ""  # twist / pose: header.frame_id of the published command (e.g. base_link)
    mode: Literal["absolute", "delta"] = "absolute"  # joint_position: delta = observation + action
    source: Literal["command", "next_observation"] = "command"  # where a recording's action values come from
    observation: str = ""  # next_observation / delta: the observation entry it refers to
    binary: bool = False  # gripper: 0 = open, 1 = closed (threshold 0.5), sent as open/closed_position
    open_position: float = 0.0  # gripper, binary: the command value that opens
    closed_position: float = 0.0  # gripper, binary: the command value that closes
    normalization: Optional[Literal["minmax", "meanstd", "none"]] = None  # None: none if binary, else minmax

    @property
    def dim_names(self) -> list[str]:
        if self.type in ("joint_position", "gripper"):
            return list(self.joints)
        if self.type == "twist":
            return list(TWIST_DIMS)
        if self.type == "pose":
            return list(POSE_DIMS)
        return list(self.dims)

    @property
    def dim(self) -> int:
        return len(self.dim_names)

    @property
    def msg_kind(self) -> str:
        return self.msg or ACTION_MSGS[self.type][0]

    @property
    def msgtype(self) -> str:
        return MSG_TYPES[self.msg_kind]

    @property
    def norm(self) -> str:
        return self.normalization or ("none" if self.binary else "minmax")

    def to_binary(self, values):
        """Recorded gripper values (commands, or observed positions for ``source: next_observation``) as the
        binary action: 1 (closed) where a value is nearer ``closed_position`` than ``open_position``, else 0."""
        import numpy as np

        v = np.asarray(values, dtype=np.float64)
        return (np.abs(v - self.closed_position) < np.abs(v - self.open_position)).astype(np.float32)

    def from_binary(self, values):
        """The binary action (any real number; threshold 0.5) as the command to send: closed / open position."""
        import numpy as np

        return np.where(np.asarray(values, dtype=np.float64) >= 0.5, self.closed_position, self.open_position)

    @property
    def value_mode(self) -> str:
        """What the numbers mean beyond the type (``EntryLayout.mode``): "delta", "binary" or "" (absolute)."""
        return "delta" if self.mode == "delta" else "binary" if self.binary else ""

    def validate(self, key: str, observations: Sequence[ObservationEntry]) -> None:
        _req(self.name.isidentifier(), key + ".name", f"{self.name!r} must be an identifier (letters, digits, _)")
        _req(self.type in ACTION_TYPES, key + ".type", f"{self.type!r} is not one of {', '.join(ACTION_TYPES)}")
        _req(self.msg == "" or self.msg in ACTION_MSGS[self.type], key + ".msg",
             f"{self.msg!r} is not a {self.type} command (one of {', '.join(ACTION_MSGS[self.type])})")
        _req(self.topic == "" or self.topic.startswith("/") or self.topic[:1].isalpha(), key + ".topic",
             f"{self.topic!r} is not a topic name")
        if self.type in ("joint_position", "gripper"):
            _req(len(self.joints) > 0, key + ".joints", f"a {self.type} action must list its joints")
            _req(not _dups(self.joints), key + ".joints", f"duplicate joint names {_dups(self.joints)}")
        else:
            _req(not self.joints, key + ".joints",
                 f"only joint and gripper actions take joints (this is a {self.type})")
        if self.type == "vector":
            _req(len(self.dims) > 0, key + ".dims", "a vector action must name its dimensions")
            _req(not _dups(self.dims), key + ".dims", f"duplicate dimension names {_dups(self.dims)}")
        else:
            _req(not self.dims, key + ".dims", f"only vector actions take dims (this is a {self.type})")
        _req(self.mode == "absolute" or self.type == "joint_position", key + ".mode",
             "delta commands are for joint_position actions")
        _req(not self.binary or self.type == "gripper", key + ".binary", "only a gripper action can be binary")
        if self.binary:
            _req(self.open_position != self.closed_position, key + ".closed_position",
                 "a binary gripper needs different open_position and closed_position")
        by_name = {o.name: o for o in observations}
        if self.source == "command":
            _req(bool(self.topic), key + ".topic", "source: command needs the command topic (recorded and published)")
        else:
            _req(self.type in ("joint_position", "gripper"), key + ".source",
                 f"next_observation works for joint and gripper actions, not {self.type}")
        if self.source == "next_observation" or self.mode == "delta":
            _req(bool(self.observation), key + ".observation",
                 "name the observation entry this action follows (source: next_observation or mode: delta)")
        if self.observation:
            obs = by_name.get(self.observation)
            _req(obs is not None, key + ".observation",
                 f"{self.observation!r} is not an observation (have {', '.join(by_name) or 'none'})")
            _req(obs.type in ("joint_position", "gripper"), key + ".observation",
                 f"{self.observation!r} is a {obs.type} observation, expected joint_position or gripper")
            missing = [j for j in self.joints if j not in obs.joints]
            _req(not missing, key + ".joints", f"joint(s) {missing} are not in observation {self.observation!r}")


@dataclass(frozen=True)
class EntryLayout:
    """Where an entry sits in the concatenated ``state`` or ``action`` vector.

    ``mode`` is what the numbers of an action mean beyond its type: ``"delta"`` (a joint_position action
    added to the observation), ``"binary"`` (a gripper action: 0 = open, 1 = closed), ``""`` otherwise
    (absolute values). Two layouts that differ only in it hold different numbers, so it is compared too."""

    name: str
    type: str
    start: int
    stop: int
    dim_names: tuple[str, ...]
    normalization: str
    mode: str = ""

    @property
    def slice(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def dim(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Layout:
    """The state and action layouts of a task, in the fixed, recorded order of its entries."""

    state: tuple[EntryLayout, ...]
    action: tuple[EntryLayout, ...]
    cameras: tuple[str, ...]

    @property
    def state_dim(self) -> int:
        return self.state[-1].stop if self.state else 0

    @property
    def action_dim(self) -> int:
        return self.action[-1].stop if self.action else 0

    def state_entry(self, name: str) -> EntryLayout:
        return _find(self.state, name, "observation")

    def action_entry(self, name: str) -> EntryLayout:
        return _find(self.action, name, "action")

    def to_dict(self) -> dict:
        def rows(es):
            return [{"name": e.name, "type": e.type, "start": e.start, "stop": e.stop, "dims": list(e.dim_names),
                     "normalization": e.normalization, "mode": e.mode} for e in es]

        return {"state": rows(self.state), "action": rows(self.action), "cameras": list(self.cameras)}

    @classmethod
    def from_dict(cls, d: dict) -> "Layout":
        """The inverse of :meth:`to_dict` (``mode`` defaults to "" for layouts written before it existed)."""
        def rows(rs):
            return tuple(EntryLayout(str(r["name"]), str(r["type"]), int(r["start"]), int(r["stop"]),
                                     tuple(str(x) for x in r["dims"]), str(r["normalization"]), str(r.get("mode", "")))
                         for r in rs)

        return cls(rows(d["state"]), rows(d["action"]), tuple(str(c) for c in d.get("cameras", [])))

    def first_difference(self, other: "Layout", normalization: bool = True) -> Optional[str]:
        """None when ``other`` has the same layout, else a sentence naming the first mismatching key.
        ``normalization=False`` compares what the numbers are, not how a policy scales them (a dataset)."""
        keys = ("name", "type", "dimensions", "mode") + (("normalization",) if normalization else ())
        for kind in ("state", "action"):
            mine, theirs = getattr(self, kind), getattr(other, kind)
            for i in range(max(len(mine), len(theirs))):
                a = mine[i] if i < len(mine) else None
                b = theirs[i] if i < len(theirs) else None
                if a is None or b is None:
                    e = a or b
                    return f"{kind} entry {e.name!r} is only in one of them"
                what = next((k for k in keys if _show(a, k) != _show(b, k)), None)
                if what is not None:
                    return f"{kind} entry {i} ({a.name!r}): {what} differ ({_show(a, what)} vs {_show(b, what)})"
        if self.cameras != other.cameras:
            return f"cameras differ ({list(self.cameras)} vs {list(other.cameras)})"
        return None


def _show(e: EntryLayout, what: str):
    return {"name": e.name, "type": e.type, "dimensions": list(e.dim_names), "normalization": e.normalization,
            "mode": e.mode or "absolute"}[what]


def _find(entries, name: str, kind: str) -> EntryLayout:
    for e in entries:
        if e.name == name:
            return e
    raise KeyError(f"no {kind} entry {name!r} (have {', '.join(e.name for e in entries)})")


def layout(observations: Sequence[ObservationEntry], actions: Sequence[ActionEntry]) -> Layout:
    """The concatenation order of the low-dim observations (``state``) and the actions (``action``)."""
    state, start = [], 0
    for o in observations:
        if o.is_camera:
            continue
        state.append(EntryLayout(o.name, o.type, start, start + o.dim, tuple(o.dim_names), o.norm))
        start += o.dim
    act, start = [], 0
    for a in actions:
        act.append(EntryLayout(a.name, a.type, start, start + a.dim, tuple(a.dim_names), a.norm, a.value_mode))
        start += a.dim
    return Layout(tuple(state), tuple(act), tuple(o.name for o in observations if o.is_camera))


def validate_entries(observations: Sequence[ObservationEntry], actions: Sequence[ActionEntry]) -> None:
    """Checks of each entry and across entries; SchemaError with the key relative to ``task``."""
    _req(len(observations) > 0, "observations", "list at least one observation")
    _req(len(actions) > 0, "actions", "list at least one action")
    for i, o in enumerate(observations):
        o.validate(f"observations[{i}]")
    for i, a in enumerate(actions):
        a.validate(f"actions[{i}]", observations)
    names = [o.name for o in observations]
    _req(not _dups(names), "observations", f"duplicate names {_dups(names)}")
    anames = [a.name for a in actions]
    _req(not _dups(anames), "actions", f"duplicate names {_dups(anames)}")
    _req(any(not o.is_camera for o in observations), "observations",
         "at least one low-dimensional observation is needed (joint positions, a pose, a vector...)")


def legacy_entries(joint_names: Sequence[str], joint_states_topic: str, use_velocity: bool, cameras: Sequence,
                   action_source: str, action_topic: Optional[str]) -> tuple[list[ObservationEntry], list[ActionEntry]]:
    """The entries the ``joint_names`` form means: state = joint positions (+ velocities), action = absolute
    joint position targets in ``joint_names`` order, from the command topic or the next joint state."""
    obs = [ObservationEntry("joints", "joint_position", joint_states_topic, list(joint_names))]
    if use_velocity:
        obs.append(ObservationEntry("joint_velocities", "joint_velocity", joint_states_topic, list(joint_names)))
    for c in cameras:
        obs.append(ObservationEntry(c.name, "camera", c.topic, height=c.height, width=c.width,
                                    compressed=c.compressed))
    if action_source == "command":  # the recorded topic may carry JointTrajectory or Float64MultiArray
        act = ActionEntry("joints", "joint_position", action_topic or "", "", list(joint_names), source="command")
    else:
        act = ActionEntry("joints", "joint_position", "", "", list(joint_names), source="next_observation",
                          observation="joints")
    return obs, [act]


def entries_to_dict(observations: Sequence[ObservationEntry], actions: Sequence[ActionEntry]) -> dict:
    """The entries as plain data (for meta.json of datasets and checkpoints)."""
    return {"observations": [asdict(o) for o in observations], "actions": [asdict(a) for a in actions]}


def entries_from_dict(d: dict, where: str = "schema",
                      validate: bool = True) -> tuple[list[ObservationEntry], list[ActionEntry]]:
    """The inverse of :func:`entries_to_dict`; SchemaError with ``where`` in the key. ``validate=False``
    for a dataset's record, whose entries may lack what only recording and publishing need (topics)."""
    out = []
    for kind, cls in (("observations", ObservationEntry), ("actions", ActionEntry)):
        rows = d.get(kind)
        _req(isinstance(rows, list), f"{where}.{kind}", "missing or not a list")
        known = {f.name for f in fields(cls)}
        entries = []
        for i, r in enumerate(rows):
            _req(isinstance(r, dict), f"{where}.{kind}[{i}]", "not a mapping")
            bad = sorted(set(r) - known)
            _req(not bad, f"{where}.{kind}[{i}]", f"unknown key(s) {bad}")
            entries.append(cls(**r))
        out.append(entries)
    obs, act = out
    if not validate:
        return obs, act
    try:
        validate_entries(obs, act)
    except SchemaError as e:
        raise SchemaError(f"{where}.{e.key}", e.msg) from None
    return obs, act


def recorded_topics(observations: Sequence[ObservationEntry], actions: Sequence[ActionEntry]) -> dict:
    """``{topic: (message types it may carry, ...)}`` a recording of the task needs, in entry order: every
    observation's topic and the command topic of every action with ``source: command`` (any of the type's
    message kinds is read back; ``msg`` only says what the node publishes)."""
    out: dict[str, tuple[str, ...]] = {}
    for o in observations:
        types = (o.msgtype,)
        out[o.resolved_topic] = tuple(dict.fromkeys(out.get(o.resolved_topic, ()) + types))
    for a in actions:
        if a.source == "command":
            types = tuple(MSG_TYPES[m] for m in ACTION_MSGS[a.type])
            out[a.topic] = tuple(dict.fromkeys(out.get(a.topic, ()) + types))
    return out
