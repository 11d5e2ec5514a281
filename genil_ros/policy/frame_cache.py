"""Image features of recently seen camera frames, so that a frame is encoded once, not once per window.

The observation window of T_o ticks holds each frame for T_o consecutive windows; the image encoder's
features of a frame depend on that frame only (GroupNorm, no batch statistics). A :class:`FrameCache`
keys features by camera and frame content (a 128-bit BLAKE2 digest of the bytes: no stale hit when a
buffer is reused for another frame) and keeps the ``size`` most recently used. With it, the older frame
of the next window can be encoded ahead of time (``DiffusionPolicy.prefetch``) and the inference encodes
only the newest one.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Callable

import numpy as np
import torch

__all__ = ["FrameCache"]


class FrameCache:
    def __init__(self, size: int = 8):
        if size < 1:
            raise ValueError(f"frame cache size {size} must be >= 1")
        self.size = int(size)
        self._feats: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._feats)

    def clear(self) -> None:
        self._feats.clear()

    @staticmethod
    def key(name: str, frame: torch.Tensor) -> tuple:
        a = np.ascontiguousarray(frame.detach().cpu().numpy())
        return name, a.shape, hashlib.blake2b(a.data, digest_size=16).digest()

    def features(self, name: str, frames: torch.Tensor,
                 encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Features (N, F) of camera ``name``'s frames (N, 3, H, W): cached ones looked up, the others
        computed with ``encode(frames[missing])`` in one call and cached."""
        keys = [self.key(name, f) for f in frames]
        missing: dict[tuple, int] = {}
        for i, k in enumerate(keys):
            if k not in self._feats and k not in missing:
                missing[k] = i
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        if missing:
            idx = torch.tensor(list(missing.values()), device=frames.device)
            for k, f in zip(missing, encode(frames.index_select(0, idx))):
                self._feats[k] = f
        out = torch.stack([self._feats[k] for k in keys])
        for k in keys:
            self._feats.move_to_end(k)
        while len(self._feats) > self.size:
            self._feats.popitem(last=False)
        return out
