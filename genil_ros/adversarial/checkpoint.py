"""Adversarial checkpoints: a directory with safetensors tensors and a readable ``meta.json``.

::

    <dir>/disc.safetensors     discriminator weights + input normaliser (+ optimiser state, replay buffer)
    <dir>/policy.safetensors   PPO actor-critic (+ optimiser state)      (train-adversarial only)
    <dir>/meta.json            format_version, algo, feature layout, joint names, counters, created
    <dir>/config.yaml          the experiment config it was trained with

Written atomically: a sibling temp directory is filled and renamed over the old one (the previous
checkpoint stays in place until the rename succeeded). Loading never unpickles anything.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Optional

import torch

from genil_ros.errors import CheckpointError

FORMAT_VERSION = 1

__all__ = ["FORMAT_VERSION", "save_checkpoint_dir", "load_checkpoint_dir", "atomic_write_text"]


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_checkpoint_dir(directory, tensors: dict[str, dict[str, torch.Tensor]], meta: dict,
                        config_yaml: Optional[str] = None) -> Path:
    """Write ``{file stem: tensors}`` as ``<stem>.safetensors`` plus ``meta.json`` atomically."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = d.with_name(f"{d.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for stem, ts in tensors.items():
            save_file({k: v.detach().contiguous().cpu() for k, v in ts.items()}, str(tmp / f"{stem}.safetensors"))
        meta = dict(meta, format_version=FORMAT_VERSION, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
        if config_yaml is not None:
            (tmp / "config.yaml").write_text(config_yaml, encoding="utf-8")
        old = d.with_name(f"{d.name}.old-{os.getpid()}")
        if d.exists():
            os.replace(d, old)
        os.replace(tmp, d)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return d


def load_checkpoint_dir(directory, stems: tuple[str, ...] = ("disc",)) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
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
    ver = meta.get("format_version")
    if not isinstance(ver, int) or ver > FORMAT_VERSION:
        raise CheckpointError(f"{mp}: format_version {ver!r} is not supported (this genil_ros reads <= {FORMAT_VERSION})")
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
