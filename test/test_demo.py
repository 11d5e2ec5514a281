"""End to end on the bundled sim: `genil-ros demo` runs the shipped policy in policy_node against sim_node,
two processes over real DDS, and writes its GIF, plot and summary."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("mujoco")

from genil_ros.paths import model_path  # noqa: E402


@pytest.mark.skipif(not model_path("sim_obstacle_dp").is_dir(), reason="models/sim_obstacle_dp is not shipped")
def test_demo_closes_the_loop_over_ros(tmp_path, ros_env):
    dom, env = ros_env
    out = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "genil_ros.cli", "demo", "--episodes", "3", "--out", str(out),
                          "--domain-id", str(dom), "--device", "cpu"],
                         env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "success rate:" in res.stdout and "inference latency median" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["episodes"]) == 3
    # The shipped policy solved 10 of 10 episodes of `make demo` over ROS on a 2-core CPU (README); an
    # untrained or disconnected policy never reaches the target within 3 cm. 2 of 3 leaves room for one
    # episode lost to a starved CPU, while a policy that works only by chance (1 of 3) fails.
    assert sum(e["success"] for e in summary["episodes"]) >= 2, summary["episodes"]
    assert summary["policy_diagnostics"]["state"] == "active"
    assert float(summary["policy_diagnostics"]["inference_latency_median_ms"]) > 0
    assert (out / "episode0.gif").stat().st_size > 10_000
    assert (out / "chunk_vs_executed.png").stat().st_size > 10_000


def test_demo_missing_checkpoint_is_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "genil_ros.cli", "demo", "--checkpoint", str(tmp_path / "none"),
                          "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "none" in res.stderr and "--retrain" in res.stderr and "Traceback" not in res.stderr
