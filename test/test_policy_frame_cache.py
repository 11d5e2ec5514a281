"""The frame cache (policy/frame_cache.py): a frame's image features are computed once, looked up by
content; with it the policy gives the chunks it gives without it; prefetching the newest frame of one
window leaves only the newest frame of the next to encode; the worker runs prefetch jobs without a
result."""

from __future__ import annotations

import torch
from test_policy import make_obs, make_policy
from test_policy_sampling import CountingBackend

from genil_ros.control.inference import InferenceJob, InferenceWorker
from genil_ros.policy.frame_cache import FrameCache


class FrameCounter(CountingBackend):
    """The torch backend, counting the frames it encodes."""

    def __init__(self, policy):
        super().__init__(policy)
        self.frames = 0

    def encode_frames(self, name, frames):
        self.frames += frames.shape[0]
        return super().encode_frames(name, frames)


def test_frame_cache_by_content_and_lru():
    c = FrameCache(size=3)
    calls = []

    def enc(f):
        calls.append(f.shape[0])
        return f.float().mean(dim=(1, 2, 3))[:, None].repeat(1, 2)

    a = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    a[1] += 1
    a[2] += 2
    a[3] += 1  # the same content as frame 1
    out = c.features("cam", a, enc)
    assert calls == [3] and out[:, 0].tolist() == [0.0, 1.0, 2.0, 1.0] and (c.hits, c.misses) == (1, 3)
    again = c.features("cam", a[2:3].clone(), enc)  # another tensor, the same bytes: a hit
    assert calls == [3] and again[0, 0] == 2.0
    assert c.features("other", a[:1], enc).shape == (1, 2) and calls == [3, 1]  # cameras are separate
    assert len(c) == 3  # the least recently used one was dropped
    c.features("cam", a[:1], enc)
    assert calls == [3, 1, 1]


def test_cached_encoding_gives_the_same_chunks():
    """Bound 1e-5 (raw units): per-frame encoding in other batch sizes differs by float rounding only."""
    p = make_policy(camera=True).eval()
    obs = make_obs(p, B=2, seed=3)
    ref = p.predict_action(obs, torch.Generator().manual_seed(0))
    p.enable_frame_cache()
    got = p.predict_action(obs, torch.Generator().manual_seed(0))
    again = p.predict_action(obs, torch.Generator().manual_seed(0))  # every frame from the cache
    assert (got - ref).abs().max() <= 1e-5 and torch.equal(got, again)
    assert p.frame_cache.hits == 2 * p.n_obs_steps and p.frame_cache.misses == 2 * p.n_obs_steps
    p.train()
    assert p.frame_cache is None  # training changes the weights the features came from


def test_prefetch_leaves_only_the_newest_frame_to_encode():
    p = make_policy(camera=True).eval()
    counter = p.set_backend(FrameCounter(p))
    p.enable_frame_cache()
    w1, nxt = make_obs(p, B=1, seed=1), make_obs(p, B=1, seed=2)
    w2 = {"state": nxt["state"], "front": torch.cat([w1["front"][:, -1:], nxt["front"][:, -1:]], dim=1)}
    p.prefetch({"front": w1["front"][:, -1:]})  # the newest frame of window 1 = the older one of window 2
    assert counter.frames == 1
    p.predict_action(w2, torch.Generator().manual_seed(0))
    assert counter.frames == 2  # only window 2's newest frame was encoded by the inference


def test_worker_runs_prefetch_jobs_without_a_result():
    class Model:
        spec = None

        def __init__(self):
            self.prefetched = []

        def prefetch(self, obs):
            self.prefetched.append(obs["front"])

        def __call__(self, obs):  # pragma: no cover - must not be called for a prefetch job
            raise AssertionError("inference instead of prefetch")

    m = Model()
    w = InferenceWorker()
    try:
        assert w.submit(InferenceJob(1, 3, 0, 0, {"front": "frames"}, m, prefetch=True))
        assert w.wait_idle(10) and w.take_result() is None and m.prefetched == ["frames"]
    finally:
        w.stop()
