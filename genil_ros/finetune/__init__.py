"""Closing the loop: the GAIL / AMP reward improves the diffusion policy.

- ``tasks.py``      the bundled sim tasks as fine-tuning environments (sim observation -> the policy's state)
- ``rollouts.py``   batched, chunk-level episodes in the sim (one policy call per executed chunk)
- ``noise_policy.py`` the Gaussian policy over the DDIM chain's initial noise, and its critic
- ``steering.py``   the diffusion policy driven by a noise policy; fine-tuned checkpoints
- ``noise_rl.py``   PPO in noise space with the reward task + style (the trainer)
- ``guided.py``     discriminator-guided chunk selection (K samples, keep the best), for the node and the sim
- ``evaluate.py``   success and motion distance to the expert over fixed episodes
- ``cli.py``        ``genil-ros finetune``

No rclpy here; the loop over ROS 2 is ``genil_ros/ros/finetune_node.py`` and ``launch/loop.launch.py``.
"""
