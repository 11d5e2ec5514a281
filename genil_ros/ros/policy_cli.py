"""``genil-ros policy``: run ``policy_node`` from the command line.

Only what the user typed is passed on to the node, after the params file, so a params file's values stay
in force unless the command line overrides them. Every value (the params file's for this node and the
typed ones) is checked against the node's parameter table before the node starts, and a bad one is a
one-line error naming the parameter and where it came from. rclpy is imported only by :func:`run`.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import yaml

from genil_ros.errors import GenilError
from genil_ros.ros.params import convert_value, parameter_table, settings_from_values
from genil_ros.ros.policy_entries import check_entry_parameter, is_entry_parameter
from genil_ros.ros.policy_params import NODE_NAME, PolicySettings

__all__ = ["add_arguments", "ros_arguments", "read_params_file", "run"]

PRECEDENCE = """\
precedence (lowest first): the node's defaults < --params-file < what you type on this command line
(-p NAME:=VALUE, --checkpoint, --device, --output-mode, --no-autostart, --use-sim-time). Flags and -p
values you do not type are not passed on, so they never override the params file.

autostart: the node configures and activates on start unless you give --no-autostart or
-p autostart:=false, or the params file sets autostart: false (then: ros2 lifecycle set /NAME configure,
activate). If that autostart fails (e.g. a checkpoint that does not load), the command exits with status 2
and the reason; the policy_node started by launch files instead stays up, unconfigured."""

_EXTRA = ("use_sim_time",)  # parameters every node has besides its own table


def add_arguments(parser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = PRECEDENCE
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint directory or shipped model name (or `checkpoint` in the params file)")
    parser.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"], help="node default: auto")
    parser.add_argument("--output-mode", default=None, choices=["trajectory", "position"],
                        help="node default: trajectory")
    parser.add_argument("--params-file", default=None, help="ROS 2 parameters YAML (e.g. config/policy_node.yaml)")
    parser.add_argument("--param", "-p", action="append", default=[], metavar="NAME:=VALUE",
                        help="a node parameter, repeatable (e.g. -p max_step_rad:=0.05)")
    parser.add_argument("--no-autostart", action="store_true", help="wait for `ros2 lifecycle set` instead")
    parser.add_argument("--use-sim-time", action="store_true", help="follow /clock (the bundled sim, Gazebo)")
    parser.add_argument("--name", default=NODE_NAME, help="node name")


def _node_key_matches(key: str, node_fqn: str) -> bool:
    """Does a params-file key (``/**``, ``/**/policy_node``, ``policy_node``, ``/ns/*``...) select the node?"""
    pattern = "/" + key.strip("/")
    rx = "".join("(/[^/]+)*" if tok == "**" else "/[^/]+" if tok == "*" else "/" + re.escape(tok)
                 for tok in pattern.split("/")[1:])
    return re.fullmatch(rx, node_fqn) is not None


def _flatten(prefix: str, body: dict, out: dict) -> None:
    for k, v in body.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            _flatten(name + ".", v, out)
        else:
            out[name] = v


def read_params_file(path, node_name: str = NODE_NAME) -> dict[str, Any]:
    """The parameters a ROS 2 params file gives node ``/node_name``: every section whose key selects it
    (wildcards included), in file order (a later section wins, as in rcl); nested names joined with '.'."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise GenilError(f"{path}: cannot read the parameters file ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise GenilError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GenilError(f"{path}: a ROS 2 parameters file maps node names to ros__parameters")
    values: dict[str, Any] = {}
    for key, section in data.items():
        if not _node_key_matches(str(key), "/" + node_name):
            continue
        if not isinstance(section, dict) or not isinstance(section.get("ros__parameters"), dict):
            raise GenilError(f"{path}: {key}: expected a 'ros__parameters:' mapping")
        _flatten("", section["ros__parameters"], values)
    return values


def _parse_param(item: str) -> tuple[str, Any]:
    """``NAME:=VALUE`` -> (name, value parsed as rcl does: a YAML scalar or list)."""
    name, sep, text = item.partition(":=")
    if not sep or not name:
        raise GenilError(f"-p {item!r}: expected NAME:=VALUE")
    if not text:
        raise GenilError(f"-p {item!r}: no value (for an empty string write {name}:=\"''\")")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(value, str):
        try:  # rcl reads 1e3 as a number; PyYAML reads it as a string
            value = float(value) if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value) else value
        except ValueError:
            pass
    return name, value


def _yaml_text(value: Any) -> str:
    """``value`` written so that rcl parses it back to the same type (a path like ``1.0`` stays a string)."""
    if isinstance(value, str):
        try:
            plain = bool(value) and yaml.safe_load(value) == value
        except yaml.YAMLError:
            plain = False
        return value if plain else "'" + value.replace("'", "''") + "'"
    return "true" if value is True else "false" if value is False else str(value)


def _check(name: str, value: Any, source: str) -> None:
    """GenilError naming ``source`` unless ``value`` is valid for parameter ``name``."""
    table = {p.name: p for p in parameter_table(PolicySettings)}
    if name in table:
        try:
            convert_value(table[name], value)
        except GenilError as e:
            raise GenilError(f"{source}: {e}") from None
    elif name in _EXTRA:
        if not isinstance(value, bool):
            raise GenilError(f"{source}: parameter {name}: expected true/false, got {value!r}")
    elif is_entry_parameter(name):  # observations.<entry>.<key> / actions.<entry>.<key>: entries checked at configure
        try:
            check_entry_parameter(name, value)
        except GenilError as e:
            raise GenilError(f"{source}: {e}") from None
    elif not name.startswith("qos_overrides."):
        raise GenilError(f"{source}: unknown parameter {name!r} (known: {', '.join(list(table) + list(_EXTRA))})")


def ros_arguments(args) -> list:
    """The node's ``--ros-args``: the params file, then only the parameters typed on the command line (and
    ``autostart:=true`` unless the user or the params file decided it), every value checked first."""
    from genil_ros.paths import config_path

    ros = ["--ros-args", "-r", f"__node:={args.name}"]
    from_file: dict[str, Any] = {}
    if args.params_file:
        p = config_path(args.params_file)
        if not p.is_file():
            raise GenilError(f"{args.params_file}: parameters file not found")
        from_file = read_params_file(p, args.name)
        for name, value in from_file.items():
            _check(name, value, str(p))
        ros += ["--params-file", str(p)]
    typed: dict[str, Any] = {}
    for item in args.param:
        name, value = _parse_param(item)
        _check(name, value, f"-p {item}")
        typed[name] = value
        ros += ["-p", item]
    flags = {"checkpoint": args.checkpoint, "device": args.device, "output_mode": args.output_mode,
             "autostart": False if args.no_autostart else None, "use_sim_time": True if args.use_sim_time else None}
    for name, value in flags.items():
        if value is None:
            continue
        flag = "--no-autostart" if name == "autostart" else "--" + name.replace("_", "-")
        if name in typed:
            raise GenilError(f"{flag} and -p {name}:=... both given; give one")
        typed[name] = value
        ros += ["-p", f"{name}:={_yaml_text(value)}"]
    if "autostart" not in typed and "autostart" not in from_file:
        typed["autostart"] = True  # the command's default; a params file's autostart: false is respected
        ros += ["-p", "autostart:=true"]
    effective = {k: v for k, v in {**from_file, **typed}.items()
                 if k not in _EXTRA and not k.startswith("qos_overrides.") and not is_entry_parameter(k)}
    settings_from_values(PolicySettings, effective)  # the checks across parameters (validate())
    return ros


def run(args) -> int:
    from genil_ros.ros.policy_node import main

    return main(["genil-ros-policy"] + ros_arguments(args), exit_on_failed_autostart=True)

