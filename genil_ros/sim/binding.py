"""The bundled sim's tasks as the task schema sees them, without ROS: the one mapping between a task's typed
entries and the sim envs, used by ``genil-ros eval`` (``sim/evaluate.py``), the delayed evaluator
(``sim/latency_eval.py``) and noise-space fine-tuning (``finetune/tasks.py``).

``make_env(variant, ...)`` builds the environment of a sim variant (``obstacle`` / ``reach``: ``ArmEnv``;
``pick_place``: ``PickPlaceEnv``); ``fixed_length=True`` gives RL's episodes that never end early.
:class:`SimBinding` maps a task's typed observation and action entries (``genil_ros/schema.py``) onto such an
environment the way ``sim_node`` exposes it over ROS 2:

- joint entries (``joint_position`` / ``joint_velocity`` / ``joint_effort`` / ``gripper``) read the joints by
  name, with the values ``sim_node`` publishes on ``/joint_states`` (``env.joint_state()``: the four arm
  joints, plus ``gripper_finger_joint`` in ``pick_place``). Positions and the arm's velocities are taken from
  the env's observation (``joint_pos``, ``gripper_pos``, ``joint_vel``: the same numbers), so a recorded
  observation maps without its env; efforts and the gripper's velocity are read from the env;
- a 3-dim ``vector`` entry on the variant's topic or with its dimension names: the object's position in
  ``pick_place`` (``OBJECT_TOPIC``, ``OBJECT_POS_NAMES``; ``sim_node`` publishes it), the target point in
  ``obstacle`` / ``reach`` (``GOAL_TOPIC``, ``GOAL_DIMS``; privileged, what a perception node would publish:
  the sim node does not, a camera policy sees the target in the image);
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

__all__ = ["VARIANTS", "OBJECT_TOPIC", "GOAL_TOPIC", "GOAL_DIMS", "make_env", "env_joints", "variant_for_task",
           "EpisodeBatches", "SimBinding"]

VARIANTS = ("obstacle", "reach", "pick_place")
OBJECT_TOPIC = "/object/position"  # where sim_node publishes the object position (pick_place)
GOAL_TOPIC = "/target/position"  # where a perception node would publish the arm task's target point
GOAL_DIMS = ["target_x", "target_y", "target_z"]  # ArmEnv's goal point (3 cm above the target disc): obs["goal"]
ARM_JOINTS = 4  # the arm's joints come first in every variant's joint list (sim/env.py JOINT_NAMES)


def make_env(variant: str, image_size=(96, 96), render: bool = True, seed: Optional[int] = None,
             control_rate_hz: float = 10.0, max_episode_steps: Optional[int] = None, fixed_length: bool = False):
    """The environment of a sim variant (``max_episode_steps`` None = the task's own limit).

    ``fixed_length``: episodes never end early (no termination on success, nor on a drop in ``pick_place``)
    and have no limit of their own (``max_episode_steps`` None = unlimited): the caller runs each episode for
    the same number of steps, so a positive per-step reward gives no incentive to end or prolong one."""
    if variant not in VARIANTS:
        raise GenilError(f"sim variant {variant!r} is not one of {', '.join(VARIANTS)}")
    kw = {"image_size": image_size, "render": render, "seed": seed, "control_rate_hz": control_rate_hz}
    if fixed_length:
        kw.update(max_episode_steps=10**9, terminate_on_success=False)
    if max_episode_steps is not None:
        kw["max_episode_steps"] = int(max_episode_steps)
    if variant == "pick_place":
        from genil_ros.sim.pick_place import PickPlaceEnv

        return PickPlaceEnv(**kw, **({"terminate_on_drop": False} if fixed_length else {}))
    from genil_ros.sim.env import ArmEnv

    return ArmEnv(variant=variant, **kw)


def env_joints(variant: str) -> list[str]:
    """The joints of a variant's env, in the order of its ``joint_state()`` and of its action vector."""
    if variant == "pick_place":
        from genil_ros.sim.pick_place import ACTION_NAMES

        return list(ACTION_NAMES)
    from genil_ros.sim.env import JOINT_NAMES

    return list(JOINT_NAMES)


class EpisodeBatches:
    """Episodes ``seed``, ``seed + 1``, ... run in lockstep batches of ``len(envs)`` (the last one smaller), as
    both sim evaluators run them. Iterating yields ``(start, seeds, first observations)`` per batch, each env
    reset with its episode's seed; a progress bar counts the episodes (``show_success(rate)`` after a batch).
    Use it as a context manager: it closes the bar and the envs, also on an error."""

    def __init__(self, envs: list, episodes: int, seed: int, desc: str, progress: bool = True):
        from tqdm import tqdm

        self.envs, self.episodes, self.seed = envs, episodes, seed
        self.bar = tqdm(total=episodes, desc=desc, unit="ep", disable=not progress)

    def __enter__(self) -> "EpisodeBatches":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
        for env in self.envs:
            env.close()

    def __iter__(self):
        for start in range(0, self.episodes, len(self.envs)):
            seeds = [self.seed + start + i for i in range(min(len(self.envs), self.episodes - start))]
            yield start, seeds, [env.reset(seed=s)[0] for env, s in zip(self.envs, seeds)]
            self.bar.update(len(seeds))

    def show_success(self, rate: float) -> None:
        self.bar.set_postfix(success=f"{rate:.2f}")


def variant_for_task(task) -> str:
    """``pick_place`` for a task that observes or commands the gripper joint, else ``obstacle``."""
    from genil_ros.sim.pick_place import GRIPPER_JOINT

    joints = [j for e in list(task.observations) + list(task.actions) for j in e.joints]
    return "pick_place" if GRIPPER_JOINT in joints else "obstacle"


def _vector_source(variant: str) -> tuple[str, list, str, str]:
    """(topic, dimension names, obs key, what it is) of the one vector a variant gives."""
    if variant == "pick_place":
        from genil_ros.sim.pick_place import OBJECT_POS_NAMES

        return OBJECT_TOPIC, list(OBJECT_POS_NAMES), "object_pos", "the object position"
    return GOAL_TOPIC, list(GOAL_DIMS), "goal", "the target point"


class SimBinding:
    """A task's entries bound to a sim variant: ``observe(env, obs)`` -> the policy's per-tick inputs,
    ``command(row, env)`` -> the environment's action. ``task`` is a validated ``TaskConfig``.

    The variant is ``env``'s (whose render size the camera entry must match), else ``variant``, else the
    task's (:func:`variant_for_task`). ``where`` prefixes the errors (e.g. the checkpoint's path)."""

    def __init__(self, task, env=None, *, variant: Optional[str] = None, where: Optional[str] = None):
        self.task = task
        self.layout = task.layout
        self.variant = env.variant if env is not None else (variant or variant_for_task(task))
        if self.variant not in VARIANTS:
            raise GenilError(f"sim variant {self.variant!r} is not one of {', '.join(VARIANTS)}")
        self.env_joints = env_joints(self.variant)
        self._where = f"{where}: " if where else ""
        self.cameras = [o for o in task.observations if o.is_camera]
        if len(self.cameras) > 1:
            raise GenilError(f"{self._where}task: the bundled sim has one camera ('front'), the task wants "
                             f"{len(self.cameras)} ({', '.join(c.name for c in self.cameras)})")
        for cam in self.cameras:
            if env is not None and tuple(env.image_size) != (cam.height, cam.width) and env.render_enabled:
                raise GenilError(f"{self._where}task observation {cam.name!r}: the sim renders "
                                 f"{tuple(env.image_size)}, the entry wants ({cam.height}, {cam.width})")
        self._readers = [self._reader(o) for o in task.observations if not o.is_camera]
        self._writers = [self._writer(a) for a in task.actions]
        covered = [j for _, idx, _ in self._writers for j in (self.env_joints[i] for i in idx)]
        twice = sorted({j for j in covered if covered.count(j) > 1})
        missing = [j for j in self.env_joints if j not in covered]
        if twice or missing:
            raise GenilError(f"{self._where}task.actions: the {self.variant} sim takes one command for each of "
                             f"{self.env_joints}; " + (f"{twice} commanded twice" if twice else
                                                       f"{missing} not commanded"))
        # the action row's column of each joint
        self.columns = {self.env_joints[i]: sl.start + k for sl, idx, _ in self._writers for k, i in enumerate(idx)}
        # absolute position targets only (no delta, no binary gripper): an env action maps back to a row
        self.absolute = all(a.mode != "delta" and not a.binary for _, _, a in self._writers)

    # ------------------------------------------------------------------ observations

    def _joint_index(self, entry, kind: str) -> np.ndarray:
        unknown = [j for j in entry.joints if j not in self.env_joints]
        if unknown:
            raise GenilError(f"{self._where}task {kind} {entry.name!r}: joint(s) {unknown} are not in the "
                             f"{self.variant} sim (it has {self.env_joints})")
        return np.array([self.env_joints.index(j) for j in entry.joints])

    def _reader(self, o):
        """``read(obs, env) -> values`` of one low-dim observation entry."""
        if o.type in ("joint_position", "gripper", "joint_velocity", "joint_effort"):
            idx = self._joint_index(o, "observation")
            arm_only = bool(np.all(idx < ARM_JOINTS))
            if o.type in ("joint_position", "gripper"):
                if arm_only:
                    return lambda obs, env: obs["joint_pos"][idx]
                return lambda obs, env: np.append(obs["joint_pos"], obs["gripper_pos"])[idx]
            if o.type == "joint_velocity" and arm_only:
                return lambda obs, env: obs["joint_vel"][idx]
            field = 2 if o.type == "joint_velocity" else 3

            def from_joint_state(obs, env):
                if env is None:
                    raise GenilError(f"{self._where}task observation {o.name!r} ({o.type}): read from the sim's "
                                     f"joint state, which needs the env (its observation does not have it)")
                return env.joint_state()[field][idx]

            return from_joint_state
        if o.type == "vector":
            topic, dims, key, what = _vector_source(self.variant)
            if o.dim != 3 or (o.resolved_topic != topic and list(o.dim_names) != dims):
                raise GenilError(f"{self._where}task observation {o.name!r}: the {self.variant} sim gives one "
                                 f"vector, {what} (3 dims on {topic} or named {dims}); got {o.dim} dims "
                                 f"{o.dim_names} on {o.topic}")
            return lambda obs, env: obs[key]
        raise GenilError(f"{self._where}task observation {o.name!r}: the bundled sim has no {o.type} observation")

    def state(self, obs: dict, env=None) -> np.ndarray:
        """The policy's ``state`` vector (D,) float32 for one env observation (``env``: only for the entries
        its observation lacks, efforts and the gripper's velocity)."""
        if not self._readers:
            return np.zeros(0, np.float32)
        return np.concatenate([np.asarray(r(obs, env), np.float64).reshape(-1) for r in self._readers]) \
            .astype(np.float32)

    @staticmethod
    def image(obs: dict) -> np.ndarray:
        """The ``front`` camera frame channel-first (3, H, W) uint8."""
        return np.ascontiguousarray(obs["image"].transpose(2, 0, 1))

    def observe(self, env, obs: dict) -> dict:
        """``{"state": (state_dim,) float32, "<camera>": (3, H, W) uint8}`` for the current step."""
        out = {"state": self.state(obs, env)}
        for cam in self.cameras:
            out[cam.name] = self.image(obs)
        return out

    # ------------------------------------------------------------------ actions

    def _writer(self, a):
        if a.type not in ("joint_position", "gripper"):
            raise GenilError(f"{self._where}task action {a.name!r}: the bundled sim takes joint and gripper "
                             f"commands, not {a.type}")
        idx = self._joint_index(a, "action")
        return self.layout.action_entry(a.name).slice, idx, a

    def command(self, row, env=None) -> np.ndarray:
        """The environment's action (one target per joint of ``env.joint_state()``) for one action row
        (``env``: for delta entries, which add the joints' positions)."""
        row = np.asarray(row, dtype=np.float64).reshape(-1)
        out = np.zeros(len(self.env_joints))
        pos = None
        for sl, idx, a in self._writers:
            v = row[sl].copy()
            if a.binary:
                v = np.where(v >= 0.5, a.closed_position, a.open_position)
            elif a.mode == "delta":
                if env is None:
                    raise GenilError(f"{self._where}task action {a.name!r} (delta) needs the env's joint positions")
                pos = env.joint_state()[1] if pos is None else pos
                v = v + pos[idx]
            out[idx] = v
        return out

    def row_of(self, env_action) -> np.ndarray:
        """The action row (float32) that commands ``env_action`` (e.g. the scripted expert's, for
        demonstrations); absolute position targets only (``self.absolute``)."""
        if not self.absolute:
            raise GenilError(f"{self._where}task.actions: only absolute joint / gripper position targets map back "
                             "from an env action (not delta, not binary)")
        env_action = np.asarray(env_action, np.float32)
        out = np.empty(self.layout.action_dim, np.float32)
        for sl, idx, _ in self._writers:
            out[sl] = env_action[idx]
        return out
