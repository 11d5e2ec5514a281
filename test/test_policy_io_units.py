"""The policy node's inputs and outputs without DDS: rotations, the per-topic rings and the lazy, per-entry
sampling at the control tick, the safety filter of every action type, the per-entry parameters and how
inputs / outputs are resolved, and the message conversions of every observation and command type.

All but the conversion tests are ROS-free (test_policy_node_units.py::test_runs_without_rclpy runs them
again in a Python without rclpy)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from genil_ros.control import (
    GripperFilter,
    InputEntry,
    JointFilter,
    PoseFilter,
    TopicRing,
    TwistFilter,
    VectorFilter,
    sample_inputs,
)
from genil_ros.data.rotations import (
    matrix_from_rot6d,
    matrix_to_quat,
    quat_to_matrix,
    quat_to_rot6d,
    rot6d_from_matrix,
    rot6d_to_quat,
    rotation_angle,
    slerp_matrix,
)
from genil_ros.errors import DataError, GenilError
from genil_ros.policy.chunk_model import ModelSpec
from genil_ros.ros.policy_entries import check_entry_parameter, resolve_io
from genil_ros.ros.policy_params import PolicySettings
from genil_ros.schema import ActionEntry, ObservationEntry

MS = 1_000_000


@pytest.fixture
def cv():
    """genil_ros.ros.conversions, which needs the ROS message packages."""
    pytest.importorskip("rclpy")
    pytest.importorskip("geometry_msgs.msg")
    from genil_ros.ros import conversions

    return conversions


# --------------------------------------------------------------------------- rotations


def test_rotations_round_trip_and_gram_schmidt():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(200, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 3] < 0] *= -1
    m = quat_to_matrix(q)
    assert np.allclose(m @ np.swapaxes(m, -1, -2), np.eye(3), atol=1e-12) and np.allclose(np.linalg.det(m), 1)
    assert np.allclose(matrix_to_quat(m), q, atol=1e-12)
    assert np.allclose(rot6d_to_quat(quat_to_rot6d(q)), q, atol=1e-12)
    for axis in np.eye(3):  # 180 degree turns: w = 0, the hard case for the trace formula
        assert np.allclose(matrix_to_quat(quat_to_matrix(np.r_[axis, 0.0])), np.r_[axis, 0.0])
    # a predicted 6-D rotation need not be orthonormal: Gram-Schmidt gives the nearest valid one
    noisy = rot6d_from_matrix(m[0]) + np.array([0.1, -0.05, 0.0, 0.02, 0.1, -0.1])
    r = matrix_from_rot6d(noisy * 3.0)
    assert np.allclose(r @ r.T, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(r), 1.0)
    with pytest.raises(ValueError, match="parallel"):
        matrix_from_rot6d([1, 0, 0, 2, 0, 0])
    with pytest.raises(ValueError, match="zero"):
        matrix_from_rot6d([0, 0, 0, 0, 1, 0])
    half = slerp_matrix(m[0], m[1], 0.5)
    assert np.isclose(rotation_angle(m[0], half), rotation_angle(m[0], m[1]) / 2)


# --------------------------------------------------------------------------- rings and sampling


class Counting:
    """A decoder that counts its calls (the lazy decoding is the point of these tests)."""

    def __init__(self, fail_on=()):
        self.calls = 0
        self.fail_on = set(fail_on)

    def __call__(self, msg):
        self.calls += 1
        if msg in self.fail_on:
            raise DataError(f"observation 'x' (/t): message {msg} is bad")
        return np.array([float(msg)], np.float32)


def test_ring_samples_by_header_stamp_and_decodes_only_what_the_tick_uses():
    ring = TopicRing("/joint_states")
    dec = Counting()
    entry = InputEntry("joints", "/joint_states", ring, dec, slice(0, 1))
    for i in range(1000):  # a 1 kHz flood: 1000 messages, one append each, nothing decoded
        ring.add(i * MS, i * MS, i)
    assert dec.calls == 0 and ring.received == 1000 and len(ring) == 256
    ages: dict = {}
    s, why = sample_inputs([entry], 0, 800 * MS, 0, 0.5, ages)
    assert why is None and s.state.tolist() == [800.0] and dec.calls == 1  # newest stamped <= the tick
    s, _ = sample_inputs([entry], 1, 999 * MS, 0, 0.5, ages)
    assert s.state.tolist() == [999.0] and dec.calls == 2 and ages == {"joints": 0.0}
    s, _ = sample_inputs([entry], 2, 1099 * MS, 0, 0.5, ages)  # nothing new: the cached value, no decode
    assert s.state.tolist() == [999.0] and dec.calls == 2 and ages["joints"] == pytest.approx(0.1)
    assert ring.decoded == dec.calls
    late = TopicRing("/late")
    late.add(300 * MS, 0, 3)
    late.add(100 * MS, 0, 1)  # arrives late with an older stamp
    e2 = InputEntry("late", "/late", late, Counting(), slice(0, 1))
    assert sample_inputs([e2], 0, 250 * MS, 0, 1.0, ages)[0].state.tolist() == [1.0]
    assert sample_inputs([e2], 0, 260 * MS, 50 * MS, 1.0, ages)[0].state.tolist() == [3.0]  # within tolerance


def test_sample_inputs_says_which_entry_and_why():
    js, cam = TopicRing("/joint_states"), TopicRing("/cam", maxlen=8)
    img = lambda m: np.full((2, 2, 3), m, np.uint8)  # noqa: E731
    entries = [InputEntry("joints", "/joint_states", js, Counting(), slice(0, 1)),
               InputEntry("front", "/cam", cam, img)]
    ages: dict = {}
    assert sample_inputs(entries, 0, 1000 * MS, 0, 0.5, ages) == (
        None, "observation 'joints' (/joint_states): no message received yet")
    js.add(900 * MS, 0, 9)
    cam.add(400 * MS, 0, 4)
    assert sample_inputs(entries, 0, 1000 * MS, 0, 0.5, ages)[1] == \
        "observation 'front' (/cam): newest message is 0.60 s old (max_staleness_s 0.5)"
    cam.add(950 * MS, 0, 7)
    s, why = sample_inputs(entries, 3, 1000 * MS, 0, 0.5, ages)
    assert why is None and s.tick == 3 and s.images["front"][0, 0, 0] == 7 and s.oldest_stamp_ns == 900 * MS
    ahead = TopicRing("/ahead")
    ahead.add(5000 * MS, 0, 1)
    _, why = sample_inputs([InputEntry("a", "/ahead", ahead, Counting(), slice(0, 1))], 0, 1000 * MS, 0, 0.5, ages)
    assert why == "observation 'a' (/ahead): stamps are 4.00 s ahead of this node's clock (use_sim_time set on " \
                  "one side only?)"


def test_a_bad_newest_message_falls_back_to_a_fresh_good_one_and_is_counted_once():
    ring = TopicRing("/t")
    dec = Counting(fail_on={3, 4})
    e = InputEntry("x", "/t", ring, dec, slice(0, 1))
    for i in (1, 2, 3):
        ring.add(i * 100 * MS, 0, i)
    ages: dict = {}
    s, _ = sample_inputs([e], 0, 350 * MS, 0, 0.5, ages)
    assert s.state.tolist() == [2.0] and ring.rejected == 1  # 3 is bad: the older, still fresh 2 is used
    sample_inputs([e], 1, 360 * MS, 0, 0.5, ages)
    assert ring.rejected == 1 and dec.calls == 2  # each message decoded once, rejected once
    ring.add(400 * MS, 0, 4)
    _, why = sample_inputs([e], 2, 900 * MS, 0, 0.5, ages)  # 2 is stale now, 3 and 4 are bad
    assert why == "observation 'x' (/t): message 4 is bad" and ring.rejected == 2


def test_entries_sharing_a_topic_each_take_the_newest_message_they_can_use():
    """Arm and gripper joint states published separately on one topic: one ring, each entry finds its own."""
    ring = TopicRing("/joint_states")

    def joint(name):
        def decode(msg):
            if name not in msg:
                raise DataError(f"missing joint {name}")
            return np.array([msg[name]], np.float32)
        return decode

    arm = InputEntry("arm", "/joint_states", ring, joint("a"), slice(0, 1))
    grip = InputEntry("gripper", "/joint_states", ring, joint("f"), slice(1, 2))
    ring.add(100 * MS, 0, {"f": 0.04})
    for i in range(5):
        ring.add((101 + i) * MS, 0, {"a": float(i)})
    s, why = sample_inputs([arm, grip], 0, 110 * MS, 0, 0.5, {})
    assert why is None and s.state.tolist() == pytest.approx([4.0, 0.04])


# --------------------------------------------------------------------------- safety filters


def test_joint_filter_limits_steps_and_delta():
    f = JointFilter("arm", ["a", "b"], [-1, -1], [1, 0.5], max_step=0.1)
    out = f.apply(np.array([[5.0, 5.0], [5.0, -5.0]]), prev=np.array([0.0, 0.45]), measured=None)
    assert np.allclose(out, [[0.1, 0.5], [0.2, 0.4]]) and f.clamped == 1
    first = JointFilter("arm", ["a"], max_step=0.1).apply(np.array([[1.0]]), None, measured=np.array([0.0]))
    assert np.allclose(first, [[0.1]])  # the first command steps from the measured position
    assert np.allclose(JointFilter("arm", ["a"], None, None, 0).apply(np.array([[7.0]]), np.array([0.0]), None),
                       [[7.0]])
    d = JointFilter("arm", ["a", "b"], max_step=0.0, delta=True)
    assert np.allclose(d.apply(np.array([[0.1, 0.0], [0.1, -0.2]]), None, np.array([1.0, 2.0])),
                       [[1.1, 2.0], [1.2, 1.8]])  # targets = measured + cumulative deltas
    assert d.clamped == 0
    with pytest.raises(GenilError, match=r"parameter joint_lower_limits: has 1 values but there are 2"):
        JointFilter("arm", ["a", "b"], [0.0], None, key="joint_")
    with pytest.raises(GenilError, match=r"actions.arm.lower_limits / actions.arm.upper_limits: lower > upper "
                                         r"for \['b'\]"):
        JointFilter("arm", ["a", "b"], [0, 2], [1, 1], key="actions.arm.")


def test_gripper_filter_binary_range_and_rate():
    g = GripperFilter("grip", ["f"], binary=True, open_position=0.04, closed_position=0.0, period_s=0.1)
    assert np.allclose(g.apply(np.array([[0.2], [0.7], [0.5], [0.49]]), None, None), [[0.04], [0], [0], [0.04]])
    assert g.clamped == 0  # thresholding is the meaning of a binary command, not a clamp
    slow = GripperFilter("grip", ["f"], lower=[0.0], upper=[0.8], max_rate=1.0, period_s=0.1)
    out = slow.apply(np.array([[2.0], [0.0]]), prev=np.array([0.5]), measured=None)
    assert np.allclose(out, [[0.6], [0.5]]) and slow.clamped == 1  # 1/s at 10 Hz: 0.1 per tick, within [0, 0.8]
    assert np.allclose(slow.hold(np.array([0.6])), [0.6])


def test_twist_filter_speed_and_workspace():
    t = TwistFilter("servo", max_linear_speed=0.1, max_angular_speed=0.5, workspace_min=[-1, -1, 0.1],
                    workspace_max=[1, 1, 1], period_s=0.1, key="actions.servo.")
    out = t.apply(np.array([[0.3, 0.4, 0.0, 0.0, 0.0, 2.0]]), None, measured=None)
    assert np.allclose(out, [[0.06, 0.08, 0.0, 0.0, 0.0, 0.5]])  # direction kept
    # at the floor of the box: moving down is stopped, moving sideways is not
    ee = np.r_[0.0, 0.0, 0.1005, np.zeros(6)]
    out = t.apply(np.array([[0.05, 0.0, -0.05, 0, 0, 0]]), None, measured=ee)
    assert np.allclose(out, [[0.05, 0.0, 0.0, 0, 0, 0]])
    assert np.array_equal(t.hold(np.array([1.0, 2, 3, 4, 5, 6])), np.zeros(6))  # a twist holds with zero velocity
    with pytest.raises(GenilError, match=r"actions.servo.workspace_max: expected \[x, y, z\]"):
        TwistFilter("servo", workspace_max=[1, 1], key="actions.servo.")


def test_pose_filter_box_translation_and_rotation_speed():
    p = PoseFilter("ee", max_linear_speed=0.1, max_angular_speed=1.0, workspace_min=[0, -1, 0],
                   workspace_max=[1, 1, 0.5], period_s=0.1)
    start = np.r_[0.5, 0.0, 0.3, rot6d_from_matrix(np.eye(3))]
    turn = quat_to_matrix([0, 0, math.sin(0.5), math.cos(0.5)])  # 1 rad about z
    target = np.r_[0.5, 0.0, 2.0, rot6d_from_matrix(turn)]
    out = p.apply(target[None], prev=None, measured=start)
    assert np.allclose(out[0, :3], [0.5, 0.0, 0.31])  # box would allow 0.5; 0.1 m/s at 10 Hz allows 1 cm
    assert np.isclose(rotation_angle(np.eye(3), matrix_from_rot6d(out[0, 3:])), 0.1)  # 1 rad/s: 0.1 rad per tick
    free = PoseFilter("ee", workspace_min=[0, -1, 0], workspace_max=[1, 1, 0.5])
    out = free.apply(np.r_[2.0, 0.0, 0.2, 2 * rot6d_from_matrix(np.eye(3))][None], None, None)
    assert np.allclose(out[0], np.r_[1.0, 0.0, 0.2, rot6d_from_matrix(np.eye(3))]) and free.clamped == 1
    with pytest.raises(ValueError, match="parallel"):
        free.apply(np.r_[0.5, 0, 0.2, 1, 0, 0, 1, 0, 0][None], None, None)


def test_vector_filter():
    v = VectorFilter("v", ["x", "y"], [0, 0], [1, 1], max_step=0.5)
    assert np.allclose(v.apply(np.array([[2.0, -1.0], [2.0, 2.0]]), np.array([0.2, 0.2]), None), [[0.7, 0], [1, 0.5]])
    assert np.allclose(VectorFilter("v", ["x"]).apply(np.array([[9.0]]), None, None), [[9.0]])


# --------------------------------------------------------------------------- per-entry parameters


def legacy_spec(cameras=0) -> ModelSpec:
    obs = [ObservationEntry("joints", "joint_position", "/joint_states", ["a", "b"])]
    obs += [ObservationEntry(f"cam{i}", "camera", f"/cam{i}", height=8, width=8) for i in range(cameras)]
    act = [ActionEntry("joints", "joint_position", "", "", ["a", "b"], source="next_observation",
                       observation="joints")]
    return ModelSpec(obs, act, 10.0, 2, 8, 4, "/joint_states", legacy=True)


def typed_spec() -> ModelSpec:
    obs = [ObservationEntry("arm", "joint_position", "", ["a", "b"]),
           ObservationEntry("grip", "gripper", "/gripper/joint_states", ["f"]),
           ObservationEntry("ee", "pose", "/tcp_pose", frame_id="base"),
           ObservationEntry("obj", "vector", "/obj", dims=["x", "y", "z"])]
    act = [ActionEntry("arm", "joint_position", "/arm/cmd", "joint_trajectory", ["b", "a"]),
           ActionEntry("grip", "gripper", "/grip/cmd", "", ["f"], binary=True, open_position=0.04),
           ActionEntry("servo", "twist", "/servo/twist", frame_id="base"),
           ActionEntry("target", "pose", "/target", frame_id="base"),
           ActionEntry("v", "vector", "/v", dims=["p", "q"])]
    return ModelSpec(obs, act, 10.0, 2, 8, 4)


def test_legacy_task_keeps_its_flat_parameters():
    spec = legacy_spec(cameras=2)
    io = resolve_io(PolicySettings(), spec)
    assert [(i.name, i.topic) for i in io.inputs] == [("joints", "/joint_states"), ("cam0", "/cam0"), ("cam1", "/cam1")]
    (out,) = io.outputs
    assert (out.topic, out.msg, out.values["max_step"]) == ("/joint_trajectory_controller/joint_trajectory",
                                                           "joint_trajectory", 0.1)
    s = PolicySettings(output_mode="position", position_topic="/fwd", joint_states_topic="/arm/js",
                       camera_topics=["/x", "/y"], camera_compressed=[True, False], joint_lower_limits=[-1, -2],
                       max_step_rad=0.05, control_rate_hz=5.0)
    io = resolve_io(s, spec)
    assert [(i.topic, i.compressed) for i in io.inputs] == [("/arm/js", False), ("/x", True), ("/y", False)]
    (out,) = io.outputs
    assert (out.topic, out.msg, out.values["lower_limits"], out.values["max_step"], out.key) == (
        "/fwd", "float64_multi_array", [-1.0, -2.0], 0.05, "joint_")
    assert io.rate_hz == 5.0 and out.measured.tolist() == [0, 1]
    # per-entry parameters win over the flat ones
    io = resolve_io(s, spec, {"actions.joints.topic": "/other", "observations.cam1.compressed": True,
                              "actions.joints.lower_limits": [-3, -3]})
    assert io.outputs[0].topic == "/other" and io.inputs[2].compressed and io.outputs[0].key == "actions.joints."
    with pytest.raises(GenilError, match=r"camera_topics: 1 values but the checkpoint has 2 camera\(s\)"):
        resolve_io(PolicySettings(camera_topics=["/x"]), spec)


def test_typed_task_entries_and_their_parameters():
    spec = typed_spec()
    io = resolve_io(PolicySettings(joint_states_topic="/robot/js"), spec)
    assert [(i.name, i.topic, i.frame_id) for i in io.inputs] == [
        ("arm", "/robot/js", ""), ("grip", "/gripper/joint_states", ""), ("ee", "/tcp_pose", "base"),
        ("obj", "/obj", "")]
    assert [i.state_slice for i in io.inputs] == [slice(0, 2), slice(2, 3), slice(3, 12), slice(12, 15)]
    outs = {o.name: o for o in io.outputs}
    assert {n: (o.topic, o.msg) for n, o in outs.items()} == {
        "arm": ("/arm/cmd", "joint_trajectory"), "grip": ("/grip/cmd", "float64_multi_array"),
        "servo": ("/servo/twist", "twist_stamped"), "target": ("/target", "pose_stamped"),
        "v": ("/v", "float64_multi_array")}
    assert outs["arm"].measured.tolist() == [1, 0]  # the arm's joints b, a in the 'arm' observation
    assert outs["servo"].measured is None  # no workspace: a twist needs no measured pose
    assert outs["grip"].measured is None and outs["v"].measured is None
    assert outs["grip"].values["open_position"] == 0.04 and outs["arm"].values["max_step"] == 0.1
    io = resolve_io(PolicySettings(joint_lower_limits=[0, 0]), spec, {
        "actions.grip.max_rate": 2, "actions.servo.max_linear_speed": 0.2, "actions.servo.workspace_min": [0, 0, 0],
        "observations.ee.frame_id": "world", "actions.servo.frame_id": "world", "actions.target.frame_id": "world",
        "actions.arm.msg": "float64_multi_array"})
    outs = {o.name: o for o in io.outputs}
    assert outs["grip"].values["max_rate"] == 2.0 and outs["servo"].values["workspace_min"] == [0.0, 0.0, 0.0]
    assert outs["servo"].measured.tolist() == list(range(3, 12))  # the workspace: the only pose observation
    assert (outs["arm"].topic, outs["arm"].msg) == ("/arm/cmd", "float64_multi_array")
    assert io.inputs[2].frame_id == "world" and outs["arm"].msg == "float64_multi_array"
    assert outs["arm"].values["lower_limits"] == [0.0, 0.0]  # the only joint_position action takes the flat limits
    # output_mode set: the only joint_position action goes to trajectory_topic / position_topic (launch files'
    # controller:= switch), unless its own parameters say otherwise
    io = resolve_io(PolicySettings(output_mode="position", position_topic="/fwd"), spec)
    assert (io.outputs[0].topic, io.outputs[0].msg) == ("/fwd", "float64_multi_array")
    io = resolve_io(PolicySettings(output_mode="trajectory"), spec, {"actions.arm.topic": "/mine"})
    assert (io.outputs[0].topic, io.outputs[0].msg) == ("/mine", "joint_trajectory")
    declared = {"actions.grip.max_rate", "observations.ee.frame_id", "actions.target.pose_observation"}
    assert declared <= set(io.parameters)


@pytest.mark.parametrize("given, pat", [
    ({"actions.gripr.max_rate": 1.0}, r"actions.gripr.max_rate: the checkpoint has no action entry 'gripr' "
                                      r"\(it has arm, grip, servo, target, v\)"),
    ({"actions.grip.max_step": 1.0}, r"actions.grip.max_step: a gripper action does not take 'max_step' \(it takes "),
    ({"observations.arm.frame_id": "x"}, "a joint_position observation does not take 'frame_id'"),
    ({"actions.grip.max_rate": "fast"}, "actions.grip.max_rate: expected a number, got 'fast'"),
    ({"actions.servo.msg": "joint_trajectory"}, r"actions.servo.msg: 'joint_trajectory' is not a twist command"),
    ({"actions.arm.topic": ""}, r"actions.arm.topic: not set"),
    ({"actions.target.pose_observation": "obj", "actions.target.max_linear_speed": 0.1},
     r"pose_observation: 'obj' is not a pose observation"),
    ({"actions.servo.frame_id": "base_link", "actions.servo.workspace_max": [1, 1, 1]},
     r"actions.servo.workspace_min: compares the command \(frame 'base_link'\) with the measured pose 'ee' "
     r"\(frame 'base'\)"),
])
def test_bad_entry_parameters_name_the_parameter(given, pat):
    with pytest.raises(GenilError, match=pat):
        resolve_io(PolicySettings(), typed_spec(), given)


def test_flat_joint_parameters_need_exactly_one_joint_action():
    spec = typed_spec()
    spec.actions = [a for a in spec.actions if a.type != "joint_position"]
    with pytest.raises(GenilError, match=r"parameter joint_lower_limits: applies to the task's only joint_position "
                                         r"action, but it has 0 \(none\)"):
        resolve_io(PolicySettings(joint_lower_limits=[0.0]), spec)
    io = resolve_io(PolicySettings(output_mode="trajectory"), spec)  # launch files set it: a note, no error
    assert io.notes == ["output_mode trajectory: not used, the task has 0 joint_position actions (set "
                        "actions.<entry>.msg / topic)"]
    assert resolve_io(PolicySettings(joint_lower_limits=[]), spec)  # empty = unset


def test_workspace_needs_a_pose_observation_and_config_must_match(tmp_path):
    spec = typed_spec()
    spec.observations = [o for o in spec.observations if o.type != "pose"]
    with pytest.raises(GenilError, match=r"actions.servo.workspace_min: a workspace needs the measured end effector"):
        resolve_io(PolicySettings(), spec, {"actions.servo.workspace_max": [1, 1, 1]})
    cfg = tmp_path / "task.yaml"
    cfg.write_text(yaml.safe_dump({"task": {"joint_names": ["a", "b"], "joint_states_topic": "/robot/js",
                                            "control_rate_hz": 20.0}}))
    io = resolve_io(PolicySettings(config=str(cfg)), legacy_spec())
    assert io.rate_hz == 20.0 and io.inputs[0].topic == "/robot/js"
    with pytest.raises(GenilError, match=r"parameter config: .*task.yaml: its task does not match the checkpoint's"):
        resolve_io(PolicySettings(config=str(cfg)), typed_spec())


def test_entry_parameter_names_and_values_are_checked_without_the_checkpoint():
    check_entry_parameter("actions.gripper.max_rate", 2)
    check_entry_parameter("actions.arm.lower_limits", [-1, 0])
    check_entry_parameter("observations.front.compressed", True)
    for name, value, pat in [("actions.arm.max_stp", 1.0, "unknown key 'max_stp'"),
                             ("actions.arm.lower_limits", "low", "expected a list"),
                             ("observations.front.compressed", "yes", "expected true/false")]:
        with pytest.raises(GenilError, match=pat):
            check_entry_parameter(name, value)


def test_model_spec_compatibility_names_the_first_difference():
    a, b = typed_spec(), typed_spec()
    assert a.compatible(b) is None and a.state_dim == 15 and a.action_dim == 2 + 1 + 6 + 9 + 2
    b.actions[1] = ActionEntry("grip", "gripper", "/g", "", ["f", "f2"])
    assert "action entry 1 ('grip'): dimensions differ" in a.compatible(b)
    c = legacy_spec(cameras=1)
    d = legacy_spec(cameras=1)
    d.observations[1].height = 16
    assert "cameras (name, height, width)" in c.compatible(d)
    d = legacy_spec(cameras=1)
    d.horizon = 16
    assert c.compatible(d) == "horizons (T_o, T_p, T_a) differ"


# --------------------------------------------------------------------------- the shipped params files


ROOT = Path(__file__).resolve().parent.parent
ROBOT_EXAMPLES = [("real_arm_policy.yaml", "real_arm_task.yaml"), ("franka_fr3_policy.yaml", "franka_fr3_task.yaml"),
                  ("servo_twist_policy.yaml", "servo_twist_task.yaml")]


@pytest.mark.parametrize("params, task", ROBOT_EXAMPLES)
def test_robot_params_files_fit_their_task(params, task):
    """Each real-robot params file, read as the node reads it, resolves against its task config: every
    per-entry name is an entry of the task, every value has the right type and every limit the right length."""
    from genil_ros.config import load_config
    from genil_ros.ros.params import settings_from_values
    from genil_ros.ros.policy_cli import read_params_file
    from genil_ros.ros.policy_entries import is_entry_parameter

    values = read_params_file(ROOT / "config" / params)
    assert values.get("autostart") is False, f"{params}: a real arm must not start moving by itself"
    path = ROOT / "config" / task
    if not path.exists():
        pytest.skip(f"config/{task} is not there yet (the typed task configs come with the schema work)")
    cfg = load_config(path)
    if cfg.task.joint_names:
        pytest.skip(f"config/{task} is still in the joint_names form (no gripper entry yet)")
    spec = ModelSpec.from_config(cfg)
    flat = {k: v for k, v in values.items() if not is_entry_parameter(k) and k != "use_sim_time"}
    given = {k: v for k, v in values.items() if is_entry_parameter(k)}
    io = resolve_io(settings_from_values(PolicySettings, flat), spec, given)
    assert {o.name for o in io.outputs} == {a.name for a in spec.actions}
    for o in io.outputs:  # every filter can be built from the values (lengths, order of the limits)
        if o.entry.type == "joint_position":
            JointFilter(o.name, o.entry.joints, o.values["lower_limits"], o.values["upper_limits"],
                        o.values["max_step"], key=o.key)


# --------------------------------------------------------------------------- conversions (need ROS messages)


def test_observation_decoders_of_every_type(cv):
    """The node reads low-dim entries with the dataset builder's readers; its errors start with the entry
    and topic, and no NaN/Inf gets through."""
    from geometry_msgs.msg import WrenchStamped
    from std_msgs.msg import Float64MultiArray

    spec = typed_spec()
    arm_vel = ObservationEntry("arm_vel", "joint_velocity", "", ["a", "b"])
    js = cv.joint_state_msg(["c", "a", "b"], [3.0, 1.0, 2.0], velocity=[30, 10, 20])
    assert cv.observation_decoder(arm_vel, 1)(js).tolist() == [10, 20]
    effort = cv.observation_decoder(ObservationEntry("e", "joint_effort", "", ["a"]), 2, where="observation 'e' (/js)")
    with pytest.raises(DataError, match=r"^observation 'e' \(/js\): .*JointState has no effort values"):
        effort(js)
    js.velocity = [30.0, math.nan, 20.0]
    with pytest.raises(DataError, match=r"non-finite velocity of joint a"):
        cv.observation_decoder(arm_vel, 1)(js)

    q = np.array([0.1, -0.2, 0.3, 0.9])
    q /= np.linalg.norm(q)
    pose = cv.pose_stamped_msg(np.r_[1.0, 2.0, 3.0, quat_to_rot6d(q)], "base", 5)
    ee = spec.observations[2]  # frame_id base
    got = cv.observation_decoder(ee, 2)(pose)
    assert got.dtype == np.float32 and np.allclose(got, np.r_[1, 2, 3, quat_to_rot6d(q)], atol=1e-6)
    with pytest.raises(DataError, match=r"^/tcp: .*frame_id is 'base', the config says 'world'"):
        cv.observation_decoder(ee, 2, "world", where="/tcp")(pose)  # the observations.ee.frame_id parameter
    o = pose.pose.orientation  # a sloppy publisher (norm 1.005): normalised, as the dataset builder does
    o.x, o.y, o.z, o.w = (1.005 * v for v in (o.x, o.y, o.z, o.w))
    assert np.allclose(cv.observation_decoder(ee, 2)(pose)[3:], quat_to_rot6d(q), atol=1e-6)
    pose.pose.orientation.w = 0.5
    with pytest.raises(DataError, match=r"not a unit quaternion \(norm 0\.6"):
        cv.observation_decoder(ee, 2)(pose)
    w = WrenchStamped()
    w.header.frame_id = "tool0"
    w.wrench.force.z, w.wrench.torque.x = -9.8, 0.5
    ft = ObservationEntry("ft", "wrench", "/ft", frame_id="tool0")
    assert cv.observation_decoder(ft, 0)(w).tolist() == pytest.approx([0, 0, -9.8, 0.5, 0, 0])
    w.wrench.force.x = math.inf
    with pytest.raises(DataError, match=r"non-finite fx of observation 'ft'"):
        cv.observation_decoder(ft, 0)(w)
    obj = spec.observations[3]  # dims x, y, z
    with pytest.raises(DataError, match=r"^/obj: Float64MultiArray has 2 values, expected 3"):
        cv.observation_decoder(obj, 3, where="/obj")(Float64MultiArray(data=[1.0, 2.0]))
    assert cv.observation_decoder(obj, 3)(Float64MultiArray(data=[1.0, 2.0, 3.0])).tolist() == [1.0, 2.0, 3.0]


def test_command_messages(cv):
    t = cv.twist_stamped_msg([1, 2, 3, 4, 5, 6], "base_link", 10**9 + 7)
    assert (t.header.frame_id, cv.stamp_to_ns(t.header.stamp)) == ("base_link", 10**9 + 7)
    assert (t.twist.linear.y, t.twist.angular.z) == (2.0, 6.0)
    p = cv.pose_stamped_msg(np.r_[0, 0, 0, 2, 0, 0, 0.5, 1, 0], "base", 0)  # not orthonormal: Gram-Schmidt
    o = p.pose.orientation
    assert np.allclose([o.x, o.y, o.z, o.w], [0, 0, 0, 1])
    with pytest.raises(GenilError, match="pose command: 6-D rotation with a zero, parallel"):
        cv.pose_stamped_msg(np.r_[0, 0, 0, 1, 0, 0, 1, 0, 0], "base", 0)
    try:
        import control_msgs.msg  # noqa: F401
    except ImportError:
        with pytest.raises(GenilError, match=r"actions.g.msg: control_msgs/msg/GripperCommand is not importable: "
                                             r"control_msgs has no PyPI wheel; source a ROS 2 install"):
            cv.gripper_command_class("actions.g.msg")
    else:
        assert cv.gripper_command_msg(0.02, 5.0).position == 0.02
