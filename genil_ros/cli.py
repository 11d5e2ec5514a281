"""`genil-ros`: the command line. Each subcommand lives in the module that owns it and is imported
only when used, so `genil-ros --help` is instant and a missing optional part breaks only its command.

A subcommand module provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "record": ("genil_ros.ros.recorder_node", "record ROS 2 topics to a rosbag2 (mcap) without ros2 bag"),
    "record-demos": ("genil_ros.ros.record_demos", "record scripted-expert demonstrations on the bundled sim"),
    "dataset": ("genil_ros.data.build", "build a training dataset from rosbags (dataset build ...)"),
    "train": ("genil_ros.policy.train", "train a diffusion policy (behaviour cloning) on a dataset"),
    "train-adversarial": ("genil_ros.adversarial.train", "GAIL / AMP discriminator + PPO on the bundled sim"),
    "export": ("genil_ros.policy.checkpoint", "deployment copy of a checkpoint (EMA weights, fp16), or --format onnx"),
    "distill": ("genil_ros.policy.distill", "distil a diffusion policy into a 1-2 step consistency sampler"),
    "eval": ("genil_ros.sim.evaluate", "evaluate a policy checkpoint on the bundled sim"),
    "sim": ("genil_ros.ros.sim_node", "run the bundled MuJoCo arm as a ROS 2 robot"),
    "policy": ("genil_ros.ros.policy_cli", "run the diffusion policy node"),
    "demo": ("genil_ros.demo", "the end-to-end demo on the bundled sim"),
    "check-config": ("genil_ros.config", "validate an experiment YAML and print it with all defaults"),
    "ament-prefix": ("genil_ros.ament", "lay out the ament prefix `ros2 launch/run genil_ros` needs (no colcon)"),
    "finetune": ("genil_ros.finetune.cli", "fine-tune a diffusion policy with the GAIL / AMP reward on the sim"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: genil-ros COMMAND [options]   (genil-ros COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {n:<{width}}  {h}" for n, (_, h) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from genil_ros import __version__

        print(f"genil-ros {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        print(f"genil-ros: error: unknown command '{name}'{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"genil-ros {name}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    from genil_ros.errors import GenilError

    try:
        return int(module.run(args) or 0)
    except GenilError as e:
        print(f"genil-ros {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"genil-ros {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
