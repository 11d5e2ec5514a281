"""The bundled MuJoCo arm as a ROS 2 robot plus the policy node driving it - no Gazebo, no hardware.

    ros2 launch genil_ros sim_demo.launch.py                       # the shipped models/sim_obstacle_dp
    ros2 launch genil_ros sim_demo.launch.py checkpoint:=/path/to/ckpt
    ros2 launch genil_ros sim_demo.launch.py variant:=reach controller:=position real_time_factor:=2.0

sim_node (params: config/sim_node.yaml) behaves like a ros2_control robot: it publishes /joint_states,
/camera/image_raw and /clock, and accepts /joint_trajectory_controller/joint_trajectory and
/forward_position_controller/commands. The policy node (policy.launch.py, params config/policy_node.yaml)
runs on the sim's clock (use_sim_time:=true) and is configured and activated by lifecycle events.
Reset an episode with `ros2 service call /sim_node/reset std_srvs/srv/Trigger`; watch /sim_node/success.

Without a ROS 2 install (no `ros2 launch`), `genil-ros demo` starts the same node graph.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

SHARE = Path(__file__).resolve().parent.parent
POLICY_LAUNCH = SHARE / "launch" / "policy.launch.py"
SIM_PARAMS = SHARE / "config" / "sim_node.yaml"
POLICY_PARAMS = SHARE / "config" / "policy_node.yaml"

OUTPUT_MODES = ("trajectory", "position")

ARGUMENTS = [
    ("sim_params_file", str(SIM_PARAMS), "sim node params"),
    ("params_file", str(POLICY_PARAMS), "policy node params"),
    ("checkpoint", "sim_obstacle_dp", "checkpoint directory or shipped model name (default: the shipped "
                                      "models/sim_obstacle_dp); empty = the params file's `checkpoint`"),
    ("variant", "", "obstacle | reach; empty = the sim params file's"),
    ("real_time_factor", "", "sim speed (1.0 = real time, >1 faster); empty = the sim params file's"),
    ("controller", "trajectory", "trajectory | position: the command topic the policy publishes on"),
    ("device", "", "auto | cpu | cuda; empty = the policy params file's"),
    ("policy", "true", "start the policy node (false: only the sim, e.g. to teleoperate and record)"),
    ("activate", "true", "activate the policy after configuring it"),
]


def launch_setup(context, *args, **kwargs):
    controller = LaunchConfiguration("controller").perform(context).strip()
    if controller not in OUTPUT_MODES:
        raise ValueError(f"sim_demo.launch.py: controller:={controller!r} must be one of {OUTPUT_MODES}")
    sim_params = LaunchConfiguration("sim_params_file").perform(context)
    if not Path(sim_params).is_file():
        raise FileNotFoundError(f"sim_demo.launch.py: sim_params_file:={sim_params}: no such file")

    overrides = {"use_sim_time": False}  # the sim is the clock: it publishes /clock
    variant = LaunchConfiguration("variant").perform(context).strip()
    if variant:
        overrides["variant"] = variant
    rtf = LaunchConfiguration("real_time_factor").perform(context).strip()
    if rtf:
        try:
            overrides["real_time_factor"] = float(rtf)
        except ValueError:
            raise ValueError(f"sim_demo.launch.py: real_time_factor:={rtf!r} is not a number") from None

    entities = [Node(
        package="genil_ros",
        executable="sim_node",
        name="sim_node",
        output="screen",
        emulate_tty=True,
        parameters=[sim_params, overrides],
    )]
    if LaunchConfiguration("policy").perform(context).strip().lower() in ("true", "1", "yes", "on"):
        entities.append(IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(POLICY_LAUNCH)),
            launch_arguments=[
                ("params_file", LaunchConfiguration("params_file")),
                ("checkpoint", LaunchConfiguration("checkpoint")),
                ("device", LaunchConfiguration("device")),
                ("use_sim_time", "true"),
                ("output_mode", controller),
                ("configure", "true"),
                ("activate", LaunchConfiguration("activate")),
            ],
        ))
    return entities


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=doc) for name, default, doc in ARGUMENTS]
        + [OpaqueFunction(function=launch_setup)]
    )
