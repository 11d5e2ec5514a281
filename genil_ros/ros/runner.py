"""The common `main()` of a plain (non-lifecycle) node: init, build, spin, and always clean up.

A GenilError while building or running the node (bad parameter, missing file...) is printed as one line
naming the node and exits 2; Ctrl-C / SIGTERM / an external shutdown end it with 0.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional


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
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
