"""Input floods: does the policy node hold its control rate when the robot publishes at a real robot's rates?

A test robot (test/nodes/fake_robot.py --flood) publishes sensor_msgs/JointState at --rate (1 kHz) and a
640x480 rgb8 sensor_msgs/Image at --camera-rate (60 Hz) from its own threads, and records every command it
receives; the real `policy_node` runs the shipped models/sim_obstacle_dp (one 96x96 camera, 4 joints, 10 Hz
control) on the CPU. Per run it reports, over --seconds after a settling second:

  cmds/s     commands the robot received per second (the control rate is 10 Hz: 10 is every tick)
  missed     ticks where the action chunk ran out before the next one arrived (node diagnostics)
  holds      times the node stopped commanding (node diagnostics)
  stale      ticks with a missing or stale input (node diagnostics)
  infer      the node's median inference latency, ms
  node cpu   the node process's CPU time over the window, % of one core (all its threads)
  js/s img/s what the robot actually published per second (median)
  why        the first hold reason in the window, if any

--baseline DIR runs the same measurement against another checkout of genil_ros (e.g. main before a change:
`git archive <commit> | tar -x -C /tmp/genil_before`); --single adds this checkout with `executor:=single`
(the SingleThreadedExecutor instead of the EventsExecutor). The variants alternate run by run, so all see
the same machine load. Figures are only comparable within one invocation.

    .venv/bin/python bench/ros_flood.py --baseline /tmp/genil_before [--single] [--runs 2] [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
NODES = REPO / "test" / "nodes"
JOINTS = ["shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_joint"]


def counter(diag: dict, key: str) -> float:
    try:
        return float(diag["values"][key])
    except (KeyError, ValueError):
        return float("nan")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(tree: Path, extra: list, args, env: dict, work: Path, tag: str) -> dict:
    """One flood run of the node found in ``tree``; the figures of the measured window."""
    from benchlib import read_jsonl, wait_first_command

    from genil_ros.testing import ManagedProcess

    rec = work / f"{tag}.jsonl"
    robot = [sys.executable, str(NODES / "fake_robot.py"), "--record", str(rec), "--flood",
             "--joints", ",".join(JOINTS), "--init", "0,0,0,0", "--rate", str(args.rate),
             "--camera-rate", str(args.camera_rate), "--image-size", args.image_size,
             "--camera", "/camera/image_raw"]
    node = [sys.executable, "-m", "genil_ros.ros.policy_node", "--ros-args", "-p", f"checkpoint:={args.checkpoint}",
            "-p", f"device:={args.device}", "-p", "autostart:=true", "-p", "max_step_rad:=100.0"] + extra
    node_env = dict(env, PYTHONPATH=str(tree))
    procs = [ManagedProcess(robot, dict(env, PYTHONPATH=str(REPO)), str(work / f"{tag}_robot.log")),
             ManagedProcess(node, node_env, str(work / f"{tag}_node.log"))]
    try:
        wait_first_command(rec, procs, 180)
        time.sleep(1.0)  # settle
        t0, c0 = time.time_ns(), cpu_seconds(procs[1].proc.pid)
        time.sleep(args.seconds)
        t1, c1 = time.time_ns(), cpu_seconds(procs[1].proc.pid)
        time.sleep(1.2)  # the diagnostics message after the window
        r = read_jsonl(rec)
    finally:
        for p in procs:
            p.stop()
    cmds = [x for x in r if x["kind"] == "traj" and t0 <= x["wall_ns"] < t1]
    diags = [x for x in r if x["kind"] == "diag"]
    before = [d for d in diags if d["wall_ns"] <= t0]
    after = [d for d in diags if d["wall_ns"] >= t1]
    d0 = before[-1] if before else (diags[0] if diags else {"values": {}})
    d1 = after[0] if after else (diags[-1] if diags else {"values": {}})
    flood = [x for x in r if x["kind"] == "flood" and t0 <= x["wall_ns"] <= t1]
    why = [d["message"] for d in diags if t0 <= d["wall_ns"] <= t1 + 1.2e9 and d["message"].startswith("holding")]
    return {
        "cmds_per_s": len(cmds) / ((t1 - t0) / 1e9),
        "missed": counter(d1, "missed_ticks") - counter(d0, "missed_ticks"),
        "holds": counter(d1, "holds") - counter(d0, "holds"),
        "stale": counter(d1, "stale_ticks") - counter(d0, "stale_ticks"),
        "infer_ms": counter(d1, "inference_latency_median_ms"),
        "cpu_pct": 100.0 * (c1 - c0) / ((t1 - t0) / 1e9),
        "js_hz": float(np.median([x["joints_hz"] for x in flood])) if flood else float("nan"),
        "img_hz": float(np.median([x["images_hz"] for x in flood])) if flood else float("nan"),
        "why": why[0][len("holding: "):] if why else "",
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", default=None, help="another genil_ros checkout to measure side by side")
    ap.add_argument("--single", action="store_true", help="also this checkout with executor:=single")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run")
    ap.add_argument("--rate", type=float, default=1000.0, help="joint states per second")
    ap.add_argument("--camera-rate", type=float, default=60.0, help="images per second")
    ap.add_argument("--image-size", default="480x640", help="HxW of the published rgb8 images")
    ap.add_argument("--checkpoint", default=str(REPO / "models" / "sim_obstacle_dp"))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    from genil_ros.testing import isolated_ros_env, ros_domain

    trees = [("this", REPO, [])] + ([("single", REPO, ["-p", "executor:=single"])] if args.single else []) + (
        [("baseline", Path(args.baseline).resolve(), [])] if args.baseline else [])
    print(f"# policy_node under an input flood: JointState {args.rate:g} Hz + {args.image_size} rgb8 Image "
          f"{args.camera_rate:g} Hz; {Path(args.checkpoint).name} on {args.device}, 10 Hz control; "
          f"{args.runs} runs x {args.seconds:g} s; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'node':9} {'run':>3} | {'cmds/s':>6} {'missed':>6} {'holds':>5} {'stale':>5} {'infer ms':>8} "
          f"{'node cpu':>8} | {'js/s':>6} {'img/s':>5} | why")
    rows: dict[str, list[dict]] = {name: [] for name, _, _ in trees}
    with tempfile.TemporaryDirectory(prefix="genil_flood_") as tmp, ros_domain() as dom:
        env = isolated_ros_env(dom)
        env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
        for i in range(args.runs):
            for name, tree, extra in (trees if i % 2 == 0 else trees[::-1]):
                r = run_once(tree, extra, args, env, Path(tmp), f"{name}_{i}")
                rows[name].append(r)
                print(f"{name:9} {i:3d} | {r['cmds_per_s']:6.2f} {r['missed']:6.0f} {r['holds']:5.0f} "
                      f"{r['stale']:5.0f} {r['infer_ms']:8.1f} {r['cpu_pct']:7.0f}% | {r['js_hz']:6.0f} "
                      f"{r['img_hz']:5.0f} | {r['why'][:90]}", flush=True)
    for name, _, _ in trees:
        m = {k: float(np.median([r[k] for r in rows[name]])) for k in rows[name][0] if k != "why"}
        print(f"{name:9} med | {m['cmds_per_s']:6.2f} {m['missed']:6.0f} {m['holds']:5.0f} {m['stale']:5.0f} "
              f"{m['infer_ms']:8.1f} {m['cpu_pct']:7.0f}% | {m['js_hz']:6.0f} {m['img_hz']:5.0f} | "
              f"(median of {args.runs} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
