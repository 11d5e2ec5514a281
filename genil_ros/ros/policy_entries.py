"""Per-entry parameters of ``policy_node``, and how its inputs and outputs are resolved (no rclpy here).

The node subscribes to every observation entry of the checkpoint's task and publishes every action entry
on its own topic (``genil_ros/schema.py``). Each entry can be tuned by parameters named after it, as
ros2_control controllers name per-joint parameters; in a params file they nest::

    /**/policy_node:
      ros__parameters:
        observations:
          ee: {topic: /tcp_pose, frame_id: base}
        actions:
          arm: {topic: /scaled_joint_trajectory_controller/joint_trajectory, msg: joint_trajectory,
                lower_limits: [...], upper_limits: [...], max_step: 0.05}
          gripper: {topic: /gripper_position_controller/commands, max_rate: 2.0}

and on a command line ``-p actions.gripper.max_rate:=2.0``. The node declares them at configure, once
it knows the entries (``ros2 param list`` shows them, with the values in force); they are read at
configure. A name that is not an entry of the checkpoint, or a key its type does not take, is an error
naming the parameter - a misspelt safety limit must never be silently ignored.

Where each value comes from (highest first): the per-entry parameter; the older flat parameters
(``joint_states_topic``, ``camera_topics``, ``camera_compressed``; for the task's only joint_position
action: ``output_mode`` with ``trajectory_topic`` / ``position_topic`` - always for a task written in the
``joint_names`` form, for a typed task only when ``output_mode`` is set - and ``joint_lower_limits``,
``joint_upper_limits``; for every joint_position action: ``max_step_rad``); the ``config`` file's task;
the checkpoint's task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from genil_ros.errors import GenilError
from genil_ros.ros.params import Param, convert_value
from genil_ros.schema import ACTION_MSGS, JOINT_OBS

__all__ = ["ENTRY_KEYS", "InputSpec", "OutputSpec", "IOPlan", "resolve_io", "check_entry_parameter",
           "is_entry_parameter"]

_ALL_OBS = ("joint_position", "joint_velocity", "joint_effort", "gripper", "pose", "wrench", "vector", "camera")
_ALL_ACT = ("joint_position", "gripper", "twist", "pose", "vector")
_FLOATS = Optional[list[float]]

# group -> key -> (type, description, entry types that take it)
ENTRY_KEYS: dict[str, dict[str, tuple[Any, str, tuple[str, ...]]]] = {
    "observations": {
        "topic": (str, "topic of this observation (default: the task's)", _ALL_OBS),
        "frame_id": (str, "header.frame_id every message must carry ('' = not checked)", ("pose", "wrench")),
        "compressed": (bool, "sensor_msgs/CompressedImage instead of Image", ("camera",)),
    },
    "actions": {
        "topic": (str, "topic this command is published on (default: the task's)", _ALL_ACT),
        "msg": (str, "message kind (default: the task's msg)", _ALL_ACT),
        "frame_id": (str, "header.frame_id of the command (e.g. base_link)", ("twist", "pose")),
        "lower_limits": (_FLOATS, "per-dimension lower limits (unset: none)", ("joint_position", "gripper", "vector")),
        "upper_limits": (_FLOATS, "per-dimension upper limits (unset: none)", ("joint_position", "gripper", "vector")),
        "max_step": (float, "max change per control tick (<= 0: none)", ("joint_position", "vector")),
        "max_rate": (float, "max change per second (<= 0: none)", ("gripper",)),
        "open_position": (float, "binary gripper: the command value that opens", ("gripper",)),
        "closed_position": (float, "binary gripper: the command value that closes", ("gripper",)),
        "max_effort": (float, "gripper_command: max_effort sent with every command", ("gripper",)),
        "max_linear_speed": (float, "m/s (<= 0: none)", ("twist", "pose")),
        "max_angular_speed": (float, "rad/s (<= 0: none)", ("twist", "pose")),
        "workspace_min": (_FLOATS, "[x, y, z] corner of the allowed box, in frame_id (unset: none)", ("twist", "pose")),
        "workspace_max": (_FLOATS, "[x, y, z] corner of the allowed box (unset: none)", ("twist", "pose")),
        "pose_observation": (str, "the pose observation giving the measured end effector ('' = the task's only "
                                  "pose observation)", ("twist", "pose")),
    },
}


def _param(name: str, group: str, key: str, default: Any) -> Param:
    tp, desc, _ = ENTRY_KEYS[group][key]
    optional = tp is _FLOATS
    return Param(name, default, list[float] if optional else tp, optional, desc)


def is_entry_parameter(name: str) -> bool:
    parts = name.split(".")
    return len(parts) == 3 and parts[0] in ENTRY_KEYS


def check_entry_parameter(name: str, value: Any) -> None:
    """GenilError unless ``name`` is ``observations|actions.<entry>.<key>`` with a known key and ``value``
    of its type (what can be checked without the checkpoint: the CLI and the params-file tests)."""
    group, entry, key = name.split(".")
    if not entry.isidentifier():
        raise GenilError(f"parameter {name}: {entry!r} is not an entry name")
    if key not in ENTRY_KEYS[group]:
        raise GenilError(f"parameter {name}: unknown key {key!r} (keys of {group}: {', '.join(ENTRY_KEYS[group])})")
    convert_value(_param(name, group, key, None), value)


@dataclass
class InputSpec:
    """One observation entry as the node subscribes to it."""

    entry: Any  # genil_ros.schema.ObservationEntry
    topic: str
    frame_id: str = ""
    compressed: bool = False
    state_slice: Optional[slice] = None  # None for a camera

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def msgtype(self) -> str:
        if self.entry.is_camera:
            return "sensor_msgs/msg/CompressedImage" if self.compressed else "sensor_msgs/msg/Image"
        return self.entry.msgtype


@dataclass
class OutputSpec:
    """One action entry as the node publishes it, with its limits."""

    entry: Any  # genil_ros.schema.ActionEntry
    action_slice: slice
    topic: str
    msg: str  # one of schema.ACTION_MSGS[entry.type]
    values: dict = field(default_factory=dict)  # key -> value (every ENTRY_KEYS["actions"] key this type takes)
    measured: Optional[np.ndarray] = None  # indices into `state` of what the entry acts on, or None
    key: str = ""  # the parameter prefix for errors: "actions.<name>." or the legacy names' ""

    @property
    def name(self) -> str:
        return self.entry.name


@dataclass
class IOPlan:
    rate_hz: float
    inputs: list[InputSpec]
    outputs: list[OutputSpec]
    parameters: dict[str, Any]  # every per-entry parameter with the value in force (declared by the node)
    notes: list[str] = field(default_factory=list)  # warnings for the log


def _config_task(s, spec):
    """The ``config`` file's task (checked against the checkpoint's), or None."""
    if not s.config:
        return None
    from genil_ros.config import load_config
    from genil_ros.paths import config_path

    task = load_config(config_path(s.config)).task
    why = spec.layout.first_difference(task.layout)
    if why:
        raise GenilError(f"parameter config: {s.config}: its task does not match the checkpoint's: {why}")
    return task


def _defaults(s, spec, task, notes: list) -> dict[str, Any]:
    """Every per-entry parameter of the checkpoint's entries with its value before per-entry parameters."""
    obs = {o.name: o for o in (task.observations if task else spec.observations)}
    acts = {a.name: a for a in (task.actions if task else spec.actions)}
    js_topic = task.joint_states_topic if task else spec.joint_states_topic
    out: dict[str, Any] = {}
    n_cam = len(spec.cameras)
    for key, lst in (("camera_topics", s.camera_topics), ("camera_compressed", s.camera_compressed)):
        if lst is not None and len(lst) not in (0, n_cam):
            raise GenilError(f"parameter {key}: {len(lst)} values but the checkpoint has {n_cam} camera(s) "
                             f"{[c.name for c in spec.cameras]}")
    cam_i = 0
    for o in spec.observations:
        src = obs[o.name]
        topic = src.resolved_topic
        if o.type in JOINT_OBS and s.joint_states_topic and topic == js_topic:
            topic = s.joint_states_topic
        p = f"observations.{o.name}."
        if o.is_camera:
            compressed = src.compressed
            if s.camera_topics:
                topic = s.camera_topics[cam_i]
            if s.camera_compressed:
                compressed = s.camera_compressed[cam_i]
            cam_i += 1
            out[p + "compressed"] = bool(compressed)
        if o.type in ("pose", "wrench"):
            out[p + "frame_id"] = src.frame_id
        out[p + "topic"] = topic
    joint_actions = [a for a in spec.actions if a.type == "joint_position"]
    limits = [k for k in ("joint_lower_limits", "joint_upper_limits") if getattr(s, k)]
    if limits and len(joint_actions) != 1:  # never ignore a limit silently
        raise GenilError(f"parameter {limits[0]}: applies to the task's only joint_position action, but it has "
                         f"{len(joint_actions)} ({', '.join(a.name for a in joint_actions) or 'none'}): set "
                         f"actions.<entry>.lower_limits / upper_limits")
    if s.output_mode and len(joint_actions) != 1:  # a routing choice (launch files set it): said, not refused
        notes.append(f"output_mode {s.output_mode}: not used, the task has {len(joint_actions)} joint_position "
                     f"actions (set actions.<entry>.msg / topic)")
    for a in spec.actions:
        src = acts[a.name]
        p = f"actions.{a.name}."
        if a.type == "joint_position" and len(joint_actions) == 1 and (spec.legacy or s.output_mode):
            position = s.output_mode == "position"  # the joint_names form's default: trajectory
            msg = "float64_multi_array" if position else "joint_trajectory"
            topic = s.position_topic if position else s.trajectory_topic
        else:
            msg, topic = src.msg_kind, src.topic
        out[p + "topic"], out[p + "msg"] = topic, msg
        if a.type == "joint_position":
            only = len(joint_actions) == 1
            out[p + "lower_limits"] = s.joint_lower_limits if only else None
            out[p + "upper_limits"] = s.joint_upper_limits if only else None
            out[p + "max_step"] = s.max_step_rad
        elif a.type == "gripper":
            out.update({p + "lower_limits": None, p + "upper_limits": None, p + "max_rate": 0.0,
                        p + "open_position": src.open_position, p + "closed_position": src.closed_position,
                        p + "max_effort": 0.0})
        elif a.type in ("twist", "pose"):
            out.update({p + "frame_id": src.frame_id, p + "max_linear_speed": 0.0, p + "max_angular_speed": 0.0,
                        p + "workspace_min": None, p + "workspace_max": None, p + "pose_observation": ""})
        else:
            out.update({p + "lower_limits": None, p + "upper_limits": None, p + "max_step": 0.0})
    return out


def _check_given(given: dict[str, Any], defaults: dict[str, Any], spec) -> None:
    for name in sorted(given):
        if name in defaults:
            continue
        group, entry, key = name.split(".")
        entries = spec.observations if group == "observations" else spec.actions
        by_name = {e.name: e for e in entries}
        if entry not in by_name:
            raise GenilError(f"parameter {name}: the checkpoint has no {group[:-1]} entry {entry!r} "
                             f"(it has {', '.join(by_name)})")
        takes = sorted(k[len(f'{group}.{entry}.'):] for k in defaults if k.startswith(f"{group}.{entry}."))
        raise GenilError(f"parameter {name}: a {by_name[entry].type} {group[:-1]} does not take {key!r} "
                         f"(it takes {', '.join(takes)})")


def _measured(spec, a, values: dict, notes: list) -> Optional[np.ndarray]:
    """Indices into ``state`` of the value action ``a`` acts on, or None."""
    lay = spec.layout
    obs = {o.name: o for o in spec.observations if not o.is_camera}
    if a.type == "joint_position":
        cands = [obs[a.observation]] if a.observation else [
            o for o in obs.values() if o.type == "joint_position" and set(a.joints) <= set(o.joints)]
        if not cands:
            notes.append(f"action {a.name!r}: no observation of its joints: its first command after activation "
                         f"is not step-limited against the measured position")
            return None
        o = cands[0]
        start = lay.state_entry(o.name).start
        return np.array([start + o.joints.index(j) for j in a.joints])
    if a.type in ("twist", "pose"):
        p = f"actions.{a.name}."
        box = bool(values[p + "workspace_min"] or values[p + "workspace_max"])
        # the measured pose is used by a twist's workspace check, and by a pose target's first step
        speeds = values[p + "max_linear_speed"] > 0 or values[p + "max_angular_speed"] > 0
        if not (box if a.type == "twist" else speeds):
            return None
        name = values[p + "pose_observation"]
        poses = [o for o in obs.values() if o.type == "pose"]
        if name:
            if name not in obs or obs[name].type != "pose":
                raise GenilError(f"parameter {p}pose_observation: {name!r} is not a pose observation (pose "
                                 f"observations: {[o.name for o in poses]})")
            o = obs[name]
        elif len(poses) == 1:
            o = poses[0]
        elif box:
            raise GenilError(f"parameter {p}workspace_min: a workspace needs the measured end effector: set "
                             f"{p}pose_observation (pose observations: {[o.name for o in poses] or 'none'})")
        else:
            notes.append(f"action {a.name!r}: no pose observation: its first target after activation is not "
                         f"speed-limited against the measured pose")
            return None
        frame = values[p + "frame_id"]
        measured_frame = values.get(f"observations.{o.name}.frame_id", "")
        if frame and measured_frame and frame != measured_frame:
            raise GenilError(f"parameter {p}{'workspace_min' if box else 'max_linear_speed'}: compares the command "
                             f"(frame {frame!r}) with the measured pose {o.name!r} (frame {measured_frame!r}); "
                             f"without TF the node cannot: measure the pose in the command's frame "
                             f"({p}pose_observation) or leave this limit unset")
        sl = lay.state_entry(o.name).slice
        return np.arange(sl.start, sl.stop)
    return None


def resolve_io(s, spec, given: Optional[dict[str, Any]] = None) -> IOPlan:
    """The node's inputs and outputs for settings ``s`` (PolicySettings) and the model ``spec`` (ModelSpec),
    with the per-entry parameters ``given`` by the user ({full name: raw value}). GenilError naming the
    parameter when something does not fit."""
    given = dict(given or {})
    task = _config_task(s, spec)
    notes: list[str] = []
    defaults = _defaults(s, spec, task, notes)
    _check_given(given, defaults, spec)
    values: dict[str, Any] = {}
    for name, default in defaults.items():
        group, _, key = name.split(".")
        values[name] = convert_value(_param(name, group, key, default), given.get(name, default))
    lay = spec.layout
    inputs = []
    for o in spec.observations:
        p = f"observations.{o.name}."
        topic = values[p + "topic"]
        if not topic:
            raise GenilError(f"parameter {p}topic: not set (the task gives no topic for {o.name!r})")
        inputs.append(InputSpec(o, topic, values.get(p + "frame_id", ""), values.get(p + "compressed", False),
                                None if o.is_camera else lay.state_entry(o.name).slice))
    outputs = []
    for a in spec.actions:
        p = f"actions.{a.name}."
        mine = {k[len(p):]: v for k, v in values.items() if k.startswith(p)}
        if not mine["topic"]:
            raise GenilError(f"parameter {p}topic: not set (the task's action {a.name!r} has no topic)")
        if mine["msg"] not in ACTION_MSGS[a.type]:
            raise GenilError(f"parameter {p}msg: {mine['msg']!r} is not a {a.type} command "
                             f"(one of {', '.join(ACTION_MSGS[a.type])})")
        # limits taken from joint_lower_limits / joint_upper_limits are named so in errors
        flat = a.type == "joint_position" and not {p + "lower_limits", p + "upper_limits"} & set(given) and (
            defaults[p + "lower_limits"] is not None or defaults[p + "upper_limits"] is not None)
        outputs.append(OutputSpec(a, lay.action_entry(a.name).slice, mine["topic"], mine["msg"], mine,
                                  _measured(spec, a, values, notes), "joint_" if flat else p))
    rate = s.control_rate_hz or (task.control_rate_hz if task else spec.control_rate_hz)
    return IOPlan(rate, inputs, outputs, values, notes)
