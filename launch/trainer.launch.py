"""The GAIL / AMP trainer node: learns a reward from expert bags and rollout bags dropped in a folder.

    ros2 launch genil_ros trainer.launch.py expert:=/data/expert_bags rollout_dir:=/data/rollouts
    ros2 launch genil_ros trainer.launch.py expert:=/data/expert_ds rollout_dir:=/data/rollouts algo:=gail \
        policy_checkpoint:=/models/latest reload_service:=/policy_node/reload

Publishes the learned reward for live transitions on /trainer_node/reward (std_msgs/Float64) and training
metrics on /trainer_node/metrics (std_msgs/String, JSON) and /diagnostics; writes the discriminator
checkpoint atomically; calls the policy node's reload service when the watched policy checkpoint changes.
Empty arguments leave the params file's value alone. Without a ROS 2 install (no `ros2 launch`):
`python -m genil_ros.ros.trainer_node --ros-args --params-file config/trainer_node.yaml -p expert:=...`.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

SHARE = Path(__file__).resolve().parent.parent  # share/genil_ros (install) or the source checkout
DEFAULT_PARAMS = SHARE / "config" / "trainer_node.yaml"

ARGUMENTS = [
    ("params_file", str(DEFAULT_PARAMS), "ROS params file for the trainer node"),
    ("config", "", "experiment YAML; empty = the params file's"),
    ("algo", "", "gail | amp; empty = the params file's (or the config's adversarial.algo)"),
    ("expert", "", "dataset directory or rosbags of the expert; empty = the params file's"),
    ("rollout_dir", "", "folder watched for rollout bags; empty = the params file's"),
    ("checkpoint_dir", "", "discriminator checkpoint directory; empty = the params file's"),
    ("policy_checkpoint", "", "policy checkpoint to watch; empty = the params file's"),
    ("reload_service", "", "policy reload service (std_srvs/Trigger); empty = the params file's"),
    ("namespace", "", "namespace of the node"),
    ("log_level", "info", "the node's log level"),
]


def launch_setup(context, *args, **kwargs):
    params_file = LaunchConfiguration("params_file").perform(context).strip()
    if not Path(params_file).is_file():
        raise FileNotFoundError(f"trainer.launch.py: params_file:={params_file}: no such file")
    overrides = {}
    for name in ("config", "algo", "expert", "rollout_dir", "checkpoint_dir", "policy_checkpoint", "reload_service"):
        value = LaunchConfiguration(name).perform(context).strip()
        if value:
            overrides[name] = value
    node = Node(
        package="genil_ros",
        executable="trainer_node",
        name="trainer_node",
        namespace=LaunchConfiguration("namespace").perform(context).strip(),
        output="screen",
        emulate_tty=True,
        parameters=[params_file, overrides],
        ros_arguments=["--log-level", LaunchConfiguration("log_level").perform(context).strip()],
    )
    return [node]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=desc) for name, default, desc in ARGUMENTS]
        + [OpaqueFunction(function=launch_setup)]
    )
