"""Thread discipline for inference on a robot's own computer (no rclpy).

A robot's CPU is shared with camera drivers, controllers and planners. Two rules keep a policy from
fighting them: never run more intra-op threads than the physical cores this process may use, and never
let idle worker threads spin (a spinning OpenMP / ONNX Runtime pool under contention turns a 4 ms step
into hundreds of ms). ``ThreadPlan`` holds the choice; ``apply_torch`` and ``ort_session_options`` carry it
out; ``describe()`` is the string the policy node reports in its diagnostics::

    plan = ThreadPlan.choose(requested=0)        # 0 = default: min(physical cores available, 4)
    plan.apply_torch()
    opts = plan.ort_session_options()
    plan.describe()   # 'intra-op 2 (default: 2 physical cores available), inter-op 1, no spinning'

torch's OpenMP pool reads its spin policy once, when it starts: :func:`set_process_env` (call it before
torch is imported, as the node's ``main`` can) sets ``OMP_WAIT_POLICY=PASSIVE`` and the thread counts
unless the user already set them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

__all__ = ["ThreadPlan", "available_cpus", "physical_cores_available", "default_intra_op_threads",
           "set_process_env", "MAX_DEFAULT_THREADS"]

MAX_DEFAULT_THREADS = 4  # beyond this a batch-1 policy gains little and takes cores from the rest of the robot


def available_cpus() -> list[int]:
    """The logical CPUs this process may run on (its affinity mask, e.g. from taskset or a cgroup cpuset)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def physical_cores_available(cpus: Optional[list[int]] = None,
                             sysfs: Path = Path("/sys/devices/system/cpu")) -> int:
    """Distinct physical cores among ``cpus`` (default: the affinity mask): SMT siblings count once.
    Falls back to the number of logical CPUs when the topology is not readable."""
    cpus = available_cpus() if cpus is None else list(cpus)
    cores = set()
    for c in cpus:
        topo = sysfs / f"cpu{c}" / "topology"
        try:
            pkg = (topo / "physical_package_id").read_text().strip()
            core = (topo / "core_id").read_text().strip()
        except OSError:
            return max(1, len(cpus))
        cores.add((pkg, core))
    return max(1, len(cores))


def default_intra_op_threads() -> int:
    return max(1, min(physical_cores_available(), MAX_DEFAULT_THREADS))


@dataclass(frozen=True)
class ThreadPlan:
    """Intra-op threads for the networks, one inter-op thread, spinning off unless asked for."""

    intra_op: int
    inter_op: int = 1
    spinning: bool = False
    source: str = "default"  # "default" or "parameter"
    cores: int = 0  # physical cores available when the plan was made (for the report)

    @classmethod
    def choose(cls, requested: int = 0, spinning: bool = False) -> "ThreadPlan":
        """``requested`` > 0 is taken as given (capped at the logical CPUs available, with a note in
        ``describe``); 0 means the default ``min(physical cores available, 4)``."""
        if not isinstance(requested, int) or requested < 0:
            raise ValueError(f"threads {requested!r} must be an int >= 0 (0 = default)")
        cores = physical_cores_available()
        if requested:
            return cls(min(requested, len(available_cpus())), 1, bool(spinning), "parameter", cores)
        return cls(min(cores, MAX_DEFAULT_THREADS), 1, bool(spinning), "default", cores)

    def describe(self) -> str:
        why = (f"default: {self.cores} physical cores available" if self.source == "default"
               else f"parameter; {self.cores} physical cores available")
        spin = "spinning" if self.spinning else "no spinning"
        return f"intra-op {self.intra_op} ({why}), inter-op {self.inter_op}, {spin}"

    def apply_torch(self, environ=os.environ) -> str:
        """Set torch's intra-op threads (and inter-op ones while torch still allows it). Returns a note for
        the log and diagnostics ('' when all went as planned): the inter-op pool had already started, or
        the OpenMP pool may spin because ``OMP_WAIT_POLICY`` was not PASSIVE when it started."""
        import torch

        notes = []
        torch.set_num_threads(self.intra_op)
        try:
            if torch.get_num_interop_threads() != self.inter_op:
                torch.set_num_interop_threads(self.inter_op)
        except RuntimeError:  # only settable before the first inter-op parallel work
            notes.append(f"torch inter-op threads stay {torch.get_num_interop_threads()} (pool already started)")
        if not self.spinning and self.intra_op > 1 and environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
            notes.append("torch's OpenMP threads may spin (OMP_WAIT_POLICY=PASSIVE was not set before torch "
                         "started; see threads.set_process_env)")
        return "; ".join(notes)

    def ort_session_options(self):
        """onnxruntime.SessionOptions carrying this plan (sequential execution, all graph optimisations)."""
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.intra_op
        so.inter_op_num_threads = self.inter_op
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        spin = "1" if self.spinning else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.add_session_config_entry("session.inter_op.allow_spinning", spin)
        return so


def set_process_env(threads: int = 0, spinning: bool = False, environ=os.environ) -> ThreadPlan:
    """Before torch is imported: export ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` and, without spinning,
    ``OMP_WAIT_POLICY=PASSIVE`` (torch's OpenMP pool reads them once). Values the user set win."""
    plan = ThreadPlan.choose(threads, spinning)
    environ.setdefault("OMP_NUM_THREADS", str(plan.intra_op))
    environ.setdefault("MKL_NUM_THREADS", str(plan.intra_op))
    if not spinning:
        environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return plan
