"""The last word before a command goes out: one safety filter per action entry.

Each filter takes the rows of its entry for this tick and the ticks after it (the rest of the plan, raw
policy units), the previous command it let out (None before the first one) and the measured value the
entry acts on (from this tick's observation, when the task observes it), and returns what may be sent:

- :class:`JointFilter` (joint_position): ``mode: delta`` rows become targets (measured + cumulative
  deltas); every target is clamped to [lower, upper] and moves at most ``max_step`` per tick from the one
  before (the first from the measured position).
- :class:`GripperFilter` (gripper): binary grippers threshold at 0.5 (1 = closed) and send
  ``closed_position`` / ``open_position``; every value is clamped to [lower, upper] (for a binary gripper
  by default the span between the two positions) and changes at most ``max_rate * period`` per tick.
- :class:`TwistFilter` (twist, MoveIt Servo): the linear and angular speeds are scaled down to
  ``max_linear_speed`` / ``max_angular_speed`` (direction kept); with a workspace box and the measured
  end-effector position, velocity components that would leave the box within one tick are zeroed.
- :class:`PoseFilter` (pose targets): the position moves at most ``max_linear_speed * period`` per tick
  and always stays in the workspace box; the orientation turns at most ``max_angular_speed * period``
  per tick (rotations are re-orthonormalised from their 6-D form first).
- :class:`VectorFilter` (vector): per-dimension [lower, upper] and ``max_step`` per tick.

``hold(last)`` is the command that stops the entry where it is: the last command, except for a twist
(zero velocity). ``clamped`` counts the commands the filter changed. A limit that is None / <= 0 is off.
Limits are checked when a filter is made: GenilError naming ``key`` (the parameter prefix).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from genil_ros.data.rotations import matrix_from_rot6d, rot6d_from_matrix, rotation_angle, slerp_matrix
from genil_ros.errors import GenilError

__all__ = ["CommandFilter", "JointFilter", "GripperFilter", "TwistFilter", "PoseFilter", "VectorFilter",
           "check_limits"]


def check_limits(key: str, names: Sequence[str], lower, upper) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) as float arrays of len(names) (-inf / inf where unset); GenilError naming the
    parameters ``<key>lower_limits`` / ``<key>upper_limits`` when a length is wrong or lower > upper."""
    n = len(names)
    out = []
    for which, lim, fill in (("lower", lower, -np.inf), ("upper", upper, np.inf)):
        if lim is None or len(lim) == 0:
            out.append(np.full(n, fill))
            continue
        if len(lim) != n:
            raise GenilError(f"parameter {key}{which}_limits: has {len(lim)} values but there are {n} "
                             f"({list(names)})")
        arr = np.asarray(lim, np.float64)
        if np.any(np.isnan(arr)):
            raise GenilError(f"parameter {key}{which}_limits: NaN in {list(lim)}")
        out.append(arr)
    lo, hi = out
    if np.any(lo > hi):
        bad = [names[i] for i in np.flatnonzero(lo > hi)]
        raise GenilError(f"parameters {key}lower_limits / {key}upper_limits: lower > upper for {bad}")
    return lo, hi


def _limit_steps(rows: np.ndarray, prev: Optional[np.ndarray], max_step: float, lo, hi) -> np.ndarray:
    """Each row within ``max_step`` (per component) of the one before, the first of ``prev``."""
    if max_step <= 0 or prev is None:
        return rows
    p = np.asarray(prev, np.float64)
    for i in range(rows.shape[0]):
        rows[i] = np.clip(p + np.clip(rows[i] - p, -max_step, max_step), lo, hi)
        p = rows[i]
    return rows


class CommandFilter:
    """One action entry's safety filter (see the module docstring)."""

    def __init__(self, name: str, dim: int):
        self.name = name
        self.dim = dim
        self.clamped = 0

    def apply(self, rows: np.ndarray, prev: Optional[np.ndarray], measured: Optional[np.ndarray]) -> np.ndarray:
        rows = np.array(rows, dtype=np.float64).reshape(-1, self.dim)
        safe = self._apply(rows.copy(), prev, measured)
        if not np.allclose(safe[0], self._expected_first(rows, measured), rtol=0.0, atol=1e-9):
            self.clamped += 1
        return safe

    def _expected_first(self, rows: np.ndarray, measured) -> np.ndarray:
        return rows[0]

    def _apply(self, rows: np.ndarray, prev, measured) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def hold(self, last: np.ndarray) -> np.ndarray:
        return np.asarray(last, np.float64)


class JointFilter(CommandFilter):
    """Joint position targets: limits and a step clamp; ``delta`` rows are added to the measured position."""

    def __init__(self, name: str, joints: Sequence[str], lower=None, upper=None, max_step: float = 0.1,
                 delta: bool = False, key: str = ""):
        super().__init__(name, len(joints))
        self.joints = list(joints)
        self.lower, self.upper = check_limits(key, joints, lower, upper)
        self.max_step = float(max_step or 0.0)
        self.delta = delta

    def _targets(self, rows: np.ndarray, measured) -> np.ndarray:
        if not self.delta:
            return rows
        if measured is None:
            raise GenilError(f"action {self.name!r}: delta commands need the measured joint positions")
        return np.asarray(measured, np.float64) + np.cumsum(rows, axis=0)

    def _expected_first(self, rows, measured):
        return self._targets(rows, measured)[0]

    def _apply(self, rows, prev, measured):
        out = np.clip(self._targets(rows, measured), self.lower, self.upper)
        return _limit_steps(out, prev if prev is not None else measured, self.max_step, self.lower, self.upper)


class GripperFilter(CommandFilter):
    """A gripper command: binary threshold, range and rate limit."""

    def __init__(self, name: str, joints: Sequence[str], lower=None, upper=None, max_rate: float = 0.0,
                 period_s: float = 0.1, binary: bool = False, open_position: float = 0.0,
                 closed_position: float = 0.0, key: str = ""):
        super().__init__(name, len(joints))
        if binary and lower is None and upper is None:
            lo, hi = sorted((open_position, closed_position))
            lower, upper = [lo] * len(joints), [hi] * len(joints)
        self.lower, self.upper = check_limits(key, joints, lower, upper)
        self.max_step = float(max_rate or 0.0) * period_s
        self.binary = binary
        self.open_position, self.closed_position = float(open_position), float(closed_position)

    def _positions(self, rows):
        if not self.binary:
            return rows
        return np.where(rows >= 0.5, self.closed_position, self.open_position)

    def _expected_first(self, rows, measured):
        return self._positions(rows)[0]

    def _apply(self, rows, prev, measured):
        out = np.clip(self._positions(rows), self.lower, self.upper)
        return _limit_steps(out, prev, self.max_step, self.lower, self.upper)


class TwistFilter(CommandFilter):
    """End-effector velocities [vx, vy, vz, wx, wy, wz]: speed limits and a workspace box."""

    def __init__(self, name: str, max_linear_speed: float = 0.0, max_angular_speed: float = 0.0,
                 workspace_min=None, workspace_max=None, period_s: float = 0.1, key: str = ""):
        super().__init__(name, 6)
        self.max_linear = float(max_linear_speed or 0.0)
        self.max_angular = float(max_angular_speed or 0.0)
        self.box = _box_limits(key, workspace_min, workspace_max)
        self.period_s = period_s

    def _apply(self, rows, prev, measured):
        for part, limit in ((slice(0, 3), self.max_linear), (slice(3, 6), self.max_angular)):
            if limit > 0:
                speed = np.linalg.norm(rows[:, part], axis=1, keepdims=True)
                rows[:, part] *= np.minimum(1.0, limit / np.maximum(speed, 1e-12))
        if self.box is not None and measured is not None:
            lo, hi = self.box
            p = np.asarray(measured, np.float64)[:3].copy()
            for i in range(rows.shape[0]):  # the predicted position after each tick
                nxt = p + rows[i, :3] * self.period_s
                leaving = ((nxt > hi) & (rows[i, :3] > 0)) | ((nxt < lo) & (rows[i, :3] < 0))
                rows[i, :3][leaving] = 0.0
                p = p + rows[i, :3] * self.period_s
        return rows

    def hold(self, last):
        return np.zeros(6)


def _box_limits(key: str, lo, hi) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """A workspace box from ``<key>workspace_min`` / ``workspace_max`` ([x, y, z] each), or None."""
    if (lo is None or len(lo) == 0) and (hi is None or len(hi) == 0):
        return None
    out = []
    for which, v, fill in (("min", lo, -np.inf), ("max", hi, np.inf)):
        if v is None or len(v) == 0:
            out.append(np.full(3, fill))
        elif len(v) != 3:
            raise GenilError(f"parameter {key}workspace_{which}: expected [x, y, z], got {list(v)}")
        else:
            out.append(np.asarray(v, np.float64))
    if np.any(out[0] > out[1]):
        raise GenilError(f"parameters {key}workspace_min / {key}workspace_max: min > max in {list(out[0])} / "
                         f"{list(out[1])}")
    return out[0], out[1]


class PoseFilter(CommandFilter):
    """End-effector pose targets [x, y, z, 6-D rotation]: workspace box, translation and rotation speed."""

    def __init__(self, name: str, max_linear_speed: float = 0.0, max_angular_speed: float = 0.0,
                 workspace_min=None, workspace_max=None, period_s: float = 0.1, key: str = ""):
        super().__init__(name, 9)
        self.max_lin_step = float(max_linear_speed or 0.0) * period_s
        self.max_ang_step = float(max_angular_speed or 0.0) * period_s
        self.box = _box_limits(key, workspace_min, workspace_max)

    def _apply(self, rows, prev, measured):
        ref = prev if prev is not None else measured
        p_prev = None if ref is None else np.asarray(ref, np.float64)[:3]
        r_prev = None if ref is None else matrix_from_rot6d(np.asarray(ref, np.float64)[3:9])
        for i in range(rows.shape[0]):
            pos = rows[i, :3]
            rot = matrix_from_rot6d(rows[i, 3:9])  # ValueError on a degenerate rotation: the node holds
            if self.box is not None:
                pos = np.clip(pos, *self.box)
            if p_prev is not None and self.max_lin_step > 0:
                d = pos - p_prev
                n = np.linalg.norm(d)
                if n > self.max_lin_step:
                    pos = p_prev + d * (self.max_lin_step / n)
                if self.box is not None:  # the box wins (a measured pose outside it is left at once)
                    pos = np.clip(pos, *self.box)
            if r_prev is not None and self.max_ang_step > 0:
                ang = float(rotation_angle(r_prev, rot))
                if ang > self.max_ang_step:
                    rot = slerp_matrix(r_prev, rot, self.max_ang_step / ang)
            rows[i, :3], rows[i, 3:9] = pos, rot6d_from_matrix(rot)
            p_prev, r_prev = pos, rot
        return rows

    def _expected_first(self, rows, measured):
        first = rows[0].copy()
        first[3:9] = rot6d_from_matrix(matrix_from_rot6d(first[3:9]))  # orthonormalising is not clamping
        return first


class VectorFilter(CommandFilter):
    """Any vector: per-dimension limits and a step clamp."""

    def __init__(self, name: str, dims: Sequence[str], lower=None, upper=None, max_step: float = 0.0, key: str = ""):
        super().__init__(name, len(dims))
        self.lower, self.upper = check_limits(key, dims, lower, upper)
        self.max_step = float(max_step or 0.0)

    def _apply(self, rows, prev, measured):
        return _limit_steps(np.clip(rows, self.lower, self.upper), prev, self.max_step, self.lower, self.upper)
