"""``policy_node``: a diffusion policy driving a robot arm over ROS 2 (a managed / lifecycle node).

Lifecycle (``ros2 lifecycle set /policy_node configure|activate|deactivate|cleanup|shutdown``):

- configure: read the parameters, load the checkpoint on the device, warm up (one inference, and the
  CUDA graph capture when ``use_cuda_graph``), create the publishers and subscriptions. The inputs are
  buffered from here on, so activation can start commanding at once.
- activate: start the control timer; commands are published from the first action chunk on.
- deactivate: stop commanding and hold (see "Holding" below).
- cleanup: destroy publishers / subscriptions and free the model. shutdown: the same, then the process exits.
- ``autostart: true`` does configure + activate on start (the default of ``genil-ros policy``).

Timing (all on the node's clock, so ``use_sim_time`` makes it follow ``/clock``):

- Every control tick (``control_rate_hz``) samples the newest joint state and camera frame whose header
  stamp is not after the tick (zero-order hold, aligned by header stamps; receive time when a stamp is
  zero) into a T_o ring buffer of consecutive ticks. An input older than ``max_staleness_s`` at a tick,
  or missing, makes the tick stale: the buffer is cleared and the node holds until T_o fresh ticks.
- Inference runs on a worker thread, never on the executor. With the window ending at tick k, chunk entry
  ``T_o - 1`` is the action for tick k; the plan covers ticks k .. k + T_a - 1. The next inference is
  started ``lead`` ticks before the plan runs out, ``lead = ceil(p90 inference latency / period)``, so the
  next chunk normally arrives before the current one ends (no tick missed at chunk boundaries).
  When a chunk arrives at tick j > k, its entries for ticks k .. j-1 are skipped (latency compensation).
  If it is late anyway, the current chunk keeps being executed past T_a (up to its last entry) and the
  overrun is counted in the diagnostics; only then does the node hold.

Outputs (``output_mode``): ``trajectory`` publishes a trajectory_msgs/JointTrajectory every tick
(header stamp = tick time, joint names, the current action and the rest of the current chunk's planned
actions as points spaced by the control period, point i at ``(i + 1) * period``), for
joint_trajectory_controller; ``position`` publishes the tick's action as std_msgs/Float64MultiArray for
a forward position controller. ``~/predicted_chunk`` (JointTrajectory, raw model output, header stamp =
the tick the observation window ends at; points = entries T_o-1 .. T_p-1, point i at ``i * period``).
``/diagnostics`` at 1 Hz.

Safety: every command is clamped to ``joint_lower_limits`` / ``joint_upper_limits`` and to
``max_step_rad`` per tick relative to the previous command (the measured position for the first one).

Holding: on stale or missing inputs, bad messages, NaN/Inf in a chunk, a model error, a late chunk
that has run out, or deactivation, the node stops commanding. If it had commanded, it publishes ONE hold
command at the last commanded position (for joint_trajectory_controller this cancels the rest of the
trajectory it was following; a forward position controller holds it anyway) and then publishes nothing
until the inputs are good again. Each reason is logged once (throttled); commanding resumes by itself.
The process never exits on bad input.

Services: ``~/reset`` (std_srvs/Trigger) clears buffers and the plan; ``~/reload`` (std_srvs/Trigger)
loads the checkpoint named by the ``checkpoint`` parameter again (e.g. a newer one the trainer wrote)
without stopping; the running model is kept if the new one fails to load or does not fit the task.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time
import traceback
from bisect import insort
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from genil_ros.errors import CheckpointError, DataError, GenilError

NODE_NAME = "policy_node"

# name -> (default, description); every parameter is dynamically typed and checked here, so that
# `-p control_rate_hz:=10` and `joint_lower_limits: [-1, 0, -2, 0]` (ints) work as a user expects.
PARAMETERS: dict[str, tuple[Any, str]] = {
    "checkpoint": ("", "checkpoint directory (policy/checkpoint.py format) or a shipped model name"),
    "config": ("", "optional experiment YAML whose task overrides the checkpoint's topics and control rate"),
    "device": ("auto", "auto | cpu | cuda (auto: CUDA when available)"),
    "output_mode": ("trajectory", "trajectory (JointTrajectory) | position (Float64MultiArray)"),
    "trajectory_topic": ("/joint_trajectory_controller/joint_trajectory", "JointTrajectory command topic"),
    "position_topic": ("/forward_position_controller/commands", "Float64MultiArray command topic"),
    "joint_states_topic": ("", "JointState topic (empty: the checkpoint's task.joint_states_topic)"),
    "camera_topics": (None, "one topic per camera, in the checkpoint's camera order (unset: from the config)"),
    "camera_compressed": (None, "one bool per camera: CompressedImage instead of Image (unset: from the config)"),
    "control_rate_hz": (0.0, "control tick rate (0: the checkpoint's task.control_rate_hz)"),
    "num_inference_steps": (0, "denoising steps (0: the checkpoint's)"),
    "inference_scheduler": ("", "ddim | ddpm | dpmsolver (empty: the checkpoint's)"),
    "max_staleness_s": (0.5, "an input older than this at a control tick makes the node hold"),
    "joint_lower_limits": (None, "per-joint lower position limits (unset or empty: none)"),
    "joint_upper_limits": (None, "per-joint upper position limits (unset or empty: none)"),
    "max_step_rad": (0.1, "max change of a joint command per tick (<= 0: no limit)"),
    "autostart": (False, "configure and activate on start"),
    "use_cuda_graph": (False, "capture the denoising network in a CUDA graph (CUDA only)"),
    "seed": (0, "seed of the sampling noise (-1: random)"),
}


# =========================================================================== the model interface


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

    ``obs`` = ``{"state": (T_o, D) float32, "<camera>": (T_o, 3, H, W) uint8}`` numpy arrays.
    """

    spec: ModelSpec
    device: str = "cpu"
    description: str = ""

    def __call__(self, obs: dict) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class DiffusionChunkModel(ChunkModel):
    """A :class:`genil_ros.policy.DiffusionPolicy` loaded from a checkpoint directory."""

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

    def __call__(self, obs: dict) -> np.ndarray:
        torch = self._torch
        t_obs = {k: torch.from_numpy(np.ascontiguousarray(v))[None] for k, v in obs.items()}
        with torch.no_grad():  # not inference_mode: a CUDA graph's static buffers are normal tensors
            chunk = self.policy.predict_action(t_obs, generator=self._gen)
        return chunk[0].detach().to("cpu", torch.float64).numpy()


def load_chunk_model(checkpoint: str, device: str = "auto", scheduler: str = "", steps: int = 0, seed: int = 0,
                     use_cuda_graph: bool = False, log: Callable[[str], None] = print) -> ChunkModel:
    if not checkpoint:
        raise GenilError("parameter checkpoint: not set (a checkpoint directory written by `genil-ros train`)")
    return DiffusionChunkModel(checkpoint, device, scheduler, steps, seed, use_cuda_graph, log)


def zero_obs(spec: ModelSpec) -> dict:
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
    chunk = np.asarray(chunk, dtype=np.float64)
    if chunk.shape != (spec.horizon, spec.action_dim):
        raise CheckpointError(f"{where}: action chunk has shape {chunk.shape}, expected "
                              f"(T_p={spec.horizon}, {spec.action_dim})")
    return chunk


# =========================================================================== buffers and timing (no ROS)


class StreamBuffer:
    """Recent messages of one input stream, kept sorted by header stamp (ns)."""

    def __init__(self, name: str, maxlen: int = 64):
        self.name = name
        self.maxlen = maxlen
        self._items: list[tuple[int, int, Any]] = []  # (stamp_ns, seq, value)
        self._seq = 0
        self.received = 0
        self.rejected = 0
        self.last_error: Optional[str] = None
        self.last_error_ns = -1
        self.last_good_ns = -1

    def add(self, stamp_ns: int, value: Any, now_ns: int) -> None:
        self._seq += 1
        insort(self._items, (int(stamp_ns), self._seq, value), key=lambda x: (x[0], x[1]))
        if len(self._items) > self.maxlen:
            del self._items[: len(self._items) - self.maxlen]
        self.received += 1
        self.last_good_ns = now_ns

    def reject(self, error: str, now_ns: int) -> None:
        self.rejected += 1
        self.last_error = error
        self.last_error_ns = now_ns

    def sample(self, t_ns: int, tol_ns: int = 0) -> Optional[tuple[int, Any]]:
        """The newest (stamp, value) with stamp <= t + tol, or None."""
        for stamp, _, value in reversed(self._items):
            if stamp <= t_ns + tol_ns:
                return stamp, value
        return None

    def newest_stamp(self) -> Optional[int]:
        return self._items[-1][0] if self._items else None

    def clear(self) -> None:
        self._items.clear()


@dataclass
class ObsSample:
    tick: int
    tick_ns: int
    state: np.ndarray
    images: dict
    oldest_stamp_ns: int  # the oldest of the input stamps used at this tick


class ObservationWindow:
    """The last T_o samples on consecutive control ticks."""

    def __init__(self, n_obs_steps: int):
        self.n = n_obs_steps
        self._q: deque[ObsSample] = deque(maxlen=n_obs_steps)

    def push(self, s: ObsSample) -> None:
        if self._q and self._q[-1].tick != s.tick - 1:
            self._q.clear()
        self._q.append(s)

    def clear(self) -> None:
        self._q.clear()

    def full(self) -> bool:
        return len(self._q) == self.n

    def last(self) -> Optional[ObsSample]:
        return self._q[-1] if self._q else None

    def as_obs(self) -> dict:
        obs = {"state": np.stack([s.state for s in self._q]).astype(np.float32)}
        for name in self._q[-1].images:
            obs[name] = np.stack([np.transpose(s.images[name], (2, 0, 1)) for s in self._q])
        return obs


class ActionPlan:
    """A chunk predicted from the window ending at ``tick``: entry T_o-1+d is the action for tick+d."""

    def __init__(self, chunk: np.ndarray, tick: int, n_obs_steps: int, n_action_steps: int, obs_stamp_ns: int = 0):
        self.chunk = chunk
        self.tick = tick
        self.first = n_obs_steps - 1
        self.n_action_steps = n_action_steps
        self.obs_stamp_ns = obs_stamp_ns
        self.commanded = 0  # ticks commanded from this plan

    @property
    def nominal_end(self) -> int:
        """The last tick of the T_a executed actions."""
        return self.tick + self.n_action_steps - 1

    @property
    def last_tick(self) -> int:
        """The last tick the chunk has an entry for (used only when the next chunk is late)."""
        return self.tick + self.chunk.shape[0] - 1 - self.first

    def remaining_after(self, tick: int) -> int:
        return self.nominal_end - tick

    def actions_from(self, tick: int) -> Optional[np.ndarray]:
        """Rows for ticks tick .. nominal_end (at least the current one while past T_a), or None."""
        d = tick - self.tick
        if d < 0 or tick > self.last_tick:
            return None
        end = max(self.nominal_end, tick) - self.tick
        return self.chunk[self.first + d: self.first + end + 1]


class SafetyFilter:
    """Clamp commands to joint limits and to a maximum change per tick."""

    def __init__(self, joint_names: Sequence[str], lower=None, upper=None, max_step: float = 0.1):
        n = len(joint_names)
        for key, lim in (("joint_lower_limits", lower), ("joint_upper_limits", upper)):
            if lim is not None and len(lim) not in (0, n):
                raise GenilError(f"parameter {key}: has {len(lim)} values but the policy has {n} joints "
                                 f"{list(joint_names)}")
        self.lower = np.asarray(lower, np.float64) if lower is not None and len(lower) else np.full(n, -np.inf)
        self.upper = np.asarray(upper, np.float64) if upper is not None and len(upper) else np.full(n, np.inf)
        if not np.all(np.isfinite(self.lower[np.isfinite(self.lower)])) or np.any(self.lower > self.upper):
            bad = [joint_names[i] for i in np.flatnonzero(self.lower > self.upper)]
            raise GenilError(f"parameters joint_lower_limits / joint_upper_limits: lower > upper for joint(s) {bad}")
        self.max_step = float(max_step)

    def apply(self, rows: np.ndarray, prev: Optional[np.ndarray]) -> np.ndarray:
        out = np.clip(np.asarray(rows, np.float64), self.lower, self.upper)
        if self.max_step > 0 and prev is not None:
            p = np.asarray(prev, np.float64)
            for i in range(out.shape[0]):
                out[i] = np.clip(p + np.clip(out[i] - p, -self.max_step, self.max_step), self.lower, self.upper)
                p = out[i]
        return out


class RollingStats:
    def __init__(self, n: int = 200):
        self._v: deque[float] = deque(maxlen=n)

    def add(self, v: float) -> None:
        self._v.append(float(v))

    def __len__(self) -> int:
        return len(self._v)

    def last(self) -> float:
        return self._v[-1] if self._v else float("nan")

    def pct(self, q: float) -> float:
        return float(np.percentile(np.asarray(self._v), q)) if self._v else float("nan")

    def clear(self) -> None:
        self._v.clear()


@dataclass
class InferenceJob:
    gen: int
    tick: int
    tick_ns: int
    obs_stamp_ns: int
    obs: dict
    model: ChunkModel


@dataclass
class InferenceResult:
    job: InferenceJob
    chunk: Optional[np.ndarray] = None
    error: Optional[str] = None
    latency_s: float = 0.0


class InferenceWorker:
    """One background thread that runs the model on one job at a time; the control loop polls results."""

    def __init__(self):
        self._cond = threading.Condition()
        self._job: Optional[InferenceJob] = None
        self._result: Optional[InferenceResult] = None
        self._busy = False
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="policy_inference", daemon=True)
        self._thread.start()

    def busy(self) -> bool:
        with self._cond:
            return self._busy or self._job is not None

    def submit(self, job: InferenceJob) -> bool:
        with self._cond:
            if self._busy or self._job is not None:
                return False
            self._job = job
            self._cond.notify()
            return True

    def take_result(self) -> Optional[InferenceResult]:
        with self._cond:
            r, self._result = self._result, None
            return r

    def wait_idle(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._busy or self._job is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=10.0)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job, self._job, self._busy = self._job, None, True
            t0 = time.perf_counter()
            res = InferenceResult(job)
            try:
                res.chunk = check_chunk(job.model(job.obs), job.model.spec)
            except Exception as e:  # a model error must never take the node down
                res.error = f"{type(e).__name__}: {e}"
            res.latency_s = time.perf_counter() - t0
            with self._cond:
                self._result = res
                self._busy = False
                self._cond.notify_all()


# =========================================================================== the node

try:
    import rclpy
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.lifecycle import Node as LifecycleNode
    from rclpy.lifecycle import State, TransitionCallbackReturn
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.qos import qos_profile_sensor_data

    _HAVE_RCLPY = True
except ImportError:  # the pure parts above stay usable (and testable) without ROS
    _HAVE_RCLPY = False
    LifecycleNode = object  # type: ignore


def _as_list(value, key: str, kind: type) -> Optional[list]:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise GenilError(f"parameter {key}: expected a list, got {value!r}")
    out = []
    for v in value:
        if kind is float and isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append(float(v))
        elif kind is bool and isinstance(v, bool):
            out.append(v)
        elif kind is str and isinstance(v, str):
            out.append(v)
        else:
            raise GenilError(f"parameter {key}: {v!r} is not a {kind.__name__}")
    return out


@dataclass
class NodeSettings:
    checkpoint: str
    config: str
    device: str
    output_mode: str
    trajectory_topic: str
    position_topic: str
    joint_states_topic: str
    camera_topics: Optional[list]
    camera_compressed: Optional[list]
    control_rate_hz: float
    num_inference_steps: int
    inference_scheduler: str
    max_staleness_s: float
    joint_lower_limits: Optional[list]
    joint_upper_limits: Optional[list]
    max_step_rad: float
    use_cuda_graph: bool
    seed: int

    @classmethod
    def from_values(cls, p: dict) -> "NodeSettings":
        def num(key, kind=float, minimum=None):
            v = p[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise GenilError(f"parameter {key}: expected a number, got {v!r}")
            if kind is int and float(v) != int(v):
                raise GenilError(f"parameter {key}: expected an integer, got {v!r}")
            v = kind(v)
            if minimum is not None and v < minimum:
                raise GenilError(f"parameter {key}: {v} must be >= {minimum}")
            return v

        def text(key, choices=None):
            v = p[key]
            if not isinstance(v, str):
                raise GenilError(f"parameter {key}: expected a string, got {v!r}")
            if choices and v not in choices:
                raise GenilError(f"parameter {key}: {v!r} is not one of {', '.join(choices)}")
            return v

        def flag(key):
            if not isinstance(p[key], bool):
                raise GenilError(f"parameter {key}: expected true/false, got {p[key]!r}")
            return p[key]

        s = cls(
            checkpoint=text("checkpoint"), config=text("config"), device=text("device"),
            output_mode=text("output_mode", ("trajectory", "position")),
            trajectory_topic=text("trajectory_topic"), position_topic=text("position_topic"),
            joint_states_topic=text("joint_states_topic"),
            camera_topics=_as_list(p["camera_topics"], "camera_topics", str),
            camera_compressed=_as_list(p["camera_compressed"], "camera_compressed", bool),
            control_rate_hz=num("control_rate_hz", float, 0.0), num_inference_steps=num("num_inference_steps", int, 0),
            inference_scheduler=text("inference_scheduler", ("", "ddim", "ddpm", "dpmsolver")),
            max_staleness_s=num("max_staleness_s", float, 0.0),
            joint_lower_limits=_as_list(p["joint_lower_limits"], "joint_lower_limits", float),
            joint_upper_limits=_as_list(p["joint_upper_limits"], "joint_upper_limits", float),
            max_step_rad=num("max_step_rad", float), use_cuda_graph=flag("use_cuda_graph"), seed=num("seed", int),
        )
        if s.device not in ("auto", "cpu", "cuda") and not s.device.startswith("cuda:"):
            raise GenilError(f"parameter device: {s.device!r} is not one of auto, cpu, cuda")
        if s.max_staleness_s <= 0:
            raise GenilError("parameter max_staleness_s: must be > 0")
        return s


@dataclass
class CameraInput:
    name: str
    topic: str
    compressed: bool
    height: int
    width: int
    buffer: StreamBuffer = field(init=False)

    def __post_init__(self):
        self.buffer = StreamBuffer(self.topic)


class PolicyNode(LifecycleNode):
    """The lifecycle node; see the module docstring for its behaviour."""

    def __init__(self, node_name: str = NODE_NAME, model_loader: Callable[..., ChunkModel] = load_chunk_model,
                 **kwargs):
        super().__init__(node_name, **kwargs)
        for name, (default, desc) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=desc, dynamic_typing=True))
        self._load_model = model_loader
        self._lock = threading.RLock()
        self._g_control = MutuallyExclusiveCallbackGroup()
        self._g_inputs = MutuallyExclusiveCallbackGroup()
        self._g_cameras = MutuallyExclusiveCallbackGroup()
        self._g_services = MutuallyExclusiveCallbackGroup()
        self._g_diag = MutuallyExclusiveCallbackGroup()
        self._worker = InferenceWorker()
        self._model: Optional[ChunkModel] = None
        self._settings: Optional[NodeSettings] = None
        self._entities: list = []  # publishers / subscriptions / timers created by configure
        self._control_timer = None
        self._active = False
        self.finalized = threading.Event()
        self._last_log: dict[str, float] = {}
        self._reset_runtime()
        self._reset_stats()
        from std_srvs.srv import Trigger

        self.create_service(Trigger, "~/reset", self._srv_reset, callback_group=self._g_services)
        self.create_service(Trigger, "~/reload", self._srv_reload_async, callback_group=self._g_services)

    # ------------------------------------------------------------------ logging
    def _log_throttled(self, level: str, key: str, text: str, period_s: float = 5.0) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) >= period_s:
            self._last_log[key] = now
            getattr(self.get_logger(), level)(text)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: "State") -> "TransitionCallbackReturn":
        try:
            self._configure()
        except GenilError as e:
            self.get_logger().error(f"configure failed: {e}")
            self._teardown()
            return TransitionCallbackReturn.FAILURE
        except Exception as e:  # a bug or an unexpected library error: report, stay alive, stay unconfigured
            self.get_logger().error(f"configure failed: {type(e).__name__}: {e}\n{traceback.format_exc()}")
            self._teardown()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: "State") -> "TransitionCallbackReturn":
        with self._lock:
            if self._model is None:
                return TransitionCallbackReturn.FAILURE
            self._reset_runtime()
            self._active = True
            if self._control_timer is None:
                self._control_timer = self.create_timer(self._period_s, self._on_tick,
                                                        callback_group=self._g_control)
            else:
                self._control_timer.reset()
        self.get_logger().info(f"active: commanding {self._command_topic} at {1.0 / self._period_s:g} Hz "
                               f"({self._settings.output_mode} mode)")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: "State") -> "TransitionCallbackReturn":
        self._stop_commanding("deactivated")
        self.get_logger().info("inactive: not commanding (holding the last position)")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: "State") -> "TransitionCallbackReturn":
        self._teardown()
        self.get_logger().info("cleaned up: model freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: "State") -> "TransitionCallbackReturn":
        self._stop_commanding("shutting down")
        self._teardown()
        self.finalized.set()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: "State") -> "TransitionCallbackReturn":
        self._stop_commanding("error")
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------------ configure / teardown
    def _param_values(self) -> dict:
        return {name: self.get_parameter(name).value for name in PARAMETERS}

    def _configure(self) -> None:
        s = NodeSettings.from_values(self._param_values())
        model = self._load_model(s.checkpoint, s.device, s.inference_scheduler, s.num_inference_steps, s.seed,
                                 s.use_cuda_graph, log=self.get_logger().warning)
        spec = model.spec
        # topics and rate: parameters > optional config file > the checkpoint's task
        task_topics = {c.name: (c.topic, c.compressed) for c in spec.cameras}
        joint_topic, rate = spec.joint_states_topic, spec.control_rate_hz
        if s.config:
            from genil_ros.config import load_config
            from genil_ros.paths import config_path

            task = load_config(config_path(s.config)).task
            names = [c.name for c in task.cameras]
            if task.joint_names != spec.joint_names or names != [c.name for c in spec.cameras]:
                raise GenilError(f"parameter config: {s.config}: task.joint_names / cameras {task.joint_names} "
                                 f"{names} do not match the checkpoint's {spec.joint_names} "
                                 f"{[c.name for c in spec.cameras]}")
            task_topics = {c.name: (c.topic, c.compressed) for c in task.cameras}
            joint_topic, rate = task.joint_states_topic, task.control_rate_hz
        n_cam = len(spec.cameras)
        if s.camera_topics is not None and len(s.camera_topics) not in (0, n_cam):
            raise GenilError(f"parameter camera_topics: {len(s.camera_topics)} topics but the checkpoint has "
                             f"{n_cam} camera(s) {[c.name for c in spec.cameras]}")
        if s.camera_compressed is not None and len(s.camera_compressed) not in (0, n_cam):
            raise GenilError(f"parameter camera_compressed: {len(s.camera_compressed)} values but the checkpoint "
                             f"has {n_cam} camera(s)")
        cams = []
        for i, c in enumerate(spec.cameras):
            topic, comp = task_topics[c.name]
            if s.camera_topics:
                topic = s.camera_topics[i]
            if s.camera_compressed:
                comp = s.camera_compressed[i]
            cams.append(CameraInput(c.name, topic, bool(comp), c.height, c.width))
        joint_topic = s.joint_states_topic or joint_topic
        rate = s.control_rate_hz or rate
        if abs(rate - spec.control_rate_hz) > 1e-6:
            self.get_logger().warning(f"control_rate_hz {rate:g} differs from the {spec.control_rate_hz:g} Hz the "
                                      f"policy was trained at: each action is held for another duration than in training")
        safety = SafetyFilter(spec.joint_names, s.joint_lower_limits, s.joint_upper_limits, s.max_step_rad)

        warm_s = warm_up(model, s.checkpoint)  # allocations, kernels, CUDA graph replay; rejects NaN output

        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CompressedImage, Image, JointState
        from std_msgs.msg import Float64MultiArray
        from trajectory_msgs.msg import JointTrajectory

        with self._lock:
            self._settings = s
            self._model = model
            self._spec = spec
            self._safety = safety
            self._period_s = 1.0 / rate
            self._joint_topic = joint_topic
            self._joints = StreamBuffer(joint_topic)
            self._cameras = cams
            self._command_topic = s.trajectory_topic if s.output_mode == "trajectory" else s.position_topic
            cmd_type = JointTrajectory if s.output_mode == "trajectory" else Float64MultiArray
            self._cmd_pub = self.create_publisher(cmd_type, self._command_topic, 10)
            self._chunk_pub = self.create_publisher(JointTrajectory, "~/predicted_chunk", 10)
            self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
            self._entities = [self._cmd_pub, self._chunk_pub, self._diag_pub]
            self._entities.append(self.create_subscription(JointState, joint_topic, self._on_joint_state,
                                                           qos_profile_sensor_data, callback_group=self._g_inputs))
            for cam in cams:
                mtype = CompressedImage if cam.compressed else Image
                self._entities.append(self.create_subscription(
                    mtype, cam.topic, lambda msg, cam=cam: self._on_image(cam, msg), qos_profile_sensor_data,
                    callback_group=self._g_cameras))
            self._entities.append(self.create_timer(1.0, self._publish_diagnostics, callback_group=self._g_diag))
            self._reset_runtime()
            self._reset_stats()
        self.get_logger().info(
            f"configured: {model.description}; joints {spec.joint_names} from {joint_topic}; cameras "
            + (", ".join(f"{c.name} <- {c.topic}{' (compressed)' if c.compressed else ''}" for c in cams) or "none")
            + f"; {rate:g} Hz, T_o={spec.n_obs_steps} T_p={spec.horizon} T_a={spec.n_action_steps}; "
            f"warm-up {warm_s * 1e3:.0f} ms")

    def _teardown(self) -> None:
        with self._lock:
            self._active = False
            if self._control_timer is not None:
                self.destroy_timer(self._control_timer)
                self._control_timer = None
            for ent in self._entities:
                try:
                    if hasattr(ent, "timer_period_ns"):
                        self.destroy_timer(ent)
                    elif hasattr(ent, "publish"):
                        self.destroy_publisher(ent)
                    else:
                        self.destroy_subscription(ent)
                except Exception:
                    pass
            self._entities = []
            self._cmd_pub = None
            self._model = None
            self._gen += 1
        self._worker.wait_idle(timeout=30.0)
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            pass

    def _stop_commanding(self, reason: str) -> None:
        with self._lock:
            if self._control_timer is not None:
                self._control_timer.cancel()  # destroyed at cleanup; destroying it here races the executor
            if self._active:
                self._hold(reason, self.get_clock().now().nanoseconds, log=False)
            self._active = False
            self._plan = None
            self._gen += 1

    # ------------------------------------------------------------------ runtime state
    def _reset_runtime(self) -> None:
        self._gen = getattr(self, "_gen", 0) + 1
        self._tick = 0
        self._window = ObservationWindow(self._spec.n_obs_steps) if getattr(self, "_spec", None) else None
        self._plan: Optional[ActionPlan] = None
        self._last_cmd: Optional[np.ndarray] = None
        self._holding = True
        self._hold_reason = "waiting for the first action chunk"
        self._hold_kind = ""
        self._fault: Optional[str] = None
        self._last_mono: Optional[float] = None

    def _reset_stats(self) -> None:
        self._lat = RollingStats()
        self._obs_to_cmd = RollingStats()
        self._periods = RollingStats()
        self._staleness: dict[str, float] = {}
        self._counts = dict(chunks=0, skipped_actions=0, late_chunks=0, missed_ticks=0, holds=0, model_errors=0,
                            nonfinite_chunks=0, stale_ticks=0)

    # ------------------------------------------------------------------ inputs
    def _stamp_or_now(self, msg, now_ns: int, topic: str) -> int:
        st = msg.header.stamp
        ns = int(st.sec) * 1_000_000_000 + int(st.nanosec)
        if ns == 0:
            self._log_throttled("warning", "zero-stamp:" + topic,
                                f"{topic}: header stamps are zero; using the receive time instead", 30.0)
            return now_ns
        return ns

    def _on_joint_state(self, msg) -> None:
        from genil_ros.ros.conversions import joint_state_to_array

        now_ns = self.get_clock().now().nanoseconds
        with self._lock:
            if self._model is None:
                return
            spec, buf = self._spec, self._joints
        try:
            value = joint_state_to_array(msg, spec.joint_names, where=buf.name, use_velocity=spec.use_velocity)
        except DataError as e:
            with self._lock:
                buf.reject(str(e), now_ns)
            self._log_throttled("warning", "bad:" + buf.name, f"ignoring a message: {e}")
            return
        stamp = self._stamp_or_now(msg, now_ns, buf.name)
        with self._lock:
            buf.add(stamp, value, now_ns)

    def _on_image(self, cam: CameraInput, msg) -> None:
        from genil_ros.ros.conversions import camera_msg_to_array

        now_ns = self.get_clock().now().nanoseconds
        try:
            img = camera_msg_to_array(msg, cam.height, cam.width, where=cam.topic)
        except DataError as e:
            with self._lock:
                cam.buffer.reject(str(e), now_ns)
            self._log_throttled("warning", "bad:" + cam.topic, f"ignoring a message: {e}")
            return
        except Exception as e:  # e.g. OpenCV on a malformed buffer
            with self._lock:
                cam.buffer.reject(f"{cam.topic}: {type(e).__name__}: {e}", now_ns)
            self._log_throttled("warning", "bad:" + cam.topic, f"ignoring a message on {cam.topic}: {e}")
            return
        stamp = self._stamp_or_now(msg, now_ns, cam.topic)
        with self._lock:
            cam.buffer.add(stamp, img, now_ns)

    def _sample(self, now_ns: int) -> tuple[Optional[ObsSample], Optional[str]]:
        """Sample every input at tick time ``now_ns``: (sample, None) or (None, why not)."""
        tol = int(0.5 * self._period_s * 1e9)
        max_age = self._settings.max_staleness_s
        values, oldest = {}, now_ns
        streams = [(self._joints, "joint state", None)] + [(c.buffer, "image", c.name) for c in self._cameras]
        for buf, kind, cam in streams:
            got = buf.sample(now_ns, tol)
            if got is None:
                newest = buf.newest_stamp()
                if newest is not None:
                    why = (f"{buf.name}: {kind} stamps are {(newest - now_ns) / 1e9:.2f} s ahead of this node's clock "
                           f"(use_sim_time set on one side only?)")
                elif buf.last_error:
                    why = buf.last_error
                else:
                    why = f"{buf.name}: no {kind} received yet"
                return None, why
            stamp, value = got
            age = (now_ns - stamp) / 1e9
            self._staleness[buf.name] = age
            if age > max_age:
                if buf.last_error and buf.last_error_ns > buf.last_good_ns:
                    return None, buf.last_error
                return None, f"{buf.name}: newest {kind} is {age:.2f} s old (max_staleness_s {max_age:g})"
            values[cam] = value
            oldest = min(oldest, stamp)
        images = {k: v for k, v in values.items() if k is not None}
        return ObsSample(self._tick, now_ns, values[None], images, oldest), None

    # ------------------------------------------------------------------ the control tick
    def _on_tick(self) -> None:
        try:
            with self._lock:
                if self._active and self._model is not None:
                    self._control_tick()
        except Exception as e:  # never let the control loop die
            self._log_throttled("error", "tick-error", f"control tick failed: {type(e).__name__}: {e}\n"
                                f"{traceback.format_exc()}")
            with self._lock:
                self._plan = None
                self._hold(f"internal error: {type(e).__name__}: {e}", self.get_clock().now().nanoseconds)

    def _control_tick(self) -> None:
        now_ns = self.get_clock().now().nanoseconds
        mono = time.monotonic()
        if self._last_mono is not None:
            self._periods.add(mono - self._last_mono)
        self._last_mono = mono
        j = self._tick
        self._tick += 1

        sample, stale = self._sample(now_ns)
        if sample is None:
            self._window.clear()
            self._plan = None
            self._gen += 1  # an in-flight chunk was computed from inputs we no longer trust
            self._counts["stale_ticks"] += 1
        else:
            self._window.push(sample)

        res = self._worker.take_result()
        if res is not None and res.job.gen == self._gen:
            self._lat.add(res.latency_s)
            if res.error is not None:
                self._counts["model_errors"] += 1
                self._fault = f"model error: {res.error}"
                self._plan = None
            elif not np.all(np.isfinite(res.chunk)):
                self._counts["nonfinite_chunks"] += 1
                self._fault = "the action chunk contains NaN/Inf"
                self._plan = None
            else:
                self._fault = None
                if self._plan is not None and j > self._plan.nominal_end + 1:  # the old plan overran
                    self._counts["late_chunks"] += 1
                self._plan = ActionPlan(res.chunk, res.job.tick, self._spec.n_obs_steps, self._spec.n_action_steps,
                                        res.job.obs_stamp_ns)
                self._counts["chunks"] += 1
                self._counts["skipped_actions"] += max(0, j - res.job.tick)
                self._publish_chunk(self._plan, res.job.tick_ns)

        rows = self._plan.actions_from(j) if (self._plan is not None and sample is not None) else None
        if rows is None:
            if sample is not None and self._fault is None and self._plan is not None:
                self._counts["missed_ticks"] += 1
                reason = "the action chunk ran out before the next one arrived (inference too slow?)"
                self._plan = None
            elif stale is not None:  # the inputs first: a model fault is retried once they are good again
                reason = stale
            elif self._fault is not None:
                reason = self._fault
            elif not self._window.full():
                reason = f"waiting for {self._spec.n_obs_steps} consecutive fresh observations"
            else:
                reason = "waiting for the first action chunk"
            self._hold(reason, now_ns)
        else:
            prev = self._last_cmd
            if prev is None:
                last = self._window.last()
                prev = last.state[: self._spec.action_dim] if last is not None else None
            safe = self._safety.apply(rows, prev)
            self._publish_command(safe, now_ns)
            self._last_cmd = safe[0].copy()
            if self._plan.commanded == 0 and self._plan.obs_stamp_ns:
                self._obs_to_cmd.add((now_ns - self._plan.obs_stamp_ns) / 1e9)
            self._plan.commanded += 1
            if self._holding:
                self.get_logger().info(f"commanding {self._command_topic}"
                                       + ("" if self._hold_reason.startswith("waiting") else
                                          f" again (was holding: {self._hold_reason})"))
            self._holding = False
            self._hold_reason = ""

        # start the next inference early enough that its chunk arrives before this one runs out
        if self._window.full() and not self._worker.busy():
            lead = max(1, math.ceil(self._lat.pct(90) / self._period_s)) if len(self._lat) else 1
            if self._plan is None or self._plan.remaining_after(j) < lead:
                last = self._window.last()
                self._worker.submit(InferenceJob(self._gen, j, now_ns, last.oldest_stamp_ns, self._window.as_obs(),
                                                 self._model))

    def _hold(self, reason: str, now_ns: int, log: bool = True) -> None:
        """Stop commanding: publish one hold command (last commanded position) when entering the hold."""
        entering = not self._holding
        if entering:
            self._counts["holds"] += 1
            if self._last_cmd is not None and getattr(self, "_cmd_pub", None) is not None:
                self._publish_command(self._last_cmd[None], now_ns)
            self._holding = True
        kind = re.sub(r"[-+]?\d[\d.e+-]*", "#", reason)  # the same reason with other numbers is not news
        if log and not reason.startswith("waiting") and (entering or kind != self._hold_kind):
            self._log_throttled("warning", "hold", f"holding position: {reason}", 2.0)
        self._hold_kind = kind
        self._hold_reason = reason

    # ------------------------------------------------------------------ outputs
    def _publish_command(self, rows: np.ndarray, now_ns: int) -> None:
        from genil_ros.ros.conversions import float64_array_msg, joint_trajectory_msg

        if self._settings.output_mode == "trajectory":
            msg = joint_trajectory_msg(self._spec.joint_names, rows, self._period_s, now_ns)
        else:
            msg = float64_array_msg(rows[0])
        self._cmd_pub.publish(msg)

    def _publish_chunk(self, plan: ActionPlan, tick_ns: int) -> None:
        from genil_ros.ros.conversions import joint_trajectory_msg

        self._chunk_pub.publish(joint_trajectory_msg(self._spec.joint_names, plan.chunk[plan.first:], self._period_s,
                                                     tick_ns, first_time_s=0.0))

    def _publish_diagnostics(self) -> None:
        try:
            self._publish_diagnostics_impl()
        except Exception as e:
            self._log_throttled("error", "diag", f"diagnostics failed: {type(e).__name__}: {e}")

    def _publish_diagnostics_impl(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        with self._lock:
            if self._model is None:
                return
            nominal = self._period_s
            ms = lambda v: f"{v * 1e3:.2f}" if np.isfinite(v) else "nan"  # noqa: E731
            per_med = self._periods.pct(50)
            jit = RollingStats()
            for v in list(self._periods._v):
                jit.add(abs(v - nominal))
            kv = {
                "state": "active" if self._active else "inactive",
                "commanding": str(self._active and not self._holding).lower(),
                "hold_reason": self._hold_reason if self._active else "inactive",
                "model": self._model.description,
                "device": self._model.device,
                "output_mode": self._settings.output_mode,
                "command_topic": self._command_topic,
                "control_rate_hz": f"{1.0 / nominal:g}",
                "measured_control_rate_hz": f"{1.0 / per_med:.2f}" if len(self._periods) else "nan",
                "control_period_jitter_median_ms": ms(jit.pct(50)),
                "control_period_jitter_p99_ms": ms(jit.pct(99)),
                "inference_latency_last_ms": ms(self._lat.last()),
                "inference_latency_median_ms": ms(self._lat.pct(50)),
                "inference_latency_p99_ms": ms(self._lat.pct(99)),
                "obs_to_command_latency_median_ms": ms(self._obs_to_cmd.pct(50)),
                "obs_to_command_latency_p99_ms": ms(self._obs_to_cmd.pct(99)),
            }
            for buf in [self._joints] + [c.buffer for c in self._cameras]:
                kv[f"staleness_s {buf.name}"] = f"{self._staleness.get(buf.name, float('nan')):.3f}"
                kv[f"rejected_messages {buf.name}"] = str(buf.rejected)
            for k, v in self._counts.items():
                kv[k] = str(v)
            if not self._active:
                level, text = DiagnosticStatus.OK, "inactive"
            elif self._holding:
                level = DiagnosticStatus.ERROR if self._fault else DiagnosticStatus.WARN
                text = f"holding: {self._hold_reason}"
            else:
                level, text = DiagnosticStatus.OK, "commanding"
            status = DiagnosticStatus(level=level, name=f"{self.get_name()}: policy", message=text,
                                      hardware_id=self._model.device,
                                      values=[KeyValue(key=k, value=v) for k, v in kv.items()])
            arr = DiagnosticArray(status=[status])
            arr.header.stamp = self.get_clock().now().to_msg()
            self._diag_pub.publish(arr)

    # ------------------------------------------------------------------ services
    def _srv_reset(self, request, response):
        with self._lock:
            if self._model is not None:
                for buf in [self._joints] + [c.buffer for c in self._cameras]:
                    buf.clear()
                active = self._active
                if active and not self._holding:
                    self._hold("reset", self.get_clock().now().nanoseconds, log=False)
                holding = self._holding
                self._reset_runtime()
                self._holding = holding
                self._reset_stats()
        response.success = True
        response.message = "buffers and plan cleared"
        self.get_logger().info("reset: buffers and plan cleared")
        return response

    async def _srv_reload_async(self, request, response):
        """~/reload: the new model is loaded and warmed up on a helper thread while the executor keeps
        running the control ticks with the old one; the reply comes when the swap is done (or refused)."""
        from rclpy.task import Future

        done = Future()

        def work():
            try:
                done.set_result(self._srv_reload(request, response))
            except BaseException as e:  # noqa: BLE001 - reported through the future
                done.set_exception(e)

        threading.Thread(target=work, name="policy_reload", daemon=True).start()
        return await done

    def _srv_reload(self, request, response):
        with self._lock:
            old, settings = self._model, self._settings
        if old is None:
            response.success = False
            response.message = "not configured (configure the node first)"
            return response
        try:
            s = NodeSettings.from_values(self._param_values())
            model = self._load_model(s.checkpoint, settings.device, s.inference_scheduler, s.num_inference_steps,
                                     s.seed, settings.use_cuda_graph, log=self.get_logger().warning)
            why = old.spec.compatible(model.spec)
            if why:
                raise GenilError(f"{s.checkpoint}: does not fit the running task: {why} "
                                 f"(deactivate, cleanup and configure to switch tasks)")
            warm_up(model, s.checkpoint)
        except Exception as e:
            msg = str(e) if isinstance(e, GenilError) else f"{type(e).__name__}: {e}"
            self.get_logger().error(f"reload failed, keeping {old.description}: {msg}")
            response.success = False
            response.message = msg
            return response
        with self._lock:
            if self._model is None:  # cleaned up meanwhile
                response.success = False
                response.message = "cleaned up during reload"
                return response
            self._model = model
            self._settings.checkpoint = s.checkpoint
        self.get_logger().info(f"reloaded: {model.description}")
        response.success = True
        response.message = f"loaded {model.description}"
        return response

    def destroy_node(self) -> None:
        self._worker.stop()
        super().destroy_node()


# =========================================================================== entry points


def main(argv: Optional[list] = None) -> int:
    """``policy_node`` console script / ``ros2 run genil_ros policy_node``.

    SIGINT / SIGTERM end the process cleanly: one hold command is published (so a trajectory controller
    stops following the rest of the trajectory), then the node is destroyed."""
    import signal

    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from genil_ros.ros.runner import ignore_shutdown_signals, skip_final_collection

    args = sys.argv if argv is None else argv
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = PolicyNode()
    # Single-threaded: every callback here is short (inference has its own thread, reload an async helper).
    # (rclpy's MultiThreadedExecutor.spin_once busy-looped at 100% CPU here and starved the inputs.)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if node.get_parameter("autostart").value is True:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("autostart: configure failed; waiting for lifecycle commands")
            elif node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("autostart: activate failed; waiting for lifecycle commands")
        while not stop.is_set() and not node.finalized.is_set() and rclpy.ok(context=node.context):
            executor.spin_once(timeout_sec=0.1)
    finally:
        ignore_shutdown_signals()  # a second Ctrl-C (launch forwards one) must not kill it mid-exit (-2)
        try:
            node._stop_commanding("shutting down")  # one hold command so a trajectory controller stops
        except Exception as e:
            node.get_logger().error(f"stopping: {type(e).__name__}: {e}")
        executor.shutdown(timeout_sec=2.0)
        executor.remove_node(node)
        node.destroy_node()
        rclpy.try_shutdown()
        skip_final_collection()  # interpreter teardown after torch took 5-15 s on a busy machine
    return 0


def add_arguments(parser) -> None:
    """``genil-ros policy``: the node with auto-activation; other parameters via --param / --params-file."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory or shipped model name")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--output-mode", default="trajectory", choices=["trajectory", "position"])
    parser.add_argument("--params-file", default=None, help="ROS 2 parameters YAML (e.g. config/policy_node.yaml)")
    parser.add_argument("--param", "-p", action="append", default=[], metavar="NAME:=VALUE",
                        help="a node parameter, repeatable (e.g. -p max_step_rad:=0.05)")
    parser.add_argument("--no-autostart", action="store_true", help="wait for `ros2 lifecycle set` instead")
    parser.add_argument("--use-sim-time", action="store_true", help="follow /clock (the bundled sim, Gazebo)")
    parser.add_argument("--name", default=NODE_NAME, help="node name")


def ros_arguments(args) -> list:
    from genil_ros.paths import config_path

    ros = ["--ros-args", "-r", f"__node:={args.name}"]
    if args.params_file:
        p = config_path(args.params_file)
        if not p.is_file():
            raise GenilError(f"{args.params_file}: parameters file not found")
        ros += ["--params-file", str(p)]
    for item in args.param:
        if ":=" not in item:
            raise GenilError(f"--param {item!r}: expected NAME:=VALUE")
        if item.split(":=", 1)[0] not in PARAMETERS and item.split(":=", 1)[0] != "use_sim_time":
            raise GenilError(f"--param {item!r}: unknown parameter (known: {', '.join(PARAMETERS)})")
        ros += ["-p", item]
    ros += ["-p", f"checkpoint:={args.checkpoint}", "-p", f"device:={args.device}",
            "-p", f"output_mode:={args.output_mode}", "-p", f"autostart:={'false' if args.no_autostart else 'true'}"]
    if args.use_sim_time:
        ros += ["-p", "use_sim_time:=true"]
    return ros


def run(args) -> int:
    return main(["genil-ros-policy"] + ros_arguments(args))


if __name__ == "__main__":
    sys.exit(main())
