"""The task schema: entry checks, the state/action layout, the legacy joint_names form."""

import numpy as np
import pytest

from genil_ros.config import CameraConfig
from genil_ros.schema import (
    ActionEntry,
    Layout,
    ObservationEntry,
    SchemaError,
    entries_from_dict,
    entries_to_dict,
    layout,
    legacy_entries,
    recorded_topics,
    validate_entries,
)


def _pick_task():
    obs = [ObservationEntry("arm", "joint_position", joints=["a", "b", "c"]),
           ObservationEntry("gripper", "gripper", joints=["finger"]),
           ObservationEntry("ee", "pose", "/tcp_pose", frame_id="base"),
           ObservationEntry("ft", "wrench", "/ft"),
           ObservationEntry("obj", "vector", "/object", dims=["x", "y", "z"]),
           ObservationEntry("front", "camera", "/camera/image_raw", height=64, width=80)]
    act = [ActionEntry("arm", "joint_position", "/arm/commands", joints=["a", "b", "c"]),
           ActionEntry("gripper", "gripper", "/gripper/commands", joints=["finger"], binary=True,
                       open_position=0.04, closed_position=0.0),
           ActionEntry("servo", "twist", "/servo/delta_twist_cmds", frame_id="base_link")]
    return obs, act


def test_layout_concatenates_low_dim_entries_in_order():
    obs, act = _pick_task()
    validate_entries(obs, act)
    lay = layout(obs, act)
    assert [(e.name, e.start, e.stop) for e in lay.state] == [("arm", 0, 3), ("gripper", 3, 4), ("ee", 4, 13),
                                                               ("ft", 13, 19), ("obj", 19, 22)]
    assert lay.state_dim == 22 and lay.action_dim == 3 + 1 + 6
    assert lay.cameras == ("front",)
    assert lay.action_entry("gripper").normalization == "none"  # binary gripper: not rescaled
    assert lay.state_entry("ee").dim_names[:3] == ("x", "y", "z")
    assert lay.first_difference(layout(obs, act)) is None


def test_first_difference_names_the_key():
    obs, act = _pick_task()
    other_obs = [ObservationEntry("arm", "joint_position", joints=["a", "c", "b"])] + obs[1:]
    why = layout(obs, act).first_difference(layout(other_obs, act))
    assert "'arm'" in why and "dimensions" in why


@pytest.mark.parametrize("change, key", [
    (lambda o, a: o.append(ObservationEntry("v", "vector", "/v")), "observations[6].dims"),
    (lambda o, a: o.append(ObservationEntry("p", "pose")), "observations[6].topic"),
    (lambda o, a: o.append(ObservationEntry("state", "vector", "/v", dims=["x"])),
     "observations[6].name"),
    (lambda o, a: o.append(ObservationEntry("arm", "vector", "/v", dims=["x"])), "observations"),
    (lambda o, a: a.append(ActionEntry("g2", "gripper", "/g", joints=["f"], binary=True)),
     "actions[3].closed_position"),
    (lambda o, a: a.append(ActionEntry("t", "twist", "/t", msg="joint_trajectory")), "actions[3].msg"),
    (lambda o, a: a.append(ActionEntry("d", "joint_position", "/d", joints=["a"], mode="delta")),
     "actions[3].observation"),
    (lambda o, a: a.append(ActionEntry("n", "joint_position", joints=["z"], source="next_observation",
                                       observation="arm")), "actions[3].joints"),
    (lambda o, a: a.append(ActionEntry("n", "twist", source="next_observation", observation="arm")),
     "actions[3].source"),
    (lambda o, a: a.append(ActionEntry("c", "vector", dims=["u"])), "actions[3].topic"),
])
def test_bad_entries_name_their_key(change, key):
    obs, act = _pick_task()
    change(obs, act)
    with pytest.raises(SchemaError) as e:
        validate_entries(obs, act)
    assert e.value.key == key, str(e.value)


def test_legacy_form_means_what_it_meant():
    cams = [CameraConfig("front", "/camera/image_raw")]
    obs, act = legacy_entries(["j1", "j2"], "/joint_states", True, cams, "next_state", None)
    validate_entries(obs, act)
    lay = layout(obs, act)
    assert [e.name for e in lay.state] == ["joints", "joint_velocities"]
    assert lay.state_dim == 4 and lay.action_dim == 2 and lay.cameras == ("front",)
    assert act[0].source == "next_observation" and act[0].observation == "joints"
    obs, act = legacy_entries(["j1", "j2"], "/joint_states", False, [], "command", "/fwd/commands")
    validate_entries(obs, act)
    assert act[0].source == "command" and act[0].topic == "/fwd/commands" and layout(obs, act).state_dim == 2


def test_schema_round_trips_and_modes_are_part_of_the_layout():
    obs, act = _pick_task()
    lay = layout(obs, act)
    assert Layout.from_dict(lay.to_dict()) == lay
    o2, a2 = entries_from_dict(entries_to_dict(obs, act))
    assert (o2, a2) == (obs, act)
    with pytest.raises(SchemaError, match=r"schema.actions\[0\]: unknown key\(s\) \['bogus'\]"):
        entries_from_dict({"observations": [], "actions": [{"name": "x", "bogus": 1}]})
    # delta and binary actions hold other numbers than absolute ones: the layouts differ in "mode"
    delta = [ActionEntry("arm", "joint_position", "/arm/commands", joints=["a", "b", "c"], mode="delta",
                         observation="arm")] + act[1:]
    assert "mode differ (absolute vs delta)" in lay.first_difference(layout(obs, delta))
    plain = act[:1] + [ActionEntry("gripper", "gripper", "/gripper/commands", joints=["finger"],
                                   normalization="none")] + act[2:]
    assert "mode differ (binary vs absolute)" in lay.first_difference(layout(obs, plain))
    # a dataset's numbers do not depend on how a policy scales them
    meanstd = [ObservationEntry("arm", "joint_position", joints=["a", "b", "c"], normalization="meanstd")] + obs[1:]
    assert "normalization" in lay.first_difference(layout(meanstd, act))
    assert lay.first_difference(layout(meanstd, act), normalization=False) is None
    g = act[1]
    np.testing.assert_array_equal(g.to_binary([0.04, 0.03, 0.01, 0.0]), [0, 0, 1, 1])
    np.testing.assert_array_equal(g.from_binary([0.2, 0.7]), [0.04, 0.0])


def test_recorded_topics_of_a_task():
    obs, act = _pick_task()
    topics = recorded_topics(obs, act)
    assert list(topics) == ["/joint_states", "/tcp_pose", "/ft", "/object", "/camera/image_raw", "/arm/commands",
                            "/gripper/commands", "/servo/delta_twist_cmds"]
    assert topics["/joint_states"] == ("sensor_msgs/msg/JointState",)
    assert topics["/arm/commands"] == ("std_msgs/msg/Float64MultiArray", "trajectory_msgs/msg/JointTrajectory")
    assert "control_msgs/msg/GripperCommand" in topics["/gripper/commands"]
