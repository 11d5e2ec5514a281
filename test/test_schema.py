"""The task schema: entry checks, the state/action layout, the legacy joint_names form."""

import pytest

from genil_ros.config import CameraConfig
from genil_ros.schema import ActionEntry, ObservationEntry, SchemaError, layout, legacy_entries, validate_entries


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
