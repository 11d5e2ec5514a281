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
    assert store.meta["format_version"] == 2
    # written without entries: the joint_names form's, joints a, b, c in and out
    assert [(e.name, e.type) for e in store.layout.state] == [("joints", "joint_position")]
    assert store.layout.cameras == ("front",) and list(store.entries) == ["obs.joints", "act.joints"]
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


# --------------------------------------------------------------------------- named entries, format 1


def _pick_entries():
    from genil_ros.schema import ActionEntry, ObservationEntry

    obs = [ObservationEntry("arm", "joint_position", joints=["a", "b"]),
           ObservationEntry("obj", "vector", "/obj", dims=["x", "y", "z"]),
           ObservationEntry("front", "camera", "/cam", height=8, width=10)]
    act = [ActionEntry("arm", "joint_position", "/arm/cmd", joints=["a", "b"]),
           ActionEntry("grip", "gripper", "/grip/cmd", joints=["f"], binary=True, open_position=0.04,
                       closed_position=0.0)]
    return obs, act


def test_entries_are_named_arrays_with_their_own_statistics(tmp_path):
    from genil_ros.schema import layout

    obs, act = _pick_entries()
    rng = np.random.default_rng(0)
    w = EpisodeStore.create(tmp_path / "ds", observations=obs, actions=act, control_rate_hz=10.0)
    eps = []
    for n in (6, 9):
        e = {"obs.arm": rng.normal(size=(n, 2)), "obs.obj": rng.normal(size=(n, 3)) + 5,
             "act.arm": rng.normal(size=(n, 2)), "act.grip": rng.integers(0, 2, (n, 1)).astype(np.float32),
             "timestamp": np.arange(n) * 0.1, "front": rng.integers(0, 255, (n, 8, 10, 3), dtype=np.uint8)}
        w.add_episode(e)
        eps.append(e)
    store = EpisodeStore.open(w.finalize().path)
    assert store.layout.first_difference(layout(obs, act)) is None
    assert (tmp_path / "ds" / "episodes" / "000000" / "obs.obj.npy").is_file()
    got = store.episode(1)
    np.testing.assert_allclose(got["state"], np.concatenate([eps[1]["obs.arm"], eps[1]["obs.obj"]], 1), rtol=1e-6)
    np.testing.assert_allclose(got["act.grip"], eps[1]["act.grip"])
    st = store.stats()
    allobj = np.concatenate([e["obs.obj"] for e in eps])
    np.testing.assert_allclose(st["obs.obj"]["mean"], allobj.mean(0), rtol=1e-5)
    np.testing.assert_allclose(st["state"]["std"][2:], allobj.std(0), rtol=1e-4)
    assert st["action"]["min"].shape == (3,)
    # a training layout may take a subset of the entries, in its own order
    sub = layout([obs[1]], [act[1], act[0]])
    ds = SequenceDataset(store, 1, 2, layout=sub)
    assert ds[0]["obs"]["state"].shape == (1, 3) and set(ds[0]["obs"]) == {"state"}
    np.testing.assert_allclose(ds[0]["action"][0].numpy(), np.r_[eps[0]["act.grip"][0], eps[0]["act.arm"][0]],
                               rtol=1e-6)
    np.testing.assert_allclose(store.stats(sub)["action"]["max"][0], 1.0)
    # an entry the store does not have, or has with other dimensions, is named
    from genil_ros.schema import ObservationEntry

    with pytest.raises(DataError, match="no observation 'ft'"):
        SequenceDataset(store, 1, 2, layout=layout([ObservationEntry("ft", "wrench", "/ft")], act))
    with pytest.raises(DataError, match="observation 'obj': dimensions differ"):
        store.check_layout(layout([ObservationEntry("obj", "vector", "/o", dims=["x", "y"])], act))


def test_nonfinite_and_misshaped_entries_are_refused_by_name(tmp_path):
    obs, act = _pick_entries()
    w = EpisodeStore.create(tmp_path / "ds", observations=obs, actions=act, control_rate_hz=10.0)
    n = 4
    e = {"obs.arm": np.zeros((n, 2)), "obs.obj": np.zeros((n, 3)), "act.arm": np.zeros((n, 2)),
         "act.grip": np.zeros((n, 1)), "timestamp": np.arange(n) * 0.1, "front": np.zeros((n, 8, 10, 3), np.uint8)}
    e["obs.obj"][2, 1] = np.nan
    with pytest.raises(DataError, match=r"observation 'obj' has 1 non-finite value\(s\), the first nan at step 2, "
                                        r"dimension y"):
        w.add_episode(e)
    e["obs.obj"] = np.zeros((n, 2))
    with pytest.raises(DataError, match="observation 'obj' has dimension 2, the store has 3"):
        w.add_episode(e)
    with pytest.raises(DataError, match="'obs.wrist' is not an entry"):
        w.add_episode({**e, "obs.wrist": np.zeros((n, 1))})
    w.abort()


def _downgrade_to_format_1(path):
    """Rewrite a legacy-form store the way format 1 kept it: state.npy / action.npy, no schema."""
    meta = json.loads((path / "meta.json").read_text())
    for d in sorted((path / "episodes").iterdir()):
        for whole, part in (("state", "obs."), ("action", "act.")):
            files = sorted(d.glob(part + "*.npy"), key=lambda f: f.name != part + "joints.npy")
            np.save(d / f"{whole}.npy", np.concatenate([np.load(f) for f in files], 1))
            for f in files:
                f.unlink()
    for k in ("schema", "entry_stats"):
        meta.pop(k)
    meta["format_version"] = 1
    (path / "meta.json").write_text(json.dumps(meta))


def test_format_1_store_opens_with_the_joint_names_schema(tmp_path):
    store, eps = _make(tmp_path / "ds")
    want_item, want_stats = SequenceDataset(store, 2, 4)[3], store.stats()
    _downgrade_to_format_1(tmp_path / "ds")
    old = EpisodeStore.open(tmp_path / "ds")
    assert old.format_version == 1 and old.meta["format_version"] == 1
    assert old.layout.first_difference(store.layout) is None
    np.testing.assert_array_equal(old.lowdim(1, "obs.joints"), eps[1]["state"])
    np.testing.assert_array_equal(old.episode(2)["action"], eps[2]["action"])
    np.testing.assert_allclose(old.stats()["act.joints"]["min"], want_stats["action"]["min"])
    item = SequenceDataset(old, 2, 4, layout=store.layout)[3]
    np.testing.assert_array_equal(item["action"].numpy(), want_item["action"].numpy())
    np.testing.assert_array_equal(item["obs"]["front"].numpy(), want_item["obs"]["front"].numpy())
