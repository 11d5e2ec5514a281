"""A scripted expert for the pick-and-place task, with two modes: the left or the right bin.

Per episode it draws the bin at random (50/50, from its own generator: the choice is NOT a function of the
observation), then at the first ``act`` plans a path for the grasp point through waypoints -- above the
object, down to it, (close), up, over the chosen bin, down into it, (open), up again -- each segment timed
with a minimum-jerk profile, the gripper ramped open/closed the same way. Each control step it returns the
joint targets that put the grasp point on the path with the tool pointing down, from MuJoCo-Jacobian IK
(``ArmBase.solve_ik``) warm-started from the previous solution, plus the gripper target: smooth absolute
targets, a few hundredths of a radian apart.

Both modes are identical until the object is lifted; from the same start they then part to opposite bins.
An average of the two (what a policy trained with a mean-squared error learns where the demonstrations
split) carries the object to the middle and opens the gripper over the table between the bins:
``run_averaged_episode`` executes exactly that and fails.

The expert reads ``obs["joint_pos"]`` and ``obs["object_pos"]`` (and knows the fixed bin positions);
``reset()`` it at every episode start.

    python -m genil_ros.sim.pick_place_expert --episodes 100             # the expert
    python -m genil_ros.sim.pick_place_expert --episodes 100 --averaged  # the per-tick mean of both modes
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from genil_ros.sim import pick_place as P
from genil_ros.sim.env import TOOL_PITCH
from genil_ros.sim.expert import MODES, TwoModeExpert, run_to_end  # noqa: F401  (MODES: the bins, here too)

GRASP_ABOVE_CENTRE = 0.01  # the grasp point (between the pads) this far above the object's centre
APPROACH_HEIGHT = 0.07  # pre-grasp and pre-release: this far above the grasp / release point
CARRY_Z = 0.12  # grasp point height while carrying (object bottom ~8 cm up, well above the bins' rims)
RELEASE_CLEARANCE = 0.008  # the object's bottom this far above the bin floor when the gripper opens


def _min_jerk(tau: float) -> float:
    tau = min(1.0, max(0.0, tau))
    return 10 * tau**3 - 15 * tau**4 + 6 * tau**5


class PickPlaceExpert(TwoModeExpert):
    """``reset()`` at each episode start, then ``act(obs) -> (5,)`` (4 joint targets + gripper) per control step."""

    max_speed = 0.22  # m/s: peak speed of the grasp point on a segment
    max_joint_speed = 0.8  # rad/s: peak speed of any arm joint on a segment (0.08 rad per tick at 10 Hz)
    min_segment_s = 0.5
    close_s = 0.6  # hold still while the fingers close (they close in the first half)
    open_s = 0.4

    def __init__(self, env: "P.PickPlaceEnv", seed: Optional[int] = None):
        super().__init__(env, seed)

    def reset(self, mode: Optional[str] = None) -> None:
        """Start a new episode: draw the bin (or force ``mode``); the path is planned at the first ``act``."""
        self._new_episode(mode)
        self._speed_scale = float(self._rng.uniform(0.9, 1.1))
        self._release_jitter = self._rng.uniform(-0.015, 0.015, size=2)  # where in the bin (m)
        self._segments = None

    # ------------------------------------------------------------------ acting

    def act(self, obs: dict) -> np.ndarray:
        q_now = np.asarray(obs["joint_pos"], dtype=np.float64)
        if self._segments is None:
            self._plan(q_now, np.asarray(obs["object_pos"], dtype=np.float64))
            self._q = q_now.copy()
        self._k += 1
        t = self._k * self.env.dt
        for seg in self._segments:
            if t <= seg["t1"] or seg is self._segments[-1]:
                break
        tau = (t - seg["t0"]) / (seg["t1"] - seg["t0"])
        s = _min_jerk(tau)
        tip = seg["p0"] + s * (seg["p1"] - seg["p0"])
        pitch = TOOL_PITCH
        if seg["name"] == "approach":  # straighten the tool gently from the (noisy) start pose
            pitch = self._pitch0 + (TOOL_PITCH - self._pitch0) * min(1.0, 2.0 * s)
        g = seg["g0"] + _min_jerk(2.0 * tau) * (seg["g1"] - seg["g0"])  # grippers move in the first half
        self._q = self.env.solve_ik(tip, q0=self._q, pitch=pitch, iters=50)
        return np.append(self._q, g).astype(np.float32)

    @property
    def done(self) -> bool:
        """True once the whole plan has been commanded (the expert then holds the last pose)."""
        return self._segments is not None and self._k * self.env.dt >= self._segments[-1]["t1"]

    @property
    def duration(self) -> float:
        return self._segments[-1]["t1"] if self._segments else 0.0

    # ------------------------------------------------------------------ planning

    def _plan(self, q_now: np.ndarray, obj: np.ndarray) -> None:
        start = self.env.forward_kinematics(q_now)
        self._pitch0 = float(q_now[1] + q_now[2] + q_now[3])
        grasp = obj + [0.0, 0.0, GRASP_ABOVE_CENTRE]
        above_obj = grasp + [0.0, 0.0, APPROACH_HEIGHT]
        lift = np.array([grasp[0], grasp[1], CARRY_Z])
        bin_xy = P.BINS[self.mode] + self._release_jitter
        release_z = P.BIN_FLOOR_TOP + RELEASE_CLEARANCE + P.OBJECT_HALF_HEIGHT + GRASP_ABOVE_CENTRE
        over_bin = np.array([bin_xy[0], bin_xy[1], CARRY_Z])
        release = np.array([bin_xy[0], bin_xy[1], release_z])
        opn, cls = P.GRIPPER_OPEN, P.GRIPPER_CLOSED
        plan = [  # name, end point, gripper at start / end, fixed duration (None: from the distance)
            ("approach", above_obj, opn, opn, None),
            ("descend", grasp, opn, opn, None),
            ("close", grasp, opn, cls, self.close_s),
            ("lift", lift, cls, cls, None),
            ("carry", over_bin, cls, cls, None),
            ("lower", release, cls, cls, None),
            ("open", release, cls, opn, self.open_s),
            ("retreat", over_bin, opn, opn, None),
        ]
        segments, p0, t0, q0 = [], start, 0.0, q_now
        for name, p1, g0, g1, fixed in plan:
            q1 = self.env.solve_ik(p1, q0=q0)
            # a minimum-jerk segment peaks at 1.875 x its mean speed, in the table frame and per joint
            dist, turn = float(np.linalg.norm(p1 - p0)), float(np.max(np.abs(q1 - q0)))
            dur = fixed if fixed is not None else max(self.min_segment_s, 1.875 * dist / self.max_speed,
                                                      1.875 * turn / self.max_joint_speed)
            dur *= self._speed_scale
            segments.append({"name": name, "p0": p0, "p1": np.asarray(p1, dtype=np.float64), "g0": g0, "g1": g1,
                             "t0": t0, "t1": t0 + dur})
            p0, t0, q0 = segments[-1]["p1"], t0 + dur, q1
        self._segments = segments


def run_episode(env: "P.PickPlaceEnv", expert: PickPlaceExpert, seed: Optional[int] = None,
                mode: Optional[str] = None) -> dict:
    """One episode of the expert (direct, no ROS): success, mode, steps, dropped, the bin the object is in."""
    expert.reset(mode=mode)
    obs, info, steps = run_to_end(env, expert.act, seed)
    return {"success": bool(info["success"]), "mode": expert.mode, "steps": steps,
            "dropped": bool(info["dropped"]), "bin": info["bin"], "object_pos": obs["object_pos"].tolist()}


def run_averaged_episode(env: "P.PickPlaceEnv", seed: Optional[int] = None, expert_seed: int = 0) -> dict:
    """The mean of the two modes, executed: two experts with the same generator (same speed, same release
    jitter), one forced to each bin, both see every observation and the env executes the per-tick average
    of their actions -- what an MSE-trained policy that fitted these demonstrations perfectly would output."""
    left, right = PickPlaceExpert(env, seed=expert_seed), PickPlaceExpert(env, seed=expert_seed)
    left.reset(mode="left")
    right.reset(mode="right")
    obs, info, steps = run_to_end(env, lambda o: 0.5 * (left.act(o) + right.act(o)), seed)
    return {"success": bool(info["success"]), "mode": "mean", "steps": steps, "dropped": bool(info["dropped"]),
            "bin": info["bin"], "object_pos": obs["object_pos"].tolist()}


def main(argv=None) -> int:
    """Print the expert's success rate, bin split and episode length (or those of the mean of both modes)."""
    import argparse
    import collections
    import time

    from genil_ros.sim.expert import _cpu_name

    ap = argparse.ArgumentParser(prog="python -m genil_ros.sim.pick_place_expert", description=main.__doc__)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0, help="episode i uses seed + i; the expert uses seed")
    ap.add_argument("--averaged", action="store_true",
                    help="execute the per-tick mean of the left and right modes instead of the expert")
    args = ap.parse_args(argv)
    env = P.PickPlaceEnv(render=False)
    expert = PickPlaceExpert(env, seed=args.seed)
    seeds = range(args.seed, args.seed + args.episodes)
    t0 = time.perf_counter()
    if args.averaged:
        res = [run_averaged_episode(env, seed=s, expert_seed=args.seed) for s in seeds]
    else:
        res = [run_episode(env, expert, seed=s) for s in seeds]
    wall = time.perf_counter() - t0
    steps = np.array([r["steps"] for r in res])
    modes = collections.Counter(r["mode"] for r in res)
    bins = collections.Counter(str(r["bin"]) for r in res)
    who = "mean of both modes" if args.averaged else "scripted expert"
    print(f"{who}, {P.TASK_NAME}, {args.episodes} episodes (seeds {seeds.start}..{seeds.stop - 1}): "
          f"success {np.mean([r['success'] for r in res]):.2f}, dropped {np.mean([r['dropped'] for r in res]):.2f}, "
          + ("" if args.averaged else f"modes left {modes['left']} / right {modes['right']}, ")
          + f"object ends in bin {dict(sorted(bins.items()))}, "
          f"episode length mean {steps.mean():.1f} max {steps.max()} steps at {env.control_rate_hz:g} Hz "
          f"(limit {env.max_episode_steps}); {steps.sum() / wall:.0f} env steps/s without rendering "
          f"on {_cpu_name() or 'this CPU'} (1 thread)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
