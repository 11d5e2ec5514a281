"""The bundled MuJoCo arm task as a gymnasium-style environment (no ROS, no gymnasium dependency).

A 4-DoF arm (``shoulder_pan``, ``shoulder_lift``, ``elbow``, ``wrist``) stands on a table. Each episode a red
target disc is placed at a random spot on the table; the arm must bring its tool tip onto it. In the
``"obstacle"`` variant a post stands between the arm's start pose and the target region, so a demonstrator
goes either left or right around it (two clearly different joint-space paths) and touching the post fails
the episode. In the ``"reach"`` variant there is no post and the target region is wider (for RL).

The policy sees the target only in the ``front`` camera image; ``obs["goal"]`` and ``obs["ee_pos"]`` are
privileged (for the scripted expert and for state-based RL).

Actions are absolute joint position targets in ``JOINT_NAMES`` order, like a ros2_control position
interface: they drive MuJoCo position actuators (with gravity compensation) and are clipped to
``JOINT_LIMITS``. One ``step`` advances ``1 / control_rate_hz`` seconds of physics.

``render=False`` creates no renderer at all (fast state-only stepping; ``obs`` then has no ``"image"``).
The ROS sim node drives the same class at a finer rate through ``set_command`` / ``advance`` / ``observe``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

# Headless by default: without a display, MuJoCo's default (GLFW) cannot make a context; EGL renders
# offscreen on any GPU driver or Mesa. An explicit MUJOCO_GL (osmesa, glfw, ...) is respected.
if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")

from genil_ros.errors import GenilError

JOINT_NAMES = ["shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_joint"]
CAMERA_NAME = "front"
ASSET_PATH = Path(__file__).resolve().parent / "assets" / "arm.xml"

# Joint limits (lower, upper) in radians; the same as the MJCF joint ranges and actuator ctrlranges.
JOINT_LIMITS = (
    np.array([-2.0, -0.6, -2.8, -2.6], dtype=np.float64),
    np.array([2.0, 2.4, 0.6, 1.2], dtype=np.float64),
)

VARIANTS = ("obstacle", "reach")

# Task geometry (metres, world frame; table top at z = 0, arm base at the origin).
GOAL_HEIGHT = 0.03  # the goal point is this far above the target disc's centre
TRAVEL_HEIGHT = 0.045  # the expert moves the tip at this height
SUCCESS_RADIUS = 0.03  # tip within this distance of the goal point = success
POST_POS = np.array([0.29, 0.0])
POST_RADIUS = 0.03
POST_HEIGHT = 0.10
TARGET_REGION = {  # (x range, y range) of the target disc's centre
    "obstacle": ((0.39, 0.46), (-0.10, 0.10)),
    "reach": ((0.22, 0.46), (-0.22, 0.22)),
}
# Start pose: tool tip near the base, pointing down (joint noise added per episode).
HOME_TIP = np.array([0.15, 0.0, 0.07])
TOOL_PITCH = -np.pi / 2  # shoulder_lift + elbow + wrist for a tool pointing straight down
HOME_NOISE_RAD = 0.05
MAX_EPISODE_STEPS = 80


def _preload_triton() -> None:
    """Load triton's LLVM before the GL library's (Mesa's software EGL, llvmpipe, brings its own LLVM).

    In the other order the process segfaults as soon as torch imports triton (e.g. through torch._dynamo
    when diffusers or torchvision load), so rendering first and importing the policy later would crash.
    Costs a fraction of a second, and only where triton is installed and a renderer is made."""
    import importlib.util

    try:
        if importlib.util.find_spec("triton") is not None:
            import triton._C.libtriton  # noqa: F401
    except Exception:
        pass


class ArmBase:
    """What the bundled arm tasks share (``ArmEnv`` here, ``PickPlaceEnv`` in ``pick_place.py``): the model
    and its four arm joints, the episode loop (``reset`` / ``step``), the arm's command, the ``front`` camera
    and the kinematics of the tool point (site ``ee``).

    A task's constructor calls ``_load(...)`` (checks, model, joint addresses, timing), sets up its own
    parts, then ``_start(home_tip, seed)`` (renderer, home pose, generator). It provides ``_reset_state(q,
    xy)``, ``advance(seconds)`` (True on the step its failure first happens: a collision, a drop),
    ``set_action(a)``, ``_task_observation()``, ``_info()`` (with ``success`` and ``distance``) and, where a
    failure ends the episode, ``_failed_terminally(info)``.
    """

    home_noise_rad = 0.05  # joint noise added to the home pose at each reset

    # ------------------------------------------------------------------ construction

    def _load(self, asset: Path, image_size, render: bool, control_rate_hz: float, max_episode_steps: int,
              terminate_on_success: bool) -> None:
        """The shared part of the constructor: argument checks, the MuJoCo model, the arm joints' addresses,
        the control period."""
        import mujoco

        name = type(self).__name__
        if control_rate_hz <= 0:
            raise GenilError(f"{name}: control_rate_hz {control_rate_hz} must be > 0")
        h, w = (int(image_size[0]), int(image_size[1]))
        if h <= 0 or w <= 0:
            raise GenilError(f"{name}: image_size {tuple(image_size)} must be positive (height, width)")
        self._mj = mujoco
        self.image_size = (h, w)
        self.render_enabled = bool(render)
        self.control_rate_hz = float(control_rate_hz)
        self.max_episode_steps = int(max_episode_steps)
        self.terminate_on_success = bool(terminate_on_success)
        self.joint_names = list(JOINT_NAMES)
        self.joint_limits = (JOINT_LIMITS[0].copy(), JOINT_LIMITS[1].copy())

        m = mujoco.MjModel.from_xml_path(str(asset))
        self.model = m
        self.data = mujoco.MjData(m)
        self._kin = mujoco.MjData(m)  # scratch data for kinematics (IK) that never touches the episode
        self._qadr = np.array([m.jnt_qposadr[m.joint(n).id] for n in JOINT_NAMES])
        self._dadr = np.array([m.jnt_dofadr[m.joint(n).id] for n in JOINT_NAMES])
        self._act = np.array([m.actuator(n.replace("_joint", "")).id for n in JOINT_NAMES])
        self._ee_site = m.site("ee").id
        steps = (1.0 / self.control_rate_hz) / m.opt.timestep
        self.n_substeps = max(1, int(round(steps)))
        self.dt = self.n_substeps * m.opt.timestep

    def _start(self, home_tip, seed: Optional[int]) -> None:
        """The renderer, the home pose (tool tip at ``home_tip``, pointing down) and the episode generator."""
        self._make_renderer()
        self.home_qpos = self.solve_ik(home_tip, q0=np.array([0.0, 1.0, -2.0, -0.5]))
        self._rng = np.random.default_rng(seed)
        self.command = self.home_qpos.copy()
        self.elapsed_steps = 0
        self.episode_seed: Optional[int] = None

    # ------------------------------------------------------------------ gymnasium-style API

    def _draw_start(self, seed: Optional[int], region, options: Optional[dict], key: str):
        """A new episode's draw: the table position (x, y) of the task's item in ``region`` (or
        ``options[key]``) and the arm's start joints (home plus noise)."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.episode_seed = seed
        (x0, x1), (y0, y1) = region
        xy = np.array([self._rng.uniform(x0, x1), self._rng.uniform(y0, y1)])
        if options and key in options:
            xy = np.asarray(options[key], dtype=np.float64).reshape(2)
        q = self.home_qpos + self._rng.uniform(-self.home_noise_rad, self.home_noise_rad, size=4)
        return xy, q

    def step(self, action):
        """Apply ``action``, advance one control period: ``(obs, reward, terminated, truncated, info)``.
        Reward = ``-distance`` (+1 on success, -1 on the step the task's failure first happens)."""
        self.set_action(action)
        failed_now = self.advance(self.dt)
        self.elapsed_steps += 1
        obs = self.observe()
        info = self._info()
        reward = -info["distance"] + (1.0 if info["success"] else 0.0) - (1.0 if failed_now else 0.0)
        terminated = bool((info["success"] and self.terminate_on_success) or self._failed_terminally(info))
        truncated = bool(self.elapsed_steps >= self.max_episode_steps and not terminated)
        return obs, float(reward), terminated, truncated, info

    def _failed_terminally(self, info: dict) -> bool:
        return False

    # ------------------------------------------------------------------ finer control (used by the ROS node)

    def set_command(self, q) -> np.ndarray:
        """Set the arm's joint position targets (clipped to the limits); returns what was applied."""
        name = type(self).__name__
        q = np.asarray(q, dtype=np.float64).reshape(-1)
        if q.shape != (4,):
            raise GenilError(f"{name}: arm command must have 4 joint targets ({', '.join(JOINT_NAMES)}), "
                             f"got {q.shape[0]}")
        if not np.all(np.isfinite(q)):
            raise GenilError(f"{name}: arm command has non-finite values {q.tolist()}")
        self.command = np.clip(q, self.joint_limits[0], self.joint_limits[1])
        self.data.ctrl[self._act] = self.command
        return self.command.copy()

    @property
    def sim_time(self) -> float:
        return float(self.data.time)

    def observe(self, image: Optional[bool] = None) -> dict:
        """The observation: ``joint_pos``, ``joint_vel``, the task's own entries, ``ee_pos`` (float32) and the
        ``front`` camera's ``image`` (when rendering, unless ``image`` is False)."""
        d = self.data
        obs = {
            "joint_pos": d.qpos[self._qadr].astype(np.float32),
            "joint_vel": d.qvel[self._dadr].astype(np.float32),
            **self._task_observation(),
            "ee_pos": d.site_xpos[self._ee_site].astype(np.float32),
        }
        if self._renderer is not None and image is not False:
            obs["image"] = self.render()
        return obs

    # ------------------------------------------------------------------ camera

    def _make_renderer(self) -> None:
        """The observation renderer (none when ``render_enabled`` is False)."""
        self._renderer = None
        self._extra_renderers = {}
        if not self.render_enabled:
            return
        _preload_triton()
        h, w = self.image_size
        try:
            self._renderer = self._mj.Renderer(self.model, height=h, width=w)
        except Exception as e:  # no GL: say how to fix it, in one line
            raise GenilError(f"{type(self).__name__}: cannot create an offscreen renderer ({e}); set MUJOCO_GL=egl "
                             "(or osmesa), or pass render=False") from None

    def render(self, size: Optional[tuple] = None) -> np.ndarray:
        """The ``front`` camera image (H, W, 3) uint8 RGB of the current state.

        ``size`` = (height, width) renders at another size (e.g. for videos; up to 480 x 640) with a second
        renderer kept for that size; the default is the observation's ``image_size``."""
        if self._renderer is None:
            raise GenilError(f"{type(self).__name__}: created with render=False, so it has no camera image")
        r = self._renderer
        if size is not None and tuple(size) != self.image_size:
            h, w = int(size[0]), int(size[1])
            if not (0 < h <= 480 and 0 < w <= 640):
                raise GenilError(f"{type(self).__name__}: render size {tuple(size)} must be within (480, 640)")
            r = self._extra_renderers.get((h, w))
            if r is None:
                r = self._extra_renderers[(h, w)] = self._mj.Renderer(self.model, height=h, width=w)
        r.update_scene(self.data, camera=CAMERA_NAME)
        return r.render().copy()

    def close(self) -> None:
        for r in list(self._extra_renderers.values()) + ([self._renderer] if self._renderer is not None else []):
            r.close()
        self._extra_renderers = {}
        self._renderer = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ episode state

    def info(self) -> dict:
        """The task's ``info`` dict for the current state (what ``step`` returns), e.g. for a ROS node's status."""
        return self._info()

    # ------------------------------------------------------------------ kinematics

    def forward_kinematics(self, q) -> np.ndarray:
        """Tool tip position (3,) for joint positions ``q`` (does not touch the episode state)."""
        k = self._kin
        k.qpos[self._qadr] = q
        self._mj.mj_kinematics(self.model, k)
        return k.site_xpos[self._ee_site].copy()

    def solve_ik(self, tip, q0=None, pitch: float = TOOL_PITCH, iters: int = 100, tol: float = 1e-5) -> np.ndarray:
        """Joint positions that put the tool tip at ``tip`` with the tool pitched at ``pitch`` (straight down).

        Damped least squares on MuJoCo's site Jacobian (``mj_jacSite``) plus one row for the tool pitch
        (shoulder_lift + elbow + wrist), warm-started from ``q0``; the result is clipped to the joint limits.
        """
        mj, m, k = self._mj, self.model, self._kin
        tip = np.asarray(tip, dtype=np.float64)
        q = np.array(q0 if q0 is not None else self.home_qpos, dtype=np.float64)
        jacp = np.zeros((3, m.nv))
        J = np.zeros((4, 4))
        J[3, 1:] = 1.0
        lam = 1e-4
        for _ in range(iters):
            k.qpos[self._qadr] = q
            mj.mj_kinematics(m, k)
            mj.mj_comPos(m, k)
            err = np.empty(4)
            err[:3] = tip - k.site_xpos[self._ee_site]
            err[3] = pitch - (q[1] + q[2] + q[3])
            if np.max(np.abs(err)) < tol:
                break
            mj.mj_jacSite(m, k, jacp, None, self._ee_site)
            J[:3] = jacp[:, self._dadr]
            dq = J.T @ np.linalg.solve(J @ J.T + lam * np.eye(4), err)
            n = np.linalg.norm(dq)
            if n > 0.3:
                dq *= 0.3 / n
            q = np.clip(q + dq, self.joint_limits[0], self.joint_limits[1])
        return q


class ArmEnv(ArmBase):
    """Gymnasium-style arm task: ``reset(seed) -> (obs, info)``, ``step(action) -> (obs, r, term, trunc, info)``.

    ``obs`` = ``{"joint_pos": (4,), "joint_vel": (4,), "image": (H, W, 3) uint8 (only when render=True),
    "goal": (3,), "ee_pos": (3,)}`` as float32 (image uint8). ``info`` = ``{"success": bool, "collided": bool,
    "distance": float, "is_success": bool}``; ``success`` is "the tip is within ``SUCCESS_RADIUS`` of the goal
    and the arm has not touched the post this episode". ``terminated`` = success (``terminate_on_success``),
    ``truncated`` after ``max_episode_steps``. Reward = ``-distance`` (+1 on success, -1 on the step that
    first touches the post).
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, variant: str = "obstacle", image_size=(96, 96), render: bool = True,
                 seed: Optional[int] = None, control_rate_hz: float = 10.0,
                 max_episode_steps: int = MAX_EPISODE_STEPS, terminate_on_success: bool = True):
        if variant not in VARIANTS:
            raise GenilError(f"ArmEnv: variant {variant!r} is not one of {', '.join(VARIANTS)}")
        self.variant = variant
        self._load(ASSET_PATH, image_size, render, control_rate_hz, max_episode_steps, terminate_on_success)
        m = self.model
        self._target_mocap = m.body_mocapid[m.body("target").id]
        self._post_mocap = m.body_mocapid[m.body("post").id]
        self._post_geom = m.geom("post").id
        arm_bodies = {m.body(b).id for b in ("turret", "upper_arm", "forearm", "hand")}
        self._arm_geoms = {g for g in range(m.ngeom) if m.geom_bodyid[g] in arm_bodies}
        if variant == "reach":  # no post: invisible and without contacts
            m.geom_rgba[self._post_geom, 3] = 0.0
            m.geom_contype[self._post_geom] = 0
            m.geom_conaffinity[self._post_geom] = 0
            self.data.mocap_pos[self._post_mocap] = [0.0, 0.0, -1.0]
        self.has_obstacle = variant == "obstacle"

        self._start(HOME_TIP, seed)
        self.goal = np.zeros(3)
        self.target_xy = np.zeros(2)
        self.collided = False
        self._reset_state(self.home_qpos)

    # ------------------------------------------------------------------ gymnasium-style API

    home_noise_rad = HOME_NOISE_RAD

    def reset(self, seed: Optional[int] = None, options: Optional[dict] = None):
        """New episode: the target at a random spot of the variant's region (or ``options["target_xy"]``), the
        arm at home plus joint noise."""
        xy, q = self._draw_start(seed, TARGET_REGION[self.variant], options, "target_xy")
        self.set_target(xy)
        self._reset_state(q)
        obs = self.observe()
        return obs, self._info()

    # ------------------------------------------------------------------ finer control (used by the ROS node)

    def set_target(self, xy) -> None:
        """Place the target disc at table position ``xy`` (x, y) and set the goal point above it."""
        xy = np.asarray(xy, dtype=np.float64).reshape(2)
        self.target_xy = xy.copy()
        self.data.mocap_pos[self._target_mocap] = [xy[0], xy[1], 0.0]
        self.goal = np.array([xy[0], xy[1], GOAL_HEIGHT])

    def set_action(self, action) -> np.ndarray:
        """Apply a full action: the 4 arm joint targets (``set_command``)."""
        return self.set_command(action)

    def advance(self, seconds: float) -> bool:
        """Run the physics for ``seconds`` (rounded to whole timesteps); True if the post was first touched now."""
        n = max(1, int(round(seconds / self.model.opt.timestep)))
        was = self.collided
        for _ in range(n):
            self._mj.mj_step(self.model, self.data)
            if self.has_obstacle and not self.collided and self.data.ncon:
                self.collided = self._touching_post()
        return self.collided and not was

    def _task_observation(self) -> dict:
        return {"goal": self.goal.astype(np.float32)}

    def is_success(self) -> bool:
        return bool(self.distance() < SUCCESS_RADIUS and not self.collided)

    def joint_state(self) -> tuple:
        """``(names, position, velocity, effort)`` of the four joints, as a ``sensor_msgs/JointState`` carries
        them (effort = the actuator's torque)."""
        d = self.data
        return (list(JOINT_NAMES), d.qpos[self._qadr].copy(), d.qvel[self._dadr].copy(),
                d.actuator_force[self._act].copy())

    def distance(self) -> float:
        return float(np.linalg.norm(self.data.site_xpos[self._ee_site] - self.goal))

    def state_vector(self, obs: Optional[dict] = None) -> np.ndarray:
        """Low-dim state for state-based RL: joint_pos (4), joint_vel (4), goal (3), ee_pos (3) -> (14,) float32."""
        o = obs if obs is not None else self.observe(image=False)
        return np.concatenate([o["joint_pos"], o["joint_vel"], o["goal"], o["ee_pos"]]).astype(np.float32)

    state_dim = 14
    action_dim = 4

    def episode_info(self) -> dict:
        """What describes the episode (for logs and the sim node's ~/episode topic); no expert mode in it."""
        return {
            "variant": self.variant,
            "seed": self.episode_seed,
            "goal": [float(v) for v in self.goal],
            "target_xy": [float(v) for v in self.target_xy],
            "obstacle": ({"x": float(POST_POS[0]), "y": float(POST_POS[1]), "radius": POST_RADIUS,
                          "height": POST_HEIGHT} if self.has_obstacle else None),
            "success_radius": SUCCESS_RADIUS,
            "joint_names": list(JOINT_NAMES),
        }

    # ------------------------------------------------------------------ internals

    def _reset_state(self, q) -> None:
        mj, d = self._mj, self.data
        d.qpos[:] = 0.0
        d.qvel[:] = 0.0
        d.act[:] = 0.0 if d.act.size else d.act
        d.time = 0.0
        d.qpos[self._qadr] = np.clip(q, self.joint_limits[0], self.joint_limits[1])
        self.command = d.qpos[self._qadr].copy()
        d.ctrl[self._act] = self.command
        self.collided = False
        self.elapsed_steps = 0
        mj.mj_forward(self.model, d)

    def _touching_post(self) -> bool:
        d = self.data
        for i in range(d.ncon):
            c = d.contact[i]
            g1, g2 = int(c.geom1), int(c.geom2)
            if (g1 == self._post_geom and g2 in self._arm_geoms) or (g2 == self._post_geom and g1 in self._arm_geoms):
                return True
        return False

    def _info(self) -> dict:
        dist = self.distance()
        ok = bool(dist < SUCCESS_RADIUS and not self.collided)
        return {"success": ok, "is_success": ok, "collided": bool(self.collided), "distance": dist}
