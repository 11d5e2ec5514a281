"""The closed loop: the policy drives the robot, its rollouts train the GAIL / AMP discriminator, the
discriminator's reward improves the policy, the policy node hot-reloads the improved checkpoint.

    ros2 launch genil_ros loop.launch.py checkpoint:=runs/bc expert:=bags/expert work_dir:=runs/loop
    ros2 launch genil_ros loop.launch.py checkpoint:=runs/bc expert:=bags/expert work_dir:=runs/loop \
        task:=obstacle algo:=gail real_time_factor:=3.0 iterations_per_round:=10

Nodes (all on the sim's clock, which sim_node publishes on /clock):

- ``sim_node`` (``config/sim_node.yaml``, ``variant:=task``): the bundled arm as a ros2_control robot;
- ``policy_node``: the diffusion policy (``checkpoint``), autostarted, position commands on
  ``/forward_position_controller/commands``;
- ``rollout_recorder``: per episode resets the sim and the policy, records ``episode_s`` of joint states and
  commands into ``<work_dir>/rollouts/rollout_NNNN`` (renamed into place when closed);
- ``trainer_node``: expert data (``expert``) vs the rollout bags -> the discriminator in
  ``<work_dir>/discriminator`` (its config: the checkpoint's ``config.yaml``: same joints and topics);
- ``finetune_node``: for each new discriminator, noise-space PPO on the bundled sim with the reward
  task + style, writes ``<work_dir>/policy`` and makes the policy node load it (``~/reload``).

Without a ROS 2 install: `genil-ros ament-prefix` (or a colcon build) makes `ros2 launch` find the package;
test/test_finetune_loop.py runs this file with launch's own API over real DDS.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

SHARE = Path(__file__).resolve().parent.parent
SIM_PARAMS = SHARE / "config" / "sim_node.yaml"
POLICY_PARAMS = SHARE / "config" / "policy_node.yaml"
TRAINER_PARAMS = SHARE / "config" / "trainer_node.yaml"

ARGUMENTS = [
    ("checkpoint", "", "REQUIRED: the behaviour-cloned policy checkpoint (directory)"),
    ("expert", "", "REQUIRED: the expert's rosbags or dataset directory (trainer node)"),
    ("work_dir", "runs/loop", "rollouts/, discriminator/, policy/ (the fine-tuned checkpoint), state/"),
    ("task", "reach", "reach | obstacle: the sim variant (and the fine-tuner's sim task)"),
    ("algo", "", "gail | amp; empty = the checkpoint config's adversarial.algo"),
    ("real_time_factor", "2.0", "sim speed (1.0 = real time)"),
    ("episode_s", "5.0", "seconds (sim time) per rollout episode"),
    ("max_episodes", "0", "rollout episodes to record (0 = until stopped)"),
    ("updates_per_bag", "50", "discriminator steps per rollout bag (trainer node)"),
    ("iterations_per_round", "5", "PPO iterations of the fine-tuner per new discriminator"),
    ("episodes_per_iter", "0", "sim episodes per PPO iteration (0 = the config's finetune.episodes_per_iter)"),
    ("episode_steps", "0", "ticks per sim episode of the fine-tuner (0 = the config's finetune.episode_steps)"),
    ("device", "cpu", "policy node device: auto | cpu | cuda"),
    ("seed", "0", "seed of the sim's episodes, the discriminator and the fine-tuner"),
]


def _arg(context, name: str) -> str:
    return LaunchConfiguration(name).perform(context).strip()


def _number(context, name: str, kind):
    value = _arg(context, name)
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"loop.launch.py: {name}:={value!r} is not a {kind.__name__}") from None


def launch_setup(context, *args, **kwargs):
    task = _arg(context, "task")
    if task not in ("reach", "obstacle"):
        raise ValueError(f"loop.launch.py: task:={task!r} must be reach or obstacle (the sim node's variants)")
    # left empty, checkpoint and expert make the nodes say what is missing (as policy / trainer.launch.py do)
    ckpt = Path(_arg(context, "checkpoint")).absolute() if _arg(context, "checkpoint") else None
    if ckpt is not None and not (ckpt / "meta.json").is_file() and (ckpt / "final" / "meta.json").is_file():
        ckpt = ckpt / "final"  # a training output directory
    if ckpt is not None and not (ckpt / "config.yaml").is_file():
        raise FileNotFoundError(f"loop.launch.py: checkpoint:={ckpt}: no config.yaml (not a policy checkpoint)")
    trainer_config = {"config": str(ckpt / "config.yaml")} if ckpt is not None else {}  # else the params file's
    work = Path(_arg(context, "work_dir")).absolute()
    seed = _number(context, "seed", int)
    sim_time = {"use_sim_time": True}
    nodes = [
        Node(package="genil_ros", executable="sim_node", name="sim_node", output="screen",
             parameters=[str(SIM_PARAMS), {"variant": task, "seed": seed, "use_sim_time": False,
                                           "real_time_factor": _number(context, "real_time_factor", float)}]),
        Node(package="genil_ros", executable="policy_node", name="policy_node", output="screen",
             parameters=[str(POLICY_PARAMS), {**sim_time, "checkpoint": str(ckpt or ""), "autostart": True,
                                              "output_mode": "position", "device": _arg(context, "device"),
                                              "seed": seed}]),
        Node(package="genil_ros", executable="rollout_recorder", name="rollout_recorder", output="screen",
             parameters=[{**sim_time, "rollout_dir": str(work / "rollouts"),
                          "episode_s": _number(context, "episode_s", float),
                          "max_episodes": _number(context, "max_episodes", int)}]),
        Node(package="genil_ros", executable="trainer_node", name="trainer_node", output="screen",
             parameters=[str(TRAINER_PARAMS), {**trainer_config, "algo": _arg(context, "algo"),
                                               "expert": _arg(context, "expert"),
                                               "rollout_dir": str(work / "rollouts"),
                                               "checkpoint_dir": str(work / "discriminator"),
                                               "updates_per_bag": _number(context, "updates_per_bag", int),
                                               "seed": seed, **sim_time}]),
        Node(package="genil_ros", executable="finetune_node", name="finetune_node", output="screen",
             parameters=[{"base_checkpoint": str(ckpt or ""), "work_dir": str(work), "task": task,
                          "discriminator": str(work / "discriminator"), "seed": seed,
                          "iterations_per_round": _number(context, "iterations_per_round", int),
                          "episodes_per_iter": _number(context, "episodes_per_iter", int),
                          "episode_steps": _number(context, "episode_steps", int),
                          "policy_node": "/policy_node"}]),
    ]
    return nodes


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=doc) for name, default, doc in ARGUMENTS]
        + [OpaqueFunction(function=launch_setup)]
    )
