"""Pick-and-place demonstrations straight from the sim into an episode store, without ROS.

The fast path to the same dataset `genil-ros record-demos --variant pick_place` + `genil-ros dataset build`
make over ROS: the scripted expert (``PickPlaceExpert``, seed ``--expert-seed``) runs episodes
``seed .. seed + episodes - 1`` of ``PickPlaceEnv`` directly; each control step the task's observation
entries (arm joints, gripper finger, object position -- what sim_node publishes) and the command the
expert sends (arm joint targets, gripper target in metres -- what it publishes on the two command topics)
are written as the task's entries, plus ``--hold-steps`` steps after the episode ends. The store has the
task's schema, so `genil-ros train --config pick_place_task.yaml` reads it like a built dataset.
``models/sim_pick_place_dp`` was trained on this store (200 episodes, seeds 0..199).

``--paired``: for each scene seed, two demonstrations, one into each bin (the expert's mode forced, left
first), made by two experts with the same generator (``[expert_seed, scene seed]``: same speed, same release
jitter), so the two episodes' observations are identical until the object is lifted and then part. In the
default store every scene is seen once, with one random bin, so a regression can learn a bin per object
position; in the paired store the same observation is followed by both bins, which is where a policy that
averages the modes fails. ``--episodes`` counts scenes there (the store holds twice as many episodes).

    python scripts/pick_place_direct_demos.py --episodes 200 --out data/pick_place_direct
    python scripts/pick_place_direct_demos.py --paired --episodes 100 --out data/pick_place_paired
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from genil_ros.config import load_config  # noqa: E402
from genil_ros.data.store import EpisodeStore  # noqa: E402
from genil_ros.paths import config_path  # noqa: E402
from genil_ros.sim.binding import SimBinding  # noqa: E402
from genil_ros.sim.pick_place import PickPlaceEnv  # noqa: E402
from genil_ros.sim.pick_place_expert import MODES, PickPlaceExpert  # noqa: E402


def record(env: PickPlaceEnv, binding: SimBinding, expert: PickPlaceExpert, seed: int,
           hold_steps: int, mode: str | None = None) -> tuple[dict, dict]:
    """One episode (the expert's bin drawn at random, or ``mode``): (arrays for the store, its info).
    ``binding`` maps the sim onto the task's entries (the state in layout order, the expert's command as the
    task's action row)."""
    obs, _ = env.reset(seed=seed)
    expert.reset(mode=mode)
    states, actions = [], []
    info: dict = {}
    done = False
    while not done:
        a = expert.act(obs)
        states.append(binding.state(obs, env))
        actions.append(binding.row_of(a))
        obs, _, term, trunc, info = env.step(a)
        done = term or trunc
    for _ in range(hold_steps):
        a = expert.act(obs)
        states.append(binding.state(obs, env))
        actions.append(binding.row_of(a))
        obs, *_ = env.step(a)
    n = len(states)
    arrays = {"state": np.asarray(states, np.float32), "action": np.asarray(actions, np.float32),
              "timestamp": np.arange(n) / env.control_rate_hz}
    return arrays, {"seed": seed, "mode": expert.mode, "success": bool(info.get("success")), "bin": info.get("bin")}


def record_pair(env: PickPlaceEnv, binding: SimBinding, scene: int, expert_seed: int,
                hold_steps: int) -> list[tuple[dict, dict]]:
    """Scene ``scene`` twice, once into each bin: two experts with the same generator, one forced to each
    mode, so everything but the bin (speed, release jitter, the path up to the lift) is the same."""
    return [record(env, binding, PickPlaceExpert(env, seed=[expert_seed, scene]), scene, hold_steps, mode=mode)
            for mode in MODES]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=200, help="episodes (with --paired: scenes, two episodes each)")
    ap.add_argument("--out", required=True, help="episode store directory to write")
    ap.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    ap.add_argument("--expert-seed", type=int, default=0, help="seed of the expert's bin choices")
    ap.add_argument("--hold-steps", type=int, default=5, help="steps recorded after the episode ends")
    ap.add_argument("--paired", action="store_true",
                    help="each scene twice, the expert forced once into each bin (identical observations, both modes)")
    ap.add_argument("--config", default="pick_place_task.yaml", help="the task config whose entries are written")
    args = ap.parse_args(argv)
    cfg = load_config(config_path(args.config))
    env = PickPlaceEnv(render=False)
    binding = SimBinding(cfg.task, env)
    expert = PickPlaceExpert(env, seed=args.expert_seed)
    writer = EpisodeStore.create(args.out, observations=cfg.task.observations, actions=cfg.task.actions,
                                 control_rate_hz=cfg.task.control_rate_hz, overwrite=True,
                                 extra={"made_by": "scripts/pick_place_direct_demos.py", "seed": args.seed,
                                        "expert_seed": args.expert_seed, "hold_steps": args.hold_steps,
                                        "paired": args.paired})
    ok = n = 0
    bins: dict = {}
    with writer:
        for i in range(args.episodes):
            scene = args.seed + i
            episodes = (record_pair(env, binding, scene, args.expert_seed, args.hold_steps) if args.paired
                        else [record(env, binding, expert, scene, args.hold_steps)])
            for arrays, info in episodes:
                ok += info["success"]
                n += 1
                bins[str(info["bin"])] = bins.get(str(info["bin"]), 0) + 1
                writer.add_episode(arrays)
        writer.finalize()
    what = f"{args.episodes} scenes x 2 bins = " if args.paired else ""
    print(f"{args.out}: {what}{n} episodes, {ok} successful, object ends in bin {dict(sorted(bins.items()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
