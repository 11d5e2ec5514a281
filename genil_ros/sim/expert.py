"""A scripted expert for the bundled arm task, with two modes (left / right of the post).

Per episode it picks a mode at random (50/50), plans a smooth tool-tip path in the table plane from where
the tip is to the goal -- a quadratic Bezier through a via point beside the post on the chosen side -- and
times it with a minimum-jerk profile. Each control step it returns the joint position targets that put the
tip on the path, from MuJoCo-Jacobian IK (``ArmEnv.solve_ik``) warm-started from the previous solution, so
the actions are smooth absolute joint targets. In the "reach" variant the path is a straight line (the mode
is still drawn and recorded, but both modes give the same path).

The expert uses privileged observations: ``obs["goal"]`` (and ``obs["joint_pos"]``). Over ROS the goal comes
from the sim node's ``~/episode`` topic (see ``genil_ros/ros/record_demos.py``); ``env`` is then only the
kinematic model (an ``ArmEnv(render=False)``).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from genil_ros.sim import env as E

MODES = ("left", "right")


class TwoModeExpert:
    """What both scripted experts share (this one and ``pick_place_expert.PickPlaceExpert``): a generator of
    their own, from which each episode's mode is drawn (not a function of the observation), and the IK
    warm start. A subclass's ``reset(mode)`` calls ``_new_episode(mode)`` and draws its own per-episode
    variations after it."""

    def __init__(self, env, seed: Optional[int] = None):
        self.env = env
        self._rng = np.random.default_rng(seed)
        self.mode: Optional[str] = None
        self.reset()

    def reset(self, mode: Optional[str] = None) -> None:
        raise NotImplementedError

    def _new_episode(self, mode: Optional[str]) -> None:
        """Draw the episode's mode (or force ``mode``) and forget the last episode's pose."""
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        self.mode = mode or MODES[int(self._rng.integers(2))]
        self._k = 0
        self._q = None


def run_to_end(env, act, seed: Optional[int] = None) -> tuple[dict, dict, int]:
    """Reset ``env`` (``seed``) and step it with ``act(obs)`` until the episode ends: (last obs, info, steps)."""
    obs, info = env.reset(seed=seed)
    steps = 0
    while True:
        obs, _, terminated, truncated, info = env.step(act(obs))
        steps += 1
        if terminated or truncated:
            return obs, info, steps


class ScriptedExpert(TwoModeExpert):
    """``reset()`` at each episode start, then ``act(obs) -> (4,) joint targets`` once per control step."""

    max_tip_speed = 0.16  # m/s along the path
    min_duration_s = 2.2
    clearance = 0.075  # minimum horizontal distance of the tip path from the post's axis (m)

    def __init__(self, env: "E.ArmEnv", seed: Optional[int] = None):
        super().__init__(env, seed)

    def reset(self, mode: Optional[str] = None) -> None:
        """Start a new episode: draw the mode (or force ``mode``); the path is planned at the first ``act``."""
        self._new_episode(mode)
        self._side_offset = float(self._rng.uniform(0.13, 0.16))
        self._speed_scale = float(self._rng.uniform(0.85, 1.15))
        self._plan = None

    # ------------------------------------------------------------------ acting

    def act(self, obs: dict) -> np.ndarray:
        q_now = np.asarray(obs["joint_pos"], dtype=np.float64)
        goal = np.asarray(obs["goal"], dtype=np.float64)
        if self._plan is not None and np.max(np.abs(goal - self._goal)) > 1e-6:
            self.reset()  # a new episode without reset(): start over with a new mode
        if self._plan is None:
            self._goal = goal.copy()
            self._make_plan(q_now, goal)
            self._q = q_now.copy()
        self._k += 1
        tau = min(1.0, self._k * self.env.dt / self._duration)
        s = 10 * tau**3 - 15 * tau**4 + 6 * tau**5  # minimum jerk
        tip = self._point(s)
        pitch = self._pitch0 + (E.TOOL_PITCH - self._pitch0) * min(1.0, 2.0 * s)  # straighten the tool gently
        self._q = self.env.solve_ik(tip, q0=self._q, pitch=pitch, iters=50)
        return self._q.astype(np.float32)

    @property
    def done(self) -> bool:
        """True once the planned path has been fully commanded (the expert then holds the goal)."""
        return self._plan is not None and self._k * self.env.dt >= self._duration

    # ------------------------------------------------------------------ planning

    def _make_plan(self, q_now: np.ndarray, goal: np.ndarray) -> None:
        start = self.env.forward_kinematics(q_now)
        self._pitch0 = float(q_now[1] + q_now[2] + q_now[3])
        p0, p2 = start[:2], goal[:2]
        ctrl = None
        if self.env.has_obstacle:
            post = E.POST_POS
            sign = 1.0 if self.mode == "left" else -1.0
            offset = self._side_offset
            for _ in range(10):
                via = np.array([post[0], post[1] + sign * offset])
                ctrl = 2 * via - 0.5 * (p0 + p2)  # the Bezier passes through `via` at s = 0.5
                pts = self._bezier(p0, ctrl, p2, np.linspace(0, 1, 200))
                if np.min(np.linalg.norm(pts - post, axis=1)) >= self.clearance:
                    break
                offset += 0.02
        if ctrl is None:
            ctrl = 0.5 * (p0 + p2)  # straight line
        self._plan = (p0, ctrl, p2, start[2], goal[2])
        pts = self._bezier(p0, ctrl, p2, np.linspace(0, 1, 200))
        length = float(np.sum(np.linalg.norm(np.diff(pts, axis=0), axis=1)))
        self._duration = max(self.min_duration_s, 1.6 * length / self.max_tip_speed) * self._speed_scale

    @staticmethod
    def _bezier(p0, c, p2, s):
        s = np.asarray(s)[..., None]
        return (1 - s) ** 2 * p0 + 2 * s * (1 - s) * c + s**2 * p2

    def _point(self, s: float) -> np.ndarray:
        p0, c, p2, z0, z1 = self._plan
        xy = self._bezier(p0, c, p2, s)
        z = z0 + (z1 - z0) * min(1.0, s * 1.5)  # settle to the goal height a little before arriving
        return np.array([xy[0], xy[1], z])


def run_episode(env: "E.ArmEnv", expert: ScriptedExpert, seed: Optional[int] = None) -> dict:
    """One episode of the expert on ``env`` (direct, no ROS): returns success, mode, steps, collided."""
    expert.reset()
    obs, info, steps = run_to_end(env, expert.act, seed)
    return {"success": bool(info["success"]), "mode": expert.mode, "steps": steps,
            "collided": bool(info["collided"]), "distance": float(info["distance"])}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def main(argv=None) -> int:
    """Print the expert's success rate and mode split: ``python -m genil_ros.sim.expert --episodes 100``."""
    import argparse
    import collections
    import platform
    import time

    ap = argparse.ArgumentParser(prog="python -m genil_ros.sim.expert", description=main.__doc__)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--variant", choices=list(E.VARIANTS), default="obstacle")
    ap.add_argument("--seed", type=int, default=0, help="episode i uses seed + i; the expert uses seed")
    args = ap.parse_args(argv)
    env = E.ArmEnv(variant=args.variant, render=False)
    expert = ScriptedExpert(env, seed=args.seed)
    t0 = time.perf_counter()
    res = [run_episode(env, expert, seed=args.seed + i) for i in range(args.episodes)]
    dt = time.perf_counter() - t0
    modes = collections.Counter(r["mode"] for r in res)
    ok = [r for r in res if r["success"]]
    print(f"scripted expert, {args.variant}, {args.episodes} episodes "
          f"(seeds {args.seed}..{args.seed + args.episodes - 1}): "
          f"success {len(ok) / len(res):.2f}, collisions {np.mean([r['collided'] for r in res]):.2f}, "
          f"modes left {modes['left']} / right {modes['right']}, "
          f"steps to success mean {np.mean([r['steps'] for r in ok]):.1f} max {max(r['steps'] for r in ok)} "
          f"(limit {env.max_episode_steps}); {sum(r['steps'] for r in res) / dt:.0f} env steps/s without rendering "
          f"on {_cpu_name() or platform.machine()} (1 thread)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
