"""`genil-ros train`: behaviour cloning of a diffusion policy on an episode store.

    genil-ros train --config config/sim_task.yaml --dataset data/sim_reach --out runs/reach
    torchrun --nproc_per_node 4 -m genil_ros.cli train --config ... --dataset ... --out ...

Output directory::

    OUT/final/                    the final checkpoint (load_policy(OUT) finds it)
    OUT/checkpoints/epoch_NNNN/   periodic checkpoints (the newest --keep are kept), with training_state.pt
    OUT/tensorboard/              train/loss, train/lr, val/loss, val/action_mse, train/samples_per_s, ...

Checkpoints are saved atomically (``genil_ros.fileio``): only finished names (``final``, ``epoch_NNNN``)
are checkpoints. ``--resume`` continues from the one with the most optimiser steps, after tidying what a
killed save left (``epoch_NNNN.tmp-<pid>`` removed, a moved-aside ``final.old-<pid>`` renamed back).

The steps, each a module-level function: :func:`build_policy` (fresh, or from the resume checkpoint),
:func:`build_loaders`, :func:`build_optimisation` (+ :func:`restore_training_state`), then per epoch
:func:`train_one_epoch` (one :func:`update_policy` per batch), :func:`validate` and
:func:`save_training_checkpoint`; :func:`train_policy` is the loop that calls them.

AdamW, cosine LR schedule with warm-up (diffusers), EMA weights (diffusers EMAModel, warm-up schedule),
gradient clipping, bf16/fp16 autocast on CUDA, seeded. Under torchrun (WORLD_SIZE > 1) each process
trains on its shard with DistributedDataParallel; ``train.batch_size`` is per process. Rank 0 logs,
validates and writes checkpoints.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Mapping, Optional

from genil_ros.errors import DataError, GenilError
from genil_ros.fileio import clean_stale, is_temp_name
from genil_ros.policy.train_steps import (
    Dist,
    Progress,
    TrainingRun,
    build_loaders,
    build_optimisation,
    build_policy,
    dataset_stats,
    end_of_epoch,
    restore_training_state,
    save_training_checkpoint,
    seed_all,
    setup_device,
    train_one_epoch,
)

__all__ = ["add_arguments", "run", "train_policy", "dataset_stats", "find_resume_checkpoint",
           "finished_checkpoints", "recover_killed_saves"]


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
    if Dist().main:
        print(f"episodes: {len(train_idx)} for training, {len(val_idx)} held out for validation "
              f"(train.val_fraction = {t.val_fraction:g} of {store.num_episodes}): {[int(i) for i in val_idx]}",
              flush=True)
    horizon, lay = cfg.task.horizon, cfg.task.layout  # state / action: the config's entries, in its order
    train_set = SequenceDataset(store, horizon.n_obs_steps, horizon.horizon, episodes=list(train_idx), layout=lay)
    val_set = (SequenceDataset(store, horizon.n_obs_steps, horizon.horizon, episodes=list(val_idx), layout=lay)
               if len(val_idx) else None)
    final = train_policy(cfg, train_set, val_set, store.stats(lay), args.out, device=args.device, resume=args.resume,
                         progress=not args.no_progress, keep=args.keep,
                         time_limit_s=args.time_limit_min * 60 if args.time_limit_min else None,
                         dataset_info={"path": str(Path(args.dataset).resolve()), "num_episodes": store.num_episodes,
                                       "train_episodes": [int(i) for i in train_idx],
                                       "val_episodes": [int(i) for i in val_idx]})
    if final is not None:
        print(f"final checkpoint: {final}")
    return 0


def check_store_matches(store, cfg, where) -> None:
    """Every entry and camera of the config's task must be in the dataset with the same type, dimensions
    and meaning (it may hold more); DataError naming the entry or camera."""
    store.check_layout(cfg.task.layout, where=str(where))
    have = {c.get("name"): c for c in store.meta.get("cameras", []) or []}
    for cam in cfg.task.camera_entries:
        h, w = have[cam.name].get("height"), have[cam.name].get("width")
        if (h, w) != (cam.height, cam.width) and h is not None:
            raise DataError(f"{where}: camera {cam.name!r} is {w}x{h} in the dataset, the config wants "
                            f"{cam.width}x{cam.height}")


# --------------------------------------------------------------------------- checkpoints of a run

_PERIODIC = re.compile(r"epoch_\d+")


def finished_checkpoints(out: Path) -> list[Path]:
    """The checkpoints a run in ``out`` has finished: ``final`` and ``checkpoints/epoch_NNNN``. A save is
    atomic by rename, so a temp (``epoch_NNNN.tmp-<pid>``) or moved-aside (``.old-<pid>``) directory is
    never one, whatever files it holds."""
    out = Path(out)
    periodic = out / "checkpoints"
    cands = [out / "final"]
    if periodic.is_dir():
        cands += sorted(p for p in periodic.iterdir() if _PERIODIC.fullmatch(p.name))
    return [p for p in cands if p.is_dir() and (p / "meta.json").is_file()]


def recover_killed_saves(out: Path) -> list[str]:
    """Tidy what saves killed mid-way left in ``out`` and ``out/checkpoints``: a moved-aside directory
    whose checkpoint is missing (killed between the two renames) gets its name back - it is the complete
    previous save -; temp directories of processes that are gone are removed. Returns what was done."""
    done = []
    for folder in (Path(out), Path(out) / "checkpoints"):
        if not folder.is_dir():
            continue
        leftovers = sorted(p for p in folder.iterdir() if is_temp_name(p.name))
        for p in leftovers:
            target = folder / re.split(r"\.(?:tmp|old)-", p.name)[0]
            if ".old-" in p.name and p.is_dir() and not target.exists():
                os.replace(p, target)
                done.append(f"restored {target.name} from {p.name}")
        for target in sorted({folder / re.split(r"\.(?:tmp|old)-", p.name)[0] for p in leftovers}):
            done += [f"removed {q.name} (left by a killed save)" for q in clean_stale(target)]
    return done


def _step_of(ckpt: Path) -> int:
    from genil_ros.policy.checkpoint import read_meta

    try:
        return int(read_meta(ckpt).get("extra", {}).get("global_step", -1))
    except (GenilError, ValueError, TypeError):
        return -1


def find_resume_checkpoint(out: Path) -> Optional[Path]:
    """The finished checkpoint in ``out`` with the most optimiser steps that has a training state."""
    cands = [p for p in finished_checkpoints(out) if (p / "training_state.pt").is_file()]
    if not cands:
        return None
    return max(cands, key=_step_of)


def _prune(folder: Path, keep: int) -> None:
    if keep < 1:
        return
    ckpts = sorted(p for p in folder.glob("epoch_*") if _PERIODIC.fullmatch(p.name))
    for p in ckpts[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


# --------------------------------------------------------------------------- the loop


def train_policy(cfg, train_set, val_set=None, stats: Optional[Mapping] = None, out_dir="runs/policy",
                 device="auto", resume: bool = False, progress: bool = True, keep: int = 2,
                 dataset_info: Optional[Mapping] = None, log=print,
                 time_limit_s: Optional[float] = None) -> Optional[Path]:
    """Train a DiffusionPolicy on ``train_set`` (any torch Dataset of documented sample dicts).

    ``stats``: ``{"state": {"min", "max"}, "action": {...}}`` for the normalizer (default: computed
    from ``train_set``). Returns the final checkpoint directory (on rank 0; None on other ranks).
    """
    import torch
    from tqdm.auto import tqdm

    deadline = time.monotonic() + time_limit_s if time_limit_s else None
    tc = cfg.train
    out = Path(out_dir)
    dist_ = Dist()
    dev = setup_device(device, dist_)
    if len(train_set) == 0:
        raise DataError("training set is empty (no samples)")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed image and chunk sizes
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---- resume or fresh start
    ckpt = None
    if resume:
        if dist_.main:
            for note in recover_killed_saves(out):
                log(f"--resume: {note}")
        dist_.barrier()
        ckpt = find_resume_checkpoint(out)
        if ckpt is None and dist_.main:
            log(f"--resume: no checkpoint with a training state in {out}; starting from scratch")
    elif dist_.main and finished_checkpoints(out):
        raise GenilError(f"{out}: already holds checkpoints; pass --resume to continue, or choose another --out")

    seed_all(tc.seed + dist_.rank)
    policy, state = build_policy(cfg, train_set, stats, ckpt)
    policy.to(dev)
    policy.train()
    loaders = build_loaders(tc, train_set, val_set, dist_, dev)
    opt = build_optimisation(policy, tc, loaders.total_steps, dev)
    prog = Progress(epoch=0, global_step=0, total_steps=loaders.total_steps)
    if state is not None:
        prog.epoch, prog.global_step = restore_training_state(opt, state, loaders, tc.seed, ckpt, dev)
        if dist_.main:
            log(f"resuming from {ckpt} at epoch {prog.epoch}, step {prog.global_step}")

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
        log(f"training on {dev} (x{dist_.world}), {len(train_set)} samples, {loaders.steps_per_epoch} steps/epoch, "
            f"{loaders.num_epochs} epochs, {loaders.total_steps} steps, {n_params / 1e6:.2f}M parameters, "
            f"mixed precision {str(opt.amp).replace('torch.', '') if opt.amp else 'off'}")
    run = TrainingRun(tc, policy, model, loaders, opt, dev, dist_, out, writer, log, deadline, dataset_info or {})

    bar = tqdm(total=loaders.total_steps, initial=prog.global_step, desc="train", unit="step", dynamic_ncols=True,
               disable=not (progress and dist_.main), file=sys.stderr)
    final_path = None
    try:
        for epoch in range(prog.epoch, loaders.num_epochs):
            if prog.global_step >= prog.total_steps:
                break
            t0 = time.monotonic()
            prog.last_train = train_one_epoch(run, prog, epoch, bar)
            prog.epoch = epoch + 1
            if dist_.main:
                finished = end_of_epoch(run, prog, time.monotonic() - t0, bar)
                if prog.epoch % tc.checkpoint_every_epochs == 0 and not finished:
                    save_training_checkpoint(run, prog, out / "checkpoints" / f"epoch_{prog.epoch:04d}")
                    _prune(out / "checkpoints", keep)
            dist_.barrier()
        if dist_.main:
            final_path = save_training_checkpoint(run, prog, out / "final")
            writer.flush()
            log(f"done: {prog.global_step} steps, train loss "
                f"{prog.last_train if prog.last_train is None else round(prog.last_train, 5)}, val loss "
                f"{prog.last_val if prog.last_val is None else round(prog.last_val, 5)}; throughput "
                f"{prog.samples_per_s:.1f} samples/s ({prog.samples} samples in {prog.train_seconds:.1f} s of "
                f"training steps, x{dist_.world} process(es))")
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
