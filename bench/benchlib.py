"""What several bench scripts share (imported by name: a script's own folder is first on ``sys.path``).

- ``read_jsonl(path)``: the records a fake robot (``test/nodes/fake_robot.py --record``) wrote so far;
- ``wait_first_command(rec, procs, timeout)``: until the policy node commands the fake robot;
- ``print_table(head, rows)``: a left-aligned text table;
- ``JsonLineChild``: a helper process (e.g. LeRobot in its own venv) asked one JSON line at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path


def read_jsonl(path) -> list[dict]:
    """The JSON records of ``path``, one a line (none when it does not exist yet; a partial last line skipped)."""
    out = []
    if Path(path).exists():
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out


def wait_first_command(rec, procs: list, timeout: float) -> None:
    """Until the fake robot's record ``rec`` holds a trajectory command. ``procs`` = [robot, node]
    (``ManagedProcess``); RuntimeError when one dies, or after ``timeout`` s with the node's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not all(p.alive() for p in procs):
            raise RuntimeError("a process died:\n" + "\n".join(p.output()[-2000:] for p in procs))
        if any(r["kind"] == "traj" for r in read_jsonl(rec)):
            return
        time.sleep(0.2)
    raise RuntimeError(f"no command within {timeout:.0f} s:\n" + procs[-1].output()[-2000:])


def print_table(head, rows) -> None:
    """``head`` and ``rows`` (sequences of the same length) as left-aligned columns under a rule."""
    widths = [max(len(str(r[i])) for r in list(rows) + [head]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*head))
    print(fmt.format(*["-" * w for w in widths]))
    for r in rows:
        print(fmt.format(*r))


class JsonLineChild:
    """A child process that reads one JSON request a line and answers one JSON line (``{"error": ...}`` on a
    failure); ``{"op": "quit"}`` ends it. ``threads`` sets its OpenMP/MKL threads; ``env`` adds variables;
    our PYTHONPATH is not passed on (it runs another venv's python)."""

    def __init__(self, python, script, threads: int, name: str, env: dict | None = None):
        child_env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), **(env or {}))
        child_env.pop("PYTHONPATH", None)
        self.name = name
        self.threads = threads
        self.p = subprocess.Popen([str(python), str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, env=child_env, cwd="/")

    def ask(self, **cmd) -> dict:
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} child process exited (code {self.p.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.name} child: {reply['error']}")
        return reply

    def close(self, timeout: float = 60.0) -> None:
        try:
            if self.p.poll() is None:
                self.p.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.p.stdin.flush()
        except BrokenPipeError:
            pass
        self.p.wait(timeout=timeout)
