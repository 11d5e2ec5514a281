"""The common `main()` of a plain (non-lifecycle) node: init, build, spin, and always clean up.

A GenilError while building or running the node (bad parameter, missing file...) is printed as one line
naming the node and exits 2; Ctrl-C / SIGTERM / an external shutdown end it with 0 - also under
`ros2 launch`, where Ctrl-C delivers two SIGINTs (see ignore_shutdown_signals).
"""

from __future__ import annotations

import sys
from typing import Callable, Optional


def ignore_shutdown_signals() -> None:
    """SIGINT and SIGTERM are ignored from here on: call it once the process is shutting down.

    Ctrl-C under `ros2 launch` reaches every process of the group and launch then forwards a SIGINT of its
    own, so each node gets two. The second must neither cut the cleanup short (a bag left unclosed) nor
    land in interpreter teardown, which puts SIG_DFL back for signals with Python handlers and so kills
    the exiting process (launch: "process has died [exit code -2]"). A node that hangs in its cleanup is
    still ended by launch's SIGKILL escalation. (Main thread only, as Python's signal.signal.)"""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def skip_final_collection() -> None:
    """Call last, once the node is cleaned up: the interpreter's teardown then skips the garbage collection
    over every object torch, diffusers & co. created at import (gc.freeze), which took 5-15 s of a busy
    2-core machine - past launch's SIGINT -> SIGTERM -> SIGKILL escalation (5 s + 10 s). What the node owns
    (bags, DDS entities, the model) is released explicitly before this."""
    import gc

    gc.freeze()


def run_node(name: str, make_node: Callable, argv: Optional[list] = None,
             spin: Optional[Callable] = None) -> int:
    """Run the node from ``make_node()`` on a single-threaded executor until shutdown.

    ``spin(node, executor)`` replaces ``executor.spin()`` (e.g. a node that steps its own clock)."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from genil_ros.errors import GenilError

    rclpy.init(args=list(sys.argv if argv is None else argv))
    node = None
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if spin is None:
            executor.spin()
        else:
            spin(node, executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except GenilError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2
    except Exception:
        if rclpy.ok():
            raise
        # a signal shut the context down while the executor was making its wait set: rclpy raises
        # RCLError "context is not valid" then, not ExternalShutdownException - a normal shutdown
    finally:
        ignore_shutdown_signals()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        ignore_shutdown_signals()  # try_shutdown put back the handlers rclpy.init had replaced
        skip_final_collection()
    return 0
