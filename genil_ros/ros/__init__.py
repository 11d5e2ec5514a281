"""The ROS 2 side of genil_ros (the only part that imports rclpy).

- ``policy_node``   lifecycle node running a diffusion policy checkpoint on an arm (``genil-ros policy``)
- ``conversions``   ROS messages <-> numpy (images, joint states, trajectories, stamps)
- ``sim_node``, ``recorder_node``, ``trainer_node``: the bundled sim, rosbag recording, GAIL/AMP trainer
"""
