"""Chunk latency per inference backend x denoising steps x network size x threads, quiet and under CPU
contention (a competing process busy on every core the bench may use: a robot's normal state).

Batch 1, T_o 2 / T_p 16 / T_a 8, 4 joints, untrained weights (latency does not depend on them). Steps:
10 = DDIM 10 from noise (the shipped sampler); k < 10 = a warm start from the previous chunk, k DDIM steps
below the default noise level; ck = k consistency steps (the sampler of a distilled policy: the same
network, so the same cost as a distilled checkpoint's). Backends: torch eager, ONNX Runtime (CPU provider), and on a GPU
torch with CUDA graphs. Threads: 1 and all (the default thread plan: min(physical cores, 4)). The
process starts with OMP_WAIT_POLICY=PASSIVE (threads.set_process_env) unless --omp-spin.

Camera rows: each chunk's window has a new newest frame and the older one already encoded (the policy
node encodes it a tick ahead on its idle worker; ``--no-prefetch`` times both). Each row: median and p90
of --runs quiet runs; under contention median, p99 and max of --contention-runs
runs, and p99 / quiet median (issue 13's goal: <= 2). Ratios onnxruntime / torch are printed per row.

    python bench/backends.py                       # shipped size + paper size, low-dim and one camera
    python bench/backends.py --quick               # fewer runs, shipped size only
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from genil_ros.policy.threads import ThreadPlan, available_cpus, set_process_env  # noqa: E402

SIZES = {"shipped": [64, 128, 256], "paper": [256, 512, 1024]}


def sim_config(camera: bool = True):
    """config/sim_task.yaml, or its low-dim twin (no camera: joint positions in, joint targets out)."""
    from genil_ros.config import config_from_dict, config_to_dict, load_config
    from genil_ros.paths import config_path

    cfg = load_config(config_path("sim_task.yaml"))
    if camera:
        return cfg
    d = config_to_dict(cfg)
    d["task"]["cameras"] = []
    d["task"].pop("observations", None)  # rebuilt from the joint_names form, without the camera entry
    d["task"].pop("actions", None)
    return config_from_dict(d)


def make_checkpoint(size: str, camera: bool) -> Path:
    """A seeded random-weight checkpoint of the sim config at ``size`` under .bench/ (made once)."""
    import numpy as np
    import torch

    from genil_ros.policy.checkpoint import save_checkpoint
    from genil_ros.policy.diffusion import DiffusionPolicy

    d = ROOT / ".bench" / "ckpt" / f"{size}-{'camera' if camera else 'lowdim'}"
    if (d / "meta.json").is_file():
        return d
    cfg = sim_config(camera)
    cfg.policy.down_dims = list(SIZES[size])
    torch.manual_seed(0)
    p = DiffusionPolicy(cfg)
    n = cfg.task.action_dim
    lo, hi = -np.pi * np.ones(n, np.float32), np.pi * np.ones(n, np.float32)
    p.normalizer.fit_stats({"state": {"min": lo, "max": hi}, "action": {"min": lo, "max": hi}})
    save_checkpoint(d, p)
    return d


def load(size: str, camera: bool):
    """(policy on CPU, its ONNX dir, a batch-1 observation)."""
    import torch

    from genil_ros.errors import CheckpointError
    from genil_ros.policy.checkpoint import load_policy
    from genil_ros.policy.onnx_export import export_onnx, read_onnx_export

    ckpt = make_checkpoint(size, camera)
    policy = load_policy(ckpt, device="cpu")
    try:
        read_onnx_export(policy)
    except CheckpointError:
        export_onnx(ckpt)
    g = torch.Generator().manual_seed(0)
    obs = {"state": torch.rand(1, policy.n_obs_steps, policy.state_dim, generator=g) * 2 - 1}
    for c in policy.cfg.task.cameras:
        obs[c.name] = torch.randint(0, 256, (1, policy.n_obs_steps, 3, c.height, c.width), generator=g,
                                    dtype=torch.uint8)
    return policy, ckpt / "onnx", obs


def step_label(steps: str) -> str:
    return "ddim 10" if steps == "10" else (f"cons {steps[1:]}" if steps.startswith("c") else f"warm {steps}")


class NodeLikeFrames:
    """Camera windows as the policy node sees them: each window's older frame is the previous window's
    newest, already in the frame cache (the node encodes it a tick ahead, on its idle worker); the newest
    frame is new. ``next()`` (untimed) makes the next window and prefetches its older frame."""

    def __init__(self, policy, obs):
        import torch

        self.policy, self.obs = policy, dict(obs)
        self.g = torch.Generator().manual_seed(1)
        policy.enable_frame_cache()

    def next(self) -> None:
        import torch

        for name in self.policy.camera_names:
            old = self.obs[name][:, -1:]
            new = torch.randint(0, 256, old.shape, generator=self.g, dtype=torch.uint8)
            self.obs[name] = torch.cat([old, new], dim=1)
            self.policy.prefetch({name: old})


def chunk_fn(policy, obs, steps: str, prefetch: bool = True):
    """(setup, fn): ``fn`` predicts one chunk - DDIM 10 from noise ("10"), a k-step warm start ("k"), or k
    consistency steps ("ck") -, ``setup`` (untimed, or None) prepares the next observation: with cameras
    and ``prefetch``, a new newest frame and the older one pre-encoded, as in the policy node."""
    import torch

    from genil_ros.policy.sampler import shift_chunk

    gen = torch.Generator().manual_seed(0)
    policy.frame_cache = None
    policy.set_inference("ddim", 10)
    win = NodeLikeFrames(policy, obs) if prefetch and policy.camera_names else None
    setup = win.next if win is not None else None
    cur = win.obs if win is not None else obs
    if steps.startswith("c"):
        policy.set_inference("consistency", int(steps[1:]))
        return setup, lambda: policy.predict_action(cur, gen)
    if steps == "10":
        return setup, lambda: policy.predict_action(cur, gen)
    prev = shift_chunk(policy.predict_action(cur, gen), policy.n_action_steps)
    return setup, lambda: policy.predict_action(cur, gen, warm_start=prev, steps=int(steps))


def times_ms(fn, runs: int, warmup: int = 2, setup=None) -> list[float]:
    """Sorted wall times of ``runs`` calls of ``fn`` in ms (``setup()`` before each, untimed)."""
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    out = []
    for _ in range(runs):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return sorted(out)


def pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


class Contention:
    """One busy process per CPU of this process's affinity mask, each stopping by itself after ``limit_s``."""

    def __init__(self, limit_s: float = 900):
        self.limit_s = limit_s
        self.procs: list[subprocess.Popen] = []

    def __enter__(self):
        code = f"import time\nend = time.time() + {self.limit_s}\nwhile time.time() < end:\n    pass\n"
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in available_cpus()]
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=10)


def gpu_rows(policy, obs, steps, runs, size_label, config) -> list[tuple]:
    """Quiet rows on CUDA: torch eager and the U-Net in a CUDA graph (synchronised timings)."""
    import torch

    from genil_ros.policy.backends import CudaGraphBackend, TorchBackend

    policy = policy.to("cuda")
    obs = {k: v.to("cuda") for k, v in obs.items()}
    out = []
    for name, make in (("torch", lambda: TorchBackend(policy)), ("cuda_graph", lambda: CudaGraphBackend(policy, 1))):
        policy.set_backend(make())
        for k in steps:
            setup, fn = chunk_fn(policy, obs, k)
            q = times_ms(lambda: (fn(), torch.cuda.synchronize()), runs, 3, setup)
            out.append((size_label, config, f"{name} (cuda)", "-", step_label(k),
                        f"{statistics.median(q):.2f}", f"{pct(q, 0.9):.2f}", "-", "-", "-", "-", ""))
    policy.set_backend(None)
    policy.to("cpu")
    return out


def machine_line() -> str:
    from inference import machine

    return machine()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="shipped,paper")
    ap.add_argument("--configs", default="lowdim,camera")
    ap.add_argument("--backends", default="torch,onnxruntime")
    ap.add_argument("--steps", default="10,4,2,1,c1,c2", help="10: DDIM 10; k: warm start, k steps; ck: consistency")
    ap.add_argument("--threads", default="1,all", help="comma list of counts or 'all' (the default plan)")
    ap.add_argument("--runs", type=int, default=15, help="quiet runs per row")
    ap.add_argument("--contention-runs", type=int, default=40, help="runs per row under contention (0 = skip)")
    ap.add_argument("--omp-spin", action="store_true", help="leave torch's OpenMP spin policy as it is")
    ap.add_argument("--no-prefetch", dest="prefetch", action="store_false",
                    help="camera rows: encode both frames in the timed call (default: the older one pre-encoded, "
                         "as the policy node does a tick ahead)")
    ap.add_argument("--quick", action="store_true", help="shipped size, 5 quiet / 15 contended runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.runs, args.contention_runs = "shipped", 5, 15
    if not args.omp_spin:
        set_process_env(0)

    import torch

    from genil_ros.policy.backends import make_backend

    default = ThreadPlan.choose(0)
    counts = sorted({default.intra_op if t.strip() == "all" else int(t) for t in args.threads.split(",")})
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if torch.cuda.is_available() and "cuda_graph" not in backends:
        backends.append("cuda_graph")
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    print(machine_line())
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; default thread plan: {default.describe()}; "
          f"contention: {len(available_cpus())} busy processes\n")
    head = ("size", "config", "backend", "thr", "steps", "quiet med", "quiet p90", "busy med", "busy p99", "busy max",
            "p99/quiet", "ort/torch")
    rows = []
    for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        for config in [c.strip() for c in args.configs.split(",") if c.strip()]:
            policy, onnx_dir, obs = load(size, config == "camera")
            nparams = sum(p.numel() for p in policy.parameters()) / 1e6
            for n in counts:
                plan = ThreadPlan.choose(n)
                measured = {}
                for name in backends:
                    if name == "cuda_graph":
                        continue  # GPU rows: see the end
                    policy.set_backend(make_backend(name, policy, threads=plan, onnx_dir=onnx_dir))
                    for k in steps:
                        setup, fn = chunk_fn(policy, obs, k, args.prefetch)
                        measured[(name, k, "quiet")] = times_ms(fn, args.runs, setup=setup)
                if args.contention_runs:
                    with Contention():
                        for name in backends:
                            if name == "cuda_graph":
                                continue
                            policy.set_backend(make_backend(name, policy, threads=plan, onnx_dir=onnx_dir))
                            for k in steps:
                                setup, fn = chunk_fn(policy, obs, k, args.prefetch)
                                measured[(name, k, "busy")] = times_ms(fn, args.contention_runs, 1, setup)
                for name in backends:
                    for k in steps:
                        q = measured.get((name, k, "quiet"))
                        if q is None:
                            continue
                        b = measured.get((name, k, "busy"))
                        qm = statistics.median(q)
                        tq = measured.get(("torch", k, "quiet"))
                        ratio = f"{qm / statistics.median(tq):.2f}" if name == "onnxruntime" and tq else ""
                        rows.append((f"{size} {nparams:.1f}M", config, name, str(n),
                                     step_label(k),
                                     f"{qm:.1f}", f"{pct(q, 0.9):.1f}",
                                     *((f"{statistics.median(b):.1f}", f"{pct(b, 0.99):.1f}", f"{b[-1]:.1f}",
                                        f"{pct(b, 0.99) / qm:.2f}") if b else ("-",) * 4), ratio))
                print(f"  done: {size} {config} threads {n}", file=sys.stderr, flush=True)
            if torch.cuda.is_available():
                rows += gpu_rows(policy, obs, steps, args.runs, f"{size} {nparams:.1f}M", config)
            del policy
    print("latency of one chunk in ms (batch 1)")
    from benchlib import print_table

    print_table(head, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
