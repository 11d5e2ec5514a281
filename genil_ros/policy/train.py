"""`genil-ros train`: behaviour cloning of a diffusion policy on an episode store.

    genil-ros train --config config/sim_task.yaml --dataset data/sim_reach --out runs/reach
    torchrun --nproc_per_node 4 -m genil_ros.cli train --config ... --dataset ... --out ...

Output directory::

    OUT/final/                    the final checkpoint (load_policy(OUT) finds it)
    OUT/checkpoints/epoch_NNNN/   periodic checkpoints (the newest --keep are kept), with training_state.pt
    OUT/tensorboard/              train/loss, train/lr, val/loss, val/action_mse, ...

AdamW, cosine LR schedule with warm-up (diffusers), EMA weights (diffusers EMAModel, warm-up schedule),
gradient clipping, bf16/fp16 autocast on CUDA, seeded. Under torchrun (WORLD_SIZE > 1) each process
trains on its shard with DistributedDataParallel; ``train.batch_size`` is per process. Rank 0 logs,
validates and writes checkpoints.
"""

from __future__ import annotations

import math
import os
import random
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from genil_ros.errors import CheckpointError, DataError, GenilError

__all__ = ["add_arguments", "run", "train_policy", "dataset_stats", "find_resume_checkpoint"]


# --------------------------------------------------------------------------- CLI


def add_arguments(parser) -> None:
    parser.add_argument("--config", default="sim_task.yaml",
                        help="experiment YAML (a path, or a name in the package's config/; default sim_task.yaml)")
    parser.add_argument("--dataset", required=True, help="episode store directory (from `genil-ros dataset build`)")
    parser.add_argument("--out", required=True, help="output directory for checkpoints and TensorBoard logs")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.num_epochs")
    parser.add_argument("--max-steps", type=int, default=None, help="override train.max_steps (optimiser steps)")
    parser.add_argument("--batch-size", type=int, default=None, help="override train.batch_size (per process)")
    parser.add_argument("--seed", type=int, default=None, help="override train.seed")
    parser.add_argument("--num-workers", type=int, default=None, help="override train.num_workers")
    parser.add_argument("--keep", type=int, default=2, help="periodic checkpoints to keep (default 2)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    parser.add_argument("--time-limit-min", type=float, default=None,
                        help="stop after this many minutes of training and write the final checkpoint "
                             "(the LR schedule still spans the planned steps)")
    parser.add_argument("--objective", choices=["diffusion", "mse"], default=None,
                        help="override policy.objective (mse: the plain regression baseline)")


def run(args) -> int:
    from genil_ros.config import load_config
    from genil_ros.paths import config_path

    cfg = load_config(config_path(args.config))
    t = cfg.train
    for attr, key in (("epochs", "num_epochs"), ("max_steps", "max_steps"), ("batch_size", "batch_size"),
                      ("seed", "seed"), ("num_workers", "num_workers")):
        v = getattr(args, attr)
        if v is not None:
            if v < (0 if key in ("seed", "num_workers") else 1):
                raise GenilError(f"--{attr.replace('_', '-')}: {v} is out of range")
            setattr(t, key, v)
    if args.objective:
        cfg.policy.objective = args.objective

    from genil_ros.data.dataset import SequenceDataset, split_episodes
    from genil_ros.data.store import EpisodeStore

    store = EpisodeStore.open(args.dataset)
    check_store_matches(store, cfg, args.dataset)
    if store.num_episodes < 1:
        raise DataError(f"{args.dataset}: the dataset has no episodes")
    train_idx, val_idx = split_episodes(store.num_episodes, t.val_fraction, t.seed)
    if len(train_idx) == 0:
        train_idx, val_idx = list(range(store.num_episodes)), []
    horizon = cfg.task.horizon
    cams = [c.name for c in cfg.task.cameras]
    train_set = SequenceDataset(store, horizon.n_obs_steps, horizon.horizon, episodes=list(train_idx), cameras=cams)
    val_set = (SequenceDataset(store, horizon.n_obs_steps, horizon.horizon, episodes=list(val_idx), cameras=cams)
               if len(val_idx) else None)
    final = train_policy(cfg, train_set, val_set, store.stats(), args.out, device=args.device, resume=args.resume,
                         progress=not args.no_progress, keep=args.keep,
                         time_limit_s=args.time_limit_min * 60 if args.time_limit_min else None,
                         dataset_info={"path": str(Path(args.dataset).resolve()), "num_episodes": store.num_episodes,
                                       "train_episodes": [int(i) for i in train_idx],
                                       "val_episodes": [int(i) for i in val_idx]})
    if final is not None:
        print(f"final checkpoint: {final}")
    return 0


def check_store_matches(store, cfg, where) -> None:
    """The dataset must record the joints and cameras the config asks for (DataError naming what differs)."""
    meta = getattr(store, "meta", {}) or {}
    joints = meta.get("joint_names")
    if joints is not None and list(joints) != list(cfg.task.joint_names):
        raise DataError(f"{where}: dataset joint_names {list(joints)} differ from task.joint_names "
                        f"{list(cfg.task.joint_names)} in the config")
    have = {c.get("name"): c for c in meta.get("cameras", []) or []}
    for cam in cfg.task.cameras:
        if cam.name not in have:
            raise DataError(f"{where}: the dataset has no camera {cam.name!r} (task.cameras; dataset has {sorted(have)})")
        h, w = have[cam.name].get("height"), have[cam.name].get("width")
        if (h, w) != (cam.height, cam.width) and h is not None:
            raise DataError(f"{where}: camera {cam.name!r} is {w}x{h} in the dataset, the config wants "
                            f"{cam.width}x{cam.height}")
    stats = store.stats()
    for key, dim in (("state", cfg.task.state_dim), ("action", cfg.task.action_dim)):
        if key not in stats:
            raise DataError(f"{where}: the dataset has no statistics for {key!r}")
        got = len(stats[key]["min"])
        if got != dim:
            hint = " (task.use_velocity?)" if key == "state" else ""
            raise DataError(f"{where}: dataset {key} has {got} dimensions, the config expects {dim}{hint}")


# --------------------------------------------------------------------------- helpers


def dataset_stats(dataset, keys=("state", "action"), max_items: Optional[int] = None) -> dict:
    """min/max per dimension of ``obs.state`` and ``action`` over a dataset of samples (for datasets
    without an EpisodeStore; the CLI uses ``store.stats()``)."""
    import torch

    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    n = len(dataset) if max_items is None else min(len(dataset), max_items)
    for i in range(n):
        item = dataset[i]
        for k in keys:
            x = item["obs"]["state"] if k == "state" else item[k]
            x = torch.as_tensor(x).reshape(-1, x.shape[-1]).float()
            lo, hi = x.min(0).values, x.max(0).values
            mins[k] = lo if k not in mins else torch.minimum(mins[k], lo)
            maxs[k] = hi if k not in maxs else torch.maximum(maxs[k], hi)
    return {k: {"min": mins[k].numpy(), "max": maxs[k].numpy()} for k in keys}


def _step_of(ckpt: Path) -> int:
    from genil_ros.policy.checkpoint import read_meta

    try:
        return int(read_meta(ckpt).get("extra", {}).get("global_step", -1))
    except (GenilError, ValueError, TypeError):
        return -1


def find_resume_checkpoint(out: Path) -> Optional[Path]:
    """The checkpoint in ``out`` with the most optimiser steps that has a training state."""
    cands = [p for p in [out / "final", *sorted((out / "checkpoints").glob("epoch_*"))]
             if (p / "meta.json").is_file() and (p / "training_state.pt").is_file()]
    if not cands:
        return None
    return max(cands, key=_step_of)


def _seed_all(seed: int) -> None:
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


class _Dist:
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


# --------------------------------------------------------------------------- training loop


def train_policy(cfg, train_set, val_set=None, stats: Optional[Mapping] = None, out_dir="runs/policy",
                 device="auto", resume: bool = False, progress: bool = True, keep: int = 2,
                 dataset_info: Optional[Mapping] = None, log=print,
                 time_limit_s: Optional[float] = None) -> Optional[Path]:
    """Train a DiffusionPolicy on ``train_set`` (any torch Dataset of documented sample dicts).

    ``stats``: ``{"state": {"min", "max"}, "action": {...}}`` for the normalizer (default: computed
    from ``train_set``). Returns the final checkpoint directory (on rank 0; None on other ranks).
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    from genil_ros.policy.checkpoint import load_policy, load_training_state, resolve_device, save_checkpoint
    from genil_ros.policy.diffusion import DiffusionPolicy

    deadline = time.monotonic() + time_limit_s if time_limit_s else None
    tc = cfg.train
    out = Path(out_dir)
    dist_ = _Dist()
    if dist_.enabled:
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and str(device) != "cpu" else "gloo"
            dist.init_process_group(backend=backend)
        if torch.cuda.is_available() and str(device) != "cpu":
            torch.cuda.set_device(dist_.local_rank)
            dev = torch.device("cuda", dist_.local_rank)
        else:
            dev = torch.device("cpu")
    else:
        dev = resolve_device(device)

    if len(train_set) == 0:
        raise DataError("training set is empty (no samples)")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed image and chunk sizes
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---- resume or fresh start
    ckpt = None
    if resume:
        ckpt = find_resume_checkpoint(out)
        if ckpt is None and dist_.main:
            log(f"--resume: no checkpoint with a training state in {out}; starting from scratch")
    elif dist_.main and ((out / "final" / "meta.json").exists() or any((out / "checkpoints").glob("epoch_*/meta.json"))):
        raise GenilError(f"{out}: already holds checkpoints; pass --resume to continue, or choose another --out")

    _seed_all(tc.seed + dist_.rank)
    if ckpt is not None:
        policy = load_policy(ckpt, device="cpu", use_ema=False, task=cfg.task)
        if _policy_section(policy.cfg) != _policy_section(cfg):
            raise CheckpointError(f"{ckpt}: its policy section differs from the config's; resume needs the same network")
        policy.cfg.train = cfg.train
        policy.train()
        state = load_training_state(ckpt)
    else:
        policy = DiffusionPolicy(cfg)
        if stats is None:
            stats = dataset_stats(train_set)
        try:
            policy.normalizer.fit_stats(stats)
        except ValueError as e:
            raise DataError(f"dataset statistics: {e}") from None
        for key, dim in (("state", policy.state_dim), ("action", policy.action_dim)):
            if policy.normalizer.dim(key) != dim:
                raise DataError(f"dataset statistics: {key} has {policy.normalizer.dim(key)} dimensions, "
                                f"the config expects {dim}")
        state = None
    policy.to(dev)
    policy.train()

    # ---- data
    gen = torch.Generator().manual_seed(tc.seed)
    sampler = None
    if dist_.enabled:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(train_set, num_replicas=dist_.world, rank=dist_.rank, shuffle=True,
                                     seed=tc.seed, drop_last=len(train_set) >= tc.batch_size * dist_.world)
    loader_kw = dict(num_workers=tc.num_workers, pin_memory=dev.type == "cuda", worker_init_fn=_worker_init,
                     persistent_workers=tc.num_workers > 0)
    train_loader = DataLoader(train_set, batch_size=tc.batch_size, shuffle=sampler is None, sampler=sampler,
                              drop_last=len(train_set) >= tc.batch_size * dist_.world, generator=gen, **loader_kw)
    val_loader = (DataLoader(val_set, batch_size=tc.batch_size, shuffle=False, **loader_kw)
                  if val_set is not None and len(val_set) > 0 and dist_.main else None)
    steps_per_epoch = len(train_loader)
    if tc.max_steps is not None:
        total_steps = tc.max_steps
        num_epochs = math.ceil(total_steps / steps_per_epoch)
    else:
        num_epochs = tc.num_epochs
        total_steps = num_epochs * steps_per_epoch

    # ---- optimisation
    optimizer = torch.optim.AdamW(policy.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    lr_sched = get_scheduler("cosine", optimizer, num_warmup_steps=min(tc.lr_warmup_steps, total_steps),
                             num_training_steps=total_steps)
    ema = EMAModel(policy.parameters(), decay=tc.ema_decay, use_ema_warmup=True, power=tc.ema_power, foreach=True)
    amp = _amp_dtype(tc.mixed_precision, dev)
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)
    start_epoch, global_step = 0, 0
    if state is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
            lr_sched.load_state_dict(state["lr_scheduler"])
            ema.load_state_dict(state["ema"])
            if "scaler" in state and scaler.is_enabled():
                scaler.load_state_dict(state["scaler"])
            start_epoch, global_step = int(state["epoch"]), int(state["global_step"])
            if "torch_rng" in state:
                torch.set_rng_state(state["torch_rng"])
            gen.manual_seed(tc.seed + start_epoch)
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{ckpt}/training_state.pt: does not fit this run ({type(e).__name__}: {e})") from None
        ema.to(dev)
        if dist_.main:
            log(f"resuming from {ckpt} at epoch {start_epoch}, step {global_step}")
    # (On resume the LR lambda is the new one: a longer run stretches the cosine over the new total.)

    model = policy
    if dist_.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # buffers (normalizer, ImageNet mean/std) are constants, identical on every rank: no broadcast
        model = DDP(policy, device_ids=[dev.index] if dev.type == "cuda" else None, broadcast_buffers=False)

    writer = None
    if dist_.main:
        out.mkdir(parents=True, exist_ok=True)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"))
        n_params = sum(p.numel() for p in policy.parameters())
        log(f"training on {dev} (x{dist_.world}), {len(train_set)} samples, {steps_per_epoch} steps/epoch, "
            f"{num_epochs} epochs, {total_steps} steps, {n_params / 1e6:.2f}M parameters, "
            f"mixed precision {str(amp).replace('torch.', '') if amp else 'off'}")

    def save(path: Path, epoch: int, val_loss: Optional[float], train_loss: Optional[float]) -> Path:
        extra = {"epoch": epoch, "global_step": global_step, "train_loss": train_loss, "val_loss": val_loss,
                 "world_size": dist_.world, "dataset": dict(dataset_info or {})}
        ts = {"optimizer": optimizer.state_dict(), "lr_scheduler": lr_sched.state_dict(), "ema": ema.state_dict(),
              "epoch": epoch, "global_step": global_step, "torch_rng": torch.get_rng_state()}
        if scaler.is_enabled():
            ts["scaler"] = scaler.state_dict()
        return save_checkpoint(path, policy, ema_state=_ema_state_dict(policy, ema), cfg=policy.cfg, extra=extra,
                               training_state=ts)

    def validate() -> tuple[Optional[float], Optional[float]]:
        if val_loader is None:
            return None, None
        ema.store(policy.parameters())
        ema.copy_to(policy.parameters())
        policy.eval()
        g = torch.Generator(device=dev).manual_seed(12345)
        total, n, mse = 0.0, 0, None
        try:
            with torch.no_grad(), torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                for i, batch in enumerate(val_loader):
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

    # ---- loop
    bar = tqdm(total=total_steps, initial=global_step, desc="train", unit="step", dynamic_ncols=True,
               disable=not (progress and dist_.main), file=sys.stderr)
    last_train, last_val = None, None
    done = start_epoch
    final_path = None
    try:
        for epoch in range(start_epoch, num_epochs):
            if global_step >= total_steps:
                break
            if sampler is not None:
                sampler.set_epoch(epoch)
            t0, running, count = time.time(), 0.0, 0
            for batch in train_loader:
                with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                    loss = model(batch)
                if not torch.isfinite(loss):
                    raise GenilError(f"training diverged: loss is {loss.item()} at step {global_step} "
                                     "(lower train.lr, or check the dataset statistics)")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                gnorm = torch.nn.utils.clip_grad_norm_(policy.parameters(), tc.grad_clip_norm)
                scaler.step(optimizer)
                scaler.update()
                lr_sched.step()
                ema.step(policy.parameters())
                global_step += 1
                lv = float(loss.detach())
                running += lv
                count += 1
                bar.update(1)
                if writer is not None and (global_step % tc.log_every_steps == 0 or global_step == 1):
                    writer.add_scalar("train/loss", lv, global_step)
                    writer.add_scalar("train/lr", lr_sched.get_last_lr()[0], global_step)
                    writer.add_scalar("train/grad_norm", float(gnorm), global_step)
                    writer.add_scalar("train/ema_decay", ema.cur_decay_value or 0.0, global_step)
                    bar.set_postfix(loss=f"{lv:.4f}", epoch=epoch + 1)
                if global_step >= total_steps:
                    break
                if deadline is not None and not dist_.enabled and time.monotonic() > deadline:  # (DDP: ranks would disagree)
                    if dist_.main:
                        log(f"time limit reached at step {global_step} of {total_steps}; finishing")
                    total_steps = global_step  # every rank stops after this epoch's bookkeeping
                    break
            last_train = running / max(count, 1)
            done = epoch + 1
            if dist_.main:
                finished = done >= num_epochs or global_step >= total_steps
                writer.add_scalar("train/epoch_loss", last_train, global_step)
                writer.add_scalar("train/epoch_time_s", time.time() - t0, global_step)
                if done % tc.val_every_epochs == 0 or finished:
                    val, val_mse = validate()
                    if val is not None:  # otherwise the latest value stays in last_val
                        last_val = val
                        writer.add_scalar("val/loss", val, global_step)
                        writer.add_scalar("val/action_mse", val_mse, global_step)
                bar.set_postfix(loss=f"{last_train:.4f}", val=f"{last_val:.4f}" if last_val is not None else "-",
                                epoch=done)
                if done % tc.checkpoint_every_epochs == 0 and not finished:
                    save(out / "checkpoints" / f"epoch_{done:04d}", done, last_val, last_train)
                    _prune(out / "checkpoints", keep)
            dist_.barrier()
        if dist_.main:
            final_path = save(out / "final", done, last_val, last_train)
            writer.flush()
            log(f"done: {global_step} steps, train loss {last_train if last_train is None else round(last_train, 5)}, "
                f"val loss {last_val if last_val is None else round(last_val, 5)}")
        dist_.barrier()
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        if dist_.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    return final_path


def _prune(folder: Path, keep: int) -> None:
    if keep < 1:
        return
    ckpts = sorted(p for p in folder.glob("epoch_*") if re.fullmatch(r"epoch_\d+", p.name))
    for p in ckpts[:-keep]:
        shutil.rmtree(p, ignore_errors=True)
