"""The training loop (over an in-memory torch Dataset) and `genil-ros train` over a real EpisodeStore:
learning, EMA, checkpoints (periodic, pruned, final), TensorBoard scalars, seeding, --resume, errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from genil_ros.cli import main as cli_main
from genil_ros.config import config_from_dict
from genil_ros.policy.checkpoint import load_policy
from genil_ros.policy.train import dataset_stats, find_resume_checkpoint, recover_killed_saves, train_policy


class LinearDemo(torch.utils.data.Dataset):
    """action chunk = a fixed linear function of the last state (+ the step index): easy to learn."""

    def __init__(self, n=96, T_o=2, T_p=8, D=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.state = torch.rand(n, T_o, D, generator=g) * 2 - 1
        ramp = torch.linspace(0, 0.5, T_p)[None, :, None]
        self.action = self.state[:, -1:, :] * 0.8 + ramp

    def __len__(self):
        return len(self.state)

    def __getitem__(self, i):
        return {"obs": {"state": self.state[i]}, "action": self.action[i]}


def tiny_cfg(**train):
    t = {"batch_size": 16, "lr": 2e-3, "lr_warmup_steps": 5, "checkpoint_every_epochs": 1, "log_every_steps": 1,
         "ema_decay": 0.9, "seed": 0}
    t.update(train)
    return config_from_dict({
        "task": {"joint_names": ["a", "b", "c"], "horizon": {"n_obs_steps": 2, "horizon": 8, "n_action_steps": 4}},
        "policy": {"down_dims": [16, 32], "diffusion_step_embed_dim": 16, "num_inference_steps": 4},
        "train": t,
    })


def test_training_loop_learns_and_writes_checkpoints(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, val = LinearDemo(320), LinearDemo(32, seed=1)
    cfg = tiny_cfg(num_epochs=6, val_every_epochs=2)
    out = tmp_path / "run"
    final = train_policy(cfg, train, val, None, out, device="cpu", progress=False, keep=2, log=lambda *_: None)
    assert final == out / "final"
    meta = json.loads((final / "meta.json").read_text())
    assert meta["extra"]["global_step"] == 6 * 20 and meta["extra"]["epoch"] == 6
    assert (final / "training_state.pt").is_file()
    # periodic checkpoints every epoch, only the newest 2 kept (the last epoch is the final one)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_0004", "epoch_0005"]

    ea = EventAccumulator(str(out / "tensorboard"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/loss", "val/action_mse"} <= tags
    assert [e.step for e in ea.Scalars("val/loss")] == [40, 80, 120]  # every 2nd epoch of 20 steps
    losses = [e.value for e in ea.Scalars("train/loss")]
    assert np.mean(losses[-10:]) < 0.75 * np.mean(losses[:5]), losses
    lrs = [e.value for e in ea.Scalars("train/lr")]
    assert lrs[0] < lrs[4] and lrs[-1] < max(lrs)  # warm-up, then cosine decay
    # EMA weights (default) and raw weights are both loadable and differ
    ema, raw = load_policy(out, device="cpu"), load_policy(out, device="cpu", use_ema=False)
    k = "model.final_conv.1.weight"
    assert not torch.equal(ema.state_dict()[k], raw.state_dict()[k])
    # the normalizer came from the data
    st = dataset_stats(train)
    assert np.allclose(ema.normalizer.to_dict()["fields"]["action"]["max"], st["action"]["max"])


def test_training_is_seeded(tmp_path):
    cfg = tiny_cfg(max_steps=4)
    a = train_policy(cfg, LinearDemo(48), None, None, tmp_path / "a", device="cpu", progress=False, log=lambda *_: None)
    b = train_policy(cfg, LinearDemo(48), None, None, tmp_path / "b", device="cpu", progress=False, log=lambda *_: None)
    pa, pb = load_policy(a, device="cpu", use_ema=False), load_policy(b, device="cpu", use_ema=False)
    for k, v in pa.state_dict().items():
        assert torch.equal(v, pb.state_dict()[k]), k
    cfg.train.seed = 1
    c = train_policy(cfg, LinearDemo(48), None, None, tmp_path / "c", device="cpu", progress=False, log=lambda *_: None)
    pc = load_policy(c, device="cpu", use_ema=False)
    assert not torch.equal(pc.state_dict()["model.final_conv.1.weight"], pa.state_dict()["model.final_conv.1.weight"])


# --------------------------------------------------------------------------- the CLI over a real store


def make_store(path, joints=("a", "b", "c"), n_eps=4, length=12, hw=(32, 32)):
    from genil_ros.data.store import EpisodeStore

    rng = np.random.default_rng(0)
    w = EpisodeStore.create(path, joint_names=list(joints),
                            cameras=[{"name": "front", "height": hw[0], "width": hw[1]}],
                            control_rate_hz=10.0)
    for e in range(n_eps):
        t = np.arange(length, dtype=np.float64) / 10.0
        state = np.stack([np.sin(t + e + j) for j in range(len(joints))], 1).astype(np.float32)
        action = np.roll(state, -1, axis=0)
        img = rng.integers(0, 256, (length, hw[0], hw[1], 3), dtype=np.uint8)
        w.add_episode({"state": state, "action": action, "timestamp": t, "front": img})
    return w.finalize()


def write_cfg(path, joints=("a", "b", "c"), hw=(32, 32), **train):
    t = {"batch_size": 8, "num_epochs": 2, "lr_warmup_steps": 2, "checkpoint_every_epochs": 1, "val_fraction": 0.25}
    t.update(train)
    d = {"task": {"joint_names": list(joints),
                  "cameras": [{"name": "front", "topic": "/camera/image_raw", "height": hw[0], "width": hw[1]}],
                  "horizon": {"n_obs_steps": 2, "horizon": 8, "n_action_steps": 4}},
         "policy": {"down_dims": [16, 32], "diffusion_step_embed_dim": 16, "num_inference_steps": 2,
                    "vision": {"feature_dim": 8, "num_keypoints": 4}},
         "train": t}
    path.write_text(yaml.safe_dump(d))
    return path


def test_cli_train_on_episode_store_and_resume(tmp_path, capsys):
    store = make_store(tmp_path / "ds")
    cfg = write_cfg(tmp_path / "cfg.yaml")
    out = tmp_path / "run"
    args = ["train", "--config", str(cfg), "--dataset", str(store.path), "--out", str(out), "--device", "cpu",
            "--no-progress"]
    assert cli_main(args + ["--max-steps", "3"]) == 0
    printed = capsys.readouterr().out
    assert "3 for training, 1 held out for validation (train.val_fraction = 0.25 of 4)" in printed
    assert re.search(r"throughput \d+\.\d samples/s \(\d+ samples in", printed), printed
    meta = json.loads((out / "final" / "meta.json").read_text())
    assert meta["extra"]["global_step"] == 3
    assert meta["extra"]["dataset"]["num_episodes"] == 4 and len(meta["extra"]["dataset"]["val_episodes"]) == 1
    assert meta["extra"]["val_loss"] is not None
    p = load_policy(out, device="cpu")
    assert p.camera_names == ["front"]
    # the normalizer was fitted from the store's statistics
    st = store.stats()
    assert np.allclose(p.normalizer.to_dict()["fields"]["state"]["min"], st["state"]["min"])
    obs = {"state": torch.zeros(1, 2, 3), "front": torch.zeros(1, 2, 3, 32, 32, dtype=torch.uint8)}
    assert p.predict_action(obs).shape == (1, 8, 3)

    # the same --out again without --resume is refused, with a one-line error
    assert cli_main(args + ["--max-steps", "3"]) == 2
    assert "--resume" in capsys.readouterr().err
    # --resume continues from the newest checkpoint up to the new step count
    assert cli_main(args + ["--max-steps", "5", "--resume"]) == 0
    meta2 = json.loads((out / "final" / "meta.json").read_text())
    assert meta2["extra"]["global_step"] == 5
    assert "resuming from" in capsys.readouterr().out


# a training process that dies by SIGKILL in the middle of its second periodic save, as `kill -9` would
# leave it: training_state.pt of epoch_0002.tmp-<pid> half written, its meta.json complete
_KILLED_DURING_SAVE = """
import io, os, signal, sys
import torch
from genil_ros.cli import main

real_save, saves = torch.save, []

def save_then_die(obj, f, *args, **kwargs):
    saves.append(str(f))
    if len(saves) < 2:
        return real_save(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    real_save(obj, buf)
    with open(f, "wb") as out:
        out.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = save_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_resume_after_a_save_killed_by_sigkill(tmp_path, capsys):
    """Issue 17 item 2: --resume after kill -9 during a periodic save continues from the last complete
    checkpoint, never the temp dir whose meta.json was written, and removes that temp dir."""
    store = make_store(tmp_path / "ds")
    cfg = write_cfg(tmp_path / "cfg.yaml")
    out = tmp_path / "run"
    args = ["train", "--config", str(cfg), "--dataset", str(store.path), "--out", str(out), "--device", "cpu",
            "--no-progress", "--max-steps", "12"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", _KILLED_DURING_SAVE, *args], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stdout[-2000:] + res.stderr[-2000:]
    ckpts = out / "checkpoints"
    leftover = [p for p in ckpts.iterdir() if p.name.startswith("epoch_0002.tmp-")]
    assert len(leftover) == 1 and (leftover[0] / "meta.json").is_file(), sorted(p.name for p in ckpts.iterdir())
    assert (ckpts / "epoch_0001" / "training_state.pt").is_file() and not (out / "final").exists()
    # what the issue saw: the temp dir has a meta.json and the most steps, but only finished names count
    assert find_resume_checkpoint(out) == ckpts / "epoch_0001"

    assert cli_main(args[:-1] + ["14", "--resume"]) == 0
    printed = capsys.readouterr().out
    assert f"removed {leftover[0].name}" in printed
    assert f"resuming from {ckpts / 'epoch_0001'} at epoch 1" in printed
    assert not leftover[0].exists()
    assert json.loads((out / "final" / "meta.json").read_text())["extra"]["global_step"] == 14


def test_recover_killed_saves_restores_a_moved_aside_final(tmp_path):
    """Killed between the two renames of re-saving `final`: the moved-aside complete one gets its name
    back (then it is a resume candidate); temp dirs of dead processes go; a live writer's are kept."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    run = tmp_path / "run"
    final_old = run / f"final.old-{dead}"
    final_old.mkdir(parents=True)
    (final_old / "meta.json").write_text(json.dumps({"format_version": 1, "extra": {"global_step": 7}}))
    (final_old / "training_state.pt").write_bytes(b"x")
    (run / f"final.tmp-{dead}").mkdir()
    (run / "checkpoints" / f"epoch_0003.tmp-{dead}").mkdir(parents=True)
    (run / "checkpoints" / f"epoch_0003.tmp-{dead}" / "meta.json").write_text("{}")
    live = run / "checkpoints" / f"epoch_0004.tmp-{os.getpid()}"
    live.mkdir()
    assert find_resume_checkpoint(run) is None
    notes = recover_killed_saves(run)
    assert f"restored final from final.old-{dead}" in notes
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "final"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [live.name]
    assert find_resume_checkpoint(run) == run / "final"


def test_cli_train_errors_name_the_problem(tmp_path, capsys):
    store = make_store(tmp_path / "ds", n_eps=2, length=6)
    base = ["train", "--dataset", str(store.path), "--device", "cpu", "--no-progress"]
    cfg = write_cfg(tmp_path / "joints.yaml", joints=("a", "b", "elbow"))
    assert cli_main(base + ["--config", str(cfg), "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert "observation 'joints': dimensions differ" in err and "elbow" in err and len(err.strip().splitlines()) == 1
    cfg = write_cfg(tmp_path / "size.yaml", hw=(48, 48))
    assert cli_main(base + ["--config", str(cfg), "--out", str(tmp_path / "o2")]) == 2
    assert "front" in capsys.readouterr().err
    cfg = write_cfg(tmp_path / "ok.yaml")
    assert cli_main(["train", "--config", str(cfg), "--dataset", str(tmp_path / "nope"), "--out",
                     str(tmp_path / "o3"), "--device", "cpu"]) == 2
    assert "nope" in capsys.readouterr().err


# --------------------------------------------------------------------------- CUDA (skipped without a GPU)

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda_only
@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_cuda_mixed_precision_training_and_fast_inference(tmp_path, precision):
    """On a GPU: bf16 (auto) / fp16 autocast training learns and checkpoints; CUDA-graph and half-precision
    inference give the eager chunk (same seed) within tolerance."""
    cfg = tiny_cfg(num_epochs=3, mixed_precision=precision)
    final = train_policy(cfg, LinearDemo(320), LinearDemo(32, seed=1), None, tmp_path / "run", device="cuda",
                         progress=False, log=lambda *_: None)
    meta = json.loads((final / "meta.json").read_text())
    assert meta["extra"]["val_loss"] is not None and np.isfinite(meta["extra"]["val_loss"])
    p = load_policy(final, device="cuda")
    assert p.device.type == "cuda"
    obs = {"state": LinearDemo(1).state[:1]}
    p.set_inference("ddim", 4)
    gen = lambda: torch.Generator(device="cuda").manual_seed(0)  # noqa: E731
    ref = p.predict_action(obs, generator=gen())
    assert p.enable_cuda_graph(batch_size=1)
    with torch.inference_mode():
        g1 = p.predict_action(obs, generator=gen())
        g2 = p.predict_action(obs, generator=gen())
    assert torch.allclose(g1, ref, atol=1e-4) and torch.equal(g1, g2)
    p.disable_cuda_graph()
    p.set_inference_precision("fp16")
    half = p.predict_action(obs, generator=gen())
    assert torch.isfinite(half).all() and float((half - ref).abs().max()) < 0.2
    # a CPU generator with a CUDA policy works too (the node may pass either)
    assert p.predict_action(obs, generator=torch.Generator().manual_seed(0)).shape == (1, 8, 3)


def test_same_command_under_torchrun_two_processes(tmp_path):
    """`torchrun --nproc_per_node 2 -m genil_ros.cli train ...`: DDP over gloo on the CPU, one final checkpoint
    written by rank 0, with the world size recorded (the multi-GPU path, minus the GPUs)."""
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    store = make_store(tmp_path / "ds")
    cfg = write_cfg(tmp_path / "cfg.yaml")
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    res = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000),
                          "-m", "genil_ros.cli", "train", "--config", str(cfg), "--dataset", str(store.path),
                          "--out", str(out), "--device", "cpu", "--max-steps", "3", "--batch-size", "4",
                          "--no-progress"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    meta = json.loads((out / "final" / "meta.json").read_text())
    assert meta["extra"]["world_size"] == 2 and meta["extra"]["global_step"] == 3
    assert res.stdout.count("final checkpoint:") == 1  # rank 0 only
    assert load_policy(out, device="cpu").camera_names == ["front"]
