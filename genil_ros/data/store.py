"""The on-disk episode store that the trainer reads.

Layout of a store directory (``format_version`` 2)::

    DIR/meta.json                       metadata (see docs/interfaces.md "Dataset store"), with the task
                                        schema it holds (``schema``: observation / action entries + layout)
    DIR/episodes/000000/obs.<name>.npy  (N, dim) float32 per low-dim observation entry   plain .npy,
    DIR/episodes/000000/act.<name>.npy  (N, dim) float32 per action entry                memory-mapped
    DIR/episodes/000000/timestamp.npy   (N,) float64 seconds
    DIR/episodes/000000/<cam>.zst       (N, H, W, 3) uint8 in chunks of ``chunk_frames`` frames, each chunk
                                        zstd-compressed on its own (random access touches one or two chunks)
    DIR/episodes/000000/<cam>.idx.npy   int64 byte offsets of the chunks in <cam>.zst (n_chunks + 1)
    DIR/episodes/000000/<cam>.npy       instead of the two above when the store was made with
                                        ``compression="none"``: memory-mapped like the low-dim arrays

``state`` / ``action`` are the concatenations of the entries in layout order (``schema.layout``), read
as ``store.lowdim(i, "state")``; each entry is ``store.lowdim(i, "obs.<name>")``. ``meta.json`` has the
statistics (min, max, mean, std) of both concatenations (``stats``) and of every entry (``entry_stats``).

Format 1 (``state.npy`` / ``action.npy``, no schema) still opens: its entries are the ``joint_names``
form's (``legacy_store_entries``), read as slices of the two arrays; its per-entry statistics are the
slices of its statistics. Nothing on disk is rewritten.

Images are the bulk of a dataset, so they are compressed; low-dimensional arrays are tiny and stay
memory-mappable. :meth:`EpisodeStore.load` decompresses everything into RAM (the Dataset does that on
its own when the frames fit in the RAM budget); otherwise frames are decoded chunk by chunk through a
small LRU cache. Writing (``data/store_writer.py``) is atomic.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np

from genil_ros.data.store_writer import (
    FORMAT_VERSION,
    EpisodeWriter,
    StoreWriter,
    entry_keys,
    legacy_store_entries,
    zstd_module,
)
from genil_ros.errors import DataError
from genil_ros.schema import Layout, SchemaError, entries_from_dict, layout

__all__ = ["EpisodeStore", "StoreWriter", "EpisodeWriter", "FORMAT_VERSION"]

_LOWDIM = ("state", "action", "timestamp")


def _available_ram() -> int:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 4 << 30


def _migrate_v1(meta: dict, where: Path) -> dict:
    """Format 1 -> 2 in memory: the schema of the joint_names form, per-entry statistics as slices."""
    state, action = meta["stats"].get("state", {}), meta["stats"].get("action", {})
    sd = int(meta.get("state_dim") or len(state.get("min", [])))
    ad = int(meta.get("action_dim") or len(action.get("min", [])))
    obs, act = legacy_store_entries(meta["joint_names"], sd, ad, meta.get("cameras", []))
    lay = layout(obs, act)
    entry_stats = {}
    for k, e in entry_keys(obs, act):
        src, part = (state, lay.state_entry(e.name)) if k.startswith("obs.") else (action, lay.action_entry(e.name))
        entry_stats[k] = {s: list(v[part.start:part.stop]) for s, v in src.items()}
    from genil_ros.schema import entries_to_dict

    return dict(meta, schema={**entries_to_dict(obs, act), "layout": lay.to_dict()}, entry_stats=entry_stats,
                state_dim=sd, action_dim=ad, migrated_from=1)


# --------------------------------------------------------------------------- reading


class EpisodeStore:
    """A dataset directory made by ``genil-ros dataset build`` (or :meth:`create`)."""

    def __init__(self, path: Path, meta: dict, cache_chunks: int = 64):
        self.path = path
        self.meta = meta
        self.format_version = int(meta.get("migrated_from", meta["format_version"]))
        try:
            self.observations, self.actions = entries_from_dict(meta["schema"], "schema", validate=False)
        except (SchemaError, KeyError, TypeError) as e:
            raise DataError(f"{path / 'meta.json'}: the recorded task schema is unreadable: {e}") from None
        self.layout: Layout = layout(self.observations, self.actions)
        self.entries = dict(entry_keys(self.observations, self.actions))  # obs.<name> / act.<name> -> entry
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
        for key in ("episode_lengths", "joint_names", "control_rate_hz", "stats") + (("schema",) if ver >= 2 else ()):
            if key not in meta:
                raise DataError(f"{mp}: key {key!r} is missing")
        if ver == 1:
            meta = _migrate_v1(meta, mp)
        return cls(p, meta, cache_chunks=cache_chunks)

    @classmethod
    def create(cls, path: Union[str, os.PathLike], **kwargs) -> StoreWriter:
        """A :class:`StoreWriter` (see its arguments: control_rate_hz, observations, actions or
        joint_names / cameras, ...)."""
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

    def stats(self, lay: Optional[Layout] = None) -> dict:
        """``{"state": {"min","max","mean","std"}, "action": {...}, "obs.<name>": {...}, "act.<name>": {...}}``
        as float32 arrays. With ``lay`` (a task's layout, which may take a subset of the store's entries in
        another order), ``state`` / ``action`` are the concatenations of its entries."""
        raw = dict(self.meta.get("entry_stats", {}))
        if lay is None:
            raw.update(self.meta["stats"])
        else:
            self.check_layout(lay)
            for whole, part, rows in (("state", "obs.", lay.state), ("action", "act.", lay.action)):
                parts = [raw[part + e.name] for e in rows]
                raw[whole] = {s: [v for p in parts for v in p[s]] for s in parts[0]} if parts else {}
        return {k: {s: np.asarray(v, dtype=np.float32) for s, v in d.items()} for k, d in raw.items()}

    def check_layout(self, lay: Layout, where: Optional[str] = None) -> None:
        """DataError unless every entry of ``lay`` is in this store with the same type, dimensions and
        meaning (``mode``); normalisation is the policy's business, not the data's. Names the entry."""
        where = where or str(self.path)
        for kind, part, rows in (("observation", "obs.", lay.state), ("action", "act.", lay.action)):
            mine = {e.name: e for e in (self.layout.state if part == "obs." else self.layout.action)}
            for e in rows:
                have = mine.get(e.name)
                if have is None:
                    raise DataError(f"{where}: the dataset has no {kind} {e.name!r} (it has "
                                    f"{', '.join(mine) or 'none'})")
                for what, a, b in (("type", have.type, e.type), ("dimensions", list(have.dim_names), list(e.dim_names)),
                                   ("mode", have.mode or "absolute", e.mode or "absolute")):
                    if a != b:
                        raise DataError(f"{where}: {kind} {e.name!r}: {what} differ (dataset {a}, config {b})")
        cams = {c["name"]: c for c in self.meta.get("cameras", [])}
        for name in lay.cameras:
            if name not in cams:
                raise DataError(f"{where}: the dataset has no camera {name!r} (it has {sorted(cams)})")

    def _check_episode(self, i: int) -> int:
        n = self.num_episodes
        if not -n <= i < n:
            raise IndexError(f"{self.path}: episode {i} out of range (0..{n - 1})")
        return i % n

    def _dir(self, i: int) -> Path:
        return self.path / "episodes" / f"{i:06d}"

    # -- low-dim
    def _load(self, i: int, name: str) -> np.ndarray:
        arr = self._low.get((i, name))
        if arr is None:
            f = self._dir(i) / f"{name}.npy"
            try:
                arr = np.load(f, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise DataError(f"{f}: cannot read episode array: {e}") from None
            self._low[(i, name)] = arr
        return arr

    def lowdim(self, i: int, key: str) -> np.ndarray:
        """``timestamp``, an entry (``obs.<name>``, ``act.<name>``) or the concatenation ``state`` /
        ``action`` (layout order) of episode ``i``; read-only (entries memory-mapped)."""
        i = self._check_episode(i)
        if key == "timestamp":
            return self._load(i, key)
        if self.format_version == 1:  # state.npy / action.npy on disk; entries are slices of them
            if key in ("state", "action"):
                return self._load(i, key)
            if key not in self.entries:
                raise KeyError(f"{self.path}: no low-dim array {key!r} (have {', '.join(self.entries)})")
            e = self.layout.state_entry(key[4:]) if key.startswith("obs.") else self.layout.action_entry(key[4:])
            return self._load(i, "state" if key.startswith("obs.") else "action")[:, e.slice]
        if key in ("state", "action"):
            part = "obs." if key == "state" else "act."
            arr = np.concatenate([self._load(i, k) for k in self.entries if k.startswith(part)], axis=1)
            arr.setflags(write=False)
            return arr
        if key not in self.entries:
            raise KeyError(f"{self.path}: no low-dim array {key!r} (have {', '.join(self.entries)})")
        return self._load(i, key)

    def lowdim_for(self, i: int, lay: Layout) -> tuple[np.ndarray, np.ndarray]:
        """(state, action) of episode ``i`` as ``lay`` concatenates them (check with :meth:`check_layout`)."""
        state = [self.lowdim(i, "obs." + e.name) for e in lay.state]
        action = [self.lowdim(i, "act." + e.name) for e in lay.action]
        n = len(self.lowdim(i, "timestamp"))
        return (np.concatenate(state, 1) if state else np.zeros((n, 0), np.float32),
                np.concatenate(action, 1) if action else np.zeros((n, 0), np.float32))

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
            return self._load(i, cam)[start:stop]
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
            raw = zstd_module().decompress(blob)
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
        """``{"state", "action", "timestamp", "obs.<name>"..., "act.<name>"..., <camera>...}`` of episode
        ``i`` as numpy arrays."""
        i = self._check_episode(i)
        out = {k: np.asarray(self.lowdim(i, k)) for k in (*_LOWDIM, *self.entries)}
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
