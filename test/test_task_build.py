"""Rosbags -> dataset for tasks beyond "joints in, joint targets out": grippers, perception vectors, vector
and gripper commands, end-effector poses, wrenches and twists; and every bad input of those types."""

import math

import numpy as np
import pytest

from genil_ros.config import config_from_dict
from genil_ros.data.bags import DataWarning
from genil_ros.data.build import build_dataset
from genil_ros.data.rotations import (
    matrix_from_rot6d,
    matrix_to_quat,
    normalize_quat,
    quat_to_matrix,
    quat_to_rot6d,
    rot6d_to_quat,
)
from genil_ros.data.synthetic import (
    BagFile,
    command_vector,
    gripper_value,
    joint_value,
    object_value,
    write_task_bag,
)
from genil_ros.errors import DataError

JOINTS = ["j0", "j1", "j2"]
OPEN, CLOSED = 0.04, 0.0


def pick_task(**over):
    """Arm joints + gripper finger + a perceived object in; a 2-value vector command + a binary gripper out."""
    t = {"observations": [{"name": "arm", "type": "joint_position", "joints": JOINTS},
                          {"name": "gripper", "type": "gripper", "joints": ["finger_joint"]},
                          {"name": "object", "type": "vector", "topic": "/object/position", "dims": ["x", "y", "z"]}],
         "actions": [{"name": "arm", "type": "vector", "topic": "/arm/commands", "dims": ["u0", "u1"]},
                     {"name": "gripper", "type": "gripper", "topic": "/gripper/command", "joints": ["finger_joint"],
                      "binary": True, "open_position": OPEN, "closed_position": CLOSED}],
         "control_rate_hz": 10.0}
    t.update(over)
    return t


def cfg_of(task, **dataset):
    return config_from_dict({"task": task, "dataset": dataset}, source="task.yaml")


def build(tmp_path, bag, task, name="ds", **dataset):
    return build_dataset(cfg_of(task, **dataset), [bag], tmp_path / name, progress=False)


def expect(tmp_path, bag, task, match, **dataset):
    with pytest.raises(DataError, match=match) as ei:
        build(tmp_path, bag, task, **dataset)
    msg = str(ei.value)
    assert str(bag) in msg and "\n" not in msg
    assert not (tmp_path / "ds").exists()
    return msg


# --------------------------------------------------------------------------- rotations


def test_rotation_helpers_round_trip_and_gram_schmidt():
    rng = np.random.default_rng(0)
    q, ok = normalize_quat(rng.normal(size=(200, 4)), tolerance=np.inf)
    assert ok.all()
    m = quat_to_matrix(q)
    np.testing.assert_allclose(m @ np.swapaxes(m, -1, -2), np.broadcast_to(np.eye(3), m.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=1e-12)
    back = matrix_to_quat(m)
    np.testing.assert_allclose(np.abs(np.sum(back * q, -1)), 1.0, atol=1e-12)  # same rotation, either sign
    r6 = quat_to_rot6d(q)
    np.testing.assert_allclose(r6, np.concatenate([m[..., :, 0], m[..., :, 1]], -1))
    # Gram-Schmidt: a scaled, slightly skewed 6-D vector is still the same rotation
    noisy = r6 * 3.0 + np.concatenate([np.zeros((200, 3)), 0.01 * r6[:, :3]], -1)
    np.testing.assert_allclose(matrix_from_rot6d(noisy), m, atol=1e-9)
    np.testing.assert_allclose(np.abs(np.sum(rot6d_to_quat(noisy) * q, -1)), 1.0, atol=1e-9)
    with pytest.raises(ValueError, match="parallel"):
        matrix_from_rot6d(np.r_[1.0, 0, 0, 2.0, 0, 0])
    # near-unit quaternions are normalised, others refused
    unit, ok = normalize_quat([[0, 0, 0, 1.005], [0, 0, 0, 0], [0, 0, 0, 1.2], [np.nan, 0, 0, 1]])
    assert ok.tolist() == [True, False, False, False]
    np.testing.assert_allclose(unit[0], [0, 0, 0, 1])


# --------------------------------------------------------------------------- the pick task


def _object_at_tick(t, start=1000.0, rate=15.0):
    return object_value(start + math.floor((t - start) * rate + 1e-6) / rate)


@pytest.mark.parametrize("gripper_msg", ["multiarray", "gripper_command"])
def test_gripper_vector_observation_and_vector_command(tmp_path, gripper_msg):
    bag = write_task_bag(tmp_path / "bag", gripper_msg=gripper_msg)
    store = build(tmp_path, bag, pick_task())
    assert store.meta["episode_lengths"] == [31]
    assert store.layout.state_dim == 3 + 1 + 3 and store.layout.action_dim == 2 + 1
    assert store.layout.action_entry("gripper").mode == "binary"
    ep = store.episode(0)
    ticks = 1000.0 + np.arange(31) * 0.1
    np.testing.assert_allclose(ep["obs.arm"], [[joint_value(t, j) for j in range(3)] for t in ticks], atol=1e-6)
    np.testing.assert_allclose(ep["obs.gripper"][:, 0], [gripper_value(t) for t in ticks], atol=1e-7)
    np.testing.assert_allclose(ep["obs.object"], [_object_at_tick(t) for t in ticks], atol=1e-6)
    # the command in force just before the next tick: the one published at the tick
    np.testing.assert_allclose(ep["act.arm"], [command_vector(t, 2) for t in ticks], atol=1e-6)
    closed = np.array([gripper_value(t + 0.1) < 0.02 for t in ticks], np.float32)
    assert 0 < closed.sum() < 31
    np.testing.assert_array_equal(ep["act.gripper"][:, 0], closed)
    np.testing.assert_allclose(ep["state"], np.concatenate([ep["obs.arm"], ep["obs.gripper"], ep["obs.object"]], 1))
    st = store.stats()
    assert st["act.gripper"]["min"][0] == 0 and st["act.gripper"]["max"][0] == 1
    assert store.meta["topics"]["actions"] == {"arm": "/arm/commands", "gripper": "/gripper/command"}


def test_next_observation_and_delta_actions(tmp_path):
    bag = write_task_bag(tmp_path / "bag")
    task = pick_task(actions=[
        {"name": "arm", "type": "joint_position", "joints": ["j2", "j0"], "source": "next_observation",
         "observation": "arm", "mode": "delta"},
        {"name": "gripper", "type": "gripper", "joints": ["finger_joint"], "source": "next_observation",
         "observation": "gripper", "binary": True, "open_position": OPEN, "closed_position": CLOSED}])
    store = build(tmp_path, bag, task)
    assert store.meta["episode_lengths"] == [30]  # the last tick has no next observation
    ep = store.episode(0)
    ticks = 1000.0 + np.arange(30) * 0.1
    q = np.array([[joint_value(t, j) for j in (2, 0)] for t in ticks])
    q_next = np.array([[joint_value(t + 0.1, j) for j in (2, 0)] for t in ticks])
    np.testing.assert_allclose(ep["act.arm"], q_next - q, atol=1e-6)
    np.testing.assert_array_equal(ep["act.gripper"][:, 0], [gripper_value(t + 0.1) < 0.02 for t in ticks])
    assert store.layout.action_entry("arm").mode == "delta"


def _pose_bag(path, quat=None, frame="base", n=40, nan_at=(), fx=None):
    """20 Hz joint states, EE pose (rotation about z by 0.3 t) and wrench; 10 Hz twist commands."""
    with BagFile(path) as b:
        for k in range(n):
            t_ns = int(1e9) * 1000 + k * 50_000_000
            t = t_ns / 1e9
            b.joint_state("/joint_states", t_ns, t_ns, JOINTS, [joint_value(t, j) for j in range(3)])
            th = 0.3 * t
            q = quat(k) if quat else (0.0, 0.0, math.sin(th / 2), math.cos(th / 2))
            b.pose("/tcp_pose", t_ns, t_ns, [0.1 * t - 100, 0.2, 0.3], q, frame_id=frame)
            f = fx(k) if fx else 1.0 + k
            b.wrench("/ft", t_ns, t_ns, [f, 0, float("nan") if k in nan_at else -9.8], [0, 0.1, 0], frame_id="tool0")
            if k % 2 == 0:
                b.twist("/servo/twist", t_ns, t_ns, [0.01 * k, 0, 0], [0, 0, 0.3], frame_id="base")
    return path


SERVO = {"observations": [{"name": "ee", "type": "pose", "topic": "/tcp_pose", "frame_id": "base"},
                          {"name": "ft", "type": "wrench", "topic": "/ft", "frame_id": "tool0"},
                          {"name": "arm", "type": "joint_position", "joints": JOINTS}],
         "actions": [{"name": "servo", "type": "twist", "topic": "/servo/twist", "frame_id": "base"}],
         "control_rate_hz": 10.0}


def test_pose_wrench_and_twist(tmp_path):
    store = build(tmp_path, _pose_bag(tmp_path / "bag"), SERVO)
    ep = store.episode(0)
    assert store.meta["episode_lengths"] == [20] and store.layout.state_dim == 9 + 6 + 3
    ticks = 1000.0 + np.arange(20) * 0.1
    th = 0.3 * ticks
    np.testing.assert_allclose(ep["obs.ee"][:, :3], np.c_[0.1 * ticks - 100, np.full(20, 0.2), np.full(20, 0.3)],
                               atol=1e-4)
    r6 = np.c_[np.cos(th), np.sin(th), np.zeros(20), -np.sin(th), np.cos(th), np.zeros(20)]
    np.testing.assert_allclose(ep["obs.ee"][:, 3:], r6, atol=1e-6)
    np.testing.assert_allclose(ep["obs.ft"][:, [0, 2, 4]], np.c_[1.0 + 2 * np.arange(20), np.full(20, -9.8),
                                                                 np.full(20, 0.1)], atol=1e-5)
    np.testing.assert_allclose(ep["act.servo"][:, 0], 0.02 * np.arange(20), atol=1e-6)
    np.testing.assert_allclose(ep["act.servo"][:, 5], 0.3, atol=1e-7)


def test_near_unit_quaternion_is_normalised(tmp_path):
    store = build(tmp_path, _pose_bag(tmp_path / "bag", quat=lambda k: (0.0, 0.0, 0.0, 1.004)), SERVO)
    np.testing.assert_allclose(store.episode(0)["obs.ee"][:, 3:], [[1, 0, 0, 0, 1, 0]] * 20, atol=1e-6)


# --------------------------------------------------------------------------- bad input, each named


def test_missing_field_is_named(tmp_path):
    bag = write_task_bag(tmp_path / "bag")  # JointState without efforts
    task = pick_task()
    task["observations"].append({"name": "torques", "type": "joint_effort", "joints": JOINTS})
    msg = expect(tmp_path, bag, task, r"bag: /joint_states: message at t = 1000\.000 s: JointState has no effort "
                                      r"values but observation 'torques' \(joint_effort\) needs them")
    assert "task.observations[3]" in msg


def test_wrong_frame_id_is_named(tmp_path):
    bag = _pose_bag(tmp_path / "bag", frame="world")
    expect(tmp_path, bag, SERVO, r"bag: /tcp_pose: message at t = 1000\.000 s: frame_id is 'world', the config says "
                                 r"'base' \(observation 'ee', task.observations\[0\].frame_id\)")


def test_non_unit_quaternion_is_refused_naming_time(tmp_path):
    bag = _pose_bag(tmp_path / "bag", quat=lambda k: (0.0, 0.0, 0.0, 0.0) if k == 7 else (0.0, 0.0, 0.0, 1.0))
    expect(tmp_path, bag, SERVO, r"bag: /tcp_pose: message at t = 1000\.350 s: orientation \(x, y, z, w\) = "
                                 r"\(0, 0, 0, 0\) is not a unit quaternion \(norm 0\.0000.*\(observation 'ee'")


def test_nan_gripper_value_is_an_error_or_a_cut(tmp_path):
    def nan_finger(bag, kind, k, t_ns):
        if kind == "js" and 40 <= k < 45:
            names = JOINTS + ["finger_joint"]
            bag.joint_state("/joint_states", t_ns, t_ns, names, [0.0, 0.0, 0.0, float("nan")])
            return True
        return False

    bag = write_task_bag(tmp_path / "bag", edit=nan_finger)
    expect(tmp_path, bag, pick_task(), r"bag: /joint_states: non-finite value: position of joint finger_joint is nan "
                                       r"at t = 1000\.800 s \(message 40\), 5 message\(s\) in all")
    with pytest.warns(DataWarning, match=r"/joint_states: 5 message\(s\) with non-finite values \(joints "
                                         r"\['finger_joint'\]\)"):
        store = build(tmp_path, bag, pick_task(), nonfinite="cut")
    assert store.meta["episode_lengths"] == [8, 22]  # tick 1000.8 holds a NaN finger (1000.9 a good one)
    assert all(np.isfinite(v).all() for d in store.stats().values() for v in d.values())


def test_nan_in_a_wrench_and_a_gripper_command(tmp_path):
    bag = _pose_bag(tmp_path / "bag", nan_at=(9,))
    expect(tmp_path, bag, SERVO, r"bag: /ft: non-finite value: fz of observation 'ft' is nan at t = 1000\.450 s")

    def nan_cmd(bag, kind, k, t_ns):
        if kind == "grip" and k == 3:
            bag.multiarray("/gripper/command", t_ns, [float("inf")])
            return True
        return False

    bag = write_task_bag(tmp_path / "bag2", edit=nan_cmd)
    expect(tmp_path, bag, pick_task(), r"bag2: /gripper/command: non-finite value: command for joint finger_joint is "
                                       r"inf at t = 1000\.300 s")


def test_vectors_of_the_wrong_length_are_named(tmp_path):
    bag = write_task_bag(tmp_path / "bag", command_dims=3)
    expect(tmp_path, bag, pick_task(), r"bag: /arm/commands: message received at t = 1000\.000 s: "
                                       r"Float64MultiArray has 3 values, expected 2 \(dims "
                                       r"\['u0', 'u1'\]\) \(action 'arm', task.actions\[0\].dims\)")

    def short_object(bag, kind, k, t_ns):
        if kind == "obj" and k == 4:
            bag.multiarray("/object/position", t_ns, [0.1, 0.2])
            return True
        return False

    bag = write_task_bag(tmp_path / "bag2", edit=short_object)
    expect(tmp_path, bag, pick_task(), r"bag2: /object/position: message received at t = 1000\.267 s: "
                                       r"Float64MultiArray has 2 values, expected 3 .*"
                                       r"\(observation 'object', task.observations\[2\].dims\)")
    bag = write_task_bag(tmp_path / "bag3", finger="left_finger")
    expect(tmp_path, bag, pick_task(), r"bag3: /joint_states: JointState is missing joint\(s\) \['finger_joint'\].*"
                                       r"observation 'gripper'")


def test_wrong_message_type_for_an_entry(tmp_path):
    bag = _pose_bag(tmp_path / "bag")
    task = dict(SERVO, actions=[{"name": "servo", "type": "vector", "topic": "/servo/twist", "dims": list("abcdef")}])
    expect(tmp_path, bag, task, r"bag: /servo/twist: unsupported message type geometry_msgs/TwistStamped for action "
                                r"'servo' \(expected std_msgs/Float64MultiArray\)")


@pytest.mark.parametrize("name", ["real_arm_task.yaml", "franka_fr3_task.yaml", "servo_twist_task.yaml"])
def test_example_robot_configs_pass_check_config(name, capsys):
    import yaml

    from genil_ros.cli import main as cli_main
    from genil_ros.config import config_from_dict, load_config
    from genil_ros.paths import config_path

    assert cli_main(["check-config", name]) == 0
    dumped = capsys.readouterr().out
    task = load_config(config_path(name)).task
    again = config_from_dict(yaml.safe_load(dumped), source="dumped").task  # the form a checkpoint keeps
    assert again.layout.first_difference(task.layout) is None
    types = {e.type for e in task.layout.action}
    assert {"real_arm_task.yaml": {"joint_position", "gripper"}, "franka_fr3_task.yaml": {"joint_position", "gripper"},
            "servo_twist_task.yaml": {"twist"}}[name] == types
