"""Writing an episode store (the format is described in ``data/store.py``): :class:`StoreWriter` makes a
store, :class:`EpisodeWriter` streams one episode into it.

A store records the task schema it holds (the observation and action entries); each low-dimensional
entry is its own array (``obs.<name>.npy``, ``act.<name>.npy``) with its own statistics. A writer made
without entries (``joint_names`` only, as tests and older callers do) takes the ``joint_names`` form's
entries when the first episode's dimensions fit it (joint positions, + velocities when the state has
twice as many values), otherwise one ``vector`` observation ``observation`` and one ``vector`` action
``action``.

Writing is atomic: everything goes into a sibling temp directory (``DIR.tmp-<pid>``), ``finalize`` writes
``meta.json`` last and renames the directory into place (an existing store is kept until the rename
succeeded). Stale temp directories of dead processes are removed by the next writer.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from genil_ros.errors import DataError
from genil_ros.fileio import atomic_write_json, clean_stale, fsync_path
from genil_ros.schema import JOINT_OBS, ActionEntry, ObservationEntry, entries_to_dict, layout, legacy_entries

__all__ = ["StoreWriter", "EpisodeWriter", "FORMAT_VERSION", "legacy_store_entries", "camera_dicts",
           "entry_keys", "RunningStats", "concat_stats"]

FORMAT_VERSION = 2
_RESERVED = {"state", "action", "timestamp"}


def zstd_module():
    try:
        from compression import zstd  # Python >= 3.14
    except ImportError:  # pragma: no cover - depends on the Python version
        from backports import zstd  # installed with rosbags
    return zstd


def camera_dicts(cameras: Iterable[Any]) -> list[dict]:
    """``[{name, height, width}]`` of camera configs, camera entries or dicts."""
    out = []
    for c in cameras or []:
        if isinstance(c, Mapping):
            d = {"name": str(c["name"]), "height": int(c["height"]), "width": int(c["width"])}
        else:  # CameraConfig, a camera ObservationEntry or anything with the attributes
            d = {"name": str(c.name), "height": int(c.height), "width": int(c.width)}
        if d["name"] in _RESERVED or not d["name"].isidentifier():
            raise DataError(f"camera name {d['name']!r} is not allowed (an identifier other than {sorted(_RESERVED)})")
        out.append(d)
    return out


def legacy_store_entries(joint_names: Sequence[str], state_dim: int, action_dim: int,
                         cameras: Sequence[dict]) -> tuple[list[ObservationEntry], list[ActionEntry]]:
    """The entries of a store written as plain ``state`` / ``action`` arrays (format 1, or a writer made
    without entries): the ``joint_names`` form when the dimensions fit it, else one vector each."""
    cams = [ObservationEntry(c["name"], "camera", c.get("topic", ""), height=int(c["height"]),
                             width=int(c["width"])) for c in cameras]
    nj = len(joint_names)
    if nj and state_dim in (nj, 2 * nj) and action_dim == nj:
        obs, act = legacy_entries(joint_names, "/joint_states", state_dim == 2 * nj, [], "next_state", None)
        return obs + cams, act
    obs = [ObservationEntry("observation", "vector", dims=[f"s{i}" for i in range(state_dim)])] + cams
    return obs, [ActionEntry("action", "vector", dims=[f"a{i}" for i in range(action_dim)])]


def entry_keys(observations: Sequence[ObservationEntry], actions: Sequence[ActionEntry]) -> list[tuple[str, Any]]:
    """``[(key, entry)]`` of the low-dim arrays in layout order: ``obs.<name>`` then ``act.<name>``."""
    return ([(f"obs.{o.name}", o) for o in observations if not o.is_camera]
            + [(f"act.{a.name}", a) for a in actions])


class RunningStats:
    """Running min / max / mean / std (float64 sums) of a (N, D) stream."""

    def __init__(self) -> None:
        self.n = 0
        self.sum = self.sq = self.min = self.max = None

    def add(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if self.sum is None:
            d = x.shape[1]
            self.sum, self.sq = np.zeros(d), np.zeros(d)
            self.min, self.max = np.full(d, np.inf), np.full(d, -np.inf)
        self.n += len(x)
        self.sum += x.sum(0)
        self.sq += (x * x).sum(0)
        self.min = np.minimum(self.min, x.min(0))
        self.max = np.maximum(self.max, x.max(0))

    def result(self) -> dict:
        if not self.n:
            return {}
        mean = self.sum / self.n
        var = np.maximum(self.sq / self.n - mean * mean, 0.0)
        return {"min": self.min.tolist(), "max": self.max.tolist(), "mean": mean.tolist(),
                "std": np.sqrt(var).tolist()}


def concat_stats(parts: Sequence[Mapping]) -> dict:
    """Per-dimension statistics of a concatenation = the entries' statistics concatenated."""
    if not parts:
        return {}
    return {k: [v for p in parts for v in p[k]] for k in ("min", "max", "mean", "std")}


# --------------------------------------------------------------------------- one episode


class EpisodeWriter:
    """Streams one episode to disk: ``append(key, batch)`` any number of times per key, then ``close()``.

    Keys: ``timestamp``, one per low-dim entry (``obs.<name>``, ``act.<name>``) or the concatenations
    ``state`` / ``action`` (split into the entries in layout order), and one per camera. Frames are
    compressed in chunks as they arrive, so an episode never has to fit in RAM.
    """

    def __init__(self, store: "StoreWriter", index: int):
        self.store = store
        self.index = index
        self.dir = store.tmp / "episodes" / f"open-{index}"  # renamed to its final number when closed
        self.dir.mkdir(parents=True)
        self._low: dict[str, list[np.ndarray]] = {}
        self._cams = {c["name"]: c for c in store.cameras}
        self._pending: dict[str, list[np.ndarray]] = {n: [] for n in self._cams}
        self._npending: dict[str, int] = {n: 0 for n in self._cams}
        self._count: dict[str, int] = {n: 0 for n in self._cams}
        self._files: dict[str, Any] = {}
        self._offsets: dict[str, list[int]] = {n: [0] for n in self._cams}
        self.closed = False
        self.info: dict = {}

    # -- appending
    def append(self, key: str, batch) -> None:
        if self.closed:
            raise RuntimeError("episode already closed")
        arr = np.asarray(batch)
        if key in _RESERVED or key.startswith(("obs.", "act.")):
            if key.startswith(("obs.", "act.")) and self.store.keys is not None and key not in self.store.keys:
                raise DataError(f"episode key {key!r} is not an entry of this store "
                                f"({', '.join(self.store.keys)})")
            want = np.float64 if key == "timestamp" else np.float32
            arr = arr.astype(want, copy=False)
            if key == "timestamp":
                arr = arr.reshape(-1)
            elif arr.ndim == 1:
                arr = arr.reshape(1, -1)
            self._low.setdefault(key, []).append(np.array(arr, copy=True))
            return
        if key not in self._cams:
            raise DataError(f"episode key {key!r} is neither state/action/timestamp, an entry (obs.<name>, "
                            f"act.<name>) nor a camera ({', '.join(self._cams) or 'no cameras'})")
        cam = self._cams[key]
        if arr.ndim == 3:
            arr = arr[None]
        shape = (cam["height"], cam["width"], 3)
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != shape:
            raise DataError(f"camera {key!r}: frames must be uint8 (N, {shape[0]}, {shape[1]}, 3), "
                            f"got {arr.dtype} {arr.shape}")
        self._pending[key].append(np.ascontiguousarray(arr))
        self._npending[key] += len(arr)
        self._count[key] += len(arr)
        self._flush(key, final=False)

    def _flush(self, key: str, final: bool) -> None:
        chunk = self.store.chunk_frames
        if self._npending[key] < chunk and not (final and self._npending[key]):
            return
        frames = np.concatenate(self._pending[key]) if len(self._pending[key]) > 1 else self._pending[key][0]
        n_full = len(frames) if final else (len(frames) // chunk) * chunk
        f = self._files.get(key)
        if f is None:
            suffix = ".zst" if self.store.compression == "zstd" else ".raw"
            f = self._files[key] = open(self.dir / (key + suffix), "wb")
        if self.store.compression == "zstd":
            zstd = zstd_module()
            for s in range(0, n_full, chunk):
                blob = zstd.compress(frames[s:s + chunk].tobytes(), self.store.level)
                f.write(blob)
                self._offsets[key].append(self._offsets[key][-1] + len(blob))
        else:
            f.write(frames[:n_full].tobytes())
        rest = frames[n_full:]
        self._pending[key] = [rest] if len(rest) else []
        self._npending[key] = len(rest)

    def __len__(self) -> int:
        return sum(len(a) for a in self._low.get("timestamp", []))

    def _entry_arrays(self) -> dict[str, np.ndarray]:
        """The low-dim arrays per entry key (``state`` / ``action`` split by the layout) + timestamp."""
        low = {k: np.concatenate(v) for k, v in self._low.items()}
        if "timestamp" not in low:
            raise DataError(f"episode {self.index}: no 'timestamp' given")
        self.store.resolve_schema(low.get("state"), low.get("action"), self.index)
        out = {"timestamp": low.pop("timestamp")}
        for whole, part in (("state", "obs."), ("action", "act.")):
            arr = low.pop(whole, None)
            keys = [k for k, _ in self.store.entries if k.startswith(part)]
            if arr is None:
                continue
            if any(k in low for k in keys):
                raise DataError(f"episode {self.index}: give either {whole!r} or its entries, not both")
            if arr.ndim != 2:
                raise DataError(f"episode {self.index}: {whole} must be (N, D), got shape {arr.shape}")
            want = sum(e.dim for k, e in self.store.entries if k in keys)
            if arr.shape[1] != want:
                raise DataError(f"episode {self.index}: {whole} has dimension {arr.shape[1]}, the store has {want}")
            start = 0
            for k, e in self.store.entries:
                if k in keys:
                    out[k] = arr[:, start:start + e.dim]
                    start += e.dim
        out.update(low)
        missing = [k for k, _ in self.store.entries if k not in out]
        if missing:
            raise DataError(f"episode {self.index}: no {missing[0]!r} given (nor 'state' / 'action')")
        return out

    # -- closing
    def close(self) -> int:
        """Write the episode's arrays; returns its length. Raises DataError when keys disagree in length."""
        if self.closed:
            raise RuntimeError("episode already closed")
        try:
            low = self._entry_arrays()
            n = len(low["timestamp"])
            lengths = {k: len(v) for k, v in low.items()}
            lengths.update(self._count)
            bad = {k: v for k, v in lengths.items() if v != n}
            if bad:
                raise DataError(f"episode {self.index}: arrays differ in length: {lengths}")
            if n == 0:
                raise DataError(f"episode {self.index}: is empty")
            for k, e in self.store.entries:
                self.store.check_entry(k, e, low[k], self.index)
            for k, v in low.items():
                np.save(self.dir / f"{k}.npy", np.ascontiguousarray(v))
            for key in self._cams:
                if self._npending[key]:
                    self._flush(key, final=True)
                f = self._files.pop(key, None)
                if f is not None:
                    f.close()
                if self.store.compression == "zstd":
                    np.save(self.dir / f"{key}.idx.npy", np.asarray(self._offsets[key], dtype=np.int64))
                else:  # raw bytes -> a .npy with a header, memory-mappable
                    cam = self._cams[key]
                    raw = self.dir / f"{key}.raw"
                    out = np.lib.format.open_memmap(self.dir / f"{key}.npy", mode="w+", dtype=np.uint8,
                                                    shape=(n, cam["height"], cam["width"], 3))
                    out[:] = np.fromfile(raw, dtype=np.uint8).reshape(out.shape)
                    out.flush()
                    del out
                    raw.unlink()
            self.closed = True
            self.store._episode_done(self, low)
            return n
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Forget this episode (its files are removed)."""
        for f in self._files.values():
            f.close()
        self._files.clear()
        self.closed = True
        shutil.rmtree(self.dir, ignore_errors=True)
        self.store._episode_aborted(self)


# --------------------------------------------------------------------------- the store


class StoreWriter:
    """Makes a new store; use :meth:`EpisodeStore.create`. A context manager: an exception aborts it.

    ``observations`` / ``actions``: the task's entries (cameras among the observations); without them the
    store is described by ``joint_names`` / ``cameras`` (see the module docstring)."""

    def __init__(self, path: Union[str, os.PathLike], *, control_rate_hz: float,
                 observations: Optional[Sequence[ObservationEntry]] = None,
                 actions: Optional[Sequence[ActionEntry]] = None, joint_names: Sequence[str] = (),
                 cameras: Iterable[Any] = (), state_dim: Optional[int] = None, action_dim: Optional[int] = None,
                 topics: Optional[dict] = None, source_bags: Optional[list] = None, compression: str = "zstd",
                 chunk_frames: int = 16, level: int = 3, overwrite: bool = False, extra: Optional[dict] = None):
        self.path = Path(path)
        if compression not in ("zstd", "none"):
            raise DataError(f"{self.path}: unknown compression {compression!r} (zstd or none)")
        if chunk_frames < 1:
            raise DataError(f"{self.path}: chunk_frames must be >= 1")
        if self.path.exists() and not overwrite:
            raise DataError(f"{self.path}: already exists (remove it, or overwrite it: --overwrite)")
        if self.path.exists() and not (self.path / "meta.json").is_file() and any(self.path.iterdir()):
            raise DataError(f"{self.path}: exists and is not a dataset; refusing to replace it")
        if (observations is None) != (actions is None):
            raise ValueError("give both observations and actions, or neither")
        self.joint_names = list(joint_names)
        self.observations: Optional[list[ObservationEntry]] = None
        self.actions: Optional[list[ActionEntry]] = None
        self.entries: list[tuple[str, Any]] = []  # (obs.<name> / act.<name>, entry) in layout order
        self.keys: Optional[list[str]] = None
        if observations is not None:
            self.cameras = camera_dicts([o for o in observations if o.is_camera])
            self._set_schema(list(observations), list(actions))
        else:
            self.cameras = camera_dicts(cameras)
            if state_dim is not None and action_dim is not None:
                self._set_schema(*legacy_store_entries(self.joint_names, state_dim, action_dim, self.cameras))
        self.control_rate_hz = float(control_rate_hz)
        self.topics = dict(topics or {})
        self.source_bags = list(source_bags or [])
        self.compression = compression
        self.chunk_frames = int(chunk_frames)
        self.level = int(level)
        self.extra = dict(extra or {})
        self.episodes: list[dict] = []
        self._stats: dict[str, RunningStats] = {}
        self._open: list[EpisodeWriter] = []  # several may be open (cameras of one bag advance unevenly)
        self._next = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(self.path)  # temp / moved-aside directories of builds that were killed
        self.tmp = self.path.parent / f"{self.path.name}.tmp-{os.getpid()}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        (self.tmp / "episodes").mkdir(parents=True)
        self.done = False

    # -- the schema
    def _set_schema(self, observations: list, actions: list) -> None:
        self.observations, self.actions = observations, actions
        self.entries = entry_keys(observations, actions)
        self.keys = [k for k, _ in self.entries]
        if not self.joint_names:  # what meta.json's joint_names says: the observed joints, in order
            seen = [j for o in observations if o.type in JOINT_OBS for j in o.joints]
            self.joint_names = list(dict.fromkeys(seen))

    def resolve_schema(self, state: Optional[np.ndarray], action: Optional[np.ndarray], index: int) -> None:
        """A writer made without entries takes them from its first episode's ``state`` / ``action``."""
        if self.observations is not None:
            return
        if state is None or action is None or state.ndim != 2 or action.ndim != 2:
            raise DataError(f"episode {index}: a store without task entries needs 'state' and 'action' (N, D)")
        self._set_schema(*legacy_store_entries(self.joint_names, state.shape[1], action.shape[1], self.cameras))

    @property
    def state_dim(self) -> Optional[int]:
        return None if self.observations is None else layout(self.observations, self.actions).state_dim

    @property
    def action_dim(self) -> Optional[int]:
        return None if self.actions is None else layout(self.observations, self.actions).action_dim

    def check_entry(self, key: str, entry, arr: np.ndarray, index: int) -> None:
        """(N, entry.dim) and finite: the statistics in meta.json are never NaN or inf."""
        what = f"{'observation' if key.startswith('obs.') else 'action'} {entry.name!r}"
        if arr.ndim != 2:
            raise DataError(f"episode {index}: {what} must be (N, D), got shape {arr.shape}")
        if arr.shape[1] != entry.dim:
            raise DataError(f"episode {index}: {what} has dimension {arr.shape[1]}, the store has {entry.dim}")
        bad = np.argwhere(~np.isfinite(arr))
        if len(bad):
            step, dim = (int(v) for v in bad[0])
            raise DataError(f"episode {index}: {what} has {len(bad)} non-finite value(s), the first "
                            f"{arr[step, dim]} at step {step}, dimension {entry.dim_names[dim]}")

    # -- episodes
    def begin_episode(self, **info) -> EpisodeWriter:
        """Start streaming an episode; ``info`` (e.g. source_bag, t_start) goes into meta.json."""
        if self.done:
            raise RuntimeError("store already finalized")
        ep = EpisodeWriter(self, self._next)
        ep.info = dict(info)
        self._next += 1
        self._open.append(ep)
        return ep

    def add_episode(self, data: Mapping[str, Any], **info) -> int:
        """Add a whole episode: ``{"timestamp", "state" and "action" (or their entries), <camera>...}``;
        returns its index."""
        missing = [k for k in ("timestamp", *(c["name"] for c in self.cameras)) if k not in data]
        if missing:
            raise DataError(f"{self.path}: episode is missing {missing}")
        ep = self.begin_episode(**info)
        try:
            for k, v in data.items():
                ep.append(k, v)
        except BaseException:
            ep.abort()
            raise
        ep.close()
        return len(self.episodes) - 1

    def _episode_done(self, ep: EpisodeWriter, low: dict) -> None:
        final = len(self.episodes)  # numbered in closing order, contiguous whatever was aborted
        os.replace(ep.dir, self.tmp / "episodes" / f"{final:06d}")
        ts = low["timestamp"]
        self.episodes.append({"length": int(len(ts)), "t_start": float(ts[0]), "t_end": float(ts[-1]), **ep.info})
        for k, _ in self.entries:
            self._stats.setdefault(k, RunningStats()).add(low[k])
        self._open.remove(ep)

    def _episode_aborted(self, ep: EpisodeWriter) -> None:
        if ep in self._open:
            self._open.remove(ep)

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    def finalize(self):
        """Write meta.json and move the store into place atomically; returns the opened store."""
        from genil_ros.data.store import EpisodeStore

        if self.done:
            raise RuntimeError("store already finalized")
        for ep in list(self._open):
            ep.close()
        if not self.episodes:
            self.abort()
            raise DataError(f"{self.path}: no episodes to write")
        entry_stats = {k: s.result() for k, s in self._stats.items()}
        lay = layout(self.observations, self.actions)
        meta = {
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source_bags": self.source_bags,
            "topics": self.topics,
            "control_rate_hz": self.control_rate_hz,
            "schema": {**entries_to_dict(self.observations, self.actions), "layout": lay.to_dict()},
            "joint_names": self.joint_names,
            "state_dim": lay.state_dim,
            "action_dim": lay.action_dim,
            "cameras": self.cameras,
            "image_compression": self.compression,
            "chunk_frames": self.chunk_frames,
            "num_episodes": len(self.episodes),
            "num_steps": int(sum(e["length"] for e in self.episodes)),
            "episode_lengths": [e["length"] for e in self.episodes],
            "episodes": self.episodes,
            # the concatenations in layout order (what a policy's normalizer reads) and each entry's own
            "stats": {"state": concat_stats([entry_stats[k] for k, _ in self.entries if k.startswith("obs.")]),
                      "action": concat_stats([entry_stats[k] for k, _ in self.entries if k.startswith("act.")])},
            "entry_stats": entry_stats,
        }
        meta.update(self.extra)
        atomic_write_json(self.tmp / "meta.json", meta, indent=1)
        old = None
        if self.path.exists():
            old = self.path.parent / f"{self.path.name}.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.path, old)
        try:
            os.replace(self.tmp, self.path)
        except BaseException:
            if old is not None:
                os.replace(old, self.path)
            raise
        fsync_path(self.path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.done = True
        return EpisodeStore.open(self.path)

    def abort(self) -> None:
        """Throw the half-written store away (the target directory is untouched)."""
        for ep in list(self._open):
            ep.abort()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.done = True

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and not self.done:
            self.abort()
        return False
