"""The bundled sim's tasks as the task schema sees them, without ROS.

``make_env(variant, ...)`` builds the environment of a sim variant (``obstacle`` / ``reach``: ``ArmEnv``;
``pick_place``: ``PickPlaceEnv``). :class:`SimBinding` maps a task's typed observation and action entries
(``genil_ros/schema.py``) onto such an environment exactly the way ``sim_node`` exposes it over ROS 2:

- joint entries (``joint_position`` / ``joint_velocity`` / ``joint_effort`` / ``gripper``) read the joints by
  name from ``env.joint_state()``, which is what the sim node publishes on ``/joint_states`` (the four arm
  joints, plus ``gripper_finger_joint`` in ``pick_place``);
- a ``vector`` entry on ``OBJECT_TOPIC`` (3 dims) is the object's position, which the sim node publishes
  as ``std_msgs/Float64MultiArray`` (``pick_place`` only);
- one ``camera`` entry is the ``front`` camera at the entry's size;
- the action entries (``joint_position``, absolute or delta, and ``gripper``, position or binary) must
  together command every joint the sim takes commands for, each exactly once.

So ``genil-ros eval`` (direct) and a policy driving ``sim_node`` over ROS see the same observations and
send the same commands. Anything the sim does not have (a pose, a wrench, a second camera, a Cartesian
command) is a :class:`GenilError` naming the entry.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from genil_ros.errors import GenilError

__all__ = ["VARIANTS", "OBJECT_TOPIC", "make_env", "variant_for_task", "SimBinding"]

VARIANTS = ("obstacle", "reach", "pick_place")
OBJECT_TOPIC = "/object/position"  # where sim_node publishes the object position (pick_place)


def make_env(variant: str, image_size=(96, 96), render: bool = True, seed: Optional[int] = None,
             control_rate_hz: float = 10.0, max_episode_steps: Optional[int] = None):
    """The environment of a sim variant (``max_episode_steps`` None = the task's own limit)."""
    if variant not in VARIANTS:
        raise GenilError(f"sim variant {variant!r} is not one of {', '.join(VARIANTS)}")
    kw = {"image_size": image_size, "render": render, "seed": seed, "control_rate_hz": control_rate_hz}
    if max_episode_steps is not None:
        kw["max_episode_steps"] = int(max_episode_steps)
    if variant == "pick_place":
        from genil_ros.sim.pick_place import PickPlaceEnv

        return PickPlaceEnv(**kw)
    from genil_ros.sim.env import ArmEnv

    return ArmEnv(variant=variant, **kw)


def variant_for_task(task) -> str:
    """``pick_place`` for a task that observes or commands the gripper joint, else ``obstacle``."""
    from genil_ros.sim.pick_place import GRIPPER_JOINT

    joints = [j for e in list(task.observations) + list(task.actions) for j in e.joints]
    return "pick_place" if GRIPPER_JOINT in joints else "obstacle"


class SimBinding:
    """A task's entries bound to a sim environment: ``observe(env, obs)`` -> the policy's per-tick inputs,
    ``command(row, env)`` -> the environment's action. ``task`` is a validated ``TaskConfig``."""

    def __init__(self, task, env):
        self.task = task
        self.layout = task.layout
        names, _, _, _ = env.joint_state()
        self.env_joints = list(names)
        self.variant = env.variant
        self.cameras = [o for o in task.observations if o.is_camera]
        if len(self.cameras) > 1:
            raise GenilError(f"task: the bundled sim has one camera ('front'), the task wants {len(self.cameras)} "
                             f"({', '.join(c.name for c in self.cameras)})")
        for cam in self.cameras:
            if tuple(env.image_size) != (cam.height, cam.width) and env.render_enabled:
                raise GenilError(f"task observation {cam.name!r}: the sim renders {tuple(env.image_size)}, the "
                                 f"entry wants ({cam.height}, {cam.width})")
        self._readers = [self._reader(o) for o in task.observations if not o.is_camera]
        self._writers = [self._writer(a) for a in task.actions]
        covered = [j for _, idx, _ in self._writers for j in (self.env_joints[i] for i in idx)]
        twice = sorted({j for j in covered if covered.count(j) > 1})
        missing = [j for j in self.env_joints if j not in covered]
        if twice or missing:
            raise GenilError(f"task.actions: the {self.variant} sim takes one command for each of "
                             f"{self.env_joints}; " + (f"{twice} commanded twice" if twice else
                                                       f"{missing} not commanded"))

    # ------------------------------------------------------------------ observations

    def _joint_index(self, entry, kind: str) -> np.ndarray:
        unknown = [j for j in entry.joints if j not in self.env_joints]
        if unknown:
            raise GenilError(f"task {kind} {entry.name!r}: joint(s) {unknown} are not in the {self.variant} sim "
                             f"(it has {self.env_joints})")
        return np.array([self.env_joints.index(j) for j in entry.joints])

    def _reader(self, o):
        if o.type in ("joint_position", "gripper", "joint_velocity", "joint_effort"):
            idx = self._joint_index(o, "observation")
            field = {"joint_velocity": 2, "joint_effort": 3}.get(o.type, 1)
            return lambda env, obs: env.joint_state()[field][idx]
        if o.type == "vector":
            if self.variant != "pick_place" or o.resolved_topic != OBJECT_TOPIC or o.dim != 3:
                raise GenilError(f"task observation {o.name!r}: the sim publishes one vector, the object position "
                                 f"(3 dims on {OBJECT_TOPIC}, pick_place only); got {o.dim} dims on {o.topic} "
                                 f"({self.variant})")
            return lambda env, obs: obs["object_pos"]
        raise GenilError(f"task observation {o.name!r}: the bundled sim has no {o.type} observation")

    def observe(self, env, obs: dict) -> dict:
        """``{"state": (state_dim,) float32, "<camera>": (3, H, W) uint8}`` for the current step."""
        out = {"state": np.concatenate([np.asarray(r(env, obs), np.float64).reshape(-1) for r in self._readers])
               .astype(np.float32)}
        for cam in self.cameras:
            out[cam.name] = np.ascontiguousarray(obs["image"].transpose(2, 0, 1))
        return out

    # ------------------------------------------------------------------ actions

    def _writer(self, a):
        if a.type not in ("joint_position", "gripper"):
            raise GenilError(f"task action {a.name!r}: the bundled sim takes joint and gripper commands, not {a.type}")
        idx = self._joint_index(a, "action")
        return self.layout.action_entry(a.name).slice, idx, a

    def command(self, row, env) -> np.ndarray:
        """The environment's action (one target per joint of ``env.joint_state()``) for one action row."""
        row = np.asarray(row, dtype=np.float64).reshape(-1)
        out = np.zeros(len(self.env_joints))
        pos = None
        for sl, idx, a in self._writers:
            v = row[sl].copy()
            if a.binary:
                v = np.where(v >= 0.5, a.closed_position, a.open_position)
            elif a.mode == "delta":
                pos = env.joint_state()[1] if pos is None else pos
                v = v + pos[idx]
            out[idx] = v
        return out
