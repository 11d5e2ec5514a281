"""scripts/pick_place_direct_demos.py: the direct demo store, and its paired mode (both bins per scene)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from genil_ros.data.store import EpisodeStore
from genil_ros.sim import pick_place as P

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "pick_place_direct_demos.py"


@pytest.fixture(scope="module")
def demos():
    spec = importlib.util.spec_from_file_location("pick_place_direct_demos", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bin(state: np.ndarray) -> str:
    """The bin the object (state columns 5..7) ends in, from the last recorded row."""
    y = float(state[-1, 6])
    side = "left" if y > 0 else "right"
    assert np.linalg.norm(state[-1, 5:7] - P.BINS[side]) < P.BIN_INNER_HALF
    return side


def test_paired_store_has_both_bins_per_scene_from_identical_observations(demos, tmp_path):
    out = tmp_path / "paired"
    assert demos.main(["--paired", "--episodes", "2", "--seed", "7", "--hold-steps", "2", "--out", str(out)]) == 0
    store = EpisodeStore.open(out)
    assert store.num_episodes == 4  # 2 scenes x 2 bins
    for k in (0, 2):  # episodes 2i and 2i+1 are scene seed + i, left then right
        a, b = store.episode(k), store.episode(k + 1)
        assert (_bin(a["state"]), _bin(b["state"])) == ("left", "right")
        n = min(len(a["state"]), len(b["state"]))
        same = np.all(a["state"][:n] == b["state"][:n], axis=1)
        split = int(np.argmin(same))
        # the same observations (pick, close, lift) are followed by both modes: the object is up when they part
        assert split > 10 and same[:split].all()
        assert a["state"][split, 7] > 0.08
        assert not np.array_equal(a["action"][split - 1], b["action"][split - 1])


def test_default_store_draws_one_random_bin_per_scene(demos, tmp_path):
    out = tmp_path / "plain"
    assert demos.main(["--episodes", "3", "--hold-steps", "2", "--out", str(out)]) == 0
    store = EpisodeStore.open(out)
    assert store.num_episodes == 3
    starts = [store.episode(i)["state"][0] for i in range(3)]
    assert not np.array_equal(starts[0], starts[1])  # every episode its own scene
