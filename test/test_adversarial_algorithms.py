"""GAIL and AMP as objects: features, losses and rewards against hand-computed values, the sign convention
(expert is high, for both), the registry that turns adversarial.algo into an object, and the reward mix."""

import math
import typing

import numpy as np
import pytest
import torch

from genil_ros.adversarial.algorithms import ADVERSARIES, AMP, GAIL, Adversary, combine_rewards, make_adversary
from genil_ros.errors import DataError, GenilError

# --------------------------------------------------------------------------- losses and rewards, by hand


def test_gail_bce_matches_hand_computation():
    e = torch.tensor([0.0, 2.0])
    p = torch.tensor([-1.0, 3.0])
    # -log sigmoid(0) = log 2; -log sigmoid(2) = log(1 + e^-2); -log(1 - sigmoid(-1)) = log(1 + e^-1);
    # -log(1 - sigmoid(3)) = log(1 + e^3)
    want = (0.5 * (math.log(2) + math.log(1 + math.exp(-2)))
            + 0.5 * (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(3))))
    assert GAIL.loss(e, p).item() == pytest.approx(want, rel=1e-6)


def test_amp_least_squares_matches_hand_computation():
    e = torch.tensor([1.0, 0.0])  # (D - 1)^2 = 0, 1 -> mean 0.5
    p = torch.tensor([-1.0, 1.0])  # (D + 1)^2 = 0, 4 -> mean 2
    assert AMP.loss(e, p).item() == pytest.approx(0.5 * (0.5 + 2.0))


def test_gail_reward_is_minus_log_one_minus_d():
    logits = np.array([0.0, 1.0, -3.0, 40.0, -40.0])
    d = 1 / (1 + np.exp(-logits[:3]))
    r = GAIL.reward(logits)
    assert r.dtype == np.float32
    np.testing.assert_allclose(r[:3], -np.log(1 - d), rtol=1e-5)
    assert r[0] == pytest.approx(math.log(2), rel=1e-6)
    assert r[3] == pytest.approx(40.0, rel=1e-6) and 0 <= r[4] < 1e-15  # stable at the extremes
    rt = GAIL.reward(torch.tensor([0.0, 1.0]))
    np.testing.assert_allclose(rt.numpy(), r[:2], rtol=1e-6)


def test_amp_style_reward_hand_values():
    d = np.array([1.0, -1.0, 0.0, 2.0, 3.0, -3.0, 0.5])
    want = [1.0, 0.0, 0.75, 0.75, 0.0, 0.0, 1 - 0.25 * 0.25]
    np.testing.assert_allclose(AMP.reward(d), want, atol=1e-7)
    np.testing.assert_allclose(AMP.reward(torch.tensor(d)).numpy(), want, atol=1e-7)


def test_total_reward_weights():
    np.testing.assert_allclose(combine_rewards([1.0, -2.0], [0.5, 1.0], 0.3, 0.7), [0.3 + 0.35, -0.6 + 0.7], rtol=1e-6)


# --------------------------------------------------------------------------- sign convention


@pytest.mark.parametrize("cls", [GAIL, AMP])
def test_expert_is_high_for_both(cls):
    """Outputs that say "expert" (high) get the lower loss when on expert samples, the higher reward, and are
    judged expert; the boundary is 0."""
    hi, lo = torch.tensor([1.0]), torch.tensor([-1.0])
    assert cls.loss(hi, lo) < cls.loss(lo, hi)
    assert cls.reward(hi).item() > cls.reward(lo).item()
    assert cls.reward(np.array([0.9]))[0] > cls.reward(np.array([0.1]))[0] >= cls.reward(np.array([-0.9]))[0]
    out = np.array([-0.5, 0.0, 0.5])
    np.testing.assert_array_equal(cls.judged_expert(out), [False, False, True])
    np.testing.assert_array_equal(cls.judged_policy(out), [True, False, False])


def test_amp_loss_is_zero_at_its_targets_and_gail_loss_falls_with_confidence():
    assert AMP.loss(torch.tensor([1.0]), torch.tensor([-1.0])).item() == 0.0
    assert GAIL.loss(torch.tensor([5.0]), torch.tensor([-5.0])) < GAIL.loss(torch.tensor([1.0]), torch.tensor([-1.0]))


# --------------------------------------------------------------------------- features


def test_features_layout():
    s = np.array([[1.0, 2.0, 10.0, 20.0]])  # q = (1, 2), velocities (10, 20)
    a = np.array([[1.5, 1.0]])
    s2 = s + [[1, 2, 3, 4]]
    gail, amp = GAIL(num_joints=2), AMP(num_joints=2)
    np.testing.assert_allclose(gail.features(s, a, s2), [[1, 2, 10, 20, 0.5, -1.0]])  # [s, a - q]; s' unused
    np.testing.assert_allclose(amp.features(s, a, s2), [[1, 2, 10, 20, 1, 2, 3, 4]])  # [s, s' - s]; a unused
    np.testing.assert_allclose(amp.features(s, None, s2), amp.features(s, a, s2))
    assert gail.features(s, a, None).dtype == amp.features(s, None, s2).dtype == np.float32
    assert (gail.uses_action, gail.uses_next_state, amp.uses_action, amp.uses_next_state) == (True, False, False, True)
    pairs = {"state": [0, 1], "action": [0, 1]}
    assert gail.describe() == {"algo": "gail", "features": "[s, a - q]", "joint_pairs": pairs}
    assert amp.describe() == {"algo": "amp", "features": "[s, s' - s]", "joint_pairs": pairs}


def test_gail_pairs_the_task_joints_by_name_and_falls_back_to_s_a():
    from genil_ros.adversarial.algorithms import JointPairs
    from genil_ros.schema import ActionEntry, ObservationEntry, layout

    obs = [ObservationEntry("obj", "vector", "/obj", dims=["x"]),
           ObservationEntry("arm", "joint_position", joints=["j0", "j1", "j2"]),
           ObservationEntry("finger", "gripper", joints=["f"])]
    act = [ActionEntry("grip", "gripper", "/g", joints=["f"]),
           ActionEntry("arm", "joint_position", "/a", joints=["j2", "j0"])]
    pairs = JointPairs.from_layout(layout(obs, act))
    assert pairs == JointPairs(state=(3, 1), action=(1, 2))  # j2 -> state dim 3, j0 -> state dim 1
    gail = make_adversary("gail", pairs=pairs)
    s = np.array([[9.0, 1.0, 2.0, 3.0, 0.5]])  # obj, j0, j1, j2, finger
    a = np.array([[0.4, 3.5, 1.25]])  # grip, j2, j0
    np.testing.assert_allclose(gail.features(s, a), [[9, 1, 2, 3, 0.5, 0.4, 0.5, 0.25]])  # the gripper stays
    # no absolute joint targets (a twist, a vector, delta joints): plain [s, a]
    for other in ([ActionEntry("v", "twist", "/t")],
                  [ActionEntry("d", "joint_position", "/d", joints=["j0"], mode="delta", observation="arm")]):
        none = JointPairs.from_layout(layout(obs, other))
        assert none is None
        plain = make_adversary("gail", pairs=none)
        assert plain.feature_layout == "[s, a]" and plain.describe()["joint_pairs"] is None
        np.testing.assert_allclose(plain.features(s, a[:, :1]), [[9, 1, 2, 3, 0.5, 0.4]])
    assert JointPairs.from_dict(pairs.to_dict()) == pairs


def test_episode_features_from_datasets_and_logs():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(5, 2)).astype(np.float32)
    a = rng.normal(size=(5, 2)).astype(np.float32)
    dataset_ep = {"state": s, "action": a}
    logged_ep = {"state": s, "action": a, "next_state": s + 1}
    gail, amp = GAIL(2), AMP(2)
    np.testing.assert_allclose(gail.episodes_features([dataset_ep, logged_ep]), np.concatenate([np.c_[s, a - s]] * 2))
    # AMP: a dataset episode pairs consecutive ticks (4 transitions), a logged one knows each next state (5)
    f = amp.episodes_features([dataset_ep, logged_ep])
    np.testing.assert_allclose(f[:4], np.c_[s[:-1], s[1:] - s[:-1]], rtol=1e-6)
    np.testing.assert_allclose(f[4:], np.c_[s, np.ones_like(s)], rtol=1e-6)
    assert amp.episode_features({"state": s[:1], "action": a[:1]}, "x", 0) is None  # one tick: no transition


def test_episode_feature_errors_name_the_source():
    s = np.zeros((4, 2), np.float32)
    with pytest.raises(DataError, match=r"bag7: episode 0 has no 'action'"):
        GAIL(2).episodes_features([{"state": s}], where="bag7")
    with pytest.raises(DataError, match=r"bag7: episode 1 has 4 states but 3 actions"):
        GAIL(2).episodes_features([{"state": s, "action": s}, {"state": s, "action": s[:3]}], where="bag7")
    with pytest.raises(DataError, match=r"bag7: no usable state transitions"):
        AMP(2).episodes_features([{"state": s[:1]}], where="bag7")


# --------------------------------------------------------------------------- registry


def test_registry_turns_the_config_name_into_an_object():
    from genil_ros.adversarial.train import algo_names
    from genil_ros.config import AdversarialConfig

    assert set(ADVERSARIES) == set(typing.get_args(typing.get_type_hints(AdversarialConfig)["algo"]))
    assert set(algo_names()) == set(ADVERSARIES)
    for name, cls in ADVERSARIES.items():
        obj = make_adversary(name, 3)
        assert isinstance(obj, cls) and isinstance(obj, Adversary) and obj.name == name and obj.num_joints == 3
    with pytest.raises(GenilError, match=r"parameter algo: 'sac' is not one of gail, amp"):
        make_adversary("sac", 3, where="parameter algo")
