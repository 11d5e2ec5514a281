"""Multimodality, seen directly: the same scene, different sampling noise -> which mode?

A diffusion policy samples its chunk, so for one scene it may go left on one run and right on another,
as the expert does; a regression (MSE) policy is a function of the observation and always takes the same
path for the same scene. The mode is the side of the post (obstacle) or the bin the object ends in
(pick_place, successes only); the task comes from the checkpoint. Usage:

    python scripts/modes_per_scene.py --checkpoint sim_obstacle_dp --scenes 1000 1001 1002 1003 --runs 8
    python scripts/modes_per_scene.py --checkpoint sim_pick_place_dp
"""

import argparse
import json

from genil_ros.paths import model_path
from genil_ros.policy.checkpoint import load_policy
from genil_ros.sim.evaluate import evaluate_policy


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="sim_obstacle_dp")
    ap.add_argument("--scenes", type=int, nargs="+", default=[1000, 1001, 1002, 1003])
    ap.add_argument("--runs", type=int, default=8, help="noise seeds per scene")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    policy = load_policy(model_path(args.checkpoint), device=args.device)
    out = {}
    for scene in args.scenes:
        runs = [evaluate_policy(policy, episodes=1, seed=scene, batch_size=1, progress=False, generator_seed=g)
                ["results"][0] for g in range(args.runs)]
        modes = [r.get("mode") for r in runs]
        out[scene] = [{"mode": r.get("mode"), "success": r["success"]} for r in runs]
        print(f"scene {scene}: left {modes.count('left')}, right {modes.count('right')}, "
              f"success {sum(r['success'] for r in runs)}/{len(runs)}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
