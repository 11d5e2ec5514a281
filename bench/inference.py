"""Diffusion-policy chunk latency: the time for one ``predict_action`` (observation window -> T_p chunk),
batch 1, median of many runs, for a low-dim config and a one-camera 96x96 config, DDIM 10 and DDPM 100
steps, on CPU and on CUDA when present. Variants tried where they apply:

  eager        torch.no_grad (what predict_action does by itself)
  inference    under torch.inference_mode
  compile      the U-Net through torch.compile (first-call compile time reported separately)
  fp16 / bf16  networks under autocast (CUDA; bf16 also on CPU in the full run)
  cudagraph    the U-Net captured in a CUDA graph (policy.enable_cuda_graph), fp32 and fp16

Each row also gives the largest difference of its chunk from the eager chunk (same seed), in the
action's units (radians), so a variant that is fast but wrong shows. Untrained weights (latency does
not depend on them). The networks are the shipped sim config (config/sim_task.yaml) unless
--down-dims is given (the paper's is 256,512,1024).

    .venv/bin/python bench/inference.py                 # full table
    .venv/bin/python bench/inference.py --quick         # < 2 min on a small CPU: fewer runs and variants
    .venv/bin/python bench/inference.py --device cuda --down-dims 256,512,1024
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    s = (f"CPU: {cpu}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}; "
         f"torch {torch.__version__}, python {platform.python_version()}")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        s += f"\nGPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    return s


def make_policy(camera: bool, down_dims, device):
    import numpy as np
    import torch

    from genil_ros.config import load_config
    from genil_ros.paths import config_path
    from genil_ros.policy.diffusion import DiffusionPolicy

    cfg = load_config(config_path("sim_task.yaml"))
    if not camera:
        cfg.task.cameras = []
    if down_dims:
        cfg.policy.down_dims = list(down_dims)
    torch.manual_seed(0)
    p = DiffusionPolicy(cfg)
    n = cfg.task.action_dim
    lo, hi = -np.pi * np.ones(n, np.float32), np.pi * np.ones(n, np.float32)
    p.normalizer.fit_stats({"state": {"min": lo, "max": hi}, "action": {"min": lo, "max": hi}})
    p.to(device).eval()
    obs = {"state": torch.rand(1, p.n_obs_steps, p.state_dim) * 2 - 1}
    for c in cfg.task.cameras:
        obs[c.name] = torch.randint(0, 256, (1, p.n_obs_steps, 3, c.height, c.width), dtype=torch.uint8)
    return p, obs


def timed(fn, runs: int, warmup: int, sync):
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    out = None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        sync()
        ts.append((time.perf_counter() - t0) * 1000.0)
    ts.sort()
    return statistics.median(ts), ts[min(len(ts) - 1, int(0.9 * len(ts)))], out


def bench_config(name, camera, device, schedules, args, rows):
    import torch

    policy, obs = make_policy(camera, args.down_dims, device)
    obs = {k: v.to(device) for k, v in obs.items()}  # already on the device: time the policy, not the copy
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    nparams = sum(p.numel() for p in policy.parameters()) / 1e6

    def gen():
        return torch.Generator(device=device).manual_seed(0)

    eager_model = policy.model
    compiled = torch.compile(eager_model, dynamic=False) if args.compile and (cuda or not args.quick) else None
    compile_failed, compiled_once = None, False
    for sched, steps in schedules:
        policy.set_inference(sched, steps)
        runs = max(3, args.runs if steps <= 20 else max(3, args.runs // 3))
        warm = 2 if args.quick else 3
        ref = policy.predict_action(obs, generator=gen())

        def row(variant, fn, runs=runs, warm=warm, extra=""):
            try:
                med, p90, out = timed(fn, runs, warm, sync)
            except Exception as e:  # noqa: BLE001 - a variant this machine cannot run is reported, not fatal
                rows.append((name, f"{nparams:.1f}M", device.type, f"{sched} {steps}", variant, "-", "-", "-",
                             f"failed: {type(e).__name__}: {str(e).splitlines()[0][:60]}"))
                return
            diff = float((out.float() - ref.float()).abs().max())
            rows.append((name, f"{nparams:.1f}M", device.type, f"{sched} {steps}", variant, f"{med:.2f}", f"{p90:.2f}",
                         f"{diff:.1e}", extra))

        row("eager", lambda: policy.predict_action(obs, generator=gen()))

        def infer():
            with torch.inference_mode():
                return policy.predict_action(obs, generator=gen())

        row("inference", infer)
        precisions = (["fp16", "bf16"] if cuda else ([] if args.quick else ["bf16"]))
        for prec in precisions:
            if prec == "bf16" and cuda and not torch.cuda.is_bf16_supported():
                continue
            policy.set_inference_precision(prec)
            row(prec, infer)
            policy.set_inference_precision(None)
        if cuda:
            for prec in (None, "fp16"):
                policy.set_inference_precision(prec)
                policy.enable_cuda_graph(batch_size=1)
                row("cudagraph" + (f"+{prec}" if prec else ""), infer)
                policy.disable_cuda_graph()
            policy.set_inference_precision(None)
        if compiled is not None:
            policy.model = compiled  # compiled once per config: the U-Net's shapes do not depend on the sampler
            try:
                note = ""
                if not compiled_once:
                    compiled_once = True
                    t0 = time.perf_counter()
                    try:
                        infer()
                        sync()
                        note = f"compile + first call {time.perf_counter() - t0:.0f} s"
                    except Exception as e:  # noqa: BLE001
                        compile_failed = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:60]}"
                if compile_failed is None:
                    row("compile", infer, extra=note)
                    if cuda:
                        policy.set_inference_precision("fp16")
                        try:
                            row("compile+fp16", infer)
                        finally:
                            policy.set_inference_precision(None)
                else:
                    rows.append((name, f"{nparams:.1f}M", device.type, f"{sched} {steps}", "compile", "-", "-", "-",
                                 compile_failed))
            finally:
                policy.model = eager_model
    policy.to("cpu")  # (the closures above still refer to it) frees its GPU memory for the next config
    if cuda:
        torch.cuda.empty_cache()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="timed runs per row (DDPM 100 rows use a third; default 30)")
    ap.add_argument("--quick", action="store_true",
                    help="5 runs, 1 CPU thread, no torch.compile / bf16 on CPU (about 1 min on 2 cores)")
    ap.add_argument("--device", choices=["all", "cpu", "cuda"], default="all")
    ap.add_argument("--configs", default="lowdim,camera", help="comma list of lowdim, camera")
    ap.add_argument("--schedules", default="ddim:10,ddpm:100", help="comma list of scheduler:steps")
    ap.add_argument("--down-dims", default="", help="U-Net channels, e.g. 256,512,1024 (default: the sim config's)")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile rows")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.quick and "--runs" not in " ".join(sys.argv if argv is None else argv):
        args.runs = 5
    if args.quick and not args.threads:
        args.threads = 1  # a shared small CPU: one thread avoids OpenMP oversubscription stalls
    args.down_dims = [int(x) for x in args.down_dims.split(",") if x.strip()]

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = []
    if args.device in ("all", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device in ("all", "cuda"):
        if torch.cuda.is_available():
            devices.append(torch.device("cuda"))
        elif args.device == "cuda":
            print("CUDA is not available", file=sys.stderr)
            return 2
    schedules = []
    for item in args.schedules.split(","):
        s, n = item.split(":")
        schedules.append((s.strip(), int(n)))
    print(machine())
    print(f"batch 1, chunk T_p=16 x 4 joints, T_o=2; median / p90 of {args.runs} runs "
          f"(DDPM 100: {max(3, args.runs // 3)}); max|diff| vs eager in radians\n")
    rows = []
    for dev in devices:
        for cname in [c.strip() for c in args.configs.split(",") if c.strip()]:
            label = {"lowdim": "low-dim", "camera": "1 cam 96x96"}[cname]
            bench_config(label, cname == "camera", dev, schedules, args, rows)
    head = ("config", "params", "device", "sampler", "variant", "median ms", "p90 ms", "max|diff|", "note")
    from benchlib import print_table

    print_table(head, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
