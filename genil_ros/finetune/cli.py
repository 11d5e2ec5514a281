"""`genil-ros finetune`: improve a behaviour-cloned diffusion policy with the adversarial reward on the sim.

    genil-ros finetune --checkpoint runs/bc --task reach --out runs/ft              # AMP style + task reward
    genil-ros finetune --checkpoint runs/bc --task reach --out runs/ft_gail --algo gail --task-weight 0
    genil-ros finetune --checkpoint runs/bc --task reach --out runs/ft --resume     # continue a killed run

Settings: the ``finetune`` and ``adversarial`` sections of ``--config`` (default: the checkpoint's own
config.yaml), with the flags below on top. Each iteration is a PPO step of the noise policy on
``finetune.episodes_per_iter`` sim episodes (``noise_rl.py``); progress bar (success, reward, discriminator
accuracy), TensorBoard in OUT/tb, one JSON line per iteration in OUT/metrics.jsonl, checkpoints every
``finetune.checkpoint_every_iters`` (layout in ``run.py``), the evaluation in OUT/eval.json. OUT/policy is
a checkpoint the policy node loads (``genil-ros policy --checkpoint OUT/policy``) and hot-reloads.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["add_arguments", "run", "finetune_config", "fit"]


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="the behaviour-cloned policy (checkpoint directory)")
    parser.add_argument("--out", required=True, help="output directory (policy/, discriminator/, state/, tb/, ...)")
    parser.add_argument("--config", default=None,
                        help="YAML whose finetune/adversarial sections to use (default: the checkpoint's config)")
    parser.add_argument("--task", choices=["reach", "obstacle", "pick_place"], default=None,
                        help="bundled sim task (default finetune.task)")
    parser.add_argument("--algo", choices=["amp", "gail"], default=None, help="style reward (adversarial.algo)")
    parser.add_argument("--task-weight", type=float, default=None, help="adversarial.task_reward_weight")
    parser.add_argument("--style-weight", type=float, default=None, help="adversarial.style_reward_weight")
    parser.add_argument("--no-style", action="store_true", help="task reward only (no discriminator)")
    parser.add_argument("--expert", default=None,
                        help="expert dataset directory or rosbags for the discriminator (default: the sim's "
                             "scripted expert)")
    parser.add_argument("--iterations", type=int, default=None, help="finetune.iterations")
    parser.add_argument("--episodes-per-iter", type=int, default=None, help="finetune.episodes_per_iter")
    parser.add_argument("--eval-episodes", type=int, default=None, help="finetune.eval_episodes")
    parser.add_argument("--seed", type=int, default=None, help="finetune.seed")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/state")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (the sim runs on the CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def finetune_config(checkpoint, config=None, overrides=None):
    """The base checkpoint's ExperimentConfig with the finetune / adversarial sections of ``config`` and
    ``overrides`` ({"finetune": {...}, "adversarial": {...}}), validated."""
    from genil_ros.config import config_from_dict, config_to_dict, load_config
    from genil_ros.paths import config_path
    from genil_ros.policy.checkpoint import resolve_checkpoint_dir

    base = resolve_checkpoint_dir(checkpoint)
    d = config_to_dict(load_config(base / "config.yaml", migrate=True))
    if config:
        other = config_to_dict(load_config(config_path(config)))
        d["finetune"], d["adversarial"] = other["finetune"], other["adversarial"]
    for section, values in (overrides or {}).items():
        d[section].update({k: v for k, v in values.items() if v is not None})
    return config_from_dict(d, source=f"{config or base / 'config.yaml'} (+ command line)")


def run(args) -> int:
    import torch

    from genil_ros.errors import CheckpointError, GenilError
    from genil_ros.finetune.run import FinetuneRun

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = finetune_config(args.checkpoint, args.config, {
        "finetune": {"task": args.task, "iterations": args.iterations, "episodes_per_iter": args.episodes_per_iter,
                     "eval_episodes": args.eval_episodes, "seed": args.seed},
        "adversarial": {"algo": args.algo, "task_reward_weight": args.task_weight,
                        "style_reward_weight": args.style_weight}})
    f = cfg.finetune
    out = Path(args.out)
    if args.resume and not (out / "state" / "state.json").is_file():
        raise CheckpointError(f"{out / 'state'}: nothing to resume from")
    if not args.resume and (out / "state").exists():
        raise GenilError(f"{out}: already holds a run; pass --resume to continue or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    run_ = FinetuneRun(args.checkpoint, cfg, out, style="none" if args.no_style else "online", expert=args.expert,
                       device=args.device)
    rl = run_.rl
    if args.resume:
        run_.resume()
        print(f"resumed from {out / 'state'} at iteration {rl.iteration}")
    style = rl.adversary.name if rl.adversary is not None else "none"
    print(f"fine-tuning {run_.base} on the {f.task} sim: noise-space PPO, reward "
          f"{cfg.adversarial.task_reward_weight:g} * task + "
          f"{cfg.adversarial.style_reward_weight if rl.adversary else 0:g} * {style} style; "
          f"{f.episodes_per_iter} episodes x {f.episode_steps} steps per iteration", flush=True)

    writer = fit(run_, resume=args.resume, progress=not args.no_progress)
    print(f"checkpoint: {out / 'policy'} (the policy node loads it); discriminator: {out / 'discriminator'}")
    if f.eval_episodes:
        from genil_ros.fileio import atomic_write_json
        from genil_ros.finetune.evaluate import evaluate, expert_motion

        expert = expert_motion(run_.adapter, 30, f.episode_steps)
        ev = evaluate(rl.steered, run_.adapter, f.eval_episodes, f.episode_steps, expert=expert,
                      progress=not args.no_progress)
        for k in ("success_rate", "motion_w1", "task_return"):
            writer.add_scalar(f"eval/{k}", ev[k], rl.iteration)
        atomic_write_json(out / "eval.json", ev)
        print(f"eval over {ev['episodes']} episodes: success {ev['success_rate']:.2f}, motion_w1 "
              f"{ev['motion_w1']:.3f}, task return {ev['task_return']:.2f}")
    writer.close()
    return 0


def fit(run_, resume: bool = False, progress: bool = True):
    """Iterate ``run_`` (a FinetuneRun) up to ``finetune.iterations``: TensorBoard, metrics.jsonl, progress
    bar, checkpoints every ``checkpoint_every_iters`` and at the end. Returns the open SummaryWriter."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from genil_ros.adversarial.train import log_iteration

    rl, f, out = run_.rl, run_.cfg.finetune, run_.out
    style = rl.adversary.name if rl.adversary is not None else "none"
    writer = SummaryWriter(str(out / "tb"), purge_step=rl.iteration if resume else None)
    metrics = out / "metrics.jsonl"
    _truncate_metrics(metrics, rl.iteration)
    bar = tqdm(total=f.iterations, initial=min(rl.iteration, f.iterations), unit="it", desc=f"finetune {style}",
               dynamic_ncols=True, disable=not progress, file=sys.stderr)
    try:
        with metrics.open("a", encoding="utf-8") as mf:
            while rl.iteration < f.iterations:
                m = rl.iterate()
                log_iteration(writer, mf, m, rl.iteration, skip=("iteration", "episodes"))
                bar.update(1)
                bar.set_postfix(succ=f"{m['episode/success']:.2f}", r=f"{m['reward/total']:.3f}",
                                acc=f"{m.get('disc/accuracy_before', float('nan')):.2f}")
                if rl.iteration % f.checkpoint_every_iters == 0 and rl.iteration < f.iterations:
                    run_.save()
    finally:
        bar.close()
    run_.save()
    return writer


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Drop metrics lines of iterations after ``iteration`` (written after the checkpoint a resume uses)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text(encoding="utf-8").splitlines()
            if ln.strip() and json.loads(ln).get("iteration", 0) <= iteration]
    from genil_ros.fileio import atomic_write_text

    atomic_write_text(path, "".join(ln + "\n" for ln in keep))
