"""Diffusion policy (Chi et al. 2023): conditional 1-D U-Net with FiLM, ResNet-18/GroupNorm vision encoder,
per-entry normalizer (min-max, mean/std, none), diffusers schedulers, safetensors checkpoints and the
`genil-ros train` command.

Plain PyTorch, no rclpy. Heavy modules load on first use::

    from genil_ros.policy import DiffusionPolicy, load_policy, save_checkpoint
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DiffusionPolicy": "genil_ros.policy.diffusion",
    "make_scheduler": "genil_ros.policy.diffusion",
    "ConditionalUnet1D": "genil_ros.policy.model",
    "Normalizer": "genil_ros.policy.normalizer",
    "ObsEncoder": "genil_ros.policy.vision",
    "ImageEncoder": "genil_ros.policy.vision",
    "save_checkpoint": "genil_ros.policy.checkpoint",
    "load_policy": "genil_ros.policy.checkpoint",
    "read_meta": "genil_ros.policy.checkpoint",
    "check_task_compatible": "genil_ros.policy.checkpoint",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'genil_ros.policy' has no attribute {name!r}")
