"""Pass 1 of ``dataset build`` over one bag: the task's topics as streams, checked against the bag, read
into per-entry values with their time stamps, and checked for non-finite values.

A *stream* is one topic in one role: ``obs:<topic>`` (every low-dim observation entry read from that
topic: joints and a gripper may share ``/joint_states``), ``cmd:<topic>`` (the recorded commands of action
entries with ``source: command``; held until just before the next tick) or ``cam:<name>`` (a camera,
whose frames are decoded in pass 2). Each message is deserialised once and every entry reader of its
stream takes its vector from it (``data/entries.py``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from genil_ros.data.bags import Bag, DataWarning, short_type
from genil_ros.data.entries import (
    COMPRESSED,
    HEADERLESS,
    IMAGE,
    EntryReader,
    JointCommandReader,
    JointStateReader,
    command_reader,
    observation_reader,
)
from genil_ros.errors import DataError

__all__ = ["Stream", "task_streams", "reference_stream", "check_topics", "read_streams", "assign_stamps",
           "nonfinite_messages", "where"]


@dataclass
class Stream:
    name: str  # obs:<topic> | cmd:<topic> | cam:<camera name>
    topic: str
    kind: str  # obs | cmd | cam
    readers: list = field(default_factory=list)  # EntryReader per entry read from this stream
    camera: object = None  # the camera's ObservationEntry (kind cam)
    msgtype: str = ""  # the bag's type for the topic (set by check_topics)
    hdr: list = field(default_factory=list)  # header stamps (ns), 0 where none
    log: list = field(default_factory=list)  # receive times (ns)
    values: dict = field(default_factory=dict)  # entry key -> list of (dim,) arrays, one per kept message
    stamps: Optional[np.ndarray] = None
    table: dict = field(default_factory=dict)  # entry key -> (messages, dim) array, once read

    @property
    def role(self) -> str:
        if self.kind == "cam":
            return f"camera {self.camera.name}"
        return ", ".join(r.label for r in self.readers)

    @property
    def msgtypes(self) -> tuple[str, ...]:
        if self.kind == "cam":
            return (IMAGE, COMPRESSED)
        accepted = [t for t in self.readers[0].msgtypes if all(t in r.msgtypes for r in self.readers)]
        return tuple(accepted)


def where(bag: Bag, topic: str) -> str:
    return f"{bag.path}: {topic}"


def task_streams(task) -> dict[str, Stream]:
    """The streams of a task (validated ``TaskConfig`` with entries), in the order of its entries."""
    streams: dict[str, Stream] = {}
    for i, o in enumerate(task.observations):
        if o.is_camera:
            streams["cam:" + o.name] = Stream("cam:" + o.name, o.topic, "cam", camera=o)
            continue
        r = observation_reader(o, i)
        streams.setdefault("obs:" + r.topic, Stream("obs:" + r.topic, r.topic, "obs")).readers.append(r)
    for i, a in enumerate(task.actions):
        if a.source == "command":
            r = command_reader(a, i)
            streams.setdefault("cmd:" + r.topic, Stream("cmd:" + r.topic, r.topic, "cmd")).readers.append(r)
    return streams


def reference_stream(task, streams: dict[str, Stream]) -> str:
    """The stream whose gaps cut episodes and whose clock the others map onto: that of the first low-dim
    observation with a header (joint states, pose, wrench), else of the first low-dim observation."""
    low = [o for o in task.observations if not o.is_camera]
    stamped = [o for o in low if o.type != "vector"] or low
    o = stamped[0]
    return "obs:" + (o.resolved_topic if o.type != "vector" else o.topic)


def check_topics(bag: Bag, streams: dict[str, Stream]) -> None:
    """Every stream's topic is in the bag with an accepted type and has messages; sets ``msgtype``."""
    if bag.message_count == 0:
        raise DataError(f"{bag.path}: empty bag (no messages)")
    for s in streams.values():
        if s.topic not in bag.topics:
            have = ", ".join(sorted(bag.topics)) or "none"
            raise DataError(f"{bag.path}: topic {s.topic} ({s.role}) is not in the bag (it has: {have})")
        msgtype = bag.topics[s.topic]
        if msgtype not in s.msgtypes:
            raise DataError(f"{where(bag, s.topic)}: unsupported message type {short_type(msgtype)} for {s.role} "
                            f"(expected {' or '.join(map(short_type, s.msgtypes))})")
        if bag.count([s.topic]) == 0:
            raise DataError(f"{where(bag, s.topic)}: no messages on this topic")
        s.msgtype = msgtype


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def read_streams(bag: Bag, streams: dict[str, Stream], pbar) -> None:
    """Pass 1: every low-dim message deserialised and read by its entries; camera messages checked
    (cheap) and their stamps kept, decoded only in pass 2 if the timeline holds them."""
    from genil_ros.data.images import check_compressed_format, check_image

    by_topic: dict[str, list[Stream]] = {}
    for s in streams.values():
        by_topic.setdefault(s.topic, []).append(s)
        s.values = {r.key: [] for r in s.readers}
    for topic, t, raw in bag.messages(by_topic):
        pbar.update(1)
        msg = None
        for s in by_topic[topic]:
            if msg is None:
                msg = bag.deserialize(raw, s.msgtype, topic)
            if s.kind == "cam":
                s.log.append(t)
                s.hdr.append(_stamp(msg))
                at = f"{where(bag, topic)} (message {len(s.log) - 1})"
                if s.msgtype == IMAGE:
                    check_image(msg.encoding, msg.height, msg.width, msg.step, len(msg.data), where=at)
                else:
                    check_compressed_format(msg.format, where=at)
                continue
            try:
                row = [r.read(msg, s.msgtype) for r in s.readers]
            except DataError as e:  # headerless messages are timed by their receive time
                when = f"message received at t = {t / 1e9:.3f} s: " if s.msgtype in HEADERLESS else ""
                raise DataError(f"{where(bag, topic)}: {when}{e}") from None
            if any(v is None for v in row):  # e.g. a JointTrajectory without points: not a command
                continue
            s.log.append(t)
            s.hdr.append(0 if s.msgtype in HEADERLESS else _stamp(msg))
            for r, v in zip(s.readers, row):
                s.values[r.key].append(v)
    for s in streams.values():
        skipped = sum(getattr(r, "skipped", 0) for r in s.readers)
        if skipped:
            warnings.warn(f"{where(bag, s.topic)}: skipped {skipped} {short_type(s.msgtype).split('/')[-1]} "
                          f"message(s) without points", DataWarning, stacklevel=3)
        if not s.log:
            raise DataError(f"{where(bag, s.topic)}: no usable messages on this topic")


def assign_stamps(bag: Bag, use_header_stamps: bool, streams: dict[str, Stream], reference: str) -> str:
    """Choose the time base and set ``stream.stamps``; returns "header" or "receive"."""
    ref = streams[reference]
    ref_hdr = np.asarray(ref.hdr, dtype=np.int64)
    ref_log = np.asarray(ref.log, dtype=np.int64)
    use_header = use_header_stamps
    if use_header and np.any(ref_hdr == 0):
        what = (f"{short_type(ref.msgtype).split('/')[-1]} has no header stamps" if ref.msgtype in HEADERLESS
                else f"{short_type(ref.msgtype).split('/')[-1]} header stamps are zero")
        warnings.warn(f"{where(bag, ref.topic)}: {what}; using receive times for all topics of this bag",
                      DataWarning, stacklevel=3)
        use_header = False
    if not use_header:
        for s in streams.values():
            s.stamps = np.asarray(s.log, dtype=np.int64)
        base = "receive"
    else:
        # messages without a stamp (Float64MultiArray, JointTrajectory "start now", unstamped images):
        # receive time mapped onto the reference stream's clock (offset interpolated between its messages)
        offset = (ref_hdr - ref_log).astype(np.float64)
        for s in streams.values():
            hdr = np.asarray(s.hdr, dtype=np.int64)
            log = np.asarray(s.log, dtype=np.int64)
            missing = hdr == 0
            if missing.any():
                shift = np.interp(log.astype(np.float64), ref_log.astype(np.float64), offset)
                hdr = np.where(missing, log + np.round(shift).astype(np.int64), hdr)
                if s.msgtype not in HEADERLESS and missing.all() and s.kind != "cmd":
                    warnings.warn(f"{where(bag, s.topic)}: header stamps are zero; using receive times (mapped onto "
                                  f"{ref.topic}'s clock)", DataWarning, stacklevel=3)
            s.stamps = hdr
        base = "header"
    for s in streams.values():
        d = np.diff(s.stamps)
        if len(d) and d.min() < 0:
            k = int(np.argmin(d)) + 1
            kind = "header stamp" if base == "header" else "receive time"
            raise DataError(f"{where(bag, s.topic)}: timestamps go backwards at message {k}: {kind} "
                            f"{s.stamps[k] / 1e9:.6f} s after {s.stamps[k - 1] / 1e9:.6f} s")
    return base


def _names(r: EntryReader, dims) -> list[str]:
    joint = isinstance(r, (JointStateReader, JointCommandReader))
    return [r.dim_names[d] if joint else f"{r.entry.name}.{r.dim_names[d]}" for d in dims]


def nonfinite_messages(bag: Bag, nonfinite: str, streams: dict[str, Stream]) -> dict[str, np.ndarray]:
    """Stream name -> bool per message: holds a NaN / inf in a value an entry uses. ``nonfinite`` "error"
    raises at the first, naming bag, topic, joint / dimension and time; "cut" warns once per topic and
    returns the masks for the timeline to cut at."""
    out = {}
    for name, s in streams.items():
        if s.kind == "cam":
            continue
        bad = {r.key: ~np.isfinite(np.stack(s.values[r.key])) for r in s.readers}
        rows = np.zeros(len(s.log), dtype=bool)
        for b in bad.values():
            rows |= b.any(axis=1)
        if not rows.any():
            continue
        k = int(np.argmax(rows))
        r = next(r for r in s.readers if bad[r.key][k].any())
        d = int(np.argmax(bad[r.key][k]))
        first = (f"{r.describe(d)} is {s.values[r.key][k][d]} at t = {s.stamps[k] / 1e9:.3f} s (message {k})")
        if nonfinite == "error":
            raise DataError(f"{where(bag, s.topic)}: non-finite value: {first}, {int(rows.sum())} message(s) in all; "
                            "fix the recording, or set dataset.nonfinite: cut to split the episode there")
        hit = [n for r in s.readers for n in _names(r, np.nonzero(bad[r.key].any(axis=0))[0])]
        joints = all(isinstance(r, (JointStateReader, JointCommandReader)) for r in s.readers)
        last = s.stamps[len(rows) - 1 - int(np.argmax(rows[::-1]))] / 1e9
        warnings.warn(f"{where(bag, s.topic)}: {int(rows.sum())} message(s) with non-finite values "
                      f"({'joints' if joints else 'dims'} {hit}) up to t = {last:.3f} s, the first: {first}; cut "
                      "there (dataset.nonfinite: cut)", DataWarning, stacklevel=3)
        out[name] = rows
    return out

