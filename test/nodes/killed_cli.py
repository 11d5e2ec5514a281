"""Run a `genil-ros` command that dies by SIGKILL at a chosen point, as `kill -9` would leave it.

Usage: killed_cli.py POINT GENIL_ROS_ARGS...

POINT:
  save:N     the Nth torch.save writes half of its bytes, then the process is killed (a checkpoint save)
  episode:N  killed right after the Nth episode of a dataset store is written into its temp directory
  aside      killed right after a directory was moved aside (``<target>.old-<pid>``), before the new one
             is renamed into place: the narrowest window of an atomic directory replacement

The kill is a real SIGKILL of this process (no cleanup, no atexit), at a point chosen so that a test can
reproduce it; an external `kill -9` lands at some such point by chance. If the point is never reached,
the command ends normally and its exit status says so.
"""

from __future__ import annotations

import io
import os
import re
import signal
import sys


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_in_nth_save(n: int) -> None:
    import torch

    real_save, count = torch.save, [0]

    def save(obj, f, *args, **kwargs):
        count[0] += 1
        if count[0] < n:
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf)
        with open(f, "wb") as out:
            out.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        _die()

    torch.save = save


def _kill_after_nth_episode(n: int) -> None:
    from genil_ros.data.store_writer import StoreWriter

    real, count = StoreWriter._episode_done, [0]

    def done(self, ep, low):
        real(self, ep, low)
        count[0] += 1
        if count[0] >= n:
            _die()

    StoreWriter._episode_done = done


def _kill_after_moving_aside() -> None:
    real = os.replace
    aside = re.compile(rf"\.old-{os.getpid()}$")

    def replace(src, dst, *args, **kwargs):
        real(src, dst, *args, **kwargs)
        if aside.search(os.fspath(dst)):
            _die()

    os.replace = replace


def main(argv: list[str]) -> int:
    point, args = argv[0], argv[1:]
    kind, _, n = point.partition(":")
    if kind == "save":
        _kill_in_nth_save(int(n))
    elif kind == "episode":
        _kill_after_nth_episode(int(n))
    elif kind == "aside":
        _kill_after_moving_aside()
    else:
        raise SystemExit(f"killed_cli.py: unknown point {point!r}")
    from genil_ros.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
