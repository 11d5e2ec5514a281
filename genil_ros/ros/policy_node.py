"""``policy_node``: a diffusion policy driving a robot arm over ROS 2 (a managed / lifecycle node).

This module is the ROS shell: parameters (:mod:`genil_ros.ros.policy_params`), the model
(:mod:`genil_ros.policy.chunk_model`) and the control loop's parts (:mod:`genil_ros.control`: buffers,
window, plan and handover, safety filter, inference worker) are plain Python and tested without ROS.
``genil-ros policy`` is :mod:`genil_ros.ros.policy_cli`.

Lifecycle (``ros2 lifecycle set /policy_node configure|activate|deactivate|cleanup|shutdown``):

- configure: read the parameters, load the checkpoint on the device, warm up (one inference, and the
  CUDA graph capture when ``use_cuda_graph``), create the publishers and subscriptions. The inputs are
  buffered from here on, so activation can start commanding at once.
- activate: start the control timer; commands are published from the first action chunk on.
- deactivate: stop commanding and hold (see "Holding" below).
- cleanup: destroy publishers / subscriptions and free the model. shutdown: the same, then the process exits.
- ``autostart: true`` does configure + activate on start (the default of ``genil-ros policy``). Run as
  ``policy_node`` (launch files), a failed autostart leaves the node alive and unconfigured, waiting for
  lifecycle commands; run as ``genil-ros policy``, the process exits with status 2.

Timing (all on the node's clock, so ``use_sim_time`` makes it follow ``/clock``): every control tick
(``control_rate_hz``) samples each input by header stamp into the T_o window (:mod:`genil_ros.control.streams`:
zero-order hold; a stale or missing input makes the node hold until T_o fresh ticks); inference runs on
a worker thread; the ``handover`` strategy (:mod:`genil_ros.control.handover`) decides when the next one
starts, what it is told (the committed prefix) and how the loop moves to its chunk. Inference delay is
counted in ticks consumed (arrival tick - window tick). ``inject_delay_ms`` (tests and benchmarks only)
holds every chunk until that long after its window's tick, as if the computer were that slow.

Inputs and outputs (:mod:`genil_ros.ros.policy_io`, resolved by :mod:`genil_ros.ros.policy_entries`): one
subscription per observation topic of the checkpoint's task, whose callback only keeps the message (so
1 kHz joint states and 60 Hz VGA images cost one append each; entries are decoded at the tick), and one
publisher per action entry, each behind its own safety filter (:mod:`genil_ros.control.safety`: joint
limits and step, gripper range and rate, Cartesian speed and workspace, vector limits), with the
per-entry parameters ``observations.<entry>.*`` / ``actions.<entry>.*``. Every chunk goes to
``~/predicted_chunk``, the diagnostics to ``/diagnostics`` at 1 Hz (layouts in docs/interfaces.md).

Threads: one single-threaded executor (``executor``: ``events``, rclpy's EventsExecutor, the default: a
third of the SingleThreadedExecutor's CPU per input message, which is what holds the rate under input
floods on a busy machine; ``single``: the SingleThreadedExecutor, also used where rclpy has none) runs
the tick, the input callbacks, the services and the diagnostics timer, one at a time, each short.
Inference has its own worker thread; ``~/reload`` loads on a helper thread behind an async service
callback. No callback groups: under a single-threaded executor they change nothing, and rclpy's
MultiThreadedExecutor busy-looped at 100% CPU here. ``_lock`` guards the state shared with the reload thread.

Holding: on stale or missing inputs, bad messages, NaN/Inf in a chunk, a model error, a late chunk that
has run out, or deactivation, the node stops commanding: ONE hold command per entry that had commanded
(the last command; zero velocity for a twist), then nothing until the inputs are good again; commanding
resumes by itself. The reason names the entry and topic, and is logged once (throttled). Bad input
never ends the process.

Services: ``~/reset`` (std_srvs/Trigger) clears buffers and the plan; ``~/reload`` (std_srvs/Trigger)
loads the checkpoint named by the ``checkpoint`` parameter again (e.g. a newer one the trainer wrote)
without stopping; the running model is kept if the new one fails to load or does not fit the task.
Guided selection (``guide_checkpoint``, off by default): the best of ``guide_samples`` chunks by the
discriminator (:mod:`genil_ros.finetune.guided`); ``~/reload`` reads the discriminator again too.
"""

from __future__ import annotations

import re
import sys
import threading
import time
import traceback
from typing import Callable, Optional

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions
from rclpy.task import Future
from std_srvs.srv import Trigger

from genil_ros.control import (
    ActionPlan,
    DelayTicks,
    InferenceJob,
    InferenceResult,
    InferenceWorker,
    LoopStats,
    ObservationWindow,
    ObsSample,
    RecedingHorizon,
    check_handover,
    inference_lead,
    make_handover,
    resolve_handover,
    sample_inputs,
)
from genil_ros.errors import GenilError
from genil_ros.finetune.guided import guide_model
from genil_ros.policy.chunk_model import ChunkModel, ModelSpec, load_chunk_model, warm_up
from genil_ros.ros.params import declare_parameters, read_settings
from genil_ros.ros.policy_entries import IOPlan, resolve_io
from genil_ros.ros.policy_io import EntryParameters, NodeInputs, NodeOutputs
from genil_ros.ros.policy_params import NODE_NAME, PolicySettings
from genil_ros.ros.runner import ignore_shutdown_signals, skip_final_collection

__all__ = ["PolicyNode", "main"]

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class PolicyNode(LifecycleNode):
    """The lifecycle node; see the module docstring for its behaviour."""

    def __init__(self, node_name: str = NODE_NAME, model_loader: Callable[..., ChunkModel] = load_chunk_model,
                 **kwargs):
        super().__init__(node_name, **kwargs)
        declare_parameters(self, PolicySettings)
        self._load_model = model_loader
        self._lock = threading.RLock()
        self._worker = InferenceWorker()
        self._handover = RecedingHorizon()
        self._model: Optional[ChunkModel] = None
        self._settings: Optional[PolicySettings] = None
        self._spec: Optional[ModelSpec] = None
        self._entities: list = []  # publishers / subscriptions / timers created by configure
        self._inputs: Optional[NodeInputs] = None
        self._outputs: Optional[NodeOutputs] = None
        self._entry_params = EntryParameters()  # observations.<entry>.* / actions.<entry>.*, declared at configure
        self._control_timer = None
        self._active = False
        self.finalized = threading.Event()
        self._last_log: dict[str, float] = {}
        self._reset_runtime()
        self._stats = LoopStats()
        self.create_service(Trigger, "~/reset", self._srv_reset)
        self.create_service(Trigger, "~/reload", self._srv_reload_async)

    def _log_throttled(self, level: str, key: str, text: str, period_s: float = 5.0) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) >= period_s:
            self._last_log[key] = now
            getattr(self.get_logger(), level)(text)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """unconfigured -> inactive: read the parameters, load and warm up the model, create the
        publishers, subscriptions and the diagnostics timer. SUCCESS: inactive, inputs are buffered,
        nothing is commanded. FAILURE (a bad parameter, a checkpoint that does not load or outputs
        NaN): the reason is logged as one line, nothing stays created, the node is unconfigured again and
        alive for the next configure."""
        try:
            self._configure()
        except Exception as e:  # noqa: BLE001 - any failure leaves the node alive and unconfigured
            bug = "" if isinstance(e, GenilError) else f"{type(e).__name__}: "  # a bug: with its traceback
            self.get_logger().error(f"configure failed: {bug}{e}" + (f"\n{traceback.format_exc()}" if bug else ""))
            self._teardown()
            return FAILURE
        return SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """inactive -> active: start the control timer. SUCCESS: commanding from the first action chunk
        on. FAILURE only when no model is loaded (the node stays inactive)."""
        with self._lock:
            if self._model is None:
                return FAILURE
            self._reset_runtime()
            self._active = True
            if self._control_timer is None:
                self._control_timer = self.create_timer(self._period_s, self._on_tick)
            else:
                self._control_timer.reset()
        self.get_logger().info(f"active: commanding {self._outputs.describe()} at {1.0 / self._period_s:g} Hz")
        return SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """active -> inactive: stop commanding (one hold command if it was commanding). Always SUCCESS."""
        self._stop_commanding("deactivated")
        self.get_logger().info("inactive: not commanding (holding the last position)")
        return SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """inactive -> unconfigured: destroy publishers, subscriptions and timers, free the model. Always
        SUCCESS."""
        self._teardown()
        self.get_logger().info("cleaned up: model freed")
        return SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """any primary state -> finalized: hold, tear down; :func:`main` then exits. Always SUCCESS."""
        self._stop_commanding("shutting down")
        self._teardown()
        self.finalized.set()
        return SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        """A transition raised: hold and tear down. SUCCESS: unconfigured (configure may be tried again)."""
        self._stop_commanding("error")
        self._teardown()
        return SUCCESS

    # ------------------------------------------------------------------ configure / teardown
    def _configure(self) -> None:
        s = read_settings(self, PolicySettings)
        model = self._load_model(s.checkpoint, s.device, s.inference_scheduler, s.num_inference_steps, s.seed,
                                 s.use_cuda_graph, log=self.get_logger().warning, backend=s.backend,
                                 threads=s.threads)
        model = guide_model(model, s.guide_checkpoint, s.guide_samples)  # discriminator-guided selection, if set
        spec = model.spec
        plan = resolve_io(s, spec, self._entry_params.given(self))
        rate = plan.rate_hz
        if abs(rate - spec.control_rate_hz) > 1e-6:
            self.get_logger().warning(f"control_rate_hz {rate:g} differs from the {spec.control_rate_hz:g} Hz the "
                                      f"policy was trained at: each action is held for another duration than in "
                                      f"training")
        handover = make_handover(resolve_handover(s.handover, model.prefix_methods), s.handover_ensemble_weight,
                                 s.handover_soft_ticks, s.handover_guidance)
        check_handover(handover, model.prefix_methods, s.checkpoint)
        warm_s = warm_up(model, s.checkpoint)  # allocations, kernels, CUDA graph replay; rejects NaN output
        with self._lock:
            self._settings, self._model, self._spec = s, model, spec
            self._handover = handover
            self._period_s = 1.0 / rate
            self._create_entities(plan)
            self._entry_params.declare(self, plan.parameters)
            self._reset_runtime()
            self._stats = LoopStats()
        for note in plan.notes:
            self.get_logger().warning(note)
        self.get_logger().info(
            f"configured: {model.description}; inputs {self._inputs.describe()}; outputs {self._outputs.describe()}"
            f"; {rate:g} Hz, T_o={spec.n_obs_steps} T_p={spec.horizon} T_a={spec.n_action_steps}; "
            f"handover {handover.describe()}; warm-up {warm_s * 1e3:.0f} ms"
            + (f"; INJECTED inference delay {s.inject_delay_ms:g} ms (tests / benchmarks)"
               if s.inject_delay_ms else ""))

    def _create_entities(self, plan: IOPlan) -> None:
        """One subscription per observation topic, one publisher per action entry (ros/policy_io.py)."""
        self._entities = []
        try:
            self._outputs = NodeOutputs(self, plan, self._period_s, self._entities)
            self._inputs = NodeInputs(self, plan, lambda key, text, period: self._log_throttled(
                "warning", key, text, period), self._entities)
            self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
            self._entities.append(self._diag_pub)
            self._entities.append(self.create_timer(1.0, self._publish_diagnostics))
        except Exception:
            self._teardown()  # what was created so far
            raise

    def _teardown(self) -> None:
        with self._lock:
            self._active = False
            if self._control_timer is not None:
                self.destroy_timer(self._control_timer)
                self._control_timer = None
            for ent in self._entities:
                destroy = (self.destroy_timer if hasattr(ent, "timer_period_ns") else
                           self.destroy_publisher if hasattr(ent, "publish") else self.destroy_subscription)
                try:
                    destroy(ent)
                except Exception:  # noqa: BLE001 - already gone
                    pass
            self._entities = []
            self._outputs = None
            self._inputs = None
            self._entry_params.undeclare(self)
            self._model = None
            self._gen += 1
        self._worker.wait_idle(timeout=30.0)
        torch = sys.modules.get("torch")  # loaded by the model, if one was ever loaded
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

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
        self._gen = getattr(self, "_gen", 0) + 1  # results of inferences started before this are dropped
        self._tick = 0
        self._window = ObservationWindow(self._spec.n_obs_steps) if self._spec is not None else None
        self._plan: Optional[ActionPlan] = None
        if getattr(self, "_outputs", None) is not None:
            self._outputs.reset()
        self._pending: Optional[InferenceResult] = None  # a finished chunk held back by inject_delay_ms
        self._delays = DelayTicks()  # ticks consumed by recent inferences: the lead
        self._holding = True
        self._hold_reason = "waiting for the first action chunk"
        self._hold_kind = ""
        self._fault: Optional[str] = None
        self._last_mono: Optional[float] = None

    # ------------------------------------------------------------------ inputs
    # The subscriptions (ros/policy_io.py: NodeInputs) only keep the messages; _observe decodes at the tick.

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
        """One control period: observe, take a finished chunk, command (or hold), start the next inference."""
        now_ns = self.get_clock().now().nanoseconds
        j = self._next_tick()
        sample, stale = self._observe(j, now_ns)
        self._take_result(j, now_ns)
        self._command_or_hold(j, now_ns, sample, stale)
        self._schedule_inference(j, now_ns)

    def _next_tick(self) -> int:
        """The index of this tick (and the measured period since the last one)."""
        mono = time.monotonic()
        if self._last_mono is not None:
            self._stats.periods.add(mono - self._last_mono)
        self._last_mono = mono
        self._tick += 1
        return self._tick - 1

    def _observe(self, j: int, now_ns: int) -> tuple[Optional[ObsSample], Optional[str]]:
        """Sample every input into the window; on a stale input clear the window and drop the plan."""
        sample, stale = sample_inputs(self._inputs.entries, j, now_ns, int(0.5 * self._period_s * 1e9),
                                      self._settings.max_staleness_s, self._stats.staleness)
        if sample is None:
            self._window.clear()
            self._plan = None
            self._gen += 1  # an in-flight chunk was computed from inputs we no longer trust
            self._stats.counts["stale_ticks"] += 1
        else:
            self._window.push(sample)
        return sample, stale

    def _take_result(self, j: int, now_ns: int) -> None:
        """A finished inference of this generation becomes the plan through the handover (or a fault)."""
        res, self._pending = self._pending or self._worker.take_result(), None
        if res is None or res.job.gen != self._gen:
            return
        if now_ns < res.job.tick_ns + int(self._settings.inject_delay_ms * 1e6):
            self._pending = res  # inject_delay_ms: not usable yet
            return
        self._stats.latency.add(res.latency_s)
        self._delays.add(j - res.job.tick)
        if res.error is not None:
            self._stats.counts["model_errors"] += 1
            self._fault = f"model error: {res.error}"
            self._plan = None
        elif not np.all(np.isfinite(res.chunk)):
            self._stats.counts["nonfinite_chunks"] += 1
            self._fault = "the action chunk contains NaN/Inf"
            self._plan = None
        else:
            self._fault = None
            new = ActionPlan(res.chunk, res.job.tick, self._spec.n_obs_steps, self._spec.n_action_steps,
                             res.job.obs_stamp_ns)
            h = self._handover.switch(self._plan, new, j)
            self._plan = h.plan
            self._stats.counts["late_chunks"] += int(h.late)
            self._stats.counts["chunks"] += 1
            self._stats.counts["skipped_actions"] += h.skipped
            self._publish_chunk(new, res.job.tick_ns)

    def _command_or_hold(self, j: int, now_ns: int, sample: Optional[ObsSample], stale: Optional[str]) -> None:
        """Publish the plan's actions for tick ``j`` through the safety filter, or hold and say why."""
        rows = self._plan.actions_from(j) if (self._plan is not None and sample is not None) else None
        if rows is not None:
            self._command(rows, now_ns)
            return
        if sample is not None and self._fault is None and self._plan is not None:
            self._stats.counts["missed_ticks"] += 1
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

    def _command(self, rows: np.ndarray, now_ns: int) -> None:
        """Every action entry through its safety filter to its topic; an entry that cannot be commanded
        (e.g. a degenerate pose) is a fault: hold."""
        last = self._window.last()
        try:
            self._outputs.command(rows, last.state if last is not None else None, now_ns)
        except GenilError as e:
            self._fault = str(e)
            self._plan = None
            self._hold(self._fault, now_ns)
            return
        if self._plan.commanded == 0 and self._plan.obs_stamp_ns:
            self._stats.obs_to_command.add((now_ns - self._plan.obs_stamp_ns) / 1e9)
        self._plan.commanded += 1
        if self._holding:
            self.get_logger().info(f"commanding {self._outputs.topics()}"
                                   + ("" if self._hold_reason.startswith("waiting") else
                                      f" again (was holding: {self._hold_reason})"))
        self._holding = False
        self._hold_reason = ""

    def _schedule_inference(self, j: int, now_ns: int) -> None:
        """Start the next inference early enough that its chunk arrives before this one runs out."""
        if not self._window.full() or self._worker.busy() or self._pending is not None:
            return
        lead = self._delays.estimate(inference_lead(self._stats.latency, self._period_s))
        if self._handover.wants_next(self._plan, j, lead):
            last = self._window.last()
            prefix = self._handover.prefix(self._plan, j, lead, self._spec.n_obs_steps, self._spec.horizon)
            self._worker.submit(InferenceJob(self._gen, j, now_ns, last.oldest_stamp_ns, self._window.as_obs(),
                                             self._model, prefix=prefix))
        elif self._model.spec.cameras and self._handover.wants_next(self._plan, j + 1, lead):  # encode this frame now:
            self._worker.submit(InferenceJob(self._gen, j, now_ns, 0, self._window.as_obs(), self._model,
                                             prefetch=True))  # it is the older one of the next window

    def _hold(self, reason: str, now_ns: int, log: bool = True) -> None:
        """Stop commanding: publish one hold command (last commanded position) when entering the hold."""
        entering = not self._holding
        if entering:
            self._stats.counts["holds"] += 1
            if self._outputs is not None:
                self._outputs.hold(now_ns)
            self._holding = True
        kind = re.sub(r"[-+]?\d[\d.e+-]*", "#", reason)  # the same reason with other numbers is not news
        if log and not reason.startswith("waiting") and (entering or kind != self._hold_kind):
            self._log_throttled("warning", "hold", f"holding position: {reason}", 2.0)
        self._hold_kind = kind
        self._hold_reason = reason

    # ------------------------------------------------------------------ outputs
    def _publish_chunk(self, plan: ActionPlan, tick_ns: int) -> None:
        self._outputs.publish_chunk(plan.chunk[plan.first:], tick_ns)

    def _publish_diagnostics(self) -> None:
        try:
            with self._lock:
                if self._model is not None:
                    self._diag_pub.publish(self._diagnostics())
        except Exception as e:
            self._log_throttled("error", "diag", f"diagnostics failed: {type(e).__name__}: {e}")

    def _diagnostics(self) -> DiagnosticArray:
        kv = {
            "state": "active" if self._active else "inactive",
            "commanding": str(self._active and not self._holding).lower(),
            "hold_reason": self._hold_reason if self._active else "inactive",
            "model": self._model.description,
            "device": self._model.device,
            "backend": getattr(self._model, "backend", ""),
            "threads": getattr(self._model, "threads", ""),
            "command_topic": self._outputs.topics(),
            "handover": self._handover.describe(),
            "inference_delay_ticks": str(self._delays.estimate(0)),
            **self._stats.values(self._period_s),
            **self._inputs.diagnostics(self._stats.staleness),
            **self._outputs.diagnostics(),
        }
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
        return arr

    # ------------------------------------------------------------------ services
    def _srv_reset(self, request, response):
        with self._lock:
            if self._model is not None:
                self._inputs.clear()
                if self._active and not self._holding:
                    self._hold("reset", self.get_clock().now().nanoseconds, log=False)
                holding = self._holding
                self._reset_runtime()
                self._holding = holding
                self._stats = LoopStats()
        response.success = True
        response.message = "buffers and plan cleared"
        self.get_logger().info("reset: buffers and plan cleared")
        return response

    async def _srv_reload_async(self, request, response):
        """~/reload: the new model is loaded and warmed up on a helper thread while the executor keeps
        running the control ticks with the old one; the reply comes when the swap is done (or refused)."""
        done = Future()  # _srv_reload answers every failure in the response, it does not raise
        threading.Thread(target=lambda: done.set_result(self._srv_reload(request, response)), name="policy_reload",
                         daemon=True).start()
        return await done

    def _srv_reload(self, request, response):
        try:
            response.message, response.success = self._reload(), True
        except Exception as e:  # noqa: BLE001 - the caller gets the reason, the running model stays
            response.message = str(e) if isinstance(e, GenilError) else f"{type(e).__name__}: {e}"
            response.success = False
        return response

    def _reload(self) -> str:
        """Load the ``checkpoint`` parameter's model, check that it fits the running task, warm it up and
        swap it in; raises (keeping the running model) when any of that fails."""
        with self._lock:
            old, settings = self._model, self._settings
        if old is None:
            raise GenilError("not configured (configure the node first)")
        try:
            s = read_settings(self, PolicySettings)
            model = self._load_model(s.checkpoint, settings.device, s.inference_scheduler, s.num_inference_steps,
                                     s.seed, settings.use_cuda_graph, log=self.get_logger().warning,
                                     backend=settings.backend, threads=settings.threads)
            model = guide_model(model, s.guide_checkpoint, s.guide_samples)  # the newest discriminator, if set
            why = old.spec.compatible(model.spec)
            if why:
                raise GenilError(f"{s.checkpoint}: does not fit the running task: {why} "
                                 f"(deactivate, cleanup and configure to switch tasks)")
            warm_up(model, s.checkpoint)
        except Exception as e:
            msg = str(e) if isinstance(e, GenilError) else f"{type(e).__name__}: {e}"
            self.get_logger().error(f"reload failed, keeping {old.description}: {msg}")
            raise
        with self._lock:
            if self._model is None:
                raise GenilError("cleaned up during reload")
            self._model = model
            self._settings.checkpoint = s.checkpoint
        self.get_logger().info(f"reloaded: {model.description}")
        return f"loaded {model.description}"

    def destroy_node(self) -> None:
        self._worker.stop()
        super().destroy_node()


# =========================================================================== entry point


def _make_executor(node: PolicyNode):
    """The executor the ``executor`` parameter names (read once, at start)."""
    if node.get_parameter("executor").value == "events":
        try:
            from rclpy.experimental import EventsExecutor
        except ImportError:
            node.get_logger().warning("executor events: this rclpy has no EventsExecutor (Jazzy and newer have "
                                      "it); using the SingleThreadedExecutor")
        else:
            return EventsExecutor()
    return SingleThreadedExecutor()


def _autostart(node: PolicyNode) -> Optional[str]:
    """configure + activate: None, or the transition that failed (its reason is already logged)."""
    if node.trigger_configure() != SUCCESS:
        return "configure"
    if node.trigger_activate() != SUCCESS:
        return "activate"
    return None


def main(argv: Optional[list] = None, *, exit_on_failed_autostart: bool = False) -> int:
    """``policy_node`` console script / ``ros2 run genil_ros policy_node``; ``genil-ros policy`` runs it
    with ``exit_on_failed_autostart`` (a failed autostart then ends the process with status 2 instead of
    leaving the node waiting, unconfigured, for lifecycle commands).

    SIGINT / SIGTERM end the process cleanly: one hold command is published (so a trajectory controller
    stops following the rest of the trajectory), then the node is destroyed."""
    import signal

    from genil_ros.policy.threads import set_process_env

    set_process_env(0)  # before torch starts: no spinning OpenMP pool (the `threads` parameter sets the count)
    args = sys.argv if argv is None else argv
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = PolicyNode()
    executor = _make_executor(node)  # see "Threads" in the module docstring
    executor.add_node(node)
    rc = 0
    try:
        failed = _autostart(node) if node.get_parameter("autostart").value is True else None
        if failed and exit_on_failed_autostart:
            if failed != "configure":  # configure has logged its reason
                node.get_logger().error(f"autostart: {failed} failed")
            rc = 2
            stop.set()
        elif failed:
            node.get_logger().error(f"autostart: {failed} failed; waiting for lifecycle commands")
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
    return rc


if __name__ == "__main__":
    sys.exit(main())
