"""The ROS 2 side of genil_ros (the only part that imports rclpy).

- ``policy_node``   lifecycle node running a diffusion policy checkpoint on an arm, a shell over
  ``genil_ros.control``; its parameters are ``policy_params``, ``genil-ros policy`` is ``policy_cli``
  (``params``, ``policy_params`` and ``policy_cli`` import no rclpy)
- ``conversions``   ROS messages <-> numpy (images, joint states, trajectories, stamps)
- ``sim_node``, ``recorder_node``, ``trainer_node``: the bundled sim, rosbag recording, GAIL/AMP trainer
"""
