"""The bundled sim tasks as fine-tuning environments: which env, which expert, which low-dim policy, and how
that policy meets the sim (:class:`SimAdapter`, over the one mapping of ``genil_ros/sim/binding.py``).

A policy names what it observes as typed entries (``task.observations``, ``genil_ros/schema.py``);
:class:`~genil_ros.sim.binding.SimBinding` reads each from the sim: joints and the gripper by joint name,
velocities, the pick-and-place object's centre (``OBJECT_POS_NAMES``) or the reach / obstacle target point
(``GOAL_DIMS``: a perception vector for low-dim policies, where the camera policy reads the target from the
image), one ``front`` camera. Anything else is a GenilError naming the entry. The fine-tuner also needs its
actions to be absolute position targets (the expert's demonstrations map back into them).

Episodes here never end early (``make_env(..., fixed_length=True)``: no termination on success or on a
drop): every episode has the same length, so a positive per-step reward (GAIL's ``-log(1 - D)``) gives no
incentive to end or to prolong an episode; success is "at any tick" (``success_any``).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from genil_ros.errors import GenilError
from genil_ros.sim.binding import GOAL_DIMS, GOAL_TOPIC, OBJECT_TOPIC, SimBinding, env_joints, make_env

__all__ = ["GOAL_DIMS", "SimTask", "ArmTask", "PickPlaceTask", "TASKS", "make_task", "SimAdapter"]

COMMAND_TOPIC = "/forward_position_controller/commands"


class SimTask:
    """One bundled task: its sim ``variant`` (``make_env``), ``expert``, low-dim policy and action order."""

    name: str
    variant: str  # the sim variant (sim/binding.py VARIANTS)
    episode_steps: int  # the default episode length for fine-tuning and evaluation (control ticks)
    action_names: list[str]  # the env's action vector, in order

    def __init__(self, variant: str, episode_steps: int):
        self.name = self.variant = variant
        self.episode_steps = episode_steps
        self.action_names = env_joints(variant)

    def make_env(self, seed: int, image_size: Optional[tuple] = None, control_rate_hz: float = 10.0):
        """A fixed-length env (no early end), rendering only with an ``image_size``."""
        return make_env(self.variant, image_size=image_size or (96, 96), render=image_size is not None, seed=seed,
                        control_rate_hz=control_rate_hz, fixed_length=True)

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

    def __init__(self, variant: str):
        super().__init__(variant, episode_steps=50)

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
        super().__init__("pick_place", episode_steps=120)

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
    """How one policy (its ``cfg.task``) sees one sim task: ``state(obs)``, ``image(obs)``, ``env_action(a)``,
    through the task's :class:`~genil_ros.sim.binding.SimBinding` (``binding``).

    ``num_commanded`` is how many leading state dimensions the actions command (the Adversary's
    ``num_joints``: GAIL's ``a - q`` and the predicted transitions of a chunk use them)."""

    def __init__(self, task: SimTask, policy_task, where: str = "checkpoint"):
        self.task = task
        self.where = where
        self.binding = b = SimBinding(policy_task, variant=task.variant, where=where)
        if not b.absolute:
            raise GenilError(f"{where}: task.actions: the fine-tuner takes absolute joint / gripper position "
                             f"targets (the expert's demonstrations map back into them), not delta or binary")
        cam = b.cameras[0] if b.cameras else None
        self.camera: Optional[tuple[str, int, int]] = None if cam is None else (cam.name, cam.height, cam.width)
        self.state_dim = b.layout.state_dim
        self.action_dim = b.layout.action_dim
        act = [n for e in b.layout.action for n in e.dim_names]
        state_names = [n for e in b.layout.state for n in e.dim_names]
        lead = 0
        while lead < min(len(act), len(state_names)) and state_names[lead] == act[lead]:
            lead += 1
        self.num_commanded = lead  # leading state dims that are the commanded joints (0: none)

    def state(self, obs: dict) -> np.ndarray:
        """The policy's ``state`` vector (D,) float32 for one sim observation."""
        return self.binding.state(obs)

    def arm_q(self, obs: dict) -> np.ndarray:
        """The arm's joint positions (4,) (the motion the metrics compare)."""
        return np.asarray(obs["joint_pos"], np.float32)

    def image(self, obs: dict) -> Optional[np.ndarray]:
        """The camera frame channel-first (3, H, W) uint8, or None for a low-dim policy."""
        return None if self.camera is None else self.binding.image(obs)

    def env_action(self, action: np.ndarray) -> np.ndarray:
        """The policy's action vector -> the env's action (its order)."""
        return self.binding.command(action)

    def policy_action(self, env_action: np.ndarray) -> np.ndarray:
        """The env's action -> the policy's action vector (e.g. the scripted expert's, for demonstrations)."""
        return self.binding.row_of(env_action)

    def make_envs(self, n: int, seed: int, control_rate_hz: float = 10.0) -> list:
        size = None if self.camera is None else (self.camera[1], self.camera[2])
        return [self.task.make_env(seed + i, size, control_rate_hz) for i in range(n)]
