"""The named steps of `genil-ros train` (:func:`genil_ros.policy.train.train_policy` is the loop over them).

:func:`build_policy` (fresh, or from the resume checkpoint), :func:`build_loaders`, :func:`build_optimisation`
and :func:`restore_training_state` set a run up; per epoch :func:`train_one_epoch` takes one
:func:`update_policy` step per batch, then :func:`validate` (EMA weights) and
:func:`save_training_checkpoint` when due. A :class:`TrainingRun` holds what a run trains with, a
:class:`Progress` where it is.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from genil_ros.errors import CheckpointError, DataError, GenilError

__all__ = ["dataset_stats", "build_policy", "Loaders", "build_loaders", "Optimisation", "build_optimisation",
           "restore_training_state", "update_policy", "Progress", "TrainingRun", "train_one_epoch", "validate",
           "save_training_checkpoint", "end_of_epoch", "setup_device", "seed_all", "Dist"]


def dataset_stats(dataset, keys=("state", "action"), max_items: Optional[int] = None) -> dict:
    """min / max / mean / std per dimension of ``obs.state`` and ``action`` over a dataset of samples (for
    datasets without an EpisodeStore; the CLI uses ``store.stats(layout)``; padded windows count twice)."""
    import numpy as np
    import torch

    from genil_ros.data.store_writer import RunningStats

    acc: dict[str, Any] = {k: RunningStats() for k in keys}
    n = len(dataset) if max_items is None else min(len(dataset), max_items)
    for i in range(n):
        item = dataset[i]
        for k in keys:
            x = item["obs"]["state"] if k == "state" else item[k]
            acc[k].add(torch.as_tensor(x).reshape(-1, x.shape[-1]).double().numpy())
    return {k: {s: np.asarray(v, np.float32) for s, v in acc[k].result().items()} for k in keys}


def seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    import numpy as np
    import torch

    s = torch.initial_seed() % (2 ** 32)
    np.random.seed(s)
    random.seed(s)


def _amp_dtype(mode: str, device):
    import torch

    if device.type != "cuda" or mode == "no":
        return None
    if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def _ema_state_dict(policy, ema) -> dict:
    """The policy's state dict with every parameter replaced by its EMA shadow."""
    sd = dict(policy.state_dict())
    names = [n for n, _ in policy.named_parameters()]
    for n, p in zip(names, ema.shadow_params):
        sd[n] = p.detach()
    return sd


def _policy_section(cfg) -> dict:
    from genil_ros.config import config_to_dict

    d = config_to_dict(cfg.policy)
    d.pop("inference_scheduler", None)
    d.pop("num_inference_steps", None)
    return d


class Dist:
    """torchrun's environment: world size, this process's rank; rank 0 logs, validates and saves."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()


def setup_device(device, dist_: Dist):
    """The torch device of this process; under torchrun also joins the process group (nccl or gloo)."""
    import torch

    from genil_ros.policy.checkpoint import resolve_device

    if not dist_.enabled:
        return resolve_device(device)
    import torch.distributed as dist

    cuda = torch.cuda.is_available() and str(device) != "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(dist_.local_rank)
        return torch.device("cuda", dist_.local_rank)
    return torch.device("cpu")


# --------------------------------------------------------------------------- the steps


def build_policy(cfg, train_set, stats: Optional[Mapping], ckpt: Optional[Path]):
    """(policy, training state): the policy of ``ckpt`` with its optimiser state for a resume, or a fresh
    DiffusionPolicy whose normalizer is fitted to ``stats`` (default: computed from ``train_set``)."""
    from genil_ros.policy.checkpoint import load_policy, load_training_state
    from genil_ros.policy.diffusion import DiffusionPolicy

    if ckpt is not None:
        policy = load_policy(ckpt, device="cpu", use_ema=False, task=cfg.task)
        if _policy_section(policy.cfg) != _policy_section(cfg):
            raise CheckpointError(f"{ckpt}: its policy section differs from the config's; "
                                  "resume needs the same network")
        policy.cfg.train = cfg.train
        policy.train()
        return policy, load_training_state(ckpt)
    policy = DiffusionPolicy(cfg)
    if stats is None:
        stats = dataset_stats(train_set)
    for key, dim in (("state", policy.state_dim), ("action", policy.action_dim)):
        got = len(stats[key]["min"]) if key in stats else None
        if got != dim:
            raise DataError(f"dataset statistics: {key} has {got} dimensions, the config expects {dim}")
    try:
        policy.fit_normalizer(stats)  # per entry of the task's layout
    except ValueError as e:
        raise DataError(f"dataset statistics: {e}") from None
    return policy, None


@dataclass
class Loaders:
    """The data side of a run."""

    train: Any  # DataLoader over the training set (this process's shard under DDP)
    val: Any  # DataLoader over the validation set, on rank 0 only; None when there is none
    sampler: Any  # DistributedSampler under DDP (set_epoch each epoch), else None
    generator: Any  # torch.Generator of the shuffling, reseeded on resume
    steps_per_epoch: int
    num_epochs: int
    total_steps: int  # optimiser steps planned (train.max_steps, or epochs x steps per epoch)


def build_loaders(tc, train_set, val_set, dist_: Dist, dev) -> Loaders:
    import torch
    from torch.utils.data import DataLoader

    gen = torch.Generator().manual_seed(tc.seed)
    sampler = None
    drop_last = len(train_set) >= tc.batch_size * dist_.world
    if dist_.enabled:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(train_set, num_replicas=dist_.world, rank=dist_.rank, shuffle=True,
                                     seed=tc.seed, drop_last=drop_last)
    loader_kw = dict(num_workers=tc.num_workers, pin_memory=dev.type == "cuda", worker_init_fn=_worker_init,
                     persistent_workers=tc.num_workers > 0)
    train_loader = DataLoader(train_set, batch_size=tc.batch_size, shuffle=sampler is None, sampler=sampler,
                              drop_last=drop_last, generator=gen, **loader_kw)
    val_loader = (DataLoader(val_set, batch_size=tc.batch_size, shuffle=False, **loader_kw)
                  if val_set is not None and len(val_set) > 0 and dist_.main else None)
    steps_per_epoch = len(train_loader)
    if tc.max_steps is not None:
        total_steps = tc.max_steps
        num_epochs = math.ceil(total_steps / steps_per_epoch)
    else:
        num_epochs = tc.num_epochs
        total_steps = num_epochs * steps_per_epoch
    return Loaders(train_loader, val_loader, sampler, gen, steps_per_epoch, num_epochs, total_steps)


@dataclass
class Optimisation:
    """The optimiser side of a run."""

    optimizer: Any  # AdamW
    lr_sched: Any  # cosine with warm-up (diffusers get_scheduler), stepped once per optimiser step
    ema: Any  # diffusers EMAModel: the shadow weights that validation and checkpoints' ema.safetensors use
    scaler: Any  # torch.amp.GradScaler, enabled for fp16 autocast only
    amp: Any  # autocast dtype (torch.bfloat16 / torch.float16), None = full precision


def build_optimisation(policy, tc, total_steps: int, dev) -> Optimisation:
    import torch
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    optimizer = torch.optim.AdamW(policy.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    lr_sched = get_scheduler("cosine", optimizer, num_warmup_steps=min(tc.lr_warmup_steps, total_steps),
                             num_training_steps=total_steps)
    ema = EMAModel(policy.parameters(), decay=tc.ema_decay, use_ema_warmup=True, power=tc.ema_power, foreach=True)
    amp = _amp_dtype(tc.mixed_precision, dev)
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)
    return Optimisation(optimizer, lr_sched, ema, scaler, amp)


def restore_training_state(opt: Optimisation, state: Mapping, loaders: Loaders, seed: int, ckpt: Path,
                           dev) -> tuple[int, int]:
    """Load a checkpoint's training_state.pt into ``opt`` (and the RNGs); returns (epoch, global_step).
    The LR lambda stays the new one: a longer run stretches the cosine over the new total."""
    import torch

    try:
        opt.optimizer.load_state_dict(state["optimizer"])
        opt.lr_sched.load_state_dict(state["lr_scheduler"])
        opt.ema.load_state_dict(state["ema"])
        if "scaler" in state and opt.scaler.is_enabled():
            opt.scaler.load_state_dict(state["scaler"])
        start_epoch, global_step = int(state["epoch"]), int(state["global_step"])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        loaders.generator.manual_seed(seed + start_epoch)
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{ckpt}/training_state.pt: does not fit this run ({type(e).__name__}: {e})") from None
    opt.ema.to(dev)
    return start_epoch, global_step


def update_policy(model, policy, batch, opt: Optimisation, grad_clip_norm: float, dev, step: int):
    """One optimiser step (as LeRobot's ``update_policy``): the loss under autocast, a finite-loss check,
    scaled backward, gradient clipping, optimiser, LR schedule and EMA. ``model`` is ``policy`` or its DDP
    wrapper. Returns (loss, grad norm before clipping) as a float and a tensor."""
    import torch

    with torch.autocast(dev.type, dtype=opt.amp, enabled=opt.amp is not None):
        loss = model(batch)
    if not torch.isfinite(loss):
        raise GenilError(f"training diverged: loss is {loss.item()} at step {step} "
                         "(lower train.lr, or check the dataset statistics)")
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scaler.scale(loss).backward()
    opt.scaler.unscale_(opt.optimizer)
    gnorm = torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip_norm)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.lr_sched.step()
    opt.ema.step(policy.parameters())
    return float(loss.detach()), gnorm


@dataclass
class Progress:
    """Where a run is; saved into the checkpoints' meta.json and training_state.pt."""

    epoch: int  # epochs finished
    global_step: int  # optimiser steps taken
    total_steps: int  # steps planned; lowered to global_step when the time limit stops the run
    last_train: Optional[float] = None  # mean training loss of the last epoch
    last_val: Optional[float] = None  # the latest validation loss (EMA weights)
    samples: int = 0  # training samples seen by all processes in this session
    train_seconds: float = 0.0  # wall time of the training steps in this session (no validation, no saving)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds > 0 else 0.0


@dataclass
class TrainingRun:
    """Everything one call of :func:`train_policy` trains with."""

    tc: Any  # the TrainConfig
    policy: Any
    model: Any  # policy, or its DistributedDataParallel wrapper
    loaders: Loaders
    opt: Optimisation
    dev: Any
    dist: Dist
    out: Path
    writer: Any  # TensorBoard SummaryWriter on rank 0, else None
    log: Callable
    deadline: Optional[float]  # time.monotonic() at which to stop (single process only)
    dataset_info: Mapping


def train_one_epoch(run: TrainingRun, prog: Progress, epoch: int, bar) -> float:
    """One pass over the training loader (or up to the planned steps / the time limit); returns the mean
    loss. Logs train/loss, train/lr, train/grad_norm, train/ema_decay every ``log_every_steps``."""
    tc, writer = run.tc, run.writer
    if run.loaders.sampler is not None:
        run.loaders.sampler.set_epoch(epoch)
    t0, running, count = time.monotonic(), 0.0, 0
    for batch in run.loaders.train:
        lv, gnorm = update_policy(run.model, run.policy, batch, run.opt, tc.grad_clip_norm, run.dev, prog.global_step)
        prog.global_step += 1
        prog.samples += int(batch["action"].shape[0]) * run.dist.world
        running += lv
        count += 1
        bar.update(1)
        if writer is not None and (prog.global_step % tc.log_every_steps == 0 or prog.global_step == 1):
            writer.add_scalar("train/loss", lv, prog.global_step)
            writer.add_scalar("train/lr", run.opt.lr_sched.get_last_lr()[0], prog.global_step)
            writer.add_scalar("train/grad_norm", float(gnorm), prog.global_step)
            writer.add_scalar("train/ema_decay", run.opt.ema.cur_decay_value or 0.0, prog.global_step)
            rate = prog.samples / (prog.train_seconds + time.monotonic() - t0)
            bar.set_postfix({"loss": f"{lv:.4f}", "epoch": epoch + 1, "samples/s": f"{rate:.0f}"})
        if prog.global_step >= prog.total_steps:
            break
        # the time limit (single process only: under DDP the ranks would disagree on when to stop)
        if run.deadline is not None and not run.dist.enabled and time.monotonic() > run.deadline:
            if run.dist.main:
                run.log(f"time limit reached at step {prog.global_step} of {prog.total_steps}; finishing")
            prog.total_steps = prog.global_step  # every rank stops after this epoch's bookkeeping
            break
    prog.train_seconds += time.monotonic() - t0
    return running / max(count, 1)


def validate(run: TrainingRun) -> tuple[Optional[float], Optional[float]]:
    """(loss, action MSE) on the validation loader with the EMA weights: the mean diffusion loss (fixed
    noise) and the raw-unit error of one batch's fully denoised chunk. (None, None) without a val set."""
    import torch

    policy, ema, dev, amp = run.policy, run.opt.ema, run.dev, run.opt.amp
    if run.loaders.val is None:
        return None, None
    ema.store(policy.parameters())
    ema.copy_to(policy.parameters())
    policy.eval()
    g = torch.Generator(device=dev).manual_seed(12345)
    total, n, mse = 0.0, 0, None
    try:
        with torch.no_grad(), torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            for i, batch in enumerate(run.loaders.val):
                b = batch["action"].shape[0]
                total += float(policy.compute_loss(batch, generator=g)) * b
                n += b
                if i == 0:  # full denoising of one batch: error of the predicted chunk in raw units
                    pred = policy.predict_action(batch["obs"], generator=torch.Generator(dev).manual_seed(0))
                    mse = float(((pred.float() - batch["action"].to(dev)) ** 2).mean())
    finally:
        ema.restore(policy.parameters())
        policy.train()
    return total / max(n, 1), mse


def save_training_checkpoint(run: TrainingRun, prog: Progress, path: Path) -> Path:
    """A checkpoint directory with the EMA and raw weights, meta.json (epoch, step, losses, dataset) and
    training_state.pt (optimiser, LR schedule, EMA, scaler, RNG) for --resume."""
    import torch

    from genil_ros.policy.checkpoint import save_checkpoint

    opt = run.opt
    extra = {"epoch": prog.epoch, "global_step": prog.global_step, "train_loss": prog.last_train,
             "val_loss": prog.last_val, "world_size": run.dist.world, "dataset": dict(run.dataset_info or {})}
    ts = {"optimizer": opt.optimizer.state_dict(), "lr_scheduler": opt.lr_sched.state_dict(),
          "ema": opt.ema.state_dict(), "epoch": prog.epoch, "global_step": prog.global_step,
          "torch_rng": torch.get_rng_state()}
    if opt.scaler.is_enabled():
        ts["scaler"] = opt.scaler.state_dict()
    return save_checkpoint(path, run.policy, ema_state=_ema_state_dict(run.policy, opt.ema), cfg=run.policy.cfg,
                           extra=extra, training_state=ts)


def end_of_epoch(run: TrainingRun, prog: Progress, epoch_seconds: float, bar) -> bool:
    """Rank 0 after each epoch: the epoch's scalars and validation when due (every ``val_every_epochs``
    and at the end). Returns whether this was the last epoch."""
    tc, writer, done = run.tc, run.writer, prog.epoch
    finished = done >= run.loaders.num_epochs or prog.global_step >= prog.total_steps
    writer.add_scalar("train/epoch_loss", prog.last_train, prog.global_step)
    writer.add_scalar("train/epoch_time_s", epoch_seconds, prog.global_step)
    writer.add_scalar("train/samples_per_s", prog.samples_per_s, prog.global_step)
    if done % tc.val_every_epochs == 0 or finished:
        val, val_mse = validate(run)
        if val is not None:  # otherwise the latest value stays in last_val
            prog.last_val = val
            writer.add_scalar("val/loss", val, prog.global_step)
            writer.add_scalar("val/action_mse", val_mse, prog.global_step)
    bar.set_postfix({"loss": f"{prog.last_train:.4f}",
                     "val": f"{prog.last_val:.4f}" if prog.last_val is not None else "-",
                     "epoch": done, "samples/s": f"{prog.samples_per_s:.0f}"})
    return finished
