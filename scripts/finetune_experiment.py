#!/usr/bin/env python3
"""Evidence for closing the loop: does the GAIL / AMP reward improve a weak behaviour-cloned diffusion policy?

Per bundled task and seed (low-dim policies; the target / object position is a perception vector):

1. ``--demos`` scripted-expert demonstrations -> an episode store (``finetune/demos.py``);
2. a deliberately weak BC policy: the diffusion policy trained for only ``--bc-steps`` steps;
3. per reward variant (``amp``: 0.5 task + 0.5 AMP style; ``gail``: GAIL's ``-log(1 - D)`` alone):
   - a scorer for guided selection of the BC policy: the variant's discriminator trained on the demos vs
     the BC policy's own rollouts (what the trainer node learns from the robot's rollout bags);
   - fine-tuning: ``--iterations`` iterations of noise-space PPO (``genil-ros finetune``'s code path;
     its discriminator learns against the fine-tuned policy as it goes), expert data = the same demos;
4. evaluation over ``--episodes`` episodes (seeds 1000..) of: BC, BC + guided selection (best of
   ``--samples`` chunks), fine-tuned, fine-tuned + guided (its own final discriminator): success (at any
   tick of a fixed-length episode) and ``motion_w1`` (docs/figures' Wasserstein distance of the arm's
   ``[q, q' - q]`` to the expert's, in expert standard deviations; the expert against itself on other seeds
   is the floor).

Every stage is saved as it finishes (``<out>/<task>/s<seed>/``) and skipped when it is there, so a killed
run continues where it stopped; a seed directory is reused only with the settings that made it
(``settings.json``). CPU seconds and wall time of every stage are recorded (the budget). ``--reuse-bc OUT``
fine-tunes for other ``--iterations`` from the BC stages of another --out; ``--collect`` runs nothing and
tabulates what is saved.

    OMP_NUM_THREADS=1 nice python scripts/finetune_experiment.py --out out/finetune --tasks reach obstacle \\
        --seeds 0 1 2
    OMP_NUM_THREADS=1 nice python scripts/finetune_experiment.py --out out/finetune_long --reuse-bc out/finetune \\
        --tasks obstacle --iterations 120 --seeds 0 1 2
    python scripts/finetune_experiment.py --table docs/figures/finetune_results.json   # reprint the table
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from genil_ros.fileio import atomic_write_json  # noqa: E402 (after the path line above)

VARIANTS = {  # name: (adversarial.algo, task_reward_weight, style_reward_weight)
    "amp": ("amp", 0.5, 0.5),
    "gail": ("gail", 0.0, 1.0),
}
STAGES = ("bc", "bc_guided", "ft", "ft_guided")
STAGE_TITLES = {"bc": "BC", "bc_guided": "BC + guided", "ft": "+ fine-tuning", "ft_guided": "+ fine-tuning + guided"}


class Clock:
    """CPU and wall seconds of a stage."""

    def __enter__(self):
        self.cpu, self.wall = time.process_time(), time.monotonic()
        return self

    def __exit__(self, *exc):
        self.cpu_s = time.process_time() - self.cpu
        self.wall_s = time.monotonic() - self.wall
        return False


def config(task: str, args, variant: str = "amp", seed: int = 0):
    from genil_ros.finetune.demos import lowdim_config

    algo, w_task, w_style = VARIANTS[variant]
    return lowdim_config(task, policy={"down_dims": args.down_dims},
                         finetune={"iterations": args.iterations, "episodes_per_iter": args.episodes_per_iter,
                                   "seed": seed, "eval_episodes": 0},
                         adversarial={"algo": algo, "task_reward_weight": w_task, "style_reward_weight": w_style,
                                      "disc_hidden": [128, 128], "disc_lr": 1.0e-4})


def train_scorer(policy_dir: Path, out: Path, cfg, adapter, demos: Path, args, seed: int) -> Path:
    """The variant's discriminator trained on the demos vs the BC policy's own rollouts."""
    from genil_ros.finetune.rollouts import run_batch
    from genil_ros.finetune.run import expert_episodes, make_discriminator
    from genil_ros.finetune.steering import load_steered

    eps, src = expert_episodes(str(demos), adapter, cfg, cfg.finetune.episode_steps, log=lambda s: None)
    disc = make_discriminator(cfg, adapter, eps, src, seed)
    st = load_steered(policy_dir, device="cpu", seed=seed)
    envs = adapter.make_envs(args.episodes_per_iter, seed)

    def decide(win, imgs):
        return st.sample(st.obs_dict(win, imgs), 1)["chunks"][:, 0].numpy(), {}

    for r in range(args.scorer_rounds):
        base = 20_000_000 + seed * 1_000_003 + r * args.episodes_per_iter
        b = run_batch(adapter, envs, decide, list(range(base, base + args.episodes_per_iter)),
                      cfg.finetune.episode_steps, st.n_obs_steps, st.n_action_steps)
        s, a, s2 = b.transitions()
        disc.update(disc.adversary.features(s, a, s2), args.scorer_updates)
    disc.save(out, "discriminator", rounds=args.scorer_rounds, against=str(policy_dir))
    return out


def evaluate_stage(policy_dir: Path, scorer_dir, adapter, expert, args, seed: int) -> dict:
    from genil_ros.finetune.evaluate import evaluate
    from genil_ros.finetune.guided import ChunkScorer
    from genil_ros.finetune.steering import load_steered

    st = load_steered(policy_dir, device="cpu", seed=seed)
    scorer = None
    if scorer_dir is not None:
        spec = argparse.Namespace(n_obs_steps=st.n_obs_steps, n_action_steps=st.n_action_steps,
                                  state_dim=adapter.state_dim, control_rate_hz=10.0)
        scorer = ChunkScorer.load(scorer_dir, spec)
    res = evaluate(st, adapter, args.episodes, expert=expert, scorer=scorer, num_samples=args.samples)
    res.pop("success", None)
    return res


def run_seed(task: str, seed: int, args, root: Path, expert) -> list[dict]:
    import torch

    from genil_ros.finetune.cli import fit
    from genil_ros.finetune.demos import build_demo_store, train_bc
    from genil_ros.finetune.run import FinetuneRun
    from genil_ros.finetune.tasks import SimAdapter, make_task

    torch.set_num_threads(1)
    d = root / task / f"s{seed}"
    d.mkdir(parents=True, exist_ok=True)
    check_stamp(d, args)
    if args.reuse_bc:
        reuse_bc_stages(Path(args.reuse_bc) / task / f"s{seed}", d, args)
    cfg = config(task, args, seed=seed)
    adapter = SimAdapter(make_task(task), cfg.task)
    rows: list[dict] = []
    budget = _load(d / "budget.json") or {}

    def stage(name, fn):
        if name in budget or args.collect:
            return
        with Clock() as c:
            fn()
        budget[name] = {"cpu_s": round(c.cpu_s, 1), "wall_s": round(c.wall_s, 1)}
        atomic_write_json(d / "budget.json", budget)
        print(f"[{task} s{seed}] {name}: {c.cpu_s / 60:.1f} CPU min, {c.wall_s / 60:.1f} min", flush=True)

    demos = d / "demos"
    stage("demos", lambda: build_demo_store(adapter, args.demos, cfg.finetune.episode_steps, 100_000 * (seed + 1),
                                            demos))
    bc = d / "bc" / "final"
    stage("bc", lambda: train_bc(cfg, demos, d / "bc", args.bc_steps, seed=seed, log=lambda s: None))

    def ev(name, policy_dir, scorer_dir, variant):
        f = d / f"eval_{name}.json"
        if not f.is_file() and not args.collect:
            def go():
                atomic_write_json(f, evaluate_stage(policy_dir, scorer_dir, adapter, expert, args, seed))
            stage(f"eval_{name}", go)
        r = _load(f)
        if r is None:  # --collect: not run yet
            return
        r["eval_seed"] = r.pop("seed")  # the first evaluation episode's seed; "seed" is the training seed
        rows.append({"task": task, "seed": seed, "variant": variant, "stage": name.split("_", 1)[1]
                     if name.startswith(tuple(VARIANTS)) else name, **r})

    ev("bc", bc, None, "all")
    for variant in args.variants:
        vcfg = config(task, args, variant, seed)
        scorer = d / f"scorer_{variant}"
        stage(f"scorer_{variant}", lambda: train_scorer(bc, scorer, vcfg, adapter, demos, args, seed))
        ev(f"{variant}_bc_guided", bc, scorer, variant)
        ft = d / f"ft_{variant}"

        def finetune():
            ft.mkdir(parents=True, exist_ok=True)
            run_ = FinetuneRun(bc, vcfg, ft, style="online", expert=str(demos), log=lambda s: None)
            resume = (ft / "state" / "state.json").is_file()
            if resume:
                run_.resume()
            fit(run_, resume=resume, progress=False).close()

        stage(f"ft_{variant}", finetune)
        ev(f"{variant}_ft", ft / "policy", None, variant)
        ev(f"{variant}_ft_guided", ft / "policy", ft / "discriminator", variant)
    for r in rows:
        r["budget"] = budget
    return rows


STAMPED = ("demos", "bc_steps", "down_dims", "iterations", "episodes_per_iter", "scorer_rounds", "scorer_updates",
           "episodes", "samples")  # the settings a seed directory's saved stages were made with


def check_stamp(d: Path, args) -> None:
    """Saved stages are reused only with the settings they were made with (``settings.json`` in the seed
    directory, written on first use): another setting is an error naming it, never a silent mix."""
    from genil_ros.errors import GenilError

    now = {k: getattr(args, k) for k in STAMPED}
    stamp = _load(d / "settings.json")
    if stamp is None:
        if not args.collect:
            atomic_write_json(d / "settings.json", now, indent=1)
        return
    for k in STAMPED:
        if k in stamp and stamp[k] != now[k]:
            raise GenilError(f"{d}: its saved stages were made with --{k.replace('_', '-')} {stamp[k]}, not {now[k]}; "
                             "use another --out (or delete the stages to redo)")


def reuse_bc_stages(src: Path, d: Path, args) -> None:
    """Fine-tuning for other ``--iterations`` from the same weak BC policy: the stages before fine-tuning
    (demos, BC, the BC scorers and their evaluations) linked from ``src``, another --out made with the same
    settings otherwise; their budget entries say ``reused_from`` and count 0 CPU here."""
    import shutil

    from genil_ros.errors import GenilError

    stamp = _load(src / "settings.json")
    if stamp is None:
        raise GenilError(f"{src}: no settings.json (run it with this script first)")
    for k in STAMPED:
        if k != "iterations" and stamp.get(k) != getattr(args, k):
            raise GenilError(f"{src}: made with --{k.replace('_', '-')} {stamp.get(k)}, not {getattr(args, k)}")
    theirs, budget = _load(src / "budget.json") or {}, _load(d / "budget.json") or {}
    names = ["demos", "bc", "eval_bc"] + [n for v in args.variants for n in (f"scorer_{v}", f"eval_{v}_bc_guided")]
    for name in names:
        if name in budget or name not in theirs:
            continue
        what = f"{name}.json" if name.startswith("eval_") else name
        if (src / what).is_dir():
            shutil.copytree(src / what, d / what, copy_function=os.link, dirs_exist_ok=True)
        else:
            os.link(src / what, d / what)
        budget[name] = {"cpu_s": 0.0, "wall_s": 0.0, "reused_from": str(src)}
    atomic_write_json(d / "budget.json", budget)


def _load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def expert_reference(task: str, args) -> tuple:
    """The expert's own episodes (the motion reference) and the expert evaluated like a policy."""
    from genil_ros.adversarial.metrics import motion_features, motion_w1
    from genil_ros.finetune.evaluate import EVAL_SEED, expert_motion
    from genil_ros.finetune.tasks import SimAdapter, make_task

    cfg = config(task, args)
    adapter = SimAdapter(make_task(task), cfg.task)
    ref = expert_motion(adapter, args.expert_episodes, cfg.finetune.episode_steps)
    own = expert_motion(adapter, min(args.episodes, 50), cfg.finetune.episode_steps, seed=EVAL_SEED)
    row = {"task": task, "success_rate": float(own.success.mean()),
           "motion_w1": motion_w1(motion_features(ref.motion_episodes()), motion_features(own.motion_episodes()))}
    return ref, row


# --------------------------------------------------------------------------- table


def _cells(rows, task, variant, seed=None):
    out = []
    for stage in STAGES:
        sel = [r for r in rows if r["task"] == task and r["stage"] == stage and r["variant"] in (variant, "all")
               and (seed is None or r["seed"] == seed)]
        out.append(sel)
    return out


def table(results: dict) -> str:
    rows, lines = results["rows"], []
    s = results["settings"]
    names = {"amp": "task + AMP style", "gail": "GAIL alone"}
    lines.append(f"success rate (mean +- sd over seeds {s['seeds']}) / motion_w1 to the expert, {s['episodes']} "
                 f"episodes per cell; weak BC = {s['bc_steps']} training steps on {s['demos']} demos; fine-tuning "
                 f"{s['iterations']} iterations x {s['episodes_per_iter']} episodes; guided = best of {s['samples']}; "
                 f"U-Net {s.get('down_dims')}")
    head = f"| task | reward | {' | '.join(STAGE_TITLES[k] for k in STAGES)} |"
    lines += [head, "|" + " --- |" * (2 + len(STAGES))]
    for task in s["tasks"]:
        for variant in s["variants"]:
            cells = []
            for sel in _cells(rows, task, variant):
                if not sel:
                    cells.append("-")
                    continue
                succ = np.array([r["success_rate"] for r in sel])
                w1 = np.mean([r["motion_w1"] for r in sel])
                partial = f" (n={len(sel)})" if len(sel) != len(s["seeds"]) else ""
                cells.append(f"{succ.mean():.2f} +- {succ.std():.2f} / {w1:.2f}{partial}")
            lines.append(f"| {task} | {names[variant]} | {' | '.join(cells)} |")
    for e in results.get("expert", []):
        lines.append(f"| {e['task']} | scripted expert | {e['success_rate']:.2f} / {e['motion_w1']:.2f} "
                     f"(against its other episodes) | | | |")
    titles = " | ".join(STAGE_TITLES[k] for k in STAGES)
    lines += ["", "per seed: success / motion_w1", f"| task | reward | seed | {titles} |",
              "|" + " --- |" * (3 + len(STAGES))]
    for task in s["tasks"]:
        for variant in s["variants"]:
            for seed in s["seeds"]:
                cells = [f"{sel[0]['success_rate']:.2f} / {sel[0]['motion_w1']:.2f}" if sel else "-"
                         for sel in _cells(rows, task, variant, seed)]
                if any(c != "-" for c in cells):
                    lines.append(f"| {task} | {names[variant]} | {seed} | {' | '.join(cells)} |")
    b = results.get("budget")
    if b:
        lines.append("CPU per seed and task, mean (2 shared cores, 1 torch thread, niced): " + ", ".join(
            f"{k} {v / 60:.1f} CPU min" for k, v in b.items()))
    if s.get("reuse_bc"):
        lines.append(f"BC, its scorers and their evaluations reused from {s['reuse_bc']} (0 CPU here: their CPU is "
                     "in that run's table)")
    t = results.get("budget_total")
    if t:
        lines.append(f"CPU of every stage in this table together: {t['cpu_min']:.1f} CPU min "
                     f"({t['wall_min']:.0f} min wall on the shared machine)")
    return "\n".join(lines)


def plot_curves(root: Path, tasks, variants, seeds, path: Path) -> Path:
    """Training success (the iteration's own episodes) of every fine-tuning run, per task and reward."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genil_ros.fileio import atomic_path

    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for variant, color in zip(variants, ("tab:blue", "tab:red")):
            for seed in seeds:
                f = root / task / f"s{seed}" / f"ft_{variant}" / "metrics.jsonl"
                if not f.is_file():
                    continue
                m = [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]
                ax.plot([r["iteration"] for r in m], [r["episode/success"] for r in m], color=color, alpha=0.7,
                        label={"amp": "task + AMP style", "gail": "GAIL alone"}[variant] if seed == seeds[0] else None)
        ax.set_title(f"{task}: fine-tuning from weak BC")
        ax.set_xlabel("iteration (32 episodes each)")
        ax.set_ylabel("success of the iteration's episodes")
        ax.set_ylim(0, 1)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return path


def summarise_budget(rows: list[dict]) -> tuple[dict, dict]:
    """(mean CPU seconds per kind of stage, the CPU / wall minutes of every stage of these rows together)."""
    per, every = {}, {}
    for r in rows:
        for k, v in (r.get("budget") or {}).items():
            per.setdefault(k.split("_")[0] if k.startswith(("eval", "scorer")) else k, {})[
                (r["task"], r["seed"], k)] = v["cpu_s"]
            every[(r["task"], r["seed"], k)] = v
    total = {"cpu_min": sum(v["cpu_s"] for v in every.values()) / 60,
             "wall_min": sum(v["wall_s"] for v in every.values()) / 60}
    return {k: float(np.mean(list(v.values()))) for k, v in per.items()}, total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out/finetune")
    ap.add_argument("--tasks", nargs="+", default=["reach", "obstacle"], choices=["reach", "obstacle", "pick_place"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--demos", type=int, default=20, help="scripted-expert demonstrations per seed")
    ap.add_argument("--bc-steps", type=int, default=400, help="BC training steps (few: a weak policy)")
    ap.add_argument("--down-dims", type=int, nargs="+", default=[32, 64, 128], help="the policy's U-Net channels")
    ap.add_argument("--iterations", type=int, default=40, help="fine-tuning iterations")
    ap.add_argument("--episodes-per-iter", type=int, default=32)
    ap.add_argument("--scorer-rounds", type=int, default=4, help="BC rollout batches the BC scorer learns from")
    ap.add_argument("--scorer-updates", type=int, default=50, help="discriminator steps per batch")
    ap.add_argument("--episodes", type=int, default=100, help="evaluation episodes per cell")
    ap.add_argument("--samples", type=int, default=8, help="K of guided selection")
    ap.add_argument("--expert-episodes", type=int, default=50, help="expert episodes of the motion reference")
    ap.add_argument("--reuse-bc", metavar="OUT",
                    help="another --out with the same settings: its stages before fine-tuning are reused (linked)")
    ap.add_argument("--collect", action="store_true",
                    help="run nothing: the table of the stages saved under --out (missing cells marked)")
    ap.add_argument("--table", help="print the table of a saved results.json and exit")
    ap.add_argument("--json", help="also write results.json here (e.g. docs/figures/finetune_results.json)")
    ap.add_argument("--plot", help="write the fine-tuning curves here (a .png)")
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    os.environ.setdefault("MUJOCO_GL", "egl")
    root = Path(args.out)
    rows, experts = [], []
    for task in args.tasks:
        ref, erow = expert_reference(task, args)
        experts.append(erow)
        for seed in args.seeds:
            rows += run_seed(task, seed, args, root, ref)
            per_stage, total = summarise_budget(rows)
            settings = {k: v for k, v in vars(args).items() if k not in ("table", "json", "out", "plot", "collect")}
            results = {"settings": settings, "rows": rows, "expert": experts, "budget": per_stage,
                       "budget_total": total}
            atomic_write_json(root / "results.json", results, indent=1)
            if args.json:
                atomic_write_json(args.json, results, indent=1)
            print(table(results), flush=True)
    if args.plot:
        print(f"curves: {plot_curves(root, args.tasks, args.variants, args.seeds, Path(args.plot))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
