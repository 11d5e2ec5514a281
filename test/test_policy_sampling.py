"""DDIM on precomputed coefficients (policy/sampler.py) against diffusers' own step loop, the per-chunk
FiLM precomputation against the whole network per step, and warm-started few-step sampling: its grid
below a noise level, shapes, determinism, the number of network passes, and that a full-noise warm start
is exactly the usual sampler."""

from __future__ import annotations

import pytest
import torch
from test_policy import make_obs, make_policy

from genil_ros.policy.backends import TorchBackend
from genil_ros.policy.diffusion import make_scheduler
from genil_ros.policy.sampler import FastDdim, shift_chunk


class CountingBackend(TorchBackend):
    """The real torch backend, counting the denoising passes (whole-network or per-chunk steps)."""

    def __init__(self, policy):
        super().__init__(policy)
        self.calls = 0

    def denoise(self, x, t, cond):
        self.calls += 1
        return super().denoise(x, t, cond)

    def chunk_net(self, cond, timesteps):
        step = super().chunk_net(cond, timesteps)

        def counted(x, i):
            self.calls += 1
            return step(x, i)

        return counted


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
        warm = p.predict_action(obs, gen(7), warm_start=shift_chunk(prev, shift), steps=p.num_inference_steps,
                                warm_noise=1.0)
        assert torch.equal(warm, usual)


def test_warm_plan_is_independent_of_the_usual_grid():
    fast = FastDdim(make_scheduler("ddim", 100))
    assert fast.warm_plan(1, 0.4).timesteps == (39,)
    assert fast.warm_plan(2, 0.4).timesteps == (39, 19)
    assert fast.warm_plan(4, 0.4).timesteps == (39, 29, 19, 9)
    assert fast.warm_plan(2, 0.25).timesteps == (24, 11)
    assert fast.warm_plan(3, 1.0) == fast.plan(3)  # level 1: pure noise, diffusers' own grid
    one = fast.warm_plan(1, 0.4)  # one jump from timestep 39 to the clean sample
    ac = fast.scheduler.alphas_cumprod
    assert one.sqrt_alpha[0] == pytest.approx(float(ac[39] ** 0.5)) and one.sqrt_alpha_prev[0] == 1.0
    with pytest.raises(ValueError, match="do not fit below noise level"):
        fast.warm_plan(5, 0.03)
    with pytest.raises(ValueError, match="noise level"):
        fast.warm_plan(2, 0.0)
    with pytest.raises(ValueError, match="descend"):
        fast.plan_for([10, 20])


def test_chunk_net_film_once_per_chunk_equals_the_whole_network_per_step():
    """The backend's per-chunk step function (FiLM of all steps in one batched pass, then the U-Net body)
    against the whole network per step: equal to float32 rounding (stated bound 1e-5, normalised units)."""
    p = make_policy(camera=True).eval()
    obs = make_obs(p, B=3)
    with torch.no_grad():
        cond = p._encode(obs)
        ts = torch.tensor([90, 50, 10, 0])
        step = p.backend.chunk_net(cond, ts)
        x = torch.randn(3, p.horizon, p.action_dim, generator=gen(4))
        for i, t in enumerate(ts):
            ref = p.model(x, t.expand(3), cond)
            assert (step(x, i) - ref).abs().max() <= 1e-5
        assert (step(x, 0) - step(x, 3)).abs().max() > 1e-3  # the steps really differ


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


def test_warm_start_noise_level_sets_how_far_the_chunk_moves():
    """A low noise level keeps the chunk close to the warm start (whatever the untrained network
    predicts), much closer than a fresh sample is; a higher level lets it move further."""
    p = make_policy().eval()
    obs = make_obs(p, B=4)
    init = p.predict_action(obs, gen(1))
    fresh = p.predict_action(obs, gen(2))
    live = slice(0, p.action_dim - 1)  # the last joint is constant in make_policy's normaliser

    def dist(level):
        warm = p.predict_action(obs, gen(2), warm_start=init, steps=1, warm_noise=level)
        return (warm - init)[..., live].abs().mean()

    d_fresh = (fresh - init)[..., live].abs().mean()
    assert dist(0.05) < 0.25 * d_fresh
    assert dist(0.05) < dist(0.6)


def test_warm_start_errors():
    p = make_policy().eval()
    obs = make_obs(p, B=2)
    init = p.predict_action(obs, gen())
    with pytest.raises(ValueError, match="warm_start must be"):
        p.predict_action(obs, warm_start=init[:1], steps=2)
    with pytest.raises(ValueError, match="warm-start steps"):
        p.predict_action(obs, warm_start=init, steps=0 or -1)
    with pytest.raises(ValueError, match="do not fit below"):
        p.predict_action(obs, warm_start=init, steps=50, warm_noise=0.2)
    with pytest.raises(ValueError, match="noise level"):
        p.predict_action(obs, warm_start=init, steps=2, warm_noise=1.5)
    with pytest.raises(ValueError, match="without warm_start"):
        p.predict_action(obs, steps=2)
    p.set_inference("ddpm", 4)
    with pytest.raises(ValueError, match="needs the ddim scheduler"):
        p.predict_action(obs, warm_start=init, steps=2)


def reference_unet(net, sample, t, global_cond):
    """ConditionalUnet1D the way it conditions every block by itself (each block's own cond_encoder on the
    step embedding + global conditioning): the reference for film() + forward_film()."""
    B, T, _ = sample.shape
    cond = torch.cat([net.diffusion_step_encoder(t.expand(B)), global_cond], dim=-1)
    x = torch.nn.functional.pad(sample.transpose(1, 2), (0, (-T) % net.time_multiple), mode="replicate")
    skips = []
    for res1, res2, down in net.down_modules:
        x = res2(res1(x, cond), cond)
        skips.append(x)
        x = down(x)
    for m in net.mid_modules:
        x = m(x, cond)
    for res1, res2, up in net.up_modules:
        x = res2(res1(torch.cat([x, skips.pop()], dim=1), cond), cond)
        x = up(x)
    return net.final_conv(x)[..., :T].transpose(1, 2)


@pytest.mark.parametrize("T", [16, 7])
@pytest.mark.parametrize("scale", [True, False])
def test_unet_film_split_equals_per_block_conditioning(T, scale):
    from genil_ros.policy.model import ConditionalUnet1D

    torch.manual_seed(0)
    net = ConditionalUnet1D(4, 12, 16, [8, 16, 32], kernel_size=5, n_groups=4, cond_predict_scale=scale).eval()
    x, t, g = torch.randn(3, T, 4), torch.tensor([3, 40, 99]), torch.randn(3, 12)
    with torch.no_grad():
        ref = reference_unet(net, x, t, g)
        film = net.film(t, g)
        assert film.shape == (3, net.film_dim)
        assert torch.equal(net(x, t, g), net.forward_film(x, film))
        assert (net.forward_film(x, film) - ref).abs().max() <= 1e-6
