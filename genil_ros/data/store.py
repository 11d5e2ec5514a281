"""The on-disk episode store that the trainer reads.

Layout of a store directory (``format_version`` 1)::

    DIR/meta.json                       metadata (see docs/interfaces.md "Dataset store")
    DIR/episodes/000000/state.npy       (N, state_dim) float32      plain .npy, memory-mapped
    DIR/episodes/000000/action.npy      (N, action_dim) float32
    DIR/episodes/000000/timestamp.npy   (N,) float64 seconds
    DIR/episodes/000000/<cam>.zst       (N, H, W, 3) uint8 in chunks of ``chunk_frames`` frames, each chunk
                                        zstd-compressed on its own (random access touches one or two chunks)
    DIR/episodes/000000/<cam>.idx.npy   int64 byte offsets of the chunks in <cam>.zst (n_chunks + 1)
    DIR/episodes/000000/<cam>.npy       instead of the two above when the store was made with
                                        ``compression="none"``: memory-mapped like the low-dim arrays

Images are the bulk of a dataset, so they are compressed; low-dimensional arrays are tiny and stay
memory-mappable. :meth:`EpisodeStore.load` decompresses everything into RAM (the Dataset does that on
its own when the frames fit in the RAM budget); otherwise frames are decoded chunk by chunk through a
small LRU cache.

Writing is atomic: :meth:`EpisodeStore.create` writes into a sibling temp directory
(``DIR.tmp-<pid>``), :meth:`StoreWriter.finalize` writes ``meta.json`` last and renames the directory
into place (an existing store is kept until the rename succeeded). An interrupted build leaves no half
dataset at ``DIR``; stale temp directories of dead processes are removed by the next ``create``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from genil_ros.errors import DataError
from genil_ros.fileio import atomic_write_json, clean_stale, fsync_path

__all__ = ["EpisodeStore", "StoreWriter", "EpisodeWriter", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_LOWDIM = ("state", "action", "timestamp")
_RESERVED = set(_LOWDIM)


def _zstd():
    try:
        from compression import zstd  # Python >= 3.14
    except ImportError:  # pragma: no cover - depends on the Python version
        from backports import zstd  # installed with rosbags
    return zstd


def _available_ram() -> int:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 4 << 30


def _camera_dicts(cameras: Iterable[Any]) -> list[dict]:
    out = []
    for c in cameras or []:
        if isinstance(c, Mapping):
            d = {"name": str(c["name"]), "height": int(c["height"]), "width": int(c["width"])}
        else:  # CameraConfig or anything with the attributes
            d = {"name": str(c.name), "height": int(c.height), "width": int(c.width)}
        if d["name"] in _RESERVED or not d["name"].isidentifier():
            raise DataError(f"camera name {d['name']!r} is not allowed (an identifier other than {sorted(_RESERVED)})")
        out.append(d)
    return out


class _Stats:
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


# --------------------------------------------------------------------------- writing


class EpisodeWriter:
    """Streams one episode to disk: ``append(key, batch)`` any number of times per key, then ``close()``.

    Keys: ``state``, ``action``, ``timestamp`` and one per camera. Frames are compressed in chunks as they
    arrive, so an episode never has to fit in RAM.
    """

    def __init__(self, store: "StoreWriter", index: int):
        self.store = store
        self.index = index
        self.dir = store.tmp / "episodes" / f"open-{index}"  # renamed to its final number when closed
        self.dir.mkdir(parents=True)
        self._low: dict[str, list[np.ndarray]] = {k: [] for k in _LOWDIM}
        self._cams = {c["name"]: c for c in store.cameras}
        self._pending: dict[str, list[np.ndarray]] = {n: [] for n in self._cams}
        self._npending: dict[str, int] = {n: 0 for n in self._cams}
        self._count: dict[str, int] = {n: 0 for n in self._cams}
        self._files: dict[str, Any] = {}
        self._offsets: dict[str, list[int]] = {n: [0] for n in self._cams}
        self.closed = False

    # -- appending
    def append(self, key: str, batch) -> None:
        if self.closed:
            raise RuntimeError("episode already closed")
        arr = np.asarray(batch)
        if key in self._low:
            want = np.float64 if key == "timestamp" else np.float32
            arr = arr.astype(want, copy=False)
            if key == "timestamp":
                arr = arr.reshape(-1)
            elif arr.ndim == 1:
                arr = arr.reshape(1, -1)
            self._low[key].append(np.array(arr, copy=True))
            return
        if key not in self._cams:
            raise DataError(f"episode key {key!r} is neither state/action/timestamp nor a camera "
                            f"({', '.join(self._cams) or 'no cameras'})")
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
            zstd = _zstd()
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
        return sum(len(a) for a in self._low["state"])

    # -- closing
    def close(self) -> int:
        """Write the episode's arrays; returns its length. Raises DataError when keys disagree in length."""
        if self.closed:
            raise RuntimeError("episode already closed")
        try:
            low = {}
            for k in _LOWDIM:
                parts = self._low[k]
                if not parts:
                    raise DataError(f"episode {self.index}: no {k!r} given")
                low[k] = np.concatenate(parts)
            n = len(low["state"])
            lengths = {k: len(v) for k, v in low.items()}
            lengths.update(self._count)
            bad = {k: v for k, v in lengths.items() if v != n}
            if bad:
                raise DataError(f"episode {self.index}: arrays differ in length: {lengths}")
            if n == 0:
                raise DataError(f"episode {self.index}: is empty")
            self.store._check_arrays(low["state"], low["action"], self.index)
            for k, v in low.items():
                np.save(self.dir / f"{k}.npy", v)
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


class StoreWriter:
    """Makes a new store; use :meth:`EpisodeStore.create`. A context manager: an exception aborts it."""

    def __init__(self, path: Union[str, os.PathLike], *, joint_names: Sequence[str], cameras: Iterable[Any] = (),
                 control_rate_hz: float, state_dim: Optional[int] = None, action_dim: Optional[int] = None,
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
        self.joint_names = list(joint_names)
        self.cameras = _camera_dicts(cameras)
        self.control_rate_hz = float(control_rate_hz)
        self.state_dim = state_dim
        self.action_dim = action_dim
        self.topics = dict(topics or {})
        self.source_bags = list(source_bags or [])
        self.compression = compression
        self.chunk_frames = int(chunk_frames)
        self.level = int(level)
        self.extra = dict(extra or {})
        self.episodes: list[dict] = []
        self._stats = {"state": _Stats(), "action": _Stats()}
        self._open: list[EpisodeWriter] = []  # several may be open (cameras of one bag advance unevenly)
        self._next = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(self.path)  # temp / moved-aside directories of builds that were killed
        self.tmp = self.path.parent / f"{self.path.name}.tmp-{os.getpid()}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        (self.tmp / "episodes").mkdir(parents=True)
        self.done = False

    def _check_arrays(self, state: np.ndarray, action: np.ndarray, index: int) -> None:
        """(N, D) with the store's D, and finite: the statistics in meta.json are never NaN or inf."""
        for key, arr in (("state", state), ("action", action)):
            if arr.ndim != 2:
                raise DataError(f"episode {index}: {key} must be (N, D), got shape {arr.shape}")
            bad = np.argwhere(~np.isfinite(arr))
            if len(bad):
                step, dim = (int(v) for v in bad[0])
                raise DataError(f"episode {index}: {key} has {len(bad)} non-finite value(s), the first "
                                f"{arr[step, dim]} at step {step}, dimension {dim}")
            want = getattr(self, key + "_dim")
            if want is None:
                setattr(self, key + "_dim", arr.shape[1])
            elif arr.shape[1] != want:
                raise DataError(f"episode {index}: {key} has dimension {arr.shape[1]}, the store has {want}")

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
        """Add a whole episode: ``{"state", "action", "timestamp", <camera>...}``; returns its index."""
        missing = [k for k in (*_LOWDIM, *(c["name"] for c in self.cameras)) if k not in data]
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
        self._stats["state"].add(low["state"])
        self._stats["action"].add(low["action"])
        self._open.remove(ep)

    def _episode_aborted(self, ep: EpisodeWriter) -> None:
        if ep in self._open:
            self._open.remove(ep)

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    def finalize(self) -> "EpisodeStore":
        """Write meta.json and move the store into place atomically; returns the opened store."""
        if self.done:
            raise RuntimeError("store already finalized")
        for ep in list(self._open):
            ep.close()
        if not self.episodes:
            self.abort()
            raise DataError(f"{self.path}: no episodes to write")
        meta = {
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source_bags": self.source_bags,
            "topics": self.topics,
            "control_rate_hz": self.control_rate_hz,
            "joint_names": self.joint_names,
            "state_dim": int(self.state_dim),
            "action_dim": int(self.action_dim),
            "cameras": self.cameras,
            "image_compression": self.compression,
            "chunk_frames": self.chunk_frames,
            "num_episodes": len(self.episodes),
            "num_steps": int(sum(e["length"] for e in self.episodes)),
            "episode_lengths": [e["length"] for e in self.episodes],
            "episodes": self.episodes,
            "stats": {k: s.result() for k, s in self._stats.items()},
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


# --------------------------------------------------------------------------- reading


class EpisodeStore:
    """A dataset directory made by ``genil-ros dataset build`` (or :meth:`create`)."""

    def __init__(self, path: Path, meta: dict, cache_chunks: int = 64):
        self.path = path
        self.meta = meta
        self.camera_names = [c["name"] for c in meta.get("cameras", [])]
        self._cams = {c["name"]: c for c in meta.get("cameras", [])}
        self._low: dict[tuple[int, str], np.ndarray] = {}
        self._idx: dict[tuple[int, str], np.ndarray] = {}
        self._ram: dict[tuple[int, str], np.ndarray] = {}
        self._cache: "OrderedDict[tuple[int, str, int], np.ndarray]" = OrderedDict()
        self._cache_size = cache_chunks
        self._files: dict[tuple[int, str], Any] = {}

    # -- construction
    @classmethod
    def open(cls, path: Union[str, os.PathLike], cache_chunks: int = 64) -> "EpisodeStore":
        """Open a store; ``cache_chunks``: decompressed chunks kept in the LRU cache (per process)."""
        p = Path(path)
        mp = p / "meta.json"
        if not mp.is_file():
            raise DataError(f"{p}: not a dataset (no meta.json)"
                            + ("" if p.exists() else "; the directory does not exist"))
        try:
            meta = json.loads(mp.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"{mp}: unreadable dataset metadata: {e}") from None
        ver = meta.get("format_version")
        if not isinstance(ver, int) or ver > FORMAT_VERSION:
            raise DataError(f"{mp}: format_version {ver!r} is not supported (this genil_ros reads <= {FORMAT_VERSION})")
        for key in ("episode_lengths", "joint_names", "control_rate_hz", "stats"):
            if key not in meta:
                raise DataError(f"{mp}: key {key!r} is missing")
        return cls(p, meta, cache_chunks=cache_chunks)

    @classmethod
    def create(cls, path: Union[str, os.PathLike], **kwargs) -> StoreWriter:
        """A :class:`StoreWriter` (see its arguments: joint_names, cameras, control_rate_hz, ...)."""
        return StoreWriter(path, **kwargs)

    # -- metadata
    @property
    def num_episodes(self) -> int:
        return len(self.meta["episode_lengths"])

    @property
    def episode_lengths(self) -> list[int]:
        return list(self.meta["episode_lengths"])

    def __len__(self) -> int:
        return self.num_episodes

    def stats(self) -> dict:
        """``{"state": {"min","max","mean","std"}, "action": {...}}`` as float32 arrays."""
        return {k: {s: np.asarray(v, dtype=np.float32) for s, v in d.items()} for k, d in self.meta["stats"].items()}

    def _check_episode(self, i: int) -> int:
        n = self.num_episodes
        if not -n <= i < n:
            raise IndexError(f"{self.path}: episode {i} out of range (0..{n - 1})")
        return i % n

    def _dir(self, i: int) -> Path:
        return self.path / "episodes" / f"{i:06d}"

    # -- low-dim
    def lowdim(self, i: int, key: str) -> np.ndarray:
        """state / action / timestamp of episode ``i`` (memory-mapped, read-only)."""
        i = self._check_episode(i)
        arr = self._low.get((i, key))
        if arr is None:
            f = self._dir(i) / f"{key}.npy"
            try:
                arr = np.load(f, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise DataError(f"{f}: cannot read episode array: {e}") from None
            self._low[(i, key)] = arr
        return arr

    # -- frames
    def _shape(self, cam: str) -> tuple[int, int, int]:
        c = self._cams[cam]
        return (c["height"], c["width"], 3)

    def frames(self, i: int, cam: str, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        """Frames ``start:stop`` of camera ``cam`` in episode ``i`` as (n, H, W, 3) uint8."""
        i = self._check_episode(i)
        if cam not in self._cams:
            raise KeyError(f"{self.path}: no camera {cam!r} (cameras: {self.camera_names})")
        n = self.meta["episode_lengths"][i]
        stop = n if stop is None else min(stop, n)
        start = max(0, start)
        ram = self._ram.get((i, cam))
        if ram is not None:
            return ram[start:stop]
        if self.meta.get("image_compression", "zstd") == "none":
            arr = self._low.get((i, cam))
            if arr is None:
                arr = self._low[(i, cam)] = np.load(self._dir(i) / f"{cam}.npy", mmap_mode="r")
            return arr[start:stop]
        cf = int(self.meta["chunk_frames"])
        out = np.empty((max(0, stop - start), *self._shape(cam)), dtype=np.uint8)
        pos = start
        while pos < stop:
            c = pos // cf
            chunk = self._chunk(i, cam, c)
            lo = pos - c * cf
            hi = min(stop - c * cf, len(chunk))
            out[pos - start: pos - start + hi - lo] = chunk[lo:hi]
            pos += hi - lo
        return out

    def _chunk(self, i: int, cam: str, c: int) -> np.ndarray:
        key = (i, cam, c)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        idx = self._idx.get((i, cam))
        if idx is None:
            idx = self._idx[(i, cam)] = np.load(self._dir(i) / f"{cam}.idx.npy")
        fd = self._files.get((i, cam))
        if fd is None:
            if len(self._files) > 256:
                self.close()
            fd = self._files[(i, cam)] = os.open(self._dir(i) / f"{cam}.zst", os.O_RDONLY)
        # pread: no shared file offset, so forked DataLoader workers can share the descriptor
        size = int(idx[c + 1] - idx[c])
        blob = os.pread(fd, size, int(idx[c]))
        if len(blob) != size:
            raise DataError(f"{self._dir(i) / (cam + '.zst')}: truncated (chunk {c})")
        try:
            raw = _zstd().decompress(blob)
        except Exception as e:
            raise DataError(f"{self._dir(i) / (cam + '.zst')}: chunk {c} is corrupt: {e}") from None
        chunk = np.frombuffer(raw, dtype=np.uint8).reshape(-1, *self._shape(cam))
        self._cache[key] = chunk
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return chunk

    def frame_bytes(self) -> int:
        """Bytes that all frames take decompressed."""
        per = sum(c["height"] * c["width"] * 3 for c in self.meta.get("cameras", []))
        return per * int(sum(self.meta["episode_lengths"]))

    def load(self, episodes: Optional[Iterable[int]] = None) -> None:
        """Decompress the frames of ``episodes`` (all by default) into RAM for fast random access."""
        eps = range(self.num_episodes) if episodes is None else episodes
        for i in eps:
            for cam in self.camera_names:
                if (i, cam) not in self._ram:
                    self._ram[(i, cam)] = self.frames(i, cam)
        self._cache.clear()

    def fits_in_ram(self, fraction: float = 0.5) -> bool:
        return self.frame_bytes() <= fraction * _available_ram()

    # -- whole episodes
    def episode(self, i: int) -> dict:
        """``{"state", "action", "timestamp", <camera>...}`` of episode ``i`` as numpy arrays."""
        i = self._check_episode(i)
        out = {k: np.asarray(self.lowdim(i, k)) for k in _LOWDIM}
        for cam in self.camera_names:
            out[cam] = self.frames(i, cam)
        return out

    def close(self) -> None:
        for fd in self._files.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._files.clear()
        self._cache.clear()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self):  # DataLoader workers: reopen files in the child
        d = dict(self.__dict__)
        d["_files"] = {}
        d["_cache"] = OrderedDict()
        return d

    def __repr__(self) -> str:
        return f"EpisodeStore({str(self.path)!r}, episodes={self.num_episodes}, cameras={self.camera_names})"
