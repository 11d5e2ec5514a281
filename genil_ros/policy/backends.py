"""Inference backends: what a DiffusionPolicy runs its two networks on (no rclpy).

A policy's sampling loop (scheduler arithmetic in torch, schedule from diffusers) asks its backend for
``encode_frames(camera, frames) -> features`` (one camera's uint8 frames -> their features; the policy
assembles them with the normalised state into the global conditioning, and may cache them per frame)
or ``encode(nobs) -> cond`` (all of it at once), and for ``denoise(x, t, cond) -> out``
(one pass of the denoising U-Net), or, when it knows the chain's timesteps in advance, for
``chunk_net(cond, timesteps) -> step(x, i)``: the network with everything that does not depend on the
sample (the diffusion-step embedding and every block's FiLM scale and bias) computed once per chunk for
all steps, so a step runs only the U-Net body. Three backends:

  torch        eager PyTorch on the policy's device (under its inference autocast, if any)
  cuda_graph   the U-Net replayed from a CUDA graph captured for one batch size (CUDA only); other
               shapes and the encoder run eagerly
  onnxruntime  the ONNX files written by ``export_onnx`` (policy/onnx_export.py), checked against the
               policy's weights when loaded; CPU provider, or CUDA / TensorRT providers when installed
               (inputs then pass through host memory)

    backend = make_backend("onnxruntime", policy, threads=ThreadPlan.choose(0))
    policy.set_backend(backend)
    backend.describe()   # 'onnxruntime 1.20.1 [CPUExecutionProvider]; intra-op 2 (...), ...'

    backend, why = choose_backend("auto", policy)   # what the node and `genil-ros eval` do

``auto`` picks cuda_graph for a policy on a CUDA device, onnxruntime on the CPU when the checkpoint has a
valid export (``genil-ros export --format onnx``) and ONNX Runtime is installed, else torch; ``why`` says
which and, when it fell back, why.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from genil_ros.errors import GenilError
from genil_ros.policy.threads import ThreadPlan

__all__ = ["BACKENDS", "BACKEND_CHOICES", "InferenceBackend", "TorchBackend", "CudaGraphBackend", "OnnxBackend",
           "make_backend", "choose_backend", "ort_providers"]

BACKENDS = ("torch", "cuda_graph", "onnxruntime")
BACKEND_CHOICES = ("auto",) + BACKENDS


class InferenceBackend:
    """The two networks of a policy. Subclasses set ``name`` and implement ``encode`` / ``denoise``."""

    name = "?"

    def __init__(self, policy, threads: Optional[ThreadPlan] = None):
        self.policy = policy
        self.threads = threads

    def encode_frames(self, name: str, frames: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) uint8 -> (N, F)
        raise NotImplementedError

    def encode(self, nobs: dict) -> torch.Tensor:
        """Normalised state (B, T_o, D) + uint8 cameras (B, T_o, 3, H, W) -> global conditioning (B, G)."""
        state = nobs["state"]
        feats = {name: self.encode_frames(name, nobs[name].reshape(-1, *nobs[name].shape[2:]))
                 for name in self.policy.camera_names}
        return self.policy.obs_encoder.assemble(state, feats)

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def chunk_net(self, cond: torch.Tensor, timesteps: torch.Tensor) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """``step(x, i)`` = ``denoise(x, timesteps[i], cond)`` for the steps of one chunk (``timesteps``: (N,)
        int64 on the policy's device). This default runs the whole network per step; backends override it
        to compute the sample-independent part once."""
        B = cond.shape[0]
        return lambda x, i: self.denoise(x, timesteps[i].expand(B), cond)

    def engine(self) -> str:
        return self.name

    def describe(self) -> str:
        """One line for logs and diagnostics: engine, device / providers, threads."""
        s = self.engine()
        return s + (f"; {self.threads.describe()}" if self.threads is not None else "")


class TorchBackend(InferenceBackend):
    """Eager PyTorch: the policy's own modules on its device."""

    name = "torch"

    def __init__(self, policy, threads: Optional[ThreadPlan] = None):
        super().__init__(policy, threads)
        self.note = threads.apply_torch() if threads is not None else ""  # torch's CPU pool, whatever the device

    def encode_frames(self, name, frames):
        p = self.policy
        if p.inference_dtype is not None:
            with torch.autocast(p.device.type, dtype=p.inference_dtype):
                return p.obs_encoder.encode_frames(name, frames).float()
        return p.obs_encoder.encode_frames(name, frames)

    def denoise(self, x, t, cond):
        p = self.policy
        if p.inference_dtype is not None:
            with torch.autocast(x.device.type, dtype=p.inference_dtype):
                return p.model(x, t, cond).float()
        return p.model(x, t, cond)

    def chunk_net(self, cond, timesteps):
        p = self.policy
        B, N = cond.shape[0], timesteps.shape[0]
        ctx = (torch.autocast(cond.device.type, dtype=p.inference_dtype) if p.inference_dtype is not None
               else contextlib.nullcontext())
        with ctx:  # all steps' FiLM vectors in one batched pass: (N, B, film_dim)
            film = p.model.film(timesteps.repeat_interleave(B), cond.repeat(N, 1)).reshape(N, B, -1)

        def step(x, i):
            with ctx:
                return p.model.forward_film(x, film[i]).float()

        return step

    def engine(self) -> str:
        p = self.policy
        names = {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
        prec = names.get(p.inference_dtype, str(p.inference_dtype))
        return f"torch {torch.__version__} eager on {p.device} ({prec})" + (f" [{self.note}]" if self.note else "")


class CudaGraphBackend(TorchBackend):
    """The U-Net captured in a CUDA graph for ``n`` chunks per call (``batch_size * num_samples``)."""

    name = "cuda_graph"

    def __init__(self, policy, n: int = 1, warmup: int = 3, threads: Optional[ThreadPlan] = None):
        if policy.device.type != "cuda":
            raise GenilError(f"backend cuda_graph needs the policy on a CUDA device (it is on {policy.device})")
        super().__init__(policy, threads)
        self.graph = _GraphedNet(policy, n, warmup)

    def denoise(self, x, t, cond):
        if self.graph.matches(x, cond):
            return self.graph(x, t, cond)
        return super().denoise(x, t, cond)

    def chunk_net(self, cond, timesteps):  # the captured graph holds the whole network: replay it per step
        return InferenceBackend.chunk_net(self, cond, timesteps)

    def engine(self) -> str:
        return super().engine().replace("eager", f"CUDA graph (batch {self.graph.x.shape[0]})")


class _GraphedNet:
    """A CUDA graph of ``policy.model`` (under the policy's inference autocast) with static buffers."""

    def __init__(self, policy, n: int, warmup: int):
        dev = policy.device
        self.policy = policy
        self.x = torch.zeros(n, policy.horizon, policy.action_dim, device=dev)
        self.t = torch.zeros(n, dtype=torch.long, device=dev)
        self.cond = torch.zeros(n, policy.obs_encoder.output_dim, device=dev)
        graph_dtype = policy.inference_dtype

        def run():
            if graph_dtype is not None:
                with torch.autocast("cuda", dtype=graph_dtype, cache_enabled=False):  # no cached casts across capture
                    return policy.model(self.x, self.t, self.cond).float()
            return policy.model(self.x, self.t, self.cond)

        self.dtype = graph_dtype
        with torch.no_grad():
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(max(1, warmup)):
                    run()
            torch.cuda.current_stream().wait_stream(s)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = run()

    def matches(self, x: torch.Tensor, cond: torch.Tensor) -> bool:
        return (x.shape == self.x.shape and cond.shape == self.cond.shape and x.device == self.x.device
                and self.dtype == self.policy.inference_dtype)

    def __call__(self, x, t, cond):
        self.x.copy_(x)
        self.t.copy_(t.expand(self.t.shape[0]) if t.ndim == 0 else t)
        self.cond.copy_(cond)
        self.graph.replay()
        return self.out.clone()


def ort_providers(requested: Optional[Sequence[str]] = None) -> list[str]:
    """ONNX Runtime execution providers to use: ``requested`` (each must be installed), or the best
    installed of TensorRT, CUDA, CPU. CPU always comes last as the fallback for unsupported nodes."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in have]
        if missing:
            raise GenilError(f"onnxruntime providers {missing} are not installed (this onnxruntime has {have})")
        chosen = list(requested)
    else:
        chosen = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in have]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


class OnnxBackend(InferenceBackend):
    """ONNX Runtime sessions of an export made by ``export_onnx`` for exactly this policy's weights.

    The policy (normaliser, sampler arithmetic) stays on the CPU; tensors cross as numpy arrays without
    copies. ``onnx_dir`` defaults to ``<checkpoint>/onnx``."""

    name = "onnxruntime"

    def __init__(self, policy, onnx_dir: Optional[Path] = None, threads: Optional[ThreadPlan] = None,
                 providers: Optional[Sequence[str]] = None):
        import onnxruntime as ort

        from genil_ros.policy.onnx_export import read_onnx_export

        threads = threads or ThreadPlan.choose(0)
        super().__init__(policy, threads)
        if policy.device.type != "cpu":
            raise GenilError(f"backend onnxruntime runs with the policy on the CPU (it is on {policy.device}); "
                             "load it with device='cpu' (ONNX Runtime's own providers use the GPU)")
        self.export = read_onnx_export(policy, onnx_dir)
        self.providers = ort_providers(providers)
        opts = threads.ort_session_options()
        self.cams = {name: ort.InferenceSession(str(f), opts, providers=self.providers)
                     for name, f in self.export.cameras.items()}
        self.film = ort.InferenceSession(str(self.export.film), opts, providers=self.providers)
        self.unet = ort.InferenceSession(str(self.export.unet), opts, providers=self.providers)
        self.camera_names = list(policy.camera_names)
        self._version = ort.__version__

    def encode_frames(self, name, frames):
        return torch.from_numpy(self.cams[name].run(None, {"frames": _np(frames, np.uint8)})[0])

    def _film(self, t: torch.Tensor, cond: torch.Tensor) -> np.ndarray:
        return self.film.run(None, {"timestep": _np(t, np.int64), "global_cond": _np(cond, np.float32)})[0]

    def _body(self, x: torch.Tensor, film: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.unet.run(None, {"sample": _np(x, np.float32), "film": film})[0])

    def denoise(self, x, t, cond):
        return self._body(x, self._film(t, cond))

    def chunk_net(self, cond, timesteps):
        B, N = cond.shape[0], timesteps.shape[0]
        film = self._film(timesteps.repeat_interleave(B), cond.repeat(N, 1)).reshape(N, B, -1)
        return lambda x, i: self._body(x, film[i])

    def engine(self) -> str:
        used = self.unet.get_providers()
        return f"onnxruntime {self._version} [{', '.join(used)}]"


def _np(t: torch.Tensor, dtype) -> np.ndarray:
    a = t.detach().cpu().numpy()
    return np.ascontiguousarray(a, dtype=dtype)


def make_backend(name: str, policy, threads: Optional[ThreadPlan] = None, onnx_dir: Optional[Path] = None,
                 providers: Optional[Sequence[str]] = None, batch_size: int = 1) -> InferenceBackend:
    """The backend called ``name`` (one of BACKENDS) for ``policy``. ``threads`` defaults to
    ``ThreadPlan.choose(0)``; ``batch_size`` is the chunks per call a CUDA graph is captured for."""
    threads = threads or ThreadPlan.choose(0)
    if name == "torch":
        return TorchBackend(policy, threads)
    if name == "cuda_graph":
        return CudaGraphBackend(policy, batch_size, threads=threads)
    if name == "onnxruntime":
        return OnnxBackend(policy, onnx_dir, threads, providers)
    raise GenilError(f"inference backend {name!r}: expected one of {', '.join(BACKENDS)}")


FALLBACK_WARNING = "ONNX export not used: "  # in the reason of an auto choice that the user should look at


def choose_backend(name: str, policy, threads: Optional[ThreadPlan] = None, onnx_dir: Optional[Path] = None,
                   batch_size: int = 1) -> tuple[InferenceBackend, str]:
    """``make_backend`` for one of BACKEND_CHOICES, resolving ``auto``; returns (backend, a note on the
    choice). An explicit name that cannot run raises (GenilError / CheckpointError naming the reason);
    ``auto`` falls back to torch and says why (with ``FALLBACK_WARNING`` when an export exists but cannot
    be used: stale or corrupt; no export at all, or no onnxruntime, is the normal case)."""
    if name not in BACKEND_CHOICES:
        raise GenilError(f"inference backend {name!r}: expected one of {', '.join(BACKEND_CHOICES)}")
    if name != "auto":
        return make_backend(name, policy, threads, onnx_dir, batch_size=batch_size), f"{name} (as asked)"
    if policy.device.type == "cuda":
        return make_backend("cuda_graph", policy, threads, batch_size=batch_size), "auto: cuda_graph (CUDA device)"
    from genil_ros.policy.onnx_export import NoExport

    try:
        return make_backend("onnxruntime", policy, threads, onnx_dir), "auto: onnxruntime (valid ONNX export)"
    except ImportError:
        why = "onnxruntime is not installed"
    except NoExport as e:
        why = str(e)
    except GenilError as e:  # an export that is there but cannot be used (stale, corrupt): worth a warning
        why = f"{FALLBACK_WARNING}{e}"
    return make_backend("torch", policy, threads), f"auto: torch ({why})"
