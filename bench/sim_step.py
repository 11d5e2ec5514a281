"""Cost of one control step of the bundled sim tasks, side by side: the obstacle task (``ArmEnv``) and the
pick-and-place task (``PickPlaceEnv``), without and with the 96x96 camera image.

Each task is driven by its scripted expert (so the physics sees real contacts: the grasp, the bins), and
``env.step`` alone is timed (the expert's IK is not). Prints the median over ``--repeats`` runs of ms per
``env.step`` at 10 Hz control (50 physics steps of 2 ms), and pick-and-place's ratio to the obstacle task,
which survives a noisy machine better than the absolute times.

    .venv/bin/python bench/sim_step.py [--steps 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("MUJOCO_GL", "egl")


def time_steps(make_env, make_expert, steps: int) -> float:
    """Seconds per env.step, the expert acting, over ``steps`` steps (new episodes as they end)."""
    env = make_env()
    expert = make_expert(env)
    spent, done, seed = 0.0, 0, 0
    obs, _ = env.reset(seed=seed)
    expert.reset()
    while done < steps:
        action = expert.act(obs)
        t0 = time.perf_counter()
        obs, _, term, trunc, _ = env.step(action)
        spent += time.perf_counter() - t0
        done += 1
        if term or trunc:
            seed += 1
            obs, _ = env.reset(seed=seed)
            expert.reset()
    env.close()
    return spent / steps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from genil_ros.sim.env import ArmEnv
    from genil_ros.sim.expert import ScriptedExpert, _cpu_name
    from genil_ros.sim.pick_place import PickPlaceEnv
    from genil_ros.sim.pick_place_expert import PickPlaceExpert

    tasks = {
        "obstacle": (lambda render: ArmEnv(render=render, seed=0), lambda env: ScriptedExpert(env, seed=0)),
        "pick_place": (lambda render: PickPlaceEnv(render=render, seed=0), lambda env: PickPlaceExpert(env, seed=0)),
    }
    print(f"ms per env.step (10 Hz control, image 96x96), median of {args.repeats} x {args.steps} steps, "
          f"MUJOCO_GL={os.environ['MUJOCO_GL']}, {_cpu_name() or platform.machine()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    results = {}
    for render in (False, True):
        for name, (make_env, make_expert) in tasks.items():
            runs = [time_steps(lambda: make_env(render), make_expert, args.steps) for _ in range(args.repeats)]
            results[name, render] = statistics.median(runs) * 1e3
            print(f"  {name:<11} render={str(render):<5} {results[name, render]:7.3f} ms/step")
        ratio = results["pick_place", render] / results["obstacle", render]
        print(f"  pick_place / obstacle, render={render}: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
