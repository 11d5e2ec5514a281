"""Gazebo (gz-sim) demo: the genil_arm in its world, ros2_control, the camera bridge and the policy node.

    ros2 launch genil_ros gazebo.launch.py checkpoint:=/path/to/ckpt
    ros2 launch genil_ros gazebo.launch.py controller:=position gui:=false policy:=false

Starts, in this order:
  1. gz-sim (ros_gz_sim's gz_sim.launch.py) with config/gazebo/genil_arm_world.sdf - table, target, post;
  2. robot_state_publisher with config/gazebo/genil_arm.urdf.xacro (expanded by xacro), which carries the
     ros2_control tags and the gz_ros2_control plugin (loading config/gazebo_controllers.yaml);
  3. ros_gz_sim `create`, spawning the arm from /robot_description;
  4. ros_gz_bridge parameter_bridge with config/gazebo_bridge.yaml: /clock and the camera
     (/camera/image_raw, /camera/camera_info);
  5. once the arm is spawned: the joint_state_broadcaster spawner, then the command controller -
     controller:=trajectory -> joint_trajectory_controller (forward_position_controller loaded inactive),
     controller:=position   -> forward_position_controller (joint_trajectory_controller loaded inactive);
  6. once the controllers are active: policy.launch.py with use_sim_time:=true, output_mode matching the
     controller, configured and activated through lifecycle events (policy:=false leaves it out, e.g.
     to record demonstrations with your own teleop).

Needs a ROS 2 install with ros_gz (ros_gz_sim, ros_gz_bridge), gz_ros2_control, ros2_controllers,
robot_state_publisher and xacro - e.g. `sudo apt install ros-$ROS_DISTRO-ros-gz ros-$ROS_DISTRO-gz-ros2-control
ros-$ROS_DISTRO-ros2-controllers ros-$ROS_DISTRO-xacro`.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    IncludeLaunchDescription,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.event_handlers import OnProcessExit
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import Command, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

SHARE = Path(__file__).resolve().parent.parent
CONFIG = SHARE / "config"
POLICY_LAUNCH = SHARE / "launch" / "policy.launch.py"
ROBOT_XACRO = CONFIG / "gazebo" / "genil_arm.urdf.xacro"
WORLD_SDF = CONFIG / "gazebo" / "genil_arm_world.sdf"
POLICY_PARAMS = CONFIG / "gazebo" / "policy_node.yaml"
BRIDGE_CONFIG = CONFIG / "gazebo_bridge.yaml"
CONTROLLERS_CONFIG = CONFIG / "gazebo_controllers.yaml"

# controller:= -> (controller to activate, controller to load inactive, policy output_mode)
CONTROLLERS = {
    "trajectory": ("joint_trajectory_controller", "forward_position_controller", "trajectory"),
    "position": ("forward_position_controller", "joint_trajectory_controller", "position"),
}
TRUE = ("true", "1", "yes", "on")
FALSE = ("false", "0", "no", "off")

ARGUMENTS = [
    ("world", str(WORLD_SDF), "gz-sim world (SDF)"),
    ("gui", "true", "show the Gazebo GUI (false: server only, headless camera rendering)"),
    ("robot_name", "genil_arm", "name of the spawned model"),
    ("controller", "trajectory", "trajectory (joint_trajectory_controller) | position (forward_position_controller)"),
    ("policy", "true", "start the policy node"),
    ("params_file", str(POLICY_PARAMS), "policy node params"),
    ("checkpoint", "", "checkpoint directory or shipped model name; empty = the params file's `checkpoint`"),
    ("device", "", "auto | cpu | cuda; empty = the params file's"),
    ("activate", "true",
     "activate the policy after configuring it (false: `ros2 lifecycle set /policy_node activate`)"),
    ("camera_width", "96", "camera image width [px]"),
    ("camera_height", "96", "camera image height [px]"),
    ("camera_rate", "30", "camera rate [Hz]"),
]


def _flag(context, name: str) -> bool:
    value = LaunchConfiguration(name).perform(context).strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(f"gazebo.launch.py: argument {name}:={value!r} must be true or false")


def launch_setup(context, *args, **kwargs):
    choice = LaunchConfiguration("controller").perform(context).strip()
    if choice not in CONTROLLERS:
        raise ValueError(f"gazebo.launch.py: controller:={choice!r} must be one of {sorted(CONTROLLERS)}")
    active, inactive, output_mode = CONTROLLERS[choice]
    world = LaunchConfiguration("world").perform(context)
    if not Path(world).is_file():
        raise FileNotFoundError(f"gazebo.launch.py: world:={world}: no such file")
    robot_name = LaunchConfiguration("robot_name").perform(context)

    # -r: run at once; -s --headless-rendering: no GUI, cameras still render (EGL)
    gz_args = f"-r -v 3 {world}" if _flag(context, "gui") else f"-r -s --headless-rendering -v 3 {world}"
    gz_sim = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            PathJoinSubstitution([FindPackageShare("ros_gz_sim"), "launch", "gz_sim.launch.py"])),
        launch_arguments=[("gz_args", gz_args), ("on_exit_shutdown", "true")],
    )

    robot_description = ParameterValue(
        Command([
            "xacro ", str(ROBOT_XACRO),
            " controllers_file:=", str(CONTROLLERS_CONFIG),
            " camera_width:=", LaunchConfiguration("camera_width"),
            " camera_height:=", LaunchConfiguration("camera_height"),
            " camera_rate:=", LaunchConfiguration("camera_rate"),
        ]),
        value_type=str,
    )
    robot_state_publisher = Node(
        package="robot_state_publisher",
        executable="robot_state_publisher",
        output="screen",
        parameters=[{"robot_description": robot_description, "use_sim_time": True}],
    )
    spawn = Node(
        package="ros_gz_sim",
        executable="create",
        output="screen",
        arguments=["-topic", "robot_description", "-name", robot_name, "-z", "0.0"],
    )
    bridge = Node(
        package="ros_gz_bridge",
        executable="parameter_bridge",
        output="screen",
        parameters=[{"config_file": str(BRIDGE_CONFIG), "use_sim_time": True}],
    )

    def spawner(controller: str, *extra: str) -> Node:
        return Node(
            package="controller_manager",
            executable="spawner",
            output="screen",
            arguments=[controller, "--controller-manager", "/controller_manager", *extra],
        )

    joint_state_broadcaster = spawner("joint_state_broadcaster")
    command_controller = spawner(active)
    standby_controller = spawner(inactive, "--inactive")

    after_controllers = [LogInfo(msg=f"genil_ros gazebo: {active} active, {inactive} loaded inactive")]
    if _flag(context, "policy"):
        after_controllers.append(IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(POLICY_LAUNCH)),
            launch_arguments=[
                ("params_file", LaunchConfiguration("params_file")),
                ("checkpoint", LaunchConfiguration("checkpoint")),
                ("device", LaunchConfiguration("device")),
                ("use_sim_time", "true"),
                ("output_mode", output_mode),
                ("configure", "true"),
                ("activate", LaunchConfiguration("activate")),
            ],
        ))

    return [
        gz_sim,
        robot_state_publisher,
        bridge,
        spawn,
        # the controller_manager lives inside Gazebo (gz_ros2_control): spawn controllers once the arm is in
        RegisterEventHandler(OnProcessExit(target_action=spawn, on_exit=[joint_state_broadcaster])),
        RegisterEventHandler(OnProcessExit(target_action=joint_state_broadcaster,
                                           on_exit=[command_controller, standby_controller])),
        RegisterEventHandler(OnProcessExit(target_action=command_controller, on_exit=after_controllers)),
    ]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=doc) for name, default, doc in ARGUMENTS]
        + [OpaqueFunction(function=launch_setup)]
    )
