"""The policy node's parts that need no DDS: conversions, stamp-aligned buffers, chunk alignment and
latency compensation, safety clamping, parameter checks, and the model wrapper on a real checkpoint."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

from genil_ros.errors import CheckpointError, DataError, GenilError  # noqa: E402
from genil_ros.ros import conversions as cv  # noqa: E402
from genil_ros.ros.policy_node import (PARAMETERS, ActionPlan, InferenceJob, InferenceWorker,  # noqa: E402
                                       NodeSettings, ObservationWindow, ObsSample, SafetyFilter, StreamBuffer,
                                       load_chunk_model, zero_obs)

sys.path.insert(0, str(Path(__file__).parent / "nodes"))
from fake_robot_policy import make_checkpoint  # noqa: E402

MS = 1_000_000


# --------------------------------------------------------------------------- conversions


def test_joint_state_reordered_by_name_and_checked():
    msg = cv.joint_state_msg(["c", "extra", "a", "b"], [3.0, 9.0, 1.0, 2.0], 5, velocity=[30, 90, 10, 20])
    assert cv.joint_state_to_array(msg, ["a", "b", "c"]).tolist() == [1.0, 2.0, 3.0]
    assert cv.joint_state_to_array(msg, ["a", "b", "c"], use_velocity=True).tolist() == [1, 2, 3, 10, 20, 30]
    with pytest.raises(DataError, match=r"/js: .*missing joint.*'b'"):
        cv.joint_state_to_array(cv.joint_state_msg(["a", "c"], [1, 3]), ["a", "b", "c"], where="/js")
    with pytest.raises(DataError, match=r"/js: .*non-finite.*\['b'\]"):
        cv.joint_state_to_array(cv.joint_state_msg(["a", "b", "c"], [1, math.nan, 3]), ["a", "b", "c"], where="/js")


def test_images_round_trip_and_bad_ones_name_the_topic():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)
    msg = cv.numpy_to_image_msg(img, 1_500_000_000)
    assert cv.stamp_to_ns(msg.header.stamp) == 1_500_000_000
    assert np.array_equal(cv.camera_msg_to_array(msg, 24, 40), img)
    assert cv.camera_msg_to_array(msg, 12, 20).shape == (12, 20, 3)  # resized to the policy's size
    png = cv.numpy_to_compressed_msg(img, fmt="png")
    assert np.array_equal(cv.camera_msg_to_array(png, 24, 40), img)
    msg.encoding = "32FC1"
    with pytest.raises(DataError, match=r"/cam: unsupported image encoding '32FC1'"):
        cv.camera_msg_to_array(msg, 24, 40, where="/cam")
    png.data = bytes(range(100))
    with pytest.raises(DataError, match=r"/cam: could not decode"):
        cv.camera_msg_to_array(png, 24, 40, where="/cam")


def test_trajectory_message_spacing():
    msg = cv.joint_trajectory_msg(["a", "b"], np.array([[1, 2], [3, 4], [5, 6]]), 0.1, 7 * 10**9 + 5)
    assert cv.stamp_to_ns(msg.header.stamp) == 7 * 10**9 + 5 and list(msg.joint_names) == ["a", "b"]
    tfs = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
    assert np.allclose(tfs, [0.1, 0.2, 0.3])
    assert np.array_equal(cv.trajectory_to_array(msg), [[1, 2], [3, 4], [5, 6]])
    assert list(cv.float64_array_msg(np.array([1.5, 2])).data) == [1.5, 2.0]


# --------------------------------------------------------------------------- buffers and alignment


def test_stream_buffer_samples_by_header_stamp_not_arrival():
    b = StreamBuffer("/joint_states")
    b.add(300 * MS, "c", 0)
    b.add(100 * MS, "a", 0)  # arrives late, older stamp
    b.add(200 * MS, "b", 0)
    assert b.sample(250 * MS) == (200 * MS, "b")
    assert b.sample(99 * MS) is None
    assert b.sample(260 * MS, tol_ns=50 * MS) == (300 * MS, "c")
    assert b.newest_stamp() == 300 * MS


def test_observation_window_needs_consecutive_ticks():
    w = ObservationWindow(2)
    s = lambda k: ObsSample(k, k * 100 * MS, np.full(3, k, np.float32), {"front": np.full((4, 5, 3), k, np.uint8)}, 0)  # noqa
    w.push(s(1))
    assert not w.full()
    w.push(s(3))  # a tick was lost: start over
    assert not w.full()
    w.push(s(4))
    obs = w.as_obs()
    assert w.full() and obs["state"][:, 0].tolist() == [3, 4]
    assert obs["front"].shape == (2, 3, 4, 5) and obs["front"][1, 0, 0, 0] == 4


def test_action_plan_alignment_and_latency_skip():
    T_o, T_p, T_a = 2, 8, 4
    chunk = np.arange(T_p, dtype=float)[:, None] * np.ones((1, 2))  # entry i == i
    plan = ActionPlan(chunk, tick=10, n_obs_steps=T_o, n_action_steps=T_a)
    assert plan.actions_from(10)[:, 0].tolist() == [1, 2, 3, 4]  # entry T_o-1 is the action for tick 10
    assert plan.actions_from(12)[:, 0].tolist() == [3, 4]  # ticks 10, 11 passed during inference: skipped
    assert plan.remaining_after(12) == 1 and plan.nominal_end == 13
    assert plan.actions_from(15)[:, 0].tolist() == [6]  # past T_a: only while the next chunk is late
    assert plan.actions_from(17) is None and plan.actions_from(9) is None


def test_safety_filter_limits_and_step():
    f = SafetyFilter(["a", "b"], [-1, -1], [1, 0.5], max_step=0.1)
    out = f.apply(np.array([[5.0, 5.0], [5.0, -5.0]]), prev=np.array([0.0, 0.45]))
    assert np.allclose(out, [[0.1, 0.5], [0.2, 0.4]])
    assert np.allclose(SafetyFilter(["a"], None, None, 0).apply(np.array([[7.0]]), np.array([0.0])), [[7.0]])
    with pytest.raises(GenilError, match="joint_lower_limits: has 1 values but the policy has 2 joints"):
        SafetyFilter(["a", "b"], [0.0], None)
    with pytest.raises(GenilError, match=r"lower > upper for joint\(s\) \['b'\]"):
        SafetyFilter(["a", "b"], [0, 2], [1, 1])


def test_settings_errors_name_the_parameter():
    base = {k: v for k, (v, _) in PARAMETERS.items()}
    s = NodeSettings.from_values(dict(base, control_rate_hz=20, joint_lower_limits=[-1, 0]))
    assert s.control_rate_hz == 20.0 and s.joint_lower_limits == [-1.0, 0.0]
    for key, bad, pat in [("output_mode", "torque", "output_mode: 'torque' is not one of"),
                          ("device", "tpu", "device: 'tpu'"), ("max_staleness_s", 0.0, "max_staleness_s"),
                          ("camera_topics", "/cam", "camera_topics: expected a list"),
                          ("num_inference_steps", 2.5, "num_inference_steps: expected an integer")]:
        with pytest.raises(GenilError, match=pat):
            NodeSettings.from_values(dict(base, **{key: bad}))


# --------------------------------------------------------------------------- the model behind the node


def test_chunk_model_on_a_real_checkpoint(tmp_path):
    ck = make_checkpoint(tmp_path / "ck", camera=True, image_hw=(16, 16))
    m = load_chunk_model(str(ck), "cpu", "ddim", 3, seed=7)
    assert m.spec.joint_names == ["a", "b", "c"] and [c.name for c in m.spec.cameras] == ["front"]
    obs = zero_obs(m.spec)
    a = m(obs)
    assert a.shape == (8, 3) and np.all(np.isfinite(a)) and np.all(np.abs(a) <= 1.0 + 1e-6)
    assert np.allclose(load_chunk_model(str(ck), "cpu", "ddim", 3, seed=7)(obs), a)  # the seed fixes the noise
    with pytest.raises(GenilError, match="parameter checkpoint: not set"):
        load_chunk_model("", "cpu")
    with pytest.raises(CheckpointError, match="nope"):
        load_chunk_model(str(tmp_path / "nope"), "cpu")

    # the worker thread runs it off the caller's thread and reports model errors instead of raising
    w = InferenceWorker()
    try:
        assert w.submit(InferenceJob(1, 5, 0, 0, obs, m))
        assert w.wait_idle(60)
        r = w.take_result()
        assert r.error is None and r.chunk.shape == (8, 3) and r.job.tick == 5
        bad = dict(obs, front=obs["front"][:, :, :8])
        assert w.submit(InferenceJob(1, 6, 0, 0, bad, m)) and w.wait_idle(60)
        r = w.take_result()
        assert r.chunk is None and "front" in r.error
    finally:
        w.stop()
