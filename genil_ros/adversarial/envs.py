"""Environments for adversarial RL: a vectorised wrapper over ArmEnv-style environments, the mapping
from policy outputs to joint targets and from observations to policy / discriminator vectors, and a tiny
numpy point-mass task with the same observation contract (for fast tests and for checking the trainer
without MuJoCo).

Observation contract (docs/interfaces.md, ``sim/env.py``): a dict with ``joint_pos``, ``joint_vel``,
``goal``, ``ee_pos``; ``info["success"]``; action = absolute joint position targets.

- policy (RL) input: ``[joint_pos, joint_vel, goal]`` (privileged goal, as the sim allows for RL);
- discriminator state: ``joint_pos`` (+ ``joint_vel`` when ``task.use_velocity``), i.e. exactly the
  dataset ``"state"`` vector recorded in bags (see ``discriminators.py``); with ``adversarial.disc_goal``
  (scripted-expert data only) also ``[goal, ee_pos - goal]``, a goal-conditioned discriminator.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

__all__ = ["PointReachEnv", "PointReachExpert", "ObsSpec", "ActionMap", "VecEnv"]


class PointReachEnv:
    """A point in the plane that follows position targets: the smallest "arm" with the ArmEnv contract.

    Two "joints" ``q`` in [-1, 1]^2; each step ``q`` moves toward the (clipped) target by at most
    ``max_step``; ``joint_vel = dq * control_rate_hz``. A goal is drawn uniformly in [-0.8, 0.8]^2 and the
    start in the same box; success when ``|q - goal| < 0.05``. Reward ``exp(-5 |q - goal|)`` in (0, 1].
    Episodes are cut at ``max_episode_steps`` (truncation, not termination).
    """

    JOINT_NAMES = ["joint_x", "joint_y"]
    JOINT_LIMITS = (np.array([-1.0, -1.0]), np.array([1.0, 1.0]))

    def __init__(self, seed: Optional[int] = None, max_step: float = 0.1, control_rate_hz: float = 10.0,
                 max_episode_steps: int = 40, success_radius: float = 0.05):
        self.rng = np.random.default_rng(seed)
        self.max_step = max_step
        self.rate = control_rate_hz
        self.max_episode_steps = max_episode_steps
        self.success_radius = success_radius
        self.q = np.zeros(2)
        self.v = np.zeros(2)
        self.goal = np.zeros(2)
        self.t = 0

    def _obs(self) -> dict:
        return {"joint_pos": self.q.astype(np.float32), "joint_vel": self.v.astype(np.float32),
                "goal": self.goal.astype(np.float32), "ee_pos": np.array([*self.q, 0.0], np.float32)}

    def reset(self, seed: Optional[int] = None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.q = self.rng.uniform(-0.8, 0.8, 2)
        self.v = np.zeros(2)
        self.goal = self.rng.uniform(-0.8, 0.8, 2)
        self.t = 0
        return self._obs(), {"success": False}

    def step(self, action):
        lo, hi = self.JOINT_LIMITS
        target = np.clip(np.asarray(action, dtype=np.float64), lo, hi)
        dq = np.clip(target - self.q, -self.max_step, self.max_step)
        self.q = np.clip(self.q + dq, lo, hi)
        self.v = dq * self.rate
        self.t += 1
        dist = float(np.linalg.norm(self.q - self.goal))
        success = dist < self.success_radius
        truncated = self.t >= self.max_episode_steps
        return self._obs(), float(np.exp(-5.0 * dist)), False, truncated, {"success": success, "distance": dist}


class PointReachExpert:
    """Moves straight to the goal at a slow, constant ``speed`` per step: a distinctive style that
    task-reward-only RL (which goes as fast as allowed) does not reproduce."""

    def __init__(self, env: PointReachEnv, seed: Optional[int] = None, speed: float = 0.04):
        self.env = env
        self.speed = speed
        self.mode = "straight"

    def reset(self) -> None:
        pass

    def act(self, obs: dict) -> np.ndarray:
        q, g = obs["joint_pos"].astype(np.float64), obs["goal"].astype(np.float64)
        d = g - q
        n = np.linalg.norm(d)
        step = d if n <= self.speed else d / n * self.speed
        return (q + step).astype(np.float32)


class ObsSpec:
    """Which observation entries make the policy input and the discriminator state."""

    def __init__(self, use_velocity: bool = False, use_goal: bool = False):
        self.use_velocity = use_velocity
        self.use_goal = use_goal

    def policy_obs(self, obs: dict) -> np.ndarray:
        return np.concatenate([obs["joint_pos"], obs["joint_vel"], obs["goal"]]).astype(np.float32)

    def disc_state(self, obs: dict) -> np.ndarray:
        parts = [obs["joint_pos"]] + ([obs["joint_vel"]] if self.use_velocity else [])
        if self.use_goal:  # privileged task context: the goal and the tool tip's offset from it
            g = np.asarray(obs["goal"], np.float32)
            parts += [g, np.asarray(obs["ee_pos"], np.float32)[: len(g)] - g]
        return np.concatenate(parts).astype(np.float32)


class ActionMap:
    """Policy output ``u`` -> absolute joint targets ``clip(q + scale * u, lower, upper)``.

    A delta around the current position keeps the policy's output scale independent of the arm's
    pose; the target sent to the robot (and recorded as the action) is absolute, as in the bags."""

    def __init__(self, scale: float, lower: Optional[Sequence[float]] = None, upper: Optional[Sequence[float]] = None):
        self.scale = float(scale)
        self.lower = None if lower is None else np.asarray(lower, np.float32)
        self.upper = None if upper is None else np.asarray(upper, np.float32)

    def __call__(self, joint_pos: np.ndarray, u: np.ndarray) -> np.ndarray:
        a = joint_pos + self.scale * np.clip(u, -1.0, 1.0)
        if self.lower is not None:
            a = np.clip(a, self.lower, self.upper)
        return a.astype(np.float32)


class VecEnv:
    """N environments stepped in lock-step with automatic reset (synchronous; one process).

    ``step`` returns the *next* observations (already reset where an episode ended) and, per env,
    ``final_obs`` (the observation that ended the episode, else None), ``terminated``, ``truncated``,
    ``success``. ``max_episode_steps`` adds a time limit on top of the env's own.
    """

    def __init__(self, env_fns: Sequence[Callable[[], object]], max_episode_steps: Optional[int] = None,
                 seed: int = 0):
        self.envs = [fn() for fn in env_fns]
        self.n = len(self.envs)
        self.max_episode_steps = max_episode_steps
        self.seed = seed
        self._episode_count = 0
        self.steps = np.zeros(self.n, dtype=np.int64)
        self.obs: list[dict] = [None] * self.n  # type: ignore[list-item]

    def _next_seed(self) -> int:
        self._episode_count += 1
        return int(self.seed * 1_000_003 + self._episode_count)

    def reset(self) -> list[dict]:
        for i, env in enumerate(self.envs):
            self.obs[i], _ = env.reset(seed=self._next_seed())
            self.steps[i] = 0
        return list(self.obs)

    def step(self, actions: np.ndarray):
        rewards = np.zeros(self.n, dtype=np.float32)
        term = np.zeros(self.n, dtype=bool)
        trunc = np.zeros(self.n, dtype=bool)
        success = np.zeros(self.n, dtype=bool)
        final: list[Optional[dict]] = [None] * self.n
        for i, env in enumerate(self.envs):
            o, r, te, tr, info = env.step(actions[i])
            self.steps[i] += 1
            if self.max_episode_steps is not None and self.steps[i] >= self.max_episode_steps:
                tr = True
            rewards[i] = r
            term[i] = bool(te)
            trunc[i] = bool(tr) and not te
            success[i] = bool(info.get("success", False))
            if te or tr:
                final[i] = o
                o, _ = env.reset(seed=self._next_seed())
                self.steps[i] = 0
            self.obs[i] = o
        return list(self.obs), rewards, term, trunc, success, final

    def close(self) -> None:
        for env in self.envs:
            close = getattr(env, "close", None)
            if close is not None:
                close()
