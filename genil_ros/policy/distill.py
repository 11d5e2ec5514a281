"""`genil-ros distill`: consistency distillation of a trained diffusion policy into a 1-2 step sampler.

    genil-ros distill --checkpoint models/sim_obstacle_dp --dataset out/ds_obstacle --out runs/distilled
    genil-ros eval --checkpoint runs/distilled --episodes 100

The student is the teacher's network, trained so that one pass maps a noisy chunk at any timestep of the
teacher's DDIM grid (``sampler.CONSISTENCY_GRID`` steps: 90, 80, ..., 0 of 100) straight to where the
teacher's DDIM chain would end (Song et al. 2023, consistency distillation; the boundary-condition
scalings of latent consistency models). Per step, for a batch of dataset chunks ``x0`` and their
observations: pick a grid timestep ``t > 0``, noise ``x0`` to ``x_t``, let the teacher take one DDIM step
to ``s = t - 10`` (clipping as its sampler does) and regress the student's consistency function at
``(x_t, t)`` onto a slowly moving copy of the student (the target network, EMA ``--target-ema``) at
``(x_s, s)``. At ``s = 0`` the target is ``x_s`` itself (``f(x, 0) = x``), which anchors the chain.

The observation encoder is the teacher's, frozen: the conditioning of every dataset sample (centre crop,
as at inference) is computed once and cached in ``OUT/features.safetensors`` (reused while the teacher's
weights and the dataset are the same). Only the U-Net is trained, starting from the teacher's weights.

Output (atomic directories, as ``genil-ros train``)::

    OUT/final/                      the distilled policy: a normal checkpoint (config: inference_scheduler
                                    consistency, --sampler-steps steps; meta.extra.distill says from what)
    OUT/checkpoints/step_NNNNNNN/   periodic checkpoints with training_state.pt (--resume continues from the
                                    newest; --keep of them are kept)
    OUT/features.safetensors        the cached conditioning

The policy node and ``genil-ros eval`` load it like any checkpoint; ``ema.safetensors`` holds an EMA of
the student (``--ema-decay``, what ``load_policy`` uses), ``model.safetensors`` the student itself.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from genil_ros.errors import CheckpointError, DataError, GenilError

__all__ = ["DistillSettings", "ConsistencyDistiller", "encode_dataset", "distill", "add_arguments", "run"]

_PERIODIC = re.compile(r"step_\d{7}")
FEATURES = "features.safetensors"


@dataclass
class DistillSettings:
    steps: int = 3000  # optimiser steps
    batch_size: int = 64
    lr: float = 5e-5  # AdamW, constant after a linear warm-up of warmup_steps
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip_norm: float = 1.0
    target_ema: float = 0.95  # the target network: target <- target_ema * target + (1 - target_ema) * student
    ema_decay: float = 0.999  # the saved inference weights (diffusers EMAModel with warm-up)
    sampler_steps: int = 1  # the distilled policy's default number of consistency steps
    checkpoint_every: int = 500
    seed: int = 0

    def check(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise GenilError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise GenilError(f"--lr: must be > 0, got {self.lr}")
        for name in ("target_ema", "ema_decay"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise GenilError(f"--{name.replace('_', '-')}: must be in [0, 1), got {getattr(self, name)}")


class ConsistencyDistiller:
    """The teacher's U-Net (frozen), the student's and the target network, and the distillation loss."""

    def __init__(self, teacher, student):
        import torch

        from genil_ros.policy.sampler import ConsistencySampler, supports_fast_ddim

        sched = teacher.inference_scheduler if supports_fast_ddim(teacher.inference_scheduler) else None
        if sched is None:
            from genil_ros.policy.diffusion import make_scheduler

            pc = teacher.cfg.policy
            sched = make_scheduler("ddim", pc.num_train_timesteps, pc.beta_schedule, pc.prediction_type)
        self.sampler = ConsistencySampler(sched)
        self.grid = [t for t in self.sampler.grid if t > 0]  # the student is trained at these timesteps
        if len(self.sampler.grid) < 2:
            raise GenilError("consistency distillation needs a DDIM grid of at least 2 timesteps")
        self.step_to = {t: s for t, s in zip(self.sampler.grid, self.sampler.grid[1:])}
        self.prediction_type = sched.config.prediction_type
        self.clip = float(sched.config.clip_sample_range) if sched.config.clip_sample else None
        dev = student.device
        self.alphas = sched.alphas_cumprod.to(dev, torch.float32)
        self.teacher = teacher.model.eval().requires_grad_(False)
        self.student = student.model
        self.target = copy.deepcopy(self.student).eval().requires_grad_(False)
        self.device = dev

    def _coef(self, t):
        a = self.alphas[t].view(-1, 1, 1)
        return a.sqrt(), (1 - a).sqrt()

    def consistency(self, net, x, t, cond):
        """f(x, t) = c_skip(t) x + c_out(t) x0(net(x, t, cond)) per sample (``t``: (B,) int64)."""
        from genil_ros.policy.sampler import boundary_scalings, predicted_clean

        sa, sb = self._coef(t)
        x0 = predicted_clean(self.prediction_type, net(x, t, cond).float(), x, sa, sb)
        c_skip, c_out = boundary_scalings(t.float().view(-1, 1, 1))
        return c_skip * x + c_out * x0

    def loss(self, x0, cond, generator):
        """The distillation loss on clean normalised chunks ``x0`` (B, T_p, A) with conditioning ``cond``."""
        import torch
        import torch.nn.functional as F

        from genil_ros.policy.sampler import predicted_clean

        B = x0.shape[0]
        grid = torch.tensor(self.grid, device=self.device)
        t = grid[torch.randint(0, len(self.grid), (B,), generator=generator, device=generator.device)
                 .to(self.device)]
        s = torch.tensor([self.step_to[int(v)] for v in t.tolist()], device=self.device)
        noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(self.device)
        sa_t, sb_t = self._coef(t)
        x_t = sa_t * x0 + sb_t * noise
        with torch.no_grad():  # one DDIM step of the teacher, t -> s, as its sampler takes it
            eps_or_out = self.teacher(x_t, t, cond).float()
            x0_teacher = predicted_clean(self.prediction_type, eps_or_out, x_t, sa_t, sb_t)
            if self.clip is not None:
                x0_teacher = x0_teacher.clamp(-self.clip, self.clip)
            eps = {"epsilon": eps_or_out}.get(self.prediction_type)
            if eps is None:
                eps = (x_t - sa_t * x0_teacher) / sb_t
            sa_s, sb_s = self._coef(s)
            x_s = sa_s * x0_teacher + sb_s * eps
            target = self.consistency(self.target, x_s, s, cond)
        pred = self.consistency(self.student, x_t, t, cond)
        return F.mse_loss(pred, target)

    def update_target(self, decay: float) -> None:
        import torch

        with torch.no_grad():
            for tp, sp in zip(self.target.parameters(), self.student.parameters()):
                tp.mul_(decay).add_(sp.detach(), alpha=1 - decay)


# --------------------------------------------------------------------------- the conditioning cache


def encode_dataset(teacher, dataset, batch_size: int = 64, progress: bool = True):
    """(cond (N, G), normalised actions (N, T_p, A)) of every sample, with the teacher's encoder in eval
    mode (centre crop)."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    conds, acts = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    teacher.eval()
    with torch.no_grad():
        for batch in tqdm(loader, desc="encoding observations", unit="batch", disable=not progress,
                          file=sys.stderr):
            conds.append(teacher.encode_obs(batch["obs"]).float().cpu())
            acts.append(teacher.normalizer.normalize("action", batch["action"].float()).clamp(-1, 1).cpu())
    return torch.cat(conds), torch.cat(acts)


def _features(teacher, dataset, out: Path, key: dict, progress: bool):
    """The cached conditioning in ``out/features.safetensors`` when it was made for ``key``, else encode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    from genil_ros.fileio import atomic_path

    f = out / FEATURES
    want = json.dumps(key, sort_keys=True)
    if f.is_file():
        try:
            from safetensors import safe_open

            with safe_open(str(f), "pt") as h:
                made_for = (h.metadata() or {}).get("key")
            if made_for == want:
                d = load_file(str(f))
                return d["cond"], d["action"]
        except (SafetensorError, OSError, KeyError, ValueError):
            pass  # unreadable or another teacher / dataset: encode again
    cond, action = encode_dataset(teacher, dataset, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(f) as tmp:
        save_file({"cond": cond.contiguous(), "action": action.contiguous()}, str(tmp), metadata={"key": want})
    return cond, action


# --------------------------------------------------------------------------- checkpoints of a run


def _finished(out: Path) -> list[Path]:
    periodic = out / "checkpoints"
    cands = [out / "final"] + (sorted(p for p in periodic.iterdir() if _PERIODIC.fullmatch(p.name))
                               if periodic.is_dir() else [])
    return [p for p in cands if (p / "meta.json").is_file() and (p / "training_state.pt").is_file()]


def _resume_point(out: Path) -> Optional[Path]:
    from genil_ros.policy.checkpoint import read_meta

    def step_of(p: Path) -> int:
        try:
            return int(read_meta(p).get("extra", {}).get("distill", {}).get("step", -1))
        except (GenilError, ValueError, TypeError, AttributeError):
            return -1

    cands = _finished(out)
    return max(cands, key=step_of) if cands else None


def _save(path: Path, student, distiller, ema, opt, gen, step: int, info: dict) -> Path:
    from genil_ros.policy.checkpoint import save_checkpoint

    sd = dict(student.state_dict())
    names = [f"model.{n}" for n, _ in student.model.named_parameters()]
    for n, p in zip(names, ema.shadow_params):
        sd[n] = p.detach()
    ts = {"optimizer": opt.state_dict(), "target": distiller.target.state_dict(), "ema": ema.state_dict(),
          "step": step, "generator": gen.get_state()}
    return save_checkpoint(path, student, ema_state=sd, cfg=student.cfg, extra={"distill": dict(info, step=step)},
                           training_state=ts)


# --------------------------------------------------------------------------- the loop


def distill(checkpoint, dataset_dir, out_dir, settings: Optional[DistillSettings] = None, device: str = "auto",
            resume: bool = False, progress: bool = True, keep: int = 2, log=print) -> Path:
    """Distil the policy in ``checkpoint`` on the dataset in ``dataset_dir`` into ``out_dir``; returns
    ``out_dir/final``."""
    import torch
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from genil_ros.data.dataset import SequenceDataset
    from genil_ros.data.store import EpisodeStore
    from genil_ros.paths import model_path
    from genil_ros.policy.checkpoint import load_policy, load_training_state, resolve_checkpoint_dir
    from genil_ros.policy.onnx_export import weights_digest
    from genil_ros.policy.train import check_store_matches, recover_killed_saves

    st = settings or DistillSettings()
    st.check()
    out = Path(out_dir)
    src = resolve_checkpoint_dir(model_path(str(checkpoint)))
    teacher = load_policy(src, device=device, use_ema=True)
    if teacher.objective != "diffusion":
        raise CheckpointError(f"{src}: policy.objective is {teacher.objective!r}; only diffusion policies distil")
    if teacher.cfg.policy.inference_scheduler == "consistency":
        raise CheckpointError(f"{src}: already a distilled (consistency) policy; distil its teacher")
    if st.sampler_steps > teacher.cfg.policy.num_train_timesteps:
        raise GenilError(f"--sampler-steps {st.sampler_steps}: more than the schedule's timesteps")
    store = EpisodeStore.open(dataset_dir)
    check_store_matches(store, teacher.cfg, dataset_dir)
    if store.num_episodes < 1:
        raise DataError(f"{dataset_dir}: the dataset has no episodes")
    h = teacher.cfg.task.horizon
    data = SequenceDataset(store, h.n_obs_steps, h.horizon, cameras=[c.name for c in teacher.cfg.task.cameras])
    teacher_digest = weights_digest(teacher)
    info = {"teacher": str(src), "teacher_weights_sha256": teacher_digest,
            "dataset": str(Path(dataset_dir).resolve()), "samples": len(data),
            "settings": {k: getattr(st, k) for k in st.__dataclass_fields__}}

    start = None
    if resume:
        for note in recover_killed_saves(out):
            log(f"--resume: {note}")
        start = _resume_point(out)
        if start is None:
            log(f"--resume: no distillation checkpoint in {out}; starting from the teacher")
    elif _finished(out) or (out / "final").exists():
        raise GenilError(f"{out}: already holds a distillation; pass --resume to continue, or choose another --out")

    key = {"teacher_weights_sha256": teacher_digest, "dataset": info["dataset"], "samples": len(data),
           "dataset_created": store.meta.get("created")}
    cond_all, act_all = _features(teacher, data, out, key, progress)
    cond_all, act_all = cond_all.to(teacher.device), act_all.to(teacher.device)

    student = copy.deepcopy(teacher)
    student.cfg.policy.inference_scheduler = "consistency"
    student.cfg.policy.num_inference_steps = st.sampler_steps
    student.set_inference("consistency", st.sampler_steps)
    state = None
    if start is not None:
        prev = load_policy(start, device=teacher.device, use_ema=False)
        if weights_digest(prev.obs_encoder) != weights_digest(teacher.obs_encoder):
            raise CheckpointError(f"{start}: distilled from another teacher than {src}")
        student.model.load_state_dict(prev.model.state_dict())
        state = load_training_state(start)
    student.obs_encoder.requires_grad_(False)
    student.model.train()
    distiller = ConsistencyDistiller(teacher, student)
    params = list(student.model.parameters())
    opt = torch.optim.AdamW(params, lr=st.lr, weight_decay=st.weight_decay)
    ema = EMAModel(params, decay=st.ema_decay, use_ema_warmup=True, power=0.75, foreach=True)
    gen = torch.Generator().manual_seed(st.seed)
    step = 0
    if state is not None:
        try:
            opt.load_state_dict(state["optimizer"])
            distiller.target.load_state_dict(state["target"])
            ema.load_state_dict(state["ema"])
            ema.to(teacher.device)
            gen.set_state(state["generator"])
            step = int(state["step"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{start}/training_state.pt: does not fit this run ({type(e).__name__}: {e})") \
                from None
        log(f"resuming from {start} at step {step}")
    n = cond_all.shape[0]
    log(f"distilling {src} on {n} samples of {dataset_dir}: {st.steps} steps of batch {st.batch_size} on "
        f"{teacher.device}; consistency grid {distiller.sampler.grid}, default {st.sampler_steps} step(s)")
    bar = tqdm(total=st.steps, initial=step, desc="distill", unit="step", dynamic_ncols=True, disable=not progress,
               file=sys.stderr)
    t_run, samples, last = 0.0, 0, math.nan
    try:
        while step < st.steps:
            t0 = time.monotonic()
            idx = torch.randint(0, n, (st.batch_size,), generator=gen).to(teacher.device)
            for g in opt.param_groups:
                g["lr"] = st.lr * min(1.0, (step + 1) / max(1, st.warmup_steps))
            loss = distiller.loss(act_all[idx], cond_all[idx], gen)
            if not torch.isfinite(loss):
                raise GenilError(f"distillation diverged: loss is {loss.item()} at step {step} (lower --lr)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, st.grad_clip_norm)
            opt.step()
            distiller.update_target(st.target_ema)
            ema.step(params)
            step += 1
            t_run += time.monotonic() - t0
            samples += st.batch_size
            last = float(loss.detach())
            bar.update(1)
            bar.set_postfix({"loss": f"{last:.5f}", "samples/s": f"{samples / t_run:.0f}"})
            if step % st.checkpoint_every == 0 and step < st.steps:
                _save(out / "checkpoints" / f"step_{step:07d}", student, distiller, ema, opt, gen, step,
                      dict(info, loss=last))
                ckpts = sorted(p for p in (out / "checkpoints").iterdir() if _PERIODIC.fullmatch(p.name))
                for p in ckpts[:-keep] if keep > 0 else []:
                    shutil.rmtree(p, ignore_errors=True)
    finally:
        bar.close()
    final = _save(out / "final", student, distiller, ema, opt, gen, step, dict(info, loss=last))
    log(f"done: {step} steps, last loss {last:.5f}, {samples / max(t_run, 1e-9):.0f} samples/s; "
        f"distilled policy in {final} (consistency, {st.sampler_steps} step(s))")
    return final


# --------------------------------------------------------------------------- CLI


def add_arguments(parser) -> None:
    d = DistillSettings()
    parser.add_argument("--checkpoint", required=True, help="the teacher: a diffusion policy checkpoint or model name")
    parser.add_argument("--dataset", required=True, help="episode store of the teacher's task (`dataset build`)")
    parser.add_argument("--out", required=True, help="output directory (final/, checkpoints/, features cache)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--steps", type=int, default=d.steps, help=f"optimiser steps (default {d.steps})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--target-ema", type=float, default=d.target_ema,
                        help="decay of the target network the student is regressed onto")
    parser.add_argument("--ema-decay", type=float, default=d.ema_decay, help="decay of the saved EMA weights")
    parser.add_argument("--sampler-steps", type=int, default=d.sampler_steps,
                        help="consistency steps the distilled policy samples with by default (1 or 2)")
    parser.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints")
    parser.add_argument("--keep", type=int, default=2, help="periodic checkpoints to keep")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from genil_ros.policy.threads import set_process_env

    if "torch" not in sys.modules:
        set_process_env(0)
    st = DistillSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr, target_ema=args.target_ema,
                         ema_decay=args.ema_decay, sampler_steps=args.sampler_steps,
                         checkpoint_every=args.checkpoint_every, seed=args.seed)
    final = distill(args.checkpoint, args.dataset, args.out, st, device=args.device, resume=args.resume,
                    progress=not args.no_progress, keep=args.keep)
    print(f"final checkpoint: {final}")
    return 0
