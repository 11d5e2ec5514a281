"""Policy node timing over real DDS: observation-stamp-to-command latency and control-period jitter.

Runs the real `policy_node` and a test robot (test/nodes/fake_robot.py) as separate processes on an
isolated ROS domain, with a low-dim and a one-camera diffusion policy built from config/sim_task.yaml
(the bundled sim's network; untrained weights -- timing does not depend on them), and reports:

  obs->cmd   the age of the newest input a chunk was computed from (the oldest of the joint-state and
             image stamps the node sampled at the chunk's tick) when the robot RECEIVES the first
             command taken from that chunk; measured at the robot from its own stamps, so it includes
             both DDS hops, the wait for the tick, inference and the latency-compensated skip
  jitter     |received command period - control period| at the robot
  inference  the node's reported inference latency (worker thread)

Each configuration is run --runs times (fresh processes); per-run median / p99 are printed and the
median over runs. Defaults are short (about a minute on 2 CPU cores).

    .venv/bin/python bench/ros_latency.py [--devices cpu,cuda] [--runs 3] [--seconds 5] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
NODES = REPO / "test" / "nodes"


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"CPU {cpu} x{os.cpu_count()}, GPU {gpu}, torch {torch.__version__}, Python {platform.python_version()}, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load {os.getloadavg()[0]:.1f}")


def make_checkpoint(path: Path, camera: bool, steps: int) -> tuple[Path, list[str], int]:
    from genil_ros.config import load_config
    from genil_ros.paths import config_path
    from genil_ros.policy import DiffusionPolicy, save_checkpoint

    cfg = load_config(config_path("sim_task.yaml"))
    if not camera:
        cfg.task.cameras = []
    cfg.policy.num_inference_steps = steps
    import torch

    torch.manual_seed(0)
    policy = DiffusionPolicy(cfg)
    n = len(cfg.task.joint_names)
    policy.normalizer.fit("state", [-1.0] * n, [1.0] * n)
    policy.normalizer.fit("action", [-1.0] * n, [1.0] * n)
    save_checkpoint(path, policy)
    size = cfg.task.cameras[0].height if camera else 0
    return path, list(cfg.task.joint_names), size


def read(path) -> list[dict]:
    out = []
    if Path(path).exists():
        for line in open(path):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def analyse(rec: list[dict], period: float, camera: bool, t0_ns: int, tol: float) -> dict:
    cmds = [r for r in rec if r["kind"] == "traj" and r["wall_ns"] >= t0_ns and len(r["points"]) > 0]
    chunks = [r for r in rec if r["kind"] == "chunk"]
    pubs = {k: np.array(sorted(r["stamp_ns"] for r in rec if r["kind"] == k)) for k in ("pub_joints", "pub_image")}
    stamps = np.array([c["stamp_ns"] for c in chunks])
    recv = np.array([c["ros_ns"] for c in cmds], dtype=np.int64)
    jitter = np.abs(np.diff(recv) / 1e9 - period) if len(recv) > 1 else np.array([np.nan])
    first_use: dict[int, int] = {}
    for cmd in cmds:  # which chunk each command came from: entry (tick - chunk tick) of that chunk
        for ci in np.flatnonzero(stamps < cmd["stamp_ns"])[::-1][:2]:
            idx = int(round((cmd["stamp_ns"] - stamps[ci]) / 1e9 / period))
            pts = chunks[ci]["points"]
            if 1 <= idx < len(pts) and np.allclose(cmd["points"][0], pts[idx], atol=1e-9):
                first_use.setdefault(int(ci), cmd["ros_ns"])
                break
    lat = []
    for ci, recv_ns in first_use.items():
        t_tick = stamps[ci] + int(tol * 1e9)  # the node samples the newest input stamped <= tick (+ tolerance)
        used = []
        for k in ("pub_joints",) + (("pub_image",) if camera else ()):
            s = pubs[k][pubs[k] <= t_tick]
            if len(s):
                used.append(s[-1])
        if len(used) == (2 if camera else 1):
            lat.append((recv_ns - min(used)) / 1e9)
    lat = np.array(lat) if lat else np.array([np.nan])
    diags = [r for r in rec if r["kind"] == "diag"]
    inf = float(diags[-1]["values"].get("inference_latency_median_ms", "nan")) if diags else float("nan")
    inf99 = float(diags[-1]["values"].get("inference_latency_p99_ms", "nan")) if diags else float("nan")
    dv = diags[-1]["values"] if diags else {}
    return {"commands": len(cmds), "chunks": len(first_use), "holds": float(dv.get("holds", "nan")),
            "missed": float(dv.get("missed_ticks", "nan")), "stale": float(dv.get("stale_ticks", "nan")),
            "lat_med": np.median(lat) * 1e3,
            "lat_p99": np.percentile(lat, 99) * 1e3, "jit_med": np.median(jitter) * 1e3,
            "jit_p99": np.percentile(jitter, 99) * 1e3, "inf_med": inf, "inf_p99": inf99}


def run_once(ck: Path, camera: bool, device: str, seconds: float, env: dict, work: Path, tag: str) -> dict:
    from genil_ros.testing import ManagedProcess

    rec = work / f"{tag}.jsonl"
    robot = [sys.executable, str(NODES / "fake_robot.py"), "--record", str(rec), "--record-published",
             "--joints", ",".join(JOINTS), "--init", "0,0,0,0", "--rate", "50", "--camera-rate", "30",
             "--image-size", "96x96"] + (["--camera", "/camera/image_raw"] if camera else [])
    node = [sys.executable, "-m", "genil_ros.ros.policy_node", "--ros-args", "-p", f"checkpoint:={ck}",
            "-p", f"device:={device}", "-p", "autostart:=true", "-p", "max_step_rad:=100.0"]
    procs = [ManagedProcess(robot, env, str(work / f"{tag}_robot.log")),
             ManagedProcess(node, env, str(work / f"{tag}_node.log"))]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not all(p.alive() for p in procs):
                raise RuntimeError("a process died:\n" + "\n".join(p.output()[-2000:] for p in procs))
            if any(r["kind"] == "traj" for r in read(rec)):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("no command within 120 s:\n" + procs[1].output()[-2000:])
        time.sleep(1.0)  # settle
        t0 = time.time_ns()
        time.sleep(seconds)
        time.sleep(1.2)  # one more diagnostics message
        return analyse(read(rec), 0.1, camera, t0, 0.05)
    finally:
        for p in procs:
            p.stop()


JOINTS: list[str] = []


def main(argv=None) -> int:
    global JOINTS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", default=None, help="comma list (default: cpu, plus cuda when available)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    ap.add_argument("--steps", type=int, default=10, help="DDIM denoising steps")
    ap.add_argument("--models", default="lowdim,camera")
    args = ap.parse_args(argv)
    import torch

    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    from genil_ros.testing import isolated_ros_env, ros_domain

    print(f"# policy_node latency over real DDS (Fast DDS, localhost); {machine()}")
    print("# 10 Hz control, T_o=2 T_p=16 T_a=8, sim_task.yaml network, DDIM "
          f"{args.steps} steps; robot: joints 50 Hz, camera 96x96 rgb8 30 Hz; {args.runs} runs x {args.seconds:g} s")
    print(f"{'model':8} {'device':6} | {'obs->cmd med':>12} {'p99':>7} | {'jitter med':>10} {'p99':>6} | "
          f"{'infer med':>9} {'p99':>7} | cmds chunks holds missed stale  (ms; per run, then median of runs)")
    with tempfile.TemporaryDirectory(prefix="genil_bench_") as tmp, ros_domain() as dom:
        work = Path(tmp)
        env = isolated_ros_env(dom)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        for model in args.models.split(","):
            camera = model == "camera"
            ck, JOINTS, _ = make_checkpoint(work / f"ck_{model}", camera, args.steps)
            for device in devices:
                rows = []
                for i in range(args.runs):
                    r = run_once(ck, camera, device, args.seconds, env, work, f"{model}_{device}_{i}")
                    rows.append(r)
                    print(f"{model:8} {device:6} | {r['lat_med']:12.1f} {r['lat_p99']:7.1f} | {r['jit_med']:10.2f} "
                          f"{r['jit_p99']:6.2f} | {r['inf_med']:9.1f} {r['inf_p99']:7.1f} | {r['commands']:4d} "
                          f"{r['chunks']:6d} {r['holds']:5.0f} {r['missed']:6.0f} {r['stale']:5.0f}", flush=True)
                m = {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
                print(f"{model:8} {device:6} | {m['lat_med']:12.1f} {m['lat_p99']:7.1f} | {m['jit_med']:10.2f} "
                      f"{m['jit_p99']:6.2f} | {m['inf_med']:9.1f} {m['inf_p99']:7.1f} |   MEDIAN OF {args.runs} RUNS",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
