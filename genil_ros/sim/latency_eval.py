"""Closed-loop evaluation under an injected inference delay, faster than real time (no ROS).

    genil-ros eval --checkpoint sim_obstacle_dp --episodes 100 --delay-ms 300 --handover inpaint

The loop is the policy node's, tick by tick, with the same handover strategy objects
(:mod:`genil_ros.control.handover`), in lockstep over a batch of episodes: at every control tick each
episode (1) takes a chunk whose delay has passed and hands over to it, (2) starts an inference when its
worker is free and the strategy wants one - the window ending at this tick, with the strategy's committed
prefix (with no delay its chunk is taken at once) -, (3) commands its plan's action for this tick (or
holds the last command when the plan ran out), (4) steps the sim. Delay is counted in control ticks
consumed: the chunk computed from the window ending at tick k becomes usable at tick k + d,
``d = round(delay_ms / period)``, whatever the computer took
(inference runs batched across the episodes between ticks, so sim time does not pass during it). One
inference at a time per episode, as the node's single worker. The strategies' lead is measured the way
the node measures it (:class:`genil_ros.control.timing.DelayTicks`). The first chunk of an episode is
computed before its clock starts (the arm rests while it is), so the delay shows at the handovers, not as
a late start.

Every episode records its commanded and measured joint trajectory and the chunk each command came from;
:mod:`genil_ros.control.smoothness` turns them into the boundary metric. Both bundled tasks: the obstacle
task (``ArmEnv``, camera + joints) and pick-and-place (``PickPlaceEnv``, low-dim entries and/or camera);
the observation entries of the checkpoint's task say which, and how its state vector is made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from genil_ros.control.handover import HandoverStrategy
from genil_ros.control.plan import ActionPlan
from genil_ros.control.smoothness import boundary_metrics, summarize
from genil_ros.control.timing import DelayTicks
from genil_ros.errors import GenilError
from genil_ros.sim.binding import EpisodeBatches, SimBinding, make_env, variant_for_task

__all__ = ["TaskAdapter", "task_adapter", "evaluate_with_delay", "delay_ticks"]


def delay_ticks(delay_ms: float, control_rate_hz: float) -> int:
    """The injected delay in control ticks (rounded: 100 ms at 10 Hz = 1 tick)."""
    if delay_ms < 0:
        raise GenilError(f"--delay-ms {delay_ms:g} must be >= 0")
    return int(round(delay_ms / 1000.0 * control_rate_hz))


@dataclass
class TaskAdapter:
    """How one bundled sim task meets a checkpoint's task: its :class:`~genil_ros.sim.binding.SimBinding`
    (the policy's input from an env observation, the action the env takes), how to make its env, and the
    arm joints the boundary metric looks at."""

    name: str  # the sim variant
    binding: SimBinding
    make_env: Callable[[], object]
    camera: Optional[str]  # the policy's camera name (fed from obs["image"]), or None
    arm: list  # indices of the action vector that are arm joint targets (metric), in JOINT_NAMES order

    def state(self, obs: dict) -> np.ndarray:
        """Env observation -> the policy's low-dim state vector."""
        return self.binding.state(obs)

    def action(self, row: np.ndarray, env) -> np.ndarray:
        """Policy action row -> env action."""
        return self.binding.command(row, env)


def task_adapter(cfg, variant: Optional[str] = None, max_steps: Optional[int] = None) -> TaskAdapter:
    """The adapter for a checkpoint config ``cfg``: the sim variant ``variant`` (default: the task's,
    pick-and-place when it has the gripper joint, else obstacle). GenilError naming what does not fit."""
    from genil_ros.sim.env import JOINT_NAMES

    task = cfg.task
    variant = variant or variant_for_task(task)
    binding = SimBinding(task, variant=variant, where="checkpoint")
    cams = binding.cameras
    if variant != "pick_place" and not cams and not any(o.type == "vector" for o in task.observations):
        raise GenilError("checkpoint: the arm task shows its target only to the camera (or a target vector); "
                         "the policy has neither")
    size = (cams[0].height, cams[0].width) if cams else (96, 96)

    def make():
        return make_env(variant, image_size=size, render=bool(cams), control_rate_hz=task.control_rate_hz,
                        max_episode_steps=max_steps or None)

    arm = [binding.columns[j] for j in JOINT_NAMES]
    return TaskAdapter(variant, binding, make, cams[0].name if cams else None, arm)


@dataclass
class _Job:
    tick: int  # the tick the window ends at
    arrival: int  # the tick its chunk becomes usable
    chunk: np.ndarray


@dataclass
class _Episode:
    """One episode's loop state and record."""

    env: object
    seed: int
    hist: list  # the last T_o observations
    delays: DelayTicks = field(default_factory=DelayTicks)
    plan: Optional[ActionPlan] = None
    job: Optional[_Job] = None
    last: Optional[np.ndarray] = None  # the last command
    done: bool = False
    info: dict = field(default_factory=dict)
    commanded: list = field(default_factory=list)
    measured: list = field(default_factory=list)
    source: list = field(default_factory=list)
    chunks: list = field(default_factory=list)  # (window tick, arrival tick, chunk) when traced
    counts: dict = field(default_factory=lambda: {"chunks": 0, "late_chunks": 0, "skipped_actions": 0,
                                                  "missed_ticks": 0})


def evaluate_with_delay(policy, strategy: HandoverStrategy, delay: int, episodes: int = 100, seed: int = 1000,
                        batch_size: int = 10, variant: Optional[str] = None, generator_seed: int = 0,
                        trace_episodes: int = 0, progress: bool = True, max_steps: Optional[int] = None) -> dict:
    """Success and boundary metric of ``policy`` (a DiffusionPolicy, or anything with ``predict_action(obs,
    generator=, prefix=)``, ``cfg``, ``n_obs_steps``, ``n_action_steps``, ``horizon``) with ``strategy`` and
    ``delay`` ticks of inference delay over ``episodes`` (episode i: seed + i). The first
    ``trace_episodes`` episodes keep their trajectories and chunks (``"traces"``); ``max_steps`` overrides
    the task's episode length."""
    import torch

    from genil_ros.policy.prefix import PrefixBatch

    if delay < 0:
        raise GenilError(f"delay {delay} ticks must be >= 0")
    need = strategy.prefix_method
    if need == "condition" and not getattr(policy, "prefix_conditioning", 0):
        raise GenilError(f"handover {strategy.name}: the checkpoint was not trained with policy.prefix_conditioning")
    adapter = task_adapter(policy.cfg, variant, max_steps)
    T_o, T_a, T_p = int(policy.n_obs_steps), int(policy.n_action_steps), int(policy.horizon)
    A = int(policy.action_dim)
    gen = torch.Generator(device=getattr(policy, "device", "cpu")).manual_seed(generator_seed)
    envs = [adapter.make_env() for _ in range(min(batch_size, episodes))]
    done_eps: list[_Episode] = []

    def infer(eps: list[_Episode], tick: int) -> None:
        obs = {"state": torch.from_numpy(np.stack([np.stack([adapter.state(o) for o in e.hist]) for e in eps]))}
        if adapter.camera:
            imgs = np.stack([np.stack([o["image"].transpose(2, 0, 1) for o in e.hist]) for e in eps])
            obs[adapter.camera] = torch.from_numpy(np.ascontiguousarray(imgs))
        leads = [e.delays.estimate(delay) for e in eps]
        pre = [strategy.prefix(e.plan, tick, lead, T_o, T_p) for e, lead in zip(eps, leads)]
        pb = PrefixBatch.stack(pre, T_p, A)
        chunks = policy.predict_action(obs, generator=gen, prefix=pb).detach().double().cpu().numpy()
        for e, c in zip(eps, chunks):
            first = e.plan is None and not e.counts["chunks"]
            e.job = _Job(tick, tick if first else tick + delay, c)

    with EpisodeBatches(envs, episodes, seed, f"{strategy.name} d={delay}", progress) as batches:
        for start, seeds, obs in batches:
            eps = [_Episode(env, s, [o] * T_o) for env, s, o in zip(envs, seeds, obs)]
            tick = 0
            while not all(e.done for e in eps):
                live = [e for e in eps if not e.done]
                for e in live:  # a chunk due now; the worker is free again
                    _arrive(e, strategy, tick, T_o, T_a, trace=start + eps.index(e) < trace_episodes)
                want = [e for e in live if e.job is None
                        and strategy.wants_next(e.plan, tick, e.delays.estimate(delay))]
                if want:
                    infer(want, tick)
                for e in live:
                    _arrive(e, strategy, tick, T_o, T_a, trace=start + eps.index(e) < trace_episodes)  # delay 0
                    _command(e, adapter, tick)
                tick += 1
            done_eps.extend(eps)
            batches.show_success(np.mean([bool(e.info.get("success")) for e in done_eps]))
    return _results(done_eps, strategy, delay, adapter, policy, trace_episodes)


def _arrive(e: _Episode, strategy: HandoverStrategy, tick: int, T_o: int, T_a: int, trace: bool) -> None:
    if e.job is None or e.job.arrival != tick:
        return
    job, e.job = e.job, None
    new = ActionPlan(job.chunk, job.tick, T_o, T_a)
    if e.counts["chunks"]:
        e.delays.add(tick - job.tick)
    h = strategy.switch(e.plan, new, tick)
    e.plan = h.plan
    e.counts["chunks"] += 1
    e.counts["late_chunks"] += int(h.late)
    e.counts["skipped_actions"] += h.skipped
    if trace:
        e.chunks.append((job.tick, tick, job.chunk.tolist()))


def _command(e: _Episode, adapter: TaskAdapter, tick: int) -> None:
    o = e.hist[-1]
    rows = e.plan.actions_from(tick) if e.plan is not None else None
    if rows is None:  # the plan ran out before the next chunk came: hold the last command
        e.counts["missed_ticks"] += 1
        a, src = e.last, -1
    else:
        a, src = rows[0], e.plan.source
    if a is None:
        raise GenilError("no chunk at the first tick of an episode (the evaluator's own bug)")
    e.commanded.append(np.asarray(a, float)[adapter.arm])
    e.measured.append(np.asarray(o["joint_pos"], float)[: len(adapter.arm)])
    e.source.append(src)
    e.last = np.asarray(a, float)
    o, _, term, trunc, info = e.env.step(adapter.action(a, e.env))
    e.hist = e.hist[1:] + [o]
    e.info = info
    if term or trunc:
        e.done = True


def _results(eps: list[_Episode], strategy, delay: int, adapter: TaskAdapter, policy, trace_episodes: int) -> dict:
    metrics = [boundary_metrics(np.array(e.commanded), np.array(e.measured), np.array(e.source)) for e in eps]
    ok = [e for e in eps if e.info.get("success")]
    flags = [k for k in ("collided", "dropped") if k in eps[0].info] if eps else []
    rate = float(policy.cfg.task.control_rate_hz)
    res = {
        "task": adapter.name,
        "handover": strategy.name,
        "strategy": strategy.describe(),
        "delay_ticks": delay,
        "delay_ms": delay * 1000.0 / rate,
        "episodes": len(eps),
        "success_rate": float(np.mean([bool(e.info.get("success")) for e in eps])) if eps else math.nan,
        **{f"{k}_rate": float(np.mean([bool(e.info.get(k)) for e in eps])) for k in flags},
        "mean_steps_success": float(np.mean([len(e.commanded) for e in ok])) if ok else None,
        "counts": {k: int(sum(e.counts[k] for e in eps)) for k in eps[0].counts} if eps else {},
        "smoothness": summarize(metrics),
        "results": [{"seed": e.seed, "success": bool(e.info.get("success")), "steps": len(e.commanded),
                     **{k: bool(e.info.get(k)) for k in flags}, **e.counts} for e in eps],
    }
    if trace_episodes:
        res["traces"] = [{"seed": e.seed, "commanded": np.array(e.commanded).tolist(),
                          "measured": np.array(e.measured).tolist(), "source": list(map(int, e.source)),
                          "chunks": e.chunks, "arm": adapter.arm, "n_obs_steps": int(policy.n_obs_steps)}
                         for e in eps[:trace_episodes]]
    return res


# --------------------------------------------------------------------------- `genil-ros eval` flags


def add_arguments(parser) -> None:
    """The flags ``genil-ros eval`` takes for this evaluator (any of them given selects it)."""
    from genil_ros.control.handover import HANDOVERS, SOFT_TICKS

    g = parser.add_argument_group("handover under delay (genil_ros/sim/latency_eval.py)")
    g.add_argument("--handover", choices=HANDOVERS, default=None,
                   help="run the node's control loop with this chunk handover strategy (default with --delay-ms: "
                        "auto, the node's default: inpaint where the checkpoint samples with ddim, else "
                        "receding_horizon)")
    g.add_argument("--delay-ms", type=float, default=None,
                   help="injected inference delay: a chunk is usable this long after its window's tick")
    g.add_argument("--handover-ensemble-weight", type=float, default=0.01, help="temporal_ensemble weight")
    g.add_argument("--handover-guidance", type=float, default=0.0, help="inpaint guidance (0: replacement only)")
    g.add_argument("--handover-soft-ticks", type=int, default=SOFT_TICKS, help="inpaint soft-mask ticks")


def wanted(args) -> bool:
    return getattr(args, "handover", None) is not None or getattr(args, "delay_ms", None) is not None


def run(args, policy) -> dict:
    """``genil-ros eval`` with the handover flags: evaluate, print one line, return the results."""
    from genil_ros.control.handover import make_handover, resolve_handover
    from genil_ros.policy.prefix import prefix_methods

    name = resolve_handover(args.handover or "auto", prefix_methods(policy))
    strategy = make_handover(name, args.handover_ensemble_weight, args.handover_soft_ticks, args.handover_guidance)
    d = delay_ticks(args.delay_ms or 0.0, policy.cfg.task.control_rate_hz)
    res = evaluate_with_delay(policy, strategy, d, args.episodes, args.seed, args.batch_size, variant=args.variant)
    jump = res["smoothness"]["commanded"]["jump"]
    print(f"success {res['success_rate']:.2f} over {res['episodes']} episodes ({res['task']}), "
          f"{strategy.describe()}, delay {d} ticks ({res['delay_ms']:g} ms); commanded jump at handovers p50 "
          f"{jump['handover_p50']:.3f} p99 {jump['handover_p99']:.3f} rad/tick, inside chunks p99 "
          f"{jump['inside_p99']:.3f} max {jump['inside_max']:.3f}; counts {res['counts']}")
    return res
