"""Checkpoint directories: safetensors weights + readable config / normalizer / meta, written atomically.

```
<dir>/model.safetensors    the trained weights
<dir>/ema.safetensors      the EMA weights (what load_policy uses by default)
<dir>/config.yaml          the full ExperimentConfig it was trained with (task entries included)
<dir>/normalizer.json      per-entry normalisation and per-dimension statistics of state and action
<dir>/meta.json            format_version, shapes, the task schema (entries + layout), created, git
                           commit, extra (epoch, step, losses...)
<dir>/training_state.pt    optional: optimiser / LR schedule / EMA state for --resume (torch.save;
                           read back only with weights_only=True)
```

The whole directory is written by :func:`genil_ros.fileio.write_dir_atomically`: filled as
``<dir>.tmp-<pid>`` and renamed into place, an existing checkpoint moved aside first and deleted only
after the rename succeeded, so a kill mid-save never leaves a half-written ``<dir>``: only a finished name
is a checkpoint, whatever files a temp directory holds. A leftover ``<dir>.old-<pid>`` (killed between the
two renames) is picked up by :func:`load_policy` when ``<dir>`` itself is missing.

Format versions: 2 records the task schema in meta.json (``schema``: ``observations``, ``actions``,
``layout``) and writes a per-entry normalizer.json. Format 1 checkpoints (config.yaml in the
``joint_names`` form, a min-max normalizer.json with ``state`` / ``action``) are migrated on load: their
config expands to the same entries, their normalizer is one min-max entry per field - what it meant.
"""

from __future__ import annotations

import datetime as _dt
import glob
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from genil_ros.errors import CheckpointError
from genil_ros.fileio import atomic_write_json, write_dir_atomically

__all__ = ["FORMAT_VERSION", "FILES", "save_checkpoint", "load_policy", "export_checkpoint", "read_meta",
           "resolve_checkpoint_dir", "check_task_compatible", "task_difference", "resolve_device",
           "load_training_state"]

FORMAT_VERSION = 2
FILES = ("model.safetensors", "ema.safetensors", "config.yaml", "normalizer.json", "meta.json")
TRAINING_STATE = "training_state.pt"

PathLike = Union[str, os.PathLike]


def resolve_device(device: Union[str, torch.device, None] = "auto") -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from genil_ros.errors import GenilError

        raise GenilError(f"device {str(device)!r} requested but CUDA is not available (use 'auto' or 'cpu')")
    return dev


def _git_commit() -> Optional[str]:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except Exception:  # noqa: BLE001 - no git, not a checkout: simply unknown
        return None


def _shapes(policy) -> dict:
    cfg = policy.cfg
    return {
        "state_dim": policy.state_dim,
        "action_dim": policy.action_dim,
        "n_obs_steps": policy.n_obs_steps,
        "horizon": policy.horizon,
        "n_action_steps": policy.n_action_steps,
        "joint_names": list(cfg.task.joint_names),
        "use_velocity": bool(cfg.task.use_velocity),
        "cameras": [{"name": c.name, "height": c.height, "width": c.width} for c in cfg.task.camera_entries],
        "obs_feature_dim": policy.obs_encoder.feature_dim,
        "num_parameters": sum(p.numel() for p in policy.parameters()),
    }


def _schema(task) -> dict:
    from genil_ros.schema import entries_to_dict

    return {**entries_to_dict(task.observations, task.actions), "layout": task.layout.to_dict()}


def _state_for_file(sd: Mapping[str, torch.Tensor]) -> dict:
    return {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}


def save_checkpoint(dir: PathLike, policy, ema_state: Optional[Mapping[str, torch.Tensor]] = None, cfg=None,
                    extra: Optional[Mapping[str, Any]] = None,
                    training_state: Optional[Mapping[str, Any]] = None) -> Path:
    """Write a checkpoint directory atomically. ``policy`` may be wrapped (DDP); ``ema_state`` is a full
    state dict of the policy with EMA weights (default: the model weights); ``cfg`` defaults to
    ``policy.cfg``; ``extra`` goes into meta.json; ``training_state`` (optimiser etc.) into
    training_state.pt."""
    from safetensors.torch import save_file

    from genil_ros.config import dump_config

    policy = getattr(policy, "module", policy)
    cfg = cfg if cfg is not None else policy.cfg

    def fill(tmp: Path) -> None:
        model_sd = _state_for_file(policy.state_dict())
        save_file(model_sd, str(tmp / "model.safetensors"), metadata={"format_version": str(FORMAT_VERSION)})
        ema_sd = _state_for_file(ema_state) if ema_state is not None else model_sd
        if set(ema_sd) != set(model_sd):
            raise ValueError("ema_state must have the same keys as the policy's state_dict")
        save_file(ema_sd, str(tmp / "ema.safetensors"), metadata={"format_version": str(FORMAT_VERSION)})
        (tmp / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
        (tmp / "normalizer.json").write_text(policy.normalizer.to_json(), encoding="utf-8")
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": "genil_ros.diffusion_policy",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": _git_commit(),
            "torch_version": torch.__version__,
            "shapes": _shapes(policy),
            "schema": _schema(cfg.task),
            "extra": dict(extra or {}),
        }
        atomic_write_json(tmp / "meta.json", meta)
        if training_state is not None:
            torch.save(dict(training_state), tmp / TRAINING_STATE)

    return write_dir_atomically(Path(dir), fill)


def resolve_checkpoint_dir(dir: PathLike) -> Path:
    """The checkpoint directory for ``dir``: itself, or ``dir/final`` for a training output directory,
    or a ``<dir>.old-*`` left behind by a save that was killed between its two renames."""
    p = Path(dir)
    if p.is_dir() and (p / "meta.json").is_file():
        return p
    if p.is_dir() and (p / "final" / "meta.json").is_file():
        return p / "final"
    if not p.exists():
        olds = sorted(glob.glob(glob.escape(str(p)) + ".old-*"))
        if olds and (Path(olds[-1]) / "meta.json").is_file():
            return Path(olds[-1])
        raise CheckpointError(f"{p}: checkpoint directory not found")
    if not p.is_dir():
        raise CheckpointError(f"{p}: not a checkpoint directory (it is a file)")
    raise CheckpointError(f"{p}: not a checkpoint directory (no meta.json; expected {', '.join(FILES)})")


def read_meta(dir: PathLike) -> dict:
    p = resolve_checkpoint_dir(dir)
    f = p / "meta.json"
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{f}: unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or "format_version" not in meta:
        raise CheckpointError(f"{f}: no format_version (not a genil_ros checkpoint)")
    v = meta["format_version"]
    if not isinstance(v, int) or v < 1:
        raise CheckpointError(f"{f}: invalid format_version {v!r}")
    if v > FORMAT_VERSION:
        raise CheckpointError(f"{f}: format_version {v} is newer than this genil_ros supports ({FORMAT_VERSION}); "
                              "upgrade genil_ros to load it")
    return meta


def task_difference(trained, task) -> Optional[str]:
    """None when ``task`` (a validated TaskConfig) observes and commands exactly what ``trained`` does, else
    the first difference: an entry (``Layout.first_difference``: name, type, dimensions, mode,
    normalisation), a camera size, or the observation / prediction horizons."""
    why = trained.layout.first_difference(task.layout)
    if why is not None:
        return why
    c0 = [(c.name, c.height, c.width) for c in trained.camera_entries]
    c1 = [(c.name, c.height, c.width) for c in task.camera_entries]
    if c0 != c1:
        return f"cameras (name, height, width) {c1} != the checkpoint's {c0}"
    h0, h1 = trained.horizon, task.horizon
    if (h1.n_obs_steps, h1.horizon) != (h0.n_obs_steps, h0.horizon):
        return (f"horizon (n_obs_steps, horizon) {(h1.n_obs_steps, h1.horizon)} != the checkpoint's "
                f"{(h0.n_obs_steps, h0.horizon)}")
    return None


def check_task_compatible(policy, task, where: str = "task") -> None:
    """Raise CheckpointError unless ``task`` (a TaskConfig, e.g. a node's config override) observes and
    commands exactly what ``policy`` was trained on, naming the first mismatching key."""
    why = task_difference(policy.cfg.task, task)
    if why is not None:
        raise CheckpointError(f"{where}: does not match the checkpoint: {why}")


def load_policy(dir: PathLike, device: Union[str, torch.device] = "auto", use_ema: bool = True, task=None):
    """Load a checkpoint directory -> DiffusionPolicy in eval mode on ``device``.

    ``task`` (optional TaskConfig) is checked against the checkpoint's task (CheckpointError naming the
    first mismatching entry key, camera or horizon). The policy's task is ``policy.cfg.task`` (entries
    filled, ``policy.layout``); a format-1 checkpoint is migrated in memory (see the module docstring)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from genil_ros.config import ConfigError, load_config
    from genil_ros.policy.diffusion import DiffusionPolicy
    from genil_ros.policy.normalizer import Normalizer

    p = resolve_checkpoint_dir(dir)
    meta = read_meta(p)
    needed = FILES
    if meta.get("inference_only"):
        if not use_ema:
            raise CheckpointError(f"{p}: an exported (inference-only) checkpoint holds the EMA weights only; "
                                  "load it with use_ema=True")
        needed = tuple(f for f in FILES if f != "model.safetensors")
    for name in needed:
        if not (p / name).is_file():
            raise CheckpointError(f"{p}: missing {name} (a checkpoint has {', '.join(needed)})")
    try:
        cfg = load_config(p / "config.yaml")
    except ConfigError as e:
        raise CheckpointError(f"{p}: config.yaml is not valid: {e}") from None
    try:
        norm_data = json.loads((p / "normalizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{p / 'normalizer.json'}: unreadable ({type(e).__name__}: {e})") from None
    normalizer = Normalizer.from_dict(norm_data, where=str(p / "normalizer.json"))
    dev = resolve_device(device)
    recorded = meta.get("schema")
    if recorded is not None:  # format 2: the schema in meta.json is the one config.yaml describes
        from genil_ros.schema import Layout

        try:
            why = Layout.from_dict(recorded["layout"]).first_difference(cfg.task.layout)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{p / 'meta.json'}: schema.layout is malformed ({type(e).__name__}: {e})") from None
        if why is not None:
            raise CheckpointError(f"{p}: meta.json's schema and config.yaml's task differ: {why}")
    policy = DiffusionPolicy(cfg)
    why = normalizer.first_difference(policy.layout)
    if why is not None:
        raise CheckpointError(f"{p / 'normalizer.json'}: does not fit config.yaml's task: {why}")
    policy.normalizer.load_from(normalizer)
    wfile = p / ("ema.safetensors" if use_ema else "model.safetensors")
    try:
        sd = load_file(str(wfile))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{wfile}: unreadable ({type(e).__name__}: {e})") from None
    own = policy.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [(k, tuple(sd[k].shape), tuple(v.shape)) for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k, got, want = wrong[0]
            parts.append(f"{len(wrong)} tensors have other shapes, e.g. {k}: {got} in the file, {want} for this config")
        if missing:
            parts.append(f"{len(missing)} tensors missing, e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors, e.g. {unexpected[0]}")
        raise CheckpointError(f"{wfile}: weights do not fit the network built from config.yaml "
                              f"(built for other shapes): " + "; ".join(parts))
    policy.load_state_dict(sd, strict=True)
    if task is not None:
        check_task_compatible(policy, task)
    policy.to(dev).eval()
    policy.checkpoint_meta = meta
    policy.checkpoint_dir = p
    return policy


def export_checkpoint(src: PathLike, dst: PathLike, dtype: str = "fp16") -> Path:
    """Write a deployment copy of a checkpoint: the EMA weights only (what the policy node runs), stored
    in ``dtype`` ("fp16" halves the size; loading casts back to float32), no optimiser state. Atomic."""
    from safetensors.torch import load_file, save_file

    table = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    if dtype not in table:
        raise CheckpointError(f"export dtype {dtype!r}: expected one of {', '.join(table)}")
    s = resolve_checkpoint_dir(src)
    meta = read_meta(s)
    load_policy(s, device="cpu")  # refuse to export anything that would not load
    sd = load_file(str(s / "ema.safetensors"))
    sd = {k: (v.to(table[dtype]) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}

    def fill(tmp: Path) -> None:
        save_file(sd, str(tmp / "ema.safetensors"), metadata={"format_version": str(FORMAT_VERSION)})
        for name in ("config.yaml", "normalizer.json"):
            shutil.copyfile(s / name, tmp / name)
        out_meta = dict(meta, inference_only=True, weights_dtype=dtype, exported_from=str(s),
                        exported=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        atomic_write_json(tmp / "meta.json", out_meta)

    return write_dir_atomically(Path(dst), fill)


def add_arguments(parser) -> None:  # `genil-ros export`
    parser.add_argument("--checkpoint", required=True, help="checkpoint (or training output) directory")
    parser.add_argument("--out", required=True, help="where the deployment checkpoint goes")
    parser.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"], help="weight storage type")


def run(args) -> int:
    out = export_checkpoint(args.checkpoint, args.out, args.dtype)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"exported {resolve_checkpoint_dir(args.checkpoint)} -> {out} ({size:.1f} MB, EMA weights in {args.dtype})")
    return 0


def load_training_state(dir: PathLike) -> Optional[dict]:
    """The optimiser / schedule / EMA state saved for --resume (weights_only load), or None."""
    f = Path(dir) / TRAINING_STATE
    if not f.is_file():
        return None
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        from genil_ros.policy.load_errors import load_error_reason

        raise CheckpointError(f"{f}: cannot read the training state ({load_error_reason(e)})") from None
