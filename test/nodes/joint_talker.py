"""Test process: publishes sensor_msgs/JointState on /joint_states at 50 Hz until interrupted."""

import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from sensor_msgs.msg import JointState


def main():
    rclpy.init()
    node = rclpy.create_node("joint_talker")
    pub = node.create_publisher(JointState, "/joint_states", 10)
    count = [0]

    def tick():
        msg = JointState()
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.name = ["joint_b", "joint_a"]  # deliberately not in sorted order
        msg.position = [float(count[0]), -float(count[0])]
        pub.publish(msg)
        count[0] += 1

    node.create_timer(0.02, tick)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
