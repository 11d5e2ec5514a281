"""A test robot process: publishes joint states and camera images like a ros2_control arm with a camera,
moves to the commands it receives, and records everything it receives as JSON lines.

It is a real ROS 2 process talking real DDS to the node under test. Its behaviour can be switched at run
time by publishing a std_msgs/String on ``/fake_robot/mode`` (reliable, transient local):

  normal         joint states + images, correctly stamped
  silent         publishes nothing (a dead driver)
  no_camera      joint states only
  bad_encoding   images with an unsupported encoding ("32FC1"); joint states normal
  missing_joint  joint states without the first joint; images normal
  nan            joint states with NaN positions; images normal
  huge           joint states with absurd but finite positions (3e38): the policy's output overflows to NaN
  garbage        images with garbage bytes (a CompressedImage that does not decode, or a short Image)

Gripper, pose, wrench and vector sensors, command listeners of any type and their bad-input modes:
test/nodes/fake_sensors.py. --flood publishes at a real robot's rates (1 kHz joint states, 60 Hz VGA).

Usage: fake_robot.py --record out.jsonl --joints a,b,c [--camera /camera/image_raw [--compressed]]
                     [--image-size 48x64] [--rate 50] [--camera-rate 20] [--sim-clock 1000] [--flood]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time

import fake_sensors
import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from genil_ros.ros.conversions import (
    joint_state_msg,
    ns_to_stamp,
    numpy_to_compressed_msg,
    numpy_to_image_msg,
    stamp_to_ns,
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--record", required=True)
    ap.add_argument("--joints", default="a,b,c")
    ap.add_argument("--extra-joint", default="gripper_joint", help="a joint the policy does not use ('' for none)")
    ap.add_argument("--camera", action="append", default=[])
    ap.add_argument("--compressed", action="store_true")
    ap.add_argument("--image-size", default="48x64", help="HxW")
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--camera-rate", type=float, default=20.0)
    ap.add_argument("--sim-clock", type=float, default=None, help="publish /clock starting at this many seconds")
    ap.add_argument("--node-name", default="policy_node")
    ap.add_argument("--init", default="0.1,-0.2,0.3")
    ap.add_argument("--record-published", action="store_true", help="also record the stamps it publishes")
    ap.add_argument("--flood", action="store_true",
                    help="publish from threads at the full --rate / --camera-rate (e.g. 1000 and 60) with one "
                         "pre-built image (only its stamp changes), and record the achieved rates every second")
    fake_sensors.add_arguments(ap)
    args = ap.parse_args(argv)

    from builtin_interfaces.msg import Time  # noqa: F401
    from diagnostic_msgs.msg import DiagnosticArray
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CompressedImage, Image, JointState
    from std_msgs.msg import Float64MultiArray, String
    from trajectory_msgs.msg import JointTrajectory

    rclpy.init()
    params = []
    if args.sim_clock is not None:
        params = [rclpy.parameter.Parameter("use_sim_time", rclpy.Parameter.Type.BOOL, True)]
    node = rclpy.create_node("fake_robot", parameter_overrides=params)
    joints = args.joints.split(",")
    init = [float(v) for v in args.init.split(",")]
    pos = np.array((init + [0.0] * len(joints))[: len(joints)], dtype=np.float64)
    h, w = (int(v) for v in args.image_size.split("x"))
    state = {"mode": "normal", "seq": 0}
    lock = threading.Lock()
    out = open(args.record, "a", buffering=1)

    def record(kind, **kw):
        kw.update(kind=kind, wall_ns=time.time_ns(), ros_ns=node.get_clock().now().nanoseconds)
        with lock:
            out.write(json.dumps(kw) + "\n")

    # ------------------------------------------------------------------ /clock (sim time)
    if args.sim_clock is not None:
        clock_pub = node.create_publisher(Clock, "/clock", 10)
        t_start = time.monotonic()

        def clock_thread():
            while rclpy.ok():
                sim_ns = int((args.sim_clock + time.monotonic() - t_start) * 1e9)
                clock_pub.publish(Clock(clock=ns_to_stamp(sim_ns)))
                time.sleep(0.002)

        threading.Thread(target=clock_thread, daemon=True).start()

        def now_ns():
            return int((args.sim_clock + time.monotonic() - t_start) * 1e9)
    else:
        def now_ns():
            return node.get_clock().now().nanoseconds

    # ------------------------------------------------------------------ publishers
    js_pub = node.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
    cam_pubs = [node.create_publisher(CompressedImage if args.compressed else Image, t, qos_profile_sensor_data)
                for t in args.camera]

    def publish_joints():
        mode = state["mode"]
        if mode == "silent":
            return
        names, values = list(joints), list(pos)
        if args.extra_joint:
            names.append(args.extra_joint)
            values.append(0.0)
        names, values = names[::-1], values[::-1]  # never in the policy's order: the node must reorder by name
        if mode == "missing_joint":
            k = names.index(joints[0])
            del names[k], values[k]
        if mode == "nan":
            values = [math.nan] * len(values)
        if mode == "huge":
            values = [3e38] * len(values)
        stamp = now_ns()
        velocity = None if mode == "no_velocity" else [0.0] * len(values)
        js_pub.publish(joint_state_msg(names, values, stamp, velocity=velocity))
        publish_sensors()
        if args.record_published:
            record("pub_joints", stamp_ns=stamp)

    def publish_images():
        mode = state["mode"]
        if mode in ("silent", "no_camera"):
            return
        state["seq"] += 1
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = np.uint8(int(128 + 100 * math.tanh(pos[0])) % 256)
        img[: h // 2, :, 1] = np.uint8(state["seq"] % 256)
        img[:, : w // 2, 2] = 200
        stamp = now_ns()
        for i, pub in enumerate(cam_pubs):
            if args.compressed:
                msg = numpy_to_compressed_msg(img, stamp, frame_id=f"camera{i}")
                if mode == "garbage":
                    msg.data = bytes(range(256)) * 4
            else:
                msg = numpy_to_image_msg(img, stamp, frame_id=f"camera{i}")
                if mode == "bad_encoding":
                    msg.encoding = "32FC1"
                if mode == "garbage":
                    msg.data = bytes(10)
            pub.publish(msg)
        if args.record_published:
            record("pub_image", stamp_ns=stamp)

    publish_sensors = fake_sensors.setup(node, args, state, pos, now_ns, record)
    if args.flood:
        start_flood(args, node, state, pos, joints, js_pub, cam_pubs, now_ns, record)
    else:
        node.create_timer(1.0 / args.rate, publish_joints)
        if cam_pubs:
            node.create_timer(1.0 / args.camera_rate, publish_images)

    # ------------------------------------------------------------------ what it receives
    def on_traj(msg):
        idx = [list(msg.joint_names).index(j) for j in joints] if set(joints) <= set(msg.joint_names) else None
        pts = [list(p.positions) for p in msg.points]
        if idx is not None and pts:
            pos[:] = np.asarray(pts[0])[idx]
        record("traj", stamp_ns=stamp_to_ns(msg.header.stamp), names=list(msg.joint_names), points=pts,
               tfs=[p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points])

    def on_pos(msg):
        if len(msg.data) == len(joints):
            pos[:] = np.asarray(msg.data)
        record("position", data=list(msg.data))

    def on_chunk(msg):
        record("chunk", stamp_ns=stamp_to_ns(msg.header.stamp), names=list(msg.joint_names),
               points=[list(p.positions) for p in msg.points],
               tfs=[p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points])

    def on_diag(msg):
        for st in msg.status:
            record("diag", level=int.from_bytes(st.level, "little") if isinstance(st.level, bytes) else int(st.level),
                   message=st.message, name=st.name, values={kv.key: kv.value for kv in st.values})

    def on_mode(msg):
        state["mode"] = msg.data
        record("mode", mode=msg.data)

    node.create_subscription(JointTrajectory, "/joint_trajectory_controller/joint_trajectory", on_traj, 50)
    node.create_subscription(Float64MultiArray, "/forward_position_controller/commands", on_pos, 50)
    node.create_subscription(JointTrajectory, f"/{args.node_name}/predicted_chunk", on_chunk, 50)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(String, "/fake_robot/mode", on_mode, latched)
    record("start", joints=joints)

    ex = SingleThreadedExecutor()
    ex.add_node(node)
    try:
        ex.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        out.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def start_flood(args, node, state, pos, joints, js_pub, cam_pubs, now_ns, record) -> None:
    """Input floods (a real robot's rates: joint states at 500 Hz - 1 kHz, cameras at 30 - 60 Hz): one thread
    per stream publishes on a fixed schedule (catching up without bursts when it falls behind); the image
    message is built once. Every second the achieved rates are recorded (kind "flood")."""
    h, w = (int(v) for v in args.image_size.split("x"))
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2, 2] = 200
    img_msg = numpy_to_image_msg(img, 0, frame_id="camera0")
    names = list(joints) + ([args.extra_joint] if args.extra_joint else [])
    sent = {"joints": 0, "images": 0}

    def loop(rate, publish, key):
        period = 1.0 / rate
        next_t = time.monotonic()
        while rclpy.ok():
            if state["mode"] == "normal":
                publish()
                sent[key] += 1
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -10 * period:
                next_t = time.monotonic()  # far behind: do not burst

    def joints_once():
        values = list(pos) + ([0.0] if args.extra_joint else [])
        js_pub.publish(joint_state_msg(names, values, now_ns(), velocity=[0.0] * len(values)))

    def image_once():
        img_msg.header.stamp = ns_to_stamp(now_ns())
        for pub in cam_pubs:
            pub.publish(img_msg)

    def report():
        last = dict(sent)
        while rclpy.ok():
            time.sleep(1.0)
            now = dict(sent)
            record("flood", joints_hz=now["joints"] - last["joints"], images_hz=now["images"] - last["images"])
            last = now

    threads = [(args.rate, joints_once, "joints")] + ([(args.camera_rate, image_once, "images")] if cam_pubs else [])
    for rate, fn, key in threads:
        threading.Thread(target=loop, args=(rate, fn, key), daemon=True).start()
    threading.Thread(target=report, daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
