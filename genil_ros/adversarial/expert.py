"""Expert demonstrations for the discriminators: from a dataset directory (``EpisodeStore``), from
rosbags (through the dataset builder of ``genil_ros.data``), or straight from the scripted expert in the
sim (quick experiments).

An expert set is a list of episodes, each ``{"state": (N, S) float32, "action": (N, A) float32}``: the
task's low-dim entries concatenated in layout order, exactly the dataset contract (episodes logged by
:func:`run_episodes` also have ``"next_state"``). A set from a dataset or bags carries that ``layout``; a
set rolled out in the sim carries ``joint_names`` (joint positions first). The discriminator's features are
made from the episodes by the algorithm, ``Adversary.episodes_features`` (``adversarial/algorithms.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from genil_ros.data.bags import find_bags, is_bag
from genil_ros.errors import DataError
from genil_ros.schema import Layout

__all__ = ["ExpertSet", "load_expert", "load_bags", "load_store", "run_episodes", "EpisodeLog"]


@dataclass
class ExpertSet:
    episodes: list[dict]
    joint_names: list[str]  # the observed joints (sim sets: the arm's joints, whose positions come first)
    source: str
    info: dict = field(default_factory=dict)
    layout: Optional[Layout] = None  # the state / action layout (sets from datasets and bags)

    @property
    def num_steps(self) -> int:
        return int(sum(len(e["state"]) for e in self.episodes))


def lowdim_layout(task) -> Layout:
    """The task's layout without its cameras: what a discriminator sees."""
    lay = task.layout
    return Layout(lay.state, lay.action, ())


def load_store(path: Path, task) -> ExpertSet:
    """The episodes of a dataset as the task's entries concatenate them (``task``: a validated TaskConfig);
    DataError naming the entry the dataset lacks or holds otherwise."""
    from genil_ros.data.store import EpisodeStore

    store = EpisodeStore.open(path)
    lay = lowdim_layout(task)
    store.check_layout(lay, where=str(path))
    eps = []
    for i in range(store.num_episodes):
        s, a = store.lowdim_for(i, lay)  # low-dim only (no image decoding)
        eps.append({"state": np.array(s, np.float32), "action": np.array(a, np.float32)})
    if not eps:
        raise DataError(f"{path}: the dataset has no episodes")
    joints = next((list(e.dim_names) for e in lay.state if e.type == "joint_position"), [])
    return ExpertSet(eps, joints, str(path), layout=lay)


def load_bags(paths: Sequence[Path], cfg, where: Optional[str] = None) -> ExpertSet:
    """Bags -> episodes through the dataset builder (``genil_ros.data.build``: same topics and entries,
    joint reordering by name, control-rate synchronisation and errors as ``genil-ros dataset build``),
    without cameras, into a temporary state-only store that is read back and deleted."""
    import copy
    import tempfile

    from genil_ros.data.build import build_dataset

    c = copy.deepcopy(cfg)
    c.task.cameras = []  # state and action only: no image decoding
    c.task.observations = [o for o in c.task.observations if not o.is_camera]
    with tempfile.TemporaryDirectory(prefix="genil_adv_bags_") as td:
        build_dataset(c, [str(p) for p in paths], Path(td) / "ds", progress=False)
        es = load_store(Path(td) / "ds", c.task)
    es.source = where or ", ".join(str(p) for p in paths)
    return es


def load_expert(path, cfg) -> ExpertSet:
    """A dataset directory (meta.json), one bag (.mcap/.db3/.bag file or rosbag2 directory), or a directory
    of bags (hidden, ``_``-prefixed and unfinished ``*.tmp-<pid>`` entries skipped)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: expert data not found (give a dataset directory or rosbag2 files)")
    if p.is_dir() and (p / "meta.json").is_file():
        return load_store(p, cfg.task)
    if is_bag(p):
        return load_bags([p], cfg)
    bags = find_bags(p) if p.is_dir() else []
    if bags:
        return load_bags(bags, cfg, where=str(p))
    raise DataError(f"{p}: neither a dataset directory (meta.json) nor rosbags (.mcap, .db3, .bag, rosbag2 "
                    "directories with metadata.yaml)")


@dataclass
class EpisodeLog:
    """What :func:`run_episodes` saw: per-episode success/return/length and the transitions."""

    success: list[bool] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    episodes: list[dict] = field(default_factory=list)  # {"state", "action", "next_state"} per episode
    final_distance: list[float] = field(default_factory=list)  # info["distance"] at the end (tip to goal), if given

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.success)) if self.success else 0.0

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns)) if self.returns else 0.0


def run_episodes(env, actor: Callable[[dict], np.ndarray], n: int, seed: int, max_steps: int, disc_state,
                 reset_actor: Optional[Callable[[], None]] = None) -> EpisodeLog:
    """Run ``n`` episodes (seeds ``seed .. seed + n - 1``); ``actor(obs) -> absolute joint targets``.

    Each episode's ``state`` has one more row than ``action`` trimmed: ``state[t]``, ``action[t]``,
    ``next_state[t]`` (the state after ``action[t]``)."""
    log = EpisodeLog()
    for k in range(n):
        obs, _ = env.reset(seed=seed + k)
        if reset_actor is not None:
            reset_actor()
        S, A, S2 = [], [], []
        ret, succ = 0.0, False
        for _t in range(max_steps):
            a = np.asarray(actor(obs), np.float32)
            S.append(disc_state(obs))
            A.append(a)
            obs, r, term, trunc, info = env.step(a)
            S2.append(disc_state(obs))
            ret += float(r)
            succ = succ or bool(info.get("success", False))
            if term or trunc:
                break
        log.success.append(succ)
        if "distance" in info:
            log.final_distance.append(float(info["distance"]))
        log.returns.append(ret)
        log.lengths.append(len(S))
        log.episodes.append({"state": np.stack(S), "action": np.stack(A), "next_state": np.stack(S2)})
    return log
