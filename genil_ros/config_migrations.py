"""Config keys renamed since checkpoints were written with them, and the migration of a checkpoint's config.

A checkpoint carries the whole config it was trained with (``config.yaml``). When a later genil_ros renames
or replaces a key, that file must still load: :func:`migrate_renamed_keys` moves the old keys to their new
names with one warning each (``load_config(..., migrate=True)``, what the checkpoint loaders call). A user's
config file is never migrated: an old key there stays an unknown-key error that names the new key.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Callable, Optional

__all__ = ["RENAMED_KEYS", "migrate_renamed_keys"]

# old dotted key -> (new dotted key, how the old value carries over: a function of it, or None when the
# meaning changed and the new key keeps its default)
RENAMED_KEYS: dict[str, tuple[str, Optional[Callable[[Any], Any]]]] = {
    # ea2ea66: the saturation gate measures the separation as a share of the loss's margin, not an accuracy
    "finetune.disc_max_accuracy": ("finetune.disc_max_saturation", None),
}


def migrate_renamed_keys(data: dict, source: str) -> dict:
    """A copy of ``data`` (a whole config as plain data) with the keys of :data:`RENAMED_KEYS` moved to their
    new names, one warning per key naming ``source``; a new key already present wins over the old one."""
    out = copy.deepcopy(data)
    for old, (new, carry) in RENAMED_KEYS.items():
        *parents, old_leaf = old.split(".")
        section = out
        for name in parents:
            section = section.get(name) if isinstance(section, dict) else None
        if not isinstance(section, dict) or old_leaf not in section:
            continue
        value = section.pop(old_leaf)
        *new_parents, new_leaf = new.split(".")
        if new_parents != parents:  # a key moved to another section: create it there
            section = out
            for name in new_parents:
                section = section.setdefault(name, {})
        if new_leaf in section:
            what = f"dropped: {new} is there too"
        elif carry is None:
            what = f"replaced by {new}, a different measure: its value {value!r} is dropped, {new} keeps its default"
        else:
            section[new_leaf] = carry(value)
            what = f"renamed to {new} (value {section[new_leaf]!r})"
        warnings.warn(f"{source}: {old} ({value!r}) is from an older genil_ros: {what}", stacklevel=3)
    return out
