"""The policy node over real DDS, as separate processes: a fake robot (test/nodes/fake_robot.py) publishes
joint states and images and records what it receives; the node runs a real (small, untrained) diffusion
policy checkpoint written by save_checkpoint."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

REPO = Path(__file__).resolve().parent.parent
NODES = Path(__file__).parent / "nodes"
sys.path.insert(0, str(NODES))
from fake_robot_policy import make_checkpoint, make_checkpoint_naming_a_code_pickle  # noqa: E402

JOINTS = ["a", "b", "c"]
PERIOD = 0.1  # the checkpoints' control rate: 10 Hz
T_O, T_P, T_A = 2, 8, 4
ENV = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


# --------------------------------------------------------------------------- helpers


def read_record(path) -> list[dict]:
    out = []
    if not Path(path).exists():
        return out
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:  # a line being written
                pass
    return out


def kinds(rec, kind, t0=None, t1=None):
    return [r for r in rec if r["kind"] == kind and (t0 is None or r["wall_ns"] >= t0)
            and (t1 is None or r["wall_ns"] < t1)]


def wait_for(pred, timeout, what, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            assert p.alive(), f"{what}: a process died:\n{p.output()[-3000:]}"
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Operator:
    """The test's own ROS node: switches the robot's mode and calls the policy node's services."""

    def __init__(self, ctx, node_name="policy_node"):
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String

        self.node = rclpy.create_node(f"{node_name}_tester", context=ctx)
        self.ex = SingleThreadedExecutor(context=ctx)
        self.ex.add_node(self.node)
        self.target = node_name
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.mode_pub = self.node.create_publisher(String, "/fake_robot/mode", qos)
        self._clients = {}

    def set_mode(self, mode: str, rec_path, timeout=10.0) -> int:
        """Switch the robot's behaviour; returns the wall time (ns) the robot switched at."""
        from std_msgs.msg import String

        self.mode_pub.publish(String(data=mode))

        def seen():
            self.ex.spin_once(timeout_sec=0.02)
            ms = [r for r in read_record(rec_path) if r["kind"] == "mode"]
            return ms[-1]["wall_ns"] if ms and ms[-1]["mode"] == mode else None

        return wait_for(seen, timeout, f"robot mode {mode}")

    def call(self, srv_type, name, request, timeout=60.0):
        key = (srv_type, name)
        if key not in self._clients:
            self._clients[key] = self.node.create_client(srv_type, name)
        cli = self._clients[key]
        assert cli.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        fut = cli.call_async(request)
        self.ex.spin_until_future_complete(fut, timeout_sec=timeout)
        assert fut.done(), f"service {name} did not answer"
        return fut.result()

    def transition(self, label: str) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        ids = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP,
               "shutdown": Transition.TRANSITION_UNCONFIGURED_SHUTDOWN}
        req = ChangeState.Request()
        req.transition.id = ids[label]
        return self.call(ChangeState, f"/{self.target}/change_state", req).success

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self.call(GetState, f"/{self.target}/get_state", GetState.Request()).current_state.label

    def trigger(self, name: str):
        from std_srvs.srv import Trigger

        return self.call(Trigger, f"/{self.target}/{name}", Trigger.Request())

    def set_param(self, name: str, value: str) -> bool:
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        req = SetParameters.Request(parameters=[Parameter(name=name, value=ParameterValue(
            type=ParameterType.PARAMETER_STRING, string_value=value))])
        return all(r.successful for r in self.call(SetParameters, f"/{self.target}/set_parameters", req).results)

    def get_param(self, name: str):
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        resp = self.call(GetParameters, f"/{self.target}/get_parameters", GetParameters.Request(names=[name]))
        return parameter_value_to_python(resp.values[0])

    def close(self):
        self.ex.shutdown(timeout_sec=1.0)
        self.node.destroy_node()


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "genil_ros.cli", "policy", *args]


def node_cmd(*params: str) -> list[str]:
    args = [sys.executable, "-m", "genil_ros.ros.policy_node", "--ros-args"]
    for p in params:
        args += ["-p", p]
    return args


def check_receding_horizon(cmds: list[dict], chunks: list[dict]) -> int:
    """Every command is the current chunk's plan from this tick on; returns how many chunks were used.

    A chunk's stamp is the tick its observation window ends at (its point 0 is the action for that tick,
    already past when the chunk arrives); a command's stamp is its tick. The tick offset is recovered from
    the stamps (+-1 for timer jitter on a loaded machine) and must then advance by one per command."""
    stamps = np.array([c["stamp_ns"] for c in chunks])
    used, prev = [], None
    for cmd in cmds:
        assert cmd["names"] == JOINTS
        if prev is not None and len(cmd["points"]) == 1 and np.allclose(cmd["points"][0], prev["points"][0]):
            prev = cmd  # a hold (an input was late on this loaded machine): allowed, not an action
            continue
        prev = cmd
        n = len(cmd["points"])
        assert np.allclose(cmd["tfs"], PERIOD * np.arange(1, n + 1), atol=1e-6)  # points spaced by the period
        match = None
        for ci in np.flatnonzero(stamps < cmd["stamp_ns"])[::-1][:2]:  # the newest chunk, or the one before it
            r = int(round((cmd["stamp_ns"] - stamps[ci]) / 1e9 / PERIOD))
            pts = np.asarray(chunks[ci]["points"])
            for idx in (r, r - 1, r + 1):
                if 1 <= idx < len(pts) and np.allclose(cmd["points"][0], pts[idx], atol=1e-6):
                    match = (int(ci), idx, pts)
                    break
            if match:
                break
        assert match is not None, f"command at {cmd['stamp_ns']} is not the planned action of a recent chunk"
        ci, idx, pts = match
        if used and used[-1][0] == ci:
            assert idx == used[-1][1] + 1, f"chunk {ci}: entry {idx} follows entry {used[-1][1]}"
        if idx < T_A:  # within the executed T_a: the rest of the plan follows as the trajectory's points
            assert n == T_A - idx and np.allclose(cmd["points"], pts[idx:T_A], atol=1e-6)
        used.append((ci, idx))
    # receding horizon: chunk after chunk, each used for a contiguous run of ticks
    runs = [used[0][0]] + [u for (p, _), (u, _) in zip(used, used[1:]) if u != p]
    assert runs == sorted(set(runs)), f"chunks are not used one after another: {runs}"
    return len(runs)


def test_receding_horizon_and_holding_on_bad_inputs(spawn, ros_context, tmp_path):
    ck = make_checkpoint(tmp_path / "ck", camera=True)
    rec = tmp_path / "robot.jsonl"
    robot = spawn([sys.executable, NODES / "fake_robot.py", "--record", rec, "--camera", "/camera/image_raw",
                   "--image-size", "48x64"], extra_env=ENV, name="robot")
    node = spawn(node_cmd(f"checkpoint:={ck}", "device:=cpu", "autostart:=true", "max_step_rad:=100.0",
                          "max_staleness_s:=0.4"), extra_env=ENV, name="policy")
    tester = Operator(ros_context)
    procs = (robot, node)
    try:
        t_first = wait_for(lambda: (c := kinds(read_record(rec), "traj")) and c[0]["wall_ns"], 90,
                           "the first command", procs)
        # the first inferences after start-up can be slow (cold caches, a fresh clone compiling its .pyc):
        # measure the steady stream that follows
        time.sleep(2.0)
        t_start = time.time_ns()
        time.sleep(3.0)
        t_end = time.time_ns()
        r = read_record(rec)
        cmds, chunks = kinds(r, "traj", t_start, t_end), kinds(r, "chunk")
        assert t_first < t_start
        # the configured rate, every tick (generous bounds: a loaded 2-core machine)
        rate = (len(cmds) - 1) / ((cmds[-1]["wall_ns"] - cmds[0]["wall_ns"]) / 1e9)
        assert 7.0 < rate < 13.0, rate
        assert len(chunks) >= 3
        assert check_receding_horizon(cmds, chunks) >= (len(cmds) - 1) // T_A

        # each bad input: the node holds (one hold command at the last commanded position, then
        # nothing), says why in /diagnostics, and resumes by itself when the input is good again
        cases = [("silent", "/joint_states"), ("bad_encoding", "32FC1"), ("missing_joint", "missing joint"),
                 ("nan", "non-finite"), ("huge", "NaN/Inf"), ("garbage", "/camera/image_raw")]
        for mode, why in cases:
            t_bad = tester.set_mode(mode, rec)
            time.sleep(2.0)
            t_good = tester.set_mode("normal", rec)
            t_back = wait_for(lambda: (c := kinds(read_record(rec), "traj", t_good)) and c[0]["wall_ns"], 30,
                              f"commands again after {mode}", procs)
            r = read_record(rec)
            during = kinds(r, "traj", t_bad, t_good)
            assert during, f"{mode}: no hold command"
            hold = during[-1]  # nothing after the hold until the input is good again
            last = during[-2] if len(during) > 1 else kinds(r, "traj", t_first, t_bad)[-1]
            assert len(hold["points"]) == 1 and np.allclose(hold["points"][0], last["points"][0]), \
                f"{mode}: the last command while the input was bad is not a hold at the last commanded position"
            assert hold["wall_ns"] < t_bad + int(1.5e9), f"{mode}: held only after {(hold['wall_ns'] - t_bad) / 1e9} s"
            diags = [d for d in kinds(r, "diag", hold["wall_ns"], t_good + int(0.3e9))
                     if d["message"].startswith("holding")]
            assert diags and any(why in d["message"] for d in diags), (mode, [d["message"] for d in diags])
            assert diags[-1]["level"] >= 1 and diags[-1]["values"]["commanding"] == "false"
            t_first = t_back
        time.sleep(1.0)
        r = read_record(rec)
        after = kinds(r, "traj", t_first)
        assert len(after) >= 6
        check_receding_horizon(after, kinds(r, "chunk"))
        assert any(d["level"] == 0 and d["message"] == "commanding" for d in kinds(r, "diag", t_first))
        v = kinds(r, "diag")[-1]["values"]
        assert float(v["inference_latency_median_ms"]) > 0 and float(v["measured_control_rate_hz"]) > 0
        # backend auto without an ONNX export beside the checkpoint: eager torch, with the thread plan
        assert v["backend"].startswith("torch") and v["threads"].startswith("intra-op ")
        assert int(v["rejected_messages /camera/image_raw"]) > 0 and int(v["rejected_messages /joint_states"]) > 0
        assert node.alive() and robot.alive()
    finally:
        tester.close()
    assert node.stop() == 0  # SIGINT: a clean exit


def test_lifecycle_services_position_mode_and_sim_time(spawn, ros_context, tmp_path):
    ck = make_checkpoint(tmp_path / "ck", camera=True, compressed=True, camera_topic="/cam/compressed")
    other = make_checkpoint(tmp_path / "other", joints=("x", "y"))
    diverged = make_checkpoint(tmp_path / "diverged", camera=True, compressed=True, nan_weights=True)
    rec = tmp_path / "robot.jsonl"
    robot = spawn([sys.executable, NODES / "fake_robot.py", "--record", rec, "--camera", "/cam/compressed",
                   "--compressed", "--sim-clock", "1000"], extra_env=ENV, name="robot")
    lower, upper, step = [-0.2, -0.3, -0.1], [0.2, 0.1, 0.3], 0.05
    node = spawn(node_cmd(f"checkpoint:={tmp_path / 'missing'}", "device:=cpu", "output_mode:=position",
                          "use_sim_time:=true", f"joint_lower_limits:={lower}", f"joint_upper_limits:={upper}",
                          f"max_step_rad:={step}"), extra_env=ENV, name="policy")
    tester = Operator(ros_context)
    procs = (robot, node)
    try:
        assert tester.state() == "unconfigured"
        assert not tester.transition("configure")  # a missing checkpoint: an error, not a crash
        assert tester.state() == "unconfigured" and node.alive()
        assert "missing" in node.output()
        assert tester.set_param("checkpoint", str(ck))
        assert tester.transition("configure")
        assert tester.state() == "inactive"
        time.sleep(1.0)
        assert kinds(read_record(rec), "position") == []  # inactive: no commands

        assert tester.transition("activate")
        t_act = time.time_ns()
        wait_for(lambda: len(kinds(read_record(rec), "position", t_act)) >= 10, 60, "10 commands", procs)
        chunks = kinds(read_record(rec), "chunk")
        assert chunks and all(900e9 < c["stamp_ns"] < 2000e9 for c in chunks)  # /clock time, not wall time

        resp = tester.trigger("reset")
        assert resp.success
        make_checkpoint(ck, camera=True, compressed=True, camera_topic="/cam/compressed", seed=1)  # a newer one
        resp = tester.trigger("reload")
        assert resp.success, resp.message
        assert tester.set_param("checkpoint", str(other))
        resp = tester.trigger("reload")
        assert not resp.success and "dimensions differ" in resp.message, resp.message  # kept the running model
        assert tester.set_param("checkpoint", str(diverged))
        resp = tester.trigger("reload")
        assert not resp.success and "NaN" in resp.message, resp.message
        t_mid = time.time_ns()
        wait_for(lambda: len(kinds(read_record(rec), "position", t_mid)) >= 10, 30, "commands after reload", procs)

        assert tester.transition("deactivate")
        t_deact = time.time_ns()
        assert tester.state() == "inactive"
        time.sleep(1.0)
        r = read_record(rec)
        cmds = kinds(r, "position")
        assert len(kinds(r, "position", t_deact + int(0.3e9))) == 0  # nothing after the hold
        assert np.allclose(cmds[-1]["data"], cmds[-2]["data"])  # the hold: the last command again
        data = np.array([c["data"] for c in cmds])
        assert np.all(data >= np.array(lower) - 1e-9) and np.all(data <= np.array(upper) + 1e-9)
        assert np.max(np.abs(np.diff(data, axis=0))) <= step + 1e-6  # the first is relative to float32 state

        assert tester.transition("activate")
        t_re = time.time_ns()
        wait_for(lambda: len(kinds(read_record(rec), "position", t_re)) >= 3, 30, "commands after re-activate", procs)
        assert tester.transition("deactivate") and tester.transition("cleanup")
        assert tester.state() == "unconfigured"
        assert tester.transition("shutdown")
        wait_for(lambda: not node.alive(), 20, "the node to exit after shutdown")
        assert node.proc.returncode == 0
    finally:
        tester.close()


def test_cli_exits_2_with_one_line_when_autostart_fails(spawn, tmp_path):
    """`genil-ros policy` (not the launched node) ends with status 2 and the reason in one line: a missing
    checkpoint, a checkpoint that names a pickle with code in it, a bad -p value (refused before start)."""
    evil_ck = make_checkpoint_naming_a_code_pickle(tmp_path / "evil", image_hw=(16, 16))
    cases = [(["--checkpoint", str(tmp_path / "nonexistent")], "configure failed: .*nonexistent"),
             (["--checkpoint", str(evil_ck), "--device", "cpu"], "configure failed: .*evil.r18.pth.*refused"),
             (["--checkpoint", "x", "-p", "output_mode:=foo"],
              "genil-ros policy: error: -p output_mode:=foo: parameter output_mode: 'foo' is not one of")]
    procs = [(spawn(cli_cmd(*argv), extra_env=ENV, name="cli"), pat) for argv, pat in cases]
    for p, pat in procs:
        wait_for(lambda: not p.alive(), 120, f"{p.args[4:]} to exit")
        lines = [ln for ln in p.output().splitlines() if ln.strip()]
        assert p.proc.returncode == 2, p.output()
        assert len(lines) == 1 and re.search(pat, lines[0]), lines
        assert "weights_only" not in lines[0] and "waiting for lifecycle" not in lines[0]


def test_cli_params_file_is_not_overridden_by_untyped_flags(spawn, ros_context, tmp_path):
    """Precedence: params file < what the user typed. A params file's autostart: false and output_mode
    stay in force under `genil-ros policy --params-file`; typed values win over it."""
    import yaml

    ck = make_checkpoint(tmp_path / "ck")
    pf = tmp_path / "policy.yaml"
    pf.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "checkpoint": str(ck), "device": "cpu", "output_mode": "position", "autostart": False, "seed": 5}}}))
    quiet = spawn(cli_cmd("--params-file", str(pf), "--name", "quiet_policy"), extra_env=ENV, name="quiet")
    typed = spawn(cli_cmd("--params-file", str(pf), "--name", "typed_policy", "--output-mode", "trajectory",
                          "-p", "autostart:=true", "-p", "seed:=7"), extra_env=ENV, name="typed")
    a, b = Operator(ros_context, "quiet_policy"), Operator(ros_context, "typed_policy")
    try:
        assert a.state() == "unconfigured"  # autostart: false from the file, though the command autostarts by default
        assert (a.get_param("output_mode"), a.get_param("device"), a.get_param("seed")) == ("position", "cpu", 5)
        wait_for(lambda: b.state() == "active", 120, "the typed node to autostart", (typed,))
        assert (b.get_param("output_mode"), b.get_param("device"), b.get_param("seed")) == ("trajectory", "cpu", 7)
        assert quiet.alive()
    finally:
        a.close()
        b.close()
