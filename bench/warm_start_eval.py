"""Success and latency of the few-step samplers against DDIM 10, on the bundled obstacle task.

Runs the direct (no ROS) evaluation of ``genil-ros eval`` (sim/evaluate.py ``evaluate_policy``: the same
observation windows, T_a actions executed per chunk, episode i with seed 1000 + i, episodes in lockstep
batches) with one change: each chunk after an episode's first may start from the previous chunk shifted by the T_a
ticks that passed (``predict_action(obs, warm_start=shift_chunk(prev, T_a), steps=k, warm_noise=l)``).
Samplers:

  ddim:10      the shipped sampler, from noise
  ddim:k       k DDIM steps from noise (the control: few steps without a warm start)
  warm:k@l     first chunk of an episode DDIM 10, then warm-started: the previous chunk noised to level l
               (a fraction of the training schedule; default sampler.DEFAULT_WARM_NOISE) and k DDIM steps
               below it
  cons:k       the distilled policy (--distilled, made by `genil-ros distill`), k consistency steps

Latency is per chunk at batch 1 on this machine, measured on the episodes' own observations after the
evaluation (same backend and threads), median of all chunks (cold first chunks included) and of the
warm ones; the older camera frame of each window is encoded beforehand, untimed, as the policy node does
a tick ahead (``--no-prefetch``: time all of it). Prints the table; ``--json`` writes it.

    python bench/warm_start_eval.py --episodes 100 --samplers ddim:10,ddim:2,warm:1,warm:2@0.3,warm:4
    python bench/warm_start_eval.py --distilled runs/distilled --samplers ddim:10,cons:1,cons:2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from genil_ros.policy.threads import set_process_env  # noqa: E402  (no torch import: before torch starts)


def parse_sampler(s: str):
    """'warm:2@0.3' -> ('warm', 2, 0.3); level None = the policy's default."""
    kind, _, rest = s.partition(":")
    k, _, level = rest.partition("@")
    if kind not in ("ddim", "warm", "cons") or not k.isdigit() or int(k) < 1 or (level and kind != "warm"):
        raise SystemExit(f"sampler {s!r}: expected ddim:N, warm:K[@LEVEL] or cons:K")
    return kind, int(k), float(level) if level else None


def label(sampler) -> str:
    kind, k, level = sampler
    return f"{kind}:{k}" + (f"@{level:g}" if level is not None else "")


class SamplerPolicy:
    """``policy`` with ``sampler`` behind the interface ``evaluate_policy`` drives: a stateful policy that keeps
    each episode's last chunk (to warm-start the next) and records the observation windows it is given."""

    def __init__(self, policy, sampler, record_obs: list):
        self.policy, self.sampler, self.record_obs = policy, sampler, record_obs
        self.cfg, self.device = policy.cfg, policy.device
        self.n_obs_steps, self.n_action_steps = policy.n_obs_steps, policy.n_action_steps
        self.n, self.prev = 0, None

    def start_episodes(self, n: int) -> None:
        self.n, self.prev = n, None  # (n, T_p, A) previous chunks (lockstep: all episodes have one or none)

    def predict_action(self, batch, generator=None, live=None):
        import torch

        from genil_ros.policy.sampler import shift_chunk

        kind, k, level = self.sampler
        prev = None if self.prev is None else self.prev[live]
        if len(self.record_obs) < 400:
            self.record_obs.append((batch, prev))
        if kind == "warm" and prev is not None:
            chunk = self.policy.predict_action(batch, generator=generator, steps=k, warm_noise=level,
                                               warm_start=shift_chunk(prev, self.n_action_steps))
        else:
            chunk = self.policy.predict_action(batch, generator=generator)
        if self.prev is None:
            self.prev = torch.zeros(self.n, *chunk.shape[1:])
        self.prev[live] = chunk
        return chunk


def evaluate(policy, sampler, episodes, seed, batch_size, record_obs):
    """Success over ``episodes`` with ``sampler`` (genil-ros eval's loop on the obstacle task); observation
    windows are appended to ``record_obs``. Per-episode results: seed, success, collided, steps, side."""
    from genil_ros.sim.evaluate import evaluate_policy

    res = evaluate_policy(SamplerPolicy(policy, sampler, record_obs), episodes, "obstacle", seed, batch_size,
                          progress=False)
    return res["results"]


def batch1_latency(policy, sampler, windows, T_a, prefetch: bool = True):
    """Median ms per chunk at batch 1 over recorded windows: (all chunks, warm chunks only). With
    ``prefetch`` the window's older camera frames are encoded into the frame cache first, untimed, as the
    policy node does a tick ahead on its idle worker; the timed call encodes only the newest frames."""
    import torch

    from genil_ros.policy.sampler import shift_chunk

    kind, k, level = sampler
    gen = torch.Generator().manual_seed(0)
    all_ms, warm_ms = [], []
    if prefetch:
        policy.enable_frame_cache()
    for batch, prev in windows:
        one = {key: v[:1] for key, v in batch.items()}
        if prefetch:
            policy.frame_cache.clear()
            policy.prefetch({name: one[name][:, :-1] for name in policy.camera_names})
        t0 = time.perf_counter()
        if kind == "warm" and prev is not None:
            policy.predict_action(one, generator=gen, warm_start=shift_chunk(prev[:1], T_a), steps=k,
                                  warm_noise=level)
            warm_ms.append((time.perf_counter() - t0) * 1e3)
        else:
            policy.predict_action(one, generator=gen)
        all_ms.append((time.perf_counter() - t0) * 1e3)
    if prefetch:
        policy.frame_cache = None

    def med(xs):
        return statistics.median(xs) if xs else float("nan")

    return med(all_ms), med(warm_ms)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="sim_obstacle_dp")
    ap.add_argument("--distilled", help="a policy made from --checkpoint by `genil-ros distill` (for cons:k)")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--samplers", default="ddim:10,ddim:2,warm:1,warm:2,warm:4")
    ap.add_argument("--backend", choices=["torch", "onnxruntime"], default="onnxruntime")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = default plan)")
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--latency-chunks", type=int, default=60, help="batch-1 chunks timed per sampler")
    ap.add_argument("--no-prefetch", dest="prefetch", action="store_false",
                    help="time the encoding of every frame of the window (default: the older ones pre-encoded, "
                         "as the policy node does)")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--json", help="write the table here")
    args = ap.parse_args(argv)
    samplers = [parse_sampler(s) for s in args.samplers.split(",") if s.strip()]
    plan = set_process_env(args.threads)
    os.environ.setdefault("MUJOCO_GL", "egl")

    import torch  # noqa: F401

    from genil_ros.errors import CheckpointError
    from genil_ros.paths import model_path
    from genil_ros.policy.backends import make_backend
    from genil_ros.policy.checkpoint import load_policy
    from genil_ros.policy.onnx_export import export_onnx, read_onnx_export

    sys.path.insert(0, str(ROOT / "bench"))
    from inference import machine

    def on_backend(path):
        path = model_path(path)
        policy = load_policy(path, device="cpu")
        onnx_dir = ROOT / ".bench" / "onnx" / Path(path).resolve().name
        if args.backend == "onnxruntime":
            try:
                read_onnx_export(policy, onnx_dir)
            except CheckpointError:
                export_onnx(path, onnx_dir)
        return path, policy, policy.set_backend(make_backend(args.backend, policy, threads=plan, onnx_dir=onnx_dir))

    ckpt, teacher, backend = on_backend(args.checkpoint)
    if any(s[0] == "cons" for s in samplers) and not args.distilled:
        raise SystemExit("cons:k samplers need --distilled CHECKPOINT (made by `genil-ros distill`)")
    distilled = on_backend(args.distilled)[1] if args.distilled else None
    print(machine())
    print(f"checkpoint {ckpt}" + (f", distilled {args.distilled}" if distilled else "")
          + f"; backend {backend.describe()}; {args.episodes} episodes (seeds {args.seed}..), "
          f"lockstep batches of {args.batch_size}\n")
    rows = []
    for s in samplers:
        policy = distilled if s[0] == "cons" else teacher
        if s[0] == "cons":
            policy.set_inference("consistency", s[1])
        else:
            policy.set_inference("ddim", s[1] if s[0] == "ddim" else 10)  # warm:k: DDIM 10 for the first chunk
        windows: list = []
        t0 = time.perf_counter()
        res = evaluate(policy, s, args.episodes, args.seed, args.batch_size, windows)
        wall = time.perf_counter() - t0
        lat_all, lat_warm = batch1_latency(policy, s, windows[: args.latency_chunks], policy.n_action_steps,
                                           args.prefetch)
        ok = [r for r in res if r["success"]]
        row = {"sampler": label(s), "episodes": len(res), "success": len(ok) / len(res),
               "collisions": sum(r["collided"] for r in res) / len(res),
               "sides": {side: sum(r["side"] == side for r in ok) for side in ("left", "right")},
               "ms_per_chunk_b1_all": lat_all, "ms_per_chunk_b1_warm": lat_warm, "eval_wall_s": wall}
        rows.append(row)
        print(f"{row['sampler']:<10} success {row['success']:.2f}  collisions {row['collisions']:.2f}  "
              f"sides {row['sides']}  batch-1 chunk {lat_all:.1f} ms (warm chunks {lat_warm:.1f} ms)  "
              f"[{wall:.0f} s]", flush=True)
    base = next((r for r in rows if r["sampler"] == "ddim:10"), None)
    if base:
        print("\nagainst ddim:10:")
        for r in rows:
            lat = r["ms_per_chunk_b1_warm"] if r["sampler"].startswith("warm") else r["ms_per_chunk_b1_all"]
            print(f"  {r['sampler']:<10} success {r['success'] - base['success']:+.2f}, chunk latency x"
                  f"{lat / base['ms_per_chunk_b1_all']:.2f}")
    if args.json:
        from genil_ros.fileio import atomic_write_json

        atomic_write_json(args.json, {"machine": machine(), "backend": backend.describe(), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
