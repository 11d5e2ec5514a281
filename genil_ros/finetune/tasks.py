"""The bundled sim tasks as fine-tuning environments: which env, which expert, and how a sim observation
becomes the policy's ``state`` vector (and its action vector the env's action).

A policy names what it observes as typed entries (``task.observations``, ``genil_ros/schema.py``); the sim
has a source for each kind it can provide:

- ``joint_position`` / ``gripper`` entries: the arm joints (``JOINT_NAMES``) from ``obs["joint_pos"]``, the
  gripper finger (pick-and-place) from ``obs["gripper_pos"]``, matched by joint name;
- ``joint_velocity``: ``obs["joint_vel"]``;
- ``vector`` entries, matched by their dimension names: the pick-and-place object's centre
  (``OBJECT_POS_NAMES``, ``obs["object_pos"]``, what a perception node publishes) and, on the reach /
  obstacle tasks, the target point (``GOAL_DIMS``, ``obs["goal"]``: a perception vector for low-dim
  policies, where the camera policy reads the target from the image);
- one ``camera`` entry: the ``front`` camera at the entry's size (rendered; slower).

Anything else is a GenilError naming the entry. Episodes here never end early (no termination on success
or on a drop): every episode has the same length, so a positive per-step reward (GAIL's ``-log(1 - D)``)
gives no incentive to end or to prolong an episode; success is "at any tick" (``success_any``).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from genil_ros.errors import GenilError

__all__ = ["GOAL_DIMS", "SimTask", "ArmTask", "PickPlaceTask", "TASKS", "make_task", "SimAdapter"]

GOAL_DIMS = ["target_x", "target_y", "target_z"]  # ArmEnv's goal point (3 cm above the target disc)
GOAL_TOPIC = "/target/position"  # where a perception node would publish it (std_msgs/Float64MultiArray)
OBJECT_TOPIC = "/object/position"
COMMAND_TOPIC = "/forward_position_controller/commands"


class SimTask:
    """One bundled task: ``make_env``, ``expert``, its sources of observations and its action order."""

    name: str
    episode_steps: int  # the default episode length for fine-tuning and evaluation (control ticks)
    action_names: list[str]  # the env's action vector, in order
    vectors: dict[tuple, str]  # dimension names of a vector entry -> obs key

    def make_env(self, seed: int, image_size: Optional[tuple] = None, control_rate_hz: float = 10.0):
        raise NotImplementedError

    def expert(self, env, seed: int):
        """An actor with ``reset()`` and ``act(obs) -> env action``."""
        raise NotImplementedError

    def lowdim_entries(self) -> tuple[list, list]:
        """(observations, actions) of the low-dim policy this task is learned with (typed schema)."""
        raise NotImplementedError

    def task_section(self, control_rate_hz: float = 10.0, horizon: Optional[dict] = None) -> dict:
        """The ``task:`` section of an experiment config for the low-dim policy of this task."""
        from dataclasses import asdict

        obs, act = self.lowdim_entries()
        return {"observations": [asdict(o) for o in obs], "actions": [asdict(a) for a in act],
                "control_rate_hz": control_rate_hz,
                "horizon": horizon or {"n_obs_steps": 2, "horizon": 16, "n_action_steps": 8}}


class ArmTask(SimTask):
    """``ArmEnv`` ``reach`` (no post) or ``obstacle`` (around a post; touching it fails the episode)."""

    action_names = None  # set in __init__

    def __init__(self, variant: str):
        from genil_ros.sim.env import JOINT_NAMES

        self.name = variant
        self.variant = variant
        self.episode_steps = 50
        self.action_names = list(JOINT_NAMES)
        self.vectors = {tuple(GOAL_DIMS): "goal"}

    def make_env(self, seed: int, image_size: Optional[tuple] = None, control_rate_hz: float = 10.0):
        from genil_ros.sim.env import ArmEnv

        return ArmEnv(variant=self.variant, image_size=image_size or (96, 96), render=image_size is not None,
                      seed=seed, control_rate_hz=control_rate_hz, max_episode_steps=10**9,
                      terminate_on_success=False)

    def expert(self, env, seed: int):
        from genil_ros.sim.expert import ScriptedExpert

        return ScriptedExpert(env, seed=seed)

    def lowdim_entries(self):
        from genil_ros.schema import ActionEntry, ObservationEntry

        j = list(self.action_names)
        return ([ObservationEntry("arm", "joint_position", "/joint_states", j),
                 ObservationEntry("target", "vector", GOAL_TOPIC, dims=list(GOAL_DIMS))],
                [ActionEntry("arm", "joint_position", COMMAND_TOPIC, "float64_multi_array", j)])


class PickPlaceTask(SimTask):
    """``PickPlaceEnv``: the cylinder into either bin (a drop fails the episode; episodes still run on)."""

    def __init__(self):
        from genil_ros.sim.pick_place import ACTION_NAMES, OBJECT_POS_NAMES

        self.name = "pick_place"
        self.episode_steps = 120
        self.action_names = list(ACTION_NAMES)
        self.vectors = {tuple(OBJECT_POS_NAMES): "object_pos"}

    def make_env(self, seed: int, image_size: Optional[tuple] = None, control_rate_hz: float = 10.0):
        from genil_ros.sim.pick_place import PickPlaceEnv

        return PickPlaceEnv(image_size=image_size or (96, 96), render=image_size is not None, seed=seed,
                            control_rate_hz=control_rate_hz, max_episode_steps=10**9, terminate_on_success=False,
                            terminate_on_drop=False)

    def expert(self, env, seed: int):
        from genil_ros.sim.pick_place_expert import PickPlaceExpert

        return PickPlaceExpert(env, seed=seed)

    def lowdim_entries(self):
        from genil_ros.schema import ActionEntry, ObservationEntry
        from genil_ros.sim.pick_place import GRIPPER_JOINT, OBJECT_POS_NAMES

        arm = list(self.action_names[:4])
        return ([ObservationEntry("arm", "joint_position", "/joint_states", arm),
                 ObservationEntry("gripper", "gripper", "/joint_states", [GRIPPER_JOINT]),
                 ObservationEntry("object", "vector", OBJECT_TOPIC, dims=list(OBJECT_POS_NAMES))],
                [ActionEntry("arm", "joint_position", COMMAND_TOPIC, "float64_multi_array", arm),
                 ActionEntry("gripper", "gripper", "/gripper_controller/commands", "float64_multi_array",
                             [GRIPPER_JOINT])])


TASKS = {"reach": lambda: ArmTask("reach"), "obstacle": lambda: ArmTask("obstacle"), "pick_place": PickPlaceTask}


def make_task(name: str, where: str = "finetune.task") -> SimTask:
    try:
        return TASKS[name]()
    except KeyError:
        raise GenilError(f"{where}: {name!r} is not a bundled task ({', '.join(TASKS)})") from None


class SimAdapter:
    """How one policy (its ``cfg.task``) sees one sim task: ``state(obs)``, ``image(obs)``, ``env_action(a)``.

    ``num_commanded`` is how many leading state dimensions the actions command (the Adversary's
    ``num_joints``: GAIL's ``a - q`` and the predicted transitions of a chunk use them)."""

    def __init__(self, task: SimTask, policy_task, where: str = "checkpoint"):
        self.task = task
        self.where = where
        env_joints = list(task.action_names)
        n_arm = 4  # both tasks' arm: JOINT_NAMES; pick-and-place adds the gripper finger after it
        pos = {f"pos:{j}": i for i, j in enumerate(env_joints[:n_arm])}
        vel = {f"vel:{j}": n_arm + i for i, j in enumerate(env_joints[:n_arm])}
        extra = {f"pos:{j}": 2 * n_arm + i for i, j in enumerate(env_joints[n_arm:])}  # the gripper finger
        offset = 2 * n_arm + len(env_joints) - n_arm
        vec = {}
        self._vector_keys = []
        for dims, key in task.vectors.items():
            for i, d in enumerate(dims):
                vec[f"vec:{d}"] = offset + i
            offset += len(dims)
            self._vector_keys.append(key)
        table = {**pos, **vel, **extra, **vec}
        idx: list[int] = []
        self.camera: Optional[tuple[str, int, int]] = None
        for o in policy_task.observations:
            key = f"{where}: task.observations entry {o.name!r} ({o.type})"
            if o.type == "camera":
                if self.camera is not None:
                    raise GenilError(f"{key}: the bundled sim has one camera ('front'); the policy wants more")
                self.camera = (o.name, o.height, o.width)
                continue
            prefix = {"joint_position": "pos", "gripper": "pos", "joint_velocity": "vel", "vector": "vec"}.get(o.type)
            if prefix is None:
                raise GenilError(f"{key}: the {task.name} sim does not provide {o.type} observations")
            for d in o.dim_names:
                if f"{prefix}:{d}" not in table:
                    raise GenilError(f"{key}: the {task.name} sim has no {d!r} "
                                     f"(it has joints {env_joints}, vectors {[list(v) for v in task.vectors]})")
                idx.append(table[f"{prefix}:{d}"])
        self._idx = np.asarray(idx, dtype=np.int64)
        act = []
        for a in policy_task.actions:
            key = f"{where}: task.actions entry {a.name!r} ({a.type})"
            if a.type not in ("joint_position", "gripper") or getattr(a, "mode", "absolute") != "absolute" or \
                    getattr(a, "binary", False):
                raise GenilError(f"{key}: the {task.name} sim takes absolute joint / gripper position targets")
            act += list(a.dim_names)
        missing = [j for j in env_joints if j not in act]
        unknown = [j for j in act if j not in env_joints]
        if missing or unknown or len(set(act)) != len(act):
            raise GenilError(f"{where}: task.actions command {act}; the {task.name} sim needs exactly "
                             f"{env_joints}" + (f" (missing {missing})" if missing else "")
                             + (f" (unknown {unknown})" if unknown else ""))
        self._act_to_env = np.asarray([act.index(j) for j in env_joints], dtype=np.int64)
        self.state_dim = len(idx)
        self.action_dim = len(act)
        state_names = [n for o in policy_task.observations if o.type != "camera" for n in o.dim_names]
        lead = 0
        while lead < min(len(act), len(state_names)) and state_names[lead] == act[lead]:
            lead += 1
        self.num_commanded = lead  # leading state dims that are the commanded joints (0: none)

    def _source(self, obs: dict) -> np.ndarray:
        parts = [obs["joint_pos"], obs["joint_vel"]]
        if "gripper_pos" in obs and len(self.task.action_names) > 4:
            parts.append(obs["gripper_pos"])
        parts += [obs[k] for k in self._vector_keys]
        return np.concatenate(parts).astype(np.float32)

    def state(self, obs: dict) -> np.ndarray:
        """The policy's ``state`` vector (D,) float32 for one sim observation."""
        return self._source(obs)[self._idx]

    def arm_q(self, obs: dict) -> np.ndarray:
        """The arm's joint positions (4,) (the motion the metrics compare)."""
        return np.asarray(obs["joint_pos"], np.float32)

    def image(self, obs: dict) -> Optional[np.ndarray]:
        """The camera frame channel-first (3, H, W) uint8, or None for a low-dim policy."""
        return None if self.camera is None else np.ascontiguousarray(obs["image"].transpose(2, 0, 1))

    def env_action(self, action: np.ndarray) -> np.ndarray:
        """The policy's action vector -> the env's action (its order)."""
        return np.asarray(action, np.float64)[self._act_to_env]

    def policy_action(self, env_action: np.ndarray) -> np.ndarray:
        """The env's action -> the policy's action vector (e.g. the scripted expert's, for demonstrations)."""
        out = np.empty(self.action_dim, np.float32)
        out[self._act_to_env] = np.asarray(env_action, np.float32)
        return out

    def make_envs(self, n: int, seed: int, control_rate_hz: float = 10.0) -> list:
        size = None if self.camera is None else (self.camera[1], self.camera[2])
        return [self.task.make_env(seed + i, size, control_rate_hz) for i in range(n)]

