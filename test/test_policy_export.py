"""The MSE regression baseline (policy.objective: mse) and deployment export (EMA weights, fp16)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from genil_ros.config import load_config  # noqa: E402
from genil_ros.errors import CheckpointError  # noqa: E402
from genil_ros.paths import config_path  # noqa: E402
from genil_ros.policy.checkpoint import export_checkpoint, load_policy, save_checkpoint  # noqa: E402
from genil_ros.policy.diffusion import DiffusionPolicy  # noqa: E402


def small_cfg(objective="diffusion"):
    cfg = load_config(config_path("sim_task.yaml"))
    cfg.policy.objective = objective
    cfg.policy.down_dims = [16, 32]
    cfg.policy.vision.feature_dim = 8
    cfg.policy.vision.num_keypoints = 8
    return cfg


def make(objective):
    torch.manual_seed(0)
    p = DiffusionPolicy(small_cfg(objective))
    st = {"min": -np.ones(4, np.float32), "max": np.ones(4, np.float32)}
    p.normalizer.fit_stats({"state": st, "action": st})
    return p


def obs(batch=2):
    g = torch.Generator().manual_seed(1)
    return {"state": torch.rand(batch, 2, 4, generator=g) - 0.5,
            "front": torch.randint(0, 255, (batch, 2, 3, 96, 96), generator=g, dtype=torch.uint8)}


def test_mse_objective_regresses_the_chunk_in_one_pass():
    p = make("mse")
    target = torch.full((2, 16, 4), 0.5)
    opt = torch.optim.Adam(p.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = p.compute_loss({"obs": obs(), "action": target})
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first
    p.eval()
    a = p.sample_actions(obs(), num_samples=3)
    assert a.shape == (2, 3, 16, 4)
    assert torch.allclose(a[:, 0], a[:, 1]) and torch.allclose(a[:, 0], a[:, 2])  # deterministic: no noise
    assert (a - 0.5).abs().max() < 0.15


def test_objective_survives_a_checkpoint(tmp_path):
    p = make("mse")
    save_checkpoint(tmp_path / "ck", p)
    q = load_policy(tmp_path / "ck", device="cpu")
    assert q.objective == "mse"
    assert torch.allclose(p.eval().predict_action(obs()), q.predict_action(obs()))


def test_export_keeps_the_ema_weights_in_half_the_size(tmp_path):
    p = make("diffusion")
    ema = {k: v + 0.01 if v.is_floating_point() else v for k, v in p.state_dict().items()}
    src = save_checkpoint(tmp_path / "ck", p, ema_state=ema)
    dst = export_checkpoint(src, tmp_path / "deploy", "fp16")
    assert not (dst / "model.safetensors").exists()
    assert (dst / "ema.safetensors").stat().st_size < 0.6 * (src / "ema.safetensors").stat().st_size
    a = load_policy(src, device="cpu")
    b = load_policy(dst, device="cpu")
    assert b.checkpoint_meta["inference_only"] is True
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert vb.dtype == va.dtype, k  # cast back to float32 on load
        assert torch.allclose(va.float(), vb.float(), atol=2e-3, rtol=1e-3), k
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert (a.predict_action(obs(), g()) - b.predict_action(obs(), g())).abs().max() < 0.05
    with pytest.raises(CheckpointError, match="EMA weights only"):
        load_policy(dst, device="cpu", use_ema=False)


def test_export_refuses_a_broken_checkpoint(tmp_path):
    src = save_checkpoint(tmp_path / "ck", make("diffusion"))
    (src / "normalizer.json").write_text("{")
    with pytest.raises(CheckpointError, match="normalizer.json"):
        export_checkpoint(src, tmp_path / "deploy")
    assert not (tmp_path / "deploy").exists()
