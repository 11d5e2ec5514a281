"""Pick-and-place demonstrations straight from the sim into an episode store, without ROS.

The fast path to the same dataset `genil-ros record-demos --variant pick_place` + `genil-ros dataset build`
make over ROS: the scripted expert (``PickPlaceExpert``, seed ``--expert-seed``) runs episodes
``seed .. seed + episodes - 1`` of ``PickPlaceEnv`` directly; each control step the task's observation
entries (arm joints, gripper finger, object position -- what sim_node publishes) and the command the
expert sends (arm joint targets, gripper target in metres -- what it publishes on the two command topics)
are written as the task's entries, plus ``--hold-steps`` steps after the episode ends. The store has the
task's schema, so `genil-ros train --config pick_place_task.yaml` reads it like a built dataset.
``models/sim_pick_place_dp`` was trained on this store (200 episodes, seeds 0..199).

    python scripts/pick_place_direct_demos.py --episodes 200 --out data/pick_place_direct
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
from genil_ros.sim.pick_place_expert import PickPlaceExpert  # noqa: E402


def record(env: PickPlaceEnv, binding: SimBinding, expert: PickPlaceExpert, seed: int,
           hold_steps: int) -> tuple[dict, dict]:
    """One episode: (arrays for the store, its info). ``binding`` maps the sim onto the task's entries (the
    state in layout order, the expert's command as the task's action row)."""
    obs, _ = env.reset(seed=seed)
    expert.reset()
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
    return arrays, {"seed": seed, "mode": expert.mode, "success": bool(info.get("success"))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--out", required=True, help="episode store directory to write")
    ap.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    ap.add_argument("--expert-seed", type=int, default=0, help="seed of the expert's bin choices")
    ap.add_argument("--hold-steps", type=int, default=5, help="steps recorded after the episode ends")
    ap.add_argument("--config", default="pick_place_task.yaml", help="the task config whose entries are written")
    args = ap.parse_args(argv)
    cfg = load_config(config_path(args.config))
    env = PickPlaceEnv(render=False)
    binding = SimBinding(cfg.task, env)
    expert = PickPlaceExpert(env, seed=args.expert_seed)
    writer = EpisodeStore.create(args.out, observations=cfg.task.observations, actions=cfg.task.actions,
                                 control_rate_hz=cfg.task.control_rate_hz, overwrite=True,
                                 extra={"made_by": "scripts/pick_place_direct_demos.py", "seed": args.seed,
                                        "expert_seed": args.expert_seed, "hold_steps": args.hold_steps})
    ok = 0
    with writer:
        for i in range(args.episodes):
            arrays, info = record(env, binding, expert, args.seed + i, args.hold_steps)
            ok += info["success"]
            writer.add_episode(arrays)
        writer.finalize()
    print(f"{args.out}: {args.episodes} episodes, {ok} successful")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
