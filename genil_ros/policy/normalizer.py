"""Per-dimension min-max normalisation to [-1, 1], stored with the model (``normalizer.json``).

A dimension that is constant in the data (max - min below ``eps``) is mapped to 0 (not divided by
zero), and unnormalised back to its constant value whatever the network predicts for it.
"""

from __future__ import annotations

import json
import math
from typing import Mapping

import numpy as np
import torch
from torch import nn

from genil_ros.errors import CheckpointError

__all__ = ["Normalizer"]

_EPS = 1e-4


class Normalizer(nn.Module):
    """``normalize(key, x)`` / ``unnormalize(key, y)`` over the last dimension of ``x``.

    Keys are the low-dimensional fields (``"state"``, ``"action"``). The buffers are not part of the
    module's ``state_dict`` (the checkpoint keeps them in readable JSON instead) but move with ``.to()``.
    """

    def __init__(self):
        super().__init__()
        self._keys: list[str] = []

    # ----------------------------------------------------------------- fitting
    def fit(self, key: str, vmin, vmax, eps: float = _EPS) -> None:
        vmin = torch.as_tensor(np.asarray(vmin, dtype=np.float32)).reshape(-1)
        vmax = torch.as_tensor(np.asarray(vmax, dtype=np.float32)).reshape(-1)
        if vmin.shape != vmax.shape:
            raise ValueError(f"normalizer {key!r}: min has {vmin.numel()} values, max has {vmax.numel()}")
        if not (torch.isfinite(vmin).all() and torch.isfinite(vmax).all()):
            raise ValueError(f"normalizer {key!r}: min/max contain NaN or inf")
        rng = vmax - vmin
        const = rng < eps
        scale = torch.where(const, torch.ones_like(rng), 2.0 / rng.clamp_min(eps))
        # constant dims: x -> x - centre (~0); others: x -> (x - min) * 2 / range - 1
        offset = torch.where(const, -(vmin + vmax) / 2, -vmin * scale - 1.0)
        self._set(key, scale, offset, vmin, vmax, const)

    def fit_stats(self, stats: Mapping[str, Mapping[str, object]], keys=("state", "action")) -> None:
        """From ``EpisodeStore.stats()``-style ``{key: {"min": ..., "max": ...}}``."""
        for k in keys:
            if k not in stats:
                raise ValueError(f"normalizer: no statistics for {k!r} (have {sorted(stats)})")
            self.fit(k, stats[k]["min"], stats[k]["max"])

    def _set(self, key, scale, offset, vmin, vmax, const) -> None:
        if not key.isidentifier():
            raise ValueError(f"normalizer key {key!r} must be an identifier")
        dev = next((b.device for b in self.buffers()), torch.device("cpu"))
        center = (vmin + vmax) / 2
        for name, val in (("scale", scale), ("offset", offset), ("min", vmin), ("max", vmax), ("const", const),
                          ("center", center)):
            val = val.to(dev) if val.dtype == torch.bool else val.to(dev, torch.float32)
            self.register_buffer(f"{key}__{name}", val.clone(), persistent=False)
        if key not in self._keys:
            self._keys.append(key)

    # ----------------------------------------------------------------- use
    def keys(self) -> list[str]:
        return list(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def dim(self, key: str) -> int:
        return getattr(self, f"{key}__scale").numel()

    def _get(self, key: str, name: str) -> torch.Tensor:
        if key not in self._keys:
            raise KeyError(f"normalizer has no statistics for {key!r} (has {self._keys})")
        return getattr(self, f"{key}__{name}")

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        scale, offset = self._get(key, "scale"), self._get(key, "offset")
        return x * scale.to(x.dtype) + offset.to(x.dtype)

    def unnormalize(self, key: str, y: torch.Tensor) -> torch.Tensor:
        scale, offset = self._get(key, "scale"), self._get(key, "offset")
        x = (y - offset.to(y.dtype)) / scale.to(y.dtype)
        return torch.where(self._get(key, "const"), self._get(key, "center").to(y.dtype), x)

    # ----------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict:
        out = {"type": "minmax", "range": [-1.0, 1.0], "eps": _EPS, "fields": {}}
        for k in self._keys:
            out["fields"][k] = {"min": self._get(k, "min").tolist(), "max": self._get(k, "max").tolist()}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "normalizer.json") -> "Normalizer":
        n = cls()
        try:
            if d.get("type", "minmax") != "minmax":
                raise CheckpointError(f"{where}: unknown normalizer type {d.get('type')!r} (expected 'minmax')")
            eps = float(d.get("eps", _EPS))
            for k, v in d["fields"].items():
                vmin, vmax = v["min"], v["max"]
                if any(not math.isfinite(float(a)) for a in list(vmin) + list(vmax)):
                    raise CheckpointError(f"{where}: fields.{k}: min/max contain NaN or inf")
                n.fit(k, vmin, vmax, eps=eps)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{where}: malformed normalizer ({type(e).__name__}: {e})") from None
        return n

    def load_from(self, other: "Normalizer") -> None:
        """Copy all statistics from ``other`` (keeps this module's device)."""
        for k in other.keys():
            self._set(k, *(other._get(k, n) for n in ("scale", "offset", "min", "max", "const")))
