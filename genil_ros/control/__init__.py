"""The policy node's runtime, without ROS: what happens between the input messages and the commands.

- ``streams``     stamp-sorted input buffers, the per-tick sample of every input and the T_o window
- ``plan``        action plans: predicted chunks on the control timeline, the committed prefix
- ``handover``    the strategies that hand over from one chunk to the next (receding horizon, temporal
                  ensembling, prefix inpainting, prefix conditioning)
- ``smoothness``  the boundary metric: jumps / jerk at chunk handovers against inside chunks
- ``safety``      joint-limit and per-tick step clamping of every command
- ``inference``   the worker thread that runs the model on one observation window at a time
- ``timing``      what the loop measures (latency, period, counters) and the inference lead in ticks

Plain numpy and threading: no rclpy (``genil_ros/ros/policy_node.py`` is the ROS shell around these) and
no torch (the model arrives as a :class:`genil_ros.policy.chunk_model.ChunkModel`).
"""

from genil_ros.control.handover import (
    HANDOVERS,
    ConditionOnPrefix,
    HandoverStrategy,
    InpaintPrefix,
    RecedingHorizon,
    ReplaceOnArrival,
    TemporalEnsemble,
    check_handover,
    make_handover,
    resolve_handover,
)
from genil_ros.control.inference import InferenceJob, InferenceResult, InferenceWorker
from genil_ros.control.plan import ActionPlan, EnsemblePlan, Handover, Prefix
from genil_ros.control.safety import SafetyFilter
from genil_ros.control.smoothness import boundary_metrics, summarize
from genil_ros.control.streams import CameraInput, ObservationWindow, ObsSample, StreamBuffer, sample_inputs
from genil_ros.control.timing import DelayTicks, LoopStats, RollingStats, inference_lead

__all__ = ["ActionPlan", "CameraInput", "ConditionOnPrefix", "DelayTicks", "EnsemblePlan", "HANDOVERS", "Handover",
           "HandoverStrategy", "InferenceJob", "InferenceResult", "InferenceWorker", "InpaintPrefix", "LoopStats",
           "ObsSample", "ObservationWindow", "Prefix", "RecedingHorizon", "ReplaceOnArrival", "RollingStats",
           "SafetyFilter", "StreamBuffer", "TemporalEnsemble", "boundary_metrics", "check_handover",
           "inference_lead", "make_handover", "resolve_handover", "sample_inputs", "summarize"]
