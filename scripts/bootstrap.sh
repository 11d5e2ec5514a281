#!/usr/bin/env bash
# One command that makes .venv and installs everything genil_ros needs (idempotent; fast when done).
#  - rclpy: from a sourced ROS 2 install when `python3 -c 'import rclpy'` works (the venv then sees the
#    system site-packages), otherwise the ROS 2 wheels on PyPI (real rclpy over real Fast DDS).
#  - everything else from setup.py's extras (declared there once).
#  - `ros2 launch` / `ros2 lifecycle` / `ros2 topic` ... (launch, launch_ros, ros2cli): a sourced ROS 2 has
#    them; otherwise the wheels in ../shared/ros2-wheels (or $GENIL_ROS2_WHEELS) when that folder exists,
#    as its README says. Without either, everything else works and the real-launch tests skip.
#  - when `ros2 launch` is there: the ament prefix it needs to find genil_ros (`genil-ros ament-prefix`,
#    in .venv), and the one line that puts it on AMENT_PREFIX_PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

die() { echo "bootstrap: $*" >&2; exit 1; }

command -v "$PY" >/dev/null || die "no '$PY' on PATH: install Python 3.10-3.12 (or set PYTHON=...)"
"$PY" - <<'PYEOF' || die "Python $("$PY" -c 'import sys;print(sys.version.split()[0])') is not supported: use Python 3.10, 3.11 or 3.12 (set PYTHON=python3.11)"
import sys
sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)
PYEOF

if "$PY" -c "import rclpy" >/dev/null 2>&1; then
  ROS_SOURCE=system; EXTRAS="ml,dev"; VENV_FLAGS="--system-site-packages"
else
  ROS_SOURCE=pypi; EXTRAS="ml,ros,dev"; VENV_FLAGS=""
fi
WHEELS=${GENIL_ROS2_WHEELS:-../shared/ros2-wheels}
if [ "$ROS_SOURCE" = pypi ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
  ROS2_WHEELS=$(cd "$WHEELS" && ls ./*.whl | sort | tr '\n' ' ')
else
  ROS2_WHEELS=""  # a sourced ROS 2 has launch and ros2cli; without either the launch tests skip
fi

stamp_now=$( { cat setup.py scripts/bootstrap.sh; echo "$ROS_SOURCE $EXTRAS $ROS2_WHEELS"; } | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.genil_stamp" 2>/dev/null)" = "$stamp_now" ]; then
  exit 0  # already bootstrapped with these dependencies
fi

echo "bootstrap: setting up $VENV (rclpy from $ROS_SOURCE; extras $EXTRAS)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv $VENV_FLAGS "$VENV" || die "could not create $VENV (is python3-venv installed?)"
LOG="$VENV/bootstrap.log"
: > "$LOG"
pipi() {  # pip install, its chatter to $LOG; on failure the end of it is shown
  "$VENV/bin/python" -m pip install -q "$@" >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; return 1; }
}
pipi --upgrade pip setuptools wheel || die "could not upgrade pip in $VENV (see $LOG)"
# torch/torchvision first and pinned to the builds on this kind of machine when they are there
# (a later resolve must not pull a several-GB CUDA wheel of another version).
if [ "$(uname -m)" = x86_64 ] && "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  pipi "torch==2.14.1" "torchvision==0.29.1" || pipi torch torchvision || die "torch install failed (see $LOG)"
fi
echo "bootstrap: installing genil_ros[$EXTRAS] (pip log: $LOG)"
pipi -e ".[$EXTRAS]" || die "pip install failed (see above and $LOG)"
if [ -n "$ROS2_WHEELS" ]; then
  echo "bootstrap: installing ros2 launch/cli wheels from $WHEELS"
  # --no-deps, then what they import besides the ROS wheels above (their README): ament_index_python is
  # met by ros-ament-index-python, and `lark` comes with the ROS wheels as lark-parser (no lark 1.x beside it)
  pipi --no-deps "$WHEELS"/*.whl || die "could not install the wheels in $WHEELS (see $LOG)"
  pipi osrf-pycommon psutil argcomplete packaging pyyaml ros-ament-index-python \
    || die "could not install what the ros2 wheels need (see $LOG)"
  "$VENV/bin/python" -c "import launch, launch_ros, ros2cli" || die "the wheels from $WHEELS do not import (see above)"
fi
"$VENV/bin/python" - <<'PYEOF' || die "the environment is incomplete (see above)"
import rclpy, torch, torchvision, diffusers, cv2, mujoco, rosbags, safetensors  # noqa: F401
from sensor_msgs.msg import JointState  # noqa: F401
print(f"bootstrap: ok (torch {torch.__version__}, cuda={torch.cuda.is_available()})")
PYEOF
if "$VENV/bin/python" -c "import launch_ros, ros2cli" >/dev/null 2>&1; then
  line=$("$VENV/bin/python" -m genil_ros.cli ament-prefix --quiet) || die "could not lay out the ament prefix (see above)"
  echo "bootstrap: for \`ros2 launch/run genil_ros ...\` without colcon, run (or add to your shell rc):"
  echo "  $line"
else
  echo "bootstrap: no ros2 launch here (no ROS 2 sourced, no $WHEELS): the launch tests will skip"
fi
echo "$stamp_now" > "$VENV/.genil_stamp"
