"""`genil-ros dataset build --config CFG BAGS... -o DIR`: rosbags -> episode store.

Each bag is streamed twice and never held in RAM:

1. all messages of the configured topics are deserialised and checked (images are not decoded) and the
   joint states and commands kept (small); from the stamps the control-rate timeline is planned
   (``data/sync.py``);
2. the camera topics are read again and only the frames the timeline holds are decoded (OpenCV),
   resized to the configured size and streamed into the store in compressed chunks.

Topic roles come from the experiment config: ``task.joint_states_topic`` / ``task.joint_names`` /
``task.cameras`` and ``dataset.action_source`` / ``action_topic`` / ``max_staleness_s`` /
``episode_gap_s`` / ``use_header_stamps`` / ``episode_split`` / ``nonfinite`` (a NaN or inf in the joint
states or commands is an error naming bag, topic, joint and time, or by choice a cut of the span). The
store is written into a temp directory and renamed into place at the end, so an interrupted build leaves
nothing at ``-o DIR``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from genil_ros.data.bags import Bag, DataWarning, bag_sha256, find_bags, is_bag, short_type
from genil_ros.errors import DataError

__all__ = ["build_dataset", "expand_bag_paths", "add_arguments", "run", "JOINT_STATE", "IMAGE", "COMPRESSED",
           "TRAJECTORY", "MULTIARRAY"]

JOINT_STATE = "sensor_msgs/msg/JointState"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
MULTIARRAY = "std_msgs/msg/Float64MultiArray"


def expand_bag_paths(paths: Sequence[Union[str, os.PathLike]]) -> list[Path]:
    """Bags given on the command line: a rosbag2 directory, a .mcap/.db3/.bag file, or a folder of those."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise DataError(f"{p}: bag not found")
        if p.is_dir() and not is_bag(p):
            kids = find_bags(p, skip_hidden=False)
            if not kids:
                raise DataError(f"{p}: not a bag and holds no bags (rosbag2 directories, .mcap, .db3, .bag)")
            out.extend(kids)
        else:
            out.append(p)
    seen, uniq = set(), []
    for p in out:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            uniq.append(p)
    return uniq


@dataclass
class _Stream:
    topic: str
    msgtype: str
    role: str
    hdr: list = field(default_factory=list)  # header stamps (ns), 0 where none
    log: list = field(default_factory=list)  # receive times (ns)
    values: list = field(default_factory=list)
    stamps: Optional[np.ndarray] = None


def _where(bag: Bag, topic: str) -> str:
    return f"{bag.path}: {topic}"


def _check_topics(bag: Bag, cfg) -> dict:
    """role -> (topic, msgtype), checked against the bag; DataError names the file and topic."""
    task, ds = cfg.task, cfg.dataset
    if bag.message_count == 0:
        raise DataError(f"{bag.path}: empty bag (no messages)")
    roles = {"joint_states": (task.joint_states_topic, (JOINT_STATE,))}
    for cam in task.cameras:
        roles["camera:" + cam.name] = (cam.topic, (IMAGE, COMPRESSED))
    if ds.action_source == "command":
        roles["action"] = (ds.action_topic, (TRAJECTORY, MULTIARRAY))
    out = {}
    for role, (topic, types) in roles.items():
        if topic not in bag.topics:
            have = ", ".join(sorted(bag.topics)) or "none"
            raise DataError(f"{bag.path}: topic {topic} ({role.replace('camera:', 'camera ')}) is not in the bag "
                            f"(it has: {have})")
        msgtype = bag.topics[topic]
        if msgtype not in types:
            raise DataError(f"{bag.path}: {topic}: unsupported message type {short_type(msgtype)} for "
                            f"{role.replace('camera:', 'camera ')} (expected {' or '.join(map(short_type, types))})")
        if bag.count([topic]) == 0:
            raise DataError(f"{bag.path}: {topic}: no messages on this topic")
        out[role] = (topic, msgtype)
    return out


class _JointIndexer:
    """Reorders JointState / JointTrajectory fields by name; caches the order while names do not change."""

    def __init__(self, wanted, where):
        self.wanted, self.where = list(wanted), where
        self._names = None
        self._idx = None

    def __call__(self, names, values, field="position") -> np.ndarray:
        from genil_ros.data.images import reorder_joints

        names = tuple(names)
        if names != self._names:
            out = reorder_joints(names, values, self.wanted, where=self.where, field=field)
            index = {n: i for i, n in enumerate(names)}
            self._names, self._idx = names, np.array([index[j] for j in self.wanted])
            return out
        if len(values) != len(names):
            raise DataError(f"{self.where}: JointState has {len(names)} names but {len(values)} {field} values")
        return np.asarray(values, dtype=np.float64)[self._idx].astype(np.float32)


def _read_lowdim(bag: Bag, cfg, roles: dict, pbar) -> dict[str, _Stream]:
    """Pass 1: joint states and commands deserialised, image stamps read from the bytes."""
    from genil_ros.data.images import check_compressed_format, check_image

    task = cfg.task
    joints = task.joint_names
    streams = {role: _Stream(topic, msgtype, role) for role, (topic, msgtype) in roles.items()}
    by_topic: dict[str, list[_Stream]] = {}
    for s in streams.values():
        by_topic.setdefault(s.topic, []).append(s)
    js_pos = _JointIndexer(joints, _where(bag, task.joint_states_topic))
    js_vel = _JointIndexer(joints, _where(bag, task.joint_states_topic))
    act_idx = _JointIndexer(joints, _where(bag, cfg.dataset.action_topic or ""))
    empty_traj = 0
    for topic, t, raw in bag.messages(by_topic):
        pbar.update(1)
        for s in by_topic[topic]:
            s.log.append(t)
            msg = bag.deserialize(raw, s.msgtype, topic)
            if s.role.startswith("camera:"):  # checked here (cheap), decoded in pass 2 if the timeline holds it
                s.hdr.append(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
                where = f"{_where(bag, topic)} (message {len(s.log) - 1})"
                if s.msgtype == IMAGE:
                    check_image(msg.encoding, msg.height, msg.width, msg.step, len(msg.data), where=where)
                else:
                    check_compressed_format(msg.format, where=where)
                continue
            if s.role == "joint_states":
                s.hdr.append(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
                pos = js_pos(msg.name, msg.position)
                if task.use_velocity:
                    if len(msg.velocity) == 0:
                        raise DataError(f"{_where(bag, topic)}: JointState has no velocities but "
                                        "task.use_velocity is true")
                    pos = np.concatenate([pos, js_vel(msg.name, msg.velocity, field="velocity")])
                s.values.append(pos)
            elif s.msgtype == TRAJECTORY:
                s.hdr.append(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
                if not msg.points:
                    empty_traj += 1
                    s.log.pop()
                    s.hdr.pop()
                    continue
                s.values.append(act_idx(msg.joint_names, msg.points[0].positions, field="positions"))
            else:  # Float64MultiArray: data in joint_names order, no header
                s.hdr.append(0)
                data = np.asarray(msg.data, dtype=np.float32)
                if data.shape != (len(joints),):
                    raise DataError(f"{_where(bag, topic)}: Float64MultiArray has {data.size} values, expected "
                                    f"{len(joints)} (task.joint_names {joints})")
                s.values.append(data)
    if empty_traj:
        warnings.warn(f"{_where(bag, cfg.dataset.action_topic)}: skipped {empty_traj} JointTrajectory message(s) "
                      f"without points", DataWarning, stacklevel=2)
    for s in streams.values():
        if not s.log:
            raise DataError(f"{_where(bag, s.topic)}: no usable messages on this topic")
    return streams


def _assign_stamps(bag: Bag, cfg, streams: dict[str, _Stream]) -> str:
    """Choose the time base and set ``stream.stamps``; returns "header" or "receive"."""
    js = streams["joint_states"]
    js_hdr = np.asarray(js.hdr, dtype=np.int64)
    js_log = np.asarray(js.log, dtype=np.int64)
    use_header = cfg.dataset.use_header_stamps
    if use_header and np.any(js_hdr == 0):
        warnings.warn(f"{_where(bag, js.topic)}: JointState header stamps are zero; using receive times for all "
                      f"topics of this bag", DataWarning, stacklevel=2)
        use_header = False
    if not use_header:
        for s in streams.values():
            s.stamps = np.asarray(s.log, dtype=np.int64)
        base = "receive"
    else:
        # messages without a stamp (Float64MultiArray, JointTrajectory "start now", unstamped images):
        # receive time mapped onto the joint states' clock (offset interpolated between joint states)
        offset = (js_hdr - js_log).astype(np.float64)
        for s in streams.values():
            hdr = np.asarray(s.hdr, dtype=np.int64)
            log = np.asarray(s.log, dtype=np.int64)
            missing = hdr == 0
            if missing.any():
                shift = np.interp(log.astype(np.float64), js_log.astype(np.float64), offset)
                mapped = log + np.round(shift).astype(np.int64)
                hdr = np.where(missing, mapped, hdr)
                if s.msgtype != MULTIARRAY and missing.all() and s.role != "action":
                    warnings.warn(f"{_where(bag, s.topic)}: header stamps are zero; using receive times (mapped onto "
                                  f"{js.topic}'s clock)", DataWarning, stacklevel=2)
            s.stamps = hdr
        base = "header"
    for s in streams.values():
        d = np.diff(s.stamps)
        if len(d) and d.min() < 0:
            k = int(np.argmin(d)) + 1
            kind = "header stamp" if base == "header" else "receive time"
            raise DataError(f"{_where(bag, s.topic)}: timestamps go backwards at message {k}: {kind} "
                            f"{s.stamps[k] / 1e9:.6f} s after {s.stamps[k - 1] / 1e9:.6f} s")
    return base


def _nonfinite_messages(bag: Bag, cfg, streams: dict[str, _Stream]) -> dict[str, np.ndarray]:
    """role -> bool per message: holds a NaN / inf the dataset would use (joint positions, velocities with
    task.use_velocity, commands). ``dataset.nonfinite`` "error" raises at the first, naming bag, topic,
    joint and time; "cut" warns once per topic and returns the masks for the timeline to cut at."""
    joints = list(cfg.task.joint_names)
    out = {}
    for role, s in streams.items():
        if role.startswith("camera:"):
            continue
        values = np.stack(s.values)
        bad = ~np.isfinite(values)
        rows = bad.any(axis=1)
        if not rows.any():
            continue
        k = int(np.argmax(rows))
        d = int(np.argmax(bad[k]))
        joint = joints[d % len(joints)]
        what = f"{'velocity' if d >= len(joints) else 'position'} of joint {joint}" if role == "joint_states" \
            else f"command for joint {joint}"
        first = f"{what} is {values[k, d]} at t = {s.stamps[k] / 1e9:.3f} s (message {k})"
        if cfg.dataset.nonfinite == "error":
            raise DataError(f"{_where(bag, s.topic)}: non-finite value: {first}, {int(rows.sum())} message(s) in all; "
                            "fix the recording, or set dataset.nonfinite: cut to split the episode there")
        hit = sorted({joints[i % len(joints)] for i in np.nonzero(bad.any(axis=0))[0]}, key=joints.index)
        last = s.stamps[len(rows) - 1 - int(np.argmax(rows[::-1]))] / 1e9
        warnings.warn(f"{_where(bag, s.topic)}: {int(rows.sum())} message(s) with non-finite values (joints {hit}) "
                      f"up to t = {last:.3f} s, the first: {first}; cut there (dataset.nonfinite: cut)",
                      DataWarning, stacklevel=2)
        out[role] = rows
    return out


def _decode(bag: Bag, topic: str, msgtype: str, raw, height: int, width: int) -> np.ndarray:
    from genil_ros.data.images import decode_compressed, decode_image, resize_image

    msg = bag.deserialize(raw, msgtype, topic)
    where = _where(bag, topic)
    if msgtype == IMAGE:
        img = decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, where=where,
                           is_bigendian=msg.is_bigendian)
    else:
        img = decode_compressed(msg.format, msg.data, where=where)
    return resize_image(img, height, width)


def _build_bag(bag: Bag, cfg, writer, pbar) -> dict:
    """Both passes over one bag; returns the bag's entry for meta.json (without hashes)."""
    from genil_ros.data.sync import plan_timeline

    task, ds = cfg.task, cfg.dataset
    roles = _check_topics(bag, cfg)
    streams = _read_lowdim(bag, cfg, roles, pbar)
    base = _assign_stamps(bag, cfg, streams)
    unusable = _nonfinite_messages(bag, cfg, streams)
    command = ds.action_source == "command"
    plan = plan_timeline({r: s.stamps for r, s in streams.items()}, task.control_rate_hz, ds.max_staleness_s,
                         ds.episode_gap_s, ds.min_episode_steps, reference="joint_states",
                         action="action" if command else None, next_state=not command, unusable=unusable)
    why = ", ".join([f"{streams[r].topic} stale or missing at {n} of {len(plan.ticks)} ticks"
                     for r, n in plan.stale.items() if n]
                    + [f"{streams[r].topic} non-finite at {n} of {len(plan.ticks)} ticks"
                       for r, n in plan.unusable.items() if n])
    if not plan.spans:
        raise DataError(f"{bag.path}: no span of >= {ds.min_episode_steps} synchronised steps at "
                        f"{task.control_rate_hz} Hz" + (f" ({why}; dataset.max_staleness_s = {ds.max_staleness_s})"
                                                       if why else ""))
    all_spans = sorted(plan.spans + plan.dropped)
    if ds.episode_split == "bag" and len(all_spans) > 1:
        (_, a1), (b0, _) = all_spans[0], all_spans[1]
        raise DataError(f"{bag.path}: the data has a hole between t = {plan.ticks[a1 - 1] / 1e9:.3f} s and "
                        f"{plan.ticks[b0] / 1e9:.3f} s ({why or 'a joint-state gap'}); dataset.episode_split 'bag' "
                        f"needs one unbroken span per bag (use 'gaps' to split it)")
    if plan.dropped:
        warnings.warn(f"{bag.path}: dropped {len(plan.dropped)} span(s) shorter than dataset.min_episode_steps = "
                      f"{ds.min_episode_steps}" + (f" ({why})" if why else ""), DataWarning, stacklevel=2)

    js_vals = np.stack(streams["joint_states"].values)
    act_vals = np.stack(streams["action"].values) if command else None
    nj = len(task.joint_names)
    episodes = []  # (ticks, state, action, {cam: msg idx per step})
    for a, b in plan.spans:
        js_i = plan.index["joint_states"][a:b]
        state = js_vals[js_i]
        ticks = plan.ticks[a:b]
        cam_idx = {c.name: plan.index["camera:" + c.name][a:b] for c in task.cameras}
        if command:
            action = act_vals[plan.index["action"][a:b]]
        else:  # next observed joint positions
            action = state[1:, :nj]
            state, ticks = state[:-1], ticks[:-1]
            cam_idx = {k: v[:-1] for k, v in cam_idx.items()}
        episodes.append((ticks, state, action, cam_idx))

    info = {"path": str(bag.path), "time_base": base, "messages": bag.message_count,
            "episodes": [], "ticks_total": int(len(plan.ticks)),
            "stale_ticks": {streams[r].topic: n for r, n in plan.stale.items()}}
    if unusable:
        info["nonfinite_ticks"] = {streams[r].topic: n for r, n in plan.unusable.items()}
    # pass 2: frames
    writers = {}

    def ep_writer(k):
        w = writers.get(k)
        if w is None:
            ticks, state, action, _ = episodes[k]
            w = writers[k] = writer.begin_episode(source_bag=str(bag.path), t_start=float(ticks[0] / 1e9))
            w.append("state", state)
            w.append("action", action)
            w.append("timestamp", ticks / 1e9)
        return w

    pending = {}  # cam name -> remaining steps per episode
    for _, _, _, cam_idx in episodes:
        for name, idx in cam_idx.items():
            pending.setdefault(name, []).append(len(idx))

    def done(k):
        return all(pending[c][k] == 0 for c in pending)

    closed = 0

    def close_ready():
        nonlocal closed
        while closed < len(episodes) and (not pending or done(closed)):
            w = ep_writer(closed)
            w.close()
            info["episodes"].append(writer.num_episodes - 1)
            writers.pop(closed, None)
            closed += 1

    close_ready()
    if task.cameras:
        cams_by_topic: dict[str, list] = {}
        for c in task.cameras:
            cams_by_topic.setdefault(c.topic, []).append(c)
        # per camera: a cursor over the flat (episode, step) requests in time order
        cursor = {c.name: [0, 0] for c in task.cameras}  # episode k, step i
        count = {t: 0 for t in cams_by_topic}
        try:
            for topic, _t, raw in bag.messages(cams_by_topic):
                pbar.update(1)
                j = count[topic]
                count[topic] += 1
                for cam in cams_by_topic[topic]:
                    cur = cursor[cam.name]
                    frame = None
                    while cur[0] < len(episodes):
                        idx = episodes[cur[0]][3][cam.name]
                        if cur[1] >= len(idx):
                            cur[0], cur[1] = cur[0] + 1, 0
                            continue
                        if idx[cur[1]] != j:
                            break
                        if frame is None:
                            frame = _decode(bag, topic, roles["camera:" + cam.name][1], raw, cam.height, cam.width)
                        ep_writer(cur[0]).append(cam.name, frame)
                        pending[cam.name][cur[0]] -= 1
                        cur[1] += 1
                close_ready()
                if closed == len(episodes):
                    break
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        if closed != len(episodes):  # a second pass saw fewer images than the first: the bag changed
            for w in writers.values():
                w.abort()
            raise DataError(f"{bag.path}: camera messages changed between two reads of the bag")
    return info


def build_dataset(cfg, bags: Sequence[Union[str, os.PathLike]], out: Union[str, os.PathLike], *,
                  overwrite: bool = False, progress: bool = True, config_path: Optional[str] = None):
    """Build the episode store at ``out`` from ``bags`` following ``cfg`` (an ExperimentConfig).

    Returns the opened :class:`~genil_ros.data.store.EpisodeStore`."""
    from tqdm import tqdm

    from genil_ros.config import config_to_dict
    from genil_ros.data.store import EpisodeStore

    paths = expand_bag_paths(bags)
    if not paths:
        raise DataError("no bags given")
    task, ds = cfg.task, cfg.dataset
    topics = {"joint_states": task.joint_states_topic,
              "cameras": {c.name: c.topic for c in task.cameras},
              "action": ds.action_topic if ds.action_source == "command" else None,
              "action_source": ds.action_source}
    writer = EpisodeStore.create(
        out, joint_names=task.joint_names, cameras=task.cameras, control_rate_hz=task.control_rate_hz,
        state_dim=task.state_dim, action_dim=task.action_dim, topics=topics, compression=ds.image_compression,
        chunk_frames=ds.chunk_frames, overwrite=overwrite,
        extra={"dataset_config": config_to_dict(ds), "use_velocity": task.use_velocity,
               "config_file": config_path})
    with writer:
        opened = []
        try:
            for p in paths:
                opened.append(Bag(p))
            total = 0
            for b in opened:  # open each briefly for the message counts (progress bar total)
                b.open()
                try:
                    roles = _check_topics(b, cfg)
                    low = [t for r, (t, _) in roles.items() if not r.startswith("camera:")]
                    cams = sorted({c.topic for c in task.cameras})
                    total += b.count(set(low) | set(cams)) + b.count(cams)
                finally:
                    b.close()
            with tqdm(total=total, unit="msg", desc="dataset build", disable=not progress, dynamic_ncols=True,
                      mininterval=0.5) as pbar:
                for b in opened:
                    pbar.set_postfix_str(b.path.name)
                    with b:
                        info = _build_bag(b, cfg, writer, pbar)
                    sha, files, size = bag_sha256(b.path)
                    info.update(sha256=sha, files=files, size_bytes=size)
                    writer.source_bags.append(info)
        finally:
            for b in opened:
                b.close()
        return writer.finalize()


# --------------------------------------------------------------------------- CLI


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="{build,info}")
    b = sub.add_parser("build", help="build a dataset from rosbags",
                       description="Build a training dataset (episode store) from rosbag2 / ROS 1 bags.")
    b.add_argument("--config", required=True, help="experiment YAML (topics, joints, cameras, rate, dataset section)")
    b.add_argument("bags", nargs="+", metavar="BAG",
                   help="rosbag2 directory, .mcap / .db3 / .bag file, or a folder of those")
    b.add_argument("-o", "--out", required=True, metavar="DIR", help="dataset directory to write (atomically)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing dataset at DIR")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    i = sub.add_parser("info", help="summarise a dataset")
    i.add_argument("dataset", metavar="DIR")


def run(args) -> int:
    import time

    from genil_ros.config import load_config
    from genil_ros.data.store import EpisodeStore
    from genil_ros.paths import config_path

    if args.action == "info":
        store = EpisodeStore.open(args.dataset)
        m = store.meta
        print(f"{store.path}: {store.num_episodes} episodes, {m.get('num_steps')} steps at {m['control_rate_hz']} Hz")
        print(f"joints: {m['joint_names']}  cameras: {[(c['name'], c['height'], c['width']) for c in m['cameras']]}")
        print(f"topics: {m.get('topics')}")
        for b in m.get("source_bags", []):
            print(f"  {b.get('path')}  sha256 {str(b.get('sha256'))[:16]}  episodes {b.get('episodes')}")
        return 0
    cfg_file = config_path(args.config)
    cfg = load_config(cfg_file)
    warnings.simplefilter("always", DataWarning)
    warnings.showwarning = lambda msg, cat, *a, **k: print(f"warning: {msg}", flush=True)
    t0 = time.monotonic()
    store = build_dataset(cfg, args.bags, args.out, overwrite=args.overwrite, progress=not args.no_progress,
                          config_path=str(cfg_file))
    m = store.meta
    print(f"wrote {store.path}: {store.num_episodes} episodes, {m['num_steps']} steps from "
          f"{len(m['source_bags'])} bag(s) in {time.monotonic() - t0:.1f} s")
    return 0
