"""Helpers for tests that touch DDS: each gets its own ROS_DOMAIN_ID and localhost-only discovery.

Used by test/conftest.py; kept in the package so that downstream packages can test their nodes the same way.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator, Optional

_DOMAIN_LOCK_DIR = "/tmp/genil_ros_domains"


def _claim_domain() -> tuple[int, socket.socket]:
    """Claim a free ROS_DOMAIN_ID in 1..100 for this test, across concurrent test processes.

    The claim is an abstract-namespace unix socket bound to a name derived from the id: the kernel frees
    it when the process dies, so a crashed test never leaks a domain.
    """
    start = (os.getpid() * 7919 + int(time.monotonic() * 1000)) % 100
    for i in range(100):
        dom = 1 + (start + i) % 100
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(f"\0genil_ros_domain_{dom}")
            return dom, s
        except OSError:
            s.close()
    raise RuntimeError("no free ROS_DOMAIN_ID in 1..100")


def isolated_ros_env(domain_id: int, base: Optional[dict] = None) -> dict:
    """Environment for a process on ``domain_id`` that discovers only peers on this host."""
    env = dict(os.environ if base is None else base)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated since Jazzy; the range above replaces it
    env.pop("ROS_STATIC_PEERS", None)
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def ros_domain() -> Iterator[int]:
    """Claim a domain and point this process's environment at it for the duration."""
    dom, claim = _claim_domain()
    keys = ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS",
            "RMW_IMPLEMENTATION")
    saved = {k: os.environ.get(k) for k in keys}
    new = isolated_ros_env(dom)
    for k in keys:
        if k in new:
            os.environ[k] = new[k]
        else:
            os.environ.pop(k, None)
    try:
        yield dom
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        claim.close()


class ManagedProcess:
    """A child process (a node) that is always stopped: SIGINT, then SIGTERM, then SIGKILL."""

    def __init__(self, args: list[str], env: dict, log_path: Optional[str] = None):
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "wb") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        import signal

        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        return self.proc.wait()

    def output(self) -> str:
        if not self.log_path:
            return ""
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")


def python_module_cmd(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
