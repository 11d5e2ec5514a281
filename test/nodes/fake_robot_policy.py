"""A small, real diffusion-policy checkpoint for the fake robot's joints, written with the project's own
save_checkpoint (untrained weights, a normalizer fitted to the robot's joint range). Used by the policy
node tests and bench/ros_latency.py; importable by path (``sys.path.insert(0, "test/nodes")``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def make_checkpoint(path, joints: Sequence[str] = ("a", "b", "c"), camera: bool = False, image_hw=(32, 32),
                    compressed: bool = False, camera_topic: str = "/camera/image_raw", seed: int = 0,
                    horizon=(2, 8, 4), control_rate_hz: float = 10.0, inference_steps: int = 5,
                    action_range=(-1.0, 1.0), down_dims=(16, 32), nan_weights: bool = False) -> Path:
    import torch

    from genil_ros.config import config_from_dict
    from genil_ros.policy import DiffusionPolicy, save_checkpoint

    cams = [{"name": "front", "topic": camera_topic, "height": image_hw[0], "width": image_hw[1],
             "compressed": compressed}] if camera else []
    cfg = config_from_dict({
        "task": {"joint_names": list(joints), "cameras": cams, "control_rate_hz": control_rate_hz,
                 "horizon": {"n_obs_steps": horizon[0], "horizon": horizon[1], "n_action_steps": horizon[2]}},
        "policy": {"down_dims": list(down_dims), "diffusion_step_embed_dim": 16, "num_inference_steps": inference_steps,
                   "vision": {"feature_dim": 16, "num_keypoints": 8}},
    }, source="fake_robot_policy")
    torch.manual_seed(seed)
    policy = DiffusionPolicy(cfg)
    n = len(joints)
    lo, hi = action_range
    policy.normalizer.fit("state", [lo] * n, [hi] * n)
    policy.normalizer.fit("action", [lo] * n, [hi] * n)
    if nan_weights:  # a diverged training run
        with torch.no_grad():
            for prm in policy.model.parameters():
                prm.fill_(float("nan"))
    return save_checkpoint(Path(path), policy, extra={"note": "untrained test checkpoint"})


# A typed task with every observation and action type but cameras: what the typed node tests run.
TYPED_OBSERVATIONS = [
    {"name": "arm", "type": "joint_position", "joints": ["a", "b", "c"]},
    {"name": "arm_vel", "type": "joint_velocity", "joints": ["a", "b", "c"]},
    {"name": "gripper", "type": "gripper", "topic": "/gripper/joint_states", "joints": ["finger_joint"]},
    {"name": "ee", "type": "pose", "topic": "/tcp_pose", "frame_id": "base"},
    {"name": "ft", "type": "wrench", "topic": "/ft_sensor/wrench", "frame_id": "tool0"},
    {"name": "obj", "type": "vector", "topic": "/object/position", "dims": ["x", "y", "z"]},
]
TYPED_ACTIONS = [
    {"name": "arm", "type": "joint_position", "joints": ["a", "b", "c"], "msg": "joint_trajectory",
     "topic": "/joint_trajectory_controller/joint_trajectory"},
    {"name": "gripper", "type": "gripper", "joints": ["finger_joint"], "topic": "/gripper/commands", "binary": True,
     "open_position": 0.04, "closed_position": 0.0},
    {"name": "servo", "type": "twist", "topic": "/servo_node/delta_twist_cmds", "frame_id": "base"},
    {"name": "target", "type": "pose", "topic": "/target_pose", "frame_id": "base"},
    {"name": "vec", "type": "vector", "topic": "/vec_cmd", "dims": ["u", "v"]},
]


def make_typed_checkpoint(path, observations=None, actions=None, seed: int = 0, horizon=(2, 8, 4),
                          inference_steps: int = 5) -> Path:
    """A small untrained checkpoint of a typed task (default: every low-dim observation and action type),
    normalised to [-1, 1] in every dimension."""
    import torch

    from genil_ros.config import config_from_dict
    from genil_ros.policy import DiffusionPolicy, save_checkpoint

    cfg = config_from_dict({
        "task": {"observations": observations or TYPED_OBSERVATIONS, "actions": actions or TYPED_ACTIONS,
                 "control_rate_hz": 10.0,
                 "horizon": {"n_obs_steps": horizon[0], "horizon": horizon[1], "n_action_steps": horizon[2]}},
        "policy": {"down_dims": [16, 32], "diffusion_step_embed_dim": 16, "num_inference_steps": inference_steps},
    }, source="fake_robot_policy")
    torch.manual_seed(seed)
    policy = DiffusionPolicy(cfg)
    stats = {k: {"min": [-1.0] * n, "max": [1.0] * n, "mean": [0.0] * n, "std": [0.5] * n}
             for k, n in (("state", cfg.task.state_dim), ("action", cfg.task.action_dim))}
    policy.fit_normalizer(stats)  # per entry (a binary gripper is not normalised)
    return save_checkpoint(Path(path), policy, extra={"note": "untrained typed test checkpoint"})


class _RunsCode:
    """Unpickling this runs a shell command: what a malicious weights file does."""

    def __reduce__(self):
        import os

        return (os.system, ("echo this should never run",))


def make_checkpoint_naming_a_code_pickle(path, **kwargs) -> Path:
    """A camera checkpoint whose config.yaml names as its pretrained backbone weights a pickle with code
    in it (``<path>.r18.pth``): loading it must refuse that file."""
    import pickle

    import yaml

    ck = make_checkpoint(path, camera=True, **kwargs)
    evil = Path(f"{path}.r18.pth")
    evil.write_bytes(pickle.dumps(_RunsCode(), protocol=2))
    cfg = yaml.safe_load((ck / "config.yaml").read_text())
    cfg["policy"]["vision"]["pretrained_weights"] = str(evil)
    (ck / "config.yaml").write_text(yaml.safe_dump(cfg))
    return ck
