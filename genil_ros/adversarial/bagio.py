"""Rollouts as rosbags: write a (states, commands) episode the way the recorder would record it, so sim
rollouts (or tests) can feed the trainer node's watched folder and ``--expert`` like real recordings; and
watch a folder for rollout bags as they are finished (:class:`BagWatcher`, used by the trainer node).

Joint states are written at twice the control rate (linearly interpolated between ticks, header stamps set),
commands as ``std_msgs/Float64MultiArray`` just after each tick (no header, like a forward position
controller's input). Reading them back with the dataset builder gives ``state[k]`` and ``action[k]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

__all__ = ["write_rollout_bag", "path_signature", "BagWatcher"]


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


def path_signature(path: Union[str, Path]) -> Optional[tuple]:
    """Changes when a file or a directory's files are rewritten (sizes, mtimes, inode); None if it is gone."""
    p = Path(path)
    try:
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file())
            return tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files) + (p.stat().st_ino,)
        st = p.stat()
        return (st.st_size, st.st_mtime_ns, st.st_ino)
    except FileNotFoundError:
        return None


class BagWatcher:
    """The bags of a folder that are new or rewritten since the last look, each reported once its
    signature has stayed the same for one poll (a recorder may still be writing it). Which entries are
    bags: :func:`genil_ros.data.bags.find_bags` (hidden, ``_``-prefixed and unfinished temp entries skipped)."""

    def __init__(self, folder: Union[str, Path]):
        self.folder = Path(folder)
        self.seen: dict[Path, tuple] = {}  # bag -> signature when it was reported
        self.pending: dict[Path, tuple] = {}  # bag -> signature at the last poll (must be stable to report)

    def poll(self) -> list[Path]:
        """Bags ready to read now, in name order."""
        from genil_ros.data.bags import find_bags

        ready = []
        for bag in find_bags(self.folder):
            sig = path_signature(bag)
            if sig is None or self.seen.get(bag) == sig:
                continue
            if self.pending.get(bag) != sig:  # new or still being written: look again next poll
                self.pending[bag] = sig
                continue
            self.pending.pop(bag, None)
            self.seen[bag] = sig
            ready.append(bag)
        return ready
