#!/usr/bin/env python3
"""Evidence for GAIL / AMP on the bundled arm (state-only ArmEnv, scripted expert demonstrations).

Runs PPO with (a) the task reward only, (b) AMP style + task, (c) GAIL alone (no task reward) for each
seed, evaluates each final policy on fixed episodes, and writes:

    <out>/<run>_s<seed>/metrics.jsonl   training curves (one JSON per PPO iteration)
    <out>/<run>_s<seed>/eval.json       success, task return, motion distances to the expert
    <out>/results.json                  all evals + the expert's own numbers
    <out>/curves.png                    success / discriminator accuracy / style reward vs env steps,
                                        and the final motion distances per run

Usage (CPU; one core is enough):

    OMP_NUM_THREADS=1 nice python scripts/adversarial_experiment.py --out out/adversarial \\
        --variant reach --steps 150000 --seeds 0 1 --runs task amp gail

``--plot-only`` redraws the figure and the table from an existing ``<out>``; ``--table RESULTS_JSON`` prints
the table of a saved ``results.json`` (e.g. ``docs/figures/adversarial_reach_results.json``).
Motion distance: ``motion_w1`` (per-dimension Wasserstein-1 of [q, q' - q] vs the expert, in expert stds)
and ``classifier_accuracy`` (held-out accuracy of a fresh expert-vs-policy classifier; 0.5 = indistinguishable).
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

from genil_ros.fileio import atomic_path, atomic_write_json  # noqa: E402 (after the path line above)

RUNS = {
    # name: (algo, overrides of the adversarial section)
    "task": ("amp", {"task_reward_weight": 1.0, "style_reward_weight": 0.0}),
    "amp": ("amp", {"task_reward_weight": 0.5, "style_reward_weight": 0.5}),
    "gail": ("gail", {"task_reward_weight": 0.0, "style_reward_weight": 1.0, "disc_goal": True,
                      "disc_updates_per_iter": 2, "expert_episodes": 200}),
}

# The shared settings (network sizes, PPO and discriminator hyper-parameters) are the `adversarial:` section
# of config/sim_task.yaml; RUNS only says what differs between the runs.


def make_cfg(variant: str, run: str, seed: int):
    from genil_ros.config import config_from_dict, config_to_dict, load_config
    from genil_ros.paths import config_path

    base = config_to_dict(load_config(config_path("sim_task.yaml")))
    algo, over = RUNS[run]
    base["adversarial"].update(over)
    base["adversarial"].update({"algo": algo, "variant": variant, "seed": seed, "env": "arm"})
    return config_from_dict(base, source=f"experiment:{run}")


def train_one(out: Path, variant: str, run: str, seed: int, steps: int) -> dict:
    from tqdm import tqdm

    from genil_ros.adversarial.train import AdversarialTrainer, scripted_expert_set

    cfg = make_cfg(variant, run, seed)
    expert, log = scripted_expert_set(cfg, cfg.adversarial.expert_episodes, seed=seed + 777)
    tr = AdversarialTrainer(cfg, cfg.adversarial.algo, expert, seed=seed)
    d = out / f"{run}_s{seed}"
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with (d / "metrics.jsonl").open("w") as f, tqdm(total=steps, desc=f"{run} s{seed}", mininterval=10,
                                                     file=sys.stdout) as bar:
        while tr.env_steps < steps:
            m = tr.iterate()
            f.write(json.dumps(m) + "\n")
            f.flush()
            bar.update(m["env_steps"] - bar.n)
    ev = tr.evaluate(cfg.adversarial.eval_episodes)
    ev.update(run=run, seed=seed, variant=variant, env_steps=tr.env_steps, train_seconds=time.time() - t0)
    tr.save(d / "checkpoint")
    atomic_write_json(d / "eval.json", ev)
    print(f"{run} s{seed}: " + ", ".join(f"{k}={v:.3f}" for k, v in ev.items() if isinstance(v, float)), flush=True)
    return ev


def expert_reference(variant: str, seed: int) -> dict:
    """The scripted expert evaluated like a policy (fresh seeds) against its own training demos."""
    from genil_ros.adversarial.envs import ObsSpec
    from genil_ros.adversarial.expert import run_episodes
    from genil_ros.adversarial.metrics import classifier_accuracy, motion_features, motion_stats, motion_w1
    from genil_ros.adversarial.train import make_env, make_expert_actor, scripted_expert_set

    cfg = make_cfg(variant, "task", seed)
    demo, _ = scripted_expert_set(cfg, cfg.adversarial.expert_episodes, seed=seed + 777)
    env = make_env(cfg, 10_000)
    ex = make_expert_actor(cfg, env, 10_000)
    log = run_episodes(env, ex.act, cfg.adversarial.eval_episodes, seed=10_000,
                       max_steps=cfg.adversarial.max_episode_steps, disc_state=ObsSpec().disc_state,
                       reset_actor=ex.reset)
    e = motion_features(demo.episodes)
    p = motion_features(log.episodes)
    return {"run": "expert", "seed": seed, "success_rate": log.success_rate, "task_return": log.mean_return,
            "motion_w1": motion_w1(e, p), "classifier_accuracy": classifier_accuracy(e, p, seed=seed),
            "final_distance": float(np.mean(log.final_distance)), **motion_stats(log.episodes)}


def reevaluate(out: Path, variant: str, run: str, seed: int) -> dict:
    """Evaluate a finished run again from its checkpoint (same fixed evaluation episodes)."""
    from genil_ros.adversarial.train import AdversarialTrainer, scripted_expert_set

    d = out / f"{run}_s{seed}"
    cfg = make_cfg(variant, run, seed)
    expert, _ = scripted_expert_set(cfg, cfg.adversarial.expert_episodes, seed=seed + 777)
    tr = AdversarialTrainer(cfg, cfg.adversarial.algo, expert, seed=seed)
    tr.load(d / "checkpoint")
    old = json.loads((d / "eval.json").read_text()) if (d / "eval.json").is_file() else {}
    ev = tr.evaluate(cfg.adversarial.eval_episodes)
    ev.update(run=run, seed=seed, variant=variant, env_steps=tr.env_steps, train_seconds=old.get("train_seconds"))
    atomic_write_json(d / "eval.json", ev)
    return ev


def save_expert(out: Path, new: list[dict]) -> None:
    """expert.json keeps one entry per seed (runs for other seeds may have written theirs)."""
    p = out / "expert.json"
    old = json.loads(p.read_text()) if p.is_file() else []
    seeds = {e["seed"] for e in new}
    merged = sorted([e for e in old if e["seed"] not in seeds] + new, key=lambda e: e["seed"])
    atomic_write_json(p, merged)


def load_curves(d: Path) -> list[dict]:
    with (d / "metrics.jsonl").open() as f:
        return [json.loads(x) for x in f if x.strip()]


def smooth(y, k=5):
    y = np.asarray(y, float)
    if len(y) < k:
        return y
    return np.convolve(np.pad(y, (k // 2, k - 1 - k // 2), mode="edge"), np.ones(k) / k, mode="valid")


def plot(out: Path, results: list[dict], expert: list[dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"task": "tab:gray", "amp": "tab:blue", "gail": "tab:orange"}
    fig, ax = plt.subplots(1, 4, figsize=(19, 4.2))
    for r in results:
        d = out / f"{r['run']}_s{r['seed']}"
        cur = [m for m in load_curves(d) if "episode/success" in m]
        x = [m["env_steps"] for m in cur]
        c = colors.get(r["run"], "k")
        lab = f"{r['run']} s{r['seed']}"
        ax[0].plot(x, smooth([m["episode/success"] for m in cur]), color=c, alpha=0.8, label=lab)
        ax[1].plot(x, smooth([m["episode/task_return"] for m in cur]), color=c, alpha=0.8, label=lab)
        allm = load_curves(d)
        ax[2].plot([m["env_steps"] for m in allm], smooth([m["disc/accuracy"] for m in allm]), color=c, alpha=0.8,
                   label=lab)
    if expert:
        es = float(np.mean([e["success_rate"] for e in expert]))
        ax[0].axhline(es, color="k", ls="--", label=f"expert {es:.2f}")
    ax[0].set_title("training success (episodes, stochastic policy)")
    ax[1].set_title("training task return per episode")
    ax[2].set_title("discriminator accuracy (its own)")
    for a in ax[:3]:
        a.set_xlabel("env steps")
        a.legend(fontsize=7)
    names = sorted({r["run"] for r in results}, key=list(RUNS).index)
    w1 = [[r["motion_w1"] for r in results if r["run"] == n] for n in names]
    ca = [[r["classifier_accuracy"] for r in results if r["run"] == n] for n in names]
    su = [[r["success_rate"] for r in results if r["run"] == n] for n in names]
    if expert:
        names = names + ["expert"]
        w1.append([e["motion_w1"] for e in expert])
        ca.append([e["classifier_accuracy"] for e in expert])
        su.append([e["success_rate"] for e in expert])
    xs = np.arange(len(names))
    for j, (vals, lab) in enumerate(((su, "eval success"), (ca, "classifier acc. (0.5 = expert-like)"),
                                     (w1, "motion W1 to expert"))):
        ax[3].bar(xs + (j - 1) * 0.27, [np.mean(v) for v in vals], 0.27, label=lab,
                  yerr=[np.std(v) for v in vals])
    ax[3].set_xticks(xs, names)
    ax[3].set_title("final evaluation (deterministic policy)")
    ax[3].legend(fontsize=7)
    fig.tight_layout()
    p = out / "curves.png"
    with atomic_path(p) as tmp:
        fig.savefig(tmp, dpi=110)
    return p


def table(results: list[dict], expert: list[dict]) -> str:
    rows = ["run     seeds  success        final_dist_m   task_return     motion_w1      clf_acc        step_mean      "
            "accel_mean"]
    for n in [*RUNS, "expert"]:
        rs = [r for r in results if r["run"] == n] if n != "expert" else expert
        if not rs:
            continue

        def ms(k):
            v = [r.get(k, float("nan")) for r in rs]
            return f"{np.mean(v):6.3f}±{np.std(v):5.3f}"

        rows.append(f"{n:7s} {len(rs):5d}  {ms('success_rate')}  {ms('final_distance')}  {ms('task_return')}  "
                    f"{ms('motion_w1')}  "
                    f"{ms('classifier_accuracy')}  {ms('step_mean')}  {ms('accel_mean')}")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/adversarial")
    ap.add_argument("--variant", default="reach", choices=["reach", "obstacle"])
    ap.add_argument("--steps", type=int, default=150_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--plot-only", action="store_true", help="redraw the figure and the table from <out>")
    ap.add_argument("--table", metavar="RESULTS_JSON", help="print the table of a results.json and exit")
    ap.add_argument("--eval-only", action="store_true", help="re-evaluate finished runs from their checkpoints")
    args = ap.parse_args()
    if args.table:
        saved = json.loads(Path(args.table).read_text())
        print(table(saved["runs"], saved["expert"]))
        return 0
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.eval_only:
        for seed in args.seeds:
            for run in args.runs:
                if (out / f"{run}_s{seed}" / "checkpoint").is_dir():
                    print(f"{run} s{seed}: {reevaluate(out, args.variant, run, seed)}", flush=True)
        save_expert(out, [expert_reference(args.variant, s) for s in args.seeds])
    elif not args.plot_only:
        for seed in args.seeds:
            for run in args.runs:
                train_one(out, args.variant, run, seed, args.steps)
        save_expert(out, [expert_reference(args.variant, s) for s in args.seeds])
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*_s*/eval.json"))]
    expert = json.loads((out / "expert.json").read_text()) if (out / "expert.json").is_file() else []
    atomic_write_json(out / "results.json", {"runs": results, "expert": expert})
    print(table(results, expert))
    print(f"figure: {plot(out, results, expert)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
