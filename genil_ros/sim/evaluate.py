"""`genil-ros eval`: run a policy checkpoint on the bundled arm task directly (no ROS) and print its success.

    genil-ros eval --checkpoint models/sim_obstacle_dp --episodes 50 [--variant obstacle] [--video ep.gif]

The policy sees exactly what it sees over ROS: the last T_o joint positions (+ velocities if the task uses
them) and ``front`` camera frames at the configured size; it predicts a chunk of T_p joint targets, of
which entries T_o-1 .. T_o-1+T_a-1 are executed (receding horizon, as the policy node does). Several
episodes run in lockstep so the policy is called on a batch. The path each episode took around the post
(left / right) is reported too: a multimodal policy uses both.

``evaluate_policy(policy, ...)`` accepts any object with ``predict_action(obs) -> (B, T_p, A)`` and the
attributes ``n_obs_steps``, ``n_action_steps``, ``cfg`` (an ExperimentConfig), so baselines can be compared
on the same episodes (episode ``i`` uses seed ``seed + i``).
"""

from __future__ import annotations

import os
import time
from typing import Optional

import numpy as np

from genil_ros.errors import GenilError
from genil_ros.fileio import atomic_path, atomic_write_json


def _side(ee_xy: np.ndarray) -> Optional[str]:
    """Which side of the post the tip passed: y where the tip crosses the post's x (None if it never did)."""
    from genil_ros.sim.env import POST_POS

    x = ee_xy[:, 0]
    cross = np.flatnonzero((x[:-1] < POST_POS[0]) & (x[1:] >= POST_POS[0]))
    if not len(cross):
        return None
    y = ee_xy[cross[0] + 1, 1] - POST_POS[1]
    return "left" if y > 0 else "right"


def evaluate_policy(policy, episodes: int = 50, variant: str = "obstacle", seed: int = 1000, batch_size: int = 10,
                    max_steps: Optional[int] = None, video_path: Optional[str] = None, progress: bool = True,
                    generator_seed: int = 0, video_size: Optional[tuple] = (288, 288)) -> dict:
    """Success rate and paths of ``policy`` over ``episodes`` episodes of the sim (episode i: seed + i)."""
    import torch
    from tqdm import tqdm

    from genil_ros.sim.env import JOINT_NAMES, MAX_EPISODE_STEPS, ArmEnv

    task = policy.cfg.task
    if list(task.joint_names) != JOINT_NAMES:
        raise GenilError(f"checkpoint: task.joint_names {list(task.joint_names)} are not the sim's {JOINT_NAMES}")
    if len(task.cameras) != 1:
        raise GenilError(f"checkpoint: the bundled sim has one camera ('front'), the policy wants "
                         f"{len(task.cameras)} ({[c.name for c in task.cameras]})")
    cam = task.cameras[0]
    T_o, T_a = int(policy.n_obs_steps), int(policy.n_action_steps)
    max_steps = int(max_steps or MAX_EPISODE_STEPS)
    dev = getattr(policy, "device", torch.device("cpu"))
    gen = torch.Generator(device=dev).manual_seed(generator_seed)
    results: list[dict] = []
    frames: list[np.ndarray] = []
    latencies: list[float] = []
    envs = [ArmEnv(variant=variant, image_size=(cam.height, cam.width), render=True,
                   control_rate_hz=task.control_rate_hz, max_episode_steps=max_steps)
            for _ in range(min(batch_size, episodes))]
    bar = tqdm(total=episodes, desc="evaluating", unit="ep", disable=not progress)
    try:
        for start in range(0, episodes, len(envs)):
            n = min(len(envs), episodes - start)
            obs = [envs[i].reset(seed=seed + start + i)[0] for i in range(n)]
            hist = [[o] * T_o for o in obs]  # observation windows, padded with the first obs
            done = [False] * n
            info = [{"success": False, "collided": False, "distance": float("nan")} for _ in range(n)]
            steps = [0] * n
            ee = [[o["ee_pos"][:2].copy()] for o in obs]
            record = video_path is not None and start == 0
            if record:
                frames.append(envs[0].render(video_size))
            while not all(done):
                live = [i for i in range(n) if not done[i]]
                state = np.stack([np.stack([_state(h, task.use_velocity) for h in hist[i]]) for i in live])
                imgs = np.stack([np.stack([h["image"].transpose(2, 0, 1) for h in hist[i]]) for i in live])
                batch = {"state": torch.from_numpy(state), cam.name: torch.from_numpy(np.ascontiguousarray(imgs))}
                t0 = time.perf_counter()
                chunk = policy.predict_action(batch, generator=gen)
                chunk = chunk.detach().float().cpu().numpy()
                latencies.append((time.perf_counter() - t0) / len(live))
                for j, i in enumerate(live):
                    for a in chunk[j, T_o - 1:T_o - 1 + T_a]:
                        o, _, term, trunc, inf = envs[i].step(a)
                        hist[i] = hist[i][1:] + [o]
                        ee[i].append(o["ee_pos"][:2].copy())
                        steps[i] += 1
                        info[i] = inf
                        if record and i == 0:
                            frames.append(envs[0].render(video_size))
                        if term or trunc:
                            done[i] = True
                            break
            for i in range(n):
                results.append({"seed": seed + start + i, "success": bool(info[i]["success"]),
                                "collided": bool(info[i]["collided"]), "steps": steps[i],
                                "final_distance": float(info[i]["distance"]),
                                "side": _side(np.array(ee[i])) if variant == "obstacle" else None})
            bar.update(n)
            bar.set_postfix(success=f"{np.mean([r['success'] for r in results]):.2f}")
    finally:
        bar.close()
        for e in envs:
            e.close()
    if video_path and frames:
        _write_video(video_path, frames)
    ok = [r for r in results if r["success"]]
    return {
        "episodes": len(results),
        "success_rate": float(np.mean([r["success"] for r in results])),
        "collision_rate": float(np.mean([r["collided"] for r in results])),
        "mean_steps_success": float(np.mean([r["steps"] for r in ok])) if ok else None,
        "sides_of_successes": {s: sum(r["side"] == s for r in ok) for s in ("left", "right")},
        "inference_ms_per_chunk_median": float(np.median(latencies) * 1e3) if latencies else None,
        "variant": variant,
        "seed": seed,
        "results": results,
    }


def _state(o: dict, use_velocity: bool) -> np.ndarray:
    return np.concatenate([o["joint_pos"], o["joint_vel"]]) if use_velocity else o["joint_pos"]


def _write_video(path: str, frames: list, fps: int = 10) -> None:
    import imageio.v2 as imageio

    with atomic_path(path) as tmp:  # keeps the suffix, so imageio picks GIF or MP4 from it
        if path.lower().endswith(".gif"):
            imageio.mimsave(tmp, frames, duration=1.0 / fps, loop=0)
        else:
            imageio.mimsave(tmp, frames, fps=fps)


# --------------------------------------------------------------------------- `genil-ros eval`


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory (or a shipped model's name)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--variant", choices=["obstacle", "reach"], default="obstacle")
    parser.add_argument("--seed", type=int, default=1000, help="episode i uses seed + i")
    parser.add_argument("--batch-size", type=int, default=10, help="episodes run in lockstep (one policy batch)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--scheduler", choices=["ddim", "ddpm", "dpmsolver", "consistency"],
                        help="inference scheduler override (consistency: a policy made by `genil-ros distill`)")
    parser.add_argument("--steps", type=int, help="number of denoising steps override")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA ones")
    parser.add_argument("--backend", choices=["auto", "torch", "cuda_graph", "onnxruntime"], default="auto",
                        help="inference backend (auto: cuda_graph on CUDA, onnxruntime on the CPU when the "
                             "checkpoint has a valid ONNX export, else torch)")
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op threads (0: min(physical cores available, 4))")
    parser.add_argument("--video", help="write the first episode as a GIF / MP4 here")
    parser.add_argument("--video-size", type=int, nargs=2, default=[288, 288], metavar=("H", "W"),
                        help="video frame size (rendered at this size, up to 480 x 640)")
    parser.add_argument("--json", help="write the full results as JSON here")
    from genil_ros.sim import latency_eval

    latency_eval.add_arguments(parser)


def run(args) -> int:
    from genil_ros.policy.threads import set_process_env

    if args.episodes < 1:
        raise GenilError(f"--episodes {args.episodes} must be >= 1")
    if args.threads < 0:
        raise GenilError(f"--threads {args.threads} must be >= 0 (0 = the default plan)")
    plan = set_process_env(args.threads)  # before torch starts (no spinning OpenMP pool)
    os.environ.setdefault("MUJOCO_GL", "egl")
    from genil_ros.paths import model_path
    from genil_ros.policy.backends import choose_backend
    from genil_ros.policy.checkpoint import load_policy

    device = "cpu" if args.backend == "onnxruntime" and args.device == "auto" else args.device
    policy = load_policy(model_path(args.checkpoint), device=device, use_ema=not args.no_ema)
    if args.scheduler or args.steps:
        policy.set_inference(args.scheduler or policy.inference_scheduler_name,
                             args.steps or policy.num_inference_steps)
    backend, why = choose_backend(args.backend, policy, plan, batch_size=min(args.batch_size, args.episodes))
    policy.set_backend(backend)
    print(f"backend {why}: {backend.describe()}")
    from genil_ros.sim import latency_eval

    if latency_eval.wanted(args):  # the node's loop with a handover strategy under an injected delay
        res = latency_eval.run(args, policy)
        if args.json:
            atomic_write_json(args.json, res, indent=1)
        return 0
    res = evaluate_policy(policy, args.episodes, args.variant, args.seed, args.batch_size, video_path=args.video,
                          video_size=tuple(args.video_size))
    print(f"success {res['success_rate']:.2f} over {res['episodes']} episodes ({args.variant}); "
          f"collisions {res['collision_rate']:.2f}; sides of successes {res['sides_of_successes']}; "
          f"inference {res['inference_ms_per_chunk_median']:.1f} ms/chunk (median, {policy.device}, {backend.name})")
    if args.json:
        atomic_write_json(args.json, res, indent=1)
    return 0
