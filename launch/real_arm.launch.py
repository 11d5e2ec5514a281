"""The policy node on a real arm driven by ros2_control.

    ros2 launch genil_ros real_arm.launch.py checkpoint:=/path/to/ckpt                      # UR5e example
    ros2 launch genil_ros real_arm.launch.py params_file:=my_arm.yaml checkpoint:=... controller:=position

Your robot's own bringup - its ros2_control hardware interface, controller_manager,
joint_state_broadcaster and the command controller - is yours to start first (for a UR:
`ros2 launch ur_robot_driver ur_control.launch.py ur_type:=ur5e robot_ip:=...`, which also starts
scaled_joint_trajectory_controller). This file starts only the policy node, with
config/real_arm_policy.yaml by default (joint limits, step limit, staleness, topics - all commented there).

Safety default: the node is configured (checkpoint loaded, warmed up) but NOT activated, so nothing moves
until you run `ros2 lifecycle set /policy_node activate`; `... deactivate` stops commanding at once.
activate:=true activates it straight after configuring.

controller:=trajectory publishes trajectory_msgs/JointTrajectory to the params file's trajectory_topic
(override with trajectory_topic:=/my_controller/joint_trajectory); controller:=position publishes
std_msgs/Float64MultiArray to position_topic (a forward_command_controller / JointGroupPositionController).
Make sure the matching controller is the active one (`ros2 control list_controllers`).
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, LogInfo, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

SHARE = Path(__file__).resolve().parent.parent
POLICY_LAUNCH = SHARE / "launch" / "policy.launch.py"
DEFAULT_PARAMS = SHARE / "config" / "real_arm_policy.yaml"

CONTROLLERS = {"trajectory": "trajectory", "position": "position"}  # controller:= -> policy output_mode

ARGUMENTS = [
    ("params_file", str(DEFAULT_PARAMS), "policy node params for your arm (copy and edit config/real_arm_policy.yaml)"),
    ("checkpoint", "", "checkpoint directory; empty = the params file's `checkpoint`"),
    ("controller", "trajectory", "trajectory (joint_trajectory_controller) | position (forward position controller)"),
    ("trajectory_topic", "", "JointTrajectory command topic; empty = the params file's"),
    ("position_topic", "", "Float64MultiArray command topic; empty = the params file's"),
    ("joint_states_topic", "", "JointState topic; empty = the params file's"),
    ("camera_topics", "", "comma-separated camera topics in the checkpoint's camera order; empty = the params file's"),
    ("namespace", "", "namespace of the policy node"),
    ("device", "", "auto | cpu | cuda; empty = the params file's"),
    ("activate", "false", "activate right after configuring (true) or wait for `ros2 lifecycle set ... activate`"),
    ("use_sim_time", "false", "true only when the 'real' arm is a simulator publishing /clock"),
    ("log_level", "info", "the policy node's log level"),
]


def launch_setup(context, *args, **kwargs):
    controller = LaunchConfiguration("controller").perform(context).strip()
    if controller not in CONTROLLERS:
        raise ValueError(f"real_arm.launch.py: controller:={controller!r} must be one of {sorted(CONTROLLERS)}")
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(POLICY_LAUNCH)),
        launch_arguments=[
            ("params_file", LaunchConfiguration("params_file")),
            ("checkpoint", LaunchConfiguration("checkpoint")),
            ("output_mode", CONTROLLERS[controller]),
            ("trajectory_topic", LaunchConfiguration("trajectory_topic")),
            ("position_topic", LaunchConfiguration("position_topic")),
            ("joint_states_topic", LaunchConfiguration("joint_states_topic")),
            ("camera_topics", LaunchConfiguration("camera_topics")),
            ("namespace", LaunchConfiguration("namespace")),
            ("device", LaunchConfiguration("device")),
            ("use_sim_time", LaunchConfiguration("use_sim_time")),
            ("log_level", LaunchConfiguration("log_level")),
            ("configure", "true"),
            ("activate", LaunchConfiguration("activate")),
        ],
    )
    return [
        LogInfo(msg=f"genil_ros real arm: policy -> {controller} controller; params "
                    f"{LaunchConfiguration('params_file').perform(context)}"),
        include,
    ]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=doc) for name, default, doc in ARGUMENTS]
        + [OpaqueFunction(function=launch_setup)]
    )
