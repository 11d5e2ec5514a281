"""genil_ros against LeRobot's DiffusionPolicy on the pick-and-place task: same episodes, same network size,
same number of training steps, evaluated on the same seeded episodes through the same evaluation path.

genil_ros's side is a checkpoint made by ``genil-ros train`` (default: the shipped ``sim_pick_place_dp``);
its ``meta.json`` names the dataset and the training episodes it used. LeRobot's side (LeRobot 0.4.4 in its
own virtualenv, ``.bench/lerobot-venv``, made by ``bench/lerobot_side.py``'s venv maker on first use; never a
dependency of genil_ros) is trained here in a child process (``bench/lerobot_pick_place_child.py``) on the
very training samples genil_ros trained on -- the (T_o observation window, T_p action chunk) windows of
genil_ros's ``SequenceDataset`` over those episodes -- with the same U-Net (down_dims, kernel, groups, step
embedding, FiLM scale), horizons (T_o 2, T_p 16, T_a 8), noise schedule (100 steps, squaredcos_cap_v2,
epsilon), batch size and number of optimiser steps, and LeRobot's own training recipe otherwise (its Adam
and cosine-with-warm-up presets, no EMA, MIN_MAX normalisation). The robot's joints and gripper go in as
``observation.state``, the object position as ``observation.environment_state``.

Both are then run on the bundled sim with ``genil_ros.sim.evaluate.evaluate_policy`` -- the observation
entries read from the sim as sim_node publishes them, action rows split into arm and gripper commands,
DDIM 10, receding horizon T_a -- on episodes ``seed .. seed + episodes - 1``; the scripted expert (through
the same path) and, when given, the MSE baseline checkpoint are evaluated on the same seeds too.

    python bench/lerobot_pick_place.py --dataset data/pick_place [--checkpoint sim_pick_place_dp]
        [--mse-checkpoint runs/pick_place_mse/final] [--episodes 100] [--json docs/figures/...json]

LeRobot's trained weights are kept under ``.bench/lerobot_pick_place/<steps>_<dataset digest>/`` and
reused on the next run (``--retrain`` to train again).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import JsonLineChild  # noqa: E402

CACHE = ROOT / ".bench" / "lerobot_pick_place"


class LeRobotChild(JsonLineChild):
    """bench/lerobot_pick_place_child.py in the LeRobot venv: one JSON request per line, one JSON answer per line."""

    def __init__(self, threads: int):
        from lerobot_side import lerobot_python  # the venv maker (makes .bench/lerobot-venv once)

        super().__init__(lerobot_python(), ROOT / "bench" / "lerobot_pick_place_child.py", threads, "LeRobot",
                         env={"OMP_WAIT_POLICY": "PASSIVE"})


class LeRobotPolicy:
    """LeRobot behind the interface ``evaluate_policy`` drives: ``predict_action(obs) -> (B, T_p, A)`` with
    the executed rows T_o-1 .. T_o-1+T_a-1 filled from LeRobot's ``generate_actions``."""

    def __init__(self, child: LeRobotChild, cfg, tmp: Path):
        import torch

        self.child, self.cfg, self.tmp = child, cfg, tmp
        h = cfg.task.horizon
        self.n_obs_steps, self.n_action_steps, self.horizon = h.n_obs_steps, h.n_action_steps, h.horizon
        self.device = torch.device("cpu")

    def predict_action(self, obs: dict, generator=None):
        import torch

        path = self.tmp / "obs.npy"
        np.save(path, obs["state"].numpy().astype(np.float32))
        act = np.load(self.child.ask(op="predict", obs=str(path))["actions"])  # (B, T_a, A)
        B, T_a, A = act.shape
        chunk = np.repeat(act[:, -1:], self.horizon, axis=1)
        first = self.n_obs_steps - 1
        chunk[:, first:first + T_a] = act
        chunk[:, :first] = act[:, :1]
        return torch.from_numpy(chunk)


def training_windows(cfg, dataset: Path, episodes) -> tuple[np.ndarray, np.ndarray]:
    """The (obs window, action chunk) samples genil_ros trained on: its SequenceDataset over ``episodes``."""
    from genil_ros.data.dataset import SequenceDataset
    from genil_ros.data.store import EpisodeStore

    h = cfg.task.horizon
    ds = SequenceDataset(EpisodeStore.open(dataset), h.n_obs_steps, h.horizon, episodes=episodes, cameras=[],
                         layout=cfg.task.layout)
    obs = np.stack([ds[i]["obs"]["state"].numpy() for i in range(len(ds))])
    act = np.stack([ds[i]["action"].numpy() for i in range(len(ds))])
    return obs, act


def lerobot_config(cfg, steps: int) -> dict:
    """DiffusionConfig fields equal to genil_ros's network, horizons, schedule and optimiser settings."""
    pc, h, tc = cfg.policy, cfg.task.horizon, cfg.train
    return {"n_obs_steps": h.n_obs_steps, "horizon": h.horizon, "n_action_steps": h.n_action_steps,
            "drop_n_last_frames": h.horizon - h.n_action_steps - h.n_obs_steps + 1,
            "down_dims": list(pc.down_dims), "kernel_size": pc.kernel_size, "n_groups": pc.n_groups,
            "diffusion_step_embed_dim": pc.diffusion_step_embed_dim,
            "use_film_scale_modulation": pc.cond_predict_scale, "num_train_timesteps": pc.num_train_timesteps,
            "beta_schedule": pc.beta_schedule, "prediction_type": pc.prediction_type,
            "noise_scheduler_type": "DDIM", "num_inference_steps": pc.num_inference_steps,
            "optimizer_lr": tc.lr, "optimizer_betas": list(tc.betas), "optimizer_weight_decay": tc.weight_decay,
            "scheduler_warmup_steps": tc.lr_warmup_steps}


def row(name: str, res: dict, extra: str = "") -> str:
    b = res["bins_of_successes"]
    return (f"| {name} | **{res['success_rate']:.2f}** | {res['drop_rate']:.2f} | {b['left']} / {b['right']} "
            f"| {extra} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="sim_pick_place_dp", help="genil_ros checkpoint (dir or shipped name)")
    ap.add_argument("--mse-checkpoint", help="the MSE baseline checkpoint, evaluated on the same seeds")
    ap.add_argument("--dataset", help="the dataset the checkpoint was trained on (default: the path in its meta)")
    ap.add_argument("--steps", type=int, help="LeRobot training steps (default: the checkpoint's)")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1000, help="episode i uses seed + i")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each side")
    ap.add_argument("--retrain", action="store_true", help="train LeRobot again even if cached")
    ap.add_argument("--train-only", action="store_true",
                    help="train (and cache) LeRobot's side, then stop: e.g. from a periodic checkpoint of the genil "
                         "run (same dataset and split) with --steps, while that run is still training")
    ap.add_argument("--json", help="write all results here")
    args = ap.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    from genil_ros.policy.threads import set_process_env

    set_process_env(args.threads)
    import torch

    from genil_ros.paths import model_path
    from genil_ros.policy.checkpoint import load_policy, read_meta
    from genil_ros.sim.evaluate import ScriptedPolicy, evaluate_policy

    torch.set_num_threads(args.threads)
    ckpt = model_path(args.checkpoint)
    policy = load_policy(ckpt, device="cpu")
    cfg = policy.cfg
    extra = read_meta(ckpt).get("extra", {})
    info = extra.get("dataset", {})
    steps = int(args.steps or extra.get("global_step") or cfg.train.max_steps)
    dataset = Path(args.dataset or info.get("path", ""))
    train_eps = info.get("train_episodes")
    lay = cfg.task.layout
    env_dims = [e for e in lay.state if e.type == "vector"]
    if [e.name for e in lay.state][-len(env_dims):] != [e.name for e in env_dims] or not env_dims:
        raise SystemExit("the task's vector observations (the environment state) must come last in the state")
    state_dim = lay.state_dim - sum(e.dim for e in env_dims)

    child = LeRobotChild(args.threads)
    results, notes = {}, {}
    try:
        setup = child.ask(op="setup", config=lerobot_config(cfg, steps), state_dim=state_dim,
                          env_dim=lay.state_dim - state_dim, action_dim=lay.action_dim, threads=args.threads, seed=0)
        print(f"LeRobot {setup['lerobot']} (torch {setup['torch']}): {setup['params'] / 1e6:.2f}M parameters; "
              f"genil_ros: {sum(p.numel() for p in policy.parameters()) / 1e6:.2f}M", flush=True)
        obs, act = training_windows(cfg, dataset, train_eps)
        digest = hashlib.sha256(obs.tobytes() + act.tobytes()).hexdigest()[:12]
        saved = CACHE / f"{steps}_{digest}"
        print(f"training samples: {len(obs)} windows of {len(train_eps or [])} episodes from {dataset} "
              f"(digest {digest}); {steps} steps, batch {cfg.train.batch_size}", flush=True)
        if (saved / "stats.json").is_file() and not args.retrain:
            child.ask(op="load", dir=str(saved))
            notes["lerobot_training"] = json.loads((saved / "training.json").read_text())
        else:
            with tempfile.TemporaryDirectory() as tmp:
                np.savez(Path(tmp) / "windows.npz", obs=obs, action=act)
                tr = child.ask(op="train", data=str(Path(tmp) / "windows.npz"), steps=steps,
                               batch=cfg.train.batch_size, out=str(saved), seed=0)
            (saved / "training.json").write_text(json.dumps(tr))
            notes["lerobot_training"] = tr
        tr = notes["lerobot_training"]
        print(f"LeRobot trained: final loss {tr['final_loss']:.4f}, {tr['samples_per_s']:.0f} samples/s, "
              f"{tr['seconds'] / 60:.1f} min ({saved})", flush=True)
        if args.train_only:
            return 0

        kw = {"episodes": args.episodes, "seed": args.seed, "progress": False}
        with tempfile.TemporaryDirectory() as tmp:
            runs = [("genil_ros", lambda: evaluate_policy(policy, batch_size=10, **kw)),
                    ("lerobot", lambda: evaluate_policy(LeRobotPolicy(child, cfg, Path(tmp)), batch_size=10, **kw)),
                    ("expert", lambda: evaluate_policy(ScriptedPolicy(cfg, seed=0), batch_size=1, **kw))]
            if args.mse_checkpoint:
                mse = load_policy(model_path(args.mse_checkpoint), device="cpu")
                runs.insert(1, ("mse", lambda: evaluate_policy(mse, batch_size=10, **kw)))
            for name, fn in runs:
                t0 = time.perf_counter()
                results[name] = fn()
                r = results[name]
                print(f"{name}: success {r['success_rate']:.2f}, dropped {r['drop_rate']:.2f}, bins of successes "
                      f"{r['bins_of_successes']} ({time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        child.close()

    print(f"\n{args.episodes} episodes, seeds {args.seed}..{args.seed + args.episodes - 1}, DDIM "
          f"{cfg.policy.num_inference_steps}, T_a {cfg.task.horizon.n_action_steps}; both trained {steps} steps on "
          f"the same {len(obs)} samples\n")
    print("| policy | success | dropped | left / right successes | |")
    print("| --- | --- | --- | --- | --- |")
    print(row("genil_ros diffusion policy", results["genil_ros"], f"`{args.checkpoint}`"))
    print(row("LeRobot 0.4.4 DiffusionPolicy", results["lerobot"], f"final train loss {tr['final_loss']:.4f}"))
    if "mse" in results:
        print(row("MSE baseline (same network)", results["mse"], f"`{args.mse_checkpoint}`"))
    print(row("scripted expert", results["expert"], "same evaluation path"))
    if args.json:
        from genil_ros.fileio import atomic_write_json

        atomic_write_json(args.json, {"steps": steps, "samples": len(obs), "dataset": str(dataset),
                                      "lerobot": setup, "notes": notes, "results": results}, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
