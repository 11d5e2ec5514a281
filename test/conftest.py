"""Shared fixtures. DDS tests: `ros_env` gives each test its own ROS_DOMAIN_ID and localhost-only
discovery; `ros_context` an rclpy context on that domain; `spawn` starts node processes that are
always stopped at teardown (their output is printed when the test fails)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
# One BLAS/OpenMP thread per process: the suite runs node processes beside pytest on 2 cores, and
# oversubscribed torch threads turn seconds into minutes. Set before anything imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from genil_ros.testing import ManagedProcess, isolated_ros_env, ros_domain  # noqa: E402


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small networks on a shared 2-core machine: one thread is faster (no OpenMP oversubscription),
    even when the caller's OMP_NUM_THREADS asked for more."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def ros_env():
    """(domain_id, env) for this test; os.environ points at the domain while the test runs."""
    with ros_domain() as dom:
        yield dom, isolated_ros_env(dom)


@pytest.fixture
def ros_context(ros_env):
    """An initialised rclpy Context on the test's domain, shut down afterwards."""
    rclpy = pytest.importorskip("rclpy")
    dom, _ = ros_env
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=dom)
    try:
        yield ctx
    finally:
        ctx.try_shutdown()


@pytest.fixture
def spawn(ros_env, tmp_path, request):
    """spawn(args) -> ManagedProcess on the test's domain; all are stopped after the test."""
    _, env = ros_env
    procs: list[ManagedProcess] = []

    def _spawn(args, extra_env=None, name=None):
        e = dict(env)
        e.update(extra_env or {})
        log = tmp_path / f"{name or 'proc'}{len(procs)}.log"
        p = ManagedProcess([str(a) for a in args], e, str(log))
        procs.append(p)
        return p

    yield _spawn
    for p in procs:
        p.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for p in procs:
            print(f"----- output of {' '.join(p.args)} -----\n{p.output()[-4000:]}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
