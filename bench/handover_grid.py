"""Chunk handover strategies against injected inference delay: success and boundary jumps, per task.

Runs the faster-than-real-time delayed evaluator (genil_ros/sim/latency_eval.py: the chunk of the window
ending at tick k is usable at tick k + d, d = delay / period) for every strategy x delay, episodes seeded
1000.., and writes one JSON with a row per cell (incrementally: a killed run resumes, skipping the cells it
has). A strategy is ``name[:key=value,...][@checkpoint]``; keys ``w`` (ensemble weight), ``g`` (inpainting
guidance), ``soft`` (inpainting soft ticks); ``@checkpoint`` evaluates another checkpoint (e.g. one
trained with ``policy.prefix_conditioning``) under that row.

    python bench/handover_grid.py --checkpoint sim_obstacle_dp --json docs/figures/handover_obstacle.json \\
        --strategies receding_horizon,temporal_ensemble,inpaint:g=0,inpaint:g=5 --delays-ms 0,100,200,300,500
    python bench/handover_grid.py --table docs/figures/handover_obstacle.json     # reprint the table
    python bench/handover_grid.py --figure docs/figures/handover_vs_delay.png \\
        docs/figures/handover_obstacle.json docs/figures/handover_pick_place.json  # lines per strategy
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from genil_ros.policy.threads import set_process_env  # noqa: E402  (before torch is imported)


def parse_strategy(spec: str) -> tuple[str, dict, str]:
    """'inpaint:g=0,soft=2@runs/pc' -> ('inpaint', {'guidance': 0.0, 'soft_ticks': 2}, 'runs/pc')."""
    body, _, ckpt = spec.partition("@")
    name, _, opts = body.partition(":")
    keys = {"w": ("ensemble_weight", float), "g": ("guidance", float), "soft": ("soft_ticks", int)}
    kw = {}
    for item in filter(None, opts.split(",")):
        k, _, v = item.partition("=")
        if k not in keys:
            raise SystemExit(f"strategy {spec!r}: unknown option {k!r} (w, g, soft)")
        kw[keys[k][0]] = keys[k][1](v)
    return name, kw, ckpt


def split_specs(text: str) -> list[str]:
    """'receding_horizon,inpaint:g=0,soft=4' -> ['receding_horizon', 'inpaint:g=0,soft=4'] (a piece with '='
    and no ':' is one more option of the strategy before it)."""
    specs: list[str] = []
    for piece in filter(None, text.split(",")):
        if specs and "=" in piece and ":" not in piece.partition("@")[0]:
            specs[-1] += "," + piece
        else:
            specs.append(piece)
    return specs


def label(spec: str) -> str:
    body, _, ckpt = spec.partition("@")
    return body + (f" ({Path(ckpt).name})" if ckpt else "")


def load(ckpt: str, backend: str, threads):
    """The policy with the ONNX Runtime backend when asked and possible (exported under .bench/onnx/)."""
    from genil_ros.errors import CheckpointError
    from genil_ros.paths import model_path
    from genil_ros.policy.backends import make_backend
    from genil_ros.policy.checkpoint import load_policy

    path = model_path(ckpt)
    policy = load_policy(path, device="cpu")
    if backend == "onnxruntime" and not policy.prefix_conditioning:  # the export takes A input channels
        from genil_ros.policy.onnx_export import export_onnx, read_onnx_export

        onnx_dir = ROOT / ".bench" / "onnx" / Path(path).name
        try:
            read_onnx_export(policy, onnx_dir)
        except CheckpointError:
            export_onnx(path, onnx_dir)
        policy.set_backend(make_backend("onnxruntime", policy, threads=threads, onnx_dir=onnx_dir))
    else:
        policy.set_backend(make_backend("torch", policy, threads=threads))
    return policy


def run_grid(args) -> int:
    from genil_ros.control.handover import make_handover
    from genil_ros.fileio import atomic_write_json
    from genil_ros.sim.latency_eval import delay_ticks, evaluate_with_delay

    sys.path.insert(0, str(ROOT / "bench"))
    from inference import machine

    plan = set_process_env(args.threads)
    out = Path(args.json)
    doc = json.loads(out.read_text()) if out.exists() else {"rows": []}
    commands = doc.setdefault("commands", [doc.pop("command")] if "command" in doc else [])
    command = "python bench/handover_grid.py " + " ".join(sys.argv[1:])
    if command not in commands:  # every run that filled the file (each row also has its episodes)
        commands.append(command)
    doc.update(machine=machine(), checkpoint=args.checkpoint, seed=args.seed)
    have = {(r["label"], r["delay_ms"]) for r in doc["rows"]}
    policies: dict = {}
    for spec in split_specs(args.strategies):
        name, kw, ckpt = parse_strategy(spec)
        ckpt = ckpt or args.checkpoint
        for ms in [float(x) for x in args.delays_ms.split(",")]:
            if (label(spec), ms) in have:
                continue
            if ckpt not in policies:
                policies[ckpt] = load(ckpt, args.backend, plan)
            policy = policies[ckpt]
            strategy = make_handover(name, **kw)
            d = delay_ticks(ms, policy.cfg.task.control_rate_hz)
            t0 = time.perf_counter()
            res = evaluate_with_delay(policy, strategy, d, args.episodes, args.seed, args.batch_size,
                                      variant=args.variant, trace_episodes=args.trace, progress=not args.quiet)
            res.pop("results")
            res.update(label=label(spec), spec=spec, checkpoint=ckpt, delay_ms=ms, wall_s=time.perf_counter() - t0,
                       backend=policy.backend.describe())
            doc["rows"].append(res)
            atomic_write_json(out, doc)
            print(row_line(res), flush=True)
    print_table(doc)
    return 0


def row_line(r: dict) -> str:
    c = r["smoothness"]["commanded"]["jump"]
    m = r["smoothness"]["measured"]["jump"]
    extra = "".join(f"  {k.replace('_rate', '')} {r[k]:.2f}" for k in ("collided_rate", "dropped_rate") if k in r)
    return (f"{r['label']:<34} {r['delay_ms']:>5.0f} ms  success {r['success_rate']:.2f}{extra}  "
            f"handover jump p50 {c['handover_p50']:.3f} p99 {c['handover_p99']:.3f} max {c['handover_max']:.3f} | "
            f"inside p99 {c['inside_p99']:.3f} max {c['inside_max']:.3f}  (measured: handover p99 "
            f"{m['handover_p99']:.3f}, inside max {m['inside_max']:.3f})  [{r.get('wall_s', 0):.0f} s]")


def print_table(doc: dict) -> None:
    rows = doc["rows"]
    if not rows:
        print("no rows")
        return
    commands = doc.get("commands") or [doc.get("command", "")]
    print(f"\n{doc.get('machine', '')}\ncheckpoint {doc.get('checkpoint')}; episodes seeded {doc.get('seed', 1000)}..; "
          f"task {rows[0]['task']}\n" + "\n".join(f"`{c}`" for c in commands) + "\n")
    if doc.get("note"):
        print(doc["note"] + "\n")
    print("commanded joint trajectory, largest joint step per tick (rad): at handovers p50 / p99 / max, inside chunks "
          "max; keeps = success / success at 0 ms; the goal at 300 ms: keeps >= 0.90, handover jumps <= inside max\n")
    print("| strategy | delay ms | episodes | success | keeps | handover jump p50 | p99 | max | inside max "
          "| p99 <= inside max | max <= inside max |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    base = {r["label"]: r["success_rate"] for r in rows if r["delay_ms"] == 0}

    def check(v: float, inside: float) -> str:
        return "-" if inside != inside else "yes" if v <= inside else "no"  # nan: no tick inside a chunk

    for r in sorted(rows, key=lambda r: (r["label"], r["delay_ms"])):
        c = r["smoothness"]["commanded"]["jump"]
        b = base.get(r["label"])
        keeps = f"{r['success_rate'] / b:.2f}" if b else "-"
        print(f"| {r['label']} | {r['delay_ms']:.0f} | {r['episodes']} | {r['success_rate']:.2f} | {keeps} | "
              f"{c['handover_p50']:.3f} | {c['handover_p99']:.3f} | {c['handover_max']:.3f} | {c['inside_max']:.3f} | "
              f"{check(c['handover_p99'], c['inside_max'])} | {check(c['handover_max'], c['inside_max'])} |")


def figure(path: str, docs: list[str]) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loaded = [json.loads(Path(p).read_text()) for p in docs]
    colour = {lab: f"C{i}" for i, lab in enumerate(sorted({r["label"] for d in loaded for r in d["rows"]}))}
    fig, axes = plt.subplots(len(loaded), 2, figsize=(11, 3.6 * len(loaded)), squeeze=False)
    for (ax_s, ax_j), doc in zip(axes, loaded):
        task = doc.get("title") or f"{doc['rows'][0]['task']}, {doc.get('checkpoint')}"
        for lab in sorted({r["label"] for r in doc["rows"]}):
            rs = sorted((r for r in doc["rows"] if r["label"] == lab), key=lambda r: r["delay_ms"])
            x = [r["delay_ms"] for r in rs]
            ax_s.plot(x, [r["success_rate"] for r in rs], "o-", color=colour[lab], label=lab)
            ax_j.plot(x, [r["smoothness"]["commanded"]["jump"]["handover_p99"] for r in rs], "o-", color=colour[lab],
                      label=lab)
        import numpy as np

        inside = float(np.nanmax([r["smoothness"]["commanded"]["jump"]["inside_max"] for r in doc["rows"]]))
        ax_j.axhline(inside, color="grey", ls=":", lw=1, label="largest jump inside chunks (any cell)")
        n = sorted({r["episodes"] for r in doc["rows"]})
        ax_s.set(title=f"{task}\nsuccess ({'/'.join(map(str, n))} episodes per point)", xlabel="injected delay (ms)",
                 ylabel="success rate", ylim=(-0.02, 1.02), xlim=(-20, 520))
        ax_j.set(title=f"{task}\nhandover jump p99 (commanded)", xlabel="injected delay (ms)",
                 ylabel="rad per tick", xlim=(-20, 520))
        ax_s.title.set_fontsize(10)
        ax_j.title.set_fontsize(10)
        ax_s.grid(alpha=0.3)
        ax_j.grid(alpha=0.3)
        ax_j.legend(fontsize=7)
    fig.tight_layout()
    from genil_ros.fileio import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    print(f"wrote {path}")
    return 0


def chunk_plot(path: str, doc_path: str, labels: str, delay_ms: float, joint: int = 0) -> int:
    """Each chunk's predicted entries (thin) against the executed commands (thick) of one traced episode,
    one panel per strategy (``labels`` comma-separated), the same seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    doc = json.loads(Path(doc_path).read_text())
    labs = split_specs(labels)
    fig, axes = plt.subplots(len(labs), 1, figsize=(10, 3.4 * len(labs)), squeeze=False)
    for ax, lab in zip(axes[:, 0], labs):
        rows = [r for r in doc["rows"] if r["label"] == lab and r["delay_ms"] == delay_ms and r.get("traces")]
        if not rows:
            raise SystemExit(f"{doc_path}: no traced row {lab!r} at {delay_ms:g} ms")
        tr = rows[0]["traces"][0]
        cmd = np.array(tr["commanded"])
        src = np.array(tr["source"])
        arm, first = tr["arm"], tr["n_obs_steps"] - 1
        for k, (win, arr, chunk) in enumerate(tr["chunks"]):
            c = np.array(chunk)[:, arm[joint]]
            ticks = win - first + np.arange(len(c))
            ax.plot(ticks, c, "-", lw=0.8, alpha=0.6, color=f"C{k % 10}")
            if arr - win + first < len(c):
                ax.plot([arr], [c[arr - win + first]], "|", color=f"C{k % 10}", ms=12)
        ax.plot(np.arange(len(cmd)), cmd[:, joint], "k-", lw=2.2, label="executed command")
        for h in np.flatnonzero(src[1:] != src[:-1]) + 1:
            ax.axvline(h, color="grey", lw=0.5, ls=":")
        jump = rows[0]["smoothness"]["commanded"]["jump"]
        ax.set(ylabel=f"joint {joint} target (rad)",
               title=f"{rows[0]['task']}, {lab}, {delay_ms:g} ms delay (seed {tr['seed']}): chunks (thin, bar = "
                     f"arrival) vs executed; all episodes: handover jump p99 {jump['handover_p99']:.2f} rad")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel("control tick (10 Hz)")
    fig.tight_layout()
    from genil_ros.fileio import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="sim_obstacle_dp")
    ap.add_argument("--strategies", default="receding_horizon,temporal_ensemble,inpaint:g=0,inpaint:g=5")
    ap.add_argument("--delays-ms", default="0,100,200,300,500")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--variant", default=None, help="obstacle | reach (arm task)")
    ap.add_argument("--backend", choices=["torch", "onnxruntime"], default="onnxruntime")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trace", type=int, default=1, help="episodes per cell whose trajectories are kept")
    ap.add_argument("--json", help="results file (rows are added; existing cells are skipped)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--table", help="reprint the table of this results file")
    ap.add_argument("--figure", nargs="+", metavar=("PNG", "JSON"), help="success / jump vs delay from results files")
    ap.add_argument("--chunk-plot", nargs=4, metavar=("PNG", "JSON", "LABELS", "DELAY_MS"),
                    help="chunks vs executed of the traced episode of the cells of these strategies (a,b,...)")
    args = ap.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    if args.table:
        print_table(json.loads(Path(args.table).read_text()))
        return 0
    if args.figure:
        return figure(args.figure[0], args.figure[1:])
    if args.chunk_plot:
        png, doc, lab, ms = args.chunk_plot
        return chunk_plot(png, doc, lab, float(ms))
    if not args.json:
        ap.error("--json is required to run the grid")
    return run_grid(args)


if __name__ == "__main__":
    sys.exit(main())
