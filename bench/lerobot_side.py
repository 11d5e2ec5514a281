"""genil_ros against LeRobot's DiffusionPolicy at equal settings, side by side in one run.

Equal settings: batch 1 (chunk) / batch 64 (training), T_o 2, T_p 16, T_a 8, 4 joints, DDIM 10, fp32,
U-Net down_dims given by --sizes (paper 256/512/1024, shipped 64/128/256), kernel 5, 8 groups, step
embedding 128, FiLM scale; camera configs add one 96x96 camera cropped to 86x86, ResNet-18 with
GroupNorm and a 32-keypoint spatial softmax, no pretrained weights. Same threads and OMP_WAIT_POLICY
for both processes. LeRobot runs in its own virtualenv (.bench/lerobot-venv, made here on first use:
LeRobot 0.4.x needs torch < 2.11; never a dependency of genil_ros) in a child process
(bench/lerobot_child.py); the two take turns, round after round, so a noisy machine hits both alike.

Measured: one chunk (LeRobot: reset() + select_action(); genil_ros: predict_action() with the torch
and the onnxruntime backends), median over rounds; and training samples/s (forward + backward + AdamW
step, low-dim and camera configs, median iteration).

    python bench/lerobot_side.py                 # paper size, low-dim and camera; training at shipped size
    python bench/lerobot_side.py --rounds 3 --sizes shipped
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

from benchlib import JsonLineChild  # noqa: E402

from genil_ros.policy.threads import ThreadPlan, set_process_env  # noqa: E402

VENV = ROOT / ".bench" / "lerobot-venv"
PINS = ["torch==2.9.1", "torchvision==0.24.1", "lerobot==0.4.4"]


def lerobot_python() -> Path:
    """The LeRobot venv's python, making the venv first if needed (a large download, once)."""
    py = VENV / "bin" / "python"
    ok = py.is_file() and subprocess.run([str(py), "-c", "import lerobot.policies.diffusion.modeling_diffusion"],
                                         capture_output=True).returncode == 0
    if not ok:
        print(f"making {VENV} with {' '.join(PINS)} (several GB of torch+CUDA wheels; once)...", file=sys.stderr)
        base = os.environ.get("LEROBOT_BASE_PYTHON", sys.executable)  # a python 3.10-3.12 for the venv
        subprocess.run([base, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--progress-bar", "off", *PINS], check=True)
    return py


class LeRobot(JsonLineChild):
    """bench/lerobot_child.py in the LeRobot venv."""

    def __init__(self, threads: int):
        super().__init__(lerobot_python(), ROOT / "bench" / "lerobot_child.py", threads, "LeRobot")


def genil_side(size_dims, camera: bool, threads: int, batch: int):
    """(policy with the torch backend, its ONNX dir, batch-1 obs, a training batch, optimizer)."""
    import torch
    from backends import SIZES, load

    size = next(k for k, v in SIZES.items() if v == list(size_dims))
    policy, onnx_dir, obs = load(size, camera)
    g = torch.Generator().manual_seed(1)
    tb = {"obs": {"state": torch.rand(batch, 2, 4, generator=g) * 2 - 1},
          "action": torch.rand(batch, 16, 4, generator=g) * 2 - 1}
    if camera:
        tb["obs"]["front"] = torch.randint(0, 256, (batch, 2, 3, 96, 96), generator=g, dtype=torch.uint8)
    return policy, onnx_dir, obs, tb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="paper", help="chunk latency sizes: paper, shipped")
    ap.add_argument("--train-sizes", default="shipped", help="training sizes (empty = skip training)")
    ap.add_argument("--configs", default="lowdim,camera")
    ap.add_argument("--threads", type=int, default=0, help="threads for both (0 = the default plan)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    ap.add_argument("--chunks", type=int, default=3, help="chunks per side per round")
    ap.add_argument("--batch", type=int, default=64, help="training batch size")
    ap.add_argument("--iters", type=int, default=3, help="training iterations per side per round")
    args = ap.parse_args(argv)
    plan = set_process_env(args.threads)

    import torch
    from backends import SIZES, machine_line, times_ms

    from genil_ros.policy.backends import make_backend
    from genil_ros.policy.train_steps import adamw

    torch.manual_seed(0)
    plan = ThreadPlan.choose(plan.intra_op)
    plan.apply_torch()
    lr = LeRobot(plan.intra_op)
    print(machine_line())
    print(f"both sides: {plan.intra_op} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; "
          f"{args.rounds} alternating rounds\n")
    out = []
    try:
        for size in [s for s in args.sizes.split(",") if s]:
            for config in [c for c in args.configs.split(",") if c]:
                cam = config == "camera"
                info = lr.ask(op="setup", down_dims=SIZES[size], camera=cam, threads=plan.intra_op, steps=10,
                              batch=args.batch)
                policy, onnx_dir, obs, _ = genil_side(SIZES[size], cam, plan.intra_op, args.batch)
                torch_b = make_backend("torch", policy, threads=plan)
                ort_b = make_backend("onnxruntime", policy, threads=plan, onnx_dir=onnx_dir)
                gen = torch.Generator().manual_seed(0)
                res = {"lerobot": [], "torch": [], "onnxruntime": []}
                for _ in range(args.rounds):
                    res["lerobot"] += lr.ask(op="chunk", runs=args.chunks)["ms"]
                    for name, b in (("torch", torch_b), ("onnxruntime", ort_b)):
                        policy.set_backend(b)
                        res[name] += times_ms(lambda: policy.predict_action(obs, gen), args.chunks, warmup=1)
                med = {k: statistics.median(v) for k, v in res.items()}
                gp = sum(p.numel() for p in policy.parameters())
                out.append(f"chunk  {size:<7} {config:<6} LeRobot {info['lerobot']} (torch {info['torch']}, "
                           f"{info['params'] / 1e6:.1f}M) {med['lerobot']:.1f} ms | genil_ros ({gp / 1e6:.1f}M) torch "
                           f"{med['torch']:.1f} ms (x{med['torch'] / med['lerobot']:.2f}), onnxruntime "
                           f"{med['onnxruntime']:.1f} ms (x{med['onnxruntime'] / med['lerobot']:.2f})")
                print(out[-1], flush=True)
        for size in [s for s in args.train_sizes.split(",") if s]:
            for config in [c for c in args.configs.split(",") if c]:
                cam = config == "camera"
                info = lr.ask(op="setup", down_dims=SIZES[size], camera=cam, threads=plan.intra_op, steps=10,
                              batch=args.batch)
                policy, _, _, tb = genil_side(SIZES[size], cam, plan.intra_op, args.batch)
                policy.train()
                opt = adamw(policy.parameters(), 1e-4, (0.9, 0.999), 1e-6, policy.device)  # as `genil-ros train`
                gen = torch.Generator().manual_seed(0)

                def step():
                    loss = policy.compute_loss(tb, gen)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                step()
                lr.ask(op="train", iters=1)  # warm-up, both sides
                res = {"lerobot": [], "genil": []}
                for _ in range(args.rounds):
                    res["lerobot"] += lr.ask(op="train", iters=args.iters)["s"]
                    for _ in range(args.iters):
                        t0 = time.perf_counter()
                        step()
                        res["genil"].append(time.perf_counter() - t0)
                sps = {k: args.batch / statistics.median(v) for k, v in res.items()}
                out.append(f"train  {size:<7} {config:<6} batch {args.batch}: LeRobot {sps['lerobot']:.0f} samples/s | "
                           f"genil_ros {sps['genil']:.0f} samples/s (x{sps['genil'] / sps['lerobot']:.2f})")
                print(out[-1], flush=True)
    finally:
        lr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
