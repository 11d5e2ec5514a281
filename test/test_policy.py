"""Diffusion policy units: U-Net shapes and FiLM conditioning, normalizer, vision encoder (GroupNorm,
crops, local pretrained weights), sampling API, checkpoint round trip and every checkpoint error."""

from __future__ import annotations

import json
import os

import pytest
import torch

from genil_ros.config import config_from_dict
from genil_ros.errors import CheckpointError
from genil_ros.policy.checkpoint import FORMAT_VERSION, check_task_compatible, load_policy, save_checkpoint
from genil_ros.policy.diffusion import DiffusionPolicy
from genil_ros.policy.model import ConditionalUnet1D
from genil_ros.policy.normalizer import Normalizer
from genil_ros.policy.vision import ImageEncoder, build_resnet18


def make_cfg(camera=False, hw=(32, 32), joints=("a", "b", "c"), down_dims=(16, 32), horizon=(2, 8, 4), **policy):
    cams = [{"name": "front", "topic": "/cam", "height": hw[0], "width": hw[1]}] if camera else []
    p = {"down_dims": list(down_dims), "diffusion_step_embed_dim": 16, "num_inference_steps": 4,
         "vision": {"feature_dim": 8, "num_keypoints": 4}}
    p.update(policy)
    return config_from_dict({
        "task": {"joint_names": list(joints), "cameras": cams,
                 "horizon": {"n_obs_steps": horizon[0], "horizon": horizon[1], "n_action_steps": horizon[2]}},
        "policy": p,
    })


def make_policy(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = make_cfg(**kw)
    p = DiffusionPolicy(cfg)
    n = cfg.task.action_dim
    p.normalizer.fit("state", [-1.0] * n, [1.0] * n)
    p.normalizer.fit("action", [-2.0] * (n - 1) + [0.5], [2.0] * (n - 1) + [0.5])  # last joint constant
    return p


def make_obs(policy, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = {"state": torch.rand(B, policy.n_obs_steps, policy.state_dim, generator=g) * 2 - 1}
    for c in policy.cfg.task.cameras:
        obs[c.name] = torch.randint(0, 256, (B, policy.n_obs_steps, 3, c.height, c.width), generator=g,
                                    dtype=torch.uint8)
    return obs


# --------------------------------------------------------------------------- network


@pytest.mark.parametrize("T", [16, 15, 7, 1])
def test_unet_shapes_any_horizon(T):
    net = ConditionalUnet1D(3, 10, 16, [8, 16, 32], kernel_size=5, n_groups=8)
    y = net(torch.randn(4, T, 3), torch.tensor([0, 5, 50, 99]), torch.randn(4, 10))
    assert y.shape == (4, T, 3)
    y2 = net(torch.randn(4, T, 3), 7, torch.randn(4, 10))  # a scalar step is broadcast
    assert y2.shape == (4, T, 3)


def test_default_policy_section_is_the_paper_cnn():
    cfg = config_from_dict({"task": {"joint_names": ["a"]}})
    assert cfg.policy.down_dims == [256, 512, 1024] and cfg.policy.kernel_size == 5 and cfg.policy.n_groups == 8
    net = ConditionalUnet1D(1, 2, 128, cfg.policy.down_dims)
    gns = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert gns and all(m.num_groups == 8 for m in gns)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv1d) and m.kernel_size[0] > 3]
    assert convs and all(m.kernel_size == (5,) for m in convs)


def test_unet_output_depends_on_obs_condition_and_step():
    torch.manual_seed(0)
    net = ConditionalUnet1D(2, 6, 16, [16, 32]).eval()
    x = torch.randn(1, 8, 2)
    c1, c2 = torch.randn(1, 6), torch.randn(1, 6)
    with torch.no_grad():
        a, b = net(x, 10, c1), net(x, 10, c2)
        c = net(x, 60, c1)
    assert not torch.allclose(a, b, atol=1e-5), "FiLM conditioning on the observation has no effect"
    assert not torch.allclose(a, c, atol=1e-5), "the diffusion-step embedding has no effect"


# --------------------------------------------------------------------------- normalizer


def test_normalizer_roundtrip_range_and_constant_dims():
    n = Normalizer()
    n.fit("action", [0.0, -3.0, 1.0], [10.0, 3.0, 1.0])  # third dim constant
    x = torch.tensor([[0.0, -3.0, 1.0], [10.0, 3.0, 1.0], [5.0, 0.0, 1.0]])
    y = n.normalize("action", x)
    assert torch.allclose(y[:, :2], torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]), atol=1e-6)
    assert torch.isfinite(y).all() and torch.allclose(y[:, 2], torch.zeros(3))
    back = n.unnormalize("action", torch.tensor([[0.3, -0.2, 0.9]]))
    assert back[0, 2] == pytest.approx(1.0)  # a constant dimension always comes back as its constant
    assert torch.allclose(n.unnormalize("action", y), x, atol=1e-5)
    n2 = Normalizer.from_dict(json.loads(n.to_json()))
    assert torch.allclose(n2.normalize("action", x), y)
    with pytest.raises(CheckpointError, match="normalizer.json"):
        Normalizer.from_dict({"fields": {"action": {"min": [0.0]}}})


# --------------------------------------------------------------------------- vision


def test_resnet18_groupnorm_and_crops():
    trunk = build_resnet18(group_norm=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in trunk.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in trunk.modules())
    enc = ImageEncoder(40, 40, crop_ratio=0.8, feature_dim=8, num_keypoints=4)
    img = torch.zeros(6, 3, 40, 40)
    img[:, :, :20, :20] = 1.0  # a marker in one corner
    enc.train()
    torch.manual_seed(0)
    crops = enc.crop(img)
    assert crops.shape == (6, 3, 32, 32)
    sums = crops.sum(dim=(1, 2, 3))
    assert len(set(sums.tolist())) > 1, "training crops should differ per sample"
    enc.eval()
    c1, c2 = enc.crop(img), enc.crop(img)
    assert torch.equal(c1, c2) and torch.equal(c1, img[:, :, 4:36, 4:36])  # centre crop
    out = enc(torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8))
    assert out.shape == (2, 8)


def test_pretrained_weights_from_local_file_only(tmp_path):
    import torchvision

    src = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        src.conv1.weight.fill_(0.01)
        src.bn1.weight.fill_(2.0)
    f = tmp_path / "r18.pth"
    torch.save(src.state_dict(), f)
    trunk = build_resnet18(group_norm=True, pretrained_weights=str(f))
    assert torch.allclose(trunk[0].weight, torch.full_like(trunk[0].weight, 0.01))
    assert isinstance(trunk[1], torch.nn.GroupNorm) and torch.allclose(trunk[1].weight, torch.full((64,), 2.0))
    with pytest.raises(CheckpointError, match="nope.pth.*never downloaded"):
        build_resnet18(pretrained_weights=str(tmp_path / "nope.pth"))
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="bad.pth"):
        build_resnet18(pretrained_weights=str(tmp_path / "bad.pth"))


# --------------------------------------------------------------------------- policy API


@pytest.mark.parametrize("camera", [False, True])
def test_loss_and_sampling_shapes(camera):
    p = make_policy(camera=camera)
    obs = make_obs(p, B=3)
    loss = p.compute_loss({"obs": obs, "action": torch.randn(3, 8, 3)})
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(q.grad is not None for q in p.model.parameters())
    if camera:
        assert p.obs_encoder.image_encoders["front"].backbone[0].weight.grad is not None
    p.eval()
    for sched, steps in (("ddim", 3), ("ddpm", 5), ("dpmsolver", 3)):
        p.set_inference(sched, steps)
        a = p.predict_action(obs)
        assert a.shape == (3, 8, 3) and a.dtype == torch.float32
        k = p.sample_actions(obs, num_samples=4)
        assert k.shape == (3, 4, 8, 3)
        # within the normalizer's range, and the constant joint stays exactly constant
        assert (k[..., :2].abs() <= 2.0 + 1e-5).all()
        assert torch.allclose(k[..., 2], torch.full_like(k[..., 2], 0.5))


def test_sampling_is_seedable_and_samples_differ():
    p = make_policy().eval()
    obs = make_obs(p, B=1)
    p.set_inference("ddpm", 5)
    a = p.sample_actions(obs, 3, generator=torch.Generator().manual_seed(1))
    b = p.sample_actions(obs, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.allclose(a[0, 0], a[0, 1]), "K samples of one observation should be different draws"


def test_bad_inputs_are_named():
    p = make_policy(camera=True)
    obs = make_obs(p, B=1)
    with pytest.raises(ValueError, match="num_inference_steps"):
        p.set_inference("ddim", 0)
    with pytest.raises(ValueError, match="unknown scheduler"):
        p.set_inference("euler", 5)
    with pytest.raises(KeyError, match="front"):
        p.predict_action({"state": obs["state"]})
    with pytest.raises(ValueError, match="state"):
        p.predict_action({**obs, "state": obs["state"][:, :1]})
    with pytest.raises(ValueError, match="front"):
        p.predict_action({**obs, "front": obs["front"][..., :16]})


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_roundtrip(tmp_path):
    p = make_policy(camera=True)
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in p.state_dict().items()}
    d = save_checkpoint(tmp_path / "ck", p, ema_state=ema, extra={"epoch": 3})
    assert sorted(os.listdir(d)) == sorted(["model.safetensors", "ema.safetensors", "config.yaml",
                                            "normalizer.json", "meta.json"])
    meta = json.loads((d / "meta.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["extra"]["epoch"] == 3
    assert meta["shapes"]["action_dim"] == 3 and meta["shapes"]["cameras"][0]["name"] == "front"
    assert "normalizer" not in (d / "config.yaml").read_text()
    raw = load_policy(d, device="cpu", use_ema=False)
    assert not raw.training and raw.device.type == "cpu"
    for k, v in p.state_dict().items():
        assert torch.equal(raw.state_dict()[k], v), k
    e = load_policy(tmp_path / "ck", device="cpu")  # EMA weights by default
    w = "model.down_modules.0.0.blocks.0.0.weight"
    assert torch.equal(e.state_dict()[w], p.state_dict()[w] + 1.0)
    obs = make_obs(p, B=2)
    p.eval()
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.allclose(raw.predict_action(obs, generator=g()), p.predict_action(obs, generator=g()), atol=1e-6)
    # a training output directory resolves to its final/ checkpoint
    save_checkpoint(tmp_path / "run" / "final", p)
    assert load_policy(tmp_path / "run", device="cpu").cfg.task.joint_names == ["a", "b", "c"]


def test_checkpoint_errors(tmp_path):
    p = make_policy()
    d = save_checkpoint(tmp_path / "ck", p)
    with pytest.raises(CheckpointError, match="not found"):
        load_policy(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no meta.json"):
        load_policy(tmp_path / "empty")
    # newer format
    meta = json.loads((d / "meta.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="newer"):
        load_policy(d)
    # missing file
    d = save_checkpoint(tmp_path / "ck", p)
    (d / "ema.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing ema.safetensors"):
        load_policy(d)
    # weights for other shapes than the config describes
    d = save_checkpoint(tmp_path / "ck", p)
    big = make_policy(down_dims=(16, 48))
    save_checkpoint(tmp_path / "big", big)
    os.replace(tmp_path / "big" / "ema.safetensors", d / "ema.safetensors")
    with pytest.raises(CheckpointError, match="other shapes.*ema.safetensors|ema.safetensors.*other shapes"):
        load_policy(d)
    # corrupt weights file
    (d / "ema.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="ema.safetensors"):
        load_policy(d)
    # a task that differs from the checkpoint's (e.g. a node's config override)
    d = save_checkpoint(tmp_path / "ck", p)
    other = make_cfg(joints=("a", "b", "x")).task
    with pytest.raises(CheckpointError, match=r"state entry 0 \('joints'\): dimensions differ \(\['a', 'b', 'c'\] "
                                              r"vs \['a', 'b', 'x'\]\)"):
        load_policy(d, task=other)
    with pytest.raises(CheckpointError, match="cameras"):
        check_task_compatible(p, make_cfg(camera=True).task)


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    p = make_policy()
    d = save_checkpoint(tmp_path / "ck", p, extra={"n": 1})
    import safetensors.torch as st

    real = st.save_file
    calls = {"n": 0}

    def dying(*a, **k):  # the second file write "crashes" mid-save
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(*a, **k)

    monkeypatch.setattr(st, "save_file", dying)
    with pytest.raises(OSError):
        save_checkpoint(d, make_policy(seed=1), extra={"n": 2})
    monkeypatch.setattr(st, "save_file", real)
    assert json.loads((d / "meta.json").read_text())["extra"]["n"] == 1
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ck"]  # no temp dir left behind
    q = load_policy(d, device="cpu", use_ema=False)
    assert all(torch.equal(q.state_dict()[k], v) for k, v in p.state_dict().items())


def test_checkpoint_survives_sigkill_mid_save(tmp_path):
    """A process that keeps re-saving one checkpoint is killed at random moments: what is on disk
    always loads (the directory, or the previous one moved aside), and the next save cleans up."""
    import signal
    import subprocess
    import sys
    import time

    p = make_policy()
    d = save_checkpoint(tmp_path / "ck", p)
    script = (
        "import sys, torch; sys.path.insert(0, sys.argv[2]); torch.set_num_threads(1)\n"
        "from test_policy import make_policy\n"
        "from genil_ros.policy.checkpoint import save_checkpoint\n"
        "p = make_policy(seed=1)\n"
        "print('ready', flush=True)\n"
        "while True: save_checkpoint(sys.argv[1], p)\n"
    )
    for delay in (0.05, 0.23):
        proc = subprocess.Popen([sys.executable, "-c", script, str(d), os.path.dirname(__file__)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
        q = load_policy(d, device="cpu")
        assert q.cfg.task.joint_names == ["a", "b", "c"]
    save_checkpoint(d, p)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ck"]
