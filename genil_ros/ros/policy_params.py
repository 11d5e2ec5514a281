"""The parameters of ``policy_node``: one settings dataclass that is also the declared parameter table.

No rclpy here (see :mod:`genil_ros.ros.params`), so the table and its checks are usable by the CLI, the
tests and the docs without ROS. Topics, rate and scheduler left at 0 / empty mean "the checkpoint's";
:func:`resolve_inputs` applies that order (parameter > ``config`` file > checkpoint) to the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from genil_ros.control.handover import HANDOVERS, SOFT_TICKS
from genil_ros.control.streams import CameraInput
from genil_ros.errors import GenilError
from genil_ros.ros.params import NodeSettings, param

__all__ = ["NODE_NAME", "PolicySettings", "resolve_inputs"]

NODE_NAME = "policy_node"


@dataclass
class PolicySettings(NodeSettings):
    checkpoint: str = param("", "checkpoint directory (policy/checkpoint.py format) or a shipped model name")
    config: str = param("", "optional experiment YAML whose task overrides the checkpoint's topics and control rate")
    device: str = param("auto", "auto | cpu | cuda | cuda:N (auto: CUDA when available)")
    output_mode: str = param("trajectory", "trajectory (JointTrajectory) | position (Float64MultiArray)",
                             choices=("trajectory", "position"))
    trajectory_topic: str = param("/joint_trajectory_controller/joint_trajectory", "JointTrajectory command topic")
    position_topic: str = param("/forward_position_controller/commands", "Float64MultiArray command topic")
    joint_states_topic: str = param("", "JointState topic (empty: the checkpoint's task.joint_states_topic)")
    camera_topics: Optional[list[str]] = param(
        None, "one topic per camera, in the checkpoint's camera order (unset: from the config)")
    camera_compressed: Optional[list[bool]] = param(
        None, "one bool per camera: CompressedImage instead of Image (unset: from the config)")
    control_rate_hz: float = param(0.0, "control tick rate (0: the checkpoint's task.control_rate_hz)", minimum=0.0)
    num_inference_steps: int = param(0, "denoising steps (0: the checkpoint's)", minimum=0)
    inference_scheduler: str = param("", "denoising scheduler (empty: the checkpoint's)",
                                     choices=("", "ddim", "ddpm", "dpmsolver"))
    max_staleness_s: float = param(0.5, "an input older than this at a control tick makes the node hold")
    joint_lower_limits: Optional[list[float]] = param(None, "per-joint lower position limits (unset or empty: none)")
    joint_upper_limits: Optional[list[float]] = param(None, "per-joint upper position limits (unset or empty: none)")
    max_step_rad: float = param(0.1, "max change of a joint command per tick (<= 0: no limit)")
    autostart: bool = param(False, "configure and activate on start")
    use_cuda_graph: bool = param(False, "capture the denoising network in a CUDA graph (CUDA only)")
    seed: int = param(0, "seed of the sampling noise (-1: random)")
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

    def validate(self) -> None:
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise GenilError(f"parameter device: {self.device!r} is not one of auto, cpu, cuda, cuda:N")
        if self.max_staleness_s <= 0:
            raise GenilError(f"parameter max_staleness_s: must be > 0, got {self.max_staleness_s:g}")


def resolve_inputs(s: PolicySettings, spec) -> tuple[str, float, list[CameraInput]]:
    """(joint state topic, control rate, cameras) for the model ``spec`` (a ModelSpec): the parameters,
    else the task of the optional ``config`` file, else the checkpoint's task. GenilError naming the
    parameter when they do not fit the checkpoint."""
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
    return s.joint_states_topic or joint_topic, s.control_rate_hz or rate, cams
