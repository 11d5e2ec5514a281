"""Typed configuration for genil_ros, loaded from YAML.

Every section is a dataclass; :func:`load_config` turns a YAML file into an
:class:`ExperimentConfig` and validates it. Every error is a :class:`ConfigError`
whose message names the file and the dotted key that is wrong, e.g.::

    config/sim_task.yaml: task.horizon.n_action_steps: 20 is impossible: T_a must be <= T_p - T_o + 1 = 15

The ML core, the CLI and the ROS nodes all read the same file, so a checkpoint
carries the exact configuration it was trained with (see ``policy/checkpoint.py``).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from genil_ros.errors import GenilError
from genil_ros.schema import (
    ActionEntry,
    Layout,
    ObservationEntry,
    SchemaError,
    layout,
    legacy_entries,
    validate_entries,
)

__all__ = [
    "ConfigError",
    "CameraConfig",
    "HorizonConfig",
    "TaskConfig",
    "DatasetConfig",
    "VisionConfig",
    "PolicyConfig",
    "TrainConfig",
    "AdversarialConfig",
    "ExperimentConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
]


class ConfigError(GenilError, ValueError):
    """A configuration problem; the message names the file and the key."""


# --------------------------------------------------------------------------- sections


@dataclass
class CameraConfig:
    """One camera: the ROS topic it arrives on and the size the policy sees."""

    name: str  # identifier used as the observation key, the dataset's frame file and the checkpoint's input name
    topic: str  # ROS topic of the images (sensor_msgs/Image, or CompressedImage when `compressed`)
    height: int = 96  # pixels: every frame is resized to height x width before the dataset and the policy see it
    width: int = 96  # pixels (see height); the network is built for this size, so changing it needs retraining
    compressed: bool = False  # sensor_msgs/CompressedImage (jpeg/png) instead of sensor_msgs/Image

    def validate(self, where: str) -> None:
        _check(self.name.isidentifier(), where + ".name", f"{self.name!r} must be an identifier (letters, digits, _)")
        _check(self.topic.startswith("/") or self.topic[:1].isalpha(), where + ".topic",
               f"{self.topic!r} is not a topic name")
        _check(self.height > 0, where + ".height", "must be > 0")
        _check(self.width > 0, where + ".width", "must be > 0")


@dataclass
class HorizonConfig:
    """Diffusion Policy's horizons, in control ticks: T_o observed steps, T_p predicted, T_a executed."""

    n_obs_steps: int = 2  # T_o: observation steps the policy is conditioned on (the newest T_o ticks)
    horizon: int = 16  # T_p: steps of the predicted action chunk (longer: smoother plans, more compute)
    n_action_steps: int = 8  # T_a: steps of each chunk executed before re-planning (<= T_p - T_o + 1)

    def validate(self, where: str) -> None:
        _check(self.n_obs_steps >= 1, where + ".n_obs_steps", f"{self.n_obs_steps} must be >= 1")
        _check(self.horizon >= 1, where + ".horizon", f"{self.horizon} must be >= 1")
        _check(self.n_obs_steps <= self.horizon, where + ".n_obs_steps",
               f"T_o = {self.n_obs_steps} must be <= T_p = {self.horizon}")
        limit = self.horizon - self.n_obs_steps + 1
        _check(1 <= self.n_action_steps <= limit, where + ".n_action_steps",
               f"{self.n_action_steps} is impossible: T_a must be in 1..T_p - T_o + 1 = {limit}")


@dataclass
class TaskConfig:
    """What the robot observes and commands, independent of how it is learned.

    Two forms (see ``genil_ros/schema.py``):

    - ``observations`` / ``actions``: typed, named entries (joint positions / velocities / efforts, gripper,
      end-effector pose, wrench, any Float64MultiArray vector, cameras; joint targets, gripper command,
      end-effector twist or pose, any vector), each with its topic, message and dimension names.
    - the older ``joint_names`` form: joint positions (+ velocities) and cameras in, absolute joint position
      targets out, the action taken from ``dataset.action_source`` / ``dataset.action_topic``.

    After validation (``ExperimentConfig.validate``) ``observations`` and ``actions`` are always filled: the
    ``joint_names`` form is expanded into them (``schema.legacy_entries``) and stays as written, so code and
    checkpoints may read either. A config that has both must have them agree. The low-dim observations, in
    order, make the policy's ``state`` vector and the actions its ``action`` vector (``layout``)."""

    joint_names: list[str] = field(default_factory=list)  # the joints observed and commanded, matched by name
    joint_states_topic: str = "/joint_states"  # sensor_msgs/JointState topic (recorded, built, read by the node)
    use_velocity: bool = False  # also put joint velocities (rad/s) in the low-dim state: state_dim = 2 x joints
    cameras: list[CameraConfig] = field(default_factory=list)  # image inputs, in this order; [] = state only
    # the typed form: what is observed (low-dim entries concatenated into `state` in this order; cameras) and
    # what is commanded (concatenated into `action`, each entry published on its own topic)
    observations: list[ObservationEntry] = field(default_factory=list)
    actions: list[ActionEntry] = field(default_factory=list)
    control_rate_hz: float = 10.0  # Hz: dataset timeline and policy node tick; one action per tick
    horizon: HorizonConfig = field(default_factory=HorizonConfig)  # T_o / T_p / T_a in ticks of control_rate_hz

    @property
    def layout(self) -> Layout:
        """Where each entry sits in the ``state`` / ``action`` vectors (needs the entries: validate first)."""
        return layout(self.observations, self.actions)

    @property
    def state_dim(self) -> int:
        if self.observations:
            return self.layout.state_dim
        return len(self.joint_names) * (2 if self.use_velocity else 1)

    @property
    def action_dim(self) -> int:
        if self.actions:
            return self.layout.action_dim
        return len(self.joint_names)

    @property
    def camera_entries(self) -> list[ObservationEntry]:
        return [o for o in self.observations if o.is_camera]

    def resolve(self, action_source: str = "next_state", action_topic: Optional[str] = None,
                where: str = "task") -> None:
        """Fill ``observations`` / ``actions`` from the ``joint_names`` form (when it is used), or check that
        both forms agree when a config has both (as a checkpoint's config.yaml does)."""
        if not self.joint_names:
            _check(bool(self.observations) or bool(self.actions), where + ".joint_names",
                   "must list at least one joint (or give task.observations and task.actions)")
            _check(not self.cameras, where + ".cameras",
                   "with observations/actions, cameras are observation entries (type: camera)")
            return
        obs, act = legacy_entries(self.joint_names, self.joint_states_topic, self.use_velocity, self.cameras,
                                  action_source, action_topic)
        if not self.observations and not self.actions:
            self.observations, self.actions = obs, act
            return
        why = layout(self.observations, self.actions).first_difference(layout(obs, act)) if (
            self.observations and self.actions) else "one of observations / actions is missing"
        _check(why is None, where + ".joint_names", f"the joint_names form and observations/actions disagree "
               f"({why}): give one form only")

    def validate(self, where: str) -> None:
        if not self.observations and not self.actions:
            self.resolve(where=where)  # validated on its own (no dataset section): the next-state default
        dup = sorted({j for j in self.joint_names if self.joint_names.count(j) > 1})
        _check(not dup, where + ".joint_names", f"duplicate joint names {dup}")
        _check(self.control_rate_hz > 0, where + ".control_rate_hz", f"{self.control_rate_hz} must be > 0")
        names = [c.name for c in self.cameras]
        dupc = sorted({n for n in names if names.count(n) > 1})
        _check(not dupc, where + ".cameras", f"duplicate camera names {dupc}")
        _check("state" not in names, where + ".cameras", "a camera may not be called 'state'")
        for i, cam in enumerate(self.cameras):
            cam.validate(f"{where}.cameras[{i}]")
        try:
            validate_entries(self.observations, self.actions)
        except SchemaError as e:
            raise _KeyError(f"{where}.{e.key}", e.msg) from None
        self.horizon.validate(where + ".horizon")


@dataclass
class DatasetConfig:
    """How rosbags become a dataset (`genil-ros dataset build`): the action source and the synchronisation."""

    # (the joint_names form; task.actions entries say it per entry with `source`)
    # "next_state": the action of tick t is the joint positions observed at t + 1 (no command topic needed);
    # "command": the command on action_topic in force just before the next tick
    action_source: Literal["command", "next_state"] = "next_state"
    action_topic: Optional[str] = None  # JointTrajectory or Float64MultiArray, when action_source == command
    max_staleness_s: float = 0.2  # s: zero-order hold; a value older than this on the timeline cuts the span
    # s: a gap longer than this in the joint states (the first stamped observation) starts a new episode
    episode_gap_s: float = 1.0
    min_episode_steps: int = 4  # ticks: shorter spans are dropped with a warning
    use_header_stamps: bool = True  # False (or stamps all zero) -> receive time, with a warning
    image_format: Literal["rgb"] = "rgb"  # frames are stored as RGB (bgr8 / mono8 / rgba8 inputs are converted)
    # "gaps": every span without a gap / stale stream is an episode; "bag": one episode per bag
    # (leading / trailing stale ticks are trimmed; a hole inside the bag is an error).
    episode_split: Literal["gaps", "bag"] = "gaps"
    image_compression: Literal["zstd", "none"] = "zstd"  # frames on disk: zstd chunks, or raw memmappable .npy
    chunk_frames: int = 16  # frames per compressed chunk (random access decodes one or two chunks)
    # a NaN / inf in any value a task entry uses (joint fields, poses, wrenches, vectors, recorded commands):
    # "error" stops the build naming bag, topic, joint or dimension and time; "cut" makes the ticks that would
    # hold it invalid (the episode splits there, as at a gap) and warns naming the same
    nonfinite: Literal["error", "cut"] = "error"

    def validate(self, where: str) -> None:
        _check(self.chunk_frames >= 1, where + ".chunk_frames", "must be >= 1")
        if self.action_source == "command":
            _check(bool(self.action_topic), where + ".action_topic", "is required when action_source is 'command'")
        _check(self.max_staleness_s > 0, where + ".max_staleness_s", "must be > 0")
        _check(self.episode_gap_s > 0, where + ".episode_gap_s", "must be > 0")
        _check(self.min_episode_steps >= 1, where + ".min_episode_steps", "must be >= 1")


@dataclass
class VisionConfig:
    """The image encoder of each camera: ResNet-18 -> spatial softmax keypoints -> linear features."""

    backbone: Literal["resnet18"] = "resnet18"  # the convolutional trunk (the only choice)
    pretrained_weights: Optional[str] = None  # a local .pth/.safetensors file; never downloaded (None: random init)
    crop_ratio: float = 0.9  # random crop (train) / centre crop (inference) to this fraction of the size
    feature_dim: int = 64  # per-camera feature size after the spatial-softmax head
    num_keypoints: int = 32  # spatial-softmax keypoints (each gives an x, y image coordinate to the linear head)
    group_norm: bool = True  # replace BatchNorm with GroupNorm (Diffusion Policy)
    share_backbone: bool = False  # one backbone for all cameras (they must have the same size)

    def validate(self, where: str) -> None:
        _check(0.0 < self.crop_ratio <= 1.0, where + ".crop_ratio", f"{self.crop_ratio} must be in (0, 1]")
        _check(self.feature_dim > 0, where + ".feature_dim", "must be > 0")
        _check(self.num_keypoints > 0, where + ".num_keypoints", "must be > 0")


@dataclass
class PolicyConfig:
    """The noise-prediction network and its noise schedule. Everything but the inference scheduler and its
    step count fixes the network: a checkpoint is resumed or loaded only with the same values."""

    # diffusion: the Diffusion Policy. mse: the same encoder and U-Net regressing the chunk in one pass with
    # an MSE loss (no noise) - the plain behaviour-cloning baseline that averages the modes of the demos.
    objective: Literal["diffusion", "mse"] = "diffusion"
    down_dims: list[int] = field(default_factory=lambda: [256, 512, 1024])  # U-Net channels per level (depth = len)
    kernel_size: int = 5  # temporal convolution kernel of the U-Net, in chunk steps (odd)
    n_groups: int = 8  # GroupNorm groups in the U-Net blocks (must divide every down_dims entry)
    diffusion_step_embed_dim: int = 128  # size of the sinusoidal embedding of the denoising step
    cond_predict_scale: bool = True  # FiLM with scale and bias (False: bias only)
    num_train_timesteps: int = 100  # denoising steps of the training noise schedule (DDPM)
    beta_schedule: str = "squaredcos_cap_v2"  # diffusers beta schedule of the noise (cosine by default)
    prediction_type: Literal["epsilon", "sample"] = "epsilon"  # the network predicts the noise or the clean chunk
    # the sampler at inference: ddim / dpmsolver need few steps, ddpm all num_train_timesteps for best quality
    inference_scheduler: Literal["ddpm", "ddim", "dpmsolver"] = "ddim"
    num_inference_steps: int = 10  # denoising steps per chunk at inference: fewer = faster, coarser
    vision: VisionConfig = field(default_factory=VisionConfig)  # the image encoder (unused without cameras)

    def validate(self, where: str) -> None:
        _check(len(self.down_dims) >= 1 and all(d > 0 for d in self.down_dims), where + ".down_dims",
               "must be a non-empty list of positive ints")
        _check(self.kernel_size >= 1 and self.kernel_size % 2 == 1, where + ".kernel_size",
               "must be a positive odd int")
        _check(self.n_groups >= 1, where + ".n_groups", "must be >= 1")
        for d in self.down_dims:
            _check(d % self.n_groups == 0, where + ".down_dims", f"{d} is not divisible by n_groups = {self.n_groups}")
        _check(self.num_train_timesteps >= 1, where + ".num_train_timesteps", "must be >= 1")
        _check(1 <= self.num_inference_steps <= self.num_train_timesteps, where + ".num_inference_steps",
               f"{self.num_inference_steps} must be in 1..num_train_timesteps = {self.num_train_timesteps}")
        self.vision.validate(where + ".vision")


@dataclass
class TrainConfig:
    """Behaviour cloning (`genil-ros train`): AdamW, cosine LR with warm-up, EMA weights, checkpoints."""

    batch_size: int = 64  # samples per optimiser step per process (under torchrun the global batch is x world size)
    num_epochs: int = 100  # passes over the training episodes (ignored when max_steps is set)
    max_steps: Optional[int] = None  # stop after this many optimiser steps (overrides num_epochs)
    lr: float = 1.0e-4  # peak learning rate of AdamW, reached after lr_warmup_steps, then cosine decay to 0
    weight_decay: float = 1.0e-6  # AdamW decoupled weight decay
    betas: list[float] = field(default_factory=lambda: [0.95, 0.999])  # AdamW (beta1, beta2)
    lr_warmup_steps: int = 500  # optimiser steps of linear LR warm-up
    ema_decay: float = 0.9999  # max decay of the EMA (diffusers EMAModel with warm-up)
    ema_power: float = 0.75  # EMA warm-up: decay = 1 - (1 + step)^-power, capped at ema_decay
    grad_clip_norm: float = 1.0  # gradients are clipped to this global L2 norm
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"  # auto: bf16 on CUDA when supported, else off
    seed: int = 0  # seeds weights, shuffling, the train/val split and noise (process rank is added under torchrun)
    val_fraction: float = 0.05  # fraction of episodes held out for validation (at least 1 when > 0 and >= 2 episodes)
    checkpoint_every_epochs: int = 10  # epochs between periodic checkpoints (checkpoints/epoch_NNNN, for --resume)
    val_every_epochs: int = 1  # validation loss (EMA weights) and one batch's denoised-chunk error
    num_workers: int = 0  # DataLoader worker processes (0: load in the training process)
    log_every_steps: int = 10  # optimiser steps between TensorBoard scalars and progress-bar updates

    def validate(self, where: str) -> None:
        _check(self.batch_size >= 1, where + ".batch_size", "must be >= 1")
        _check(self.num_epochs >= 1, where + ".num_epochs", "must be >= 1")
        _check(self.max_steps is None or self.max_steps >= 1, where + ".max_steps", "must be >= 1 or null")
        _check(self.lr > 0, where + ".lr", "must be > 0")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), where + ".betas",
               "must be two numbers in [0, 1)")
        _check(0 <= self.ema_decay < 1, where + ".ema_decay", "must be in [0, 1)")
        _check(0 <= self.val_fraction < 1, where + ".val_fraction", "must be in [0, 1)")
        _check(self.checkpoint_every_epochs >= 1, where + ".checkpoint_every_epochs", "must be >= 1")
        _check(self.val_every_epochs >= 1, where + ".val_every_epochs", "must be >= 1")
        _check(self.num_workers >= 0, where + ".num_workers", "must be >= 0")


@dataclass
class AdversarialConfig:
    """GAIL / AMP discriminators and the PPO that optimises their reward (``genil-ros train-adversarial``;
    the trainer node uses the algorithm and the discriminator fields)."""

    # --- the algorithm and its discriminator D (adversarial/algorithms.py, adversarial/discriminators.py)
    algo: Literal["gail", "amp"] = "amp"  # gail: D on (s, a), reward -log(1 - D); amp: D on (s, s'), style reward
    disc_hidden: list[int] = field(default_factory=lambda: [256, 256])  # D's MLP hidden layer sizes (ReLU)
    disc_lr: float = 1.0e-4  # D's Adam learning rate
    disc_weight_decay: float = 1.0e-4  # L2 penalty on every weight of D, added to its loss
    disc_logit_reg: float = 0.05  # penalty on the squared weights of D's output layer (keeps outputs from saturating)
    grad_penalty: float = 10.0  # w_gp: w_gp / 2 * E_expert |grad D|^2 (AMP's; GAIL optional, 0 disables)
    disc_batch_size: int = 256  # expert and policy samples per D step (each)
    disc_updates_per_iter: int = 5  # D steps per PPO iteration
    replay_buffer_size: int = 100000  # past policy transitions D trains on (ring buffer, oldest dropped)
    # --- the reward PPO maximises: w_G * task + w_S * style
    task_reward_weight: float = 0.5  # w_G: weight of the environment's task reward
    style_reward_weight: float = 0.5  # w_S: weight of D's reward
    # --- PPO (adversarial/ppo.py)
    num_envs: int = 8  # environments stepped in lock-step
    rollout_steps: int = 128  # steps per environment per iteration (an iteration = num_envs * rollout_steps)
    total_env_steps: int = 200000  # training length in environment steps (--steps overrides)
    ppo_epochs: int = 5  # passes over each rollout
    ppo_minibatch_size: int = 256  # transitions per PPO gradient step
    ppo_clip: float = 0.2  # clip range of the probability ratio
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95  # GAE lambda
    policy_lr: float = 3.0e-4  # Adam learning rate of the actor-critic
    entropy_coef: float = 0.0  # entropy bonus weight
    value_coef: float = 0.5  # value loss weight
    max_grad_norm: float = 0.5  # gradient clipping of the actor-critic
    policy_hidden: list[int] = field(default_factory=lambda: [256, 256])  # actor and critic MLP sizes (tanh)
    seed: int = 0  # seeds the networks, the environments and the minibatches (--seed overrides)
    # --- the environment for RL: the bundled MuJoCo arm ("arm", ArmEnv state-only) or the numpy point-mass toy
    env: Literal["arm", "point"] = "arm"
    variant: Literal["obstacle", "reach"] = "obstacle"  # ArmEnv task variant (env: arm)
    max_episode_steps: int = 100  # time limit per episode (truncation) on top of the env's own
    action_scale: float = 0.1  # rad per control tick: target = joint_pos + action_scale * clip(u, -1, 1)
    init_log_std: float = -0.5  # initial log std of the Gaussian policy (in units of action_scale)
    expert_episodes: int = 50  # episodes of the scripted expert when no --expert dataset/bags are given
    checkpoint_every_iters: int = 20  # iterations between checkpoints (and one at the end)
    eval_episodes: int = 20  # deterministic evaluation episodes at the end (success, motion distance)
    terminate_on_success: bool = False  # RL episodes: False = fixed length (reach and hold), no incentive to stall
    # append [goal, ee_pos - goal] (privileged) to the discriminator state: for the scripted expert only
    disc_goal: bool = False

    def validate(self, where: str) -> None:
        for key in ("disc_lr", "policy_lr", "disc_batch_size", "num_envs", "rollout_steps", "total_env_steps",
                    "ppo_epochs", "ppo_minibatch_size", "disc_updates_per_iter", "replay_buffer_size"):
            _check(getattr(self, key) > 0, f"{where}.{key}", "must be > 0")
        _check(0 < self.gamma <= 1, where + ".gamma", "must be in (0, 1]")
        _check(0 <= self.gae_lambda <= 1, where + ".gae_lambda", "must be in [0, 1]")
        _check(0 < self.ppo_clip < 1, where + ".ppo_clip", "must be in (0, 1)")
        _check(self.task_reward_weight >= 0 and self.style_reward_weight >= 0, where + ".task_reward_weight",
               "reward weights must be >= 0")
        _check(self.grad_penalty >= 0, where + ".grad_penalty", "must be >= 0")
        for key in ("max_episode_steps", "action_scale", "expert_episodes", "checkpoint_every_iters"):
            _check(getattr(self, key) > 0, f"{where}.{key}", "must be > 0")
        _check(self.eval_episodes >= 0, where + ".eval_episodes", "must be >= 0")


@dataclass
class ExperimentConfig:
    """One YAML file: the task, how its dataset is built, the policy and how it is trained."""

    task: TaskConfig = field(default_factory=TaskConfig)  # joints, topics, cameras, rate, horizons
    dataset: DatasetConfig = field(default_factory=DatasetConfig)  # rosbags -> episode store
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # the network and its noise schedule
    train: TrainConfig = field(default_factory=TrainConfig)  # behaviour cloning
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)  # GAIL / AMP and their PPO

    def validate(self) -> None:
        self.dataset.validate("dataset")
        self.task.resolve(self.dataset.action_source, self.dataset.action_topic, "task")
        self.task.validate("task")
        self.policy.validate("policy")
        self.train.validate("train")
        self.adversarial.validate("adversarial")


# --------------------------------------------------------------------------- loading


class _KeyError(Exception):
    def __init__(self, key: str, msg: str):
        super().__init__(msg)
        self.key = key
        self.msg = msg


def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise _KeyError(key, msg)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return f"a list of {_type_name(arg)}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise _KeyError(key, f"{value!r} is not {_type_name(tp)}")
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _KeyError(key, f"null is not allowed, expected {_type_name(tp)}")
        last: Optional[_KeyError] = None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except _KeyError as e:
                last = e
        assert last is not None
        raise last
    if origin is list:
        if not isinstance(value, list):
            raise _KeyError(key, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        (arg,) = typing.get_args(tp) or (Any,)
        return [_convert(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _KeyError(key, f"expected a mapping, got {type(value).__name__} {value!r}")
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise _KeyError(key, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _KeyError(key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _KeyError(key, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _KeyError(key, f"expected a string, got {value!r}")
        return value
    raise _KeyError(key, f"unsupported type {tp!r}")  # a programming error in the dataclasses


def _build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            import difflib

            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(fields)})"
            raise _KeyError(key, "unknown key" + hint)
        kwargs[k] = _convert(v, hints[k], key)
    missing = [
        name for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise _KeyError(f"{prefix}.{missing[0]}" if prefix else missing[0], "is required")
    return cls(**kwargs)


def config_from_dict(data: Any, cls: type = ExperimentConfig, source: str = "<dict>", section: str = "") -> Any:
    """Build and validate a config dataclass from plain data; errors name ``source`` and the key.

    ``section`` is the key prefix used in messages when ``cls`` is one section (e.g. ``"task"``).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        cfg = _build(cls, data, section)
        if cls is ExperimentConfig:
            cfg.validate()
        elif hasattr(cfg, "validate"):
            cfg.validate(section or cls.__name__)
    except _KeyError as e:
        raise ConfigError(f"{source}: {e.key}: {e.msg}") from None
    return cfg


def load_config(path: Union[str, os.PathLike], cls: type = ExperimentConfig, section: str = "") -> Any:
    """Load a YAML file into ``cls`` (default :class:`ExperimentConfig`) and validate it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found" + (" (it is a directory)" if p.is_dir() else ""))
    try:
        with p.open("r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: invalid YAML{where}: {problem}") from None
    if section and isinstance(data, dict) and section in data and cls is not ExperimentConfig:
        data = data[section]
    return config_from_dict(data, cls, source=str(p), section=section)


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Any) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


# --------------------------------------------------------------------------- `genil-ros check-config`


def add_arguments(parser) -> None:
    parser.add_argument("config", help="experiment YAML file (or a name in the package's config/)")


def run(args) -> int:
    from genil_ros.paths import config_path

    cfg = load_config(config_path(args.config))
    print(dump_config(cfg), end="")
    return 0
