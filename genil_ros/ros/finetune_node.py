"""`finetune_node`: the fine-tuner of the loop. When the trainer node writes a new discriminator (learned from
the robot's rollout bags), it improves the policy with that reward and makes the policy node load the result.

Each round (a new or rewritten discriminator checkpoint in ``discriminator``):

1. the discriminator is loaded as a fixed reward (``LearnedReward``): the trainer node owns and trains it;
2. ``iterations_per_round`` iterations of noise-space PPO (``genil_ros/finetune/noise_rl.py``) with the
   reward ``adversarial.task_reward_weight * task + adversarial.style_reward_weight * style``, on batched
   episodes of the bundled sim (``task``: the model of the robot the policy drives; direct, faster than real
   time); the noise policy carries over from round to round, starting as N(0, I) = the BC policy;
3. the fine-tuned checkpoint is written atomically to ``<work_dir>/policy``;
4. the policy node's ``checkpoint`` parameter is set to it (``<policy_node>/set_parameters``) and its
   ``~/reload`` is called: it swaps the model without stopping (the old one stays if the new one fails).

The robot's rollouts reach the policy through the reward: what the discriminator learned from them is what
the policy is optimised against. Publishes ``~/metrics`` (std_msgs/String JSON, transient local): rounds,
iterations, the last iteration's metrics, reloads and the last error. Parameters: :class:`FinetuneNodeSettings`.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from genil_ros.errors import GenilError
from genil_ros.ros.params import NodeSettings, declare_parameters, param, read_settings
from genil_ros.ros.runner import ignore_shutdown_signals

__all__ = ["NODE_NAME", "FinetuneNodeSettings", "FinetuneNode", "main"]

NODE_NAME = "finetune_node"


@dataclass
class FinetuneNodeSettings(NodeSettings):
    base_checkpoint: str = param("", "REQUIRED: the behaviour-cloned policy the noise policy steers")
    work_dir: str = param("", "REQUIRED: <work_dir>/policy is the fine-tuned checkpoint the policy node loads")
    discriminator: str = param("", "REQUIRED: the trainer node's discriminator checkpoint (its checkpoint_dir), "
                               "watched for new versions")
    task: str = param("reach", "the bundled sim task the fine-tuner rolls out in (the model of the robot)",
                      choices=("reach", "obstacle", "pick_place"))
    config: str = param("", "YAML whose finetune/adversarial sections apply; empty: the base checkpoint's")
    iterations_per_round: int = param(5, "PPO iterations per new discriminator", minimum=1)
    episodes_per_iter: int = param(0, "sim episodes per iteration (0: the config's finetune.episodes_per_iter)",
                                   minimum=0)
    episode_steps: int = param(0, "control ticks per sim episode (0: the config's finetune.episode_steps)", minimum=0)
    policy_node: str = param("/policy_node", "the policy node to point at the new checkpoint and reload; empty: none")
    poll_period_s: float = param(1.0, "how often the discriminator directory is looked at", minimum=0.05)
    seed: int = param(0, "seed of the noise policy and the sim episodes")

    def validate(self) -> None:
        for key in ("base_checkpoint", "work_dir", "discriminator"):
            if not getattr(self, key):
                raise GenilError(f"parameter {key}: required")


class FinetuneNode(Node):
    """Watches the discriminator, fine-tunes per new version, reloads the policy; see the module docstring."""

    def __init__(self):
        super().__init__(NODE_NAME)
        self._stop = threading.Event()
        self.worker: Optional[threading.Thread] = None
        declare_parameters(self, FinetuneNodeSettings)
        s = self.s = read_settings(self, FinetuneNodeSettings)
        from genil_ros.finetune.cli import finetune_config
        from genil_ros.finetune.run import FinetuneRun

        cfg = finetune_config(s.base_checkpoint, s.config or None, {"finetune": {
            "task": s.task, "seed": s.seed, "episodes_per_iter": s.episodes_per_iter or None,
            "episode_steps": s.episode_steps or None}})
        self.work = Path(s.work_dir)
        self.run = FinetuneRun(s.base_checkpoint, cfg, self.work, style="none", log=self.get_logger().info)
        self.disc_dir = Path(s.discriminator)
        self.policy_dir = self.work / "policy"
        self.stats = {"rounds": 0, "iterations": 0, "reloads": 0, "reload_failures": 0, "last_error": None,
                      "last": {}, "discriminator": str(self.disc_dir), "checkpoint": str(self.policy_dir)}
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.create_publisher(String, "~/metrics", latched)
        if s.policy_node:
            from rcl_interfaces.srv import SetParameters
            from std_srvs.srv import Trigger

            node = s.policy_node.rstrip("/")
            self.set_client = self.create_client(SetParameters, f"{node}/set_parameters")
            self.reload_client = self.create_client(Trigger, f"{node}/reload")
        self._publish()
        self.worker = threading.Thread(target=self._loop, name="finetune-rounds", daemon=True)
        self.worker.start()
        self.get_logger().info(f"fine-tuning {self.run.base} on the {s.task} sim; waiting for discriminators "
                               f"in {self.disc_dir}")

    # ------------------------------------------------------------------ rounds
    def _loop(self) -> None:
        from genil_ros.adversarial.bagio import path_signature

        seen = None
        while not self._stop.wait(self.s.poll_period_s):
            sig = path_signature(self.disc_dir / "meta.json")
            if sig is None or sig == seen:
                continue
            seen = sig
            try:
                self._round()
            except Exception as e:  # noqa: BLE001 - report, keep watching
                why = str(e) if isinstance(e, GenilError) else f"{type(e).__name__}: {e}"
                self.stats["last_error"] = why
                self.get_logger().error(f"round {self.stats['rounds'] + 1}: {why}")
                self._publish()

    def _round(self) -> None:
        from genil_ros.adversarial.discriminators import LearnedReward
        from genil_ros.finetune.guided import ChunkScorer

        reward = LearnedReward.load(self.disc_dir)
        p = self.run.policy
        ChunkScorer(reward, p.n_obs_steps, p.n_action_steps, self.run.cfg.task.control_rate_hz,
                    self.run.adapter.state_dim, source=str(self.disc_dir))  # raises when it does not fit
        rl = self.run.rl
        rl.style, rl.adversary = reward, reward.adversary
        t0 = time.monotonic()
        for _ in range(self.s.iterations_per_round):
            if self._stop.is_set():
                return
            m = rl.iterate()
            self.stats["iterations"] = rl.iteration
            self.stats["last"] = {k: round(v, 5) for k, v in m.items()}
        self.run.save()
        self.stats["rounds"] += 1
        self.stats["last_error"] = None
        self.get_logger().info(f"round {self.stats['rounds']}: {self.s.iterations_per_round} iterations in "
                               f"{time.monotonic() - t0:.1f} s, sim success {m['episode/success']:.2f}, reward "
                               f"{m['reward/total']:.3f}; wrote {self.policy_dir}")
        if self.s.policy_node:
            self._reload()
        self._publish()

    def _wait(self, fut, what: str, timeout: float = 120.0):
        done = threading.Event()
        fut.add_done_callback(lambda _: done.set())
        if not done.wait(timeout):
            raise GenilError(f"{what}: no answer within {timeout:g} s")
        return fut.result()

    def _reload(self) -> None:
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters
        from std_srvs.srv import Trigger

        node = self.s.policy_node.rstrip("/")
        for cli in (self.set_client, self.reload_client):
            if not cli.wait_for_service(timeout_sec=10.0):
                self.stats["reload_failures"] += 1
                raise GenilError(f"{cli.srv_name}: service not available")
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(self.policy_dir.resolve()))
        res = self._wait(self.set_client.call_async(SetParameters.Request(
            parameters=[Parameter(name="checkpoint", value=value)])), f"{node}/set_parameters")
        if not all(r.successful for r in res.results):
            self.stats["reload_failures"] += 1
            raise GenilError(f"{node}: refused checkpoint:={self.policy_dir}: {res.results[0].reason}")
        res = self._wait(self.reload_client.call_async(Trigger.Request()), f"{node}/reload")
        if not res.success:
            self.stats["reload_failures"] += 1
            raise GenilError(f"{node}/reload refused {self.policy_dir}: {res.message}")
        self.stats["reloads"] += 1
        self.get_logger().info(f"{node} reloaded: {res.message}")

    def _publish(self) -> None:
        self.pub.publish(String(data=json.dumps(self.stats, sort_keys=True)))

    def destroy_node(self):
        ignore_shutdown_signals()  # a second Ctrl-C must not cut the clean-up short
        self._stop.set()
        if self.worker is not None and self.worker.is_alive():
            # a round stops at the next iteration; a save in progress is atomic, so a kill loses nothing
            self.worker.join(timeout=3.0)
        return super().destroy_node()


def main(argv: Optional[list] = None) -> int:
    import torch

    from genil_ros.ros.runner import run_node

    torch.set_num_threads(1)  # it shares the machine with the policy node, the sim and the trainer
    return run_node(NODE_NAME, FinetuneNode, argv)


if __name__ == "__main__":
    sys.exit(main())
