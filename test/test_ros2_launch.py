"""`ros2 launch` for real: the launch files under upstream launch / launch_ros, driven and checked with the
ros2 command line exactly as the README writes it (`ros2 lifecycle set/get`, `ros2 topic echo/hz`,
`ros2 service call`, `ros2 param set`, `ros2 run`, `ros2 pkg`).

Needs `ros2` with launch, launch_ros and ros2cli: a sourced ROS 2, or ../shared/ros2-wheels installed by
scripts/bootstrap.sh. Without them these tests skip with that reason (test/test_launch.py still checks the
launch files statically); the ament-prefix and share-dir tests at the top need none of it.

The package is seen by ROS through an ament prefix that `genil-ros ament-prefix` lays out in a temp folder
(linking this checkout), first on AMENT_PREFIX_PATH. Each test has its own ROS_DOMAIN_ID (conftest
`ros_env`); `ros2 launch` runs in its own process group, so `stop()` is a real Ctrl-C (SIGINT to launch and
every node); the ros2 daemon a test started is stopped with it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from genil_ros.sim.env import JOINT_NAMES

ROOT = Path(__file__).resolve().parent.parent
FAKE_ROBOT = ROOT / "test" / "nodes" / "fake_robot.py"
ALL_NODES_LAUNCH = ROOT / "test" / "launch" / "all_nodes.launch.py"
MODEL = "sim_obstacle_dp"  # the shipped model: 4 joints, one 96x96 camera on /camera/image_raw
TRAJ_TOPIC = "/joint_trajectory_controller/joint_trajectory"
POS_TOPIC = "/forward_position_controller/commands"
EXECUTABLES = ["finetune_node", "genil-ros", "policy_node", "recorder_node", "rollout_recorder", "sim_node",
               "trainer_node"]


def _ros2() -> str | None:
    beside = Path(sys.executable).with_name("ros2")  # the venv's, when the wheels are installed there
    return str(beside) if beside.is_file() else shutil.which("ros2")


def _why_no_ros2() -> str | None:
    missing = [m for m in ("launch", "launch_ros", "ros2cli", "rclpy") if importlib.util.find_spec(m) is None]
    if missing or _ros2() is None:
        return (f"no `ros2 launch` here (missing: {', '.join(missing) or 'the ros2 command'}): source a ROS 2, "
                "or put ../shared/ros2-wheels beside the checkout and run scripts/bootstrap.sh")
    return None


needs_ros2 = pytest.mark.skipif(_why_no_ros2() is not None, reason=str(_why_no_ros2()))


# =========================================================================== the ament prefix (no ROS needed)


def _genil_ros(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ if env is None else env)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), e.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "genil_ros.cli", *args], env=e, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def ament_prefix(tmp_path_factory) -> Path:
    """An ament prefix for this checkout, made by the command a user runs."""
    prefix = tmp_path_factory.mktemp("ament") / "prefix"
    out = _genil_ros("ament-prefix", "--prefix", str(prefix), "--data", str(ROOT), "--quiet")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"export AMENT_PREFIX_PATH={prefix}${{AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}}\n"
    return prefix


def test_ament_prefix_layout(ament_prefix):
    prefix = ament_prefix
    assert (prefix / "share/ament_index/resource_index/packages/genil_ros").is_file()
    share = prefix / "share/genil_ros"
    # one link per file (os.walk in `ros2 launch` does not follow directory links), to this checkout
    assert os.readlink(share / "package.xml") == str(ROOT / "package.xml")
    assert os.readlink(share / "launch/sim_demo.launch.py") == str(ROOT / "launch/sim_demo.launch.py")
    assert (share / "config/gazebo/genil_arm.urdf.xacro").resolve() == ROOT / "config/gazebo/genil_arm.urdf.xacro"
    assert (share / "models" / MODEL / "meta.json").resolve() == ROOT / "models" / MODEL / "meta.json"
    assert not (share / "launch").is_symlink()
    scripts = Path(sys.executable).parent
    for name in EXECUTABLES:
        exe = prefix / "lib/genil_ros" / name
        assert os.access(exe, os.X_OK), exe
        assert exe.read_text().splitlines()[-1] == f'exec {scripts / name} "$@"'
    out = subprocess.run([str(prefix / "lib/genil_ros/genil-ros"), "--version"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("genil-ros "), out.stderr

    again = _genil_ros("ament-prefix", "--prefix", str(prefix), "--data", str(ROOT))  # idempotent
    assert again.returncode == 0
    assert "linked" not in again.stderr and "wrote" not in again.stderr, again.stderr


def test_ament_prefix_follows_the_data(tmp_path):
    """Links to files that are gone are removed, new files linked; files a pip install put there are kept."""
    from genil_ros.ament import lay_out

    data = tmp_path / "src"
    for rel in ("package.xml", "launch/a.launch.py", "config/x.yaml", "config/sub/y.yaml", "models/m/meta.json"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_text(rel)
    prefix = tmp_path / "prefix"
    share = prefix / "share/genil_ros"
    (share / "config").mkdir(parents=True)
    (share / "config/x.yaml").write_text("installed by pip")
    done = lay_out(prefix, data)
    assert any("kept 1 file(s)" in line for line in done), done
    assert (share / "config/x.yaml").read_text() == "installed by pip"
    assert (share / "config/sub/y.yaml").read_text() == "config/sub/y.yaml"

    (data / "config/sub/y.yaml").unlink()
    (data / "launch/b.launch.py").write_text("new")
    done = lay_out(prefix, data)
    assert not (share / "config/sub").exists()  # the dangling link and its empty folder are gone
    assert (share / "launch/b.launch.py").read_text() == "new"
    assert any("removed 1 link(s)" in line for line in done), done

    (data / "models").rename(data / "gone")
    from genil_ros.errors import GenilError

    with pytest.raises(GenilError, match="no models"):
        lay_out(prefix, data)


def test_share_dir_in_each_layout(tmp_path, ament_prefix):
    """paths.share_dir(): the checkout; an installed package found through the ament index (colcon, or
    `genil-ros ament-prefix`); else <sys.prefix>/share/genil_ros (pip's data_files)."""
    from genil_ros.paths import model_path, share_dir

    assert share_dir() == ROOT and model_path(MODEL) == ROOT / "models" / MODEL
    site = tmp_path / "site"  # the package installed without its checkout around it
    shutil.copytree(ROOT / "genil_ros", site / "genil_ros", ignore=shutil.ignore_patterns("__pycache__"))
    probe = "from genil_ros import paths; print(paths.share_dir()); print(paths.model_path('%s'))" % MODEL

    def run(ament: str | None) -> list[str]:
        env = dict(os.environ, PYTHONPATH=str(site))
        env.pop("AMENT_PREFIX_PATH", None)
        if ament:
            env["AMENT_PREFIX_PATH"] = ament
        out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    share, model = run(str(ament_prefix))
    assert share == str(ament_prefix / "share/genil_ros")
    assert (Path(model) / "meta.json").is_file()
    share, _ = run(None)
    assert share == str(Path(sys.prefix) / "share/genil_ros")


# =========================================================================== helpers for the ros2 tests


class Ros2:
    """The `ros2` command on the test's domain, the package seen through the test's ament prefix."""

    def __init__(self, env: dict):
        self.env = env
        self.exe = _ros2()

    def __call__(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self.exe, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(e.cmd, 124, _text(e.stdout), _text(e.stderr))

    def until(self, *args: str, expect: str, timeout: float = 30.0, each: float = 15.0) -> str:
        """Run ``ros2 args`` until it succeeds with ``expect`` in its output (discovery takes a moment)."""
        end = time.monotonic() + timeout
        out = None
        while time.monotonic() < end:
            out = self(*args, timeout=min(each, max(1.0, end - time.monotonic())))
            if out.returncode == 0 and expect in out.stdout:
                return out.stdout
            time.sleep(0.5)
        pytest.fail(f"`ros2 {' '.join(args)}` never printed {expect!r} in {timeout:.0f} s; last: rc "
                    f"{out.returncode if out else None}\n{out.stdout if out else ''}\n{out.stderr if out else ''}")

    def echo_json(self, topic: str, contains: str = "", timeout: float = 60.0) -> dict:
        """The first std_msgs/String on ``topic`` (JSON) whose text contains ``contains``, through
        `ros2 topic echo --once --filter ...`."""
        import json

        out = self.until("topic", "echo", "--once", "--full-length", "--filter", f"{contains!r} in m.data", topic,
                         expect="data:", timeout=timeout, each=timeout)
        return json.loads(first_message(out)["data"])

    def hz(self, topic: str, seconds: float = 3.0, timeout: float = 30.0) -> float:
        """`ros2 topic hz TOPIC`, stopped like Ctrl-C ``seconds`` after its first reading (discovery on a busy
        machine takes a while); its last average rate."""
        import threading

        p = subprocess.Popen([self.exe, "topic", "hz", topic], env=self.env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
        reader.start()
        end = time.monotonic() + timeout
        while time.monotonic() < end and not any("average rate" in line for line in list(lines)):
            time.sleep(0.2)
        time.sleep(seconds)
        os.killpg(p.pid, signal.SIGINT)
        p.wait(20)
        reader.join(5)
        rates = [float(v) for v in re.findall(r"average rate: ([0-9.]+)", "".join(lines))]
        assert rates, f"`ros2 topic hz {topic}` measured nothing in {timeout:.0f} s:\n{''.join(lines)}"
        return rates[-1]


def first_message(echo_output: str) -> dict:
    """The first message `ros2 topic echo` printed, as a dict (its "A message was lost" reports dropped)."""
    lines, skipping = [], False
    for line in echo_output.split("\n---")[0].splitlines():
        if line.startswith("A message was lost"):
            skipping = True
        elif not (skipping and line.startswith("\t")):
            skipping = False
            lines.append(line)
    return yaml.safe_load("\n".join(lines))


def _text(b) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


@pytest.fixture
def ros2(ros_env, ament_prefix, tmp_path):
    """Ros2 on this test's domain; the ros2 daemon it may start is stopped afterwards."""
    _, env = ros_env
    env = dict(env)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(filter(None, [str(ament_prefix), env.get("AMENT_PREFIX_PATH")]))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))  # nodes run this checkout
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["ROS_LOG_DIR"] = str(tmp_path / "ros_log")
    env["OMP_NUM_THREADS"] = "1"
    env.setdefault("MUJOCO_GL", "egl")
    r = Ros2(env)
    yield r
    r("daemon", "stop", timeout=20)


class Launched:
    """A `ros2 launch` process (its own process group) and what its log says about the nodes."""

    def __init__(self, proc):
        self.proc = proc

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = re.search(pattern, self.proc.output())
            if m:
                return m
            if not self.proc.alive():
                break
            time.sleep(0.3)
        pytest.fail(f"`ros2 launch` {'exited' if not self.proc.alive() else 'never printed'} {pattern!r}:\n"
                    f"{self.proc.output()[-6000:]}")

    def pids(self) -> dict[str, int]:
        return {name: int(pid) for name, pid in
                re.findall(r"\[INFO\] \[(\w+)-\d+\]: process started with pid \[(\d+)\]", self.proc.output())}

    def exits(self) -> dict[str, str]:
        """node -> 'clean' or the exit code launch reported."""
        out = {}
        for name, how in re.findall(r"\[(\w+)-\d+\]: process has (finished cleanly|died \[pid \d+, exit code -?\d+)",
                                    self.proc.output()):
            out[name] = "clean" if how == "finished cleanly" else how.split()[-1]
        return out

    def assert_clean_exit(self, names: list[str], rc: int) -> None:
        log = self.proc.output()
        assert rc == 0, f"ros2 launch exited {rc}:\n{log[-6000:]}"
        assert self.exits() == {n: "clean" for n in names}, log[-6000:]
        assert "Traceback" not in log, log[-6000:]


def launch(spawn, ros2: Ros2, *args: str, name: str = "launch") -> Launched:
    return Launched(spawn([ros2.exe, "launch", *args], extra_env=ros2.env, name=name))


def fake_robot(spawn, ros2: Ros2, tmp_path: Path):
    """test/nodes/fake_robot.py as the ros2_control arm: /joint_states + a 96x96 camera, follows commands."""
    record = tmp_path / "robot.jsonl"
    proc = spawn([sys.executable, FAKE_ROBOT, "--record", record, "--joints", ",".join(JOINT_NAMES),
                  "--camera", "/camera/image_raw", "--image-size", "96x96", "--init", "0.0,0.3,-0.6,0.2"],
                 extra_env=ros2.env, name="fake_robot")
    return proc, record


def received(record: Path, kind: str) -> int:
    text = record.read_text() if record.exists() else ""
    return text.count(f'"kind": "{kind}"')


def lifecycle_state(ros2: Ros2, node: str, state: str) -> None:
    ros2.until("lifecycle", "get", node, expect=state)


# =========================================================================== the launch files, launched


@needs_ros2
def test_package_found_by_ros2(ros2):
    assert ros2.until("pkg", "prefix", "genil_ros", expect="/").strip() == ros2.env["AMENT_PREFIX_PATH"].split(
        os.pathsep)[0]
    exes = ros2.until("pkg", "executables", "genil_ros", expect="policy_node")
    assert sorted(line.split()[1] for line in exes.splitlines()) == EXECUTABLES
    assert "usage: genil-ros COMMAND" in ros2.until("run", "genil_ros", "genil-ros", "--help", expect="usage")
    args = ros2.until("launch", "genil_ros", "policy.launch.py", "--show-args", expect="checkpoint")
    assert "'activate'" in args and "'remappings'" in args


def _episode_outcome(ros2: Ros2, k: int, timeout: float = 45.0) -> str:
    """'success' or 'collided' (the sim's ~/status once episode k is decided), or 'undecided' after timeout."""
    decided = (f"'\"episode\": {k},' in m.data and "
               "('\"success\": true' in m.data or '\"collided\": true' in m.data)")
    out = ros2("topic", "echo", "--once", "--filter", decided, "/sim_node/status", "std_msgs/msg/String",
               timeout=timeout)
    if out.returncode != 0 or "data:" not in out.stdout:
        return "undecided"
    if '"success": true' in out.stdout:
        assert "data: true" in ros2.until("topic", "echo", "--once", "/sim_node/success", expect="data:")
        return "success"
    return "collided"


@needs_ros2
def test_sim_demo_closed_loop(ros2, spawn):
    """`ros2 launch genil_ros sim_demo.launch.py`, no arguments: the shipped model drives the sim to the
    target (~/success), over at least two episodes with the README's next-episode commands between them;
    Ctrl-C ends both nodes with 0.

    Success is asked of one episode in up to four, not of each: over ROS on a busy 2-core machine the
    policy sees late observations and now and then touches the post (`make demo` reports the rate)."""
    demo = launch(spawn, ros2, "genil_ros", "sim_demo.launch.py")
    demo.wait_for(r"\[policy_node\]: active: commanding", 90)
    lifecycle_state(ros2, "/policy_node", "active [3]")
    rate = ros2.hz(TRAJ_TOPIC)
    assert 5.0 < rate < 20.0, rate  # the 10 Hz control tick (sim at real time), with room for a busy machine

    outcomes = [_episode_outcome(ros2, 0)]
    while len(outcomes) < 4 and (len(outcomes) < 2 or "success" not in outcomes):
        k = len(outcomes)
        # the next episode, as the README says: hold, new scene, fresh observation buffer, go
        ros2.until("lifecycle", "set", "/policy_node", "deactivate", expect="Transitioning successful")
        reset = ros2.until("service", "call", "/sim_node/reset", "std_srvs/srv/Trigger", expect="success=True")
        assert f'"episode": {k}' in reset
        ros2.until("service", "call", "/policy_node/reset", "std_srvs/srv/Trigger", expect="success=True")
        ros2.until("lifecycle", "set", "/policy_node", "activate", expect="Transitioning successful")
        outcomes.append(_episode_outcome(ros2, k))
    print(f"sim_demo.launch.py episodes: {outcomes}")
    assert "success" in outcomes, f"episodes: {outcomes}\n{demo.proc.output()[-4000:]}"

    demo.assert_clean_exit(["sim_node", "policy_node"], demo.proc.stop(timeout=60))


@needs_ros2
def test_policy_launch_lifecycle_with_fake_robot(ros2, spawn, tmp_path):
    """policy.launch.py left unconfigured, then configure / activate / deactivate / cleanup with
    `ros2 lifecycle set`, each checked with `ros2 lifecycle get` and the command topic; SIGTERM ends it."""
    robot, record = fake_robot(spawn, ros2, tmp_path)
    lc = launch(spawn, ros2, "genil_ros", "policy.launch.py", f"checkpoint:={MODEL}", "output_mode:=position",
                "configure:=false", "activate:=false")
    lc.wait_for(r"process started with pid", 30)
    lifecycle_state(ros2, "/policy_node", "unconfigured [1]")
    ros2.until("lifecycle", "set", "/policy_node", "configure", expect="Transitioning successful", timeout=60,
               each=60)
    lifecycle_state(ros2, "/policy_node", "inactive [2]")
    assert received(record, "position") == 0  # configured, not commanding

    ros2.until("lifecycle", "set", "/policy_node", "activate", expect="Transitioning successful")
    lifecycle_state(ros2, "/policy_node", "active [3]")
    cmd = first_message(ros2.until("topic", "echo", "--once", POS_TOPIC, expect="data:"))
    assert len(cmd["data"]) == len(JOINT_NAMES)
    assert 5.0 < ros2.hz(POS_TOPIC) < 20.0

    ros2.until("lifecycle", "set", "/policy_node", "deactivate", expect="Transitioning successful")
    lifecycle_state(ros2, "/policy_node", "inactive [2]")
    n = received(record, "position")
    time.sleep(2.0)
    assert received(record, "position") <= n + 1  # at most the one hold command, then silence
    ros2.until("lifecycle", "set", "/policy_node", "cleanup", expect="Transitioning successful")
    lifecycle_state(ros2, "/policy_node", "unconfigured [1]")
    assert robot.alive()

    os.kill(lc.pids()["policy_node"], signal.SIGTERM)  # as a process manager would; launch then ends by itself
    lc.wait_for(r"policy_node-\d+\]: process has", 60)
    assert lc.proc.proc.wait(30) == 0
    lc.assert_clean_exit(["policy_node"], 0)


def _my_arm_params(tmp_path: Path) -> Path:
    """config/real_arm_policy.yaml copied and edited for "my arm" (here the fake one), as the README says."""
    params = yaml.safe_load((ROOT / "config/real_arm_policy.yaml").read_text())
    p = params["/**/policy_node"]["ros__parameters"]
    p.update(device="cpu", camera_topics=["/camera/image_raw"], camera_compressed=[False], trajectory_topic=TRAJ_TOPIC,
             joint_lower_limits=[-3.0, -1.5, -2.5, -2.0], joint_upper_limits=[3.0, 1.5, 2.5, 2.0], max_staleness_s=0.5)
    p.pop("actions")  # the fake arm's model has no gripper entry (the node refuses limits for unknown entries)
    path = tmp_path / "my_arm_policy.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@needs_ros2
def test_real_arm_readme_commands(ros2, spawn, tmp_path):
    """README "Run on your robot", steps 4 and "Switching controllers", against the fake ros2_control arm:
    configured but holding until `ros2 lifecycle set /policy_node activate`; then the switch to the forward
    position controller (`ros2 control switch_controllers` itself needs ros2_control: not run here)."""
    robot, record = fake_robot(spawn, ros2, tmp_path)
    arm = launch(spawn, ros2, "genil_ros", "real_arm.launch.py", f"params_file:={_my_arm_params(tmp_path)}",
                 f"checkpoint:={ROOT / 'models' / MODEL}")
    arm.wait_for(r"policy node configured and holding", 90)
    lifecycle_state(ros2, "/policy_node", "inactive [2]")
    assert received(record, "traj") == 0  # safety default: nothing moves before `activate`

    ros2.until("lifecycle", "set", "/policy_node", "activate", expect="Transitioning successful")
    traj = first_message(ros2.until("topic", "echo", "--once", TRAJ_TOPIC, expect="joint_names"))
    assert traj["joint_names"] == list(JOINT_NAMES) and traj["points"]
    ros2.until("lifecycle", "set", "/policy_node", "deactivate", expect="Transitioning successful")
    ros2.until("lifecycle", "set", "/policy_node", "cleanup", expect="Transitioning successful")
    ros2.until("param", "set", "/policy_node", "output_mode", "position", expect="Set parameter successful")
    ros2.until("lifecycle", "set", "/policy_node", "configure", expect="Transitioning successful", timeout=60,
               each=60)
    ros2.until("lifecycle", "set", "/policy_node", "activate", expect="Transitioning successful")
    lifecycle_state(ros2, "/policy_node", "active [3]")
    cmd = first_message(ros2.until("topic", "echo", "--once", POS_TOPIC, expect="data:"))
    assert len(cmd["data"]) == len(JOINT_NAMES)
    assert robot.alive()

    arm.assert_clean_exit(["policy_node"], arm.proc.stop(timeout=60))


def _trainer_inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(experiment YAML, folder of 2 expert bags, one rollout bag) on the bundled sim's joints."""
    import numpy as np

    from genil_ros.adversarial.bagio import write_rollout_bag
    from genil_ros.sim.env import ArmEnv
    from genil_ros.sim.expert import ScriptedExpert

    def episode(seed: int, expert: bool):
        env = ArmEnv(variant="reach", render=False, seed=seed, terminate_on_success=False, max_episode_steps=30)
        scripted, rng = ScriptedExpert(env, seed=seed), np.random.default_rng(seed)
        obs, _ = env.reset(seed=seed)
        states, actions = [], []
        for _ in range(30):
            a = scripted.act(obs) if expert else obs["joint_pos"] + rng.uniform(-0.15, 0.15, 4).astype(np.float32)
            states.append(obs["joint_pos"])
            actions.append(a)
            obs, *_ = env.step(a)
        env.close()
        return np.array(states), np.array(actions)

    config = tmp_path / "task.yaml"
    config.write_text(textwrap.dedent(f"""
        task: {{joint_names: {list(JOINT_NAMES)}, cameras: [], control_rate_hz: 10.0}}
        dataset: {{action_source: command, action_topic: {POS_TOPIC}, max_staleness_s: 0.25}}
        adversarial: {{algo: amp, disc_hidden: [32, 32], disc_batch_size: 64}}
    """))
    expert = tmp_path / "expert"
    for k in range(2):
        write_rollout_bag(expert / f"demo_{k}", *episode(k, True), JOINT_NAMES, command_topic=POS_TOPIC)
    rollout = write_rollout_bag(tmp_path / "staging" / "rollout_000", *episode(10, False), JOINT_NAMES,
                                command_topic=POS_TOPIC)
    return config, expert, Path(rollout)


@needs_ros2
def test_trainer_launch_picks_up_a_rollout_bag(ros2, spawn, tmp_path):
    config, expert, rollout = _trainer_inputs(tmp_path)
    watch = tmp_path / "rollouts"
    trainer = launch(spawn, ros2, "genil_ros", "trainer.launch.py", f"expert:={expert}", f"rollout_dir:={watch}",
                     f"config:={config}")
    first = ros2.echo_json("/trainer_node/metrics", timeout=90)
    assert first["algo"] == "amp" and first["bags_processed"] == 0 and first["expert_samples"] > 40
    staged = watch / f".{rollout.name}.part"  # appears at once, as a finished recording would
    shutil.copytree(rollout, staged)
    staged.rename(watch / rollout.name)
    metrics = ros2.echo_json("/trainer_node/metrics", '"bags_processed": 1')
    assert metrics["last_bag"].endswith(rollout.name) and metrics["last_error"] is None
    assert (watch / "_discriminator" / "meta.json").is_file()
    trainer.assert_clean_exit(["trainer_node"], trainer.proc.stop(timeout=60))


@needs_ros2
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_every_node_exits_0_under_launch(ros2, spawn, tmp_path, how):
    """sim_node, policy_node (configured, active), trainer_node and recorder_node under one launch: Ctrl-C
    (SIGINT to the whole group, and launch forwards another) or SIGTERM to each node ends each with 0, and
    the recorder's bag is closed and readable."""
    config, expert, _ = _trainer_inputs(tmp_path)
    bag = tmp_path / "joint_states_bag"
    nodes = launch(spawn, ros2, str(ALL_NODES_LAUNCH), f"expert:={expert}", f"rollout_dir:={tmp_path / 'rollouts'}",
                   f"config:={config}", f"bag:={bag}")
    nodes.wait_for(r"\[policy_node\]: active: commanding", 120)
    nodes.wait_for(r"recording 1 topic", 60)
    ros2.echo_json("/trainer_node/metrics")
    pids = nodes.pids()
    assert sorted(pids) == ["policy_node", "recorder_node", "sim_node", "trainer_node"]
    if how == "ctrl-c":
        rc = nodes.proc.stop(timeout=60)
    else:
        for pid in pids.values():
            os.kill(pid, signal.SIGTERM)
        rc = nodes.proc.proc.wait(60)
    nodes.assert_clean_exit(sorted(pids), rc)

    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        assert [c.topic for c in reader.connections] == ["/joint_states"]
        assert reader.message_count > 10
