"""The parameters of ``policy_node``: one settings dataclass that is also the declared parameter table.

No rclpy here (see :mod:`genil_ros.ros.params`), so the table and its checks are usable by the CLI, the
tests and the docs without ROS. Topics, rate and scheduler left at 0 / empty mean "the checkpoint's".
Besides this table the node takes per-entry parameters (``observations.<entry>.<key>``,
``actions.<entry>.<key>``), declared at configure; :mod:`genil_ros.ros.policy_entries` has them and the
order in which every input and output is resolved (per-entry parameter > the flat ones here > ``config``
file > checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from genil_ros.control.handover import HANDOVERS, SOFT_TICKS
from genil_ros.errors import GenilError
from genil_ros.ros.params import NodeSettings, param

__all__ = ["NODE_NAME", "PolicySettings"]

NODE_NAME = "policy_node"


@dataclass
class PolicySettings(NodeSettings):
    checkpoint: str = param("", "checkpoint directory (policy/checkpoint.py format) or a shipped model name")
    config: str = param("", "optional experiment YAML whose task overrides the checkpoint's topics and control rate")
    device: str = param("auto", "auto | cpu | cuda | cuda:N (auto: CUDA when available)")
    output_mode: str = param("", "the task's only joint_position action: trajectory (JointTrajectory on "
                             "trajectory_topic) | position (Float64MultiArray on position_topic); empty: trajectory "
                             "for joint_names-form tasks, the task's msg and topic for typed ones",
                             choices=("", "trajectory", "position"))
    trajectory_topic: str = param("/joint_trajectory_controller/joint_trajectory",
                                  "JointTrajectory command topic (output_mode trajectory)")
    position_topic: str = param("/forward_position_controller/commands",
                                "Float64MultiArray command topic (output_mode position)")
    joint_states_topic: str = param("", "JointState topic of the joint observations reading the task's "
                                        "joint_states_topic (empty: the checkpoint's)")
    camera_topics: Optional[list[str]] = param(
        None, "one topic per camera, in the checkpoint's camera order (unset: from the config)")
    camera_compressed: Optional[list[bool]] = param(
        None, "one bool per camera: CompressedImage instead of Image (unset: from the config)")
    control_rate_hz: float = param(0.0, "control tick rate (0: the checkpoint's task.control_rate_hz)", minimum=0.0)
    num_inference_steps: int = param(0, "denoising steps (0: the checkpoint's)", minimum=0)
    inference_scheduler: str = param("", "denoising scheduler (empty: the checkpoint's)",
                                     choices=("", "ddim", "ddpm", "dpmsolver", "consistency"))
    max_staleness_s: float = param(0.5, "an input older than this at a control tick makes the node hold")
    joint_lower_limits: Optional[list[float]] = param(
        None, "lower position limits of the task's only joint_position action (unset or empty: none)")
    joint_upper_limits: Optional[list[float]] = param(
        None, "upper position limits of the task's only joint_position action (unset or empty: none)")
    max_step_rad: float = param(0.1, "max change of a joint command per tick, every joint_position action "
                                     "(<= 0: no limit; per entry: actions.<entry>.max_step)")
    autostart: bool = param(False, "configure and activate on start")
    use_cuda_graph: bool = param(False, "capture the denoising network in a CUDA graph (CUDA only)")
    backend: str = param("auto", "inference backend: auto (cuda_graph on CUDA, onnxruntime on the CPU when the "
                         "checkpoint has a valid ONNX export, else torch) | torch | cuda_graph | onnxruntime",
                         choices=("auto", "torch", "cuda_graph", "onnxruntime"))
    threads: int = param(0, "intra-op threads of the networks (0: min(physical cores available, 4); "
                         "capped at the CPUs available)", minimum=0)
    seed: int = param(0, "seed of the sampling noise (-1: random)")
    executor: str = param("events", "events (rclpy's EventsExecutor: a third of the CPU per input message) | single "
                          "(SingleThreadedExecutor); read at start", choices=("events", "single"))
    handover: str = param(
        "auto",
        "how the loop moves from one action chunk to the next (genil_ros/control/handover.py): auto (inpaint "
        "where the checkpoint samples with ddim, else receding_horizon: the winner of the injected-delay grids, "
        "README 'Chunk handover under delay') | inpaint (Real-Time Chunking: the new chunk is denoised to "
        "continue from the actions already committed) | receding_horizon (replace on arrival, skipping the "
        "actions whose ticks passed; its seams jump more as the delay grows) | temporal_ensemble (ACT: average "
        "every chunk covering a tick; smooth, but it averages modes and reacts late: lower success) | "
        "prefix_conditioning (the committed actions given to a checkpoint trained with "
        "policy.prefix_conditioning)",
        choices=HANDOVERS)
    handover_ensemble_weight: float = param(
        0.01, "temporal_ensemble: chunk i (0 = oldest) weighs exp(-w * i); > 0 favours older chunks (ACT)")
    handover_guidance: float = param(
        0.0, "inpaint: guidance strength beta (0, the measured default: replacement only, no backward pass "
        "through the network, any backend; > 0: a vector-Jacobian product per step, torch backend only)",
        minimum=0.0)
    handover_soft_ticks: int = param(
        SOFT_TICKS, "inpaint: ticks after the committed prefix pulled softly towards the current plan (RTC's "
        "soft mask; 4 measured best, 0 = hard prefix only)", minimum=0)
    inject_delay_ms: float = param(
        0.0, "TESTS AND BENCHMARKS ONLY: hold every chunk until this long after its observation window's tick "
        "(node clock), as if inference were that slow; 0 = off", minimum=0.0)
    guide_checkpoint: str = param("", "discriminator checkpoint (trainer node / genil-ros finetune) that scores "
                                  "guide_samples sampled chunks per inference, the best is executed; empty: off")
    guide_samples: int = param(8, "chunks sampled in one batched pass when guide_checkpoint is set (K)", minimum=2)

    def validate(self) -> None:
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise GenilError(f"parameter device: {self.device!r} is not one of auto, cpu, cuda, cuda:N")
        if self.max_staleness_s <= 0:
            raise GenilError(f"parameter max_staleness_s: must be > 0, got {self.max_staleness_s:g}")
