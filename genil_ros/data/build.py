"""`genil-ros dataset build --config CFG BAGS... -o DIR`: rosbags -> episode store.

Every stage works from the task's entries (``task.observations`` / ``task.actions``; the ``joint_names``
form is expanded into them). Each bag is streamed twice and never held in RAM:

1. every message of the low-dim topics is deserialised once and read by the entries that use it (joint
   states by joint NAME, poses as position + 6-D rotation, wrenches, Float64MultiArray vectors, recorded
   commands), image stamps are read and images checked but not decoded (``data/bag_streams.py``); from the
   stamps the control-rate timeline is planned (``data/sync.py``: zero-order hold, staleness, gaps);
2. the camera topics are read again and only the frames the timeline holds are decoded (OpenCV),
   resized to the configured size and streamed into the store in compressed chunks.

Actions: ``source: command`` takes the command in force just before the next tick; ``next_observation``
the next tick's value of the named observation (each span then loses its last tick). ``mode: delta``
stores the command (or next value) minus the observation at the tick; a ``binary`` gripper stores 1 where
the value is nearer ``closed_position`` than ``open_position``, else 0.

``dataset.max_staleness_s`` / ``episode_gap_s`` / ``use_header_stamps`` / ``episode_split`` /
``nonfinite`` (a NaN or inf in any value an entry uses is an error naming bag, topic, joint or dimension
and time, or by choice a cut of the span). The store is written into a temp directory and renamed into
place at the end, so an interrupted build leaves nothing at ``-o DIR``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from genil_ros.data.bag_streams import (
    Stream,
    assign_stamps,
    check_topics,
    nonfinite_messages,
    read_streams,
    reference_stream,
    task_streams,
    where,
)
from genil_ros.data.bags import Bag, DataWarning, bag_sha256, find_bags, is_bag
from genil_ros.data.entries import COMPRESSED, IMAGE, JOINT_STATE, MULTIARRAY, TRAJECTORY
from genil_ros.errors import DataError

__all__ = ["build_dataset", "expand_bag_paths", "add_arguments", "run", "JOINT_STATE", "IMAGE", "COMPRESSED",
           "TRAJECTORY", "MULTIARRAY"]


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


def _obs_stream(o) -> str:
    return "obs:" + o.resolved_topic


def _episode_arrays(task, streams: dict[str, Stream], plan, a: int, b: int) -> dict[str, np.ndarray]:
    """The store arrays of the span [a, b) of the plan: ``obs.<name>`` and ``act.<name>`` per entry (the
    last tick dropped when an action is the next observation)."""
    trim = 1 if any(x.source == "next_observation" for x in task.actions) else 0
    full, out = {}, {}
    for o in task.observations:
        if o.is_camera:
            continue
        s = streams[_obs_stream(o)]
        full[o.name] = s.table[f"obs.{o.name}"][plan.index[s.name][a:b]]
        out[f"obs.{o.name}"] = full[o.name][: b - a - trim]
    for x in task.actions:
        if x.source == "command":
            s = streams["cmd:" + x.topic]
            act = s.table[f"act.{x.name}"][plan.index[s.name][a:b]][: b - a - trim]
        if x.observation:
            obs = next(o for o in task.observations if o.name == x.observation)
            sel = [obs.joints.index(j) for j in x.joints]
            if x.source == "next_observation":
                act = full[obs.name][1:, sel]
            if x.mode == "delta":
                act = act - full[obs.name][: b - a - trim, sel]
        if x.binary:
            act = x.to_binary(act)
        out[f"act.{x.name}"] = act
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def _decode(bag: Bag, topic: str, msgtype: str, raw, height: int, width: int) -> np.ndarray:
    from genil_ros.data.images import decode_compressed, decode_image, resize_image

    msg = bag.deserialize(raw, msgtype, topic)
    at = where(bag, topic)
    if msgtype == IMAGE:
        img = decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, where=at,
                           is_bigendian=msg.is_bigendian)
    else:
        img = decode_compressed(msg.format, msg.data, where=at)
    return resize_image(img, height, width)


def _build_bag(bag: Bag, cfg, writer, pbar) -> dict:
    """Both passes over one bag; returns the bag's entry for meta.json (without hashes)."""
    from genil_ros.data.sync import plan_timeline

    task, ds = cfg.task, cfg.dataset
    streams = task_streams(task)
    reference = reference_stream(task, streams)
    check_topics(bag, streams)
    read_streams(bag, streams, pbar)
    base = assign_stamps(bag, ds.use_header_stamps, streams, reference)
    unusable = nonfinite_messages(bag, ds.nonfinite, streams)
    for s in streams.values():
        s.table = {k: np.stack(v) for k, v in s.values.items()}
    next_obs = any(a.source == "next_observation" for a in task.actions)
    plan = plan_timeline({n: s.stamps for n, s in streams.items()}, task.control_rate_hz, ds.max_staleness_s,
                         ds.episode_gap_s, ds.min_episode_steps, reference=reference,
                         action=[n for n, s in streams.items() if s.kind == "cmd"], next_state=next_obs,
                         unusable=unusable)
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
                        f"{plan.ticks[b0] / 1e9:.3f} s ({why or f'a gap in {streams[reference].topic}'}); "
                        "dataset.episode_split 'bag' needs one unbroken span per bag (use 'gaps' to split it)")
    if plan.dropped:
        warnings.warn(f"{bag.path}: dropped {len(plan.dropped)} span(s) shorter than dataset.min_episode_steps = "
                      f"{ds.min_episode_steps}" + (f" ({why})" if why else ""), DataWarning, stacklevel=2)

    cameras = task.camera_entries
    episodes = []  # (ticks, {obs.<name> / act.<name>: array}, {cam: msg idx per step})
    for a, b in plan.spans:
        stop = b - (1 if next_obs else 0)
        arrays = _episode_arrays(task, streams, plan, a, b)
        cam_idx = {c.name: plan.index["cam:" + c.name][a:stop] for c in cameras}
        episodes.append((plan.ticks[a:stop], arrays, cam_idx))

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
            ticks, arrays, _ = episodes[k]
            w = writers[k] = writer.begin_episode(source_bag=str(bag.path), t_start=float(ticks[0] / 1e9))
            for key, arr in arrays.items():
                w.append(key, arr)
            w.append("timestamp", ticks / 1e9)
        return w

    pending = {}  # cam name -> remaining steps per episode
    for _, _, cam_idx in episodes:
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
    if cameras:
        cams_by_topic: dict[str, list] = {}
        for c in cameras:
            cams_by_topic.setdefault(c.topic, []).append(c)
        # per camera: a cursor over the flat (episode, step) requests in time order
        cursor = {c.name: [0, 0] for c in cameras}  # episode k, step i
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
                        idx = episodes[cur[0]][2][cam.name]
                        if cur[1] >= len(idx):
                            cur[0], cur[1] = cur[0] + 1, 0
                            continue
                        if idx[cur[1]] != j:
                            break
                        if frame is None:
                            frame = _decode(bag, topic, streams["cam:" + cam.name].msgtype, raw, cam.height,
                                            cam.width)
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
    topics = {"observations": {o.name: o.resolved_topic for o in task.observations if not o.is_camera},
              "actions": {a.name: a.topic if a.source == "command" else f"next {a.observation}" for a in task.actions},
              "cameras": {c.name: c.topic for c in task.camera_entries}}
    if task.joint_names:  # the joint_names form's own keys, as format 1 wrote them
        topics.update(joint_states=task.joint_states_topic, action_source=ds.action_source,
                      action=ds.action_topic if ds.action_source == "command" else None)
    writer = EpisodeStore.create(
        out, observations=task.observations, actions=task.actions, joint_names=task.joint_names,
        control_rate_hz=task.control_rate_hz, topics=topics, compression=ds.image_compression,
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
                    streams = task_streams(task)
                    check_topics(b, streams)
                    topics_all = {s.topic for s in streams.values()}
                    cams = {s.topic for s in streams.values() if s.kind == "cam"}
                    total += b.count(topics_all) + b.count(cams)
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
        lay = store.layout
        print("state:  " + ", ".join(f"{e.name} ({e.type}, {e.dim})" for e in lay.state)
              + f"  [{lay.state_dim} dims]")
        print("action: " + ", ".join(f"{e.name} ({e.type}{', ' + e.mode if e.mode else ''}, {e.dim})"
                                     for e in lay.action) + f"  [{lay.action_dim} dims]")
        print(f"cameras: {[(c['name'], c['height'], c['width']) for c in m['cameras']]}")
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
