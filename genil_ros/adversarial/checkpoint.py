"""Adversarial checkpoints: a directory with safetensors tensors and a readable ``meta.json``.

::

    <dir>/disc.safetensors     discriminator weights + input normaliser (+ optimiser state, replay buffer)
    <dir>/policy.safetensors   PPO actor-critic (+ optimiser state)      (train-adversarial only)
    <dir>/meta.json            format_version, created, kind, algo, features, feature_dim, joint names,
                               state layout, counters (DiscriminatorTrainer.describe + the caller's)
    <dir>/config.yaml          the experiment config it was trained with

Written with :func:`genil_ros.fileio.write_dir_atomically` (the previous checkpoint stays whole until the
new one is complete). Loading never unpickles anything.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import torch

from genil_ros.errors import CheckpointError
from genil_ros.fileio import write_dir_atomically

FORMAT_VERSION = 1

__all__ = ["FORMAT_VERSION", "save_checkpoint_dir", "load_checkpoint_dir"]


def save_checkpoint_dir(directory, tensors: dict[str, dict[str, torch.Tensor]], meta: dict,
                        config_yaml: Optional[str] = None) -> Path:
    """Write ``{file stem: tensors}`` as ``<stem>.safetensors`` plus ``meta.json`` (and ``config.yaml``)
    atomically into ``directory``."""
    from safetensors.torch import save_file

    meta = dict(meta, format_version=FORMAT_VERSION, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def fill(tmp: Path) -> None:
        for stem, ts in tensors.items():
            save_file({k: v.detach().contiguous().cpu() for k, v in ts.items()}, str(tmp / f"{stem}.safetensors"))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
        if config_yaml is not None:
            (tmp / "config.yaml").write_text(config_yaml, encoding="utf-8")

    return write_dir_atomically(directory, fill)


def load_checkpoint_dir(directory, stems: tuple[str, ...] = ("disc",)
                        ) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """(meta, {stem: tensors}); CheckpointError naming the file for anything missing or unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"{d}: no such checkpoint directory")
    mp = d / "meta.json"
    try:
        meta = json.loads(mp.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{mp}: missing (not an adversarial checkpoint?)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{mp}: invalid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{mp}: expected a JSON object, got {type(meta).__name__}")
    ver = meta.get("format_version")
    if not isinstance(ver, int) or ver > FORMAT_VERSION:
        raise CheckpointError(f"{mp}: format_version {ver!r} is not supported "
                              f"(this genil_ros reads <= {FORMAT_VERSION})")
    out = {}
    for stem in stems:
        f = d / f"{stem}.safetensors"
        if not f.is_file():
            raise CheckpointError(f"{f}: missing")
        try:
            out[stem] = load_file(str(f))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{f}: cannot read safetensors: {e}") from None
    return meta, out
