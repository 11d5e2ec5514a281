"""Batched, chunk-level episodes in the bundled sim (direct, no ROS, faster than real time).

E episodes run in lockstep for a fixed number of control ticks. At every decision (every T_a ticks) the
policy gets the observation windows of all E episodes in one call, ``decide(windows, images) -> (chunks,
extras)``, and entries ``T_o - 1 .. T_o - 1 + T_a - 1`` of each chunk are executed, as the policy node
does (receding horizon). At the first decision the window is padded with the first observation.

:func:`expert_batch` runs the task's scripted expert the same way (one action per tick), for demonstrations
and for the expert's own motion statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

__all__ = ["EpisodeBatch", "run_batch", "expert_batch", "decision_ranges"]

Decide = Callable[[np.ndarray, Optional[np.ndarray]], tuple]


def decision_ranges(steps: int, n_action_steps: int) -> list[tuple[int, int]]:
    """The tick range [start, stop) each decision executes in an episode of ``steps`` ticks."""
    return [(s, min(s + n_action_steps, steps)) for s in range(0, steps, n_action_steps)]


@dataclass
class EpisodeBatch:
    """E episodes of S ticks. ``states`` (E, S + 1, D): the policy's state at every tick, the last one after
    the last action; ``actions`` (E, S, A): what was executed (policy order); ``task_rewards`` (E, S): the
    env's reward; ``success`` (E,): success at any tick; ``arm_q`` (E, S + 1, 4): the arm's joint positions;
    ``decisions``: per-decision arrays (E, n_dec, ...) returned by the decider (empty for the expert);
    ``ranges``: the ticks each decision executed."""

    states: np.ndarray
    actions: np.ndarray
    task_rewards: np.ndarray
    success: np.ndarray
    arm_q: np.ndarray
    seeds: list[int]
    ranges: list[tuple[int, int]] = field(default_factory=list)
    decisions: dict = field(default_factory=dict)
    infos: list[dict] = field(default_factory=list)

    @property
    def num_episodes(self) -> int:
        return int(self.states.shape[0])

    @property
    def steps(self) -> int:
        return int(self.actions.shape[1])

    def per_decision(self, per_tick: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
        """(E, n_dec) discounted sums of a per-tick quantity over each decision's ticks, and (n_dec,) the
        discount gamma^(ticks) from one decision to the next."""
        sums = np.zeros((per_tick.shape[0], len(self.ranges)), np.float64)
        disc = np.zeros(len(self.ranges), np.float64)
        for d, (a, b) in enumerate(self.ranges):
            w = gamma ** np.arange(b - a)
            sums[:, d] = (per_tick[:, a:b] * w).sum(1)
            disc[d] = gamma ** (b - a)
        return sums.astype(np.float32), disc.astype(np.float32)

    def transitions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(state, action, next_state) of every tick, flattened to (E * S, ...)."""
        E, S = self.actions.shape[:2]
        return (self.states[:, :-1].reshape(E * S, -1), self.actions.reshape(E * S, -1),
                self.states[:, 1:].reshape(E * S, -1))

    def motion_episodes(self) -> list[dict]:
        """Per episode ``{"state": q, "next_state": q'}`` of the arm joints (``adversarial.metrics`` input)."""
        return [{"state": q[:-1], "next_state": q[1:]} for q in self.arm_q]

    def policy_episodes(self) -> list[dict]:
        """Per episode ``{"state", "action", "next_state"}`` in the policy's layout (discriminator input)."""
        return [{"state": s[:-1], "action": a, "next_state": s[1:]} for s, a in zip(self.states, self.actions)]


def _zeros(E: int, steps: int, D: int, A: int) -> tuple:
    """An EpisodeBatch's arrays, zeroed: states (E, S + 1, D), actions (E, S, A), task rewards (E, S),
    success (E,), arm_q (E, S + 1, 4)."""
    return (np.zeros((E, steps + 1, D), np.float32), np.zeros((E, steps, A), np.float32),
            np.zeros((E, steps), np.float32), np.zeros(E, bool), np.zeros((E, steps + 1, 4), np.float32))


def _window(hist: list, T_o: int) -> list:
    return ([hist[0]] * (T_o - len(hist)) + hist)[-T_o:]


def run_batch(adapter, envs: Sequence, decide: Decide, seeds: Sequence[int], steps: int, n_obs_steps: int,
              n_action_steps: int) -> EpisodeBatch:
    """Run ``len(seeds)`` episodes (env i reset with seed i) of ``steps`` ticks with chunks from ``decide``."""
    E, T_o = len(seeds), int(n_obs_steps)
    if len(envs) < E:
        raise ValueError(f"{E} episodes need {E} environments, got {len(envs)}")
    obs = [envs[i].reset(seed=int(seeds[i]))[0] for i in range(E)]
    states, actions, rewards, success, arm_q = _zeros(E, steps, adapter.state_dim, adapter.action_dim)
    hist_s = [[adapter.state(o)] for o in obs]
    hist_i = [[adapter.image(o)] for o in obs]
    for i, o in enumerate(obs):
        states[i, 0] = hist_s[i][0]
        arm_q[i, 0] = adapter.arm_q(o)
    ranges = decision_ranges(steps, n_action_steps)
    extras: dict[str, list] = {}
    infos: list[dict] = [{} for _ in range(E)]
    for a, b in ranges:
        win = np.stack([np.stack(_window(h, T_o)) for h in hist_s])
        imgs = None if adapter.camera is None else np.stack([np.stack(_window(h, T_o)) for h in hist_i])
        chunks, ext = decide(win, imgs)
        for k, v in (ext or {}).items():
            extras.setdefault(k, []).append(np.asarray(v))
        for i in range(E):
            for t in range(a, b):
                act = np.asarray(chunks[i, T_o - 1 + t - a], np.float32)
                o, r, _, _, info = envs[i].step(adapter.env_action(act))
                s = adapter.state(o)
                actions[i, t], rewards[i, t], states[i, t + 1] = act, r, s
                arm_q[i, t + 1] = adapter.arm_q(o)
                success[i] |= bool(info.get("success", False))
                infos[i] = info
                hist_s[i] = (hist_s[i] + [s])[-T_o:]
                if adapter.camera is not None:
                    hist_i[i] = (hist_i[i] + [adapter.image(o)])[-T_o:]
    decisions = {k: np.stack(v, axis=1) for k, v in extras.items()}  # (E, n_dec, ...)
    return EpisodeBatch(states, actions, rewards, success, arm_q, [int(s) for s in seeds], ranges, decisions, infos)


def expert_batch(adapter, envs: Sequence, seeds: Sequence[int], steps: int, expert_seed: int = 0) -> EpisodeBatch:
    """The task's scripted expert for ``len(seeds)`` fixed-length episodes (its actions in the policy's
    order; it picks its mode per episode at random)."""
    E = len(seeds)
    states, actions, rewards, success, arm_q = _zeros(E, steps, adapter.state_dim, adapter.action_dim)
    infos = []
    for i in range(E):
        env = envs[i % len(envs)]
        ex = adapter.task.expert(env, seed=expert_seed * 100_003 + int(seeds[i]))
        o, info = env.reset(seed=int(seeds[i]))
        ex.reset()
        states[i, 0], arm_q[i, 0] = adapter.state(o), adapter.arm_q(o)
        for t in range(steps):
            a_env = np.asarray(ex.act(o), np.float64)
            o, r, _, _, info = env.step(a_env)
            actions[i, t] = adapter.policy_action(a_env)
            rewards[i, t], states[i, t + 1], arm_q[i, t + 1] = r, adapter.state(o), adapter.arm_q(o)
            success[i] |= bool(info.get("success", False))
        infos.append(info)
    return EpisodeBatch(states, actions, rewards, success, arm_q, [int(s) for s in seeds], [], {}, infos)
