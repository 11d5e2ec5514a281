"""Launch files and deployment configs (launch/, config/ params files, the Gazebo arm and world).

Two levels:
- static (always): every launch file compiles and defines generate_launch_description(); every genil_ros
  executable it starts is a console script of setup.py; every file it names exists in an installed data
  folder; every LaunchConfiguration it reads is declared; every argument it passes to an included
  genil_ros launch file is declared there. The ROS params files are parsed by rcl itself (the real ROS 2
  parser, through rclpy) and their policy/sim/trainer node parameters are names the nodes declare (the
  Gazebo arm's files are checked in test_gazebo_arm.py).
- launch machinery (only where `launch` and `launch_ros` import, i.e. a sourced ROS 2 install): each
  description is built by launch's own loader, introspected, and its OpaqueFunctions are run with the
  default arguments, without starting any process. Skipped with the reason shown by `pytest -ra` here,
  since launch/launch_ros are not on PyPI.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_DIR = ROOT / "launch"
CONFIG = ROOT / "config"
INSTALLED_DATA = ("launch", "config", "models")  # setup.py installs these trees into share/genil_ros
FILE_SUFFIXES = (".yaml", ".yml", ".xacro", ".urdf", ".sdf", ".launch.py", ".xml", ".world")

OUR_LAUNCH_FILES = ["policy.launch.py", "gazebo.launch.py", "real_arm.launch.py", "sim_demo.launch.py"]
LAUNCH_FILES = sorted(p.name for p in LAUNCH_DIR.glob("*.launch.py"))

GZ_CONTROLLERS = CONFIG / "gazebo_controllers.yaml"
REAL_POLICY = CONFIG / "real_arm_policy.yaml"
REAL_TASK = CONFIG / "real_arm_task.yaml"


# =========================================================================== static helpers


def _tree(name: str) -> ast.Module:
    path = LAUNCH_DIR / name
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def console_scripts() -> dict[str, str]:
    """name -> 'module:function' from setup.py's entry_points (read with ast, not by running setup.py)."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == "console_scripts":
                    specs = [ast.literal_eval(e) for e in v.elts]
                    return {s.split("=")[0].strip(): s.split("=")[1].strip() for s in specs}
    raise AssertionError("setup.py: no console_scripts entry points")


class _Unknown(Exception):
    pass


def _eval_path(node: ast.AST, env: dict, launch_file: Path):
    """Evaluate the small path expressions launch files use: Path(__file__).resolve().parent..., / joins."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        if node.id == "__file__":
            return launch_file
        if node.id in env:
            return env[node.id]
        raise _Unknown(node.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("Path", "str") \
            and len(node.args) == 1 and not node.keywords:
        value = _eval_path(node.args[0], env, launch_file)
        return Path(value) if node.func.id == "Path" else str(value)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "resolve" \
            and not node.args:
        return _eval_path(node.func.value, env, launch_file)
    if isinstance(node, ast.Attribute) and node.attr == "parent":
        return Path(_eval_path(node.value, env, launch_file)).parent
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return Path(_eval_path(node.left, env, launch_file)) / _eval_path(node.right, env, launch_file)
    raise _Unknown(ast.dump(node)[:60])


def module_paths(name: str) -> dict[str, Path]:
    """Module-level NAME = <path expression> of a launch file, evaluated as if it lived in launch/."""
    launch_file = LAUNCH_DIR / name
    env: dict = {}
    for stmt in _tree(name).body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            try:
                value = _eval_path(stmt.value, env, launch_file)
            except _Unknown:
                continue
            if isinstance(value, Path):
                env[stmt.targets[0].id] = value
    return env


def _const_str(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def declared_arguments(name: str) -> set[str]:
    """DeclareLaunchArgument('x', ...) names, plus the first items of a module-level ARGUMENTS table."""
    tree = _tree(name)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _call_name(node) == "DeclareLaunchArgument":
            arg = _const_str(node.args[0]) if node.args else None
            arg = arg or next((_const_str(k.value) for k in node.keywords if k.arg == "name"), None)
            if arg:
                names.add(arg)
    names |= set(argument_table(tree))
    return names


def argument_table(tree: ast.Module) -> dict[str, str | None]:
    """name -> default (None when not a constant) of a module-level ARGUMENTS = [(name, default, doc), ...]."""
    out = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "ARGUMENTS" for t in stmt.targets):
            for row in stmt.value.elts:
                out[_const_str(row.elts[0])] = _const_str(row.elts[1])
    return out


def used_configurations(name: str) -> set[str]:
    """Argument names read with LaunchConfiguration('x'), directly or through a helper of the file such
    as `def _flag(context, name): LaunchConfiguration(name)...` called as `_flag(context, 'x')`."""
    tree = _tree(name)
    helpers = {}  # function name -> index of the parameter it passes to LaunchConfiguration
    for f in tree.body:
        if isinstance(f, ast.FunctionDef):
            params = [a.arg for a in f.args.args]
            for node in ast.walk(f):
                if isinstance(node, ast.Call) and _call_name(node) == "LaunchConfiguration" and node.args \
                        and isinstance(node.args[0], ast.Name) and node.args[0].id in params:
                    helpers[f.name] = params.index(node.args[0].id)
    used = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        index = 0 if _call_name(node) == "LaunchConfiguration" else helpers.get(_call_name(node))
        if index is not None and len(node.args) > index and _const_str(node.args[index]):
            used.add(_const_str(node.args[index]))
    return used


def started_executables(name: str) -> list[tuple[str, str]]:
    """(package, executable) of every Node/LifecycleNode/... call with constant package and executable."""
    out = []
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Call):
            kw = {k.arg: _const_str(k.value) for k in node.keywords}
            if kw.get("package") and kw.get("executable"):
                out.append((kw["package"], kw["executable"]))
    return out


def included_launch_arguments(name: str) -> list[tuple[Path, list[str]]]:
    """For each IncludeLaunchDescription of a file in launch/: (target, names passed in launch_arguments)."""
    env = module_paths(name)
    out = []
    for node in ast.walk(_tree(name)):
        if not (isinstance(node, ast.Call) and _call_name(node) == "IncludeLaunchDescription" and node.args):
            continue
        src = node.args[0]
        if not (isinstance(src, ast.Call) and _call_name(src) == "PythonLaunchDescriptionSource" and src.args):
            continue
        try:
            target = Path(_eval_path(src.args[0], env, LAUNCH_DIR / name))
        except _Unknown:
            continue  # another package's launch file (FindPackageShare ...)
        passed = []
        for kw in node.keywords:
            if kw.arg == "launch_arguments" and isinstance(kw.value, (ast.List, ast.Tuple)):
                passed = [_const_str(e.elts[0]) for e in kw.value.elts if isinstance(e, ast.Tuple)]
            elif kw.arg == "launch_arguments" and isinstance(kw.value, ast.Dict):
                passed = [_const_str(k) for k in kw.value.keys]
        out.append((target, passed))
    return out


# node -> (module, class) of its settings dataclass (genil_ros/ros/params.py): the parameters it declares
NODE_SETTINGS = {
    "policy_node": ("genil_ros.ros.policy_params", "PolicySettings"),
    "sim_node": ("genil_ros.ros.sim_node", "SimSettings"),
    "trainer_node": ("genil_ros.ros.trainer_node", "TrainerSettings"),
}


def declared_node_parameters(node: str) -> set[str]:
    """Parameter names ``node`` declares: the table of its settings dataclass (NODE_SETTINGS). A moved or
    renamed settings class fails here instead of skipping."""
    import importlib

    from genil_ros.ros.params import parameter_table

    module, cls = NODE_SETTINGS[node]
    return {p.name for p in parameter_table(getattr(importlib.import_module(module), cls))}


def load_yaml(path: Path):
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def params_files() -> list[Path]:
    """Every YAML under config/ that is a ROS params file (a top-level value with ros__parameters)."""
    out = []
    for path in sorted(CONFIG.rglob("*.yaml")):
        data = load_yaml(path)
        if isinstance(data, dict) and any(isinstance(v, dict) and "ros__parameters" in v for v in data.values()):
            out.append(path)
    return out


def configures(path: Path, key: str, node: str) -> bool:
    """Does the params-file entry `key` of `path` configure `node`? ('/**/node', 'node', or '/**' in node.yaml)"""
    return key.split("/")[-1] == node or (key == "/**" and path.stem == node)


def node_params(path: Path, node: str) -> dict:
    """The ros__parameters of the entry for `node` in a params file."""
    data = load_yaml(path)
    for key, value in data.items():
        if configures(path, key, node):
            return value["ros__parameters"]
    raise AssertionError(f"{path.relative_to(ROOT)}: no entry for node {node}")


# =========================================================================== static: launch files


def test_our_launch_files_exist():
    missing = [n for n in OUR_LAUNCH_FILES if not (LAUNCH_DIR / n).is_file()]
    assert not missing, f"launch/: missing {missing}"


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_file_compiles_and_defines_generate_launch_description(name):
    source = (LAUNCH_DIR / name).read_text(encoding="utf-8")
    compile(source, str(LAUNCH_DIR / name), "exec")
    funcs = {f.name: f for f in _tree(name).body if isinstance(f, ast.FunctionDef)}
    assert "generate_launch_description" in funcs, f"launch/{name}: no generate_launch_description()"
    args = funcs["generate_launch_description"].args
    assert len(args.args) == len(args.defaults), f"launch/{name}: generate_launch_description() must take no arguments"


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_genil_executables_are_console_scripts(name):
    scripts = console_scripts()
    ours = [exe for pkg, exe in started_executables(name) if pkg == "genil_ros"]
    for exe in ours:
        assert exe in scripts, \
            f"launch/{name}: executable {exe!r} is not a console script in setup.py ({sorted(scripts)})"
        module, func = scripts[exe].split(":")
        mod_path = ROOT / (module.replace(".", "/") + ".py")
        assert mod_path.is_file(), f"setup.py: {exe} -> {module}, but {mod_path.relative_to(ROOT)} does not exist"
        body = ast.parse(mod_path.read_text(encoding="utf-8")).body
        defined = {f.name for f in body if isinstance(f, ast.FunctionDef)}
        assert func in defined, f"{mod_path.relative_to(ROOT)}: no function {func}() for console script {exe}"


def test_our_launch_files_start_the_nodes():
    started = {n: started_executables(n) for n in OUR_LAUNCH_FILES}
    assert ("genil_ros", "policy_node") in started["policy.launch.py"]
    assert ("genil_ros", "sim_node") in started["sim_demo.launch.py"]
    gz = set(started["gazebo.launch.py"])
    for pkg_exe in [("robot_state_publisher", "robot_state_publisher"), ("ros_gz_sim", "create"),
                    ("ros_gz_bridge", "parameter_bridge"), ("controller_manager", "spawner")]:
        assert pkg_exe in gz, f"launch/gazebo.launch.py does not start {pkg_exe}"


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_named_files_exist_in_installed_data(name):
    env = module_paths(name)
    named = {var: p for var, p in env.items() if any(p.name.endswith(s) for s in FILE_SUFFIXES)}
    for var, path in named.items():
        rel = path.relative_to(ROOT)  # ValueError: a path outside the package
        assert rel.parts[0] in INSTALLED_DATA, \
            f"launch/{name}: {var} = {rel} is not in an installed folder {INSTALLED_DATA}"
        assert path.is_file(), f"launch/{name}: {var} names {rel}, which does not exist"
    # any other file name in a string constant must exist somewhere in the installed data folders
    resolved = {p.name for p in named.values()}
    known = {p.name for d in INSTALLED_DATA if (ROOT / d).is_dir() for p in (ROOT / d).rglob("*") if p.is_file()}
    external = {"gz_sim.launch.py"}  # ros_gz_sim's, found with FindPackageShare
    for node in ast.walk(_tree(name)):
        s = _const_str(node)
        if s and "/" not in s and " " not in s and s.endswith(FILE_SUFFIXES) and s not in resolved | external:
            assert s in known, f"launch/{name}: names file {s!r}, which is not in {INSTALLED_DATA}"


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_configurations_are_declared(name):
    undeclared = used_configurations(name) - declared_arguments(name)
    assert not undeclared, f"launch/{name}: LaunchConfiguration of undeclared argument(s) {sorted(undeclared)}"


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_included_launch_arguments_are_declared_there(name):
    for target, passed in included_launch_arguments(name):
        assert target.is_file(), f"launch/{name}: includes {target}, which does not exist"
        declared = declared_arguments(target.name)
        unknown = [p for p in passed if p not in declared]
        assert not unknown, f"launch/{name}: passes {unknown} to {target.name}, which declares {sorted(declared)}"


def test_policy_launch_has_the_documented_arguments():
    args = declared_arguments("policy.launch.py")
    for a in ("params_file", "checkpoint", "namespace", "use_sim_time", "device", "output_mode",
              "joint_states_topic", "camera_topics", "trajectory_topic", "position_topic", "remappings",
              "configure", "activate"):
        assert a in args, f"launch/policy.launch.py: no argument {a}"
    calls = {_call_name(n) for n in ast.walk(_tree("policy.launch.py")) if isinstance(n, ast.Call)}
    for c in ("LifecycleNode", "ChangeState", "EmitEvent", "RegisterEventHandler", "OnStateTransition"):
        assert c in calls, f"launch/policy.launch.py: no {c} (lifecycle start-up by launch events)"


def test_controller_choices_match_the_controllers_file():
    tree = _tree("gazebo.launch.py")
    table = next(ast.literal_eval(s.value) for s in tree.body
                 if isinstance(s, ast.Assign) and getattr(s.targets[0], "id", "") == "CONTROLLERS")
    cm = load_yaml(GZ_CONTROLLERS)["controller_manager"]["ros__parameters"]
    for choice, (active, standby, mode) in table.items():
        assert mode in ("trajectory", "position")
        for c in (active, standby):
            assert c in cm and "type" in cm[c], \
                f"{GZ_CONTROLLERS.name}: controller {c} (controller:={choice}) not defined"
    assert cm["joint_state_broadcaster"]["type"] == "joint_state_broadcaster/JointStateBroadcaster"


# =========================================================================== static: params files


def _ros_param_value_ok(v) -> bool:
    if isinstance(v, (bool, int, float, str)):
        return True
    if isinstance(v, list):
        kinds = {bool if isinstance(x, bool) else int if isinstance(x, int) else type(x) for x in v}
        return len(v) > 0 and len(kinds) == 1 and kinds <= {bool, int, float, str}
    return False


def test_params_files_are_ros_params_files():
    files = params_files()
    names = {p.relative_to(CONFIG).as_posix() for p in files}
    assert {"real_arm_policy.yaml", "gazebo_controllers.yaml", "gazebo/policy_node.yaml"} <= names, names
    for path in files:
        data = load_yaml(path)
        for node, body in data.items():
            where = f"{path.relative_to(ROOT)}: {node}"
            assert re.fullmatch(r"/\*\*|(/\*\*/|/)?([A-Za-z_]\w*/)*[A-Za-z_]\w*", node), f"{where}: not a node name"
            assert isinstance(body, dict) and list(body) == ["ros__parameters"], \
                f"{where}: must hold only ros__parameters"
            stack = [(node, body["ros__parameters"])]
            while stack:
                prefix, params = stack.pop()
                assert isinstance(params, dict), f"{where}: {prefix} must be a mapping"
                for k, v in params.items():
                    if isinstance(v, dict):
                        stack.append((f"{prefix}.{k}", v))
                    else:
                        assert _ros_param_value_ok(v), f"{where}: {prefix}.{k} = {v!r} is not a ROS parameter value"


def test_params_files_parse_with_rcl(ros_env):
    """rcl's own YAML parser reads each params file and a node of that name gets the values."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.node import Node

    dom, _ = ros_env
    for path in params_files():
        data = load_yaml(path)
        ctx = rclpy.Context()
        rclpy.init(context=ctx, domain_id=dom, args=["--ros-args", "--params-file", str(path)])
        try:
            for key, body in data.items():
                # '/**' and '/**/name' must reach the node in any namespace; a plain 'name' only at the root
                parts = [p for p in key.split("/") if p and p != "**"] or [path.stem]
                namespace = "/test_ns" if key.startswith("/**") else "/" + "/".join(parts[:-1])
                node = Node(parts[-1], namespace=namespace, context=ctx,
                            automatically_declare_parameters_from_overrides=True)
                try:
                    flat = {}
                    stack = [("", body["ros__parameters"])]
                    while stack:
                        prefix, params = stack.pop()
                        for k, v in params.items():
                            if isinstance(v, dict):
                                stack.append((prefix + k + ".", v))
                            else:
                                flat[prefix + k] = v
                    for k, v in flat.items():
                        got = node.get_parameter(k).value
                        got = list(got) if isinstance(v, list) else got
                        assert got == v, f"{path.relative_to(ROOT)}: {key}.{k}: rcl read {got!r}, YAML says {v!r}"
                finally:
                    node.destroy_node()
        finally:
            ctx.try_shutdown()


@pytest.mark.parametrize("node", sorted(NODE_SETTINGS))
def test_node_params_in_config_are_declared_by_the_node(node):
    declared = declared_node_parameters(node) | {"use_sim_time"}
    assert len(declared) > 3, f"{node}: could not read its declared parameters ({NODE_SETTINGS[node]})"
    checked = 0
    for path in params_files():
        for key, body in load_yaml(path).items():
            if configures(path, key, node):
                unknown = sorted(set(body["ros__parameters"]) - declared)
                assert not unknown, f"{path.relative_to(ROOT)}: {key}: {unknown} not declared by {node}"
                checked += 1
    assert checked, f"no params file configures {node}"


def test_sim_params_file_gives_every_declared_parameter_its_default():
    """config/sim_node.yaml is the documented list of the sim's parameters: the same names and defaults."""
    from genil_ros.ros.params import parameter_table
    from genil_ros.ros.sim_node import SimSettings

    table = {p.name: p.default for p in parameter_table(SimSettings)}
    assert node_params(CONFIG / "sim_node.yaml", "sim_node") == table


def test_launch_overrides_are_declared_policy_parameters():
    """The parameter names policy.launch.py sets from its arguments exist in the policy node."""
    declared = declared_node_parameters("policy_node") | {"use_sim_time"}
    tree = _tree("policy.launch.py")
    set_names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):  # overrides = {"use_sim_time": ..., "autostart": False}
            set_names |= {_const_str(k) for k in node.keys if _const_str(k)}
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "overrides":
            if _const_str(node.slice):
                set_names.add(_const_str(node.slice))
        if isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple):  # for name in ("checkpoint", ...)
            set_names |= {_const_str(e) for e in node.iter.elts if _const_str(e)}
    assert {"checkpoint", "output_mode", "camera_topics", "autostart"} <= set_names, set_names
    assert set_names <= declared, f"launch/policy.launch.py sets undeclared parameters {sorted(set_names - declared)}"


def test_real_arm_params_agree_with_the_task_and_are_safe():
    from genil_ros.config import load_config

    task = load_config(REAL_TASK).task
    p = node_params(REAL_POLICY, "policy_node")
    arm = next(a for a in task.actions if a.type == "joint_position")  # the arm's joint targets (+ a gripper)
    n = len(arm.joints)
    assert 6 <= n <= 7
    lower, upper = np.array(p["joint_lower_limits"], float), np.array(p["joint_upper_limits"], float)
    assert lower.shape == upper.shape == (n,), \
        f"{REAL_POLICY.name}: joint limits must have {n} entries (task.joint_names)"
    assert np.all(lower < upper), f"{REAL_POLICY.name}: lower >= upper for joints {np.nonzero(lower >= upper)[0]}"
    assert np.all(np.abs(lower) <= 2 * math.pi) and np.all(np.abs(upper) <= 2 * math.pi)
    cameras = task.camera_entries
    assert [c.topic for c in cameras] == p["camera_topics"], "camera topics differ from real_arm_task.yaml"
    assert [c.compressed for c in cameras] == p["camera_compressed"]
    assert p["control_rate_hz"] == task.control_rate_hz
    assert p["output_mode"] in ("trajectory", "position")
    assert 0 < p["max_step_rad"] <= 0.2 and 0 < p["max_staleness_s"] <= 1.0
    assert p["autostart"] is False, "a real arm must not start moving by itself"
    # real_arm.launch.py must not activate by default either
    assert argument_table(_tree("real_arm.launch.py"))["activate"] == "false"


# =========================================================================== launch machinery


def _launch_available() -> str | None:
    try:
        import launch  # noqa: F401
        import launch_ros  # noqa: F401
    except ImportError as e:
        return f"launch_ros is not importable ({e}); launch/launch_ros are not on PyPI - source a ROS 2 install " \
               "to run the launch files through launch's machinery (the static checks above ran instead)"
    if not hasattr(launch, "LaunchDescription"):  # e.g. the launch/ folder of this checkout as a namespace package
        return f"'launch' is not the ROS 2 launch package ({getattr(launch, '__path__', '?')})"
    return None


def _walk(entity, seen=None):
    from launch import LaunchDescriptionEntity
    from launch.actions import RegisterEventHandler

    seen = seen if seen is not None else set()
    if id(entity) in seen:
        return
    seen.add(id(entity))
    yield entity
    for sub in entity.describe_sub_entities():
        yield from _walk(sub, seen)
    for _, subs in entity.describe_conditional_sub_entities():
        for sub in subs:
            yield from _walk(sub, seen)
    if isinstance(entity, RegisterEventHandler):
        for sub in entity.event_handler.describe()[1]:
            if isinstance(sub, LaunchDescriptionEntity):
                yield from _walk(sub, seen)


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_description_builds_with_launch(name):
    reason = _launch_available()
    if reason:
        pytest.skip(reason)
    from launch import LaunchContext, LaunchIntrospector
    from launch.actions import OpaqueFunction
    from launch.launch_description_sources import get_launch_description_from_python_launch_file
    from launch.utilities import perform_substitutions
    from launch_ros.actions import Node

    ld = get_launch_description_from_python_launch_file(str(LAUNCH_DIR / name))
    assert LaunchIntrospector().format_launch_description(ld)
    context = LaunchContext()
    for arg in ld.get_launch_arguments():
        if arg.default_value is not None:
            context.launch_configurations[arg.name] = perform_substitutions(context, arg.default_value)
    entities = []
    for entity in ld.entities:
        entities += list(_walk(entity))
        if isinstance(entity, OpaqueFunction):
            for sub in entity.execute(context) or []:  # runs launch_setup() with the defaults; starts nothing
                entities += list(_walk(sub))
    scripts = console_scripts()
    nodes = [e for e in entities if isinstance(e, Node)]
    for node in nodes:
        if node.node_package == "genil_ros":
            assert node.node_executable in scripts, f"launch/{name}: {node.node_executable} is not a console script"
    if name in OUR_LAUNCH_FILES and name != "real_arm.launch.py":
        assert nodes, f"launch/{name}: no nodes with the default arguments"
