"""The policy node's runtime, without ROS: what happens between the input messages and the commands.

- ``streams``    per-topic rings of received messages, the per-tick sample of every observation entry
                 (decoded at the tick) and the T_o window
- ``plan``       the action plan of one chunk and how the loop hands over to the next chunk
- ``safety``     one safety filter per action entry (joint limits and steps, gripper range and rate,
                 Cartesian speed and workspace, vector limits)
- ``inference``  the worker thread that runs the model on one observation window at a time
- ``timing``     what the loop measures (latency, period, counters) and the inference lead time

Plain numpy and threading: no rclpy (``genil_ros/ros/policy_node.py`` is the ROS shell around these) and
no torch (the model arrives as a :class:`genil_ros.policy.chunk_model.ChunkModel`).
"""

from genil_ros.control.inference import InferenceJob, InferenceResult, InferenceWorker
from genil_ros.control.plan import ActionPlan, Handover, ReplaceOnArrival
from genil_ros.control.safety import (
    CommandFilter,
    GripperFilter,
    JointFilter,
    PoseFilter,
    TwistFilter,
    VectorFilter,
)
from genil_ros.control.streams import InputEntry, ObservationWindow, ObsSample, TopicRing, sample_inputs
from genil_ros.control.timing import LoopStats, RollingStats, inference_lead

__all__ = ["ActionPlan", "CommandFilter", "GripperFilter", "Handover", "InferenceJob", "InferenceResult",
           "InferenceWorker", "InputEntry", "JointFilter", "LoopStats", "ObsSample", "ObservationWindow", "PoseFilter",
           "ReplaceOnArrival", "RollingStats", "TopicRing", "TwistFilter", "VectorFilter", "inference_lead",
           "sample_inputs"]
