"""The bundled pick-and-place task: the 4-DoF arm with a parallel gripper puts a cylinder into one of two bins.

Scene (``assets/arm_gripper.xml``): the arm of ``env.py`` (``shoulder_pan``, ``shoulder_lift``, ``elbow``,
``wrist``) with a two-finger gripper at the tool, a short red cylinder (4 cm across, 5 cm tall) at a random
spot on the table in front of the arm, and two IDENTICAL open bins mirrored left (+y) and right (-y) of
the object region. Each episode the object is placed at random in ``OBJECT_REGION``; the bins stay put.

Success: the object rests inside either bin (centre over the bin's inside, below its rim, slower than
``REST_SPEED``), released (gripper opened to at least ``GRIPPER_THRESHOLD`` and no gripper part touching
it), and it was never dropped elsewhere. Dropped = the object touches the table again after it was lifted
off it, or falls off the table; a drop ends the episode as a failure (``terminate_on_drop``). Either bin is
right, which is what makes the task bimodal: the scripted expert (``pick_place_expert.py``) picks a bin at
random, so from the same observation it goes left or right, and a policy that averages the two (an MSE
regressor) carries the object to the middle and drops it on the table between the bins.

Actions (5,): absolute position targets for the four arm joints (radians, ``JOINT_NAMES`` order, clipped to
``JOINT_LIMITS``) and the gripper: a position target for ``gripper_finger_joint``, the travel of one finger
from closed in metres, clipped to ``GRIPPER_RANGE`` = [0, 0.04] (0 = closed, 0.04 = open, an 8 cm gap; the
other finger mirrors it). A binary open/close command maps to ``GRIPPER_OPEN`` / ``GRIPPER_CLOSED``; a
continuous one above ``GRIPPER_THRESHOLD`` (half way) counts as open. The gripper's force is limited, so
closing on the object squeezes it rather than reaching the target.

Observations: ``joint_pos`` (4), ``joint_vel`` (4), ``gripper_pos`` (1; the finger joint, metres),
``object_pos`` (3; the cylinder's centre in the world frame: what a perception node would publish), ``image``
(H, W, 3) uint8 from the ``front`` camera when ``render=True``; privileged (for the expert and state-based
RL): ``ee_pos`` (3; the grasp point between the finger pads).

Like ``ArmEnv``: ``reset(seed) -> (obs, info)``, ``step(action) -> (obs, reward, terminated, truncated, info)``
advancing ``1 / control_rate_hz`` seconds, and the finer ``set_command`` (arm) / ``set_gripper`` /
``advance`` / ``observe`` the ROS sim node drives at its own rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from genil_ros.errors import GenilError
from genil_ros.sim.env import JOINT_NAMES, ArmBase

ASSET_PATH = Path(__file__).resolve().parent / "assets" / "arm_gripper.xml"
TASK_NAME = "pick_place"

GRIPPER_JOINT = "gripper_finger_joint"
GRIPPER_RANGE = (0.0, 0.04)  # metres of travel per finger (the gap between the pads is twice this)
GRIPPER_CLOSED, GRIPPER_OPEN = GRIPPER_RANGE
GRIPPER_THRESHOLD = 0.5 * (GRIPPER_CLOSED + GRIPPER_OPEN)  # a command/opening above this is "open"
ACTION_NAMES = JOINT_NAMES + [GRIPPER_JOINT]
OBJECT_POS_NAMES = ["object_x", "object_y", "object_z"]  # dims of obs["object_pos"] (a perception vector)

# Task geometry (metres, world frame; table top at z = 0, arm base at the origin). Must match the MJCF.
OBJECT_RADIUS = 0.02
OBJECT_HALF_HEIGHT = 0.025
OBJECT_REGION = ((0.28, 0.38), (-0.05, 0.05))  # (x range, y range) of the object's centre at reset
BINS = {"left": np.array([0.33, 0.20]), "right": np.array([0.33, -0.20])}  # bin centres (x, y)
BIN_INNER_HALF = 0.06  # half width of a bin's inside (walls' inner faces)
BIN_FLOOR_TOP = 0.005
BIN_RIM = 0.04  # height of the walls' top
LIFTED_HEIGHT = 0.015  # the object's bottom this far above the table = lifted (a later table contact = dropped)
REST_SPEED = 0.05  # m/s: the object counts as resting below this speed
HOME_TIP = np.array([0.18, 0.0, 0.16])  # start pose: grasp point above the table near the base, tool down
HOME_NOISE_RAD = 0.05
MAX_EPISODE_STEPS = 120  # 12 s at 10 Hz


class PickPlaceEnv(ArmBase):
    """Gymnasium-style pick-and-place task (see the module docstring for the scene, spaces and success).

    ``info`` = ``{"success", "is_success", "dropped", "grasped", "bin" ("left"/"right"/None: the bin the
    object is inside, released or not), "released", "distance" (object to the nearest bin centre, in the
    table plane)}``. ``terminated`` = success (``terminate_on_success``) or a drop (``terminate_on_drop``);
    ``truncated`` after ``max_episode_steps``. Reward = ``-distance`` (+1 on success, -1 on the step the
    object is dropped).
    """

    metadata = {"render_modes": ["rgb_array"]}
    state_dim = 15
    action_dim = 5
    home_noise_rad = HOME_NOISE_RAD

    def __init__(self, image_size=(96, 96), render: bool = True, seed: Optional[int] = None,
                 control_rate_hz: float = 10.0, max_episode_steps: int = MAX_EPISODE_STEPS,
                 terminate_on_success: bool = True, terminate_on_drop: bool = True):
        self.variant = TASK_NAME
        self._load(ASSET_PATH, image_size, render, control_rate_hz, max_episode_steps, terminate_on_success)
        self.terminate_on_drop = bool(terminate_on_drop)
        self.action_names = list(ACTION_NAMES)
        self.gripper_range = GRIPPER_RANGE
        m = self.model
        self._grip_act = m.actuator("gripper").id
        self._grip_qadr = np.array([m.jnt_qposadr[m.joint(n).id]
                                    for n in (GRIPPER_JOINT, "gripper_finger_mirror_joint")])
        self._grip_dadr = m.jnt_dofadr[m.joint(GRIPPER_JOINT).id]
        self._obj_body = m.body("object").id
        self._obj_geom = m.geom("object").id
        self._obj_qadr = m.jnt_qposadr[m.joint("object_joint").id]
        self._obj_dadr = m.jnt_dofadr[m.joint("object_joint").id]
        self._table_geom = m.geom("table").id
        self._fingers = {m.geom("finger_left").id, m.geom("finger_right").id}
        arm_bodies = {m.body(b).id for b in ("turret", "upper_arm", "forearm", "hand", "finger_left", "finger_right")}
        self._arm_geoms = {g for g in range(m.ngeom) if m.geom_bodyid[g] in arm_bodies}

        self._start(HOME_TIP, seed)
        self.object_xy = np.zeros(2)
        self.gripper_command = GRIPPER_OPEN
        self.lifted = False
        self.dropped = False
        self._reset_state(self.home_qpos, np.array([np.mean(OBJECT_REGION[0]), 0.0]))

    # ------------------------------------------------------------------ gymnasium-style API

    def reset(self, seed: Optional[int] = None, options: Optional[dict] = None):
        """New episode: the object at a random spot of ``OBJECT_REGION`` (or ``options["object_xy"]``), the arm
        at home plus joint noise, the gripper open."""
        xy, q = self._draw_start(seed, OBJECT_REGION, options, "object_xy")
        self._reset_state(q, xy)
        return self.observe(), self._info()

    def _failed_terminally(self, info: dict) -> bool:
        return bool(info["dropped"] and self.terminate_on_drop)

    # ------------------------------------------------------------------ finer control (for the ROS node)

    def set_action(self, action) -> np.ndarray:
        """Apply a full action (4 arm joint targets + the gripper target); returns what was applied (clipped)."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (5,):
            raise GenilError(f"PickPlaceEnv: action must have 5 values ({', '.join(ACTION_NAMES)}), got {a.shape[0]}")
        return np.append(self.set_command(a[:4]), self.set_gripper(a[4]))

    def set_gripper(self, target: float) -> float:
        """Set the gripper's position target (``gripper_finger_joint``, metres, clipped to ``GRIPPER_RANGE``)."""
        g = float(np.asarray(target, dtype=np.float64).reshape(-1)[0])
        if not np.isfinite(g):
            raise GenilError(f"PickPlaceEnv: gripper command {GRIPPER_JOINT} is not finite ({g})")
        self.gripper_command = float(np.clip(g, *GRIPPER_RANGE))
        self.data.ctrl[self._grip_act] = self.gripper_command
        return self.gripper_command

    def advance(self, seconds: float) -> bool:
        """Run the physics for ``seconds`` (rounded to whole timesteps); True if the object was first dropped now."""
        n = max(1, int(round(seconds / self.model.opt.timestep)))
        was = self.dropped
        for _ in range(n):
            self._mj.mj_step(self.model, self.data)
        bottom = self.object_pos()[2] - OBJECT_HALF_HEIGHT
        if bottom > LIFTED_HEIGHT and not self._touching(self._table_geom):
            self.lifted = True
        if not self.dropped:
            self.dropped = bool(bottom < -0.05 or (self.lifted and self._touching(self._table_geom)))
        return self.dropped and not was

    def _task_observation(self) -> dict:
        return {"gripper_pos": np.array([self.gripper_opening()], dtype=np.float32),
                "object_pos": self.object_pos().astype(np.float32)}

    def state_vector(self, obs: Optional[dict] = None) -> np.ndarray:
        """Low-dim state: joint_pos (4), joint_vel (4), gripper_pos (1), object_pos (3), ee_pos (3) -> (15,)."""
        o = obs if obs is not None else self.observe(image=False)
        return np.concatenate([o["joint_pos"], o["joint_vel"], o["gripper_pos"], o["object_pos"],
                               o["ee_pos"]]).astype(np.float32)

    def joint_state(self) -> tuple:
        """``(names, position, velocity, effort)`` of the four arm joints and ``gripper_finger_joint``, as a
        ``sensor_msgs/JointState`` carries them (effort = the actuator's force/torque)."""
        d = self.data
        pos = np.append(d.qpos[self._qadr], d.qpos[self._grip_qadr[0]])
        vel = np.append(d.qvel[self._dadr], d.qvel[self._grip_dadr])
        eff = np.append(d.actuator_force[self._act], d.actuator_force[self._grip_act])
        return list(ACTION_NAMES), pos, vel, eff

    # ------------------------------------------------------------------ task state

    def gripper_opening(self) -> float:
        """``gripper_finger_joint``'s position: travel of one finger from closed (metres)."""
        return float(self.data.qpos[self._grip_qadr[0]])

    def object_pos(self) -> np.ndarray:
        return self.data.xpos[self._obj_body].copy()

    def bin_of(self, pos) -> Optional[str]:
        """The bin whose inside holds ``pos`` (the object's centre) below its rim, or None."""
        pos = np.asarray(pos, dtype=np.float64)
        if pos[2] - OBJECT_HALF_HEIGHT > BIN_RIM:
            return None
        for name, c in BINS.items():
            if np.all(np.abs(pos[:2] - c) < BIN_INNER_HALF):
                return name
        return None

    def grasped(self) -> bool:
        """Both finger pads touch the object."""
        return self._fingers <= self._contacts_with_object()

    def released(self) -> bool:
        """The gripper is open (at least ``GRIPPER_THRESHOLD``) and no gripper or arm part touches the object."""
        return (self.gripper_opening() >= GRIPPER_THRESHOLD
                and not (self._arm_geoms & self._contacts_with_object()))

    def is_success(self) -> bool:
        return self._info()["success"]

    def distance(self) -> float:
        """Distance (table plane) from the object to the nearest bin centre."""
        xy = self.object_pos()[:2]
        return float(min(np.linalg.norm(xy - c) for c in BINS.values()))

    def episode_info(self) -> dict:
        """What describes the episode (for logs and the sim node's ~/episode topic); no expert mode in it."""
        return {
            "variant": TASK_NAME,
            "seed": self.episode_seed,
            "object_xy": [float(v) for v in self.object_xy],
            "object": {"radius": OBJECT_RADIUS, "height": 2 * OBJECT_HALF_HEIGHT},
            "bins": {k: [float(v) for v in c] for k, c in BINS.items()},
            "bin_inner_half_width": BIN_INNER_HALF,
            "bin_rim_height": BIN_RIM,
            "joint_names": list(JOINT_NAMES),
            "gripper_joint": GRIPPER_JOINT,
            "gripper_range": list(GRIPPER_RANGE),
        }

    # ------------------------------------------------------------------ internals

    def _reset_state(self, q, object_xy) -> None:
        mj, d = self._mj, self.data
        mj.mj_resetData(self.model, d)
        d.qpos[self._qadr] = np.clip(q, self.joint_limits[0], self.joint_limits[1])
        d.qpos[self._grip_qadr] = GRIPPER_OPEN
        self.object_xy = np.asarray(object_xy, dtype=np.float64).copy()
        d.qpos[self._obj_qadr:self._obj_qadr + 7] = [*self.object_xy, OBJECT_HALF_HEIGHT, 1.0, 0.0, 0.0, 0.0]
        self.command = d.qpos[self._qadr].copy()
        d.ctrl[self._act] = self.command
        self.gripper_command = GRIPPER_OPEN
        d.ctrl[self._grip_act] = GRIPPER_OPEN
        self.lifted = False
        self.dropped = False
        self.elapsed_steps = 0
        mj.mj_forward(self.model, d)

    def _contacts_with_object(self) -> set:
        d, obj = self.data, self._obj_geom
        out = set()
        for i in range(d.ncon):
            g1, g2 = int(d.contact[i].geom1), int(d.contact[i].geom2)
            if g1 == obj:
                out.add(g2)
            elif g2 == obj:
                out.add(g1)
        return out

    def _touching(self, geom: int) -> bool:
        return geom in self._contacts_with_object()

    def _info(self) -> dict:
        pos = self.object_pos()
        in_bin = self.bin_of(pos)
        released = self.released()
        speed = float(np.linalg.norm(self.data.qvel[self._obj_dadr:self._obj_dadr + 3]))
        ok = bool(in_bin is not None and released and speed < REST_SPEED and not self.dropped)
        return {"success": ok, "is_success": ok, "dropped": bool(self.dropped), "grasped": self.grasped(),
                "bin": in_bin, "released": released, "distance": self.distance()}

