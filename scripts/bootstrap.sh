#!/usr/bin/env bash
# One command that makes .venv and installs everything genil_ros needs (idempotent; fast when done).
#  - rclpy: from a sourced ROS 2 install when `python3 -c 'import rclpy'` works (the venv then sees the
#    system site-packages), otherwise the ROS 2 wheels on PyPI (real rclpy over real Fast DDS).
#  - everything else from setup.py's extras (declared there once).
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

stamp_now=$( { cat setup.py scripts/bootstrap.sh; echo "$ROS_SOURCE $EXTRAS"; } | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.genil_stamp" 2>/dev/null)" = "$stamp_now" ]; then
  exit 0  # already bootstrapped with these dependencies
fi

echo "bootstrap: creating $VENV (rclpy from $ROS_SOURCE; extras $EXTRAS)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv $VENV_FLAGS "$VENV" || die "could not create $VENV (is python3-venv installed?)"
"$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
# torch/torchvision first and pinned to the builds on this kind of machine when they are there
# (a later resolve must not pull a several-GB CUDA wheel of another version).
if [ "$(uname -m)" = x86_64 ] && "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1" \
    || "$VENV/bin/python" -m pip install -q torch torchvision
fi
"$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]" || die "pip install failed (see above)"
"$VENV/bin/python" - <<'PYEOF' || die "the environment is incomplete (see above)"
import rclpy, torch, torchvision, diffusers, cv2, mujoco, rosbags, safetensors  # noqa: F401
from sensor_msgs.msg import JointState  # noqa: F401
print(f"bootstrap: ok (torch {torch.__version__}, cuda={torch.cuda.is_available()})")
PYEOF
echo "$stamp_now" > "$VENV/.genil_stamp"
