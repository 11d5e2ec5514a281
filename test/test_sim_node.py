"""sim_node over real DDS: a separate process publishing joint states, images and /clock, obeying both
ros2_control-style command topics, resetting episodes and reporting success."""

import json
import sys
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Bool, Float64MultiArray, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from genil_ros.ros.conversions import duration_msg, stamp_to_ns  # noqa: E402
from genil_ros.sim.env import JOINT_NAMES  # noqa: E402
from genil_ros.sim.pick_place import GRIPPER_JOINT, GRIPPER_OPEN  # noqa: E402

SIM = [sys.executable, "-m", "genil_ros.ros.sim_node", "--ros-args", "-p", "seed:=5"]


class Client:
    """A test-side node that records what the sim publishes."""

    def __init__(self, ctx):
        self.node = rclpy.create_node("sim_test_client", context=ctx)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
        self.executor.add_node(self.node)
        self.js, self.images, self.clock, self.success, self.episodes = [], [], [], [], []
        n = self.node
        n.create_subscription(JointState, "/joint_states", self.js.append, 50)
        n.create_subscription(Image, "/camera/image_raw", self.images.append, qos_profile_sensor_data)
        n.create_subscription(Clock, "/clock", self.clock.append, 50)
        n.create_subscription(Bool, "/sim_node/success", self.success.append, 10)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        n.create_subscription(String, "/sim_node/episode", lambda m: self.episodes.append(json.loads(m.data)), latched)
        self.pub_pos = n.create_publisher(Float64MultiArray, "/forward_position_controller/commands", 10)
        self.pub_traj = n.create_publisher(JointTrajectory, "/joint_trajectory_controller/joint_trajectory", 10)
        self.reset_cli = n.create_client(Trigger, "/sim_node/reset")

    def spin_until(self, cond, timeout=30.0, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            self.executor.spin_once(timeout_sec=0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def position(self):
        m = self.js[-1]
        return np.array([m.position[list(m.name).index(j)] for j in JOINT_NAMES])

    def wait_position(self, target, tol, timeout=30.0, what="joints to reach the target"):
        self.spin_until(lambda: self.js and np.max(np.abs(self.position() - target)) < tol, timeout, what)

    def sim_time(self):
        return stamp_to_ns(self.js[-1].header.stamp) * 1e-9

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture
def client(ros_context):
    c = Client(ros_context)
    yield c
    c.close()


def test_streams_and_commands(spawn, client):
    spawn(SIM + ["-p", "real_time_factor:=2.0"], name="sim")
    c = client
    c.spin_until(lambda: len(c.js) >= 30 and len(c.images) >= 3 and len(c.clock) >= 30 and c.episodes,
                 60, "joint_states, images, clock and episode info")
    m = c.js[-1]
    assert sorted(m.name) == sorted(JOINT_NAMES) and len(m.position) == 4 and len(m.velocity) == 4
    stamps = [stamp_to_ns(j.header.stamp) for j in c.js]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))  # sim time, strictly increasing
    assert max(stamp_to_ns(k.clock) for k in c.clock) >= stamps[0]
    img = c.images[-1]
    assert (img.height, img.width, img.encoding) == (96, 96, "rgb8") and len(img.data) == 96 * 96 * 3
    pixels = np.frombuffer(bytes(img.data), np.uint8).reshape(96, 96, 3)
    assert pixels.std() > 20
    ep = c.episodes[-1]
    assert ep["episode"] == 0 and len(ep["goal"]) == 3 and ep["variant"] == "obstacle"
    assert c.success and c.success[-1].data is False

    # forward_position_controller: Float64MultiArray in joint_names order, applied at once
    start = c.position()
    target = start + np.array([0.5, -0.2, 0.3, 0.1])
    c.pub_pos.publish(Float64MultiArray(data=target.tolist()))
    c.wait_position(target, 0.03, what="the Float64MultiArray target")

    # a wrong-sized command is ignored (the node logs it and keeps running)
    c.pub_pos.publish(Float64MultiArray(data=[9.0, 9.0]))
    n0 = len(c.js)
    c.spin_until(lambda: len(c.js) > n0 + 20, 30, "joint states after a bad command")
    assert np.max(np.abs(c.position() - target)) < 0.03

    # joint_trajectory_controller: joints matched by name (given reversed), interpolated by time_from_start
    goal = start + np.array([-0.4, 0.2, -0.2, 0.3])
    traj = JointTrajectory(joint_names=list(reversed(JOINT_NAMES)))
    mid = 0.5 * (target + goal)
    traj.points = [JointTrajectoryPoint(positions=mid[::-1].tolist(), time_from_start=duration_msg(1.0)),
                   JointTrajectoryPoint(positions=goal[::-1].tolist(), time_from_start=duration_msg(2.0))]
    t_sent = c.sim_time()
    c.pub_traj.publish(traj)
    c.spin_until(lambda: c.sim_time() > t_sent + 0.6, 30, "sim time to pass")
    q = c.position()
    assert np.max(np.abs(q - target)) > 0.05 and np.max(np.abs(q - goal)) > 0.1  # on its way, not jumped
    c.wait_position(goal, 0.03, what="the JointTrajectory's last point")
    assert c.sim_time() >= t_sent + 1.9  # it took the trajectory's time


def test_reset_and_bad_trajectory(spawn, client):
    proc = spawn(SIM + ["-p", "real_time_factor:=0.0"], name="sim")
    c = client
    c.spin_until(lambda: c.episodes and c.js and c.reset_cli.service_is_ready(), 60, "the sim and its reset service")
    first = c.episodes[-1]
    c.pub_pos.publish(Float64MultiArray(data=(c.position() + 0.3).tolist()))
    c.spin_until(lambda: np.abs(c.js[-1].velocity).max() > 0.05, 30, "motion")
    t_before = c.sim_time()
    fut = c.reset_cli.call_async(Trigger.Request())
    c.spin_until(fut.done, 30, "the reset response")
    res = fut.result()
    assert res.success
    info = json.loads(res.message)
    assert info["episode"] == 1 and info["goal"] != first["goal"]
    c.spin_until(lambda: c.episodes[-1]["episode"] == 1, 30, "the new episode on ~/episode")
    c.spin_until(lambda: c.sim_time() > info["start_time"] + 0.2, 30, "sim time after reset")
    assert c.sim_time() > t_before  # /clock never goes back

    # unknown joint: rejected, the node survives
    bad = JointTrajectory(joint_names=["shoulder_pan_joint", "gripper_joint"])
    bad.points = [JointTrajectoryPoint(positions=[0.1, 0.1], time_from_start=duration_msg(0.5))]
    c.pub_traj.publish(bad)
    n0 = len(c.js)
    c.spin_until(lambda: len(c.js) > n0 + 50, 30, "joint states after a bad trajectory")
    assert proc.alive()
    assert "gripper_joint" in proc.output()


class PickPlaceClient(Client):
    """The client, plus the pick-and-place topics: object position, gripper commands, status."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.objects, self.status = [], []
        n = self.node
        n.create_subscription(Float64MultiArray, "/object/position", self.objects.append, 50)
        n.create_subscription(String, "/sim_node/status", lambda m: self.status.append(json.loads(m.data)), 10)
        self.pub_grip = n.create_publisher(Float64MultiArray, "/gripper_controller/commands", 10)
        self.pub_grip_traj = n.create_publisher(JointTrajectory, "/gripper_controller/joint_trajectory", 10)

    def gripper(self):
        m = self.js[-1]
        return m.position[list(m.name).index(GRIPPER_JOINT)]

    def wait_gripper(self, target, tol=0.003, timeout=30.0, what="the gripper to reach its target"):
        self.spin_until(lambda: self.js and abs(self.gripper() - target) < tol, timeout, what)


def test_pick_place_variant(spawn, ros_context):
    """variant pick_place: the gripper joint in /joint_states, the object position as a Float64MultiArray
    (a perception node's output), gripper commands on their own topics, the task's status."""
    proc = spawn(SIM + ["-p", "variant:=pick_place", "-p", "real_time_factor:=2.0"], name="sim")
    c = PickPlaceClient(ros_context)
    try:
        c.spin_until(lambda: len(c.js) >= 20 and len(c.objects) >= 3 and c.episodes and c.status and c.images,
                     60, "joint_states, object position, status, images and episode info")
        m = c.js[-1]
        assert list(m.name) == JOINT_NAMES + [GRIPPER_JOINT]
        assert len(m.position) == len(m.velocity) == len(m.effort) == 5
        assert abs(c.gripper() - GRIPPER_OPEN) < 0.002  # every episode starts open
        ep = c.episodes[-1]
        assert ep["variant"] == "pick_place" and set(ep["bins"]) == {"left", "right"}
        obj = np.array(c.objects[-1].data)
        assert obj.shape == (3,) and np.allclose(obj[:2], ep["object_xy"], atol=1e-3) and 0.0 < obj[2] < 0.05
        st = c.status[-1]
        assert st["variant"] == "pick_place" and st["success"] is False and st["dropped"] is False
        assert {"grasped", "bin", "released", "distance"} <= set(st)

        # the gripper on its own topic: one value in metres, applied at once (the arm holds)
        arm = c.position()
        c.pub_grip.publish(Float64MultiArray(data=[0.01]))
        c.wait_gripper(0.01)
        assert np.max(np.abs(c.position() - arm)) < 0.02
        # a wrong-sized or NaN gripper command is ignored, with a message naming the topic
        c.pub_grip.publish(Float64MultiArray(data=[0.03, 0.03]))
        c.pub_grip.publish(Float64MultiArray(data=[float("nan")]))
        n0 = len(c.js)
        c.spin_until(lambda: len(c.js) > n0 + 30, 30, "joint states after bad gripper commands")
        assert abs(c.gripper() - 0.01) < 0.003 and proc.alive()
        assert "/gripper_controller/commands" in proc.output()

        # JointTrajectory for the gripper joint, interpolated in sim time
        traj = JointTrajectory(joint_names=[GRIPPER_JOINT])
        traj.points = [JointTrajectoryPoint(positions=[GRIPPER_OPEN], time_from_start=duration_msg(1.0))]
        t_sent = c.sim_time()
        c.pub_grip_traj.publish(traj)
        c.spin_until(lambda: c.sim_time() > t_sent + 0.4, 30, "sim time to pass")
        assert 0.013 < c.gripper() < GRIPPER_OPEN - 0.005  # on its way
        c.wait_gripper(GRIPPER_OPEN)

        # the arm's trajectory topic takes the gripper joint too (one controller for all five joints)
        goal = arm + np.array([0.2, 0.0, 0.0, 0.0])
        both = JointTrajectory(joint_names=[GRIPPER_JOINT, JOINT_NAMES[0]])
        both.points = [JointTrajectoryPoint(positions=[0.02, goal[0]], time_from_start=duration_msg(0.5))]
        c.pub_traj.publish(both)
        c.wait_position(goal, 0.03, what="the arm joint of a mixed trajectory")
        c.wait_gripper(0.02)
    finally:
        c.close()
