"""The inference worker: one background thread runs the model on one observation window at a time, so
the control loop (on the ROS executor) never waits for the network; the loop polls for the result. A
``prefetch`` job only prepares what the next inference will reuse (``ChunkModel.prefetch``: the camera
frames it will hold again) and gives no result."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from genil_ros.control.plan import Prefix
from genil_ros.policy.chunk_model import ChunkModel, check_chunk

__all__ = ["InferenceJob", "InferenceResult", "InferenceWorker"]


@dataclass
class InferenceJob:
    gen: int  # the control loop's generation when submitted: a result of an older one is stale
    tick: int  # the tick the observation window ends at
    tick_ns: int
    obs_stamp_ns: int  # the oldest input stamp in the window's last sample
    obs: dict
    model: ChunkModel
    prefix: Optional[Prefix] = None  # the committed first entries, for a prefix-aware handover strategy
    prefetch: bool = False  # model.prefetch(obs) instead of an inference; no result


@dataclass
class InferenceResult:
    job: InferenceJob
    chunk: Optional[np.ndarray] = None  # (T_p, A) float64, or None on error
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
        """Start ``job``; False (and nothing started) while another one is queued or running."""
        with self._cond:
            if self._busy or self._job is not None:
                return False
            self._job = job
            self._cond.notify()
            return True

    def take_result(self) -> Optional[InferenceResult]:
        """The finished result (once), or None."""
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
                if job.prefetch:
                    job.model.prefetch(job.obs)
                else:
                    out = job.model(job.obs) if job.prefix is None else job.model(job.obs, prefix=job.prefix)
                    res.chunk = check_chunk(out, job.model.spec)
            except Exception as e:  # a model error must never take the node down
                res.error = f"{type(e).__name__}: {e}"
            res.latency_s = time.perf_counter() - t0
            with self._cond:
                if not job.prefetch:  # a failed prefetch shows up again in the inference that follows
                    self._result = res
                self._busy = False
                self._cond.notify_all()
