"""Soak: the bundled sim and the shipped policy over real DDS for N minutes, as `genil-ros demo` runs them.

`sim_node` and `policy_node` (`genil-ros sim`, `genil-ros policy --use-sim-time`, JointTrajectory commands)
run as separate processes on a ROS domain of their own (localhost only); this process resets episodes
the way `genil-ros demo` does (deactivate, reset the sim, reset the policy, activate) until the time is
up, and meanwhile samples the resident memory (RSS) of both processes. At the end it prints, with the
machine:

  memory     RSS of each process: first sample once active, last, max, and the least-squares slope
  episodes   how many, success rate (the sim's ~/success)
  control    per episode from the node's /diagnostics (read once it is deactivated, before the reset that
             clears them): holds (the one at each deactivation not counted), missed ticks (the action
             chunk ran out before the next one arrived), late chunks, stale ticks, measured control rate
  latency    inference latency: percentiles of the node's `inference_latency_last_ms` sampled at 1 Hz,
             and the range of its per-episode median / p99; observation-to-command median
  chunks     how many control ticks passed between a chunk's observation and its arrival (from
             ~/predicted_chunk stamps against /clock): a chunk runs out when this exceeds what is left
             of the previous one
  warnings   the node's "holding position: ..." warnings on /rosout, by reason (as a user sees them)

``--load N`` starts N processes that keep a core busy (pure Python loops, -1 = one per core) once the
nodes are up, to measure on a busy machine. ``--omp-threads`` sets OMP_NUM_THREADS for both nodes (default:
unset, as a user's shell has it; torch then uses one thread per core). Not a test: figures, printed.

    .venv/bin/python bench/soak.py [--minutes 5] [--load -1] [--omp-threads 1] [--json out/soak.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from genil_ros.testing import call_service, change_state, wait_until  # noqa: E402

COUNTERS = ("holds", "missed_ticks", "late_chunks", "stale_ticks", "chunks", "skipped_actions", "model_errors",
            "nonfinite_chunks")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB"


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")) / 1024.0
    except (OSError, StopIteration):
        return float("nan")


class Probe:
    """The orchestrating node: lifecycle and reset services, and everything the summary is made of."""

    def __init__(self, node, period_s: float):
        from diagnostic_msgs.msg import DiagnosticArray
        from lifecycle_msgs.srv import ChangeState
        from rcl_interfaces.msg import Log
        from rosgraph_msgs.msg import Clock
        from std_msgs.msg import String
        from std_srvs.srv import Trigger
        from trajectory_msgs.msg import JointTrajectory

        self.node, self.period_ns = node, int(period_s * 1e9)
        self.lock = threading.Lock()
        self.status: dict = {}
        self.diags: list[tuple[float, dict]] = []  # (wall time, values) of the policy node's diagnostics
        self.warnings: list[tuple[float, str, dict]] = []  # (wall time, text, sim status then)
        self.spans: list[int] = []  # ticks from a chunk's observation to its arrival
        self.clock_ns = 0
        self.sim_reset = node.create_client(Trigger, "/sim_node/reset")
        self.policy_reset = node.create_client(Trigger, "/policy_node/reset")
        self.lifecycle = node.create_client(ChangeState, "/policy_node/change_state")
        node.create_subscription(String, "/sim_node/status", self._on_status, 10)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        node.create_subscription(Log, "/rosout", self._on_log, 100)
        node.create_subscription(Clock, "/clock", self._on_clock, 10)
        node.create_subscription(JointTrajectory, "/policy_node/predicted_chunk", self._on_chunk, 10)

    def _on_status(self, msg):
        with self.lock:
            self.status = json.loads(msg.data)

    def _on_diag(self, msg):
        for st in msg.status:
            if st.name.endswith(": policy"):
                with self.lock:
                    self.diags.append((time.monotonic(), {kv.key: kv.value for kv in st.values}))

    def _on_log(self, msg):
        if msg.name.endswith("policy_node") and msg.msg.startswith("holding position"):
            with self.lock:
                self.warnings.append((time.monotonic(), msg.msg, dict(self.status)))

    def _on_clock(self, msg):
        self.clock_ns = msg.clock.sec * 1_000_000_000 + msg.clock.nanosec

    def _on_chunk(self, msg):
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        if self.clock_ns:
            with self.lock:
                self.spans.append(round((self.clock_ns - stamp) / self.period_ns))

    def transition(self, label: str) -> None:
        change_state(self.lifecycle, label, timeout=60.0)

    def last_diag(self, since: float = -1.0, state: str = "") -> dict:
        with self.lock:
            for t, v in reversed(self.diags):
                if t > since and (not state or v.get("state") == state):
                    return v
        return {}


def run_episode(probe: Probe, timeout_s: float, procs) -> dict:
    """One episode as `genil-ros demo` runs it; returns its success and the node's counters."""
    info = json.loads(call_service(probe.sim_reset, "reset the sim", 60.0) or "{}")
    call_service(probe.policy_reset, "reset the policy", 60.0)
    probe.transition("activate")
    index = info.get("episode")
    wait_until(lambda: probe.status.get("episode") == index, 30, "the sim's status for the new episode", procs)
    end = time.monotonic() + timeout_s * 3 + 30
    while not (probe.status.get("success") or probe.status.get("episode_time", 0.0) >= timeout_s):
        if time.monotonic() > end:
            raise RuntimeError("the sim's clock stopped advancing")
        for name, p in procs:
            if not p.alive():
                raise RuntimeError(f"{name} exited:\n{p.output()[-3000:]}")
        time.sleep(0.05)
    status = dict(probe.status)
    before = probe.last_diag()
    probe.transition("deactivate")
    t_off = time.monotonic()
    wait_until(lambda: probe.last_diag(t_off, "inactive"), 10, "diagnostics after deactivation", procs)
    d = probe.last_diag(t_off, "inactive")
    counts = {k: int(d.get(k, 0)) for k in COUNTERS}
    counts["holds"] -= int(before.get("commanding") == "true")  # the hold of the deactivation itself
    return {"episode": index, "success": bool(status.get("success")), "time_s": status.get("episode_time"),
            **counts, **{k: float(d.get(k, "nan")) for k in (
                "inference_latency_median_ms", "inference_latency_p99_ms", "obs_to_command_latency_median_ms",
                "measured_control_rate_hz", "control_period_jitter_p99_ms")}}


def busy_load(n: int) -> list:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def soak(args) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from genil_ros.paths import model_path
    from genil_ros.testing import ManagedProcess, isolated_ros_env, ros_domain

    ckpt = model_path(args.checkpoint)
    out = Path(args.logs)
    out.mkdir(parents=True, exist_ok=True)
    py, load, samples = sys.executable, [], []
    with ros_domain() as dom:
        env = isolated_ros_env(dom)
        env.setdefault("MUJOCO_GL", "egl")
        env.pop("OMP_NUM_THREADS", None)
        if args.omp_threads:
            env["OMP_NUM_THREADS"] = str(args.omp_threads)
        sim = ManagedProcess([py, "-m", "genil_ros.cli", "sim", "--seed", str(args.seed)], env, str(out / "sim.log"))
        pol = ManagedProcess([py, "-m", "genil_ros.cli", "policy", "--checkpoint", str(ckpt), "--device", args.device,
                              "--use-sim-time"], env, str(out / "policy.log"))
        procs = [("sim_node", sim), ("policy_node", pol)]
        ctx = rclpy.Context()
        rclpy.init(context=ctx, domain_id=dom)
        node = rclpy.create_node("genil_soak", context=ctx)
        probe = Probe(node, 0.1)
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(node)
        threading.Thread(target=ex.spin, daemon=True).start()
        stop = threading.Event()
        episodes: list[dict] = []
        try:
            wait_until(lambda: probe.last_diag().get("state") == "active", 300, "the policy node to activate", procs)
            probe.transition("deactivate")
            n_load = os.cpu_count() if args.load < 0 else args.load
            load = busy_load(n_load)
            t0 = time.monotonic()

            def sample():
                while not stop.wait(0 if not samples else args.sample_s):
                    samples.append((time.monotonic() - t0, rss_mb(sim.proc.pid), rss_mb(pol.proc.pid)))

            threading.Thread(target=sample, daemon=True).start()
            while time.monotonic() - t0 < args.minutes * 60:
                episodes.append(run_episode(probe, args.episode_timeout, procs))
                e = episodes[-1]
                print(f"  episode {e['episode']:3d} {'ok  ' if e['success'] else 'FAIL'} {e['time_s']:5.1f} s "
                      f"holds {e['holds']} missed {e['missed_ticks']} late {e['late_chunks']} stale {e['stale_ticks']} "
                      f"inference median {e['inference_latency_median_ms']:.0f} ms  "
                      f"[{(time.monotonic() - t0) / 60:.1f} min]", flush=True)
            elapsed = time.monotonic() - t0
        finally:
            stop.set()
            for p in load:
                p.kill()
                p.wait()
            ex.shutdown()
            node.destroy_node()
            ctx.try_shutdown()
            rcs = {name: p.stop() for name, p in procs}
    return {"checkpoint": str(ckpt), "minutes": elapsed / 60, "load_processes": len(load), "episodes": episodes,
            "rss": samples, "diags": [v for _, v in probe.diags], "warnings": [(w, s) for _, w, s in probe.warnings],
            "spans": probe.spans, "exit_codes": rcs, "omp_threads": args.omp_threads or "unset"}


def pct(v, qs=(50, 90, 99)) -> str:
    v = np.asarray([x for x in v if np.isfinite(x)], dtype=float)
    return " / ".join(f"{np.percentile(v, q):.0f}" for q in qs) if len(v) else "n/a"


def summarise(r: dict, load_before: float) -> None:
    eps, minutes = r["episodes"], r["minutes"]
    total = {k: sum(e[k] for e in eps) for k in COUNTERS}
    print(f"\n# soak: {machine()}; load average {load_before:.1f} before the run; "
          f"{r['load_processes']} busy-loop process(es) added; OMP_NUM_THREADS for the nodes: {r['omp_threads']}")
    print(f"# {r['checkpoint']}, {minutes:.1f} min, {len(eps)} episodes, success "
          f"{np.mean([e['success'] for e in eps]):.2f}; exit codes {r['exit_codes']}")
    if r["rss"]:
        t = np.array([s[0] for s in r["rss"]]) / 60
        for i, name in ((1, "sim_node"), (2, "policy_node")):
            m = np.array([s[i] for s in r["rss"]])
            slope = np.polyfit(t, m, 1)[0] if len(t) > 2 else float("nan")
            print(f"memory {name:11}: RSS {m[0]:.0f} -> {m[-1]:.0f} MB (max {m.max():.0f}), slope {slope:+.2f} MB/min "
                  f"over {len(m)} samples")
    per_min = {k: total[k] / minutes for k in ("holds", "missed_ticks", "late_chunks", "stale_ticks")}
    print("control: " + ", ".join(f"{k} {total[k]} ({per_min[k]:.1f}/min)" for k in per_min)
          + f"; chunks {total['chunks']}, model errors {total['model_errors']}, NaN chunks {total['nonfinite_chunks']}")
    print(f"control rate (per-episode medians): {pct([e['measured_control_rate_hz'] for e in eps], (0, 50, 100))} Hz "
          f"(min / median / max); period jitter p99 up to {max(e['control_period_jitter_p99_ms'] for e in eps):.0f} ms")
    last = [float(v.get("inference_latency_last_ms", "nan")) for v in r["diags"] if v.get("state") == "active"]
    print(f"inference latency (1 Hz samples): p50 / p90 / p99 {pct(last)} ms; per-episode median "
          f"{pct([e['inference_latency_median_ms'] for e in eps], (0, 100))} ms, per-episode p99 "
          f"{pct([e['inference_latency_p99_ms'] for e in eps], (0, 100))} ms (min - max); obs-to-command median "
          f"{pct([e['obs_to_command_latency_median_ms'] for e in eps], (50,))} ms")
    spans = Counter(r["spans"])
    print("chunk arrival, ticks after its observation: " + ", ".join(f"{k}: {spans[k]}" for k in sorted(spans)))
    kinds = Counter(re.sub(r"[-+]?\d[\d.e+-]*", "#", w) for w, _ in r["warnings"])
    print(f"'holding position' warnings on /rosout: {len(r['warnings'])}"
          + "".join(f"\n  {n} x {k}" for k, n in kinds.most_common()))
    for w, s in r["warnings"]:
        if "ran out" in w:
            print(f"    ran out at episode {s.get('episode')} t = {s.get('episode_time', float('nan')):.1f} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="how long to run episodes (default 5)")
    ap.add_argument("--checkpoint", default="sim_obstacle_dp", help="checkpoint dir or shipped model")
    ap.add_argument("--device", default="cpu", help="policy device (default cpu)")
    ap.add_argument("--load", type=int, default=0, help="busy-loop processes to add (-1: one per core)")
    ap.add_argument("--omp-threads", type=int, default=0, help="OMP_NUM_THREADS for the nodes (0: unset)")
    ap.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling period (default 5 s)")
    ap.add_argument("--episode-timeout", type=float, default=10.0, help="sim seconds per episode (default 10)")
    ap.add_argument("--seed", type=int, default=7000, help="seed of the first episode's scene")
    ap.add_argument("--logs", default="out/soak", help="node logs go here (default out/soak)")
    ap.add_argument("--json", default=None, help="also write everything measured to this file")
    args = ap.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    load_before = os.getloadavg()[0]
    r = soak(args)
    summarise(r, load_before)
    if args.json:
        from genil_ros.fileio import atomic_write_json

        atomic_write_json(args.json, r, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
