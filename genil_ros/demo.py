"""`genil-ros demo` (`make demo`): the bundled MuJoCo arm driven by the diffusion policy over ROS 2.

Two separate processes talk over real DDS, exactly as on a robot: ``sim_node`` (the arm: /joint_states,
/camera/image_raw, /clock) and ``policy_node`` (lifecycle node, use_sim_time, JointTrajectory commands).

``--task`` picks the sim task: ``obstacle`` (default; the shipped ``sim_obstacle_dp``: reach the red target
around either side of a post, from the camera) or ``pick_place`` (the shipped ``sim_pick_place_dp``, a
low-dim policy: the arm with a gripper puts a cylinder into either of two bins; the policy reads the joint
states and the object position vector, and commands the arm and, on its own topic, the gripper).
This process only orchestrates: it resets episodes through the nodes' services, watches the sim's
``~/status``, and at the end prints the success rate and the policy's latency figures, and writes

  OUT/episode0.gif            the camera's view of the first episode
  OUT/chunk_vs_executed.png   a predicted action chunk against the trajectory the arm then executed
  OUT/summary.json            every episode and the figures

``--retrain`` first makes the policy from scratch along the path a user follows with a real robot:
record expert demonstrations over ROS 2 to rosbags -> build the dataset -> train -> evaluate, each
stage with its own progress bar, then runs the closed loop with the new checkpoint.

By default the demo runs on a ROS_DOMAIN_ID of its own (localhost only), so it never drives another
robot on the network; ``--domain-id`` picks one to watch it with ``ros2 topic echo``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

from genil_ros.errors import GenilError
from genil_ros.fileio import atomic_path, atomic_write_json

# per task: shipped model, experiment config (--retrain), sim seconds per episode
TASKS = {
    "obstacle": {"model": "sim_obstacle_dp", "config": "sim_task.yaml", "episode_timeout": 10.0},
    "pick_place": {"model": "sim_pick_place_dp", "config": "pick_place_task.yaml", "episode_timeout": 12.0},
}
DEFAULT_TASK = "obstacle"


def add_arguments(parser) -> None:
    parser.add_argument("--task", choices=list(TASKS), default=DEFAULT_TASK,
                        help="sim task (default obstacle; pick_place: gripper, object, two bins)")
    parser.add_argument("--checkpoint", default=None,
                        help="policy checkpoint directory or shipped model name (default: the task's shipped "
                             "model, " + ", ".join(f"{t}: {v['model']}" for t, v in TASKS.items()) + ")")
    parser.add_argument("--episodes", type=int, default=10, help="closed-loop episodes over ROS 2 (default 10)")
    parser.add_argument("--real-time-factor", type=float, default=1.0,
                        help="sim speed (1 = real time; the policy node follows /clock)")
    parser.add_argument("--device", default="auto", help="policy device: auto | cpu | cuda")
    parser.add_argument("--output-mode", default=None, choices=["trajectory", "position"],
                        help="arm commands as JointTrajectory (joint_trajectory_controller) or Float64MultiArray "
                             "(default: trajectory for obstacle; the task's own entries for pick_place)")
    parser.add_argument("--seed", type=int, default=5000, help="seed of the first episode's scene")
    parser.add_argument("--out", default="out/demo", help="where the GIF, plot and summary go (default out/demo)")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS_DOMAIN_ID to run on (default: a free one of its own, localhost only)")
    parser.add_argument("--episode-timeout", type=float, default=None,
                        help="sim seconds per episode (default 10 for obstacle, 12 for pick_place)")
    parser.add_argument("--policy-param", "-p", action="append", default=[], metavar="NAME:=VALUE",
                        help="a policy_node parameter, e.g. -p handover:=inpaint -p inject_delay_ms:=300")
    rt = parser.add_argument_group("retrain from scratch: record -> dataset -> train -> evaluate")
    rt.add_argument("--retrain", action="store_true", help="make a new policy end to end before the demo")
    rt.add_argument("--demos", type=int, default=150, help="expert demonstrations to record (default 150)")
    rt.add_argument("--config", default=None, help="experiment config for dataset and training (default: the "
                    "task's, " + ", ".join(f"{t}: {v['config']}" for t, v in TASKS.items()) + ")")
    rt.add_argument("--max-steps", type=int, default=None, help="optimiser steps (default: the config's)")
    rt.add_argument("--eval-episodes", type=int, default=50, help="direct (no ROS) evaluation episodes")


# --------------------------------------------------------------------------- retrain pipeline


def _stage(title: str, argv: list[str]) -> None:
    from genil_ros import cli

    print(f"\n==> {title}\n    genil-ros {' '.join(argv)}", flush=True)
    rc = cli.main(argv)
    if rc != 0:
        raise GenilError(f"stage '{title}' failed (exit {rc}); see the messages above")


def retrain(args, out: Path) -> Path:
    work = out / "retrain"
    bags, dataset, run_dir = work / "bags", work / "dataset", work / "train"
    _stage("1/4 record expert demonstrations over ROS 2 (rosbag2, mcap)",
           ["record-demos", "--variant", args.task, "--episodes", str(args.demos), "--out", str(bags),
            "--real-time-factor", "2"])
    _stage("2/4 build the dataset from the bags",
           ["dataset", "build", "--config", args.config, str(bags), "-o", str(dataset), "--overwrite"])
    train = ["train", "--config", args.config, "--dataset", str(dataset), "--out", str(run_dir),
             "--device", args.device]
    if args.max_steps:
        train += ["--max-steps", str(args.max_steps)]
    _stage("3/4 train the diffusion policy", train)
    ckpt = run_dir / "final"
    if not ckpt.is_dir():
        raise GenilError(f"{run_dir}: training wrote no final checkpoint")
    _stage("4/4 evaluate on the sim (no ROS, batched)",
           ["eval", "--checkpoint", str(ckpt), "--episodes", str(args.eval_episodes), "--device", args.device,
            "--json", str(work / "eval.json")])
    return ckpt


# --------------------------------------------------------------------------- closed loop over ROS 2


class _Watcher:
    """The orchestrating node: services of both nodes, the sim's status, and what to plot."""

    def __init__(self, node):
        import threading

        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String
        from std_srvs.srv import Trigger
        from trajectory_msgs.msg import JointTrajectory

        self.node = node
        self.lock = threading.Lock()
        self.status: Optional[dict] = None
        self.diag: dict = {}
        self.frames: list = []
        self.joints: list = []  # (t, positions) of the recorded episode
        self.chunks: list = []  # (t0, [(dt, positions)]) of the recorded episode
        self.recording = False
        from lifecycle_msgs.srv import ChangeState

        self.sim_reset = node.create_client(Trigger, "/sim_node/reset")
        self.policy_reset = node.create_client(Trigger, "/policy_node/reset")
        self.policy_lifecycle = node.create_client(ChangeState, "/policy_node/change_state")
        node.create_subscription(String, "/sim_node/status", self._on_status, 10)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        node.create_subscription(Image, "/camera/image_raw", self._on_image, qos_profile_sensor_data)
        node.create_subscription(JointState, "/joint_states", self._on_joints, 50)
        node.create_subscription(JointTrajectory, "/policy_node/predicted_chunk", self._on_chunk, 10)

    @staticmethod
    def _t(stamp) -> float:
        return stamp.sec + stamp.nanosec * 1e-9

    def _on_status(self, msg):
        with self.lock:
            self.status = json.loads(msg.data)

    def _on_diag(self, msg):
        for st in msg.status:
            if "policy" in st.name:
                with self.lock:
                    self.diag = {kv.key: kv.value for kv in st.values}

    def _on_image(self, msg):
        if self.recording:
            from genil_ros.data.images import decode_image

            self.frames.append(decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data))

    def _on_joints(self, msg):
        if self.recording:
            self.joints.append((self._t(msg.header.stamp), dict(zip(msg.name, msg.position))))

    def _on_chunk(self, msg):
        if self.recording:
            t0 = self._t(msg.header.stamp)
            pts = [(p.time_from_start.sec + p.time_from_start.nanosec * 1e-9, dict(zip(msg.joint_names, p.positions)))
                   for p in msg.points]
            self.chunks.append((t0, pts))



def closed_loop(args, ckpt: Path, out: Path) -> dict:
    import numpy as np
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from genil_ros.testing import ManagedProcess, call_service, change_state, isolated_ros_env, ros_domain, wait_until

    py = sys.executable
    with ros_domain() as free_dom:
        dom = args.domain_id if args.domain_id is not None else free_dom
        env = isolated_ros_env(dom)
        env.setdefault("MUJOCO_GL", "egl")
        logs = out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        sim = ManagedProcess([py, "-m", "genil_ros.cli", "sim", "--variant", args.task, "--real-time-factor",
                              str(args.real_time_factor), "--seed", str(args.seed)], env, str(logs / "sim_node.log"))
        mode = ["--output-mode", args.output_mode] if args.output_mode else []
        pol = ManagedProcess([py, "-m", "genil_ros.cli", "policy", "--checkpoint", str(ckpt), "--device", args.device,
                              *mode, "--use-sim-time"]
                             + [x for p in getattr(args, "policy_param", []) for x in ("-p", p)],
                             env, str(logs / "policy_node.log"))
        procs = [("sim_node", sim), ("policy_node", pol)]
        ctx = rclpy.Context()
        rclpy.init(context=ctx, domain_id=dom)
        node = rclpy.create_node("genil_demo", context=ctx)
        watcher = _Watcher(node)
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(node)
        import threading

        spin = threading.Thread(target=ex.spin, daemon=True)
        spin.start()
        episodes = []
        try:
            print(f"demo: sim_node + policy_node on ROS_DOMAIN_ID={dom} (logs in {logs})", flush=True)
            wait_until(lambda: watcher.diag.get("state") == "active", 180, "the policy node to load and activate",
                       procs)
            from tqdm import tqdm

            bar = tqdm(range(args.episodes), desc="closed-loop episodes", unit="ep")
            for k in bar:
                # Between episodes the policy is deactivated (it holds), so that no command planned in the
                # old scene reaches the new one; it starts afresh on the new episode's observations.
                change_state(watcher.policy_lifecycle, "deactivate")
                info = json.loads(call_service(watcher.sim_reset, "reset the sim") or "{}")
                call_service(watcher.policy_reset, "clear the policy's observation buffer and plan")
                watcher.recording = k == 0
                change_state(watcher.policy_lifecycle, "activate")
                ep_index = info.get("index", info.get("episode"))

                def current():
                    with watcher.lock:
                        st = dict(watcher.status or {})
                    if ep_index is not None and st.get("episode") != ep_index:
                        return None
                    return st

                wait_until(lambda: current() is not None, 30, "the sim's status for the new episode", procs)
                end_wall = time.monotonic() + args.episode_timeout / max(args.real_time_factor, 0.05) * 3 + 30
                while True:
                    st = current() or {}
                    if st.get("success") or st.get("dropped") or st.get("episode_time", 0.0) >= args.episode_timeout:
                        break
                    if time.monotonic() > end_wall:
                        raise GenilError("the sim's clock stopped advancing (see logs/sim_node.log)")
                    for name, p in procs:
                        if not p.alive():
                            raise GenilError(f"{name} exited during episode {k}:\n{p.output()[-3000:]}")
                    time.sleep(0.05)
                watcher.recording = False
                ep = {"episode": k, "seed": info.get("seed"), "success": bool(st.get("success")),
                      "time_s": st.get("episode_time"), "final_distance_m": st.get("distance")}
                if args.task == "pick_place":  # a drop ends the episode as a failure; the bin is the mode
                    ep.update(dropped=bool(st.get("dropped")), bin=st.get("bin"))
                else:
                    ep["collided"] = bool(st.get("collided"))
                episodes.append(ep)
                bar.set_postfix(success=f"{np.mean([e['success'] for e in episodes]):.2f}")
            bar.close()
            diag = dict(watcher.diag)
        finally:
            ex.shutdown()
            node.destroy_node()
            ctx.try_shutdown()
            for _, p in procs:
                p.stop()
    return {"episodes": episodes, "diagnostics": diag, "frames": watcher.frames, "joints": watcher.joints,
            "chunks": watcher.chunks}


def _write_gif(path: Path, frames: list, fps: int = 20) -> None:
    import cv2
    import imageio.v2 as imageio

    big = [cv2.resize(f, (f.shape[1] * 3, f.shape[0] * 3), interpolation=cv2.INTER_NEAREST) for f in frames]
    with atomic_path(path) as tmp:
        imageio.mimsave(tmp, big, duration=1.0 / fps, loop=0)


def _plot_chunk(path: Path, joints: list, chunks: list) -> bool:
    """One predicted chunk (dashed) against what the robot did in the same time window (solid), for every
    joint both name (matched by name: the chunk's joint_names, /joint_states' names)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not joints or not chunks:
        return False
    t0, pts = chunks[min(1, len(chunks) - 1)]  # the second chunk: mid-motion, after the first re-plan
    joint_names = [j for j in pts[0][1] if j in joints[-1][1]] if pts else []
    if not joint_names:
        return False
    tj = np.array([t for t, _ in joints])
    qj = np.array([[q.get(j, np.nan) for j in joint_names] for _, q in joints])
    tp = np.array([t0 + dt for dt, _ in pts])
    qp = np.array([[q[j] for j in joint_names] for _, q in pts])
    fig, axes = plt.subplots(len(joint_names), 1, figsize=(7, 1.8 * len(joint_names)), sharex=True)
    for i, ax in enumerate(np.atleast_1d(axes)):
        win = (tj >= tp[0] - 0.5) & (tj <= tp[-1] + 0.5)
        ax.plot(tj[win] - tp[0], qj[win, i], "-", color="k", lw=1.5, label="executed (/joint_states)")
        ax.plot(tp - tp[0], qp[:, i], "o--", color="tab:orange", ms=3, label="predicted chunk")
        ax.set_ylabel(joint_names[i].replace("_joint", ""), fontsize=8)
    np.atleast_1d(axes)[0].legend(fontsize=8, loc="best")
    np.atleast_1d(axes)[-1].set_xlabel("time from the chunk's first published point [s]")
    fig.suptitle("diffusion policy: predicted action chunk vs executed trajectory", fontsize=10)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return True


def run(args) -> int:
    import numpy as np

    from genil_ros.paths import model_path

    if args.episodes < 1:
        raise GenilError(f"--episodes {args.episodes} must be >= 1")
    task = TASKS[args.task]
    args.checkpoint = args.checkpoint or task["model"]
    args.config = args.config or task["config"]
    args.episode_timeout = args.episode_timeout or task["episode_timeout"]
    if args.output_mode is None and args.task == "obstacle":
        args.output_mode = "trajectory"
    os.environ.setdefault("MUJOCO_GL", "egl")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.retrain:
        ckpt = retrain(args, out)
    else:
        ckpt = model_path(args.checkpoint)
        if not ckpt.is_dir():
            raise GenilError(f"{args.checkpoint}: no such checkpoint directory or shipped model "
                             f"(run `genil-ros demo --retrain` to make one from scratch)")
    print(f"\n==> closed loop over ROS 2: {args.episodes} episodes with {ckpt}", flush=True)
    res = closed_loop(args, ckpt, out)
    eps, diag = res["episodes"], res["diagnostics"]
    succ = float(np.mean([e["success"] for e in eps]))
    summary = {"task": args.task, "checkpoint": str(ckpt), "episodes": eps, "success_rate": succ,
               "real_time_factor": args.real_time_factor, "policy_diagnostics": diag}
    files = []
    if res["frames"]:
        _write_gif(out / "episode0.gif", res["frames"])
        files.append(out / "episode0.gif")
    if _plot_chunk(out / "chunk_vs_executed.png", res["joints"], res["chunks"]):
        files.append(out / "chunk_vs_executed.png")
    atomic_write_json(out / "summary.json", summary, indent=1)
    files.append(out / "summary.json")

    def d(key):
        return diag.get(key, "n/a")

    print(f"\nsuccess rate: {succ:.2f} ({sum(e['success'] for e in eps)}/{len(eps)} episodes, over ROS 2)")
    if args.task == "pick_place":
        bins = {b: sum(e["success"] and e["bin"] == b for e in eps) for b in ("left", "right")}
        print(f"object dropped in {sum(e['dropped'] for e in eps)} episode(s); bins of the successes {bins}")
    print(f"policy on {d('device')}: inference latency median {d('inference_latency_median_ms')} ms, "
          f"p99 {d('inference_latency_p99_ms')} ms; observation-to-command median "
          f"{d('obs_to_command_latency_median_ms')} ms; control rate {d('measured_control_rate_hz')} Hz "
          f"(nominal {d('control_rate_hz')})")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0
