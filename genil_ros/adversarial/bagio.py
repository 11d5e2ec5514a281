"""Rollouts as rosbags: write a (states, commands) episode the way the recorder would record it, so sim
rollouts (or tests) can feed the trainer node's watched folder and ``--expert`` like real recordings.

Joint states are written at twice the control rate (linearly interpolated between ticks, header stamps set),
commands as ``std_msgs/Float64MultiArray`` just after each tick (no header, like a forward position
controller's input). Reading them back with the dataset builder gives ``state[k]`` and ``action[k]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np

__all__ = ["write_rollout_bag"]


def write_rollout_bag(path: Union[str, Path], states: np.ndarray, actions: np.ndarray, joint_names: Sequence[str], *,
                      rate_hz: float = 10.0, joint_states_topic: str = "/joint_states",
                      command_topic: str = "/forward_position_controller/commands", start_s: float = 100.0,
                      storage: str = "mcap") -> Path:
    """A rosbag2 directory at ``path`` with ``len(states)`` control ticks (positions only in ``states``)."""
    from genil_ros.data.synthetic import BagFile

    states = np.asarray(states, np.float64)
    actions = np.asarray(actions, np.float64)
    if states.shape != actions.shape or states.ndim != 2 or states.shape[1] != len(joint_names):
        raise ValueError(f"states {states.shape} and actions {actions.shape} must both be (N, {len(joint_names)})")
    dt = 1.0 / rate_hz
    with BagFile(path, storage=storage) as bag:
        for k in range(len(states)):
            t = start_s + dt * k
            nxt = states[min(k + 1, len(states) - 1)]
            for h, q in ((0.0, states[k]), (0.5 * dt, 0.5 * (states[k] + nxt))):
                ns = int(round((t + h) * 1e9))
                bag.joint_state(joint_states_topic, ns, ns, list(joint_names), q)
            bag.multiarray(command_topic, int(round((t + 0.01 * dt) * 1e9)), actions[k])
    return Path(path)
