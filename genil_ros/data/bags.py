"""Reading rosbags through ``rosbags``: rosbag2 directories, bare ``.mcap`` / ``.db3`` files (compressed
or not) and ROS 1 ``.bag`` files. Every failure is a :class:`DataError` naming the file (and the topic).

Messages are streamed (never a whole bag in RAM). :func:`header_stamp_ns` reads a message's
``std_msgs/Header`` stamp straight from the serialized bytes, so images need not be deserialised to
learn when they were taken.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

from genil_ros.errors import DataError

__all__ = ["Bag", "open_bag", "bag_files", "bag_sha256", "header_stamp_ns", "short_type", "DataWarning",
           "BAG_SUFFIXES", "is_bag", "find_bags"]

# storage files rosbags reads: rosbag2 mcap / sqlite3, and ROS 1 bags
BAG_SUFFIXES = (".mcap", ".db3", ".bag")


class DataWarning(UserWarning):
    """Something about a bag the user should know (receive-time fallback, dropped spans...)."""


def short_type(msgtype: str) -> str:
    """'sensor_msgs/msg/Image' -> 'sensor_msgs/Image'."""
    return msgtype.replace("/msg/", "/") if msgtype else str(msgtype)


def is_bag(path: Union[str, Path]) -> bool:
    """Is ``path`` one bag: a rosbag2 directory (``metadata.yaml``) or a ``.mcap`` / ``.db3`` / ROS 1
    ``.bag`` file? Temporary entries of an unfinished write (``x.mcap.tmp-123``) are not bags."""
    from genil_ros.fileio import is_temp_name

    p = Path(path)
    if is_temp_name(p):
        return False
    if p.is_dir():
        return (p / "metadata.yaml").is_file()
    return p.is_file() and p.suffix in BAG_SUFFIXES


def find_bags(folder: Union[str, Path], skip_hidden: bool = True) -> list[Path]:
    """The bags directly inside ``folder``, sorted by name; hidden or ``_``-prefixed entries (a trainer's
    own checkpoint folder, editors' files) are skipped when ``skip_hidden``. A missing folder has none."""
    try:
        entries = sorted(Path(folder).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [p for p in entries if not (skip_hidden and p.name.startswith((".", "_"))) and is_bag(p)]


def _resolve(path: Path) -> Path:
    """The path ``rosbags`` should open: a rosbag2 dir (with metadata.yaml), a .mcap/.db3 file or a .bag."""
    if not path.exists():
        raise DataError(f"{path}: bag not found")
    if path.is_dir():
        if (path / "metadata.yaml").is_file():
            return path
        files = sorted([*path.glob("*.mcap"), *path.glob("*.db3")])
        if len(files) == 1:
            return files[0]
        if not files:
            raise DataError(f"{path}: not a rosbag2 directory (no metadata.yaml, no .mcap or .db3 file)")
        raise DataError(f"{path}: has no metadata.yaml and {len(files)} storage files; give one file")
    if path.suffix not in BAG_SUFFIXES:
        raise DataError(f"{path}: not a bag (expected a rosbag2 directory, .mcap, .db3 or ROS 1 .bag)")
    return path


def bag_files(path: Union[str, Path]) -> list[Path]:
    """The files that make up a bag (for hashing and sizes)."""
    p = Path(path)
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.is_file())
    return [p]


def bag_sha256(path: Union[str, Path]) -> tuple[str, list[dict], int]:
    """(sha256 of the bag, [{name, sha256, size}] per file, total bytes). A directory's hash covers its
    files' names and hashes."""
    files, total = [], 0
    for f in bag_files(path):
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        size = f.stat().st_size
        total += size
        files.append({"name": f.name, "sha256": h.hexdigest(), "size": size})
    if len(files) == 1 and not Path(path).is_dir():
        return files[0]["sha256"], files, total
    top = hashlib.sha256("".join(f"{f['name']}:{f['sha256']}\n" for f in files).encode()).hexdigest()
    return top, files, total


def header_stamp_ns(raw, ros1: bool = False) -> int:
    """The header stamp (ns) of a serialized message whose first field is a std_msgs/Header.

    CDR: 4-byte encapsulation header, then int32 sec, uint32 nanosec. ROS 1: uint32 seq, then the two
    uint32 of the stamp. Both put the stamp at bytes 4..12."""
    if len(raw) < 12:
        raise ValueError("message too short for a header")
    little = True if ros1 else raw[1] in (1, 3)
    sec, nsec = struct.unpack_from("<iI" if little else ">iI", raw, 4)
    return sec * 1_000_000_000 + nsec


class Bag:
    """An open bag. ``topics`` maps topic -> message type (ROS 2 spelling); ``messages(topics)`` streams
    ``(topic, receive_time_ns, raw_bytes)`` in receive-time order; ``deserialize(raw, msgtype)``."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self._target = _resolve(self.path)
        self.ros1 = self._target.suffix == ".bag"
        self._reader = None

    def __enter__(self) -> "Bag":
        self.open()
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def open(self) -> None:
        from rosbags.typesys import Stores, get_typestore

        try:
            if self.ros1:
                from rosbags.rosbag1 import Reader as Reader1

                self._reader = Reader1(self._target)
                self._typestore = get_typestore(Stores.ROS1_NOETIC)
            else:
                from rosbags.rosbag2 import Reader as Reader2

                self._reader = Reader2(self._target)
                self._typestore = get_typestore(Stores.ROS2_KILTED)
            self._reader.open()
        except DataError:
            raise
        except Exception as e:  # ReaderError, struct/sqlite/yaml errors from a damaged file
            self._reader = None
            raise DataError(f"{self.path}: cannot open bag (truncated or corrupt?): {_reason(e)}") from None
        self.connections = list(self._reader.connections)
        self.topics: dict[str, str] = {}
        for c in self.connections:
            self.topics.setdefault(c.topic, c.msgtype)
        self.message_count = int(self._reader.message_count)
        self._register_types()

    def _register_types(self) -> None:
        """Types the default store lacks: take them from the definitions stored in the bag, if any."""
        from rosbags.interfaces import MessageDefinitionFormat
        from rosbags.typesys import get_types_from_idl, get_types_from_msg

        for c in self.connections:
            if c.msgtype in self._typestore.fielddefs or c.msgdef.format == MessageDefinitionFormat.NONE:
                continue
            try:
                if c.msgdef.format == MessageDefinitionFormat.MSG:
                    self._typestore.register(get_types_from_msg(c.msgdef.data, c.msgtype))
                else:
                    self._typestore.register(get_types_from_idl(c.msgdef.data))
            except Exception:  # an unusable definition only matters if that topic is used; checked by callers
                pass

    def close(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:
                pass
            self._reader = None

    def count(self, topics: Iterable[str]) -> int:
        want = set(topics)
        return sum(c.msgcount for c in self.connections if c.topic in want)

    def messages(self, topics: Iterable[str]) -> Iterator[tuple[str, int, bytes]]:
        want = set(topics)
        conns = [c for c in self.connections if c.topic in want]
        if not conns:
            return
        topic = None
        try:
            for conn, t, raw in self._reader.messages(connections=conns):
                topic = conn.topic
                yield conn.topic, t, raw
        except DataError:
            raise
        except Exception as e:
            where = f" (after a message on {topic})" if topic else ""
            raise DataError(f"{self.path}: cannot read messages{where}; truncated or corrupt bag: "
                            f"{_reason(e)}") from None

    def deserialize(self, raw, msgtype: str, topic: Optional[str] = None):
        try:
            if self.ros1:
                return self._typestore.deserialize_ros1(raw, msgtype)
            return self._typestore.deserialize_cdr(raw, msgtype)
        except Exception as e:
            raise DataError(f"{self.path}: {topic or msgtype}: cannot deserialize a {short_type(msgtype)} message "
                            f"(corrupt data?): {_reason(e)}") from None


def open_bag(path: Union[str, Path]) -> Bag:
    b = Bag(path)
    b.open()
    return b


def _reason(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__
