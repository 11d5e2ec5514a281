"""genil_ros: generative imitation learning (diffusion policy, GAIL, AMP) for ROS 2 robot arms.

The ML core (``data``, ``policy``, ``adversarial``, ``sim``) never imports rclpy; only ``ros`` does.
"""

__version__ = "0.1.0"
