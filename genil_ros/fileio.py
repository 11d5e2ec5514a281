"""Atomic writes: the one way genil_ros writes a file or a directory that a crash must not leave half done.

A file is written as ``<name>.tmp-<pid><suffix>`` beside its target, fsynced, and renamed over it; a
directory is filled as ``<name>.tmp-<pid>`` and renamed into place, the previous one moved aside as
``<name>.old-<pid>`` and restored if anything fails. A kill at any point leaves either the old content or
the new one whole, never a mix. Leftovers of killed writers (whose pid is gone) are removed on the next
write of the same target (a moved-aside directory whose target is missing is renamed back instead), and
:func:`is_temp_name` tells readers (``--resume``, folder watchers) to skip them.

::

    atomic_write_text(out / "summary.json", json.dumps(summary))
    with atomic_path(out / "episode0.gif") as tmp:   # for libraries that write the file themselves
        imageio.mimsave(tmp, frames)                  # tmp keeps the suffix (.gif), so formats are guessed
    write_dir_atomically(ckpt_dir, lambda tmp: save_everything_into(tmp))
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "write_dir_atomically",
    "clean_stale",
    "restore_moved_aside",
    "is_temp_name",
    "fsync_path",
]

PathLike = Union[str, "os.PathLike[str]"]

# <name>.tmp-<pid>[suffix] and <name>.old-<pid>: what the writers below leave only when killed mid-write
_TEMP_RE = re.compile(r"\.(tmp|old)-(\d+)(\.[^./]*)?$")


def is_temp_name(name: Union[str, Path]) -> bool:
    """True for a temporary or moved-aside entry of an atomic write (``x.tmp-123``, ``x.old-123``,
    ``x.tmp-123.json``): never a finished file or directory."""
    return _TEMP_RE.search(Path(name).name) is not None


def fsync_path(path: PathLike) -> None:
    """fsync a file or a directory entry (best effort: some file systems refuse it on directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for f in sorted(path.rglob("*")):
        if f.is_file():
            fsync_path(f)
    for d in sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True):
        fsync_path(d)
    fsync_path(path)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leftovers(target: Path) -> list[tuple[Path, re.Match]]:
    """``<target>.tmp-<pid>*`` / ``<target>.old-<pid>`` entries of writers whose process is gone."""
    if not target.parent.is_dir():
        return []
    out = []
    for p in target.parent.glob(glob.escape(target.name) + ".*-*"):
        m = _TEMP_RE.search(p.name)
        if m is not None and p.name[: m.start()] == target.name and not _pid_alive(int(m.group(2))):
            out.append((p, m))
    return out


def restore_moved_aside(target: PathLike) -> Optional[Path]:
    """If ``target`` is missing but a killed writer left it moved aside as ``<target>.old-<pid>`` (killed
    between the two renames of :func:`write_dir_atomically`), rename that complete previous directory
    back to ``target``. Returns the name it had, or None."""
    target = Path(target)
    if target.exists() or target.is_symlink():
        return None
    olds = [p for p, m in _leftovers(target) if m.group(1) == "old" and p.is_dir() and not p.is_symlink()]
    if not olds:
        return None
    newest = max(olds, key=lambda p: p.stat().st_mtime)
    os.replace(newest, target)
    fsync_path(target.parent)
    return newest


def clean_stale(target: PathLike) -> list[Path]:
    """Tidy what writers of ``target`` that were killed (their process is gone) left: a moved-aside
    ``<target>.old-<pid>`` whose ``target`` is missing is the complete previous content and gets its name
    back (:func:`restore_moved_aside`); every other ``<target>.tmp-<pid>*`` / ``<target>.old-<pid>`` is
    removed. A writer that is still running is left alone. Returns what was removed."""
    target = Path(target)
    restore_moved_aside(target)
    removed = []
    for p, _ in _leftovers(target):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_path(target: PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``target`` (same suffix); on a clean exit it is fsynced and renamed
    over ``target``, on an exception it is removed and ``target`` is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}{target.suffix}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: nothing was written")
        fsync_path(tmp)
        os.replace(tmp, target)
        fsync_path(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    clean_stale(target)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):  # numpy arrays and scalars
        return o.tolist()
    return str(o)


def atomic_write_json(path: PathLike, obj: Any, indent: int = 2, sort_keys: bool = False) -> Path:
    """JSON (numpy values and paths converted) written atomically, with a trailing newline."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, default=_json_default) + "\n")


def write_dir_atomically(target: PathLike, fill: Callable[[Path], None]) -> Path:
    """``fill(tmp)`` writes the files into ``<target>.tmp-<pid>``, which then replaces ``target`` by rename.

    The previous ``target`` is moved aside first and restored if anything fails, so a kill or an error at
    any point leaves either the old directory or the new one whole (a reader that finds only
    ``<target>.old-<pid>`` after a kill between the two renames can use it: it is the complete old one)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    old = target.with_name(f"{target.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        _fsync_tree(tmp)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        fsync_path(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    clean_stale(target)
    return target
