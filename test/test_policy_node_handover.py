"""Each chunk handover strategy in the policy node over real DDS, under an injected inference delay.

One node process (an untrained diffusion policy, joints a/b/c and a camera) and a fake robot (test/nodes/fake_robot.py,
which records every command and ~/predicted_chunk it receives). The node holds every chunk until 250 ms
after its window's tick (``inject_delay_ms``): at 10 Hz each chunk arrives 3 ticks after its window. The
strategy is switched through the lifecycle (cleanup, ``handover`` parameter, configure, activate); the
default ``auto`` last.

A trajectory command's stamp is its tick's time and a chunk's stamp is the time of the tick its window
ended at - the same clock reading, so a chunk is placed on the command timeline by stamp equality and
every check is in ticks, whatever the timer jitter of a loaded machine:

- no duplicated or skipped tick: command i is the plan's action for tick i, i.e. entry r = i - w of the
  chunk whose window ended at tick w, with r advancing by one per command;
- prefix respected (inpaint, prefix_conditioning): a new chunk's entries for the ticks that passed while
  it was computed are exactly the commands that were executed at those ticks;
- temporal ensembling: each command is the exp-weighted mean (older first) of the chunks covering it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

sys.path.insert(0, str(Path(__file__).parent))
from test_policy_node import ENV, NODES, Operator, kinds, node_cmd, read_record, wait_for  # noqa: E402

sys.path.insert(0, str(NODES))
from fake_robot_policy import make_checkpoint  # noqa: E402

JOINTS = ["a", "b", "c"]
DELAY_MS, DELAY_TICKS, WEIGHT = 250.0, 3, 0.2


def prefix_checkpoint(path):
    """The fake robot's checkpoint, trained (not really: untrained weights) with prefix conditioning."""
    import torch
    import yaml

    from genil_ros.config import config_from_dict
    from genil_ros.policy import DiffusionPolicy, save_checkpoint

    ck = make_checkpoint(Path(str(path) + "_plain"), camera=True)
    d = yaml.safe_load((ck / "config.yaml").read_text())
    d["policy"]["prefix_conditioning"] = 4
    torch.manual_seed(0)
    p = DiffusionPolicy(config_from_dict(d, source="test"))
    p.normalizer.fit("state", [-1.0] * 3, [1.0] * 3)
    p.normalizer.fit("action", [-1.0] * 3, [1.0] * 3)
    return save_checkpoint(Path(path), p)


def steady_window(rec, procs, seconds=4.0):
    """The commands and chunks of a few steady seconds, once commands flow."""
    wait_for(lambda: len(kinds(read_record(rec), "traj", time.time_ns() - int(1e9))) >= 5, 90, "commands", procs)
    time.sleep(1.0)
    t0 = time.time_ns()
    time.sleep(seconds)
    r = read_record(rec)
    return kinds(r, "traj", t0, time.time_ns()), kinds(r, "chunk", t0 - int(3e9))


def place(cmds, chunks):
    """(command values (N, 3), [(window tick, points (n, 3))]) with ticks = indices of the commands."""
    assert cmds, "no commands"
    tick_of = {c["stamp_ns"]: i for i, c in enumerate(cmds)}
    vals = np.array([c["points"][0] for c in cmds])
    placed = [(tick_of[c["stamp_ns"]], np.array(c["points"])) for c in chunks if c["stamp_ns"] in tick_of]
    assert len(placed) >= 5, f"only {len(placed)} chunks on the timeline"
    return vals, placed


def check_one_chunk_per_tick(cmds, chunks, prefix: bool) -> None:
    vals, placed = place(cmds, chunks)
    src = [-99]  # -99: before the first chunk placed on the timeline took over
    for t, v in enumerate(vals):
        hit = [w for w, p in placed if src[-1] <= w < t and t - w < len(p) and np.allclose(p[t - w], v, atol=1e-6)]
        assert hit or src[-1] == -99, f"command {t} is no chunk's entry for its own tick"
        # the chunk in use while it matches (a prefix makes the next one match the ticks before it arrives)
        src.append(src[-1] if src[-1] in hit else hit[0] if hit else -99)
    src = src[1:]
    assert src == sorted(src), "went back to an older chunk"
    switches = [t for t in range(1, len(src)) if src[t] != src[t - 1] and src[t - 1] != -99]
    assert len(switches) >= 3
    delays = [t - src[t] for t in switches]  # the chunk of window w took over at tick t
    assert all(2 <= d <= 6 for d in delays) and delays.count(DELAY_TICKS) >= 0.6 * len(delays), delays
    checked = 0
    for k, t in enumerate(switches):
        w = src[t]
        if prefix and w >= 0:
            # the node's lead was the most of the last 5 delays: at least those seen here, at least 1 tick
            lead = max(delays[max(0, k - 5):k], default=1)
            n = min(t - w, lead)
            p = dict(placed)[w]
            assert np.allclose(p[:n], vals[w:w + n], atol=1e-5), f"chunk of tick {w}: the prefix was not kept"
            checked += 1
    assert checked >= 3 or not prefix


def check_ensemble(cmds, chunks) -> None:
    vals, placed = place(cmds, chunks)
    windows = [w for w, _ in placed]
    gaps = [b - a for a, b in zip(windows, windows[1:])]
    assert all(2 <= g <= 6 for g in gaps) and gaps.count(DELAY_TICKS) >= 0.6 * len(gaps), gaps
    # the next inference starts as soon as a chunk arrived: a chunk arrived at the next one's window tick
    arrival = dict(zip(windows, windows[1:]))
    ok = 0
    for t in range(max(windows[0], 0) + 15, windows[-1]):
        cover = [p[t - w] for w, p in placed if w in arrival and arrival[w] <= t < w + len(p)]  # oldest first
        wts = np.exp(-WEIGHT * np.arange(len(cover)))
        mean = np.tensordot(wts / wts.sum(), np.array(cover), axes=1)
        assert np.allclose(mean, vals[t], atol=1e-5), f"tick {t}: not the weighted mean of {len(cover)} chunks"
        ok += 1
    assert ok >= 5


def test_each_handover_strategy_over_dds(spawn, ros_context, tmp_path):
    ck = make_checkpoint(tmp_path / "ck", camera=True, inference_steps=3)
    pc = prefix_checkpoint(tmp_path / "pc")
    rec = tmp_path / "robot.jsonl"
    robot = spawn([sys.executable, NODES / "fake_robot.py", "--record", rec, "--rate", "50", "--camera",
                   "/camera/image_raw"], extra_env=ENV, name="robot")  # frames change: so do the chunks
    node = spawn(node_cmd(f"checkpoint:={ck}", "device:=cpu", "autostart:=true", "max_step_rad:=100.0",
                          "max_staleness_s:=2.0", f"inject_delay_ms:={DELAY_MS}", "handover:=receding_horizon",
                          f"handover_ensemble_weight:={WEIGHT}", "handover_guidance:=0.0"),
                 extra_env=ENV, name="policy")
    tester = Operator(ros_context)
    procs = (robot, node)
    try:
        for name, checkpoint in (("receding_horizon", None), ("temporal_ensemble", None), ("inpaint", None),
                                 ("prefix_conditioning", pc)):
            if name != "receding_horizon":
                assert tester.transition("deactivate") and tester.transition("cleanup")
                assert tester.set_param("handover", name)
                if checkpoint:
                    assert tester.set_param("checkpoint", str(checkpoint))
                assert tester.transition("configure") and tester.transition("activate")
            cmds, chunks = steady_window(rec, procs)
            diag = kinds(read_record(rec), "diag")[-1]["values"]
            assert diag["handover"].startswith(name) and int(diag["inference_delay_ticks"]) >= DELAY_TICKS, diag
            assert diag["missed_ticks"] == "0" and diag["holds"] in ("0", "1"), \
                (name, diag["missed_ticks"], diag["holds"], diag.get("late_chunks"), diag.get("hold_reason"))
            if name == "temporal_ensemble":
                check_ensemble(cmds, chunks)
            else:
                check_one_chunk_per_tick(cmds, chunks, prefix=name != "receding_horizon")
        # a strategy the checkpoint cannot serve: configure fails with the reason, the node stays up
        assert tester.transition("deactivate") and tester.transition("cleanup")
        assert tester.set_param("checkpoint", str(ck))
        assert not tester.transition("configure")
        assert "parameter handover: prefix_conditioning needs a checkpoint trained" in node.output()
        assert node.alive() and robot.alive()
        # the default, auto: inpainting with the default soft ticks for this DDIM checkpoint
        assert tester.set_param("handover", "auto")
        assert tester.transition("configure") and tester.transition("activate")
        cmds, chunks = steady_window(rec, procs)
        diag = kinds(read_record(rec), "diag")[-1]["values"]
        assert diag["handover"] == "inpaint (guidance 0, soft 4 ticks)", diag
        check_one_chunk_per_tick(cmds, chunks, prefix=True)
    finally:
        tester.close()
    assert node.stop() == 0
