"""The bundled pick-and-place task without ROS: env contract, gripper, grasp physics, success/drop rules, the
scripted expert's two modes, and the failure of their average."""

import json

import numpy as np
import pytest

from genil_ros.errors import GenilError
from genil_ros.sim import pick_place as P
from genil_ros.sim.env import JOINT_LIMITS, JOINT_NAMES, TOOL_PITCH
from genil_ros.sim.pick_place import PickPlaceEnv
from genil_ros.sim.pick_place_expert import PickPlaceExpert, run_averaged_episode, run_episode


@pytest.fixture(scope="module")
def env():
    e = PickPlaceEnv(render=False, seed=0)
    yield e
    e.close()


def _run_until(env, expert, obs, segment):
    """Step the expert until its plan enters ``segment``; returns the last obs and info."""
    info = None
    while True:
        obs, _, term, trunc, info = env.step(expert.act(obs))
        assert not (term or trunc), info
        current = [s["name"] for s in expert._segments if s["t0"] < expert._k * env.dt <= s["t1"]]
        if current and current[0] == segment:
            return obs, info


def _settle(env, steps=10):
    for _ in range(steps):
        env.step(np.append(env.command, env.gripper_command))
    return env.observe(image=False), env._info()


def test_arm_matches_the_obstacle_task_arm():
    """The gripper arm is the obstacle task's arm plus a tool: same links, joints, limits and actuators."""
    import mujoco

    from genil_ros.sim.env import ASSET_PATH as ARM_PATH

    a = mujoco.MjModel.from_xml_path(str(ARM_PATH))
    g = mujoco.MjModel.from_xml_path(str(P.ASSET_PATH))
    for body in ("turret", "upper_arm", "forearm", "hand"):
        assert np.allclose(a.body(body).pos, g.body(body).pos), body
    for joint in JOINT_NAMES:
        assert np.allclose(a.joint(joint).range, g.joint(joint).range), joint
        assert np.allclose(a.joint(joint).axis, g.joint(joint).axis), joint
        act = joint.replace("_joint", "")
        assert np.allclose(a.actuator(act).gainprm[:3], g.actuator(act).gainprm[:3]), act
        assert np.allclose(a.actuator(act).forcerange, g.actuator(act).forcerange), act
    assert np.allclose(g.jnt_range[g.joint(P.GRIPPER_JOINT).id], P.GRIPPER_RANGE)
    assert np.allclose(g.actuator("gripper").ctrlrange, P.GRIPPER_RANGE)


def test_reset_is_deterministic_per_seed_and_randomises_the_object(env):
    obs_a, info = env.reset(seed=5)
    obs_b, _ = env.reset(seed=5)
    for key in ("joint_pos", "gripper_pos", "object_pos"):
        assert np.array_equal(obs_a[key], obs_b[key]), key
    assert "image" not in obs_a  # render=False: no renderer, no image
    assert obs_a["joint_pos"].shape == (4,) and obs_a["gripper_pos"].shape == (1,)
    assert obs_a["object_pos"].shape == (3,) and obs_a["ee_pos"].shape == (3,)
    assert env.state_vector(obs_a).shape == (env.state_dim,)
    assert info["success"] is False and info["dropped"] is False and info["bin"] is None
    assert obs_a["gripper_pos"][0] == pytest.approx(P.GRIPPER_OPEN)
    xys = np.array([env.reset(seed=s)[0]["object_pos"][:2] for s in range(8)])
    assert len({tuple(np.round(xy, 4)) for xy in xys}) == 8
    (x0, x1), (y0, y1) = P.OBJECT_REGION
    assert np.all((xys[:, 0] >= x0) & (xys[:, 0] <= x1) & (xys[:, 1] >= y0) & (xys[:, 1] <= y1))
    obs, _ = env.reset(seed=1, options={"object_xy": [0.3, 0.02]})
    assert np.allclose(obs["object_pos"], [0.3, 0.02, P.OBJECT_HALF_HEIGHT], atol=1e-6)
    # the same seed gives the same physics afterwards
    ends = []
    for _ in range(2):
        obs, _ = env.reset(seed=3)
        for _ in range(5):
            obs, *_ = env.step(np.append(obs["joint_pos"] + 0.05, 0.01))
        ends.append(np.concatenate([obs["joint_pos"], obs["gripper_pos"], obs["object_pos"]]))
    assert np.array_equal(ends[0], ends[1])


def test_actions_are_clipped_and_checked(env):
    env.reset(seed=0)
    lo, hi = JOINT_LIMITS
    applied = env.set_action(np.append(hi + 1.0, 0.5))
    assert np.allclose(env.command, hi) and env.gripper_command == P.GRIPPER_OPEN
    assert np.allclose(applied, np.append(hi, P.GRIPPER_OPEN))
    env.set_action(np.append(lo - 1.0, -0.2))
    assert np.allclose(env.command, lo) and env.gripper_command == P.GRIPPER_CLOSED
    with pytest.raises(GenilError, match="5 values.*gripper_finger_joint"):
        env.step(np.zeros(4))
    with pytest.raises(GenilError, match="4 joint targets"):
        env.set_command(np.zeros(5))
    with pytest.raises(GenilError, match="gripper_finger_joint is not finite"):
        env.set_gripper(float("nan"))
    with pytest.raises(GenilError, match="non-finite"):
        env.set_command([0.0, np.inf, 0.0, 0.0])


def test_gripper_opening_is_observable_at_a_finer_rate(env):
    """set_command / set_gripper / advance / observe, as the ROS sim node drives it (100 Hz here)."""
    obs, _ = env.reset(seed=0)
    env.set_command(obs["joint_pos"])
    env.set_gripper(P.GRIPPER_CLOSED)
    openings = []
    for _ in range(60):
        env.advance(0.01)
        openings.append(env.observe(image=False)["gripper_pos"][0])
    assert openings[0] > openings[10] > openings[-1]  # closes gradually
    assert openings[-1] == pytest.approx(P.GRIPPER_CLOSED, abs=2e-3)
    mirror = env.data.qpos[env._grip_qadr[1]]
    assert mirror == pytest.approx(openings[-1], abs=2e-3)  # the second finger follows
    env.set_gripper(0.03)
    env.advance(0.6)
    assert env.observe(image=False)["gripper_pos"][0] == pytest.approx(0.03, abs=2e-3)
    names, pos, vel, effort = env.joint_state()
    assert names == JOINT_NAMES + [P.GRIPPER_JOINT] == P.ACTION_NAMES
    assert pos[4] == pytest.approx(0.03, abs=2e-3) and pos.shape == vel.shape == effort.shape == (5,)
    assert env.sim_time == pytest.approx(1.2, abs=1e-9)


def test_grasp_holds_while_carrying(env):
    expert = PickPlaceExpert(env, seed=0)
    obs, _ = env.reset(seed=11)
    expert.reset(mode="left")
    obs, info = _run_until(env, expert, obs, "lift")
    assert info["grasped"]
    offset = obs["object_pos"] - obs["ee_pos"]
    top = 0.0
    while True:  # lift and carry over the bin: the object moves with the grasp point
        obs, _, term, trunc, info = env.step(expert.act(obs))
        assert info["grasped"] and not info["dropped"]
        assert np.allclose(obs["object_pos"] - obs["ee_pos"], offset, atol=0.003)
        top = max(top, float(obs["object_pos"][2]))
        if expert._k * env.dt > next(s["t1"] for s in expert._segments if s["name"] == "carry"):
            break
    assert top - P.OBJECT_HALF_HEIGHT > P.BIN_RIM + 0.02  # carried well above the bins' rims
    assert np.linalg.norm(obs["object_pos"][:2] - P.BINS["left"]) < 0.03


def test_success_needs_the_object_released_inside_a_bin(env):
    expert = PickPlaceExpert(env, seed=0)
    obs, _ = env.reset(seed=4)
    expert.reset(mode="right")
    obs, info = _run_until(env, expert, obs, "open")
    assert info["bin"] == "right" and info["grasped"]  # inside the bin but still held: not yet
    assert not info["released"] and not info["success"]
    while True:
        obs, _, term, trunc, info = env.step(expert.act(obs))
        if term or trunc:
            break
    assert term and info["success"] and info["released"] and info["bin"] == "right"
    # the same object, put down on the table outside the bins: never a success
    obs, _ = env.reset(seed=4, options={"object_xy": [0.45, 0.2]})
    obs, info = _settle(env)
    assert info["bin"] is None and info["released"] and not info["success"]


def test_a_drop_between_the_bins_fails_and_ends_the_episode(env):
    expert = PickPlaceExpert(env, seed=0)
    obs, _ = env.reset(seed=2)
    expert.reset(mode="left")
    obs, info = _run_until(env, expert, obs, "carry")
    assert info["grasped"] and obs["object_pos"][2] - P.OBJECT_HALF_HEIGHT > 0.05
    env.set_gripper(P.GRIPPER_OPEN)  # let go over the table, between the bins
    for _ in range(20):
        obs, reward, term, trunc, info = env.step(np.append(env.command, P.GRIPPER_OPEN))
        if term:
            break
    assert term and info["dropped"] and not info["success"] and info["bin"] is None
    assert abs(obs["object_pos"][1]) < P.BINS["left"][1] - P.BIN_INNER_HALF
    # once dropped, putting it into a bin later does not count
    env.terminate_on_drop = False
    try:
        env.data.qpos[env._obj_qadr:env._obj_qadr + 3] = [*P.BINS["left"], 0.04]
        obs, info = _settle(env, 15)
        assert info["bin"] == "left" and info["dropped"] and not info["success"]
    finally:
        env.terminate_on_drop = True


def test_expert_succeeds_with_both_modes_from_the_same_start(env):
    results = [run_episode(env, PickPlaceExpert(env, seed=s), seed=100) for s in range(6)]
    results += [run_episode(env, PickPlaceExpert(env, seed=0), seed=100 + i) for i in range(6)]
    assert all(r["success"] and not r["dropped"] for r in results), results
    assert all(r["bin"] == r["mode"] for r in results)
    assert {r["mode"] for r in results[:6]} == {"left", "right"}  # one start state, both bins
    assert max(r["steps"] for r in results) <= env.max_episode_steps


def test_modes_share_the_pick_then_part(env):
    traj = {}
    for mode in ("left", "right"):
        obs, _ = env.reset(seed=21)
        expert = PickPlaceExpert(env, seed=3)
        expert.reset(mode=mode)
        actions = []
        while True:
            actions.append(expert.act(obs))
            obs, _, term, trunc, info = env.step(actions[-1])
            if term or trunc:
                break
        assert info["success"], mode
        traj[mode] = np.array(actions)
        assert np.max(np.abs(np.diff(traj[mode][:, :4], axis=0))) < 0.1  # within the node's max_step_rad
        pitch = traj[mode][10:, 1:4].sum(axis=1)
        assert np.allclose(pitch, TOOL_PITCH, atol=1e-3)  # pointing down once straightened
    n = min(len(traj["left"]), len(traj["right"]))
    same = np.all(np.isclose(traj["left"][:n], traj["right"][:n], atol=1e-6), axis=1)
    split = int(np.argmin(same))
    assert split > 20  # identical through approach, grasp and lift
    assert traj["left"][:, 0].max() > 0.3 and traj["right"][:, 0].min() < -0.3  # opposite pans


def test_the_average_of_both_modes_drops_the_object_between_the_bins(env):
    for seed in (0, 1, 2):
        r = run_averaged_episode(env, seed=seed, expert_seed=seed)
        assert not r["success"] and r["dropped"] and r["bin"] is None, r
        assert abs(r["object_pos"][1]) < P.BINS["left"][1] - P.BIN_INNER_HALF  # on the table in between


def test_render_shows_the_scene_and_episode_info_is_json():
    e = PickPlaceEnv(render=True, image_size=(96, 128))

    def red_centroid(img):
        r, g, b = (img[..., i].astype(int) for i in range(3))
        mask = (r > 150) & (g < 80) & (b < 80)
        assert mask.sum() >= 5, "the object is not visible"
        ys, xs = np.nonzero(mask)
        return np.array([xs.mean(), ys.mean()])

    try:
        obs, _ = e.reset(seed=0, options={"object_xy": [0.30, -0.05]})
        assert obs["image"].shape == (96, 128, 3) and obs["image"].dtype == np.uint8
        a = red_centroid(obs["image"])
        obs, _ = e.reset(seed=0, options={"object_xy": [0.38, 0.05]})
        assert np.linalg.norm(red_centroid(obs["image"]) - a) > 5
        assert e.render(size=(240, 320)).shape == (240, 320, 3)
        info = json.loads(json.dumps(e.episode_info()))
        assert info["gripper_joint"] == P.GRIPPER_JOINT and set(info["bins"]) == {"left", "right"}
        assert info["object_xy"] == pytest.approx([0.38, 0.05])
    finally:
        e.close()
    with pytest.raises(GenilError, match="render=False"):
        PickPlaceEnv(render=False).render()
