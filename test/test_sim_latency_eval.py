"""The delayed closed-loop evaluator (genil_ros/sim/latency_eval.py) on the pick-and-place sim, with a
small untrained low-dim policy: the loop's bookkeeping, not the policy's success."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genil_ros.config import config_from_dict, config_to_dict, load_config
from genil_ros.control.handover import make_handover
from genil_ros.errors import GenilError
from genil_ros.paths import config_path
from genil_ros.policy import DiffusionPolicy, save_checkpoint
from genil_ros.sim.latency_eval import delay_ticks, evaluate_with_delay, task_adapter


def small_policy(prefix_conditioning: int = 0) -> DiffusionPolicy:
    d = config_to_dict(load_config(config_path("handover_pick_place.yaml")))
    d["policy"].update(down_dims=[16, 32], diffusion_step_embed_dim=16, num_inference_steps=3,
                       prefix_conditioning=prefix_conditioning)
    cfg = config_from_dict(d, source="test")
    torch.manual_seed(0)
    p = DiffusionPolicy(cfg)
    lo = [-1.5, -1.5, -1.5, -1.5, 0.0, 0.2, -0.1, 0.0]
    hi = [1.5, 1.5, 1.5, 1.5, 0.04, 0.4, 0.1, 0.1]
    p.normalizer.fit("state", lo, hi)
    p.normalizer.fit("action", lo[:5], hi[:5])
    return p.eval()


def run(policy, name, delay, **kw):
    return evaluate_with_delay(policy, make_handover(name, **kw), delay, episodes=2, batch_size=2, trace_episodes=2,
                               progress=False, max_steps=50)


@pytest.fixture(scope="module")
def policy():
    return small_policy()


@pytest.mark.parametrize("name", ["receding_horizon", "inpaint"])
def test_each_tick_one_command_from_its_chunk_and_the_delay_in_ticks(policy, name):
    res = run(policy, name, 3, guidance=0.0)
    T_o = policy.n_obs_steps
    for tr in res["traces"]:
        cmd, src = np.array(tr["commanded"]), np.array(tr["source"])
        assert len(cmd) == 50 and np.all(src >= 0)  # an untrained policy never succeeds: the whole episode
        arrivals = [a for _, a, _ in tr["chunks"]]
        assert arrivals[0] == 0 and all(a - w == 3 for w, a, _ in tr["chunks"][1:])
        for (w, a, chunk), nxt in zip(tr["chunks"], arrivals[1:] + [len(cmd)]):
            rows = np.array(chunk)[:, tr["arm"]]
            for t in range(a, nxt):  # the commands from this chunk: its entries for their own ticks
                assert np.allclose(cmd[t], rows[t - w + T_o - 1]), (w, t)
        if name == "inpaint":  # the new chunk's entries for the ticks it was late for are what ran meanwhile
            for w, a, chunk in tr["chunks"][1:]:
                rows = np.array(chunk)[:, tr["arm"]]
                assert np.allclose(rows[T_o - 1: T_o - 1 + a - w], cmd[w:a], atol=1e-5)
    c = res["counts"]
    assert c["missed_ticks"] == 0 and c["late_chunks"] == 0 and c["skipped_actions"] == 3 * (c["chunks"] - 2)
    sm = res["smoothness"]
    assert sm["handovers"] == c["chunks"] - 2
    assert sm["commanded"]["jump"]["inside_max"] > 0 and np.isfinite(sm["measured"]["jerk"]["handover_p99"])
    assert res["delay_ms"] == 300 and res["success_rate"] == 0.0 and "dropped_rate" in res
    json.dumps(res)  # the bench writes it as is


def test_temporal_ensemble_asks_whenever_the_worker_is_free(policy):
    res = run(policy, "temporal_ensemble", 2)
    for tr in res["traces"]:
        w = [w for w, _, _ in tr["chunks"]]
        assert all(b - a == 2 for a, b in zip(w[1:], w[2:]))


def test_prefix_conditioning_needs_a_model_trained_for_it(policy, tmp_path):
    with pytest.raises(GenilError, match="not trained with policy.prefix_conditioning"):
        run(policy, "prefix_conditioning", 1)
    pc = small_policy(prefix_conditioning=3)
    res = run(pc, "prefix_conditioning", 1)
    assert res["counts"]["chunks"] > 10
    assert res["smoothness"]["handovers"] > 0
    save_checkpoint(tmp_path / "pc", pc)
    from genil_ros.cli import main

    assert main(["eval", "--checkpoint", str(tmp_path / "pc"), "--episodes", "1", "--handover", "prefix_conditioning",
                 "--delay-ms", "200", "--json", str(tmp_path / "r.json")]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["handover"] == "prefix_conditioning" and r["delay_ticks"] == 2 and r["episodes"] == 1


def test_adapter_and_delay_errors(policy):
    a = task_adapter(policy.cfg)
    assert a.name == "pick_place" and a.camera is None and a.arm == [0, 1, 2, 3]
    obs = {"joint_pos": np.arange(4.0), "gripper_pos": np.array([0.03]), "object_pos": np.array([0.3, 0.0, 0.02])}
    assert a.state(obs).tolist() == pytest.approx([0, 1, 2, 3, 0.03, 0.3, 0.0, 0.02])
    assert delay_ticks(300, 10) == 3 and delay_ticks(0, 10) == 0 and delay_ticks(140, 10) == 1
    with pytest.raises(GenilError, match="--delay-ms -1 must be >= 0"):
        delay_ticks(-1, 10)
    cfg = load_config(config_path("sim_task.yaml"))
    cfg.task.cameras, cfg.task.observations, cfg.task.actions = [], [], []
    cfg.task.resolve()
    with pytest.raises(GenilError, match="shows its target only to the camera"):
        task_adapter(cfg)
