"""Two real processes exchange sensor_msgs/JointState over real DDS, each test on its own domain."""

import subprocess
import sys
from pathlib import Path

import pytest

from genil_ros.testing import isolated_ros_env

pytest.importorskip("rclpy")
NODES = Path(__file__).parent / "nodes"


def test_joint_state_between_two_processes(spawn, ros_env):
    _, env = ros_env
    spawn([sys.executable, NODES / "joint_talker.py"], name="talker")
    out = subprocess.run([sys.executable, NODES / "joint_listener.py", "5"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RECV")]
    assert len(lines) == 5
    for ln in lines:
        _, names, pos = ln.split(" ")
        assert names == "joint_b,joint_a"
        b, a = (float(x) for x in pos.split(","))
        assert a == -b


def test_other_domain_hears_nothing(spawn, ros_env):
    dom, env = ros_env
    spawn([sys.executable, NODES / "joint_talker.py"], name="talker")
    other = isolated_ros_env(1 + dom % 100 if dom != 100 else 1)  # a neighbouring domain
    out = subprocess.run([sys.executable, NODES / "joint_listener.py", "1", "4"], env=other, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and "RECV" not in out.stdout
