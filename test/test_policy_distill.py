"""Consistency sampling (policy/sampler.py) and `genil-ros distill` (policy/distill.py): the sampler's grid
and boundary condition, one step against the DDIM step it generalises, and a distillation run on a real
(tiny) dataset: progress, atomic checkpoints, the cached conditioning, resume, and a distilled checkpoint
that loads and samples like any other."""

from __future__ import annotations

import json

import pytest
import torch
from test_policy import make_obs, make_policy
from test_policy_sampling import CountingBackend
from test_policy_train import make_store

from genil_ros.errors import GenilError
from genil_ros.policy.checkpoint import load_policy, save_checkpoint
from genil_ros.policy.diffusion import make_scheduler
from genil_ros.policy.distill import FEATURES, DistillSettings, distill
from genil_ros.policy.sampler import ConsistencySampler, FastDdim, boundary_scalings


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_consistency_plan_on_the_ddim_grid():
    cs = ConsistencySampler(make_scheduler("ddim", 100))
    assert cs.grid == (90, 80, 70, 60, 50, 40, 30, 20, 10, 0)
    assert cs.plan(1).timesteps == (90,) and cs.plan(2).timesteps == (90, 40)
    assert cs.plan(10).timesteps == cs.grid
    assert boundary_scalings(0.0) == (1.0, 0.0)  # f(x, 0) = x
    c_skip, c_out = boundary_scalings(90.0)
    assert c_skip < 1e-6 and c_out == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="consistency steps"):
        cs.plan(11)


def test_one_consistency_step_is_the_ddim_jump_to_the_clean_chunk():
    """One consistency step from timestep 90 is DDIM's one step 90 -> clean (x0 prediction, clipped), up
    to c_skip(90) ~ 3e-7: bound 1e-5 in normalised units."""
    p = make_policy().eval()
    obs = make_obs(p, B=3)
    with torch.no_grad():
        cond = p._encode(obs)
        x = torch.randn(3, p.horizon, p.action_dim, generator=gen(5))
        net = lambda xi, t, c: p.model(xi, t, c)  # noqa: E731
        fast = FastDdim(make_scheduler("ddim", 100))
        ddim = fast.run(lambda xi, i: net(xi, torch.full((3,), 90), cond), x, fast.plan_for([90]))
        cs = ConsistencySampler(make_scheduler("ddim", 100))
        got = cs.run(p.backend.chunk_net(cond, torch.tensor([90])), x, cs.plan(1))
    assert (got - ddim).abs().max() <= 1e-5


@pytest.mark.parametrize("steps", [1, 2])
def test_policy_consistency_sampling(steps):
    p = make_policy(camera=True).eval()
    p.set_inference("consistency", steps)
    counter = p.set_backend(CountingBackend(p))
    obs = make_obs(p, B=2)
    a = p.predict_action(obs, gen(1))
    assert counter.calls == steps and a.shape == (2, p.horizon, p.action_dim) and torch.isfinite(a).all()
    assert torch.equal(a, p.predict_action(obs, gen(1)))
    assert p.sample_actions(obs, num_samples=3, generator=gen(1)).shape == (2, 3, p.horizon, p.action_dim)
    if steps == 2:  # the second step draws fresh noise
        assert not torch.equal(a, p.predict_action(obs, gen(2)))
    with pytest.raises(ValueError, match="at most 10"):
        p.set_inference("consistency", 11)
    with pytest.raises(ValueError, match="needs the ddim scheduler"):
        p.predict_action(obs, warm_start=a, steps=1)


def test_distill_run_resume_and_the_distilled_checkpoint(tmp_path):
    ds = tmp_path / "ds"
    make_store(ds, n_eps=3, length=12)
    teacher_dir = tmp_path / "teacher"
    teacher = make_policy(seed=2, camera=True)
    teacher.normalizer.fit("action", [-1.0] * 3, [1.0] * 3)
    save_checkpoint(teacher_dir, teacher)
    out = tmp_path / "distilled"
    st = DistillSettings(steps=4, batch_size=8, checkpoint_every=2, lr=1e-3, warmup_steps=1)
    logs = []
    final = distill(teacher_dir, ds, out, st, device="cpu", progress=False, log=logs.append)
    assert final == out / "final" and (out / FEATURES).is_file()
    assert (out / "checkpoints" / "step_0000002" / "training_state.pt").is_file()
    meta = json.loads((final / "meta.json").read_text())["extra"]["distill"]
    assert meta["step"] == 4 and meta["teacher"] == str(teacher_dir.resolve()) and meta["samples"] > 0
    p = load_policy(final, device="cpu")
    assert p.inference_scheduler_name == "consistency" and p.num_inference_steps == 1
    obs = make_obs(p, B=2)
    a = p.predict_action(obs, gen())
    assert a.shape == (2, p.horizon, p.action_dim) and torch.isfinite(a).all()
    # the encoder is the teacher's, the U-Net was trained
    t = load_policy(teacher_dir, device="cpu")
    assert all(torch.equal(x, y) for x, y in zip(p.obs_encoder.state_dict().values(),
                                                  t.obs_encoder.state_dict().values()))
    assert any(not torch.equal(x, y) for x, y in zip(p.model.state_dict().values(), t.model.state_dict().values()))

    with pytest.raises(GenilError, match="already holds a distillation"):
        distill(teacher_dir, ds, out, st, device="cpu", progress=False, log=logs.append)
    st.steps = 6
    distill(teacher_dir, ds, out, st, device="cpu", progress=False, resume=True, log=logs.append)
    assert any("resuming from" in m and "at step 4" in m for m in logs)
    assert json.loads((final / "meta.json").read_text())["extra"]["distill"]["step"] == 6
    with pytest.raises(GenilError, match="already a distilled"):
        distill(final, ds, tmp_path / "again", st, device="cpu", progress=False, log=logs.append)
