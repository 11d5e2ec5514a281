"""Where the package's data (config/, models/, launch/) lives, in a checkout, a pip or a colcon install."""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

PACKAGE = "genil_ros"


@lru_cache(maxsize=None)
def share_dir() -> Path:
    """The directory that holds config/, models/ and launch/.

    A source checkout (``package.xml`` beside the package) wins, so that edits are seen at once;
    then the ament index (colcon install); then ``<prefix>/share/genil_ros`` (pip install).
    """
    src = Path(__file__).resolve().parent.parent
    if (src / "package.xml").is_file() and (src / "config").is_dir():
        return src
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:
        pass
    return Path(sys.prefix) / "share" / PACKAGE


def config_path(name: str) -> Path:
    """A file in config/ ('sim_task.yaml'), or the path itself when it exists as given."""
    p = Path(name)
    if p.exists():
        return p
    return share_dir() / "config" / name


def model_path(name: str) -> Path:
    """A shipped model directory in models/ ('sim_reach_dp'), or the path itself when it exists."""
    p = Path(name)
    if p.exists():
        return p
    return share_dir() / "models" / name
