"""A chunk that continues from a committed prefix: inpainting at inference and prefix conditioning in
training (genil_ros/policy/prefix.py), on small real policies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genil_ros.config import config_from_dict
from genil_ros.control.plan import Prefix
from genil_ros.policy import DiffusionPolicy, save_checkpoint
from genil_ros.policy.prefix import PrefixBatch, prefix_methods

T_O, T_P, T_A, A = 2, 8, 4, 3


def make_policy(prefix_conditioning: int = 0, seed: int = 0, objective: str = "diffusion") -> DiffusionPolicy:
    cfg = config_from_dict({
        "task": {"joint_names": ["a", "b", "c"],
                 "horizon": {"n_obs_steps": T_O, "horizon": T_P, "n_action_steps": T_A}},
        "policy": {"down_dims": [16, 32], "diffusion_step_embed_dim": 16, "num_inference_steps": 5,
                   "prefix_conditioning": prefix_conditioning, "objective": objective},
    }, source="test")
    torch.manual_seed(seed)
    p = DiffusionPolicy(cfg)
    p.normalizer.fit("state", [-1.0] * A, [1.0] * A)
    p.normalizer.fit("action", [-1.0] * A, [1.0] * A)
    return p.eval()


def obs(b: int = 2) -> dict:
    return {"state": torch.linspace(-0.5, 0.5, b * T_O * A).reshape(b, T_O, A)}


def prefix(n_fixed: int, soft=(), method="inpaint", guidance=0.0, value=0.3) -> Prefix:
    values = np.tile(np.linspace(value, value + 0.1, T_P)[:, None], (1, A))
    weights = np.zeros(T_P)
    weights[:n_fixed] = 1.0
    weights[n_fixed:n_fixed + len(soft)] = soft
    return Prefix(values, weights, method, guidance)


@pytest.mark.parametrize("guidance", [0.0, 5.0])
def test_inpainting_keeps_the_committed_prefix(guidance):
    p = make_policy()
    pre = prefix(3, guidance=guidance)
    pb = PrefixBatch.stack([pre, None], T_P, A)
    g = torch.Generator().manual_seed(0)
    out = p.predict_action(obs(), generator=g, prefix=pb).numpy()
    assert np.allclose(out[0, :3], pre.values[:3], atol=1e-5)  # fixed entries: exactly the prefix
    assert not np.allclose(out[0, 3:], pre.values[3:], atol=1e-3)  # the rest is the model's
    free = p.predict_action(obs(), generator=torch.Generator().manual_seed(0)).numpy()
    if guidance == 0:  # without weights, replacement inpainting is the plain DDIM chain: same noise, same chunk
        assert np.allclose(out[1], free[1], atol=1e-5)
    assert not np.allclose(out[1, :3], pre.values[:3], atol=1e-3)


def test_soft_weights_pull_towards_the_previous_plan():
    p = make_policy()
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    hard = p.predict_action(obs(1), generator=g(), prefix=PrefixBatch.stack([prefix(2)], T_P, A)).numpy()
    soft = p.predict_action(obs(1), generator=g(),
                            prefix=PrefixBatch.stack([prefix(2, soft=(0.9, 0.6))], T_P, A)).numpy()
    target = prefix(2).values
    assert np.abs(soft[0, 2:4] - target[2:4]).max() < np.abs(hard[0, 2:4] - target[2:4]).max()


def test_guidance_changes_the_entries_after_the_prefix():
    p = make_policy()
    run = lambda gd: p.predict_action(obs(1), generator=torch.Generator().manual_seed(2),  # noqa: E731
                                      prefix=PrefixBatch.stack([prefix(3, guidance=gd)], T_P, A)).numpy()
    plain, guided = run(0.0), run(5.0)
    assert np.allclose(plain[0, :3], guided[0, :3], atol=1e-5)
    assert not np.allclose(plain[0, 3:], guided[0, 3:], atol=1e-6)  # the backward pass reached the rest


def test_prefix_errors():
    p = make_policy()
    with pytest.raises(ValueError, match="needs a policy trained with policy.prefix_conditioning"):
        p.predict_action(obs(1), prefix=PrefixBatch.stack([prefix(2, method="condition")], T_P, A))
    with pytest.raises(ValueError, match="prefix values must be"):
        p.predict_action(obs(2), prefix=PrefixBatch.stack([prefix(2)], T_P, A))
    with pytest.raises(ValueError, match="one of"):
        PrefixBatch.stack([prefix(2), prefix(2, method="condition")], T_P, A)
    assert prefix_methods(p) == ("inpaint",) and prefix_methods(make_policy(3)) == ("inpaint", "condition")
    p.set_inference("ddpm", 5)
    with pytest.raises(ValueError, match="needs the ddim scheduler"):
        p.predict_action(obs(1), prefix=PrefixBatch.stack([prefix(2)], T_P, A))
    assert prefix_methods(p) == ()  # the node's handover `auto` then falls back to receding_horizon
    assert prefix_methods(make_policy(objective="mse")) == ()  # the regression baseline: no sampler to inpaint with


def test_prefix_conditioning_trains_on_the_free_entries_only():
    p = make_policy(prefix_conditioning=3).train()
    assert p.model.input_dim == A + 1
    seen = {}
    real = p.model.forward

    def spy(x, t, cond):
        seen["x"] = x.detach().clone()
        out = real(x, t, cond)
        seen["out"] = out
        out.retain_grad()
        return out

    p.model.forward = spy
    action = torch.rand(16, T_P, A) * 2 - 1
    loss = p.compute_loss({"obs": obs(16), "action": action}, generator=torch.Generator().manual_seed(0))
    loss.backward()
    x, mask = seen["x"][..., :A], seen["x"][..., A]
    n = mask.sum(1)
    assert set(mask.unique().tolist()) <= {0.0, 1.0} and n.max() <= T_O - 1 + 3 and n.min() >= 0
    assert len(set(n.tolist())) > 1  # prefix lengths are drawn per sample
    for i in range(16):  # the mask marks a leading run of entries, given clean
        k = int(n[i])
        assert torch.all(mask[i, :k] == 1) and torch.all(mask[i, k:] == 0)
        assert torch.allclose(x[i, :k], p.normalizer.normalize("action", action[i, :k]), atol=1e-6)
    grad = seen["out"].grad
    assert torch.all(grad[mask.bool()] == 0) and torch.any(grad[~mask.bool()] != 0)  # masked from the loss


def test_a_prefix_conditioned_checkpoint_round_trips_and_conditions(tmp_path):
    from genil_ros.policy.checkpoint import load_policy
    from genil_ros.policy.chunk_model import load_chunk_model

    p = make_policy(prefix_conditioning=2)
    save_checkpoint(tmp_path / "ck", p)
    q = load_policy(tmp_path / "ck", device="cpu")
    assert q.prefix_conditioning == 2 and q.model.input_dim == A + 1
    pre = prefix(3, method="condition")
    out = q.predict_action(obs(1), generator=torch.Generator().manual_seed(0),
                           prefix=PrefixBatch.stack([pre], T_P, A)).numpy()
    assert np.allclose(out[0, :3], pre.values[:3], atol=1e-5)
    assert q.predict_action(obs(1)).shape == (1, T_P, A)  # no prefix: a zero mask channel
    for guidance in (0.0, 5.0):  # inpainting works on such a model too (a zero mask channel)
        inp = q.predict_action(obs(1), prefix=PrefixBatch.stack([prefix(3, guidance=guidance)], T_P, A)).numpy()
        assert np.allclose(inp[0, :3], pre.values[:3], atol=1e-5)
    m = load_chunk_model(str(tmp_path / "ck"), device="cpu")
    assert m.prefix_methods == ("inpaint", "condition")
    chunk = m({"state": np.zeros((T_O, A), np.float32)}, prefix=pre)
    assert chunk.shape == (T_P, A) and np.allclose(chunk[:3], pre.values[:3], atol=1e-5)
    assert load_chunk_model(str(tmp_path / "ck"), device="cpu", scheduler="ddpm").prefix_methods == ()
