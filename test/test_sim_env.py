"""The bundled arm task without ROS: env contract, rendering, the scripted expert's success and modes."""

import numpy as np
import pytest

from genil_ros.errors import GenilError
from genil_ros.sim.env import JOINT_LIMITS, JOINT_NAMES, SUCCESS_RADIUS, ArmEnv
from genil_ros.sim.expert import ScriptedExpert, run_episode


@pytest.fixture(scope="module")
def render_env():
    env = ArmEnv(variant="obstacle", render=True, seed=0)
    yield env
    env.close()


def test_contract_shapes_and_limits(render_env):
    env = render_env
    assert JOINT_NAMES == ["shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_joint"]
    obs, info = env.reset(seed=3)
    assert obs["joint_pos"].shape == (4,) and obs["joint_vel"].shape == (4,)
    assert obs["image"].shape == (96, 96, 3) and obs["image"].dtype == np.uint8
    assert obs["goal"].shape == (3,) and obs["ee_pos"].shape == (3,)
    assert info["success"] is False
    lo, hi = JOINT_LIMITS
    obs, reward, terminated, truncated, info = env.step(hi + 1.0)  # clipped to the limits
    assert np.allclose(env.command, hi)
    assert isinstance(reward, float) and not terminated
    with pytest.raises(GenilError, match="4 joint targets"):
        env.step(np.zeros(3))


def test_reset_randomises_goal_and_is_reproducible():
    env = ArmEnv(render=False)
    goals = [env.reset(seed=s)[0]["goal"] for s in range(6)]
    assert len({tuple(np.round(g, 4)) for g in goals}) == 6
    assert np.allclose(env.reset(seed=2)[0]["goal"], goals[2])
    assert "image" not in env.reset()[0]  # render=False: no renderer, no image


def test_target_visible_in_image(render_env):
    """The goal is visible only in the image: the red disc's pixels move when the target moves."""
    env = render_env

    def red_centroid(img):
        r, g, b = (img[..., i].astype(int) for i in range(3))
        mask = (r > 150) & (g < 80) & (b < 80)
        assert mask.sum() >= 10, "the target disc is not visible"
        ys, xs = np.nonzero(mask)
        return np.array([xs.mean(), ys.mean()])

    env.reset(seed=0, options={"target_xy": [0.40, -0.09]})
    a = red_centroid(env.render())
    env.reset(seed=0, options={"target_xy": [0.45, 0.09]})
    img = env.render()
    b = red_centroid(img)
    assert np.linalg.norm(a - b) > 8  # pixels
    assert img.std() > 20  # a real scene, not a blank frame


def test_moving_joints_changes_image_and_reaches_command():
    env = ArmEnv(render=True, seed=0)
    obs0, _ = env.reset(seed=1)
    q = obs0["joint_pos"] + np.array([0.6, -0.2, 0.3, 0.0], dtype=np.float32)
    for _ in range(15):
        obs, *_ = env.step(q)
    assert np.allclose(obs["joint_pos"], q, atol=0.02)
    assert np.abs(obs["image"].astype(int) - obs0["image"].astype(int)).mean() > 1.0
    env.close()


def test_ik_reaches_points():
    env = ArmEnv(render=False)
    for tip in ([0.42, 0.05, 0.03], [0.29, -0.15, 0.045], [0.2, 0.2, 0.05]):
        q = env.solve_ik(tip)
        assert np.linalg.norm(env.forward_kinematics(q) - tip) < 1e-3


def test_straight_line_hits_the_post():
    """The post really blocks the direct path, so the expert's detour is needed."""
    env = ArmEnv(render=False)
    obs, _ = env.reset(seed=0, options={"target_xy": [0.43, 0.0]})
    start = env.forward_kinematics(obs["joint_pos"])
    q = obs["joint_pos"].astype(np.float64)
    collided = False
    for s in np.linspace(0, 1, 40):
        q = env.solve_ik(start + s * (obs["goal"] - start), q0=q)
        *_, info = env.step(q)
        collided |= info["collided"]
    assert collided and not info["success"]


@pytest.mark.parametrize("variant", ["obstacle", "reach"])
def test_expert_success_and_both_modes(variant):
    env = ArmEnv(variant=variant, render=False, seed=0)
    expert = ScriptedExpert(env, seed=0)
    results = [run_episode(env, expert, seed=100 + i) for i in range(20)]
    rate = np.mean([r["success"] for r in results])
    assert rate >= 0.9, results
    modes = {r["mode"] for r in results}
    assert modes == {"left", "right"}
    assert all(r["steps"] < env.max_episode_steps for r in results if r["success"])


def test_modes_take_different_joint_paths():
    env = ArmEnv(render=False)
    expert = ScriptedExpert(env, seed=0)
    pans = {}
    for mode in ("left", "right"):
        obs, _ = env.reset(seed=7)
        expert.reset(mode=mode)
        traj = []
        for _ in range(60):
            a = expert.act(obs)
            traj.append(a)
            obs, _, term, trunc, info = env.step(a)
            if term or trunc:
                break
        assert info["success"], mode
        traj = np.array(traj)
        assert np.max(np.abs(np.diff(traj, axis=0))) < 0.1  # smooth: within the policy node's max_step_rad
        pans[mode] = traj[:, 0]
    assert pans["left"].max() > 0.3 and pans["right"].min() < -0.3  # opposite sides of the post


def test_success_needs_the_goal_radius():
    env = ArmEnv(render=False)
    obs, _ = env.reset(seed=0, options={"target_xy": [0.42, 0.08]})
    q = env.solve_ik(obs["goal"] + np.array([0.0, 0.0, 2 * SUCCESS_RADIUS]))
    env.collided = False
    env.data.qpos[:4] = q
    for _ in range(3):
        *_, info = env.step(q)
    assert not info["success"] and info["distance"] > SUCCESS_RADIUS


def test_bad_variant_is_a_clear_error():
    with pytest.raises(GenilError, match="variant 'maze'"):
        ArmEnv(variant="maze", render=False)


def test_expert_replans_when_the_goal_changes():
    env = ArmEnv(render=False)
    expert = ScriptedExpert(env, seed=1)
    obs, _ = env.reset(seed=0)
    expert.act(obs)
    obs, _ = env.reset(seed=1)  # a new episode without expert.reset()
    for _ in range(60):
        obs, _, term, trunc, info = env.step(expert.act(obs))
        if term or trunc:
            break
    assert info["success"]


def test_sim_cli_arguments_become_ros_parameters():
    import argparse

    from genil_ros.ros import sim_node

    parser = argparse.ArgumentParser()
    sim_node.add_arguments(parser)
    argv = sim_node.ros_argv(parser.parse_args(["--variant", "reach", "--real-time-factor", "3", "--seed", "4"]))
    assert argv[:2] == ["sim_node", "--ros-args"]
    assert argv[argv.index("--params-file") + 1].endswith("config/sim_node.yaml")
    for p in ("variant:=reach", "real_time_factor:=3.0", "seed:=4"):
        assert p in argv
    with pytest.raises(GenilError, match="nope.yaml"):
        sim_node.ros_argv(parser.parse_args(["--params-file", "nope.yaml"]))


def test_rendering_then_importing_torch_compiler_does_not_crash():
    """Mesa's EGL and triton both bring LLVM; rendering first must not make a later torch import segfault."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    code = ("from genil_ros.sim.env import ArmEnv\n"
            "e = ArmEnv(seed=0); assert e.render().std() > 0\n"
            "import triton, torch._dynamo\nprint('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
