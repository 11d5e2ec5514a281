"""The policy node's runtime, without ROS: what happens between the input messages and the commands.

- ``streams``    stamp-sorted input buffers, the per-tick sample of every input and the T_o window
- ``plan``       the action plan of one chunk and how the loop hands over to the next chunk
- ``safety``     joint-limit and per-tick step clamping of every command
- ``inference``  the worker thread that runs the model on one observation window at a time
- ``timing``     what the loop measures (latency, period, counters) and the inference lead time

Plain numpy and threading: no rclpy (``genil_ros/ros/policy_node.py`` is the ROS shell around these) and
no torch (the model arrives as a :class:`genil_ros.policy.chunk_model.ChunkModel`).
"""

from genil_ros.control.inference import InferenceJob, InferenceResult, InferenceWorker
from genil_ros.control.plan import ActionPlan, Handover, ReplaceOnArrival
from genil_ros.control.safety import SafetyFilter
from genil_ros.control.streams import CameraInput, ObservationWindow, ObsSample, StreamBuffer, sample_inputs
from genil_ros.control.timing import LoopStats, RollingStats, inference_lead

__all__ = ["ActionPlan", "CameraInput", "Handover", "InferenceJob", "InferenceResult", "InferenceWorker",
           "LoopStats", "ObsSample", "ObservationWindow", "ReplaceOnArrival", "RollingStats", "SafetyFilter",
           "StreamBuffer", "inference_lead", "sample_inputs"]
