"""The torch Dataset of training samples: (T_o observation window, T_p action chunk), Diffusion Policy style.

The sample for tick ``t`` of an episode is the window of ``horizon`` (T_p) steps that starts at
``t - (n_obs_steps - 1)``: ``obs`` are its first T_o steps, ``action`` all T_p steps, so ``action[T_o - 1]``
is the action taken at ``t``. Indices outside the episode repeat its first / last step (Diffusion
Policy's ``SequenceSampler`` padding). By default every tick of every episode is a sample
(``pad_before = T_o - 1``, ``pad_after = T_p - T_o``); Diffusion Policy's own choice is
``pad_after = n_action_steps - 1``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from genil_ros.data.store import EpisodeStore
from genil_ros.errors import DataError
from genil_ros.schema import Layout

__all__ = ["SequenceDataset", "split_episodes"]


class SequenceDataset(torch.utils.data.Dataset):
    """Item: ``{"obs": {"state": (T_o, D) float32, <cam>: (T_o, 3, H, W) uint8}, "action": (T_p, A) float32}``.

    ``episodes``: which episodes of the store to use (default all); ``cameras``: which cameras (default
    all of the store's, or the cameras of ``layout``). ``layout``: the task's ``schema.Layout``: ``state`` /
    ``action`` are the concatenations of its entries in its order (it may take a subset of the store's
    entries; default: the store's own layout). ``in_memory``: decompress the frames into RAM first (default:
    when they take at most half of the free RAM); otherwise frames are read chunk by chunk with an LRU cache.
    """

    def __init__(self, store: EpisodeStore, n_obs_steps: int, horizon: int, episodes: Optional[Sequence[int]] = None,
                 cameras: Optional[Sequence[str]] = None, *, pad_before: Optional[int] = None,
                 pad_after: Optional[int] = None, in_memory: Optional[bool] = None, layout: Optional[Layout] = None):
        if isinstance(store, (str, bytes)) or hasattr(store, "__fspath__"):
            store = EpisodeStore.open(store)
        if not 1 <= n_obs_steps <= horizon:
            raise ValueError(f"need 1 <= n_obs_steps ({n_obs_steps}) <= horizon ({horizon})")
        self.store = store
        self.n_obs_steps = int(n_obs_steps)
        self.horizon = int(horizon)
        self.pad_before = self.n_obs_steps - 1 if pad_before is None else int(pad_before)
        self.pad_after = self.horizon - self.n_obs_steps if pad_after is None else int(pad_after)
        if not 0 <= self.pad_before <= self.horizon - 1 or self.pad_after < 0:
            raise ValueError(f"pad_before must be in 0..horizon-1 and pad_after >= 0 "
                             f"(got {self.pad_before}, {self.pad_after})")
        n = store.num_episodes
        self.episodes = list(range(n)) if episodes is None else [int(e) for e in episodes]
        for e in self.episodes:
            if not 0 <= e < n:
                raise DataError(f"{store.path}: episode {e} out of range (the store has {n})")
        if layout is not None:
            store.check_layout(layout)
        self.layout = layout if layout is not None else store.layout
        if cameras is None:
            cameras = store.camera_names if layout is None else list(layout.cameras)
        self.cameras = list(cameras)
        for c in self.cameras:
            if c not in store.camera_names:
                raise DataError(f"{store.path}: no camera {c!r} in the dataset (it has {store.camera_names})")

        # low-dim arrays of the chosen episodes in RAM (small), one flat array with episode offsets
        states, actions, index = [], [], []
        self._ep_start, self._ep_len = [], []
        off = 0
        for k, e in enumerate(self.episodes):
            s, a = store.lowdim_for(e, self.layout)
            s, a = np.asarray(s, dtype=np.float32), np.asarray(a, dtype=np.float32)
            L = len(s)
            states.append(s)
            actions.append(a)
            self._ep_start.append(off)
            self._ep_len.append(L)
            # window starts from -pad_before to L - horizon + pad_after (inclusive)
            first, last = -self.pad_before, L - self.horizon + self.pad_after
            if last >= first:
                starts = np.arange(first, last + 1)
                index.append(np.stack([np.full_like(starts, k), starts], axis=1))
            off += L
        self._state = np.concatenate(states) if states else np.zeros((0, 0), np.float32)
        self._action = np.concatenate(actions) if actions else np.zeros((0, 0), np.float32)
        self._index = np.concatenate(index) if index else np.zeros((0, 2), np.int64)

        if in_memory is None:
            in_memory = store.fits_in_ram(0.5)
        self.in_memory = bool(in_memory) and bool(self.cameras)
        if self.in_memory:
            store.load(self.episodes)

    def __len__(self) -> int:
        return len(self._index)

    def window_indices(self, idx: int) -> tuple[int, np.ndarray]:
        """(episode position in ``self.episodes``, the T_p clamped step indices within it) of sample ``idx``."""
        k, start = self._index[idx]
        L = self._ep_len[k]
        return int(k), np.clip(np.arange(start, start + self.horizon), 0, L - 1)

    def __getitem__(self, idx: int) -> dict:
        if idx < 0:
            idx += len(self)
        if not 0 <= idx < len(self):
            raise IndexError(idx)
        k, steps = self.window_indices(idx)
        base = self._ep_start[k]
        obs_steps = steps[: self.n_obs_steps]
        obs = {"state": torch.from_numpy(self._state[base + obs_steps])}
        ep = self.episodes[k]
        lo, hi = int(obs_steps[0]), int(obs_steps[-1]) + 1
        for cam in self.cameras:
            frames = self.store.frames(ep, cam, lo, hi)  # contiguous range, then repeat for padding
            img = frames[obs_steps - lo]
            obs[cam] = torch.from_numpy(np.ascontiguousarray(img.transpose(0, 3, 1, 2)))
        return {"obs": obs, "action": torch.from_numpy(self._action[base + steps])}

    def all_states(self) -> np.ndarray:
        """All states of the chosen episodes (N, D), e.g. for a normalizer."""
        return self._state

    def all_actions(self) -> np.ndarray:
        return self._action


def split_episodes(n: int, val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Episode indices split into (train, val) at random; val gets round(n * val_fraction) episodes,
    at least one when val_fraction > 0 and n >= 2, and train is never empty."""
    if n < 1:
        raise DataError("no episodes to split")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(int(i) for i in perm[n_val:]), sorted(int(i) for i in perm[:n_val])
