"""Test process (argv: N [timeout_s]): receives N sensor_msgs/JointState on /joint_states, prints them as
lines, exits 0."""

import sys

import rclpy
from sensor_msgs.msg import JointState


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    rclpy.init()
    node = rclpy.create_node("joint_listener")
    got = []
    node.create_subscription(JointState, "/joint_states", got.append, 10)
    timeout_s = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
    deadline = node.get_clock().now().nanoseconds + timeout_s * 1e9
    while len(got) < n and node.get_clock().now().nanoseconds < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    for m in got[:n]:
        print("RECV", ",".join(m.name), ",".join(f"{p:g}" for p in m.position), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0 if len(got) >= n else 1


if __name__ == "__main__":
    sys.exit(main())
