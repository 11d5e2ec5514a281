"""Record scripted-expert demonstrations over ROS 2 topics, one rosbag2 (mcap) per episode.

This is exactly the path a user with a real arm follows, with the scripted expert in place of a teleoperator:
the expert is a ROS node that reads ``/joint_states`` and publishes ``std_msgs/Float64MultiArray`` commands
at the control rate (10 Hz, sim time); the recorder (``genil_ros.ros.recorder_node.BagRecorder``) writes
what it receives into ``OUT/episode_NNNN/`` (rosbag2, mcap); ``genil-ros dataset build`` then makes the
training set. Per variant:

- ``obstacle`` / ``reach``: the expert gets the goal from the sim's ``/sim_node/episode`` topic (privileged,
  for the expert only) and sends joint targets on ``/forward_position_controller/commands``; recorded:
  joint states, camera, commands (``config/sim_task.yaml``).
- ``pick_place``: the expert reads the object position a perception node would publish (``/object/position``,
  Float64MultiArray), sends the arm's joint targets on ``/forward_position_controller/commands`` and the
  gripper's position target (metres) on ``/gripper_controller/commands``; recorded: joint states (arm and
  gripper joint), object position, both command topics (``config/pick_place_task.yaml``; add
  ``/camera/image_raw`` with ``--topics`` for a vision policy). An episode the object is dropped in ends there.

    python -m genil_ros.ros.record_demos --episodes 100 --out demos/ [--variant pick_place] [--seed 0]

By default it starts ``sim_node`` itself (a separate process on the same ROS domain); ``--no-spawn-sim``
uses one that is already running. Failed episodes are dropped unless ``--keep-failed``. ``OUT/demos.json``
lists every episode (bag, seed, goal, expert mode, success, steps) -- the mode is for analysis only and is
in no bag.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from genil_ros.fileio import atomic_write_json

ARM_TOPIC = "/forward_position_controller/commands"
GRIPPER_TOPIC = "/gripper_controller/commands"
OBJECT_TOPIC = "/object/position"
DEFAULT_TOPICS = ["/joint_states", "/camera/image_raw", ARM_TOPIC]
VARIANT_TOPICS = {"obstacle": DEFAULT_TOPICS, "reach": DEFAULT_TOPICS,
                  "pick_place": ["/joint_states", OBJECT_TOPIC, ARM_TOPIC, GRIPPER_TOPIC]}
KNOWN_TYPES = {  # given to the recorder so that it subscribes at once, without waiting for discovery
    "/joint_states": "sensor_msgs/msg/JointState",
    "/camera/image_raw": "sensor_msgs/msg/Image",
    ARM_TOPIC: "std_msgs/msg/Float64MultiArray",
    GRIPPER_TOPIC: "std_msgs/msg/Float64MultiArray",
    OBJECT_TOPIC: "std_msgs/msg/Float64MultiArray",
    "/sim_node/success": "std_msgs/msg/Bool",
    "/clock": "rosgraph_msgs/msg/Clock",
}


def add_arguments(parser) -> None:
    parser.add_argument("--episodes", type=int, default=10, help="number of episodes to record (successful ones)")
    parser.add_argument("--out", required=True, help="output directory; one bag per episode in it")
    parser.add_argument("--variant", choices=["obstacle", "reach", "pick_place"], default="obstacle",
                        help="the sim task (pick_place: gripper, object and two bins)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sim's episodes and of the expert's modes")
    parser.add_argument("--real-time-factor", type=float, default=2.0,
                        help="sim speed while recording (0 = as fast as possible)")
    parser.add_argument("--control-rate-hz", type=float, default=10.0, help="rate of the expert's commands (sim time)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="give up on an episode after this many control steps (default: the task's limit, "
                             "80 for obstacle/reach, 120 for pick_place)")
    parser.add_argument("--hold-steps", type=int, default=5, help="control steps recorded after success")
    parser.add_argument("--topics", nargs="+", default=None,
                        help="topics to record (default: " + "; ".join(f"{v}: {' '.join(t)}" for v, t in
                                                                      VARIANT_TOPICS.items()) + ")")
    parser.add_argument("--max-command-gap", type=float, default=0.2,
                        help="re-record an episode whose recorded commands are further apart than this (sim s); "
                             "keep it below the dataset's max_staleness_s (a loaded CPU can delay the expert)")
    parser.add_argument("--keep-failed", action="store_true", help="keep bags of failed episodes")
    parser.add_argument("--no-spawn-sim", dest="spawn_sim", action="store_false",
                        help="use a sim_node that is already running instead of starting one")
    parser.add_argument("--sim-node", default="/sim_node", help="name of the sim node (its ~/reset and ~/episode)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the sim to answer")


def _spawn_sim(args) -> subprocess.Popen:
    from genil_ros.paths import config_path

    cmd = [sys.executable, "-m", "genil_ros.ros.sim_node", "--ros-args"]
    params = config_path("sim_node.yaml")
    if params.is_file():
        cmd += ["--params-file", str(params)]
    cmd += ["-p", f"variant:={args.variant}", "-p", f"real_time_factor:={float(args.real_time_factor)}",
            "-p", f"seed:={int(args.seed)}"]
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    return subprocess.Popen(cmd, env=env, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    import signal

    for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


class DemoRecorder:
    """The expert node: drives the sim over topics and records one bag per episode."""

    def __init__(self, args):
        import rclpy
        from rclpy.parameter import Parameter
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray, String
        from std_srvs.srv import Trigger

        from genil_ros.sim.binding import make_env
        from genil_ros.sim.env import JOINT_NAMES

        self.args = args
        self.rclpy = rclpy
        self.node = rclpy.create_node("demo_expert",
                                      parameter_overrides=[Parameter("use_sim_time", Parameter.Type.BOOL, True)])
        self.executor = rclpy.executors.SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.joint_names = list(JOINT_NAMES)
        self.pick_place = args.variant == "pick_place"
        self.latest_js = None
        self.latest_object: Optional[tuple] = None  # (receive time in sim seconds, xyz)
        self.episode_msgs: dict[int, dict] = {}
        self.status: Optional[dict] = None
        sim = args.sim_node.rstrip("/")
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(JointState, "/joint_states", self._on_js, 10)
        self.node.create_subscription(String, f"{sim}/episode", self._on_episode, latched)
        self.node.create_subscription(String, f"{sim}/status", self._on_status, 10)
        # (publisher, slice of the expert's action): arm joint targets, and the gripper target in pick_place
        self.outputs = [(self.node.create_publisher(Float64MultiArray, ARM_TOPIC, 10), slice(0, 4), ARM_TOPIC)]
        if self.pick_place:
            self.node.create_subscription(Float64MultiArray, OBJECT_TOPIC, self._on_object, 10)
            self.outputs.append((self.node.create_publisher(Float64MultiArray, GRIPPER_TOPIC, 10), slice(4, 5),
                                 GRIPPER_TOPIC))
        self.reset_cli = self.node.create_client(Trigger, f"{sim}/reset")
        self._Float64MultiArray, self._Trigger = Float64MultiArray, Trigger
        # the expert's kinematic model: the same MJCF, no renderer, never stepped
        self.model = make_env(args.variant, render=False, control_rate_hz=args.control_rate_hz)
        if self.pick_place:
            from genil_ros.sim.pick_place_expert import PickPlaceExpert

            self.expert = PickPlaceExpert(self.model, seed=args.seed)
        else:
            from genil_ros.sim.expert import ScriptedExpert

            self.expert = ScriptedExpert(self.model, seed=args.seed)
        self.max_steps = int(args.max_steps or self.model.max_episode_steps)
        self.sim_name = sim

    # ------------------------------------------------------------------ callbacks
    def _on_js(self, msg) -> None:
        self.latest_js = msg

    def _on_object(self, msg) -> None:
        self.latest_object = (self.node.get_clock().now().nanoseconds * 1e-9, np.asarray(msg.data, np.float64))

    def _on_episode(self, msg) -> None:
        info = json.loads(msg.data)
        self.episode_msgs[int(info["episode"])] = info

    def _on_status(self, msg) -> None:
        self.status = json.loads(msg.data)

    # ------------------------------------------------------------------ helpers
    def spin_until(self, cond, timeout: float, what: str) -> None:
        from genil_ros.errors import GenilError

        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise GenilError(f"record_demos: timed out after {timeout:.0f} s waiting for {what}")
            self.executor.spin_once(timeout_sec=0.05)

    def js_time(self) -> float:
        s = self.latest_js.header.stamp
        return s.sec + s.nanosec * 1e-9

    def joint_pos(self) -> np.ndarray:
        from genil_ros.ros.conversions import joint_state_to_array

        return joint_state_to_array(self.latest_js, self.joint_names, where="/joint_states").astype(np.float64)

    def reset_sim(self) -> dict:
        fut = self.reset_cli.call_async(self._Trigger.Request())
        self.spin_until(fut.done, self.args.timeout, f"{self.sim_name}/reset to answer")
        res = fut.result()
        if res is None or not res.success:
            from genil_ros.errors import GenilError

            raise GenilError(f"record_demos: {self.sim_name}/reset failed: {getattr(res, 'message', '')}")
        index = int(json.loads(res.message)["episode"])
        # the expert's goal comes from the episode topic (as any other subscriber would get it)
        self.spin_until(lambda: index in self.episode_msgs, self.args.timeout, f"{self.sim_name}/episode {index}")
        info = self.episode_msgs[index]
        if info.get("variant") != self.args.variant:
            from genil_ros.errors import GenilError

            raise GenilError(f"record_demos: {self.sim_name} runs the '{info.get('variant')}' task, not "
                             f"'{self.args.variant}' (start it with -p variant:={self.args.variant}, or pass "
                             f"--variant {info.get('variant')})")
        start = float(info["start_time"])
        self.spin_until(lambda: self.latest_js is not None and self.js_time() >= start, self.args.timeout,
                        "/joint_states of the new episode")
        if self.pick_place:  # an object position of this episode: received after its start, where it was put
            xy = np.asarray(info["object_xy"])

            def fresh() -> bool:
                o = self.latest_object
                return o is not None and o[0] > start and o[1].shape == (3,) and np.allclose(o[1][:2], xy, atol=0.01)

            self.spin_until(fresh, self.args.timeout, f"{OBJECT_TOPIC} of the new episode")
        return info

    def observation(self, info: dict) -> dict:
        """What the expert sees: the arm's joint positions, and the goal (privileged) or the perceived object."""
        obs = {"joint_pos": self.joint_pos()}
        if self.pick_place:
            obs["object_pos"] = self.latest_object[1]
        else:
            obs["goal"] = np.asarray(info["goal"], dtype=np.float64)
        return obs

    # ------------------------------------------------------------------ one episode
    def record_episode(self, bag_path: Path) -> dict:
        from genil_ros.ros.recorder_node import BagRecorder

        args = self.args
        info = self.reset_sim()
        self.expert.reset()
        period = 1.0 / args.control_rate_hz
        topics = list(args.topics)
        if all(t in KNOWN_TYPES for t in topics):
            topics = {t: KNOWN_TYPES[t] for t in topics}
        recorder = BagRecorder(self.node, str(bag_path), topics)
        success, dropped, steps, after = False, False, 0, 0
        try:
            t_next = self.js_time() + period  # one tick of the initial state before the first command
            while steps < self.max_steps:
                self.spin_until(lambda: self.js_time() >= t_next, args.timeout, "sim time to advance (/joint_states)")
                t_next += period
                action = np.asarray(self.expert.act(self.observation(info)), dtype=np.float64)
                for pub, part, _ in self.outputs:
                    pub.publish(self._Float64MultiArray(data=[float(v) for v in action[part]]))
                steps += 1
                st = self.status
                if st is not None and st.get("episode") == info["episode"]:
                    success = success or bool(st.get("success"))
                    dropped = bool(st.get("dropped", False))
                if dropped:
                    break
                if success and self.expert.done:
                    after += 1
                    if after > args.hold_steps:
                        break
            # let the last command and the frames after it arrive before closing the bag
            t_end = self.js_time() + period
            self.spin_until(lambda: self.js_time() >= t_end, args.timeout, "the last tick")
        finally:
            recorder.stop()
        gaps = [g for g in (command_gap(bag_path, topic) for _, _, topic in self.outputs) if g is not None]
        gap = max(gaps) if gaps else None
        scene = {"goal": info["goal"]} if "goal" in info else {"object_xy": info["object_xy"]}
        return {"episode": info["episode"], "seed": info.get("seed"), **scene,
                "mode": self.expert.mode, "success": success and not dropped, "dropped": dropped, "steps": steps,
                "max_command_gap_s": gap, "late": gap is not None and gap > args.max_command_gap}

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def command_gap(bag_path: Path, topic: str) -> Optional[float]:
    """Largest gap (s, bag receive times) between consecutive messages on ``topic`` in a rosbag2."""
    from rosbags.rosbag2 import Reader

    with Reader(bag_path) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            return None
        times = np.array([t for _, t, _ in reader.messages(connections=conns)], dtype=np.int64)
    return float(np.max(np.diff(times)) * 1e-9) if len(times) > 1 else None


def record(args) -> dict:
    """Record ``args.episodes`` successful episodes into ``args.out``; returns the summary."""
    import rclpy
    from tqdm import tqdm

    from genil_ros.errors import GenilError

    if args.episodes < 1:
        raise GenilError(f"record_demos: --episodes {args.episodes} must be >= 1")
    if args.topics is None:
        args.topics = list(VARIANT_TOPICS[args.variant])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sim = _spawn_sim(args) if args.spawn_sim else None
    rclpy.init()
    rec = None
    episodes: list[dict] = []
    try:
        rec = DemoRecorder(args)
        rec.spin_until(lambda: rec.reset_cli.service_is_ready() or (sim is not None and sim.poll() is not None),
                       args.timeout, f"the sim's {rec.sim_name}/reset service")
        if sim is not None and sim.poll() is not None:
            raise GenilError(f"record_demos: sim_node exited with code {sim.returncode} before it was ready")
        existing = sorted(p.name for p in out.glob("episode_*"))
        k = len(existing)
        kept, tries = 0, 0
        bar = tqdm(total=args.episodes, desc="recording demos", unit="ep")
        while kept < args.episodes:
            if tries >= 2 * args.episodes + 10:
                late = sum(e["late"] for e in episodes)
                raise GenilError(f"record_demos: only {kept} of {tries} episodes succeeded ({late} had commands "
                                 f"late by more than --max-command-gap {args.max_command_gap} s: lower "
                                 f"--real-time-factor); is the sim the '{args.variant}' variant?")
            tries += 1
            name = f"episode_{k:04d}"
            result = rec.record_episode(out / name)
            result["bag"] = name
            if (result["success"] and not result["late"]) or args.keep_failed:
                kept += 1
                k += 1
                bar.update(1)
            else:
                shutil.rmtree(out / name, ignore_errors=True)
                result["bag"] = None
            episodes.append(result)
            bar.set_postfix(success=f"{np.mean([e['success'] for e in episodes]):.2f}")
        bar.close()
    finally:
        if rec is not None:
            rec.close()
        rclpy.try_shutdown()
        if sim is not None:
            _stop(sim)
    summary = {
        "variant": args.variant,
        "episodes": episodes,
        "attempted": len(episodes),
        "success_rate": float(np.mean([e["success"] for e in episodes])),
        "late": int(sum(e["late"] for e in episodes)),
        "dropped": int(sum(e.get("dropped", False) for e in episodes)),
        "modes": {m: sum(e["mode"] == m for e in episodes if e["bag"]) for m in ("left", "right")},
        "topics": list(args.topics),
    }
    atomic_write_json(out / "demos.json", _merge_summary(out / "demos.json", summary), indent=1)
    return summary


def _merge_summary(path: Path, new: dict) -> dict:
    """Append to an existing demos.json (recording more episodes into the same folder)."""
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            new = dict(new, episodes=old.get("episodes", []) + new["episodes"])
        except (OSError, ValueError):
            pass
    return new


def run(args) -> int:
    s = record(args)
    print(f"recorded {sum(1 for e in s['episodes'] if e['bag'])} bags in {args.out}: expert success "
          f"{s['success_rate']:.2f} over {s['attempted']} episodes ({s['dropped']} dropped the object), "
          f"modes {s['modes']}, "
          f"{s['late']} re-recorded for late commands")
    return 0


def main(argv: Optional[list] = None) -> int:
    from genil_ros.errors import GenilError

    parser = argparse.ArgumentParser(prog="record_demos", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except GenilError as e:
        print(f"record_demos: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
