"""The policy node's runtime, without ROS: what happens between the input messages and the commands.

- ``streams``     per-topic rings of received messages, the per-tick sample of every observation entry
                  (decoded at the tick) and the T_o window
- ``plan``        action plans: predicted chunks on the control timeline, the committed prefix
- ``handover``    the strategies that hand over from one chunk to the next (receding horizon, temporal
                  ensembling, prefix inpainting, prefix conditioning)
- ``smoothness``  the boundary metric: jumps / jerk at chunk handovers against inside chunks
- ``safety``      one safety filter per action entry (joint limits and steps, gripper range and rate,
                  Cartesian speed and workspace, vector limits)
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
from genil_ros.control.safety import (
    CommandFilter,
    GripperFilter,
    JointFilter,
    PoseFilter,
    TwistFilter,
    VectorFilter,
)
from genil_ros.control.smoothness import boundary_metrics, summarize
from genil_ros.control.streams import InputEntry, ObservationWindow, ObsSample, TopicRing, sample_inputs
from genil_ros.control.timing import DelayTicks, LoopStats, RollingStats, inference_lead

__all__ = ["ActionPlan", "CommandFilter", "ConditionOnPrefix", "DelayTicks", "EnsemblePlan", "GripperFilter",
           "HANDOVERS", "Handover", "HandoverStrategy", "InferenceJob", "InferenceResult", "InferenceWorker",
           "InpaintPrefix", "InputEntry", "JointFilter", "LoopStats", "ObsSample", "ObservationWindow",
           "PoseFilter", "Prefix", "RecedingHorizon", "ReplaceOnArrival", "RollingStats", "TemporalEnsemble",
           "TopicRing", "TwistFilter", "VectorFilter", "boundary_metrics", "check_handover", "inference_lead",
           "make_handover", "resolve_handover", "sample_inputs", "summarize"]
