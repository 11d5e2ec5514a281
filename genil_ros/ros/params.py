"""Node parameters, one way for every node: a settings dataclass whose fields ARE the parameter table.

Each node describes its parameters once, as a dataclass whose fields carry a default and a description
(:func:`param`); :func:`parameter_table` reads that into :class:`Param` rows (name, default, type,
description, choices, minimum) for declaring, documenting and testing; :func:`declare_parameters`
declares them on a node; :func:`read_settings` reads them back, converted and checked, into the dataclass.
This module does not import rclpy at import time, so the tables and the checks are usable (and tested)
without ROS::

    @dataclass
    class SimSettings(NodeSettings):
        rate_hz: float = param(100.0, "physics tick = /joint_states and /clock rate, in sim time", minimum=0.0)
        variant: str = param("obstacle", "task variant", choices=("obstacle", "reach"))
        image_size: list[int] = param([96, 96], "camera image [height, width]")

    declare_parameters(node, SimSettings)          # in __init__
    s = read_settings(node, SimSettings)           # GenilError naming the parameter on a bad value

Every parameter is declared with dynamic typing and converted here, so that ``-p rate_hz:=10`` (an int)
and ``joint_lower_limits: [-1, 0, -2, 0]`` (ints) work as a user expects; a wrong value gets an error
such as ``parameter max_step_rad: expected a number, got 'abc'``. ``Optional[...]`` fields accept an unset
parameter (None); lists accept an empty list. A dataclass may add cross-field checks in ``validate()``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Optional

from genil_ros.errors import GenilError

__all__ = ["Param", "NodeSettings", "param", "parameter_table", "declare_parameters", "read_settings",
           "settings_from_values", "convert_value"]


@dataclass(frozen=True)
class Param:
    """One row of a node's parameter table."""

    name: str
    default: Any
    type: Any  # float, int, str, bool, list[float], list[int], list[str], list[bool]
    optional: bool  # may be unset (None)
    description: str
    choices: tuple = ()
    minimum: Optional[float] = None

    @property
    def type_name(self) -> str:
        t = self.type
        name = f"list[{typing.get_args(t)[0].__name__}]" if typing.get_origin(t) is list else t.__name__
        return f"{name} (optional)" if self.optional else name


def param(default: Any, description: str, *, choices: tuple = (), minimum: Optional[float] = None) -> Any:
    """A dataclass field that is also a node parameter (a list default is copied per instance)."""
    meta = {"description": description, "choices": tuple(choices), "minimum": minimum}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda d=tuple(default): list(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class NodeSettings:
    """Base of the settings dataclasses: :meth:`validate` holds checks across parameters."""

    def validate(self) -> None:  # noqa: B027 - optional hook
        """Raise GenilError naming the parameter(s) when the combination is invalid."""


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(type, optional) from an annotation such as Optional[list[str]]."""
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported parameter type {tp}")
        return args[0], True
    return tp, False


def parameter_table(cls: type) -> tuple[Param, ...]:
    """The parameters described by settings dataclass ``cls``, in field order."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        tp, optional = _unwrap(hints[f.name])
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: a parameter needs a default")
        rows.append(Param(f.name, default, tp, optional or default is None, f.metadata.get("description", ""),
                          f.metadata.get("choices", ()), f.metadata.get("minimum")))
    return tuple(rows)


def _scalar(value: Any, kind: type, key: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise GenilError(f"parameter {key}: expected true/false, got {value!r}")
    if kind is str:
        if isinstance(value, str):
            return value
        raise GenilError(f"parameter {key}: expected a string, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GenilError(f"parameter {key}: expected a number, got {value!r}")
    if kind is int:
        if float(value) != int(value):
            raise GenilError(f"parameter {key}: expected an integer, got {value!r}")
        return int(value)
    return float(value)


def convert_value(p: Param, value: Any) -> Any:
    """``value`` as the parameter's type, checked against its choices and minimum; GenilError naming it."""
    if value is None:
        if p.optional:
            return None
        raise GenilError(f"parameter {p.name}: not set (expected {p.type_name})")
    if typing.get_origin(p.type) is list:
        elem = typing.get_args(p.type)[0]
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
            raise GenilError(f"parameter {p.name}: expected a list, got {value!r}")
        out = [_scalar(v, elem, p.name) for v in value]
        if p.minimum is not None and any(v < p.minimum for v in out if isinstance(v, (int, float))):
            raise GenilError(f"parameter {p.name}: values must be >= {p.minimum:g}, got {out}")
        return out
    out = _scalar(value, p.type, p.name)
    if p.choices and out not in p.choices:
        raise GenilError(f"parameter {p.name}: {out!r} is not one of {', '.join(map(str, p.choices))}")
    if p.minimum is not None and out < p.minimum:
        raise GenilError(f"parameter {p.name}: {out} must be >= {p.minimum:g}")
    return out


def settings_from_values(cls: type, values: dict) -> Any:
    """The settings dataclass from ``{name: raw value}`` (missing names take their defaults), checked."""
    table = parameter_table(cls)
    unknown = sorted(set(values) - {p.name for p in table} - {"use_sim_time"})
    if unknown:
        raise GenilError(f"unknown parameter(s) {unknown} (known: {', '.join(p.name for p in table)})")
    kwargs = {p.name: convert_value(p, values.get(p.name, p.default)) for p in table}
    settings = cls(**kwargs)
    settings.validate()
    return settings


def declare_parameters(node: Any, cls: type) -> tuple[Param, ...]:
    """Declare every parameter of settings dataclass ``cls`` on ``node`` (dynamically typed, described)."""
    from rcl_interfaces.msg import ParameterDescriptor

    table = parameter_table(cls)
    for p in table:
        named = [str(c) for c in p.choices if c != ""]
        desc = p.description + (f" [{' | '.join(named)}{', or empty' if '' in p.choices else ''}]" if named else "")
        node.declare_parameter(p.name, p.default,
                               ParameterDescriptor(description=desc, dynamic_typing=True))
    return table


def read_settings(node: Any, cls: type) -> Any:
    """The node's current parameter values as settings dataclass ``cls`` (GenilError on a bad value)."""
    return settings_from_values(cls, {p.name: node.get_parameter(p.name).value for p in parameter_table(cls)})
