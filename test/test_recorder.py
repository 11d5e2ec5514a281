"""The recorder over real DDS: topics published by one process, recorded by `genil-ros record` in another
(and by the BagRecorder library call in-process), read back with rosbags and built into a dataset."""

import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from genil_ros.config import config_from_dict  # noqa: E402
from genil_ros.data.bags import Bag  # noqa: E402
from genil_ros.data.build import build_dataset  # noqa: E402

JOINTS = ["j0", "j1"]


def _publishers(node, best_effort_images=False):
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray

    pj = node.create_publisher(JointState, "/joint_states", 10)
    pi = node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data if best_effort_images else 10)
    pc = node.create_publisher(Float64MultiArray, "/commands", 10)
    return pj, pi, pc


def _publish_demo(node, pubs, seconds=2.0, spin=None):
    """JointState at 50 Hz (names in reverse order), 24x32 rgb8 images and commands at 10 Hz."""
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray

    pj, pi, pc = pubs
    n = int(seconds * 50)
    t_start = time.monotonic()
    for k in range(n):
        stamp = node.get_clock().now().to_msg()
        js = JointState()
        js.header.stamp = stamp
        js.name = ["j1", "j0"]
        js.position = [-0.01 * k, 0.01 * k]
        pj.publish(js)
        if k % 5 == 0:
            img = Image()
            img.header.stamp = stamp
            img.height, img.width, img.encoding, img.step = 24, 32, "rgb8", 96
            img.data = bytes([k % 256, 7, 200]) * (24 * 32)
            pi.publish(img)
            pc.publish(Float64MultiArray(data=[0.01 * (k + 5), -0.01 * (k + 5)]))
        if spin is not None:
            spin()
        delay = t_start + (k + 1) / 50 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return n


def _cfg():
    return config_from_dict({
        "task": {"joint_names": JOINTS, "control_rate_hz": 10.0,
                 "cameras": [{"name": "front", "topic": "/camera/image_raw", "height": 12, "width": 16}]},
        "dataset": {"action_source": "command", "action_topic": "/commands", "max_staleness_s": 0.3,
                    "min_episode_steps": 4}}, source="test")


def _wait_matched(pubs, timeout=30.0, spin=None, proc=None):
    t_end = time.monotonic() + timeout
    while any(p.get_subscription_count() == 0 for p in pubs):
        assert time.monotonic() < t_end, "the recorder never subscribed"
        assert proc is None or proc.alive(), proc.output()
        if spin is not None:
            spin()
        time.sleep(0.05)


def _check_dataset(bag, tmp_path, n_js):
    with Bag(bag) as b:
        assert b.topics == {"/joint_states": "sensor_msgs/msg/JointState", "/camera/image_raw": "sensor_msgs/msg/Image",
                            "/commands": "std_msgs/msg/Float64MultiArray"}
        counts = {t: b.count([t]) for t in b.topics}
        last = None
        for topic, _t, raw in b.messages(["/joint_states"]):
            last = b.deserialize(raw, "sensor_msgs/msg/JointState", topic)
    assert counts["/joint_states"] == n_js  # reliable QoS: every message arrives
    assert counts["/camera/image_raw"] >= 0.9 * n_js / 5 and counts["/commands"] == n_js / 5
    assert list(last.name) == ["j1", "j0"] and last.position[1] == pytest.approx(0.01 * (n_js - 1))
    store = build_dataset(_cfg(), [bag], tmp_path / "ds", progress=False)
    steps = sum(store.meta["episode_lengths"])
    assert steps >= 12, store.meta["episode_lengths"]
    for i in range(store.num_episodes):
        ep = store.episode(i)
        # state is the joint positions in joint_names order (reordered by name)
        np.testing.assert_allclose(ep["state"][:, 1], -ep["state"][:, 0], atol=1e-6)
        k = np.rint(ep["state"][:, 0] / 0.01).astype(int)
        assert np.all(np.diff(k) > 0)
        # the frame held at each tick was published with a joint state at most 0.3 s earlier
        frame_k = ep["front"][:, 0, 0, 0].astype(int)
        assert np.all((k - frame_k) % 256 <= 15) and np.all(frame_k % 5 == 0)
        assert tuple(ep["front"][0, 3, 3, 1:]) == (7, 200)
        np.testing.assert_allclose(ep["action"][:, 1], -ep["action"][:, 0], atol=1e-6)
    return store


def test_genil_ros_record_over_dds(spawn, ros_context, tmp_path):
    import rclpy

    bag = tmp_path / "demo"
    rec = spawn([sys.executable, "-m", "genil_ros.cli", "record", "/joint_states",
                 "/camera/image_raw:sensor_msgs/msg/Image", "/commands", "-o", bag], name="recorder")
    node = rclpy.create_node("demo_publisher", context=ros_context)
    try:
        pubs = _publishers(node)
        _wait_matched(pubs, proc=rec)
        time.sleep(0.3)  # discovery of the publisher by the recorder's graph lookups
        n = _publish_demo(node, pubs, seconds=2.0)
        time.sleep(0.5)
    finally:
        node.destroy_node()
    assert rec.alive(), rec.output()
    rc = rec.stop()
    out = rec.output()
    assert rc == 0, out
    assert f"/joint_states {n}" in out, out
    _check_dataset(bag, tmp_path, n)


def test_bag_recorder_library_call_best_effort_and_late_topic(ros_context, tmp_path):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from genil_ros.ros.recorder_node import BagRecorder

    pub_node = rclpy.create_node("demo_publisher", context=ros_context)
    rec_node = rclpy.create_node("recorder", context=ros_context)
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(rec_node)
    spinner = threading.Thread(target=ex.spin, daemon=True)  # the recorder's node spins in the background
    try:
        # the camera publisher is best effort (sensor data QoS); all publishers appear only after start
        rec = BagRecorder(rec_node, tmp_path / "demo", ["/joint_states", "/camera/image_raw", "/commands"],
                          storage="mcap", compression="message")
        assert rec.subscribed == []
        spinner.start()
        pubs = _publishers(pub_node, best_effort_images=True)
        _wait_matched(pubs)
        assert rec.subscribed == ["/camera/image_raw", "/commands", "/joint_states"]
        n = _publish_demo(pub_node, pubs, seconds=2.0)
        time.sleep(0.5)
        assert rec.stop() == tmp_path / "demo"
        assert rec.counts["/joint_states"] == n
        rec.stop()  # twice is fine
    finally:
        ex.shutdown()
        spinner.join(5)
        pub_node.destroy_node()
        rec_node.destroy_node()
    _check_dataset(tmp_path / "demo", tmp_path, n)


def test_record_refuses_existing_output(tmp_path):
    import subprocess

    (tmp_path / "x").mkdir()
    r = subprocess.run([sys.executable, "-m", "genil_ros.cli", "record", "/joint_states", "-o", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr


def test_record_config_names_every_observation_and_command_topic(tmp_path):
    """`genil-ros record --config` records what the task observes and the topics of its recorded commands."""
    import argparse

    import yaml

    from genil_ros.ros import recorder_node

    def topics(cfg: dict, *extra):
        path = tmp_path / "task.yaml"
        path.write_text(yaml.safe_dump(cfg))
        parser = argparse.ArgumentParser()
        recorder_node.add_arguments(parser)
        return recorder_node._topics_from_args(parser.parse_args(["--config", str(path), *extra]))

    typed = {"task": {
        "observations": [
            {"name": "arm", "type": "joint_position", "joints": ["j0", "j1"]},
            {"name": "gripper", "type": "gripper", "topic": "/gripper/joint_states", "joints": ["finger"]},
            {"name": "ee", "type": "pose", "topic": "/tcp_pose_broadcaster/pose", "frame_id": "base"},
            {"name": "ft", "type": "wrench", "topic": "/ft_sensor/wrench"},
            {"name": "obj", "type": "vector", "topic": "/object/position", "dims": ["x", "y", "z"]},
            {"name": "wrist", "type": "camera", "topic": "/wrist/image_raw/compressed", "compressed": True}],
        "actions": [
            {"name": "arm", "type": "joint_position", "joints": ["j0", "j1"], "source": "next_observation",
             "observation": "arm"},
            {"name": "gripper", "type": "gripper", "joints": ["finger"], "topic": "/gripper/commands"},
            {"name": "servo", "type": "twist", "topic": "/servo_node/delta_twist_cmds"}]}}
    assert topics(typed, "/tf") == {t: None for t in [
        "/joint_states", "/gripper/joint_states", "/tcp_pose_broadcaster/pose", "/ft_sensor/wrench", "/object/position",
        "/wrist/image_raw/compressed", "/gripper/commands", "/servo_node/delta_twist_cmds", "/tf"]}
    legacy = {"task": {"joint_names": ["j0"], "cameras": [{"name": "front", "topic": "/cam"}]},
              "dataset": {"action_source": "command", "action_topic": "/commands"}}
    assert list(topics(legacy)) == ["/joint_states", "/cam", "/commands"]
