"""The last word before a command goes out: joint position limits and a maximum change per tick."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from genil_ros.errors import GenilError

__all__ = ["SafetyFilter"]


class SafetyFilter:
    """Clamp commands to joint limits and to a maximum change per tick."""

    def __init__(self, joint_names: Sequence[str], lower=None, upper=None, max_step: float = 0.1):
        n = len(joint_names)
        for key, lim in (("joint_lower_limits", lower), ("joint_upper_limits", upper)):
            if lim is not None and len(lim) not in (0, n):
                raise GenilError(f"parameter {key}: has {len(lim)} values but the policy has {n} joints "
                                 f"{list(joint_names)}")
        self.lower = np.asarray(lower, np.float64) if lower is not None and len(lower) else np.full(n, -np.inf)
        self.upper = np.asarray(upper, np.float64) if upper is not None and len(upper) else np.full(n, np.inf)
        if not np.all(np.isfinite(self.lower[np.isfinite(self.lower)])) or np.any(self.lower > self.upper):
            bad = [joint_names[i] for i in np.flatnonzero(self.lower > self.upper)]
            raise GenilError(f"parameters joint_lower_limits / joint_upper_limits: lower > upper for joint(s) {bad}")
        self.max_step = float(max_step)

    def apply(self, rows: np.ndarray, prev: Optional[np.ndarray]) -> np.ndarray:
        """``rows`` (one action per tick) clamped to the limits, each within ``max_step`` of the one before
        (the first one of ``prev``, the last command or the measured position; None: no step limit)."""
        out = np.clip(np.asarray(rows, np.float64), self.lower, self.upper)
        if self.max_step > 0 and prev is not None:
            p = np.asarray(prev, np.float64)
            for i in range(out.shape[0]):
                out[i] = np.clip(p + np.clip(out[i] - p, -self.max_step, self.max_step), self.lower, self.upper)
                p = out[i]
        return out
