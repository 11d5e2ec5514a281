"""Per-entry normalisation of the low-dim ``state`` and ``action`` vectors, stored with the model
(``normalizer.json``).

Each entry of the task's layout (``schema.layout``: a slice of the vector) has its own normalisation:

- ``minmax``: ``x -> (x - min) * 2 / (max - min) - 1``, the data onto [-1, 1];
- ``meanstd``: ``x -> (x - mean) / std``;
- ``none``: unchanged (e.g. a binary gripper's 0 / 1).

All three are per-dimension affine maps ``x * scale + offset``. A dimension that is constant in the data
(max - min below ``eps``) is mapped to ``x - centre`` (not divided by zero) and unnormalised back to its
constant value whatever the network predicts for it.

:meth:`Normalizer.clamp` bounds a denoised (normalised) chunk per dimension: minmax entries to [-1, 1],
the others to their normalised data range widened by ``margin`` of its width on each side.

``normalizer.json`` (version 2)::

    {"type": "per_entry", "version": 2, "eps": 1e-4, "margin": 0.1,
     "fields": {"state": {"min": [...], "max": [...], "mean": [...], "std": [...],
                          "entries": [{"name", "start", "stop", "normalization"}, ...]},
                "action": {...}}}

Version 1 files (``"type": "minmax"``, ``fields.<key>.{min, max}``) are read as one minmax entry per
field: exactly what they meant.
"""

from __future__ import annotations

import json
import math
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from genil_ros.errors import CheckpointError

__all__ = ["Normalizer", "MODES"]

_EPS = 1e-4
MARGIN = 0.1
MODES = ("minmax", "meanstd", "none")
VERSION = 2


def _check_tiling(key: str, entries: Sequence[Mapping], n: int) -> None:
    """The entries cover dimensions 0..n-1 in order, each at least one wide."""
    pos = 0
    for e in entries:
        if e["start"] != pos or e["stop"] <= e["start"]:
            break
        pos = e["stop"]
    else:
        if pos == n:
            return
    raise ValueError(f"normalizer {key!r}: entries {[(e['name'], e['start'], e['stop']) for e in entries]} "
                     f"do not tile its {n} dimensions")


def _entries_of(lay_rows) -> list[dict]:
    return [{"name": e.name, "start": e.start, "stop": e.stop, "normalization": e.normalization} for e in lay_rows]


class Normalizer(nn.Module):
    """``normalize(key, x)`` / ``unnormalize(key, y)`` / ``clamp(key, y)`` over the last dimension of ``x``.

    Keys are the low-dimensional fields (``"state"``, ``"action"``). The buffers are not part of the
    module's ``state_dict`` (the checkpoint keeps the statistics in readable JSON instead) but move with
    ``.to()``.
    """

    def __init__(self):
        super().__init__()
        self._keys: list[str] = []
        self._entries: dict[str, list[dict]] = {}
        self._stats: dict[str, dict[str, torch.Tensor]] = {}

    # ----------------------------------------------------------------- fitting
    def fit(self, key: str, vmin, vmax, eps: float = _EPS, mean=None, std=None,
            entries: Optional[Sequence[Mapping]] = None) -> None:
        """Fit ``key`` from per-dimension statistics. ``entries``: ``[{name, start, stop, normalization}]``
        covering the dimensions (default: one minmax entry named ``key``); meanstd needs ``mean`` / ``std``."""
        f32 = lambda v: torch.as_tensor(np.asarray(v, dtype=np.float32)).reshape(-1)  # noqa: E731
        vmin, vmax = f32(vmin), f32(vmax)
        n = vmin.numel()
        if vmin.shape != vmax.shape:
            raise ValueError(f"normalizer {key!r}: min has {vmin.numel()} values, max has {vmax.numel()}")
        if not (torch.isfinite(vmin).all() and torch.isfinite(vmax).all()):
            raise ValueError(f"normalizer {key!r}: min/max contain NaN or inf")
        entries = [dict(e) for e in entries] if entries is not None else [
            {"name": key, "start": 0, "stop": n, "normalization": "minmax"}]
        _check_tiling(key, entries, n)
        modes = [e["normalization"] for e in entries]
        bad = [m for m in modes if m not in MODES]
        if bad:
            raise ValueError(f"normalizer {key!r}: unknown normalization {bad[0]!r} (one of {', '.join(MODES)})")
        need_moments = "meanstd" in modes
        if need_moments and (mean is None or std is None):
            raise ValueError(f"normalizer {key!r}: meanstd entries need mean and std statistics")
        moments = None
        if mean is not None and std is not None:
            moments = {"mean": f32(mean), "std": f32(std)}
            if moments["mean"].shape != vmin.shape or moments["std"].shape != vmin.shape:
                raise ValueError(f"normalizer {key!r}: mean/std do not have {n} values")
            if not (torch.isfinite(moments["mean"]).all() and torch.isfinite(moments["std"]).all()):
                raise ValueError(f"normalizer {key!r}: mean/std contain NaN or inf")
            mean, std = moments["mean"], moments["std"]
        rng = vmax - vmin
        const = rng < eps
        center = (vmin + vmax) / 2
        scale, offset = torch.ones(n), torch.zeros(n)
        lo, hi = -torch.ones(n), torch.ones(n)
        for e in entries:
            sl = slice(e["start"], e["stop"])
            m = e["normalization"]
            if m == "minmax":
                scale[sl] = 2.0 / rng[sl].clamp_min(eps)
                offset[sl] = -vmin[sl] * scale[sl] - 1.0
            elif m == "meanstd":
                scale[sl] = 1.0 / std[sl].clamp_min(eps)
                offset[sl] = -mean[sl] * scale[sl]
            if m != "minmax":  # the normalised data range, widened by the margin
                a, b = vmin[sl] * scale[sl] + offset[sl], vmax[sl] * scale[sl] + offset[sl]
                lo[sl], hi[sl] = a - MARGIN * (b - a), b + MARGIN * (b - a)
        # constant dims: x -> x - centre (~0), bounded to [-1, 1]
        scale = torch.where(const, torch.ones_like(scale), scale)
        offset = torch.where(const, -center, offset)
        lo, hi = torch.where(const, -torch.ones(n), lo), torch.where(const, torch.ones(n), hi)
        self._set(key, scale, offset, vmin, vmax, const, lo, hi)
        self._entries[key] = entries
        self._stats[key] = moments or {}

    def fit_stats(self, stats: Mapping[str, Mapping[str, object]], keys=("state", "action"), layout=None) -> None:
        """From ``EpisodeStore.stats()``-style ``{key: {"min", "max"[, "mean", "std"]}}``. ``layout`` (the
        task's ``schema.Layout``) gives each entry's slice and normalisation; without it every field is one
        minmax entry (the ``joint_names`` form's meaning)."""
        for k in keys:
            if k not in stats:
                raise ValueError(f"normalizer: no statistics for {k!r} (have {sorted(stats)})")
            st = stats[k]
            entries = None if layout is None else _entries_of(getattr(layout, k))
            self.fit(k, st["min"], st["max"], mean=st.get("mean"), std=st.get("std"), entries=entries)

    def _set(self, key, scale, offset, vmin, vmax, const, lo, hi) -> None:
        if not key.isidentifier():
            raise ValueError(f"normalizer key {key!r} must be an identifier")
        dev = next((b.device for b in self.buffers()), torch.device("cpu"))
        center = (vmin + vmax) / 2
        for name, val in (("scale", scale), ("offset", offset), ("min", vmin), ("max", vmax), ("const", const),
                          ("center", center), ("lo", lo), ("hi", hi)):
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

    def entries(self, key: str) -> list[dict]:
        """``[{name, start, stop, normalization}]`` of ``key``."""
        self._get(key, "scale")
        return [dict(e) for e in self._entries[key]]

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

    def clamp(self, key: str, y: torch.Tensor) -> torch.Tensor:
        """Normalised values bounded per dimension: [-1, 1] for minmax entries, the normalised data range
        widened by the margin for the others."""
        lo, hi = self._get(key, "lo").to(y.dtype), self._get(key, "hi").to(y.dtype)
        return torch.maximum(torch.minimum(y, hi), lo)

    # ----------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict:
        out = {"type": "per_entry", "version": VERSION, "range": [-1.0, 1.0], "eps": _EPS, "margin": MARGIN,
               "fields": {}}
        for k in self._keys:
            out["fields"][k] = {"min": self._get(k, "min").tolist(), "max": self._get(k, "max").tolist(),
                                **{s: t.tolist() for s, t in self._stats[k].items()}, "entries": self.entries(k)}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "normalizer.json") -> "Normalizer":
        """Version 2 (``per_entry``) or version 1 (``minmax``: one minmax entry per field)."""
        n = cls()
        try:
            kind = d.get("type", "minmax")
            if kind not in ("minmax", "per_entry"):
                raise CheckpointError(f"{where}: unknown normalizer type {kind!r} (expected 'per_entry' or 'minmax')")
            eps = float(d.get("eps", _EPS))
            for k, v in d["fields"].items():
                vmin, vmax = v["min"], v["max"]
                nums = list(vmin) + list(vmax) + list(v.get("mean", [])) + list(v.get("std", []))
                if any(not math.isfinite(float(a)) for a in nums):
                    raise CheckpointError(f"{where}: fields.{k}: statistics contain NaN or inf")
                entries = v.get("entries") if kind == "per_entry" else None
                if kind == "per_entry" and entries is None:
                    raise CheckpointError(f"{where}: fields.{k}: no 'entries'")
                n.fit(k, vmin, vmax, eps=eps, mean=v.get("mean"), std=v.get("std"), entries=entries)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{where}: malformed normalizer ({type(e).__name__}: {e})") from None
        return n

    def first_difference(self, lay) -> Optional[str]:
        """None when this normalizer's entries are those of ``lay`` (a ``schema.Layout``: same slices and
        normalisations), else which. A version-1 normalizer (one minmax entry per field) matches a layout
        whose entries are all minmax."""
        for key in ("state", "action"):
            if key not in self._keys:
                return f"no statistics for {key!r}"
            rows = getattr(lay, key)
            want = rows[-1].stop if rows else 0
            if self.dim(key) != want:
                return f"{key} has {self.dim(key)} dimensions, the task {want}"
            mine = self._entries[key]
            if len(mine) == 1 and mine[0]["name"] == key and mine[0]["normalization"] == "minmax":
                other = next((e for e in rows if e.normalization != "minmax"), None)
                if other is None:
                    continue
                return (f"{key} is min-max over all its dimensions (a format-1 normalizer), the task's entry "
                        f"{other.name!r} is {other.normalization}")
            for e, m in zip(rows, mine):
                if (e.name, e.start, e.stop, e.normalization) != (m["name"], m["start"], m["stop"],
                                                                  m["normalization"]):
                    return (f"{key} entry {e.name!r}: the task says {e.normalization} over {e.start}:{e.stop}, "
                            f"the normalizer {m['name']!r} {m['normalization']} over {m['start']}:{m['stop']}")
            if len(rows) != len(mine):
                return f"{key} has {len(mine)} entries, the task {len(rows)}"
        return None

    def load_from(self, other: "Normalizer") -> None:
        """Copy all statistics from ``other`` (keeps this module's device)."""
        for k in other.keys():
            self._set(k, *(other._get(k, n) for n in ("scale", "offset", "min", "max", "const", "lo", "hi")))
            self._entries[k] = other.entries(k)
            self._stats[k] = {s: t.clone() for s, t in other._stats[k].items()}
