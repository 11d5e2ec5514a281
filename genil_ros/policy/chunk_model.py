"""The policy as the control loop sees it: one observation window in, one action chunk out (no ROS).

:class:`ChunkModel` is the interface every inference backend implements; the policy node, the bench
scripts and the tests only ever call it::

    model = load_chunk_model("models/sim_obstacle_dp", device="cpu", backend="auto", threads=0)
    chunk = model(zero_obs(model.spec))          # (T_p, A) float64
    warm_up(model, "models/sim_obstacle_dp")     # one inference; CheckpointError on a failure or NaN

:class:`DiffusionChunkModel` is a diffusion policy loaded from a checkpoint, its networks on an inference
backend (policy/backends.py: torch eager, CUDA graph, ONNX Runtime; ``auto`` chooses) with an intra-op
thread count (policy/threads.py; 0 = the default plan, never more than the cores available). Other
models are further subclasses that fill in ``spec``, ``device``, ``backend``, ``threads`` and
``description`` and implement ``__call__``. :class:`ModelSpec` is what the node needs to know about any
of them (inputs, outputs, horizons).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from genil_ros.errors import CheckpointError, GenilError
from genil_ros.schema import Layout, layout

__all__ = ["ModelSpec", "ChunkModel", "DiffusionChunkModel", "load_chunk_model", "zero_obs", "warm_up",
           "check_chunk"]


@dataclass
class ModelSpec:
    """What the node needs to know about a policy: the task schema it was trained on (its observation and
    action entries, and so the layout of its ``state`` / ``action`` vectors and its cameras), the control
    rate and the horizons."""

    observations: list  # genil_ros.schema.ObservationEntry, in the recorded order
    actions: list  # genil_ros.schema.ActionEntry, in the recorded order
    control_rate_hz: float
    n_obs_steps: int  # T_o
    horizon: int  # T_p
    n_action_steps: int  # T_a
    joint_states_topic: str = "/joint_states"  # the task's JointState topic (the node's joint_states_topic replaces it)
    legacy: bool = False  # the task was written in the joint_names form (its one action is "joints")

    @property
    def layout(self) -> Layout:
        return layout(self.observations, self.actions)

    @property
    def state_dim(self) -> int:
        return self.layout.state_dim

    @property
    def action_dim(self) -> int:
        return self.layout.action_dim

    @property
    def cameras(self) -> list:
        """The camera observation entries (name, topic, height, width, compressed), in order."""
        return [o for o in self.observations if o.is_camera]

    @classmethod
    def from_config(cls, cfg) -> "ModelSpec":
        t = cfg.task
        return cls(list(t.observations), list(t.actions), float(t.control_rate_hz), t.horizon.n_obs_steps,
                   t.horizon.horizon, t.horizon.n_action_steps, t.joint_states_topic, bool(t.joint_names))

    def compatible(self, other: "ModelSpec") -> Optional[str]:
        """None when ``other`` can replace this model in a running node, else why not (the first entry
        that differs, a camera size, or the horizons)."""
        why = self.layout.first_difference(other.layout)
        if why:
            return why
        mine = [(c.name, c.height, c.width) for c in self.cameras]
        theirs = [(c.name, c.height, c.width) for c in other.cameras]
        if mine != theirs:
            return f"cameras (name, height, width) {theirs} != {mine}"
        if (other.n_obs_steps, other.horizon, other.n_action_steps) != (self.n_obs_steps, self.horizon,
                                                                         self.n_action_steps):
            return "horizons (T_o, T_p, T_a) differ"
        return None


class ChunkModel:
    """The node's view of a policy: ``model(obs) -> (T_p, A)`` float64 chunk for ONE observation window.

    ``obs`` = ``{"state": (T_o, D) float32, "<camera>": (T_o, 3, H, W) uint8}`` numpy arrays. A model
    sets ``spec`` (:class:`ModelSpec`), ``device`` (where it runs), ``backend`` and ``threads`` (what
    runs it: engine and providers; the thread plan; for the diagnostics) and ``description`` (one line
    for the logs) and implements ``__call__``. Calls come from one thread at a time (the node's
    inference worker), never from the executor.
    """

    spec: ModelSpec
    device: str = "cpu"
    backend: str = ""
    threads: str = ""
    description: str = ""
    prefix_methods: tuple = ()  # what a committed prefix can be used for ("inpaint", "condition")

    def __call__(self, obs: dict, prefix=None) -> np.ndarray:  # pragma: no cover - interface
        """``prefix``: a :class:`genil_ros.control.plan.Prefix` for the first entries (only when its method
        is in ``prefix_methods``)."""
        raise NotImplementedError

    def prefetch(self, obs: dict) -> None:
        """Optional: prepare what a later call will reuse from ``obs`` (e.g. encode its camera frames,
        which the next windows hold again). Called on the inference worker when it is idle."""


class DiffusionChunkModel(ChunkModel):
    """A :class:`genil_ros.policy.DiffusionPolicy` loaded from a checkpoint directory, on the inference
    backend ``backend`` (one of ``backends.BACKEND_CHOICES``) with ``threads`` intra-op threads."""

    def __init__(self, checkpoint: str, device: str = "auto", scheduler: str = "", steps: int = 0, seed: int = 0,
                 use_cuda_graph: bool = False, log: Callable[[str], None] = print, backend: str = "auto",
                 threads: int = 0):
        import torch

        from genil_ros.paths import model_path
        from genil_ros.policy.backends import BACKEND_CHOICES, FALLBACK_WARNING, choose_backend
        from genil_ros.policy.threads import ThreadPlan

        try:
            from genil_ros.policy.checkpoint import load_policy
        except ImportError as e:  # the policy package is part of this project; say what is missing
            raise CheckpointError(f"{checkpoint}: cannot load policies: {e}") from None
        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
            raise GenilError(f"parameter device: {device!r} is not auto, cpu or cuda")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise GenilError(f"parameter device: {device!r} but CUDA is not available (use auto or cpu)")
        if backend not in BACKEND_CHOICES:
            raise GenilError(f"parameter backend: {backend!r} is not one of {', '.join(BACKEND_CHOICES)}")
        try:
            plan = ThreadPlan.choose(int(threads))
        except ValueError as e:
            raise GenilError(f"parameter threads: {e}") from None
        if backend == "onnxruntime" and device == "auto":
            device = "cpu"  # ONNX Runtime's own providers use the GPU; the policy's arithmetic stays on the CPU
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
        if use_cuda_graph and backend in ("auto", "torch"):
            if policy.device.type == "cuda":
                backend = "cuda_graph"
            else:
                log(f"use_cuda_graph: ignored on device {self.device} (CUDA graphs need a CUDA device)")
        try:
            chosen, why = choose_backend(backend, policy, plan)
        except GenilError as e:
            raise GenilError(f"parameter backend: {backend}: {e}") from None
        policy.set_backend(chosen)
        if policy.camera_names:  # each frame is encoded once, not once per window (see prefetch)
            policy.enable_frame_cache()
        if FALLBACK_WARNING in why:  # an export is there but stale or corrupt (no export at all is normal)
            log(f"backend {why}")
        self.cuda_graph = chosen.name == "cuda_graph"
        self.backend = chosen.engine()
        self.threads = plan.describe()
        self.checkpoint = path
        sched = getattr(policy, "inference_scheduler_name", cfg.policy.inference_scheduler)
        nsteps = getattr(policy, "num_inference_steps", cfg.policy.num_inference_steps)
        self.description = f"{path} on {self.device} ({sched}, {nsteps} steps; {why}; {plan.describe()})"
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

    def prefetch(self, obs: dict) -> None:
        """Encode the window's newest camera frames into the frame cache: with T_o = 2 they are the older
        frames of the next window, so the next inference encodes only its own newest ones."""
        if self.policy.camera_names:
            newest = {name: self._torch.from_numpy(np.ascontiguousarray(obs[name][-1:]))[None]
                      for name in self.policy.camera_names}
            self.policy.prefetch(newest)

    def sample_chunks(self, obs: dict, num_samples: int) -> np.ndarray:
        """``num_samples`` chunks for one window in one batched pass: (K, T_p, A) float64 (guided selection)."""
        torch = self._torch
        t_obs = {k: torch.from_numpy(np.ascontiguousarray(v))[None] for k, v in obs.items()}
        with torch.no_grad():
            chunks = self.policy.sample_actions(t_obs, int(num_samples), generator=self._gen)
        return chunks[0].detach().to("cpu", torch.float64).numpy()


def load_chunk_model(checkpoint: str, device: str = "auto", scheduler: str = "", steps: int = 0, seed: int = 0,
                     use_cuda_graph: bool = False, log: Callable[[str], None] = print, backend: str = "auto",
                     threads: int = 0) -> ChunkModel:
    """The policy in ``checkpoint`` (a directory or a shipped model name) behind the ChunkModel interface,
    on inference ``backend`` (auto | torch | cuda_graph | onnxruntime) with ``threads`` intra-op threads."""
    if not checkpoint:
        raise GenilError("parameter checkpoint: not set (a checkpoint directory written by `genil-ros train`)")
    from genil_ros.finetune.steering import SteeredChunkModel, is_finetuned
    from genil_ros.paths import model_path

    args = (checkpoint, device, scheduler, steps, seed, use_cuda_graph, log, backend, threads)
    if is_finetuned(model_path(checkpoint)):  # `genil-ros finetune` output: the policy and its noise policy
        return SteeredChunkModel(*args)
    return DiffusionChunkModel(*args)


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
