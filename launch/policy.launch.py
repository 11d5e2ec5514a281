"""The diffusion policy node, on any robot: a params file, a checkpoint, topics, and lifecycle start-up.

    ros2 launch genil_ros policy.launch.py params_file:=/path/to/params.yaml checkpoint:=/path/to/ckpt
    ros2 launch genil_ros policy.launch.py --show-args        # every argument with its default

The node is a lifecycle node (configure = load the checkpoint and warm up, activate = start commanding,
deactivate = hold). With configure:=true this launch file sends it `configure` as soon as it is up, and
with activate:=true it sends `activate` once the configure transition has succeeded - the launch_ros
lifecycle events (EmitEvent(ChangeState) + RegisterEventHandler(OnStateTransition)). Otherwise drive it
yourself: `ros2 lifecycle set /policy_node configure` / `activate` / `deactivate`.

Empty arguments leave the params file's value alone; a non-empty one overrides it. Topic arguments set the
node's topic parameters (the same effect as a remapping, and it works whatever the params file says);
`remappings:="/from:=/to;/a:=/b"` adds plain ROS remappings on top. Included by real_arm.launch.py,
gazebo.launch.py and sim_demo.launch.py.
"""

from pathlib import Path

import lifecycle_msgs.msg
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState

SHARE = Path(__file__).resolve().parent.parent  # share/genil_ros (install) or the source checkout
DEFAULT_PARAMS = SHARE / "config" / "policy_node.yaml"

OUTPUT_MODES = ("trajectory", "position")
TRUE = ("true", "1", "yes", "on")
FALSE = ("false", "0", "no", "off")

ARGUMENTS = [
    ("params_file", str(DEFAULT_PARAMS), "ROS params file for the policy node (top-level key /**/policy_node)"),
    ("checkpoint", "", "checkpoint directory or shipped model name; empty = the params file's `checkpoint`"),
    ("namespace", "", "namespace of the node (its ~/ topics and services move with it)"),
    ("node_name", "policy_node", "name of the node"),
    ("use_sim_time", "false", "follow /clock (Gazebo, the bundled sim)"),
    ("device", "", "auto | cpu | cuda; empty = the params file's"),
    ("output_mode", "", "trajectory (JointTrajectory) | position (Float64MultiArray); empty = the params file's"),
    ("joint_states_topic", "", "sensor_msgs/JointState input; empty = the params file's"),
    ("camera_topics", "", "comma-separated camera topics, in the checkpoint's camera order; empty = the params file's"),
    ("trajectory_topic", "", "trajectory_msgs/JointTrajectory output; empty = the params file's"),
    ("position_topic", "", "std_msgs/Float64MultiArray output; empty = the params file's"),
    ("remappings", "", "extra ROS remappings, 'from:=to' separated by ';'"),
    ("configure", "true", "send the lifecycle `configure` transition when the node is up"),
    ("activate", "true", "send `activate` after a successful configure (needs configure:=true)"),
    ("log_level", "info", "the node's log level (debug, info, warn, error)"),
]


def _flag(context, name: str) -> bool:
    value = LaunchConfiguration(name).perform(context).strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(f"policy.launch.py: argument {name}:={value!r} must be true or false")


def _text(context, name: str) -> str:
    return LaunchConfiguration(name).perform(context).strip()


def _remappings(text: str) -> list:
    pairs = []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        src, sep, dst = item.partition(":=")
        if not sep or not src.strip() or not dst.strip():
            raise ValueError(f"policy.launch.py: remappings: {item!r} is not 'from:=to'")
        pairs.append((src.strip(), dst.strip()))
    return pairs


def launch_setup(context, *args, **kwargs):
    params_file = _text(context, "params_file")
    if not Path(params_file).is_file():
        raise FileNotFoundError(f"policy.launch.py: params_file:={params_file}: no such file")

    overrides = {"use_sim_time": _flag(context, "use_sim_time"), "autostart": False}
    for name in ("checkpoint", "device", "joint_states_topic", "trajectory_topic", "position_topic"):
        value = _text(context, name)
        if value:
            overrides[name] = value
    output_mode = _text(context, "output_mode")
    if output_mode:
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"policy.launch.py: output_mode:={output_mode!r} must be one of {OUTPUT_MODES}")
        overrides["output_mode"] = output_mode
    cameras = [c.strip() for c in _text(context, "camera_topics").split(",") if c.strip()]
    if cameras:
        overrides["camera_topics"] = cameras

    node = LifecycleNode(
        package="genil_ros",
        executable="policy_node",
        name=_text(context, "node_name"),
        namespace=_text(context, "namespace"),
        output="screen",
        emulate_tty=True,
        # the file first, then the launch arguments: later entries win
        parameters=[params_file, overrides],
        remappings=_remappings(_text(context, "remappings")),
        ros_arguments=["--log-level", _text(context, "log_level")],
    )
    entities = [node]

    configure, activate = _flag(context, "configure"), _flag(context, "activate")
    if activate and not configure:
        raise ValueError("policy.launch.py: activate:=true needs configure:=true")
    if configure:
        if activate:
            # only after a configure (configuring -> inactive), never after a later deactivate
            entities.append(RegisterEventHandler(OnStateTransition(
                target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
                entities=[
                    LogInfo(msg="policy node configured; activating it (it starts commanding the arm)"),
                    EmitEvent(event=ChangeState(
                        lifecycle_node_matcher=matches_action(node),
                        transition_id=lifecycle_msgs.msg.Transition.TRANSITION_ACTIVATE)),
                ])))
        else:
            entities.append(RegisterEventHandler(OnStateTransition(
                target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
                entities=[LogInfo(msg="policy node configured and holding; start commanding with "
                                      "`ros2 lifecycle set <namespace>/<node_name> activate`")])))
        entities.append(RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node, start_state="configuring", goal_state="unconfigured",
            entities=[LogInfo(msg="policy node failed to configure (see its log above: checkpoint, "
                                  "topics, device); fix and run `ros2 lifecycle set ... configure`")])))
        entities.append(EmitEvent(event=ChangeState(
            lifecycle_node_matcher=matches_action(node),
            transition_id=lifecycle_msgs.msg.Transition.TRANSITION_CONFIGURE)))
    return entities


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=doc) for name, default, doc in ARGUMENTS]
        + [OpaqueFunction(function=launch_setup)]
    )
