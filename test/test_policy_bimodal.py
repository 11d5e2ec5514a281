"""Why diffusion: demonstrations with two equally likely modes for the same observation (go up, or go
down). The diffusion policy samples both modes and almost nothing in between; a plain MSE regressor
on the same data predicts their mean, an action no demonstrator took."""

from __future__ import annotations

import torch

from genil_ros.config import config_from_dict
from genil_ros.policy.checkpoint import load_policy
from genil_ros.policy.train import train_policy

T_O, T_P = 1, 8


class TwoModes(torch.utils.data.Dataset):
    """1-D joint; every chunk is a ramp to +1 or to -1 (50/50), the observation does not tell which."""

    def __init__(self, n=512, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.mode = (torch.randint(0, 2, (n,), generator=g) * 2 - 1).float()
        self.state = torch.rand(n, T_O, 1, generator=g) * 0.1
        ramp = torch.linspace(0.5, 1.0, T_P)[None, :, None]
        self.action = self.mode[:, None, None] * ramp + 0.03 * torch.randn(n, T_P, 1, generator=g)

    def __len__(self):
        return len(self.mode)

    def __getitem__(self, i):
        return {"obs": {"state": self.state[i]}, "action": self.action[i]}


def shares(chunks: torch.Tensor) -> tuple[float, float, float]:
    """(share near +mode, share near -mode, share in between) of (K, T_p, 1) chunks, by their mean."""
    m = chunks.mean(dim=(1, 2))
    return (float((m > 0.5).float().mean()), float((m < -0.5).float().mean()), float((m.abs() < 0.4).float().mean()))


def test_diffusion_keeps_both_modes_mse_collapses_to_the_mean(tmp_path):
    data = TwoModes()
    cfg = config_from_dict({
        "task": {"joint_names": ["j"], "horizon": {"n_obs_steps": T_O, "horizon": T_P, "n_action_steps": 4}},
        "policy": {"down_dims": [32, 64], "diffusion_step_embed_dim": 32},
        "train": {"batch_size": 64, "max_steps": 400, "lr": 1e-3, "lr_warmup_steps": 20, "ema_decay": 0.99,
                  "val_fraction": 0.0, "seed": 0},
    })
    train_policy(cfg, data, None, None, tmp_path / "dp", device="cpu", progress=False, log=lambda *_: None)
    policy = load_policy(tmp_path / "dp", device="cpu")
    obs = {"state": torch.full((1, T_O, 1), 0.05)}
    for sched, steps in (("ddim", 10), ("ddpm", 100)):
        policy.set_inference(sched, steps)
        chunks = policy.sample_actions(obs, num_samples=200, generator=torch.Generator().manual_seed(0))[0]
        up, down, between = shares(chunks)
        assert up > 0.25 and down > 0.25, f"{sched}: a mode is missing (up {up:.2f}, down {down:.2f})"
        assert between < 0.15, f"{sched}: {between:.2f} of the samples fall between the modes"

    # the same data, the same observation features, a plain regressor trained with MSE
    torch.manual_seed(0)
    reg = torch.nn.Sequential(torch.nn.Linear(T_O, 64), torch.nn.Mish(), torch.nn.Linear(64, 64), torch.nn.Mish(),
                              torch.nn.Linear(64, T_P))
    opt = torch.optim.Adam(reg.parameters(), lr=1e-3)
    x, y = data.state.reshape(len(data), -1), data.action.reshape(len(data), -1)
    for _ in range(300):
        idx = torch.randint(0, len(data), (64,))
        loss = torch.nn.functional.mse_loss(reg(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = reg(torch.full((200, T_O), 0.05)).reshape(200, T_P, 1)
    up, down, between = shares(pred)
    assert between == 1.0 and up == 0.0 and down == 0.0, "the MSE regressor should predict the mean of the modes"
    assert float(pred.abs().mean()) < 0.2
