"""The policy as the control loop sees it: one observation window in, one action chunk out (no ROS).

:class:`ChunkModel` is the interface every inference backend implements; the policy node, the bench
scripts and the tests only ever call it::

    model = load_chunk_model("models/sim_obstacle_dp", device="cpu")
    chunk = model(zero_obs(model.spec))          # (T_p, A) float64
    warm_up(model, "models/sim_obstacle_dp")     # one inference; CheckpointError on a failure or NaN

:class:`DiffusionChunkModel` is the PyTorch backend (eager, or with the denoising network captured in a
CUDA graph). Other backends (ONNX Runtime, TensorRT, ...) are further subclasses that fill in ``spec``,
``device`` and ``description`` and implement ``__call__``; :func:`load_chunk_model` is where a backend is
chosen. :class:`ModelSpec` is what the node needs to know about any of them (inputs, outputs, horizons).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from genil_ros.errors import CheckpointError, GenilError

__all__ = ["ModelSpec", "ChunkModel", "DiffusionChunkModel", "load_chunk_model", "zero_obs", "warm_up",
           "check_chunk"]


@dataclass
class ModelSpec:
    """What the node needs to know about a policy: its inputs, outputs and horizons."""

    joint_names: list[str]
    use_velocity: bool
    cameras: list  # genil_ros.config.CameraConfig: name, topic, height, width, compressed
    joint_states_topic: str
    control_rate_hz: float
    n_obs_steps: int  # T_o
    horizon: int  # T_p
    n_action_steps: int  # T_a

    @property
    def state_dim(self) -> int:
        return len(self.joint_names) * (2 if self.use_velocity else 1)

    @property
    def action_dim(self) -> int:
        return len(self.joint_names)

    @classmethod
    def from_config(cls, cfg) -> "ModelSpec":
        t = cfg.task
        return cls(list(t.joint_names), bool(t.use_velocity), list(t.cameras), t.joint_states_topic,
                   float(t.control_rate_hz), t.horizon.n_obs_steps, t.horizon.horizon, t.horizon.n_action_steps)

    def compatible(self, other: "ModelSpec") -> Optional[str]:
        """None when ``other`` can replace this model in a running node, else why not."""
        if other.joint_names != self.joint_names:
            return f"joint_names {other.joint_names} != {self.joint_names}"
        if other.use_velocity != self.use_velocity:
            return "use_velocity differs"
        mine = [(c.name, c.height, c.width) for c in self.cameras]
        theirs = [(c.name, c.height, c.width) for c in other.cameras]
        if mine != theirs:
            return f"cameras {theirs} != {mine}"
        if (other.n_obs_steps, other.horizon, other.n_action_steps) != (self.n_obs_steps, self.horizon,
                                                                         self.n_action_steps):
            return "horizons (T_o, T_p, T_a) differ"
        return None


class ChunkModel:
    """The node's view of a policy: ``model(obs) -> (T_p, A)`` float64 chunk for ONE observation window.

    ``obs`` = ``{"state": (T_o, D) float32, "<camera>": (T_o, 3, H, W) uint8}`` numpy arrays. A backend
    sets ``spec`` (:class:`ModelSpec`), ``device`` (where it runs, for the diagnostics) and
    ``description`` (one line for the logs) and implements ``__call__``. Calls come from one thread at
    a time (the node's inference worker), never from the executor.
    """

    spec: ModelSpec
    device: str = "cpu"
    description: str = ""
    prefix_methods: tuple = ()  # what a committed prefix can be used for ("inpaint", "condition")

    def __call__(self, obs: dict, prefix=None) -> np.ndarray:  # pragma: no cover - interface
        """``prefix``: a :class:`genil_ros.control.plan.Prefix` for the first entries (only when its method
        is in ``prefix_methods``)."""
        raise NotImplementedError


class DiffusionChunkModel(ChunkModel):
    """The PyTorch backend: a :class:`genil_ros.policy.DiffusionPolicy` loaded from a checkpoint directory."""

    def __init__(self, checkpoint: str, device: str = "auto", scheduler: str = "", steps: int = 0, seed: int = 0,
                 use_cuda_graph: bool = False, log: Callable[[str], None] = print):
        import torch

        from genil_ros.paths import model_path

        try:
            from genil_ros.policy.checkpoint import load_policy
        except ImportError as e:  # the policy package is part of this project; say what is missing
            raise CheckpointError(f"{checkpoint}: cannot load policies: {e}") from None
        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
            raise GenilError(f"parameter device: {device!r} is not auto, cpu or cuda")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise GenilError(f"parameter device: {device!r} but CUDA is not available (use auto or cpu)")
        path = str(model_path(checkpoint))
        policy = load_policy(path, device=device, use_ema=True)
        cfg = policy.cfg
        if scheduler or steps:
            try:
                policy.set_inference(scheduler or cfg.policy.inference_scheduler,
                                     int(steps or cfg.policy.num_inference_steps))
            except (ValueError, KeyError) as e:
                raise GenilError(f"parameters inference_scheduler / num_inference_steps: {e}") from None
        self.policy = policy
        self.spec = ModelSpec.from_config(cfg)
        self.device = str(policy.device)
        self._torch = torch
        self._gen = torch.Generator(device=policy.device)
        if seed is not None and int(seed) >= 0:
            self._gen.manual_seed(int(seed))
        else:
            self._gen.seed()
        self.cuda_graph = False
        if use_cuda_graph:
            if policy.device.type == "cuda" and hasattr(policy, "enable_cuda_graph"):
                self.cuda_graph = bool(policy.enable_cuda_graph(batch_size=1))
            else:
                log(f"use_cuda_graph: ignored on device {self.device} (CUDA graphs need a CUDA device)")
        self.checkpoint = path
        sched = getattr(policy, "inference_scheduler_name", cfg.policy.inference_scheduler)
        nsteps = getattr(policy, "num_inference_steps", cfg.policy.num_inference_steps)
        self.description = (f"{path} on {self.device} ({sched}, {nsteps} steps"
                            + (", CUDA graph" if self.cuda_graph else "") + ")")
        from genil_ros.policy.prefix import prefix_methods

        self.prefix_methods = prefix_methods(policy)  # prefixes need a diffusion policy sampling with DDIM

    def __call__(self, obs: dict, prefix=None) -> np.ndarray:
        from genil_ros.policy.prefix import PrefixBatch

        torch = self._torch
        t_obs = {k: torch.from_numpy(np.ascontiguousarray(v))[None] for k, v in obs.items()}
        spec = self.spec
        pb = PrefixBatch.stack([prefix], spec.horizon, spec.action_dim) if prefix is not None else None
        with torch.no_grad():  # not inference_mode: a CUDA graph's static buffers are normal tensors
            chunk = self.policy.predict_action(t_obs, generator=self._gen, prefix=pb)
        return chunk[0].detach().to("cpu", torch.float64).numpy()


def load_chunk_model(checkpoint: str, device: str = "auto", scheduler: str = "", steps: int = 0, seed: int = 0,
                     use_cuda_graph: bool = False, log: Callable[[str], None] = print) -> ChunkModel:
    """The policy in ``checkpoint`` (a directory or a shipped model name) behind the ChunkModel interface."""
    if not checkpoint:
        raise GenilError("parameter checkpoint: not set (a checkpoint directory written by `genil-ros train`)")
    return DiffusionChunkModel(checkpoint, device, scheduler, steps, seed, use_cuda_graph, log)


def zero_obs(spec: ModelSpec) -> dict:
    """An all-zero observation window of the model's shapes (for warm-up and tests)."""
    obs = {"state": np.zeros((spec.n_obs_steps, spec.state_dim), np.float32)}
    for c in spec.cameras:
        obs[c.name] = np.zeros((spec.n_obs_steps, 3, c.height, c.width), np.uint8)
    return obs


def warm_up(model: ChunkModel, where: str) -> float:
    """One inference on a zero observation; CheckpointError if it fails or gives NaN/Inf. Returns seconds."""
    t0 = time.perf_counter()
    try:
        chunk = check_chunk(model(zero_obs(model.spec)), model.spec, where=where)
    except GenilError:
        raise
    except Exception as e:
        raise CheckpointError(f"{where}: warm-up inference failed: {type(e).__name__}: {e}") from None
    if not np.all(np.isfinite(chunk)):
        raise CheckpointError(f"{where}: the policy outputs NaN/Inf (diverged weights?)")
    return time.perf_counter() - t0


def check_chunk(chunk: np.ndarray, spec: ModelSpec, where: str = "model") -> np.ndarray:
    """``chunk`` as float64, CheckpointError unless it is (T_p, action_dim)."""
    chunk = np.asarray(chunk, dtype=np.float64)
    if chunk.shape != (spec.horizon, spec.action_dim):
        raise CheckpointError(f"{where}: action chunk has shape {chunk.shape}, expected "
                              f"(T_p={spec.horizon}, {spec.action_dim})")
    return chunk
