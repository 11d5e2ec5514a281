"""DDIM on precomputed coefficients (policy/sampler.py) against diffusers' own step loop, and
warm-started few-step sampling: shapes, determinism, the number of network passes, and that a full-noise
warm start is exactly the usual sampler."""

from __future__ import annotations

import pytest
import torch
from test_policy import make_obs, make_policy

from genil_ros.policy.backends import TorchBackend
from genil_ros.policy.diffusion import make_scheduler
from genil_ros.policy.sampler import FastDdim, shift_chunk


class CountingBackend(TorchBackend):
    """The real torch backend, counting the denoising passes."""

    def __init__(self, policy):
        super().__init__(policy)
        self.calls = 0

    def denoise(self, x, t, cond):
        self.calls += 1
        return super().denoise(x, t, cond)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("steps", [1, 3, 10, 100])
def test_fast_ddim_step_loop_matches_diffusers(prediction_type, steps):
    sched = make_scheduler("ddim", 100, prediction_type=prediction_type)
    fast = FastDdim(make_scheduler("ddim", 100, prediction_type=prediction_type))
    torch.manual_seed(0)
    w = torch.randn(3, 3)

    def net(x, t, cond):  # any deterministic function of (x, t, cond) will do
        return torch.tanh(x @ w + cond[:, None, :] + t[:, None, None].float() / 50)

    x0 = torch.randn(4, 8, 3)
    cond = torch.randn(4, 3)
    sched.set_timesteps(steps)
    ref = x0
    for t in sched.timesteps:
        ref = sched.step(net(ref, t.expand(4), cond), t, ref).prev_sample
    got = fast.denoise(net, x0, cond, steps)
    assert fast.plan(steps).timesteps == tuple(int(t) for t in sched.timesteps)
    assert (got - ref).abs().max() <= 1e-6


@pytest.mark.parametrize("camera", [False, True])
def test_policy_ddim_equals_diffusers_loop(camera):
    p = make_policy(camera=camera).eval()
    obs = make_obs(p, B=2)
    fast = p.predict_action(obs, gen())
    with torch.no_grad():
        cond = p._encode(obs)
        ref = p._sample_diffusers((2, p.horizon, p.action_dim), cond, gen()).clamp(-1, 1)
    assert (fast - p.normalizer.unnormalize("action", ref)).abs().max() <= 1e-5


def test_other_schedulers_still_sample():
    p = make_policy().eval()
    obs = make_obs(p)
    for kind in ("ddpm", "dpmsolver"):
        p.set_inference(kind, 4)
        a = p.predict_action(obs, gen())
        assert a.shape == (2, p.horizon, p.action_dim) and torch.isfinite(a).all()
        assert torch.equal(a, p.predict_action(obs, gen()))


def test_shift_chunk():
    c = torch.arange(2 * 5 * 1, dtype=torch.float32).reshape(2, 5, 1)
    s = shift_chunk(c, 2)
    assert s[0, :, 0].tolist() == [2, 3, 4, 4, 4] and s[1, :, 0].tolist() == [7, 8, 9, 9, 9]
    assert torch.equal(shift_chunk(c, 0), c) and shift_chunk(c, 0) is not c
    assert shift_chunk(c, 9)[1, :, 0].tolist() == [9] * 5
    with pytest.raises(ValueError, match="shift"):
        shift_chunk(c, -1)


def test_warm_start_full_noise_is_the_usual_sampler():
    p = make_policy().eval()
    obs = make_obs(p, B=3)
    prev = p.predict_action(obs, gen(1))
    usual = p.predict_action(obs, gen(7))
    for shift in (0, 3):
        warm = p.predict_action(obs, gen(7), warm_start=shift_chunk(prev, shift), steps=p.num_inference_steps)
        assert torch.equal(warm, usual)


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_warm_start_runs_k_steps_deterministically(steps):
    p = make_policy(camera=True).eval()
    counter = p.set_backend(CountingBackend(p))
    obs = make_obs(p, B=2)
    prev = p.predict_action(obs, gen(1))
    assert counter.calls == p.num_inference_steps
    init = shift_chunk(prev, p.n_action_steps)
    counter.calls = 0
    a = p.predict_action(obs, gen(2), warm_start=init, steps=steps)
    assert counter.calls == steps
    assert a.shape == (2, p.horizon, p.action_dim)
    assert torch.equal(a, p.predict_action(obs, gen(2), warm_start=init, steps=steps))
    assert not torch.equal(a, p.predict_action(obs, gen(3), warm_start=init, steps=steps))
    k = p.sample_actions(obs, num_samples=4, generator=gen(2), warm_start=init, steps=steps)
    assert k.shape == (2, 4, p.horizon, p.action_dim)


def test_one_step_warm_start_stays_near_its_start():
    """The last DDIM step starts at a low noise level: the chunk it returns is close to the warm start
    (whatever the untrained network predicts), much closer than a fresh sample is."""
    p = make_policy().eval()
    obs = make_obs(p, B=4)
    init = p.predict_action(obs, gen(1))
    warm = p.predict_action(obs, gen(2), warm_start=init, steps=1)
    fresh = p.predict_action(obs, gen(2))
    live = slice(0, p.action_dim - 1)  # the last joint is constant in make_policy's normaliser
    d_warm = (warm - init)[..., live].abs().mean()
    d_fresh = (fresh - init)[..., live].abs().mean()
    assert d_warm < 0.25 * d_fresh


def test_warm_start_errors():
    p = make_policy().eval()
    obs = make_obs(p, B=2)
    init = p.predict_action(obs, gen())
    with pytest.raises(ValueError, match="warm_start must be"):
        p.predict_action(obs, warm_start=init[:1], steps=2)
    with pytest.raises(ValueError, match="warm-start steps"):
        p.predict_action(obs, warm_start=init, steps=p.num_inference_steps + 1)
    with pytest.raises(ValueError, match="without warm_start"):
        p.predict_action(obs, steps=2)
    p.set_inference("ddpm", 4)
    with pytest.raises(ValueError, match="needs the ddim scheduler"):
        p.predict_action(obs, warm_start=init, steps=2)
