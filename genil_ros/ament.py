"""`genil-ros ament-prefix`: make a pip-installed genil_ros a ROS 2 package that `ros2` can find.

`ros2 launch genil_ros ...`, `ros2 run genil_ros ...` and `ros2 pkg prefix genil_ros` look a package up in
the ament index: a prefix on ``AMENT_PREFIX_PATH`` holding

    share/ament_index/resource_index/packages/genil_ros    (an empty marker file)
    share/genil_ros/{package.xml,launch,config,models}     (the package's data)
    lib/genil_ros/<executable>                              (what `ros2 run` and launch's Node() start)

colcon lays that out; pip does not (an editable install writes none of it, a plain one no lib/genil_ros/).
This command lays it out in a prefix (default: the Python environment's own, e.g. .venv): the data as
symlinks to where the package's data lives (the source checkout for an editable install, so edits are
seen at once), the executables as small scripts that exec the environment's console scripts. It
prints the one line that puts the prefix on AMENT_PREFIX_PATH, so ``eval "$(genil-ros ament-prefix)"``
works. Idempotent: entries it made are replaced; files a pip install put there are left alone.
"""

from __future__ import annotations

import os
import shlex
import sys
import sysconfig
from pathlib import Path
from typing import Optional

from genil_ros.errors import GenilError
from genil_ros.fileio import is_temp_name
from genil_ros.paths import PACKAGE, share_dir

DATA = ("package.xml", "launch", "config", "models")  # what colcon's setup.py data_files install
MARKER = "# genil_ros ament-prefix launcher"  # the line after the shebang in the scripts it writes


def console_scripts() -> dict[str, str]:
    """name -> 'module:function' of the installed genil_ros distribution's console scripts."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(PACKAGE)
    except PackageNotFoundError:
        raise GenilError(f"{PACKAGE} is not installed in {sys.prefix} (run scripts/bootstrap.sh, or "
                         f"`pip install -e .` in the checkout)") from None
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    if not scripts:
        raise GenilError(f"{PACKAGE} in {sys.prefix}: its metadata lists no console scripts (reinstall it)")
    return scripts


def _replace_with_symlink(link: Path, target: Path) -> None:
    """``link`` -> ``target`` atomically (a symlink made beside it, then renamed over it)."""
    tmp = link.with_name(f"{link.name}.tmp-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _files(src: Path) -> list[Path]:
    """The files of a data tree, relative to it (no caches, no leftovers of atomic writes)."""
    return sorted(p.relative_to(src) for p in src.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and not is_temp_name(p))


def _mirror(src: Path, dst: Path) -> list[str]:
    """``dst`` mirrors ``src`` as colcon's --symlink-install does: real directories, one symlink per file.

    (Not one link for the whole directory: `ros2 launch` finds launch files with os.walk, which does not
    follow directory links.) Links to files that are gone are removed; real files found there are kept."""
    if src.is_file():
        pairs = [(dst, src)]
    else:
        if dst.is_symlink():  # a link to a whole directory (made by hand?): replaced by the mirror
            dst.unlink()
        pairs = [(dst / rel, src / rel) for rel in _files(src)]
    made = kept = 0
    for link, target in pairs:
        if link.exists() and not link.is_symlink():
            kept += 1
            continue
        if not (link.is_symlink() and os.readlink(link) == str(target)):
            link.parent.mkdir(parents=True, exist_ok=True)
            _replace_with_symlink(link, target)
            made += 1
    removed = 0
    if dst.is_dir():
        for p in sorted(dst.rglob("*"), reverse=True):
            if p.is_symlink() and not p.exists():
                p.unlink()
                removed += 1
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
    done = [f"linked {made} file(s) of {src}"] if made else []
    if kept:
        done.append(f"kept {kept} file(s) already in {dst} (installed there, not links)")
    if removed:
        done.append(f"removed {removed} link(s) in {dst} to files that are gone")
    return done


def _launcher(script: Path) -> str:
    return f"#!/bin/sh\n{MARKER}\nexec {shlex.quote(str(script))} \"$@\"\n"


def _write_launcher(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(0o755)
    os.replace(tmp, path)


def _is_ours(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline() == "#!/bin/sh\n" and f.readline().rstrip("\n") == MARKER
    except OSError:
        return False


def lay_out(prefix: Path, data: Optional[Path] = None, scripts_dir: Optional[Path] = None) -> list[str]:
    """Create or refresh the ament layout of genil_ros under ``prefix``; returns what it did, one line each.

    ``data``: the folder holding package.xml, launch/, config/, models/ (default: paths.share_dir());
    ``scripts_dir``: where the console scripts are (default: this environment's scripts folder)."""
    prefix = Path(prefix).absolute()
    data = Path(data or share_dir()).absolute()
    scripts_dir = Path(scripts_dir or sysconfig.get_path("scripts")).absolute()
    missing = [name for name in DATA if not (data / name).exists()]
    if missing:
        raise GenilError(f"{data}: no {', '.join(missing)} (is this the genil_ros checkout or share directory?)")
    scripts = console_scripts()
    absent = [name for name in scripts if not (scripts_dir / name).is_file()]
    if absent:
        raise GenilError(f"{scripts_dir}: console scripts {', '.join(absent)} are missing "
                         f"(reinstall genil_ros: `pip install -e .` in the checkout)")
    done = []

    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE
    if not marker.is_file():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_bytes(b"")
        done.append(f"created {marker}")

    share = prefix / "share" / PACKAGE
    share.mkdir(parents=True, exist_ok=True)
    if share.resolve() != data.resolve():  # else a plain pip install into this prefix put the data here
        for name in DATA:
            done += _mirror(data / name, share / name)

    lib = prefix / "lib" / PACKAGE
    lib.mkdir(parents=True, exist_ok=True)
    for name in sorted(scripts):
        path = lib / name
        if path.exists() and not _is_ours(path):
            done.append(f"kept {path} (not made by this command)")
            continue
        text = _launcher(scripts_dir / name)
        if path.is_file() and path.read_text(encoding="utf-8") == text and os.access(path, os.X_OK):
            continue
        _write_launcher(path, text)
        done.append(f"wrote {path} -> {scripts_dir / name}")
    for stale in sorted(lib.iterdir()):
        if stale.name not in scripts and stale.is_file() and _is_ours(stale):
            stale.unlink()
            done.append(f"removed {stale} (no such console script any more)")
    return done


def export_line(prefix: Path) -> str:
    """The shell line that puts ``prefix`` first on AMENT_PREFIX_PATH (keeping what is there)."""
    quoted = shlex.quote(str(Path(prefix).absolute()))
    return f"export AMENT_PREFIX_PATH={quoted}${{AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}}"


def add_arguments(parser) -> None:
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix),
                        help="the ament prefix to lay out (default: this Python environment, %(default)s)")
    parser.add_argument("--data", type=Path, default=None,
                        help="folder with package.xml, launch/, config/, models/ (default: the checkout or "
                             "installed share directory this genil_ros uses)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the AMENT_PREFIX_PATH line")


def run(args) -> int:
    for line in lay_out(args.prefix, args.data):
        if not args.quiet:
            print(f"genil-ros ament-prefix: {line}", file=sys.stderr)
    if not args.quiet:
        print("genil-ros ament-prefix: put it on AMENT_PREFIX_PATH (then `ros2 launch genil_ros ...` finds it):",
              file=sys.stderr)
    print(export_line(args.prefix))
    return 0
