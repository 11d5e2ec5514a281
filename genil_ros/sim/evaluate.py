"""`genil-ros eval`: run a policy checkpoint on the bundled sim directly (no ROS) and print its success.

    genil-ros eval --checkpoint models/sim_obstacle_dp --episodes 50 [--variant obstacle] [--video ep.gif]
    genil-ros eval --checkpoint models/sim_pick_place_dp --episodes 100     # variant from the task: pick_place

The policy sees exactly what it sees over ROS: its task's observation entries read from the sim the way
``sim_node`` publishes them (``sim/binding.py``: joints by name from the joint state, the object position
vector, the ``front`` camera at the entry's size), a window of the last T_o of them; it predicts a chunk of
T_p actions, of which entries T_o-1 .. T_o-1+T_a-1 are executed (receding horizon, as the policy node does),
each row split into the sim's commands by the task's action entries (arm joint targets, gripper target).
Several episodes run in lockstep so the policy is called on a batch. The mode of each success is reported
too -- the side of the post (obstacle) or the bin (pick_place): a multimodal policy uses both.

``evaluate_policy(policy, ...)`` accepts any object with ``predict_action(obs) -> (B, T_p, A)`` and the
attributes ``n_obs_steps``, ``n_action_steps``, ``cfg`` (an ExperimentConfig), so baselines can be compared
on the same episodes (episode ``i`` uses seed ``seed + i``). A stateful one (with ``start_episodes(n)``) is
told when a batch of ``n`` episodes starts, and which of them the batch of each call holds
(``predict_action(obs, generator=, live=[episode index in the batch, ...])``).
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


def _episode_result(variant: str, seed: int, info: dict, steps: int, ee_xy: list, env=None) -> dict:
    r = {"seed": seed, "success": bool(info["success"]), "steps": steps,
         "final_distance": float(info["distance"])}
    if variant == "pick_place":
        r.update(dropped=bool(info["dropped"]), bin=info["bin"], mode=info["bin"] if info["success"] else None)
        if env is not None:  # where the object ended (e.g. dropped between the bins: |y| < the bins' inner edges)
            r["object_pos"] = [round(float(v), 4) for v in env.object_pos()]
    else:
        side = _side(np.array(ee_xy)) if variant == "obstacle" else None
        r.update(collided=bool(info["collided"]), side=side, mode=side)
    return r


def evaluate_policy(policy, episodes: int = 50, variant: Optional[str] = None, seed: int = 1000,
                    batch_size: int = 10, max_steps: Optional[int] = None, video_path: Optional[str] = None,
                    progress: bool = True, generator_seed: int = 0, video_size: Optional[tuple] = (288, 288)) -> dict:
    """Success rate and modes of ``policy`` over ``episodes`` episodes of the sim (episode i: seed + i).

    ``variant`` None = from the task (``pick_place`` when it has the gripper joint, else ``obstacle``);
    ``max_steps`` None = the task's own episode limit."""
    import torch

    from genil_ros.sim.binding import EpisodeBatches, SimBinding, make_env, variant_for_task

    task = policy.cfg.task
    variant = variant or variant_for_task(task)
    cams = task.camera_entries
    size = (cams[0].height, cams[0].width) if cams else (96, 96)
    T_o, T_a = int(policy.n_obs_steps), int(policy.n_action_steps)
    dev = getattr(policy, "device", torch.device("cpu"))
    gen = torch.Generator(device=dev).manual_seed(generator_seed)
    results: list[dict] = []
    frames: list[np.ndarray] = []
    latencies: list[float] = []
    n_envs = min(batch_size, episodes)
    envs = [make_env(variant, image_size=size, render=bool(cams) or (video_path is not None and k == 0),
                     control_rate_hz=task.control_rate_hz, max_episode_steps=max_steps) for k in range(n_envs)]
    with EpisodeBatches(envs, episodes, seed, "evaluating", progress) as batches:
        binding = SimBinding(task, envs[0])
        for start, seeds, obs in batches:
            n = len(seeds)
            stateful = hasattr(policy, "start_episodes")  # e.g. ScriptedPolicy: starts afresh, told who is live
            if stateful:
                policy.start_episodes(n)
            hist = [[binding.observe(envs[i], obs[i])] * T_o for i in range(n)]  # windows, padded with the first
            done = [False] * n
            info = [envs[i].info() for i in range(n)]
            steps = [0] * n
            ee = [[o["ee_pos"][:2].copy()] for o in obs]
            record = video_path is not None and start == 0
            if record:
                frames.append(envs[0].render(video_size))
            while not all(done):
                live = [i for i in range(n) if not done[i]]
                batch = {k: torch.from_numpy(np.stack([np.stack([h[k] for h in hist[i]]) for i in live]))
                         for k in hist[live[0]][0]}
                t0 = time.perf_counter()
                chunk = policy.predict_action(batch, generator=gen, **({"live": live} if stateful else {}))
                chunk = chunk.detach().float().cpu().numpy()
                latencies.append((time.perf_counter() - t0) / len(live))
                for j, i in enumerate(live):
                    for row in chunk[j, T_o - 1:T_o - 1 + T_a]:
                        o, _, term, trunc, inf = envs[i].step(binding.command(row, envs[i]))
                        hist[i] = hist[i][1:] + [binding.observe(envs[i], o)]
                        ee[i].append(o["ee_pos"][:2].copy())
                        steps[i] += 1
                        info[i] = inf
                        if record and i == 0:
                            frames.append(envs[0].render(video_size))
                        if term or trunc:
                            done[i] = True
                            break
            for i in range(n):
                results.append(_episode_result(variant, seeds[i], info[i], steps[i], ee[i], envs[i]))
            batches.show_success(np.mean([r["success"] for r in results]))
    if video_path and frames:
        _write_video(video_path, frames)
    ok = [r for r in results if r["success"]]
    modes = ("left", "right")
    out = {
        "episodes": len(results),
        "success_rate": float(np.mean([r["success"] for r in results])),
        "mean_steps_success": float(np.mean([r["steps"] for r in ok])) if ok else None,
        "modes_of_successes": {m: sum(r["mode"] == m for r in ok) for m in modes},
        "inference_ms_per_chunk_median": float(np.median(latencies) * 1e3) if latencies else None,
        "variant": variant,
        "seed": seed,
        "results": results,
    }
    if variant == "pick_place":
        out["drop_rate"] = float(np.mean([r["dropped"] for r in results]))
        out["bins_of_successes"] = out["modes_of_successes"]
    else:
        out["collision_rate"] = float(np.mean([r["collided"] for r in results]))
        out["sides_of_successes"] = out["modes_of_successes"]
    return out


def summary_line(res: dict) -> str:
    """One line: success, failures (collisions / drops) and the modes of the successes."""
    if res["variant"] == "pick_place":
        what = f"dropped {res['drop_rate']:.2f}; bins of successes {res['bins_of_successes']}"
    else:
        what = f"collisions {res['collision_rate']:.2f}; sides of successes {res['sides_of_successes']}"
    return f"success {res['success_rate']:.2f} over {res['episodes']} episodes ({res['variant']}); {what}"


class ScriptedPolicy:
    """The pick-and-place scripted expert behind the policy interface, so that it runs through exactly the
    evaluation path of a trained policy -- its task's observation entries in (the arm joints and the object
    position are read back out of ``state`` by their dimension names), action rows out (placed by joint
    name) -- on the same seeds: the expert's row of a results table. Batch 1 (``batch_size=1``)."""

    def __init__(self, cfg, seed: int = 0):
        import torch

        from genil_ros.sim.pick_place import OBJECT_POS_NAMES, PickPlaceEnv
        from genil_ros.sim.pick_place_expert import PickPlaceExpert

        self.cfg = cfg
        task = cfg.task
        self.n_obs_steps, self.horizon = task.horizon.n_obs_steps, task.horizon.horizon
        self.n_action_steps = task.horizon.n_action_steps
        self.device = torch.device("cpu")
        lay = task.layout
        state_col = {n: e.start + k for e in lay.state if e.type in ("joint_position", "gripper")
                     for k, n in enumerate(e.dim_names)}
        vectors = [e for e in lay.state if e.type == "vector" and e.dim == 3]
        self.model = PickPlaceEnv(render=False, control_rate_hz=task.control_rate_hz)
        try:
            self._arm = [state_col[j] for j in self.model.joint_names]
            self._object = vectors[0].slice
            cols = {n: e.start + k for e in lay.action for k, n in enumerate(e.dim_names)}
            self._act = [cols[j] for j in self.model.action_names]
        except (KeyError, IndexError):
            raise GenilError(f"ScriptedPolicy: the task must observe {self.model.joint_names} and a 3-dim object "
                             f"vector ({OBJECT_POS_NAMES}) and command {self.model.action_names}") from None
        self.action_dim = lay.action_dim
        self.expert = PickPlaceExpert(self.model, seed=seed)

    def start_episodes(self, n: int) -> None:
        if n != 1:
            raise GenilError("ScriptedPolicy runs one episode at a time (batch_size=1)")
        self.expert.reset()

    def predict_action(self, obs: dict, generator=None, live=None):
        import torch

        last = obs["state"][0, -1].double().numpy()
        seen = {"joint_pos": last[self._arm], "object_pos": last[self._object]}
        chunk = np.zeros((1, self.horizon, self.action_dim), np.float32)
        first = self.n_obs_steps - 1
        for t in range(first, first + self.n_action_steps):
            chunk[0, t, self._act] = self.expert.act(seen)
        chunk[0, :first] = chunk[0, first]
        chunk[0, first + self.n_action_steps:] = chunk[0, first + self.n_action_steps - 1]
        return torch.from_numpy(chunk)


def _write_video(path: str, frames: list, fps: int = 10) -> None:
    import imageio.v2 as imageio

    with atomic_path(path) as tmp:  # keeps the suffix, so imageio picks GIF or MP4 from it
        if path.lower().endswith(".gif"):
            imageio.mimsave(tmp, frames, duration=1.0 / fps, loop=0)
        else:
            imageio.mimsave(tmp, frames, fps=fps)


# --------------------------------------------------------------------------- `genil-ros eval`


def add_arguments(parser) -> None:
    from genil_ros.sim.binding import VARIANTS

    parser.add_argument("--checkpoint", required=True, help="checkpoint directory (or a shipped model's name)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--variant", choices=list(VARIANTS), default=None,
                        help="sim task (default: from the checkpoint's task: pick_place when it has the gripper "
                             "joint, else obstacle)")
    parser.add_argument("--seed", type=int, default=1000, help="episode i uses seed + i")
    parser.add_argument("--batch-size", type=int, default=10, help="episodes run in lockstep (one policy batch)")
    parser.add_argument("--max-steps", type=int, default=None, help="episode limit in control steps "
                        "(default: the task's, 80 for obstacle/reach, 120 for pick_place)")
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
    res = evaluate_policy(policy, args.episodes, args.variant, args.seed, args.batch_size, max_steps=args.max_steps,
                          video_path=args.video, video_size=tuple(args.video_size))
    print(f"{summary_line(res)}; inference {res['inference_ms_per_chunk_median']:.1f} ms/chunk "
          f"(median, {policy.device}, {backend.name})")
    if args.json:
        atomic_write_json(args.json, res, indent=1)
    return 0
