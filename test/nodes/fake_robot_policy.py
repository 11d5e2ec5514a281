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
