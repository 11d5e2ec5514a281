"""Every genil_ros node under one `ros2 launch`, for the clean-shutdown tests in test/test_ros2_launch.py:
the sim demo (sim_node + policy_node, configured and active), trainer_node watching a rollout folder, and
recorder_node writing /joint_states into a bag.

    ros2 launch test/launch/all_nodes.launch.py expert:=DIR rollout_dir:=DIR config:=YAML bag:=OUT
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def _include(name: str, **arguments) -> IncludeLaunchDescription:
    return IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("genil_ros"), "launch", name])),
        launch_arguments=list(arguments.items()),
    )


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("expert", description="expert bags of the trainer node"),
        DeclareLaunchArgument("rollout_dir", description="folder the trainer node watches"),
        DeclareLaunchArgument("config", description="experiment YAML of the trainer node"),
        DeclareLaunchArgument("bag", description="output bag of the recorder node (must not exist)"),
        _include("sim_demo.launch.py"),
        _include("trainer.launch.py", expert=LaunchConfiguration("expert"),
                 rollout_dir=LaunchConfiguration("rollout_dir"), config=LaunchConfiguration("config")),
        Node(package="genil_ros", executable="recorder_node", name="recorder_node", output="screen",
             arguments=["/joint_states", "-o", LaunchConfiguration("bag")]),
    ])
