"""DiffusionPolicy: observation encoder + conditional 1-D U-Net + diffusers noise schedulers.

Training (``compute_loss``, also ``forward`` so DDP hooks see it): add DDPM noise at a random step to the
normalised action chunk and regress the noise (``epsilon``) or the clean chunk (``sample``).
``policy.objective: mse`` turns the same network into the plain regression baseline (one pass, MSE to the
chunk, no noise), so that the two differ only in the objective.
Inference (``predict_action`` / ``sample_actions``): start from Gaussian noise and denoise with DDPM,
DDIM or DPM-Solver for ``num_inference_steps``; the observation is encoded once per call, K samples
per observation share it. Inputs and outputs are in raw units (see docs/interfaces.md). DDIM runs on
precomputed coefficients (policy/sampler.py) and can be warm-started from the previous chunk for a few
steps (``warm_start=``, ``steps=``). The networks run on an inference backend (policy/backends.py:
torch eager, CUDA graph, ONNX Runtime), chosen with :meth:`DiffusionPolicy.set_backend`.
"""

from __future__ import annotations

import copy
import inspect
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from genil_ros.config import ExperimentConfig
from genil_ros.policy.backends import CudaGraphBackend, InferenceBackend, TorchBackend
from genil_ros.policy.model import ConditionalUnet1D
from genil_ros.policy.normalizer import Normalizer
from genil_ros.policy.sampler import FastDdim, supports_fast_ddim
from genil_ros.policy.vision import ObsEncoder

__all__ = ["DiffusionPolicy", "make_scheduler", "SCHEDULERS"]

SCHEDULERS = ("ddpm", "ddim", "dpmsolver")


def make_scheduler(kind: str, num_train_timesteps: int = 100, beta_schedule: str = "squaredcos_cap_v2",
                   prediction_type: str = "epsilon", clip_sample: bool = True):
    """A diffusers scheduler over the training noise schedule. ``clip_sample``: DDPM / DDIM clip their
    predicted clean sample to [-1, 1] (only right when every action dimension is normalised into it)."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    common = dict(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, prediction_type=prediction_type)
    if kind == "ddpm":
        return DDPMScheduler(**common, clip_sample=clip_sample, variance_type="fixed_small")
    if kind == "ddim":
        return DDIMScheduler(**common, clip_sample=clip_sample, set_alpha_to_one=True, steps_offset=0)
    if kind == "dpmsolver":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                           lower_order_final=True)
    raise ValueError(f"unknown scheduler {kind!r} (expected one of {', '.join(SCHEDULERS)})")


class DiffusionPolicy(nn.Module):
    """Diffusion Policy for one task (``cfg.task``), network ``cfg.policy``.

    ``normalizer`` must be fitted (:meth:`fit_normalizer` with ``store.stats(layout)``) before training; a
    loaded checkpoint brings its own. ``cfg.task`` (validated: its ``observations`` / ``actions`` filled)
    is the task the policy serves; ``layout`` says where each entry sits in ``state`` and ``action``.
    """

    def __init__(self, cfg: ExperimentConfig):
        super().__init__()
        self.cfg = copy.deepcopy(cfg)
        task, pc = self.cfg.task, self.cfg.policy
        if not task.actions:
            raise ValueError("the config's task has no entries: validate it first (config_from_dict / load_config)")
        self.layout = task.layout
        self.state_dim = task.state_dim
        self.action_dim = task.action_dim
        self.n_obs_steps = task.horizon.n_obs_steps
        self.horizon = task.horizon.horizon
        self.n_action_steps = task.horizon.n_action_steps
        cameras = task.camera_entries
        self.camera_names = [c.name for c in cameras]
        # DDPM / DDIM clip the predicted clean chunk to [-1, 1]: right only when every action entry is
        # normalised into it (minmax, or a binary gripper's 0 / 1); the final chunk is clamped per entry anyway
        self.clip_sample = all(a.norm == "minmax" or (a.binary and a.norm == "none") for a in task.actions)
        self.normalizer = Normalizer()
        self.obs_encoder = ObsEncoder(self.state_dim, cameras, pc.vision, self.n_obs_steps)
        self.model = ConditionalUnet1D(
            input_dim=self.action_dim, global_cond_dim=self.obs_encoder.output_dim,
            diffusion_step_embed_dim=pc.diffusion_step_embed_dim, down_dims=pc.down_dims,
            kernel_size=pc.kernel_size, n_groups=pc.n_groups, cond_predict_scale=pc.cond_predict_scale,
        )
        self.prediction_type = pc.prediction_type
        self.objective = pc.objective
        self.noise_scheduler = make_scheduler("ddpm", pc.num_train_timesteps, pc.beta_schedule, pc.prediction_type)
        self.inference_dtype: Optional[torch.dtype] = None  # autocast dtype for the network at inference
        self.backend: InferenceBackend = TorchBackend(self)
        self.set_inference(pc.inference_scheduler, pc.num_inference_steps)

    # ----------------------------------------------------------------- settings
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def set_inference(self, scheduler: str = "ddim", steps: int = 10) -> None:
        """Choose the sampler ("ddim" | "ddpm" | "dpmsolver") and its number of denoising steps."""
        n = self.cfg.policy.num_train_timesteps
        if not isinstance(steps, int) or not 1 <= steps <= n:
            raise ValueError(f"num_inference_steps {steps!r} must be an int in 1..num_train_timesteps = {n}")
        pc = self.cfg.policy
        self.inference_scheduler = make_scheduler(scheduler, n, pc.beta_schedule, pc.prediction_type,
                                                  clip_sample=self.clip_sample)
        self.inference_scheduler_name = scheduler
        self.num_inference_steps = steps
        self._step_takes_generator = "generator" in inspect.signature(self.inference_scheduler.step).parameters
        # DDIM (eta 0): the same chain on coefficients computed once per number of steps
        self._fast = FastDdim(self.inference_scheduler) if supports_fast_ddim(self.inference_scheduler) else None

    def set_backend(self, backend: Optional[InferenceBackend] = None) -> InferenceBackend:
        """Run the networks on ``backend`` (policy/backends.py; None = eager torch). Returns it."""
        self.backend = backend if backend is not None else TorchBackend(self)
        return self.backend

    def set_inference_precision(self, dtype: Optional[str | torch.dtype] = None) -> None:
        """Run the networks under autocast in ``dtype`` ("fp16", "bf16") at inference; None = float32.
        The scheduler arithmetic stays in float32."""
        table = {None: None, "fp32": None, "no": None, "fp16": torch.float16, "bf16": torch.bfloat16}
        self.inference_dtype = table[dtype] if not isinstance(dtype, torch.dtype) else dtype

    def fit_normalizer(self, stats) -> None:
        """Fit the normalizer per entry of the task's layout from ``{"state": {"min", "max", "mean", "std"},
        "action": {...}}`` (``EpisodeStore.stats(layout)``)."""
        self.normalizer.fit_stats(stats, layout=self.layout)

    # ----------------------------------------------------------------- observation
    def _check_obs(self, obs: dict) -> int:
        if "state" not in obs:
            raise KeyError(f"observation has no 'state' (keys: {sorted(obs)})")
        st = obs["state"]
        if st.ndim != 3 or st.shape[1] != self.n_obs_steps or st.shape[2] != self.state_dim:
            raise ValueError(f"obs['state'] must be (B, T_o={self.n_obs_steps}, {self.state_dim}), "
                             f"got {tuple(st.shape)}")
        B = st.shape[0]
        for name in self.camera_names:
            if name not in obs:
                raise KeyError(f"observation has no camera {name!r} (keys: {sorted(obs)})")
            h, w = self.obs_encoder.camera_sizes[name]
            shape = tuple(obs[name].shape)
            if shape != (B, self.n_obs_steps, 3, h, w):
                raise ValueError(f"obs[{name!r}] must be (B={B}, T_o={self.n_obs_steps}, 3, {h}, {w}), got {shape}")
        return B

    def encode_obs(self, obs: dict) -> torch.Tensor:
        """Raw obs dict -> global conditioning (B, T_o * obs_feature_dim)."""
        dev = self.device
        nobs = {"state": self.normalizer.normalize("state", obs["state"].to(dev, torch.float32))}
        for name in self.camera_names:
            nobs[name] = obs[name].to(dev, non_blocking=True)
        return self.obs_encoder(nobs)

    # ----------------------------------------------------------------- training
    def compute_loss(self, batch: dict, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """MSE diffusion loss on a batch ``{"obs": {...}, "action": (B, T_p, A)}`` (raw units)."""
        obs, action = batch["obs"], batch["action"]
        B = self._check_obs(obs)
        dev = self.device
        if tuple(action.shape) != (B, self.horizon, self.action_dim):
            raise ValueError(f"action must be (B={B}, T_p={self.horizon}, {self.action_dim}), "
                             f"got {tuple(action.shape)}")
        x0 = self.normalizer.normalize("action", action.to(dev, torch.float32))
        cond = self.encode_obs(obs)
        if self.objective == "mse":  # the regression baseline: one deterministic pass, no noise
            pred = self.model(torch.zeros_like(x0), torch.zeros(B, dtype=torch.long, device=dev), cond)
            return F.mse_loss(pred.float(), x0)
        gdev = generator.device if generator is not None else dev
        noise = torch.randn(x0.shape, generator=generator, device=gdev).to(dev)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (B,), generator=generator,
                          device=gdev).to(dev)
        noisy = self.noise_scheduler.add_noise(x0, noise, t)
        pred = self.model(noisy, t, cond)
        target = noise if self.prediction_type == "epsilon" else x0
        return F.mse_loss(pred.float(), target)

    def forward(self, batch: dict, generator: Optional[torch.Generator] = None) -> torch.Tensor:  # noqa: D401
        """Same as :meth:`compute_loss` (so DistributedDataParallel wraps the training step)."""
        return self.compute_loss(batch, generator)

    # ----------------------------------------------------------------- inference
    def _net(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.backend.denoise(x, t, cond)

    def _encode(self, obs: dict) -> torch.Tensor:
        nobs = {"state": self.normalizer.normalize("state", obs["state"].to(self.device, torch.float32))}
        for name in self.camera_names:
            nobs[name] = obs[name].to(self.device, non_blocking=True)
        return self.backend.encode(nobs)

    @torch.no_grad()
    def sample_actions(self, obs: dict, num_samples: int = 1, generator: Optional[torch.Generator] = None,
                       warm_start: Optional[torch.Tensor] = None, steps: Optional[int] = None) -> torch.Tensor:
        """K action chunks per observation in one batched pass: (B, K, T_p, A), raw units.

        ``warm_start`` (B, T_p, A), raw units: a guess of the chunk (e.g. the previous chunk shifted by the
        ticks since it was predicted, ``sampler.shift_chunk``); it is noised to the level of DDIM step
        ``num_inference_steps - steps`` and only the last ``steps`` steps run (DDIM only). ``steps =
        num_inference_steps`` starts from pure noise: the usual sampler, the same draws."""
        from diffusers.utils.torch_utils import randn_tensor

        B = self._check_obs(obs)
        K = int(num_samples)
        if K < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        dev = self.device
        cond = self._encode(obs).to(dev)
        if K > 1:
            cond = cond.repeat_interleave(K, dim=0)
        if self.objective == "mse":  # regression baseline: the same chunk for every sample
            zeros = torch.zeros(B * K, self.horizon, self.action_dim, device=dev)
            x = self.normalizer.clamp("action", self._net(zeros, torch.zeros(B * K, dtype=torch.long, device=dev),
                                                          cond).float())
            return self.normalizer.unnormalize("action", x).reshape(B, K, self.horizon, self.action_dim)
        shape = (B * K, self.horizon, self.action_dim)
        if warm_start is not None or steps is not None:
            if self._fast is None:
                raise ValueError(f"warm-started sampling needs the ddim scheduler (this policy samples with "
                                 f"{self.inference_scheduler_name}; set_inference('ddim', N))")
        if self._fast is not None:
            x = randn_tensor(shape, generator=generator, device=dev, dtype=torch.float32)
            first = 0
            if warm_start is not None:
                if tuple(warm_start.shape) != (B, self.horizon, self.action_dim):
                    raise ValueError(f"warm_start must be (B={B}, T_p={self.horizon}, {self.action_dim}), "
                                     f"got {tuple(warm_start.shape)}")
                init = self.normalizer.clamp("action", self.normalizer.normalize("action",
                                                                                 warm_start.to(dev, torch.float32)))
                if K > 1:
                    init = init.repeat_interleave(K, dim=0)
                x, first = self._fast.warm_start(init, x, self.num_inference_steps, steps or self.num_inference_steps)
            elif steps is not None and steps != self.num_inference_steps:
                raise ValueError(f"steps={steps} without warm_start: set_inference('ddim', {steps}) changes the "
                                 "number of steps of a sample from noise")
            x = self._fast.denoise(self._net, x, cond, self.num_inference_steps, first)
        else:
            x = self._sample_diffusers(shape, cond, generator)
        x = self.normalizer.clamp("action", x)  # minmax entries to [-1, 1], others to their range + margin
        act = self.normalizer.unnormalize("action", x)
        return act.reshape(B, K, self.horizon, self.action_dim)

    def _sample_diffusers(self, shape, cond: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """diffusers' own step loop (DDPM, DPM-Solver; the reference the DDIM fast path is tested against)."""
        from diffusers.utils.torch_utils import randn_tensor

        dev = self.device
        sched = self.inference_scheduler
        # The scheduler's own bookkeeping stays on the CPU (its table look-ups then need no GPU sync);
        # the network gets the steps on the device.
        sched.set_timesteps(self.num_inference_steps)
        steps_dev = sched.timesteps.to(dev)
        x = randn_tensor(shape, generator=generator, device=dev, dtype=torch.float32)
        x = x * sched.init_noise_sigma
        kw = {"generator": generator} if self._step_takes_generator else {}
        for i, t in enumerate(sched.timesteps):
            model_in = sched.scale_model_input(x, t)
            out = self._net(model_in, steps_dev[i].expand(shape[0]), cond)
            x = sched.step(out, t, x, **kw).prev_sample
        return x

    @torch.no_grad()
    def predict_action(self, obs: dict, generator: Optional[torch.Generator] = None,
                       warm_start: Optional[torch.Tensor] = None, steps: Optional[int] = None) -> torch.Tensor:
        """One action chunk per observation window: (B, T_p, A), raw units (``warm_start`` / ``steps``:
        see :meth:`sample_actions`)."""
        return self.sample_actions(obs, 1, generator, warm_start=warm_start, steps=steps)[:, 0]

    # ----------------------------------------------------------------- CUDA graphs
    def enable_cuda_graph(self, batch_size: int = 1, num_samples: int = 1, warmup: int = 3) -> bool:
        """Capture the denoising network for inputs of ``batch_size * num_samples`` chunks in a CUDA graph
        (replayed for matching shapes; other shapes take the normal path). Returns False (and does
        nothing) when the policy is not on a CUDA device."""
        if self.device.type != "cuda":
            self.disable_cuda_graph()
            return False
        self.set_backend(CudaGraphBackend(self, batch_size * num_samples, warmup, threads=self.backend.threads))
        return True

    def disable_cuda_graph(self) -> None:
        if isinstance(self.backend, CudaGraphBackend):
            self.set_backend(TorchBackend(self, self.backend.threads))

    def train(self, mode: bool = True):  # graphs hold inference-mode activations; drop them on train()
        if mode and isinstance(getattr(self, "backend", None), CudaGraphBackend):
            self.disable_cuda_graph()
        return super().train(mode)
