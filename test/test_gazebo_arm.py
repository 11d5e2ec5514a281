"""The Gazebo twin of the bundled arm (config/gazebo/, config/gazebo_*.yaml): the xacro -> URDF arm has the
bundled MuJoCo arm's joints, limits, kinematics and camera pose, and its ros2_control joints, controllers,
camera bridge, policy params and world agree with each other. Static: no Gazebo needed."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from test_launch import CONFIG, load_yaml, node_params

GZ_XACRO = CONFIG / "gazebo" / "genil_arm.urdf.xacro"
GZ_WORLD = CONFIG / "gazebo" / "genil_arm_world.sdf"
GZ_POLICY = CONFIG / "gazebo" / "policy_node.yaml"
GZ_BRIDGE = CONFIG / "gazebo_bridge.yaml"
GZ_CONTROLLERS = CONFIG / "gazebo_controllers.yaml"


@pytest.fixture(scope="module")
def urdf():
    xacro = pytest.importorskip("xacro", reason="xacro (setup.py dev extra) is needed to expand the Gazebo URDF")
    doc = xacro.process_file(str(GZ_XACRO), mappings={"controllers_file": str(GZ_CONTROLLERS)})
    return doc.toxml()


def _joints(root):
    return [j for j in root.findall("joint") if j.get("type") != "fixed"]


def test_gazebo_arm_matches_the_bundled_sim(urdf):
    from genil_ros.sim.env import JOINT_LIMITS, JOINT_NAMES

    root = ET.fromstring(urdf)
    joints = _joints(root)
    assert [j.get("name") for j in joints] == JOINT_NAMES
    for j, lo, hi in zip(joints, *JOINT_LIMITS):
        lim = j.find("limit")
        assert (float(lim.get("lower")), float(lim.get("upper"))) == (lo, hi), \
            f"{j.get('name')}: limits differ from the sim"
    gz = node_params(GZ_POLICY, "policy_node")
    assert np.allclose(gz["joint_lower_limits"], JOINT_LIMITS[0])
    assert np.allclose(gz["joint_upper_limits"], JOINT_LIMITS[1])


def test_gazebo_arm_kinematics_and_camera_equal_the_mujoco_arm(urdf):
    """Load the expanded URDF in MuJoCo: the hand frame and the camera agree with assets/arm.xml."""
    mujoco = pytest.importorskip("mujoco")
    from genil_ros.sim.env import ASSET_PATH, CAMERA_NAME, JOINT_LIMITS, JOINT_NAMES

    u = mujoco.MjModel.from_xml_string(urdf)  # MuJoCo ignores the ros2_control / gazebo tags
    a = mujoco.MjModel.from_xml_path(str(ASSET_PATH))
    du, da = mujoco.MjData(u), mujoco.MjData(a)
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.uniform(JOINT_LIMITS[0], JOINT_LIMITS[1])
        for name, v in zip(JOINT_NAMES, q):
            du.qpos[u.jnt_qposadr[u.joint(name).id]] = v
            da.qpos[a.jnt_qposadr[a.joint(name).id]] = v
        mujoco.mj_kinematics(u, du)
        mujoco.mj_kinematics(a, da)
        np.testing.assert_allclose(du.xpos[u.body("hand_link").id], da.xpos[a.body("hand").id], atol=1e-6)
        np.testing.assert_allclose(du.xmat[u.body("hand_link").id], da.xmat[a.body("hand").id], atol=1e-6)

    # the camera: a fixed joint world -> camera_link; gz cameras look along +x, MuJoCo's along -z
    cam = next(j for j in ET.fromstring(urdf).findall("joint") if j.find("child").get("link") == "camera_link")
    xyz = np.array(cam.find("origin").get("xyz").split(), float)
    r, p, y = np.array(cam.find("origin").get("rpy").split(), float)
    gz_forward = np.array([math.cos(y) * math.cos(p), math.sin(y) * math.cos(p), -math.sin(p)])
    mujoco.mj_forward(a, da)  # camera frames (targetbody mode) are computed by mj_camlight
    mj_cam = a.camera(CAMERA_NAME).id
    np.testing.assert_allclose(xyz, da.cam_xpos[mj_cam], atol=1e-3)
    mj_forward = -da.cam_xmat[mj_cam].reshape(3, 3)[:, 2]
    assert np.degrees(np.arccos(np.clip(gz_forward @ mj_forward, -1, 1))) < 0.5
    assert r == 0.0  # no roll: image "up" is world up, as MuJoCo's targetbody camera
    sensor = ET.fromstring(urdf).find(".//gazebo[@reference='camera_link']/sensor/camera/horizontal_fov")
    assert abs(float(sensor.text) - math.radians(a.cam_fovy[mj_cam])) < 1e-3  # square image: h fov = v fov


def test_gazebo_ros2_control_controllers_bridge_and_policy_agree(urdf):
    root = ET.fromstring(urdf)
    joint_names = [j.get("name") for j in _joints(root)]
    rc = root.find("ros2_control")
    assert rc.find("hardware/plugin").text.strip() == "gz_ros2_control/GazeboSimSystem"
    assert [j.get("name") for j in rc.findall("joint")] == joint_names
    for j in rc.findall("joint"):
        assert [c.get("name") for c in j.findall("command_interface")] == ["position"]
        assert [s.get("name") for s in j.findall("state_interface")] == ["position", "velocity"]
    plugin = root.find("gazebo/plugin")
    assert plugin.get("filename") == "gz_ros2_control-system"
    assert plugin.find("parameters").text.strip() == str(GZ_CONTROLLERS)

    ctrl = load_yaml(GZ_CONTROLLERS)
    for c in ("joint_trajectory_controller", "forward_position_controller"):
        assert ctrl[c]["ros__parameters"]["joints"] == joint_names, f"{GZ_CONTROLLERS.name}: {c}.joints"
    assert ctrl["joint_trajectory_controller"]["ros__parameters"]["command_interfaces"] == ["position"]
    assert ctrl["forward_position_controller"]["ros__parameters"]["interface_name"] == "position"

    bridge = load_yaml(GZ_BRIDGE)
    assert isinstance(bridge, list)
    for e in bridge:
        assert set(e) == {"ros_topic_name", "gz_topic_name", "ros_type_name", "gz_type_name", "direction"}, e
        assert e["direction"] in ("GZ_TO_ROS", "ROS_TO_GZ", "BIDIRECTIONAL")
    by_type = {e["ros_type_name"]: e for e in bridge}
    clock = by_type["rosgraph_msgs/msg/Clock"]
    assert (clock["ros_topic_name"], clock["gz_type_name"], clock["direction"]) == \
        ("/clock", "gz.msgs.Clock", "GZ_TO_ROS")
    image = by_type["sensor_msgs/msg/Image"]
    assert (image["gz_type_name"], image["direction"]) == ("gz.msgs.Image", "GZ_TO_ROS")
    sensor = root.find(".//gazebo[@reference='camera_link']/sensor")
    assert sensor.get("type") == "camera"
    assert sensor.find("topic").text.strip() == image["gz_topic_name"], "camera sensor topic is not the bridged one"
    info = by_type["sensor_msgs/msg/CameraInfo"]
    assert info["gz_topic_name"] == image["gz_topic_name"].rsplit("/", 1)[0] + "/camera_info"
    img = sensor.find("camera/image")
    assert (img.find("width").text, img.find("height").text) == ("96", "96")

    gz = node_params(GZ_POLICY, "policy_node")
    assert gz["camera_topics"] == [image["ros_topic_name"]]
    assert gz["use_sim_time"] is True
    assert gz["trajectory_topic"] == "/joint_trajectory_controller/joint_trajectory"
    assert gz["position_topic"] == "/forward_position_controller/commands"


def test_gazebo_world_has_the_systems_the_demo_needs():
    world = ET.parse(GZ_WORLD).getroot().find("world")
    systems = {p.get("name") for p in world.findall("plugin")}
    # `create` needs UserCommands, the camera Sensors
    for s in ("Physics", "UserCommands", "SceneBroadcaster", "Sensors"):
        assert f"gz::sim::systems::{s}" in systems, f"{GZ_WORLD.name}: no {s} system"
    models = {m.get("name") for m in world.findall("model")}
    assert {"ground_plane", "table", "target", "post"} <= models
