"""Rosbags -> dataset: formats, encodings, action sources, synchronisation, and every bad-input error."""

import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genil_ros.config import config_from_dict
from genil_ros.data.bags import DataWarning
from genil_ros.data.build import build_dataset
from genil_ros.data.dataset import SequenceDataset
from genil_ros.data.store import EpisodeStore
from genil_ros.data.synthetic import BagFile, frame_colour, joint_value, write_demo_bag
from genil_ros.errors import DataError

JOINTS = ["j0", "j1", "j2"]


def make_cfg(**dataset):
    task = dataset.pop("task", {})
    d = {"action_source": "command", "action_topic": "/commands", "max_staleness_s": 0.25}
    d.update(dataset)
    t = {"joint_names": JOINTS, "control_rate_hz": 10.0,
         "cameras": [{"name": "front", "topic": "/camera/image_raw", "height": 12, "width": 16}]}
    t.update(task)
    return config_from_dict({"task": t, "dataset": d}, source="test.yaml")


def expected_state(ticks):
    return np.array([[joint_value(t, j) for j in range(3)] for t in ticks], dtype=np.float32)


def check_demo_episode(ep, start=1000.0, n=31, frame_every=2, frame0=0):
    ticks = start + np.arange(n) * 0.1
    np.testing.assert_allclose(ep["timestamp"], ticks, atol=1e-6)
    np.testing.assert_allclose(ep["state"], expected_state(ticks), atol=1e-5)
    # the command published at t (value = joints at t + 0.1) is the action of tick t
    np.testing.assert_allclose(ep["action"], expected_state(ticks + 0.1), atol=1e-5)
    for k in range(n):
        assert tuple(ep["front"][k, 5, 7]) == frame_colour(frame0 + frame_every * k), k


@pytest.mark.parametrize("storage,compression", [("mcap", None), ("sqlite3", None), ("mcap", "message"),
                                                 ("sqlite3", "file"), ("ros1", None)])
def test_formats(tmp_path, storage, compression):
    bag = tmp_path / ("demo.bag" if storage == "ros1" else "demo")
    write_demo_bag(bag, storage=storage, compression=compression)
    store = build_dataset(make_cfg(), [bag], tmp_path / "ds", progress=False)
    assert store.meta["episode_lengths"] == [31]
    check_demo_episode(store.episode(0))
    src = store.meta["source_bags"][0]
    assert src["path"] == str(bag) and src["time_base"] == "header" and len(src["sha256"]) == 64
    assert store.meta["topics"]["cameras"] == {"front": "/camera/image_raw"}
    assert store.meta["control_rate_hz"] == 10.0


def test_bare_mcap_file_and_folder_of_bags_and_hashes(tmp_path):
    write_demo_bag(tmp_path / "bags" / "a", duration_s=2.0)
    write_demo_bag(tmp_path / "bags" / "b", duration_s=1.0, start_s=2000.0)
    mcap = tmp_path / "bags" / "a" / "a.mcap"
    store = build_dataset(make_cfg(), [tmp_path / "bags"], tmp_path / "ds", progress=False)
    assert store.meta["episode_lengths"] == [21, 11]
    assert [e["source_bag"] for e in store.meta["episodes"]] == [str(tmp_path / "bags" / n) for n in "ab"]
    store2 = build_dataset(make_cfg(), [mcap], tmp_path / "ds2", progress=False)
    assert store2.meta["source_bags"][0]["sha256"] == hashlib.sha256(mcap.read_bytes()).hexdigest()
    np.testing.assert_array_equal(store2.episode(0)["front"], store.episode(0)["front"])
    # stats cover both episodes
    allstate = np.concatenate([store.episode(i)["state"] for i in range(2)])
    np.testing.assert_allclose(store.stats()["state"]["mean"], allstate.mean(0), rtol=1e-5)


@pytest.mark.parametrize("encoding,compressed", [("bgr8", None), ("rgba8", None), ("bgra8", None), ("mono8", None),
                                                 (None, "png"), (None, "jpeg")])
def test_image_encodings(tmp_path, encoding, compressed):
    write_demo_bag(tmp_path / "bag", encoding=encoding or "rgb8", compressed=compressed, duration_s=1.0)
    store = build_dataset(make_cfg(), [tmp_path / "bag"], tmp_path / "ds", progress=False)
    frames = store.episode(0)["front"]
    assert frames.shape == (11, 12, 16, 3) and frames.dtype == np.uint8
    for k in range(11):
        want = np.array(frame_colour(2 * k), dtype=float)
        if encoding == "mono8":
            want = np.full(3, 0.299 * want[0] + 0.587 * want[1] + 0.114 * want[2])
        np.testing.assert_allclose(frames[k, 6, 8], want, atol=8 if compressed == "jpeg" else 1)


def test_trajectory_action_reordered_by_name(tmp_path):
    write_demo_bag(tmp_path / "bag", action="trajectory", action_topic="/jtc/joint_trajectory")
    store = build_dataset(make_cfg(action_topic="/jtc/joint_trajectory"), [tmp_path / "bag"], tmp_path / "ds",
                          progress=False)
    check_demo_episode(store.episode(0))


def test_next_state_action_and_velocity(tmp_path):
    write_demo_bag(tmp_path / "bag", action=None)
    cfg = make_cfg(action_source="next_state", action_topic=None, task={"use_velocity": True})
    store = build_dataset(cfg, [tmp_path / "bag"], tmp_path / "ds", progress=False)
    ep = store.episode(0)
    assert ep["state"].shape == (30, 6) and ep["action"].shape == (30, 3)
    np.testing.assert_allclose(ep["action"][:-1], ep["state"][1:, :3])
    ticks = 1000.0 + np.arange(30) * 0.1
    vel = np.array([[0.5 * math.cos(0.5 * t + j) for j in range(3)] for t in ticks])
    np.testing.assert_allclose(ep["state"][:, 3:], vel, atol=1e-5)
    np.testing.assert_allclose(ep["action"][-1], expected_state([ticks[-1] + 0.1])[0], atol=1e-5)


def test_zero_order_hold_picks_latest_frame_and_slow_camera(tmp_path):
    # camera at 4 Hz: tick t holds the frame at floor(t * 4) / 4, which is at most 0.25 s old
    write_demo_bag(tmp_path / "bag", cam_rate=4.0, duration_s=2.0)
    store = build_dataset(make_cfg(), [tmp_path / "bag"], tmp_path / "ds", progress=False)
    ep = store.episode(0)
    for k, t in enumerate(ep["timestamp"]):
        assert tuple(ep["front"][k, 0, 0]) == frame_colour(int(math.floor((t - 1000.0) * 4 + 1e-6)))


def test_gaps_split_episodes_or_fail_in_bag_mode(tmp_path):
    write_demo_bag(tmp_path / "bag", duration_s=4.0, gaps=[(1.55, 2.45), (3.05, 3.75)])
    with pytest.warns(DataWarning, match=r"dropped 1 span\(s\) shorter than"):
        store = build_dataset(make_cfg(), [tmp_path / "bag"], tmp_path / "ds", progress=False)
    # values are held for up to max_staleness_s (0.25 s) then the span is cut; nothing is interpolated:
    # 0.0..1.6 s (the 10 Hz command of 1.5 s is stale for tick 1.7), 2.5..3.1 s; 3.8..4.0 s is too short
    assert store.meta["episode_lengths"] == [17, 7]
    ep = store.episode(1)
    check_demo_episode({k: v[:6] for k, v in ep.items()}, start=1002.5, n=6, frame_every=2, frame0=50)
    np.testing.assert_allclose(ep["state"][6], expected_state([1003.04])[0], atol=1e-5)  # held, 0.06 s old
    assert store.episode(1)["front"][0, 0, 0].tolist() == list(frame_colour(50))
    with pytest.raises(DataError, match=r"bag.*hole between t = 1001\.600 s and 1002\.500 s.*episode_split"):
        build_dataset(make_cfg(episode_split="bag"), [tmp_path / "bag"], tmp_path / "ds2", progress=False)
    assert not (tmp_path / "ds2").exists()


def test_receive_time_fallback_warns(tmp_path):
    write_demo_bag(tmp_path / "bag", header_stamps=False, duration_s=1.0)
    with pytest.warns(DataWarning, match=r"/joint_states.*receive time"):
        store = build_dataset(make_cfg(), [tmp_path / "bag"], tmp_path / "ds", progress=False)
    assert store.meta["source_bags"][0]["time_base"] == "receive"
    assert abs(store.episode(0)["timestamp"][0] - 1050.002) < 1e-6
    # unstamped commands in a header-stamped bag are mapped onto the joint states' clock
    write_demo_bag(tmp_path / "bag2", duration_s=1.0, receive_offset_s=-20.0)
    store = build_dataset(make_cfg(), [tmp_path / "bag2"], tmp_path / "ds2", progress=False)
    check_demo_episode(store.episode(0), n=11)


def test_sequence_dataset_on_built_store(tmp_path):
    write_demo_bag(tmp_path / "bag", duration_s=2.0)
    store = build_dataset(make_cfg(), [tmp_path / "bag"], tmp_path / "ds", progress=False)
    ds = SequenceDataset(EpisodeStore.open(tmp_path / "ds"), 2, 8)
    assert len(ds) == 21
    item = ds[5]
    assert item["obs"]["front"].shape == (2, 3, 12, 16)
    np.testing.assert_allclose(item["action"][1].numpy(), store.episode(0)["action"][5])


# --------------------------------------------------------------------------- bad input


def _expect(tmp_path, bag, match, cfg=None):
    with pytest.raises(DataError, match=match) as ei:
        build_dataset(cfg or make_cfg(), [bag], tmp_path / "ds", progress=False)
    assert str(bag) in str(ei.value)
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob("ds.tmp-*"))
    return str(ei.value)


def _damage(src: Path, dst: Path, fn):
    shutil.copytree(src, dst)
    f = next(dst.glob("*.mcap"))
    f.write_bytes(fn(f.read_bytes()))
    return dst


def test_truncated_and_corrupt_bags(tmp_path):
    good = write_demo_bag(tmp_path / "good", duration_s=1.0)
    _expect(tmp_path, _damage(good, tmp_path / "trunc", lambda b: b[: len(b) // 2]), "truncated or corrupt")
    _expect(tmp_path, _damage(good, tmp_path / "tail", lambda b: b[:-64]), "truncated or corrupt")
    write_demo_bag(tmp_path / "sq", storage="sqlite3", duration_s=1.0)
    db = next((tmp_path / "sq").glob("*.db3"))
    db.write_bytes(db.read_bytes()[:3000])
    _expect(tmp_path, tmp_path / "sq", "truncated or corrupt")
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"\x89MCAP0\r\n" + b"\x00" * 100)
    _expect(tmp_path, junk, "truncated or corrupt")
    # the second bag is bad: the build fails and leaves nothing behind
    with pytest.raises(DataError, match="tail"):
        build_dataset(make_cfg(), [good, tmp_path / "tail"], tmp_path / "ds", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["good", "trunc", "tail", "sq", "junk.mcap"])


def test_empty_bag(tmp_path):
    BagFile(tmp_path / "empty").close()
    _expect(tmp_path, tmp_path / "empty", "empty bag")


def test_missing_topic(tmp_path):
    bag = write_demo_bag(tmp_path / "bag", duration_s=1.0, camera_topic=None)
    msg = _expect(tmp_path, bag, "/camera/image_raw")
    assert "not in the bag" in msg and "/joint_states" in msg


def test_unknown_message_type(tmp_path):
    with BagFile(tmp_path / "bag") as b:
        S = b.ts.types["std_msgs/msg/String"]
        b.write("/camera/image_raw", S(data="hello"), 1)
        b.joint_state("/joint_states", 1, 1, JOINTS, [0, 0, 0])
        b.multiarray("/commands", 1, [0, 0, 0])
    msg = _expect(tmp_path, tmp_path / "bag", r"/camera/image_raw: unsupported message type std_msgs/String")
    assert "sensor_msgs/Image" in msg


def _bag_with(tmp_path, image_fn=None, js_fn=None, n=20):
    """A small valid bag at 20 Hz where ``image_fn(b, k, t)`` / ``js_fn(b, k, t)`` may replace messages."""
    with BagFile(tmp_path / "bag") as b:
        for k in range(n):
            t = int(1e9) + k * 50_000_000
            (js_fn or (lambda b, k, t: b.joint_state("/joint_states", t, t, JOINTS, [k, k, k])))(b, k, t)
            (image_fn or (lambda b, k, t: b.image("/camera/image_raw", t, t, np.zeros((12, 16, 3), np.uint8))))(b, k, t)
            b.multiarray("/commands", t, [k, k, k])
    return tmp_path / "bag"


def test_unsupported_encoding_and_wrong_size(tmp_path):
    def enc(b, k, t):
        b.image("/camera/image_raw", t, t, np.zeros((12, 16), np.uint16), encoding="16UC1")

    bag = _bag_with(tmp_path, image_fn=enc)
    _expect(tmp_path, bag, r"/camera/image_raw \(message 0\): unsupported image encoding '16UC1'")
    shutil.rmtree(bag)

    def lying(b, k, t):
        Image = b.ts.types["sensor_msgs/msg/Image"]
        b.write("/camera/image_raw", Image(header=b.header(t), height=12, width=16, encoding="rgb8", is_bigendian=0,
                                           step=48, data=np.zeros(48 * (6 if k == 7 else 12), np.uint8)), t)

    bag = _bag_with(tmp_path, image_fn=lying)
    # frame 7 is not on the 10 Hz timeline, it is still checked
    _expect(tmp_path, bag, r"/camera/image_raw \(message 7\): image data has 288 bytes, expected 576")


def test_joint_state_missing_a_joint(tmp_path):
    def js(b, k, t):
        names = JOINTS if k < 5 else ["j0", "j2"]
        b.joint_state("/joint_states", t, t, names, [0.0] * len(names))

    msg = _expect(tmp_path, _bag_with(tmp_path, js_fn=js), r"/joint_states: JointState is missing joint\(s\) \['j1'\]")
    assert "j1" in msg


def test_timestamps_going_backwards(tmp_path):
    def js(b, k, t):
        stamp = t - 200_000_000 if k == 9 else t
        b.joint_state("/joint_states", t, stamp, JOINTS, [k, k, k])

    _expect(tmp_path, _bag_with(tmp_path, js_fn=js), r"/joint_states: timestamps go backwards at message 9")


def test_no_overlap_is_explained(tmp_path):
    write_demo_bag(tmp_path / "bag", cam_rate=1.0, duration_s=2.0)  # camera far too slow for 0.25 s staleness
    msg = _expect(tmp_path, tmp_path / "bag", r"no span of >= 4 synchronised steps")
    assert "/camera/image_raw stale or missing" in msg


NAN_J1 = [("position", 60, 10, 1, float("nan"))]  # joint j1 is NaN in 10 joint states from t = 1001.2 s


def test_nonfinite_joint_states_are_an_error_naming_bag_topic_joint_and_time(tmp_path):
    """Issue 17 item 1: the bag used to build with NaN in the state and NaN statistics in meta.json."""
    bag = write_demo_bag(tmp_path / "bag", nonfinite=NAN_J1)
    msg = _expect(tmp_path, bag, r"/joint_states: non-finite value: position of joint j1 is nan at "
                                 r"t = 1001\.200 s \(message 60\), 10 message\(s\) in all")
    assert "dataset.nonfinite: cut" in msg and "\n" not in msg
    # commands too (here an inf), and velocities when the state uses them
    write_demo_bag(tmp_path / "cmd", nonfinite=[("command", 5, 3, 0, float("inf"))])
    _expect(tmp_path, tmp_path / "cmd", r"/commands: non-finite value: command for joint j0 is inf at t = 1000\.50")
    write_demo_bag(tmp_path / "vel", action=None, nonfinite=[("velocity", 3, 10, 2, float("nan"))])
    cfg = make_cfg(action_source="next_state", action_topic=None, task={"use_velocity": True})
    _expect(tmp_path, tmp_path / "vel", r"/joint_states: non-finite value: velocity of joint j2 is nan", cfg)
    # a stream the dataset does not use may hold NaN: velocities without task.use_velocity
    cfg = make_cfg(action_source="next_state", action_topic=None)
    assert build_dataset(cfg, [tmp_path / "vel"], tmp_path / "ds", progress=False).meta["episode_lengths"] == [30]


def test_nonfinite_cut_splits_the_episode_with_a_warning(tmp_path):
    bag = write_demo_bag(tmp_path / "bag", nonfinite=NAN_J1)
    with pytest.warns(DataWarning, match=r"bag: /joint_states: 10 message\(s\) with non-finite values \(joints "
                                         r"\['j1'\]\) up to t = 1001\.380 s, the first: position of joint j1 is nan "
                                         r"at t = 1001\.200 s"):
        store = build_dataset(make_cfg(nonfinite="cut"), [bag], tmp_path / "ds", progress=False)
    # ticks 1001.2 and 1001.3 would hold a NaN joint state: the span is cut there, not bridged by an older value
    assert store.meta["episode_lengths"] == [12, 17]
    check_demo_episode(store.episode(0), n=12)
    check_demo_episode(store.episode(1), start=1001.4, n=17, frame0=28)
    stats = json.loads((tmp_path / "ds" / "meta.json").read_text())["stats"]
    assert all(np.isfinite(v).all() for key in ("state", "action") for v in stats[key].values())
    assert store.meta["source_bags"][0]["nonfinite_ticks"] == {"/joint_states": 2}
    with pytest.warns(DataWarning), pytest.raises(DataError, match=r"hole between t = 1001\.100 s and 1001\.400 s "
                                                                   r"\(/joint_states non-finite at 2 of 31 ticks\)"):
        build_dataset(make_cfg(nonfinite="cut", episode_split="bag"), [bag], tmp_path / "ds2", progress=False)


def test_cli_build_and_one_line_error(tmp_path):
    write_demo_bag(tmp_path / "bag", duration_s=1.0)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("task:\n  joint_names: [j0, j1, j2]\n  cameras:\n"
                   "    - {name: front, topic: /camera/image_raw, height: 12, width: 16}\n"
                   "dataset: {action_source: command, action_topic: /commands}\n")
    cmd = [sys.executable, "-m", "genil_ros.cli", "dataset", "build", "--config", str(cfg)]
    r = subprocess.run(cmd + [str(tmp_path / "bag"), "-o", str(tmp_path / "ds")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "1 episodes, 11 steps" in r.stdout
    assert EpisodeStore.open(tmp_path / "ds").num_episodes == 1
    r = subprocess.run([sys.executable, "-m", "genil_ros.cli", "dataset", "info", str(tmp_path / "ds")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "1 episodes, 11 steps at 10.0 Hz" in r.stdout and "sha256" in r.stdout
    r = subprocess.run(cmd + [str(tmp_path / "bag"), "-o", str(tmp_path / "ds")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(cmd + [str(tmp_path / "nope"), "-o", str(tmp_path / "ds3")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "nope: bag not found" in r.stderr
