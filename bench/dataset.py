"""Dataset build and sampling throughput.

Generates a rosbag2 (mcap) with one 640x480 rgb8 camera at 30 Hz, joint states at 100 Hz and commands at
10 Hz, then times ``genil_ros.data.build.build_dataset`` (MB/s of bag, camera frames/s of bag) and the
SequenceDataset's random access (samples/s, frames in RAM and decoded from compressed chunks).
Prints the median of ``--repeats`` runs and the machine.

    .venv/bin/python bench/dataset.py [--seconds 10] [--repeats 3] [--storage mcap|sqlite3] [--size 96]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_bag(path: Path, seconds: float, storage: str, joints: list[str]) -> int:
    """640x480 camera at 30 Hz (a moving gradient with noise: compresses like a real scene), joint states at
    100 Hz, Float64MultiArray commands at 10 Hz. Returns the number of camera frames."""
    from genil_ros.data.synthetic import BagFile

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640]
    noise = rng.integers(0, 24, (480, 640, 3), dtype=np.uint8)
    t0 = 1_700_000_000 * 10**9
    events = []
    for k in range(int(seconds * 100)):
        events.append((t0 + k * 10_000_000, 0, k))
    for k in range(int(seconds * 30)):
        events.append((t0 + int(round(k * 1e9 / 30)), 1, k))
    for k in range(int(seconds * 10)):
        events.append((t0 + k * 100_000_000 + 1_000_000, 2, k))
    events.sort()
    frames = 0
    with BagFile(path, storage=storage) as bag:
        for t, kind, k in events:
            s = t / 1e9
            if kind == 0:
                q = [np.sin(0.3 * s + j) for j in range(len(joints))]
                bag.joint_state("/joint_states", t + 500_000, t, joints, q, [0.0] * len(joints))
            elif kind == 1:
                img = np.empty((480, 640, 3), np.uint8)
                img[..., 0] = (xx + 3 * k) % 256
                img[..., 1] = (yy + k) % 256
                img[..., 2] = ((xx + yy) // 4) % 256
                img += noise
                bag.image("/camera/image_raw", t + 3_000_000, t, img)
                frames += 1
            else:
                bag.multiarray("/commands", t + 2_000_000, [np.sin(0.3 * (s + 0.1) + j) for j in range(len(joints))])
    return frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the generated bag")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    ap.add_argument("--size", type=int, default=96, help="configured image size (square)")
    ap.add_argument("--samples", type=int, default=2000, help="random samples per sampling run")
    ap.add_argument("--workdir", default=None, help="where to put the bag and datasets (default: a temp dir)")
    args = ap.parse_args()

    import torch

    from genil_ros.config import config_from_dict
    from genil_ros.data.bags import bag_files
    from genil_ros.data.build import build_dataset
    from genil_ros.data.dataset import SequenceDataset
    from genil_ros.data.store import EpisodeStore

    torch.set_num_threads(1)
    joints = [f"joint_{i}" for i in range(6)]
    cfg = config_from_dict({
        "task": {"joint_names": joints, "control_rate_hz": 10.0,
                 "cameras": [{"name": "front", "topic": "/camera/image_raw", "height": args.size, "width": args.size}],
                 "horizon": {"n_obs_steps": 2, "horizon": 16, "n_action_steps": 8}},
        "dataset": {"action_source": "command", "action_topic": "/commands", "max_staleness_s": 0.2}},
        source="bench")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="genil_bench_dataset_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        bag = work / "bench_bag"
        shutil.rmtree(bag, ignore_errors=True)
        t = time.perf_counter()
        frames = write_bag(bag, args.seconds, args.storage, joints)
        gen_s = time.perf_counter() - t
        size = sum(f.stat().st_size for f in bag_files(bag))
        print(f"machine: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}; device cpu; "
              f"python {platform.python_version()}")
        print(f"bag: {args.storage}, {args.seconds:.0f} s, {frames} frames 640x480 rgb8 @30 Hz, joint states @100 Hz, "
              f"{size / 1e6:.0f} MB (written in {gen_s:.1f} s); dataset images {args.size}x{args.size} @10 Hz")
        build_times = []
        for _ in range(args.repeats):
            out = work / "ds"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = time.perf_counter()
                build_dataset(cfg, [bag], out, overwrite=True, progress=False)
                build_times.append(time.perf_counter() - t)
        bt = statistics.median(build_times)
        store = EpisodeStore.open(work / "ds")
        steps = store.meta["num_steps"]
        print(f"build: median {bt:.2f} s of {args.repeats} -> {size / 1e6 / bt:.1f} MB/s of bag, "
              f"{frames / bt:.0f} camera frames/s ({steps} dataset steps)")
        rng = np.random.default_rng(0)
        for in_memory in (True, False):
            rates = []
            for _ in range(args.repeats):
                st = EpisodeStore.open(work / "ds", cache_chunks=2)  # far fewer than the store's chunks
                ds = SequenceDataset(st, 2, 16, in_memory=in_memory)
                idx = rng.integers(0, len(ds), args.samples)
                t = time.perf_counter()
                for i in idx:
                    ds[int(i)]
                rates.append(args.samples / (time.perf_counter() - t))
            label = "frames in RAM" if in_memory else "frames decoded from zstd chunks (2-chunk cache)"
            print(f"samples: median {statistics.median(rates):.0f} samples/s random access, T_o=2 T_p=16, "
                  f"{label}, single process")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
