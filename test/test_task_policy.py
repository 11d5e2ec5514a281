"""The policy side of the task schema: per-entry normalisation and clamping, the schema in checkpoints
(mismatches named, format-1 checkpoints migrated), and the end-to-end path of a task that is not "joints
in, joint targets out": a real bag with /joint_states (arm + gripper finger), a Float64MultiArray
observation vector, a Float64MultiArray action vector of another length than the joints and a gripper
command topic -> `genil-ros dataset build` -> `genil-ros train` -> load_policy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from genil_ros.cli import main as cli_main
from genil_ros.config import config_from_dict
from genil_ros.errors import CheckpointError
from genil_ros.policy.checkpoint import check_task_compatible, load_policy, save_checkpoint
from genil_ros.policy.diffusion import DiffusionPolicy
from genil_ros.policy.normalizer import MARGIN, Normalizer
from genil_ros.schema import ActionEntry, ObservationEntry, layout

NET = {"down_dims": [16, 32], "diffusion_step_embed_dim": 16, "num_inference_steps": 3,
       "vision": {"feature_dim": 8, "num_keypoints": 4}}


def pick_task(object_norm="meanstd"):
    return {"observations": [{"name": "arm", "type": "joint_position", "joints": ["j0", "j1", "j2"]},
                             {"name": "gripper", "type": "gripper", "joints": ["finger_joint"]},
                             {"name": "object", "type": "vector", "topic": "/object/position",
                              "dims": ["x", "y", "z"], "normalization": object_norm}],
            "actions": [{"name": "arm", "type": "vector", "topic": "/arm/commands", "dims": ["u0", "u1"]},
                        {"name": "gripper", "type": "gripper", "topic": "/gripper/command",
                         "joints": ["finger_joint"], "binary": True, "open_position": 0.04, "closed_position": 0.0}],
            "control_rate_hz": 10.0, "horizon": {"n_obs_steps": 2, "horizon": 8, "n_action_steps": 4}}


def cfg_of(task, **train):
    t = {"batch_size": 8, "lr_warmup_steps": 2, "checkpoint_every_epochs": 1, "val_fraction": 0.34}
    t.update(train)
    return config_from_dict({"task": task, "policy": NET, "train": t}, source="pick.yaml")


# --------------------------------------------------------------------------- normalizer


def test_per_entry_normalisation_and_clamping():
    obs = [ObservationEntry("a", "vector", "/a", dims=["p", "q"]),
           ObservationEntry("b", "vector", "/b", dims=["r"], normalization="meanstd")]
    act = [ActionEntry("v", "vector", "/v", dims=["u", "w"], normalization="meanstd"),
           ActionEntry("g", "gripper", "/g", joints=["f"], binary=True, open_position=1.0, closed_position=0.0)]
    lay = layout(obs, act)
    stats = {"state": {"min": [0.0, -2.0, 10.0], "max": [4.0, 2.0, 20.0], "mean": [1, 0, 14.0], "std": [1, 1, 2.0]},
             "action": {"min": [-1.0, 5.0, 0.0], "max": [3.0, 5.0, 1.0], "mean": [1.0, 5.0, 0.4],
                        "std": [0.5, 0.0, 0.49]}}
    n = Normalizer()
    n.fit_stats(stats, layout=lay)
    s = n.normalize("state", torch.tensor([[0.0, 2.0, 14.0], [4.0, -2.0, 20.0]]))
    assert torch.allclose(s, torch.tensor([[-1.0, 1.0, 0.0], [1.0, -1.0, 3.0]]))  # minmax, minmax, meanstd
    a = n.normalize("action", torch.tensor([[2.0, 5.0, 1.0]]))
    assert torch.allclose(a, torch.tensor([[2.0, 0.0, 1.0]]))  # meanstd; constant dim -> 0; none
    # clamping: meanstd / none to the normalised data range widened by the margin; constant dims to [-1, 1]
    big = n.clamp("action", torch.tensor([[100.0, 100.0, 100.0], [-100.0, -100.0, -100.0]]))
    assert torch.allclose(big[:, 0], torch.tensor([4.0 + MARGIN * 8, -4.0 - MARGIN * 8]))
    assert torch.allclose(big[:, 1], torch.tensor([1.0, -1.0]))
    assert torch.allclose(big[:, 2], torch.tensor([1.0 + MARGIN, -MARGIN]))
    assert torch.allclose(n.clamp("state", torch.full((1, 3), 9.0)), torch.tensor([[1.0, 1.0, 3.0 + MARGIN * 5]]))
    assert torch.allclose(n.unnormalize("action", a), torch.tensor([[2.0, 5.0, 1.0]]))
    back = Normalizer.from_dict(json.loads(n.to_json()))
    assert back.first_difference(lay) is None and back.entries("action")[0]["normalization"] == "meanstd"
    assert torch.allclose(back.clamp("action", big), big)
    # version 1 files mean one minmax entry per field: they fit an all-minmax layout, nothing else
    v1 = Normalizer.from_dict({"type": "minmax", "fields": {"state": {"min": [0, 0, 0], "max": [1, 1, 1]},
                                                            "action": {"min": [0, 0, 0], "max": [1, 1, 1]}}})
    assert "meanstd" in v1.first_difference(lay)
    mm = layout([ObservationEntry("a", "vector", "/a", dims=["p", "q", "r"])],
                [ActionEntry("v", "vector", "/v", dims=["u", "w", "z"])])
    assert v1.first_difference(mm) is None
    with pytest.raises(ValueError, match="meanstd entries need mean and std"):
        Normalizer().fit_stats({k: {"min": v["min"], "max": v["max"]} for k, v in stats.items()}, layout=lay)


def test_policy_clamps_a_meanstd_action_to_its_range_not_to_one():
    task = pick_task()
    task["actions"][0]["normalization"] = "meanstd"
    p = DiffusionPolicy(cfg_of(task))
    assert not p.clip_sample  # the sampler may not clip at +-1: the arm's normalised range is wider
    p.fit_normalizer({"state": {"min": [0.0] * 7, "max": [1.0] * 7, "mean": [0.5] * 7, "std": [0.2] * 7},
                      "action": {"min": [-10.0, -10.0, 0.0], "max": [10.0, 10.0, 1.0], "mean": [0.0, 0.0, 0.5],
                                 "std": [1.0, 1.0, 0.5]}})
    torch.manual_seed(0)
    for m in p.model.parameters():  # an untrained net that pushes hard: the clamp decides the range
        m.data.normal_(0, 0.5)
    p.eval()
    chunk = p.predict_action({"state": torch.zeros(4, 2, 7)}, generator=torch.Generator().manual_seed(0))
    arm = chunk[..., :2]
    assert arm.abs().max() > 1.0 + 1e-3 and arm.abs().max() <= 10.0 + MARGIN * 20 + 1e-4
    assert chunk[..., 2].min() >= -MARGIN - 1e-6 and chunk[..., 2].max() <= 1 + MARGIN + 1e-6
    assert DiffusionPolicy(cfg_of(pick_task())).clip_sample  # minmax arm + binary gripper: within [-1, 1]


# --------------------------------------------------------------------------- checkpoints


def _fitted(cfg):
    p = DiffusionPolicy(cfg)
    sd, ad = p.state_dim, p.action_dim
    p.fit_normalizer({"state": {"min": [0.0] * sd, "max": [1.0] * sd, "mean": [0.5] * sd, "std": [0.3] * sd},
                      "action": {"min": [0.0] * ad, "max": [1.0] * ad, "mean": [0.5] * ad, "std": [0.3] * ad}})
    return p


def test_checkpoint_records_the_schema_and_names_the_first_mismatch(tmp_path):
    p = _fitted(cfg_of(pick_task()))
    d = save_checkpoint(tmp_path / "ck", p)
    meta = json.loads((d / "meta.json").read_text())
    assert meta["format_version"] == 2
    assert [e["name"] for e in meta["schema"]["layout"]["state"]] == ["arm", "gripper", "object"]
    assert meta["schema"]["actions"][1]["binary"] is True
    q = load_policy(d, device="cpu")
    assert q.layout.first_difference(p.layout) is None and q.cfg.task.actions[1].closed_position == 0.0
    assert json.loads((d / "normalizer.json").read_text())["fields"]["state"]["entries"][2]["normalization"] \
        == "meanstd"
    other = pick_task()
    other["actions"][1]["binary"] = False
    other["actions"][1]["normalization"] = "none"
    with pytest.raises(CheckpointError, match=r"action entry 1 \('gripper'\): mode differ \(binary vs absolute\)"):
        load_policy(d, task=cfg_of(other).task)
    other = pick_task(object_norm="minmax")
    with pytest.raises(CheckpointError, match=r"state entry 2 \('object'\): normalization differ"):
        check_task_compatible(q, cfg_of(other).task)
    # a normalizer.json that does not fit config.yaml is refused naming both
    nj = json.loads((d / "normalizer.json").read_text())
    nj["fields"]["state"]["entries"][2]["normalization"] = "minmax"
    (d / "normalizer.json").write_text(json.dumps(nj))
    with pytest.raises(CheckpointError, match=r"normalizer.json: does not fit config.yaml's task: state entry 'obj"):
        load_policy(d)


def test_format_1_checkpoint_loads_as_it_meant(tmp_path):
    """A checkpoint as format 1 wrote it (joint_names config, min-max normalizer.json with state/action,
    no schema) loads and predicts exactly what the same weights predict under format 2."""
    cfg = config_from_dict({"task": {"joint_names": ["a", "b"], "horizon": {"n_obs_steps": 2, "horizon": 8,
                                                                               "n_action_steps": 4}}, "policy": NET})
    p = _fitted(cfg)
    d = save_checkpoint(tmp_path / "ck", p)
    meta = json.loads((d / "meta.json").read_text())
    del meta["schema"]
    meta["format_version"] = 1
    (d / "meta.json").write_text(json.dumps(meta))
    nj = json.loads((d / "normalizer.json").read_text())
    v1 = {"type": "minmax", "range": [-1.0, 1.0], "eps": 1e-4,
          "fields": {k: {"min": v["min"], "max": v["max"]} for k, v in nj["fields"].items()}}
    (d / "normalizer.json").write_text(json.dumps(v1))
    c = yaml.safe_load((d / "config.yaml").read_text())
    c["task"].pop("observations")
    c["task"].pop("actions")
    (d / "config.yaml").write_text(yaml.safe_dump(c))
    q = load_policy(d, device="cpu")
    assert [e.name for e in q.layout.state] == ["joints"] and q.normalizer.entries("state")[0]["name"] == "state"
    obs = {"state": torch.rand(1, 2, 2)}
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(q.predict_action(obs, generator=g()), p.eval().predict_action(obs, generator=g()))


# --------------------------------------------------------------------------- end to end


def test_bag_with_gripper_vector_observation_and_vector_action_builds_trains_and_loads(tmp_path, capsys):
    from genil_ros.data.synthetic import write_task_bag

    bags = tmp_path / "bags"
    for i in range(3):
        write_task_bag(bags / f"demo_{i}", start_s=1000.0 + 100 * i, duration_s=2.0 + 0.5 * i)
    cfg_file = tmp_path / "pick.yaml"
    cfg_file.write_text(yaml.safe_dump({"task": pick_task(), "policy": NET,
                                        "train": {"batch_size": 8, "lr_warmup_steps": 2, "val_fraction": 0.34}}))
    assert cli_main(["dataset", "build", "--config", str(cfg_file), str(bags), "-o", str(tmp_path / "ds"),
                     "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert cli_main(["dataset", "info", str(tmp_path / "ds")]) == 0
    info = capsys.readouterr().out
    assert "object (vector, 3)" in info and "gripper (gripper, binary, 1)" in info
    assert cli_main(["train", "--config", str(cfg_file), "--dataset", str(tmp_path / "ds"), "--out",
                     str(tmp_path / "run"), "--device", "cpu", "--no-progress", "--max-steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "2 for training, 1 held out for validation" in out and "samples/s" in out
    p = load_policy(tmp_path / "run", device="cpu")
    assert p.state_dim == 7 and p.action_dim == 3 and p.camera_names == []
    assert [(e.name, e.mode) for e in p.cfg.task.layout.action] == [("arm", ""), ("gripper", "binary")]
    assert p.cfg.task.actions[1].from_binary([0.9])[0] == 0.0  # closed_position, for the node to publish
    norm = json.loads((tmp_path / "run" / "final" / "normalizer.json").read_text())["fields"]
    assert [e["normalization"] for e in norm["state"]["entries"]] == ["minmax", "minmax", "meanstd"]
    assert [e["normalization"] for e in norm["action"]["entries"]] == ["minmax", "none"]
    from genil_ros.data.store import EpisodeStore

    store = EpisodeStore.open(tmp_path / "ds")
    np.testing.assert_allclose(norm["state"]["mean"][4:], store.stats()["obs.object"]["mean"], rtol=1e-6)
    chunk = p.predict_action({"state": torch.as_tensor(store.episode(0)["state"][:2][None])})
    assert chunk.shape == (1, 8, 3) and torch.isfinite(chunk).all()
    # a config whose task differs from the checkpoint's is refused naming the entry
    other = cfg_of(pick_task())
    other.task.actions[0].dims = ["u0", "u1", "u2"]
    with pytest.raises(CheckpointError, match=r"action entry 0 \('arm'\): dimensions differ"):
        load_policy(tmp_path / "run", task=other.task)
