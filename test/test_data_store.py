"""Episode store (write / read / atomicity) and the Diffusion-Policy SequenceDataset."""

import json

import numpy as np
import pytest
import torch

from genil_ros.data.dataset import SequenceDataset, split_episodes
from genil_ros.data.store import EpisodeStore
from genil_ros.errors import DataError

CAMS = [{"name": "front", "height": 8, "width": 10}]


def _episode(n, seed, d=3):
    rng = np.random.default_rng(seed)
    state = np.arange(n, dtype=np.float32)[:, None] * np.ones(d, np.float32) + seed * 1000
    return {
        "state": state,
        "action": state + 0.5,
        "timestamp": np.arange(n) * 0.1,
        "front": rng.integers(0, 255, (n, 8, 10, 3), dtype=np.uint8),
    }


def _make(path, lengths=(7, 12, 5), compression="zstd", chunk_frames=4):
    w = EpisodeStore.create(path, joint_names=["a", "b", "c"], cameras=CAMS, control_rate_hz=10.0,
                            compression=compression, chunk_frames=chunk_frames, topics={"state": "/joint_states"})
    eps = [_episode(n, i) for i, n in enumerate(lengths)]
    for e in eps:
        w.add_episode(e, source_bag="x")
    store = w.finalize()
    return store, eps


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_roundtrip_and_meta(tmp_path, compression):
    store, eps = _make(tmp_path / "ds", compression=compression)
    store = EpisodeStore.open(tmp_path / "ds")
    assert store.num_episodes == 3
    assert store.meta["episode_lengths"] == [7, 12, 5]
    assert store.meta["format_version"] == 1
    assert store.meta["cameras"] == CAMS
    assert store.meta["topics"] == {"state": "/joint_states"}
    for i, e in enumerate(eps):
        got = store.episode(i)
        assert got["state"].dtype == np.float32 and got["timestamp"].dtype == np.float64
        assert got["front"].dtype == np.uint8 and got["front"].shape == e["front"].shape
        for k in e:
            np.testing.assert_array_equal(got[k], e[k])
        # random slices across chunk boundaries
        np.testing.assert_array_equal(store.frames(i, "front", 3, 6), e["front"][3:6])
    allstate = np.concatenate([e["state"] for e in eps])
    st = store.stats()
    np.testing.assert_allclose(st["state"]["mean"], allstate.mean(0), rtol=1e-5)
    np.testing.assert_allclose(st["state"]["std"], allstate.std(0), rtol=1e-4)
    np.testing.assert_allclose(st["action"]["min"], allstate.min(0) + 0.5)
    assert st["action"]["max"].dtype == np.float32
    assert not list(tmp_path.glob("ds.tmp-*"))


def test_create_refuses_existing_and_bad_shapes(tmp_path):
    _make(tmp_path / "ds")
    with pytest.raises(DataError, match="already exists"):
        EpisodeStore.create(tmp_path / "ds", joint_names=["a"], cameras=[], control_rate_hz=10)
    w = EpisodeStore.create(tmp_path / "ds2", joint_names=["a", "b", "c"], cameras=CAMS, control_rate_hz=10)
    bad = _episode(5, 0)
    bad["front"] = bad["front"][:, :4]
    with pytest.raises(DataError, match="front"):
        w.add_episode(bad)
    short = _episode(5, 0)
    short["action"] = short["action"][:4]
    with pytest.raises(DataError, match="differ in length"):
        w.add_episode(short)
    w.add_episode(_episode(5, 1))
    d4 = _episode(5, 2, d=4)
    with pytest.raises(DataError, match="dimension"):
        w.add_episode(d4)
    store = w.finalize()
    assert store.num_episodes == 1
    np.testing.assert_array_equal(store.episode(0)["state"], _episode(5, 1)["state"])


def test_interrupted_build_leaves_no_dataset_and_keeps_old(tmp_path):
    old, _ = _make(tmp_path / "ds", lengths=(3,))
    with pytest.raises(KeyboardInterrupt):
        with EpisodeStore.create(tmp_path / "ds", joint_names=["a", "b", "c"], cameras=CAMS, control_rate_hz=10,
                                 overwrite=True) as w:
            w.add_episode(_episode(6, 0))
            raise KeyboardInterrupt
    assert EpisodeStore.open(tmp_path / "ds").meta["episode_lengths"] == [3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    with pytest.raises(DataError, match="no meta.json"):
        EpisodeStore.open(tmp_path / "nothing")
    # a temp dir of a dead process is swept by the next create
    stale = tmp_path / "new.tmp-999999999"
    stale.mkdir()
    w = EpisodeStore.create(tmp_path / "new", joint_names=["a", "b", "c"], cameras=CAMS, control_rate_hz=10)
    assert not stale.exists()
    w.abort()
    assert not (tmp_path / "new").exists()


def test_newer_format_is_refused(tmp_path):
    _make(tmp_path / "ds", lengths=(3,))
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "ds" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="format_version"):
        EpisodeStore.open(tmp_path / "ds")


@pytest.mark.parametrize("in_memory", [True, False])
def test_sequence_dataset_alignment_and_padding(tmp_path, in_memory):
    store, eps = _make(tmp_path / "ds", lengths=(7, 12, 5))
    To, Tp = 2, 4
    ds = SequenceDataset(store, To, Tp, in_memory=in_memory)
    assert len(ds) == 7 + 12 + 5  # one sample per tick by default
    # sample 0: t = 0 of episode 0; window starts at -1 -> obs [0, 0], action steps [0, 0, 1, 2]
    item = ds[0]
    assert item["obs"]["state"].shape == (To, 3) and item["obs"]["state"].dtype == torch.float32
    assert item["obs"]["front"].shape == (To, 3, 8, 10) and item["obs"]["front"].dtype == torch.uint8
    assert item["action"].shape == (Tp, 3)
    e0 = eps[0]
    np.testing.assert_array_equal(item["obs"]["state"].numpy(), e0["state"][[0, 0]])
    np.testing.assert_array_equal(item["action"].numpy(), e0["action"][[0, 0, 1, 2]])
    np.testing.assert_array_equal(item["obs"]["front"].numpy(), e0["front"][[0, 0]].transpose(0, 3, 1, 2))
    # every sample: action[T_o - 1] is the action at the tick of the last observation
    for idx in range(len(ds)):
        it = ds[idx]
        last_obs_state = it["obs"]["state"][-1].numpy()
        np.testing.assert_array_equal(it["action"][To - 1].numpy(), last_obs_state + 0.5)
    # last sample of episode 1 (t = 11): window 10..13 -> [10, 11, 11, 11]
    it = ds[7 + 11]
    e1 = eps[1]
    np.testing.assert_array_equal(it["action"].numpy(), e1["action"][[10, 11, 11, 11]])
    np.testing.assert_array_equal(it["obs"]["front"].numpy(), e1["front"][[10, 11]].transpose(0, 3, 1, 2))
    # Diffusion Policy's pad_after = T_a - 1 gives fewer samples at the end
    ds2 = SequenceDataset(store, To, Tp, episodes=[1], pad_after=1)
    assert len(ds2) == 12 - Tp + 1 + 1 + 1
    loader = torch.utils.data.DataLoader(ds, batch_size=5, shuffle=True)
    batch = next(iter(loader))
    assert batch["obs"]["front"].shape == (5, To, 3, 8, 10)
    if not in_memory:  # forked workers reading chunks from shared descriptors get the right frames
        ref = torch.stack([ds[i]["obs"]["front"] for i in range(len(ds))])
        loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context="fork")
        got = torch.cat([b["obs"]["front"] for b in loader])
        assert torch.equal(got, ref)


def test_sequence_dataset_episode_and_camera_selection(tmp_path):
    store, eps = _make(tmp_path / "ds")
    ds = SequenceDataset(store, 1, 3, episodes=[2], cameras=[])
    assert len(ds) == 5 and set(ds[0]["obs"]) == {"state"}
    np.testing.assert_array_equal(ds[4]["action"].numpy(), eps[2]["action"][[4, 4, 4]])
    with pytest.raises(DataError, match="camera"):
        SequenceDataset(store, 1, 3, cameras=["wrist"])
    with pytest.raises(DataError, match="episode 9"):
        SequenceDataset(store, 1, 3, episodes=[9])


def test_split_episodes():
    tr, va = split_episodes(20, 0.1, seed=3)
    assert len(va) == 2 and len(tr) == 18 and sorted(tr + va) == list(range(20))
    assert split_episodes(20, 0.1, seed=3) == (tr, va)
    assert split_episodes(20, 0.1, seed=4) != (tr, va)
    assert split_episodes(1, 0.5) == ([0], [])
    assert split_episodes(3, 0.01)[1] and split_episodes(3, 0.0)[1] == []
