"""A low-dim pick-and-place dataset straight from the scripted expert, in process (no ROS, no bags).

For experiments that need a trained pick-and-place policy quickly on a CPU (the handover strategies of
issue 14): the scripted expert (``genil_ros.sim.pick_place_expert``) runs ``--episodes`` episodes (seeds
``--seed``..; failed ones are dropped) and every control tick becomes one sample of an episode store in
the layout of ``config/handover_pick_place.yaml``: state = arm joint positions (4), gripper opening (1),
object position (3); action = the expert's 4 arm joint targets + gripper target. The path a user takes
(record over ROS -> bags -> ``genil-ros dataset build``) gives the same samples for the same layout; this
shortcut skips DDS and rosbag2 only.

    python scripts/pick_place_store.py --episodes 200 --out out/ds_pick_place
    genil-ros train --config config/handover_pick_place.yaml --dataset out/ds_pick_place --out runs/pp
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    from genil_ros.config import load_config
    from genil_ros.data.store import EpisodeStore
    from genil_ros.paths import config_path
    from genil_ros.sim.binding import SimBinding
    from genil_ros.sim.pick_place import PickPlaceEnv
    from genil_ros.sim.pick_place_expert import PickPlaceExpert

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0, help="episode i: env seed + i (evaluation uses 1000..)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)

    env = PickPlaceEnv(render=False)
    binding = SimBinding(load_config(config_path("handover_pick_place.yaml")).task, env)  # its state and actions
    expert = PickPlaceExpert(env, seed=args.seed)
    kept, modes = 0, {"left": 0, "right": 0}
    with EpisodeStore.create(args.out, joint_names=[], control_rate_hz=10.0, state_dim=binding.layout.state_dim,
                             action_dim=binding.layout.action_dim,
                             overwrite=args.overwrite, extra={"source": "scripts/pick_place_store.py",
                                                              "expert_seed": args.seed}) as w:
        for i in range(args.episodes):
            obs, _ = env.reset(seed=args.seed + i)
            expert.reset()
            states, actions = [], []
            while True:
                a = expert.act(obs)
                states.append(binding.state(obs, env))
                actions.append(binding.row_of(a))
                obs, _, term, trunc, info = env.step(a)
                if term or trunc:
                    break
            if not info["success"]:
                continue
            n = len(states)
            w.add_episode({"state": np.stack(states), "action": np.stack(actions),
                           "timestamp": np.arange(n) / 10.0}, seed=args.seed + i, mode=expert.mode)
            kept += 1
            modes[expert.mode] += 1
        w.finalize()
    env.close()
    print(f"{args.out}: {kept} of {args.episodes} expert episodes (left {modes['left']}, right {modes['right']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
