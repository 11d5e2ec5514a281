"""Helpers for tests that touch DDS: each gets its own ROS_DOMAIN_ID and localhost-only discovery.

Used by test/conftest.py, `genil-ros demo` and the bench scripts that run nodes as processes; kept in the
package so that downstream packages can test their nodes the same way. ``wait_until``, ``call_service``
and ``change_state`` drive nodes from outside (a process of their own, the executor spinning in a thread).
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


def wait_until(pred, timeout: float, what: str, procs=()) -> None:
    """Poll ``pred()`` every 50 ms until it is true. GenilError naming ``what`` after ``timeout`` s, or at once
    when a process of ``procs`` (``(name, ManagedProcess)`` pairs) has exited, with the tail of its output."""
    from genil_ros.errors import GenilError

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        for name, p in procs:
            if not p.alive():
                raise GenilError(f"{name} exited while waiting for {what}:\n{p.output()[-3000:]}")
        time.sleep(0.05)
    raise GenilError(f"timed out after {timeout:.0f} s waiting for {what}")


def call_service(client, what: str, timeout: float = 30.0, request=None) -> str:
    """Call the service of ``client`` (a ``std_srvs/Trigger`` unless ``request`` is given) and wait up to
    ``timeout`` s for the answer, which another thread's executor delivers; its ``message``. GenilError when
    the service is not there, does not answer, or answers ``success: false``."""
    from genil_ros.errors import GenilError

    if request is None:
        from std_srvs.srv import Trigger

        request = Trigger.Request()
    if not client.wait_for_service(timeout_sec=timeout):
        raise GenilError(f"{client.srv_name}: service not available after {timeout:.0f} s ({what})")
    fut = client.call_async(request)
    end = time.monotonic() + timeout
    while not fut.done() and time.monotonic() < end:
        time.sleep(0.01)
    if not fut.done():
        raise GenilError(f"{client.srv_name}: no answer within {timeout:.0f} s ({what})")
    res = fut.result()
    if not res.success:
        raise GenilError(f"{client.srv_name}: {what} failed: {getattr(res, 'message', '')}")
    return getattr(res, "message", "")


def change_state(client, label: str, timeout: float = 30.0) -> None:
    """A lifecycle node's transition ``label`` ('activate' / 'deactivate') through its ``ChangeState`` client."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    req = ChangeState.Request()
    req.transition.id = {"activate": Transition.TRANSITION_ACTIVATE,
                         "deactivate": Transition.TRANSITION_DEACTIVATE}[label]
    call_service(client, label, timeout, request=req)
