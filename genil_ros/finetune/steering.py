"""The diffusion policy driven by a noise policy, and the fine-tuned checkpoint that holds both.

:class:`SteeredPolicy` samples chunks as the policy node and the evaluator need them: the noise policy
draws x_T from the observation (no noise policy: x_T ~ N(0, I), the behaviour-cloned policy as it is), the
diffusion policy denoises it (``DiffusionPolicy.sample_actions(..., noise=x_T)``).

A fine-tuned checkpoint is a policy checkpoint directory (``policy/checkpoint.py``: it still loads as the
base policy) plus two files::

    noise_policy.safetensors   the noise policy and its critic
    finetune.json              format_version, kind, the noise policy's shape, the base checkpoint it was
                               trained for (path, sha256 of its EMA weights) and how (algorithm, reward,
                               iterations, task)

written as one directory with ``fileio.write_dir_atomically``. :func:`load_steered` refuses a noise policy
whose base weights differ from the ones beside it (the chunk of a given x_T would be another).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from genil_ros.errors import CheckpointError
from genil_ros.finetune.noise_policy import NoisePolicy
from genil_ros.policy.chunk_model import DiffusionChunkModel

__all__ = ["SteeredPolicy", "SteeredChunkModel", "save_finetuned", "load_steered", "load_noise_policy", "is_finetuned",
           "weights_sha256", "read_info"]

FORMAT_VERSION = 1
NOISE_FILE = "noise_policy.safetensors"
INFO_FILE = "finetune.json"
FINETUNE_FILES = (NOISE_FILE, INFO_FILE)
BASE_FILES = ("model.safetensors", "ema.safetensors", "config.yaml", "normalizer.json", "meta.json")


class SteeredPolicy:
    """``policy`` (a DiffusionPolicy) + an optional :class:`NoisePolicy`; numpy in, numpy out."""

    def __init__(self, policy, noise_policy: Optional[NoisePolicy] = None, seed: int = 0):
        self.policy = policy
        self.noise_policy = noise_policy
        self.device = policy.device
        self.camera_names = list(policy.camera_names)
        self.noise_shape = (policy.horizon, policy.action_dim)
        self.gen = torch.Generator(device=self.device).manual_seed(int(seed))
        if noise_policy is not None:
            noise_policy.to(self.device)

    @property
    def n_obs_steps(self) -> int:
        return self.policy.n_obs_steps

    @property
    def n_action_steps(self) -> int:
        return self.policy.n_action_steps

    def obs_dict(self, windows: np.ndarray, images: Optional[np.ndarray] = None) -> dict:
        """Observation windows (B, T_o, D) (+ images (B, T_o, 3, H, W) for a camera policy) as policy input."""
        obs = {"state": torch.as_tensor(np.asarray(windows, np.float32), device=self.device)}
        if self.camera_names:
            if images is None:
                raise ValueError(f"the policy needs camera {self.camera_names[0]!r} images")
            obs[self.camera_names[0]] = torch.as_tensor(np.asarray(images), device=self.device)
        return obs

    @torch.no_grad()
    def features(self, obs: dict) -> torch.Tensor:
        """The noise policy's input: the diffusion policy's global conditioning (B, F)."""
        return self.policy.encode_obs(obs).float()

    @torch.no_grad()
    def chunks(self, obs: dict, noise: torch.Tensor) -> torch.Tensor:
        """Chunks (B, K, T_p, A) for initial noise (B, K, T_p, A)."""
        return self.policy.sample_actions(obs, noise.shape[1], noise=noise)

    @torch.no_grad()
    def sample(self, obs: dict, num_samples: int = 1, deterministic: bool = False) -> dict:
        """K chunks per observation: ``{"chunks": (B, K, T_p, A), "noise": (B, K, T_p, A), "log_prob": (B, K)
        or None, "features": (B, F)}`` (torch tensors)."""
        B, K = obs["state"].shape[0], int(num_samples)
        feats = self.features(obs)
        if self.noise_policy is None:
            noise = torch.randn((B, K, *self.noise_shape), generator=self.gen, device=self.device)
            logp = None
        else:
            rep = feats.repeat_interleave(K, dim=0)
            flat, logp = self.noise_policy.act(rep, deterministic=deterministic, generator=self.gen)
            noise = flat.reshape(B, K, *self.noise_shape)
            logp = logp.reshape(B, K)
        return {"chunks": self.chunks(obs, noise), "noise": noise, "log_prob": logp, "features": feats}


# --------------------------------------------------------------------------- checkpoints


def weights_sha256(checkpoint_dir) -> str:
    """sha256 of a checkpoint's EMA weights file (what the node and the evaluator run)."""
    f = Path(checkpoint_dir) / "ema.safetensors"
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_finetuned(checkpoint_dir) -> bool:
    """True when the (checkpoint or training output) directory holds a noise policy (``genil-ros finetune``)."""
    from genil_ros.policy.checkpoint import resolve_checkpoint_dir

    try:
        return (resolve_checkpoint_dir(checkpoint_dir) / INFO_FILE).is_file()
    except CheckpointError:
        return False


def save_finetuned(target, base_dir, noise_policy: NoisePolicy, info: dict) -> Path:
    """Write ``target`` atomically: the base checkpoint's files, the noise policy and ``finetune.json``."""
    from safetensors.torch import save_file

    from genil_ros.fileio import atomic_write_json, write_dir_atomically
    from genil_ros.policy.checkpoint import resolve_checkpoint_dir

    base = resolve_checkpoint_dir(base_dir)
    sd = {k: v.detach().to("cpu").contiguous() for k, v in noise_policy.state_dict().items()}

    def fill(tmp: Path) -> None:
        for name in BASE_FILES:
            if (base / name).is_file():
                shutil.copyfile(base / name, tmp / name)
        save_file(sd, str(tmp / NOISE_FILE), metadata={"format_version": str(FORMAT_VERSION)})
        atomic_write_json(tmp / INFO_FILE, {"format_version": FORMAT_VERSION, "kind": "genil_ros.noise_policy",
                                            "noise_policy": noise_policy.describe(),
                                            "base_weights_sha256": weights_sha256(base), **info})

    return write_dir_atomically(Path(target), fill)


def read_info(checkpoint_dir) -> dict:
    f = Path(checkpoint_dir) / INFO_FILE
    try:
        info = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{f}: unreadable ({type(e).__name__}: {e})") from None
    v = info.get("format_version") if isinstance(info, dict) else None
    if not isinstance(v, int) or v < 1 or v > FORMAT_VERSION:
        raise CheckpointError(f"{f}: format_version {v!r} is not one this genil_ros reads (1..{FORMAT_VERSION})")
    if "noise_policy" not in info:
        raise CheckpointError(f"{f}: no 'noise_policy' entry")
    return info


def load_noise_policy(checkpoint_dir, policy) -> tuple[NoisePolicy, dict]:
    """The noise policy of a fine-tuned checkpoint, checked against its base weights and ``policy``'s shapes."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from genil_ros.adversarial.discriminators import load_module_strict

    d = Path(checkpoint_dir)
    info = read_info(d)
    if info.get("base_weights_sha256") != weights_sha256(d):
        raise CheckpointError(f"{d / INFO_FILE}: the noise policy was trained for other weights than "
                              f"{d / 'ema.safetensors'} (base_weights_sha256 differs)")
    try:
        net = NoisePolicy.from_description(info["noise_policy"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{d / INFO_FILE}: bad 'noise_policy' entry ({e})") from None
    if net.noise_shape != (policy.horizon, policy.action_dim):
        raise CheckpointError(f"{d / INFO_FILE}: noise shape {list(net.noise_shape)} does not fit the policy's "
                              f"chunks ({policy.horizon}, {policy.action_dim})")
    try:
        sd = load_file(str(d / NOISE_FILE))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{d / NOISE_FILE}: unreadable ({type(e).__name__}: {e})") from None
    load_module_strict(net, sd, str(d / NOISE_FILE))
    return net.eval(), info


def load_steered(checkpoint_dir, device="auto", seed: int = 0) -> SteeredPolicy:
    """A policy checkpoint as a :class:`SteeredPolicy`: with its noise policy when it is a fine-tuned one."""
    from genil_ros.policy.checkpoint import load_policy, resolve_checkpoint_dir

    d = resolve_checkpoint_dir(checkpoint_dir)
    policy = load_policy(d, device=device)
    noise = load_noise_policy(d, policy)[0] if is_finetuned(d) else None
    return SteeredPolicy(policy, noise, seed=seed)


class SteeredChunkModel(DiffusionChunkModel):
    """The policy node's model for a fine-tuned checkpoint: x_T from the noise policy, then the usual DDIM
    chain (the inference settings of ``DiffusionChunkModel``; the noise policy was trained for the DDIM
    steps of the checkpoint, so other steps or schedulers give other chunks than it learned to choose)."""

    def __init__(self, checkpoint: str, device: str = "auto", scheduler: str = "", steps: int = 0, seed: int = 0,
                 use_cuda_graph: bool = False, log=print, backend: str = "auto", threads: int = 0):
        super().__init__(checkpoint, device, scheduler, steps, seed, use_cuda_graph, log, backend, threads)
        self.prefix_methods = ()  # the noise policy chooses x_T; a committed prefix is not part of what it learned
        from genil_ros.policy.checkpoint import resolve_checkpoint_dir

        net, info = load_noise_policy(resolve_checkpoint_dir(self.checkpoint), self.policy)
        self.steered = SteeredPolicy(self.policy, net)
        self.steered.gen = self._gen
        self.info = info
        self.description += f", noise policy of `genil-ros finetune` ({info.get('algo', '?')}, " \
                            f"{info.get('iterations', '?')} iterations)"

    def sample_chunks(self, obs: dict, num_samples: int) -> np.ndarray:
        t_obs = {k: torch.from_numpy(np.ascontiguousarray(v))[None].to(self.steered.device) for k, v in obs.items()}
        out = self.steered.sample(t_obs, int(num_samples))
        return out["chunks"][0].detach().to("cpu", torch.float64).numpy()

    def __call__(self, obs: dict, prefix=None) -> np.ndarray:
        if prefix is not None:
            raise ValueError("a fine-tuned (noise-steered) checkpoint takes no committed prefix: use the "
                             "receding_horizon or temporal_ensemble handover")
        return self.sample_chunks(obs, 1)[0]
