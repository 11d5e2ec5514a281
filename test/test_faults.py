"""The fault matrix of issue 17, one test per case, each run here as a new user meets it.

Bad recorded data, killed processes, malicious files and bad input to the running node. Every case must
end in a clear one-line error (exit status 2) naming the file / topic / joint, or in the node holding
and recovering by itself - never a traceback, a half-written result or code run from a data file.
Cases that have a finer-grained test elsewhere (test_bag_build.py, test_policy_train.py,
test_policy_node.py) are run again here, end to end, so that the matrix stays readable in one place:

  recorded data -> dataset    truncated bag, empty bag, camera-less bag for a camera task, wrong image
                              encoding, missing joint, backwards stamps, NaN in a bag (error; cut)
  killed processes            kill -9 of `dataset build` (mid-write; between its two renames),
                              `train --resume` onto a half-written checkpoint
  malicious files             a code pickle as training state or as pretrained weights, a
                              `!!python/...` YAML tag in a config, a params file or a checkpoint
  the policy node (real DDS)  stale camera, NaN joint states (hold, then recover), bad ~/reload
                              (missing / corrupt / other-task checkpoint), params-file precedence,
                              `genil-ros policy --checkpoint /nonexistent`

Killed processes die by a real SIGKILL at a chosen point (test/nodes/killed_cli.py), so each run hits
the same window a `kill -9` can land in.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from genil_ros.cli import main as cli_main
from genil_ros.data.store import EpisodeStore
from genil_ros.data.synthetic import BagFile, write_demo_bag

REPO = Path(__file__).resolve().parent.parent
NODES = Path(__file__).parent / "nodes"
sys.path.insert(0, str(NODES))
from fake_robot_policy import make_checkpoint  # noqa: E402

ENV = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
JOINTS = ["j0", "j1", "j2"]


def one_line_error(capsys, rc: int, command: str, pattern: str) -> str:
    """The CLI failed with status 2 and one line on stderr that matches ``pattern``; returns the line."""
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith(f"genil-ros {command}: error: ") and re.search(pattern, err), err
    return err


class RunsCode:
    """Unpickling or YAML-loading this would run a shell command: what a malicious file does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# =========================================================================== recorded data -> dataset


@pytest.fixture
def build(tmp_path, capsys):
    """build(bags, dataset=None, extra=()) -> the exit status of `genil-ros dataset build BAGS -o tmp/ds
    EXTRA` for a task with three joints, a 16x12 camera and recorded commands (``dataset``: more keys of
    the config's dataset section)."""
    def _build(bags, dataset=None, extra=()):
        cfg = {"task": {"joint_names": JOINTS,
                        "cameras": [{"name": "front", "topic": "/camera/image_raw", "height": 12, "width": 16}]},
               "dataset": {"action_source": "command", "action_topic": "/commands", **(dataset or {})}}
        path = tmp_path / "task.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return cli_main(["dataset", "build", "--config", str(path), *map(str, bags), "-o", str(tmp_path / "ds"),
                         "--no-progress", *extra])

    return _build


def no_dataset_left(tmp_path, name="ds"):
    return not (tmp_path / name).exists() and not list(tmp_path.glob(f"{name}.tmp-*"))


def small_bag(path: Path, image=None, joint_state=None, n=20) -> Path:
    """20 Hz joint states, camera frames and commands; ``image(b, k, t)`` / ``joint_state(b, k, t)``
    may write another message in place of message k."""
    with BagFile(path) as b:
        for k in range(n):
            t = int(1e9) + k * 50_000_000
            if joint_state:
                joint_state(b, k, t)
            else:
                b.joint_state("/joint_states", t, t, JOINTS, [0.1 * k] * 3)
            if image:
                image(b, k, t)
            else:
                b.image("/camera/image_raw", t, t, np.zeros((12, 16, 3), np.uint8))
            b.multiarray("/commands", t, [0.1 * k] * 3)
    return path


def test_truncated_bag(tmp_path, build, capsys):
    bag = write_demo_bag(tmp_path / "bag", duration_s=1.0)
    mcap = next(bag.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    one_line_error(capsys, build([bag]), "dataset", rf"{re.escape(str(bag))}.*truncated or corrupt")
    assert no_dataset_left(tmp_path)


def test_empty_bag(tmp_path, build, capsys):
    BagFile(tmp_path / "empty").close()
    one_line_error(capsys, build([tmp_path / "empty"]), "dataset", r"empty.*empty bag")
    assert no_dataset_left(tmp_path)


def test_camera_less_bag_for_a_camera_task(tmp_path, build, capsys):
    bag = write_demo_bag(tmp_path / "bag", duration_s=1.0, camera_topic=None)
    err = one_line_error(capsys, build([bag]), "dataset", r"/camera/image_raw.*not in the bag")
    assert str(bag) in err
    assert no_dataset_left(tmp_path)


def test_wrong_image_encoding(tmp_path, build, capsys):
    bag = small_bag(tmp_path / "bag", image=lambda b, k, t: b.image("/camera/image_raw", t, t,
                                                                    np.zeros((12, 16), np.uint16), encoding="16UC1"))
    err = one_line_error(capsys, build([bag]), "dataset",
                         r"/camera/image_raw \(message 0\): unsupported image encoding '16UC1'")
    assert str(bag) in err
    assert no_dataset_left(tmp_path)


def test_missing_joint(tmp_path, build, capsys):
    def joint_state(b, k, t):
        names = JOINTS if k < 5 else ["j0", "j2"]
        b.joint_state("/joint_states", t, t, names, [0.0] * len(names))

    err = one_line_error(capsys, build([small_bag(tmp_path / "bag", joint_state=joint_state)]), "dataset",
                         r"/joint_states: JointState is missing joint\(s\) \['j1'\]")
    assert str(tmp_path / "bag") in err
    assert no_dataset_left(tmp_path)


def test_backwards_stamps(tmp_path, build, capsys):
    def joint_state(b, k, t):
        b.joint_state("/joint_states", t, t - 200_000_000 if k == 9 else t, JOINTS, [0.1 * k] * 3)

    err = one_line_error(capsys, build([small_bag(tmp_path / "bag", joint_state=joint_state)]), "dataset",
                         r"/joint_states: timestamps go backwards at message 9")
    assert str(tmp_path / "bag") in err
    assert no_dataset_left(tmp_path)


NAN_J1 = [("position", 60, 10, 1, float("nan"))]  # joint j1 is NaN in 10 joint states from t = 1001.2 s


def test_nan_in_a_bag_is_an_error_naming_bag_topic_joint_and_time(tmp_path, build, capsys):
    bag = write_demo_bag(tmp_path / "bag", nonfinite=NAN_J1)
    err = one_line_error(capsys, build([bag]), "dataset",
                         r"/joint_states: non-finite value: position of joint j1 is nan at t = 1001\.200 s")
    assert str(bag) in err and "dataset.nonfinite: cut" in err
    assert no_dataset_left(tmp_path)


def test_nan_in_a_bag_cut_splits_the_episode(tmp_path, build, capsys):
    bag = write_demo_bag(tmp_path / "bag", nonfinite=NAN_J1)
    assert build([bag], dataset={"nonfinite": "cut"}) == 0
    out = capsys.readouterr().out
    assert re.search(r"warning: .*/bag: /joint_states: 10 message\(s\) with non-finite values", out), out
    assert "2 episodes, 29 steps" in out, out
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert meta["episode_lengths"] == [12, 17]  # ticks 1001.2 and 1001.3 cut, not bridged
    assert all(np.isfinite(v).all() for k in ("state", "action") for v in meta["stats"][k].values())
    store = EpisodeStore.open(tmp_path / "ds")
    assert all(np.isfinite(store.episode(i)["state"]).all() for i in range(2))


def _kill_9_build(tmp_path, point: str, bags) -> subprocess.CompletedProcess:
    cfg = tmp_path / "task.yaml"
    cmd = [sys.executable, str(NODES / "killed_cli.py"), point, "dataset", "build", "--config", str(cfg),
           *map(str, bags), "-o", str(tmp_path / "ds"), "--overwrite", "--no-progress"]
    return subprocess.run(cmd, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("point", ["episode:1", "aside"])
def test_kill_9_of_dataset_build(tmp_path, build, capsys, point):
    """kill -9 while `dataset build --overwrite` writes its second episode, or in the narrowest window:
    the old dataset moved aside, the new one not yet renamed into place. The old dataset stays whole, no
    half dataset appears at the target, and the next build tidies up (the moved-aside one gets its name
    back even when that build fails)."""
    first = write_demo_bag(tmp_path / "a", duration_s=1.0)
    second = write_demo_bag(tmp_path / "b", duration_s=2.0, start_s=2000.0)
    assert build([first]) == 0
    old_meta = (tmp_path / "ds" / "meta.json").read_text()
    old_state = EpisodeStore.open(tmp_path / "ds").episode(0)["state"]

    res = _kill_9_build(tmp_path, point, [first, second])
    assert res.returncode == -9, res.stdout + res.stderr
    left = sorted(p.name for p in tmp_path.glob("ds.*"))
    if point == "aside":  # killed between the two renames: only the moved-aside old one is complete
        assert not (tmp_path / "ds").exists() and [n.split("-")[0] for n in left] == ["ds.old", "ds.tmp"], left
    else:
        assert (tmp_path / "ds" / "meta.json").read_text() == old_meta and len(left) == 1, left

    # the next build fails (an empty bag) after it started writing: the old dataset is whole at its name
    BagFile(tmp_path / "empty").close()
    one_line_error(capsys, build([tmp_path / "empty"], extra=["--overwrite"]), "dataset", "empty bag")
    assert (tmp_path / "ds" / "meta.json").read_text() == old_meta
    np.testing.assert_array_equal(EpisodeStore.open(tmp_path / "ds").episode(0)["state"], old_state)
    assert sorted(p.name for p in tmp_path.glob("ds*")) == ["ds"]
    # and a good one replaces it
    assert build([first, second], extra=["--overwrite"]) == 0
    assert EpisodeStore.open(tmp_path / "ds").meta["episode_lengths"] == [11, 21]
    assert sorted(p.name for p in tmp_path.glob("ds*")) == ["ds"]


# =========================================================================== training and checkpoints


def lowdim_store(path: Path, n_eps=4, length=12) -> Path:
    w = EpisodeStore.create(path, joint_names=["a", "b", "c"], control_rate_hz=10.0)
    for e in range(n_eps):
        t = np.arange(length, dtype=np.float64) / 10.0
        state = np.stack([np.sin(t + e + j) for j in range(3)], 1).astype(np.float32)
        w.add_episode({"state": state, "action": np.roll(state, -1, axis=0), "timestamp": t})
    w.finalize()
    return path


def train_args(tmp_path) -> list[str]:
    """`genil-ros train` of a tiny low-dim policy: 4 episodes of 12 steps, a checkpoint every epoch."""
    cfg = {"task": {"joint_names": ["a", "b", "c"], "horizon": {"n_obs_steps": 2, "horizon": 8, "n_action_steps": 4}},
           "policy": {"down_dims": [16, 32], "diffusion_step_embed_dim": 16, "num_inference_steps": 2},
           "train": {"batch_size": 8, "num_epochs": 2, "lr_warmup_steps": 2, "checkpoint_every_epochs": 1,
                     "val_fraction": 0.25}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    store = lowdim_store(tmp_path / "ds")
    return ["train", "--config", str(tmp_path / "cfg.yaml"), "--dataset", str(store), "--out", str(tmp_path / "run"),
            "--device", "cpu", "--no-progress"]


def test_resume_onto_a_half_written_checkpoint(tmp_path, capsys):
    """kill -9 during the second periodic save (its meta.json written, training_state.pt half): --resume
    continues from the last complete checkpoint and removes the temp dir (it used to pick the temp dir
    and fail with 'cannot read the training state (EOFError)')."""
    args = train_args(tmp_path)
    res = subprocess.run([sys.executable, str(NODES / "killed_cli.py"), "save:2", *args, "--max-steps", "12"],
                         env={**os.environ, **ENV}, capture_output=True, text=True, timeout=300)
    assert res.returncode == -9, res.stdout[-2000:] + res.stderr[-2000:]
    ckpts = tmp_path / "run" / "checkpoints"
    temp = [p for p in ckpts.iterdir() if ".tmp-" in p.name]
    assert len(temp) == 1 and (temp[0] / "meta.json").is_file(), sorted(p.name for p in ckpts.iterdir())

    assert cli_main(args + ["--max-steps", "14", "--resume"]) == 0
    out = capsys.readouterr().out
    assert f"removed {temp[0].name}" in out and f"resuming from {ckpts / 'epoch_0001'}" in out, out
    assert not temp[0].exists()
    assert json.loads((tmp_path / "run" / "final" / "meta.json").read_text())["extra"]["global_step"] == 14


def test_malicious_pickle_as_training_state(tmp_path, capsys):
    """A run whose training_state.pt is a pickle that runs code: --resume refuses it in one line (without
    PyTorch's advice to set weights_only=False) and nothing runs."""
    args = train_args(tmp_path)
    assert cli_main(args + ["--max-steps", "2"]) == 0
    marker = tmp_path / "pwned"
    for state in (tmp_path / "run").rglob("training_state.pt"):
        state.write_bytes(pickle.dumps(RunsCode(marker), protocol=2))
    capsys.readouterr()
    err = one_line_error(capsys, cli_main(args + ["--max-steps", "4", "--resume"]), "train",
                         r"training_state\.pt: cannot read the training state \(refused")
    assert "weights_only" not in err
    assert not marker.exists()


def test_malicious_pickle_as_pretrained_weights(tmp_path):
    """A camera checkpoint whose config names as pretrained backbone weights a pickle that runs code: the
    node's model loader refuses it in one line and nothing runs."""
    from genil_ros.errors import CheckpointError
    from genil_ros.policy.chunk_model import load_chunk_model

    marker = tmp_path / "pwned"
    evil = tmp_path / "r18.pth"
    evil.write_bytes(pickle.dumps(RunsCode(marker), protocol=2))
    ck = make_checkpoint(tmp_path / "ck", camera=True, image_hw=(16, 16))
    cfg = yaml.safe_load((ck / "config.yaml").read_text())
    cfg["policy"]["vision"]["pretrained_weights"] = str(evil)
    (ck / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError) as e:
        load_chunk_model(str(ck), "cpu")
    msg = str(e.value)
    assert "r18.pth" in msg and "refused" in msg and "\n" not in msg and "weights_only" not in msg, msg
    assert not marker.exists()


def test_malicious_yaml(tmp_path, capsys):
    """A `!!python/...` tag that would run code: one line naming the file, nothing runs - in an experiment
    config, in the node's params file and in a checkpoint's config.yaml."""
    from genil_ros.errors import CheckpointError
    from genil_ros.policy.checkpoint import load_policy

    marker = tmp_path / "pwned"
    tag = f'!!python/object/apply:os.system ["touch {marker}"]'
    cfg = tmp_path / "task.yaml"
    cfg.write_text(f"task:\n  joint_names: [a, b]\n  control_rate_hz: {tag}\n")
    one_line_error(capsys, cli_main(["check-config", str(cfg)]), "check-config",
                   rf"{re.escape(str(cfg))}: invalid YAML at line 3, column 20: could not determine a constructor "
                   r"for the tag '.*python/object/apply:os\.system'")

    params = tmp_path / "policy.yaml"
    params.write_text(f"/**:\n  ros__parameters:\n    checkpoint: !!python/object/new:os.system [\"touch {marker}\"]\n")
    one_line_error(capsys, cli_main(["policy", "--params-file", str(params)]), "policy",
                   rf"{re.escape(str(params))}: not valid YAML \(could not determine a constructor")

    ck = make_checkpoint(tmp_path / "ck")
    (ck / "config.yaml").write_text(f"task: {tag}\n")
    with pytest.raises(CheckpointError, match=r"config\.yaml is not valid: .*could not determine a constructor") as e:
        load_policy(ck, device="cpu")
    assert "\n" not in str(e.value)
    assert not marker.exists()


# =========================================================================== the policy node over DDS


def node_tools():
    """The DDS helpers of test_policy_node.py (imported here: that module skips without rclpy)."""
    pytest.importorskip("rclpy")
    import test_policy_node as t

    return t


def start_robot_and_node(spawn, tmp_path, ck, *node_params, camera=False):
    t = node_tools()
    rec = tmp_path / "robot.jsonl"
    robot_args = [sys.executable, NODES / "fake_robot.py", "--record", rec]
    if camera:
        robot_args += ["--camera", "/camera/image_raw", "--image-size", "48x64"]
    robot = spawn(robot_args, extra_env=ENV, name="robot")
    node = spawn(t.node_cmd(f"checkpoint:={ck}", "device:=cpu", "autostart:=true", "max_step_rad:=100.0",
                            "max_staleness_s:=0.4", *node_params), extra_env=ENV, name="policy")
    t.wait_for(lambda: t.kinds(t.read_record(rec), "traj"), 120, "the first command", (robot, node))
    return rec, (robot, node)


def hold_then_recover(ctx, rec, procs, mode: str, why: str) -> None:
    """Switch the fake robot to ``mode``: the node publishes one hold command at the last commanded position,
    then nothing, says ``why`` in /diagnostics, and commands again by itself once the input is normal."""
    t = node_tools()
    tester = t.Operator(ctx)
    try:
        t_bad = tester.set_mode(mode, rec)
        time.sleep(2.0)
        t_good = tester.set_mode("normal", rec)
        t.wait_for(lambda: len(t.kinds(t.read_record(rec), "traj", t_good)) >= 5, 60, f"commands again after {mode}",
                   procs)
        t.wait_for(lambda: any(d["message"] == "commanding" for d in t.kinds(t.read_record(rec), "diag", t_good)), 30,
                   f"'commanding' in /diagnostics after {mode}", procs)
    finally:
        tester.close()
    r = t.read_record(rec)
    during = t.kinds(r, "traj", t_bad, t_good)
    before = t.kinds(r, "traj", None, t_bad)
    assert during, f"{mode}: no hold command"
    hold, last = during[-1], (during[-2] if len(during) > 1 else before[-1])
    assert len(hold["points"]) == 1 and np.allclose(hold["points"][0], last["points"][0]), \
        f"{mode}: the last command while the input was bad is not a hold at the last commanded position"
    assert hold["wall_ns"] < t_bad + int(1.5e9), f"{mode}: held only after {(hold['wall_ns'] - t_bad) / 1e9:.1f} s"
    diags = [d["message"] for d in t.kinds(r, "diag", hold["wall_ns"], t_good + int(0.3e9))]
    assert any(m.startswith("holding") and why in m for m in diags), (mode, diags)


def test_stale_camera_holds_then_recovers(spawn, ros_context, tmp_path):
    ck = make_checkpoint(tmp_path / "ck", camera=True)
    rec, procs = start_robot_and_node(spawn, tmp_path, ck, camera=True)
    hold_then_recover(ros_context, rec, procs, "no_camera", "/camera/image_raw")
    assert all(p.alive() for p in procs)


def test_nan_joint_states_hold_then_recover(spawn, ros_context, tmp_path):
    ck = make_checkpoint(tmp_path / "ck")
    rec, procs = start_robot_and_node(spawn, tmp_path, ck)
    hold_then_recover(ros_context, rec, procs, "nan", "non-finite")
    assert all(p.alive() for p in procs)


def test_bad_reloads_keep_the_running_model(spawn, ros_context, tmp_path):
    """~/reload of a missing, a corrupt and another task's checkpoint: refused with the reason, the running
    model keeps commanding; a good one is then swapped in."""
    t = node_tools()
    ck = make_checkpoint(tmp_path / "ck")
    corrupt = Path(shutil.copytree(ck, tmp_path / "corrupt"))
    (corrupt / "ema.safetensors").write_bytes((corrupt / "ema.safetensors").read_bytes()[:100])
    other = make_checkpoint(tmp_path / "other", joints=("x", "y"))
    newer = make_checkpoint(tmp_path / "newer", seed=1)
    rec, procs = start_robot_and_node(spawn, tmp_path, ck)
    tester = t.Operator(ros_context)

    def model_in_diagnostics(since_ns):
        return t.wait_for(lambda: [d["values"]["model"] for d in t.kinds(t.read_record(rec), "diag", since_ns)], 30,
                          "diagnostics", procs)[-1]

    try:
        running = model_in_diagnostics(0)
        assert str(ck) in running
        for bad, why in [(tmp_path / "missing", "missing: checkpoint directory not found"),
                         (corrupt, "ema.safetensors: unreadable"),
                         (other, "does not fit the running task: state entry 0")]:
            assert tester.set_param("checkpoint", str(bad))
            resp = tester.trigger("reload")
            assert not resp.success and why in resp.message and "\n" not in resp.message, resp.message
            t_reply = time.time_ns()
            t.wait_for(lambda: len(t.kinds(t.read_record(rec), "traj", t_reply)) >= 5, 30,
                       f"commands after the refused reload of {bad.name}", procs)
            assert model_in_diagnostics(t_reply + int(1e9)) == running
        assert tester.set_param("checkpoint", str(newer))
        resp = tester.trigger("reload")
        assert resp.success, resp.message
        t_reply = time.time_ns()
        assert str(newer) in model_in_diagnostics(t_reply + int(1e9))
        t.wait_for(lambda: len(t.kinds(t.read_record(rec), "traj", t_reply)) >= 5, 30, "commands after reload", procs)
    finally:
        tester.close()
    assert "reload failed, keeping" in procs[1].output()


def test_params_file_precedence(spawn, ros_context, tmp_path, capsys):
    """`genil-ros policy --params-file`: the file's autostart: false and output_mode stay in force (they
    used to be overridden by flags the user never typed); what the user types wins over the file; a bad
    typed value is refused before the node starts."""
    t = node_tools()
    ck = make_checkpoint(tmp_path / "ck")
    params = tmp_path / "policy.yaml"
    params.write_text(yaml.safe_dump({"/**/policy_node": {"ros__parameters": {
        "checkpoint": str(ck), "device": "cpu", "output_mode": "position", "autostart": False, "seed": 5}}}))
    node = spawn(t.cli_cmd("--params-file", str(params), "-p", "seed:=7"), extra_env=ENV, name="policy")
    tester = t.Operator(ros_context)
    try:
        assert tester.state() == "unconfigured"  # autostart: false, though the command autostarts by default
        assert (tester.get_param("output_mode"), tester.get_param("autostart"), tester.get_param("seed")) == \
            ("position", False, 7)
        assert node.alive()
    finally:
        tester.close()
    one_line_error(capsys, cli_main(["policy", "--params-file", str(params), "-p", "output_mode:=foo"]), "policy",
                   r"-p output_mode:=foo: parameter output_mode: 'foo' is not one of")


def test_policy_cli_nonexistent_checkpoint(spawn):
    """`genil-ros policy --checkpoint /nonexistent` ends with status 2 and the reason in one line (it used
    to log 'configure failed' and wait forever)."""
    t = node_tools()
    p = spawn(t.cli_cmd("--checkpoint", "/nonexistent", "--device", "cpu"), extra_env=ENV, name="cli")
    t.wait_for(lambda: not p.alive(), 120, "genil-ros policy to exit")
    lines = [ln for ln in p.output().splitlines() if ln.strip()]
    assert p.proc.returncode == 2, p.output()
    assert len(lines) == 1 and re.search(r"configure failed: .*/nonexistent: checkpoint directory not found",
                                         lines[0]), lines
