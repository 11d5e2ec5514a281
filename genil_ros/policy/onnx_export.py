"""ONNX export of a checkpoint's networks, with checksums tying them to its weights.

    genil-ros export --format onnx --checkpoint models/sim_obstacle_dp [--out DIR]
    python -m genil_ros.policy.onnx_export models/sim_obstacle_dp [--out DIR]

writes, next to the checkpoint (default ``<checkpoint>/onnx``, written atomically as one directory)::

    camera_<name>.onnx  per camera: frames (N, 3, H, W) uint8 -> features (N, F): its image encoder
                     (the policy assembles the features with the normalised state into global_cond,
                     and can cache a frame's features: they depend on that frame only)
    film.onnx        timestep (B,) int64, global_cond (B, G) -> film (B, F): every U-Net block's FiLM
                     scale and bias (the part of the denoiser that does not depend on the sample)
    unet.onnx        sample (B, T_p, A) float32, film (B, F) -> (B, T_p, A)   (the U-Net body)
    export.json      format_version, sha256 of the files, weights_sha256 (a digest of the weights they
                     were made from), shapes, opset, versions, the torch-vs-ONNX Runtime difference found
    SHA256SUMS       the same checksums for ``sha256sum -c``

The denoiser is ``unet(sample, film(timestep, global_cond))``; split in two, a chunk's FiLM vectors are
computed once for all its steps. The scheduler is not exported: sampling stays in torch with diffusers'
schedule (policy/sampler.py). Format 1 (encoder.onnx + denoiser.onnx) is refused with a request to
export again.
:func:`read_onnx_export` (used by the onnxruntime backend) refuses files whose checksums or weight
digest do not match the policy it is asked to serve. The batch axis is dynamic.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from genil_ros.errors import CheckpointError

__all__ = ["EXPORT_FORMAT", "NoExport", "FILM", "UNET", "META", "OnnxExport", "camera_file", "network_files",
           "export_onnx", "read_onnx_export", "weights_digest", "default_onnx_dir", "add_arguments", "run", "main"]

EXPORT_FORMAT = 2


class NoExport(CheckpointError):
    """The checkpoint has no ONNX export (the usual case until ``genil-ros export`` is run: not a fault)."""
FILM, UNET, META, SUMS = "film.onnx", "unet.onnx", "export.json", "SHA256SUMS"


def camera_file(name: str) -> str:
    return f"camera_{name}.onnx"


def network_files(policy) -> list[str]:
    """The ONNX files of ``policy``'s export: one image encoder per camera, then the FiLM and U-Net graphs."""
    return [camera_file(n) for n in policy.camera_names] + [FILM, UNET]
OPSET = 18
TOLERANCE = 1e-4  # max |torch - ONNX Runtime| accepted at export, normalised units (float32 rounding is ~1e-6)

PathLike = Union[str, Path]


def weights_digest(policy) -> str:
    """sha256 over the policy's weights as float32 (names, shapes, bytes, in name order): equal for equal
    weights whatever file or dtype they were loaded from."""
    h = hashlib.sha256()
    for name, t in sorted(policy.state_dict().items()):
        t = t.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(torch.float32)
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_onnx_dir(checkpoint_dir: PathLike) -> Path:
    return Path(checkpoint_dir) / "onnx"


class _FramesGraph(nn.Module):
    """ObsEncoder.encode_frames of one camera: frames -> features."""

    def __init__(self, obs_encoder, name: str):
        super().__init__()
        self.obs_encoder = obs_encoder
        self.name = name

    def forward(self, frames):
        return self.obs_encoder.encode_frames(self.name, frames)


class _FilmGraph(nn.Module):
    """ConditionalUnet1D.film: (timestep, global_cond) -> every block's FiLM vector."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, timestep, global_cond):
        return self.model.film(timestep, global_cond)


class _UnetGraph(nn.Module):
    """ConditionalUnet1D.forward_film: (sample, film) -> network output."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, sample, film):
        return self.model.forward_film(sample, film)


def _shapes(policy) -> dict:
    return {"state_dim": policy.state_dim, "action_dim": policy.action_dim, "n_obs_steps": policy.n_obs_steps,
            "horizon": policy.horizon, "global_cond_dim": policy.obs_encoder.output_dim,
            "film_dim": policy.model.film_dim,
            "cameras": [{"name": n, "height": h, "width": w} for n, (h, w) in policy.obs_encoder.camera_sizes.items()]}


def _example_inputs(policy, B: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    state = torch.rand(B, policy.n_obs_steps, policy.state_dim, generator=g) * 2 - 1
    images = tuple(torch.randint(0, 256, (B * policy.n_obs_steps, 3, h, w), generator=g, dtype=torch.uint8)
                   for h, w in (policy.obs_encoder.camera_sizes[n] for n in policy.camera_names))
    channels = policy.action_dim + (1 if getattr(policy, "prefix_conditioning", 0) else 0)  # + prefix mask
    x = torch.randn(B, policy.horizon, channels, generator=g)
    t = torch.randint(0, policy.cfg.policy.num_train_timesteps, (B,), generator=g)
    cond = torch.randn(B, policy.obs_encoder.output_dim, generator=g)
    film = torch.randn(B, policy.model.film_dim, generator=g)
    return (state, *images), (t, cond), (x, film)


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_name: str,
            opset: int) -> None:
    """``module(*args)`` to ONNX with a dynamic batch axis."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamic = tuple({0: batch} for _ in args)
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on axis names and deprecations
            torch.onnx.export(module, args, str(path), input_names=input_names, output_names=[output_name],
                              dynamic_shapes=dynamic, opset_version=opset, dynamo=True,
                              external_data=False, verbose=False)
    except Exception as e:  # noqa: BLE001 - the exporter's own message (its root cause), with what it printed
        root = e
        while root.__cause__ is not None:
            root = root.__cause__
        first = (str(root).strip().splitlines() or [""])[0][:300]
        raise CheckpointError(f"{path.name}: ONNX export failed ({type(root).__name__}: {first}); "
                              f"exporter output: {chatter.getvalue()[-300:]}") from None


def _verify(policy, out: Path, seed: int = 1) -> float:
    """Max |torch - ONNX Runtime| on fresh random inputs (batch 3): every camera's image encoder, and the
    whole denoiser ``policy.model(x, t, cond)`` against ``unet(x, film(t, cond))``."""
    import onnxruntime as ort

    (_, *images), (t, cond), (x, _) = _example_inputs(policy, 3, seed)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1

    def session(name):
        return ort.InferenceSession(str(out / name), opts, providers=["CPUExecutionProvider"])

    diffs = []
    with torch.no_grad():
        for name, im in zip(policy.camera_names, images):
            ref = policy.obs_encoder.encode_frames(name, im).numpy()
            diffs.append(np.abs(session(camera_file(name)).run(None, {"frames": im.numpy()})[0] - ref).max())
        ref_d = policy.model(x, t, cond).numpy()
    f = session(FILM).run(None, {"timestep": t.numpy(), "global_cond": cond.numpy()})[0]
    diffs.append(np.abs(session(UNET).run(None, {"sample": x.numpy(), "film": f})[0] - ref_d).max())
    return float(max(diffs))


def export_onnx(checkpoint_dir: PathLike, out_dir: Optional[PathLike] = None, use_ema: bool = True,
                opset: int = OPSET, tolerance: float = TOLERANCE) -> Path:
    """Export the image encoders and the denoising network of ``checkpoint_dir`` to ONNX in
    ``out_dir`` (default ``<checkpoint>/onnx``), check them in ONNX Runtime against torch, and write
    their checksums. Atomic: a failed export leaves any previous one in place. Returns ``out_dir``."""
    import onnx

    from genil_ros.fileio import atomic_write_json, write_dir_atomically
    from genil_ros.policy.checkpoint import load_policy, resolve_checkpoint_dir

    src = resolve_checkpoint_dir(checkpoint_dir)
    out = Path(out_dir) if out_dir is not None else default_onnx_dir(src)
    policy = load_policy(src, device="cpu", use_ema=use_ema)
    if policy.objective != "diffusion":
        raise CheckpointError(f"{src}: policy.objective is {policy.objective!r}; only diffusion policies are exported")
    policy.eval()
    (_, *images), film_args, unet_args = _example_inputs(policy, 2)

    def fill(tmp: Path) -> None:
        for name, im in zip(policy.camera_names, images):
            _export(_FramesGraph(policy.obs_encoder, name).eval(), (im,), tmp / camera_file(name), ["frames"],
                    "features", opset)
        _export(_FilmGraph(policy.model).eval(), film_args, tmp / FILM, ["timestep", "global_cond"], "film", opset)
        _export(_UnetGraph(policy.model).eval(), unet_args, tmp / UNET, ["sample", "film"], "out", opset)
        policy.eval()  # the exporter restores train/eval modes of its wrapper; keep the policy in eval
        diff = _verify(policy, tmp)
        if not diff <= tolerance:
            raise CheckpointError(f"{src}: the ONNX export differs from torch by {diff:.2e} (> {tolerance:.0e}); "
                                  "not written")
        sums = {name: file_sha256(tmp / name) for name in network_files(policy)}
        import onnxruntime as ort

        meta = {
            "format_version": EXPORT_FORMAT,
            "kind": "genil_ros.onnx_export",
            "checkpoint": str(src),
            "use_ema": bool(use_ema),
            "weights_sha256": weights_digest(policy),
            "files": sums,
            "shapes": _shapes(policy),
            "opset": opset,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
            "verified_max_abs_diff": diff,
        }
        atomic_write_json(tmp / META, meta)
        (tmp / SUMS).write_text("".join(f"{h}  {n}\n" for n, h in sums.items()), encoding="utf-8")

    return write_dir_atomically(out, fill)


@dataclass(frozen=True)
class OnnxExport:
    dir: Path
    cameras: dict  # camera name -> its image encoder's file
    film: Path
    unet: Path
    meta: dict


def read_onnx_export(policy, onnx_dir: Optional[PathLike] = None) -> OnnxExport:
    """The export in ``onnx_dir`` (default ``<policy.checkpoint_dir>/onnx``), after checking that its
    files are intact (sha256) and were made from ``policy``'s weights and shapes. CheckpointError else."""
    if onnx_dir is None:
        ckpt = getattr(policy, "checkpoint_dir", None)
        if ckpt is None:
            raise CheckpointError("no ONNX directory given and the policy was not loaded from a checkpoint")
        onnx_dir = default_onnx_dir(ckpt)
    d = Path(onnx_dir)
    mf = d / META
    if not mf.is_file():
        raise NoExport(f"{d}: no ONNX export here (no {META}; make one with "
                              f"`genil-ros export --format onnx --checkpoint CHECKPOINT --out {d}`)")
    try:
        meta = json.loads(mf.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{mf}: unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("kind") != "genil_ros.onnx_export":
        raise CheckpointError(f"{mf}: not a genil_ros ONNX export")
    version = meta.get("format_version")
    if not isinstance(version, int) or version != EXPORT_FORMAT:
        older = isinstance(version, int) and version < EXPORT_FORMAT
        raise CheckpointError(f"{mf}: format_version {version!r} is not supported (this genil_ros reads "
                              f"{EXPORT_FORMAT}" + ("; export this checkpoint again: "
                                                    "`genil-ros export --format onnx --checkpoint ...`)" if older
                                                    else ")"))
    files = meta.get("files") or {}
    for name in network_files(policy):
        f = d / name
        if not f.is_file():
            raise CheckpointError(f"{f}: missing (the export lists {', '.join(files) or 'nothing'})")
        if file_sha256(f) != files.get(name):
            raise CheckpointError(f"{f}: sha256 does not match {META} (corrupt or replaced file; export again)")
    want = _shapes(policy)
    if meta.get("shapes") != want:
        raise CheckpointError(f"{mf}: exported for shapes {meta.get('shapes')}, the policy has {want}")
    digest = weights_digest(policy)
    if meta.get("weights_sha256") != digest:
        raise CheckpointError(f"{mf}: made from other weights than this policy's (weights_sha256 "
                              f"{str(meta.get('weights_sha256'))[:12]}... != {digest[:12]}...; "
                              f"export this checkpoint again)")
    return OnnxExport(d, {n: d / camera_file(n) for n in policy.camera_names}, d / FILM, d / UNET, meta)


# --------------------------------------------------------------------------- CLI hook


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="checkpoint directory (or a shipped model's name)")
    parser.add_argument("--out", help="output directory (default: <checkpoint>/onnx)")
    parser.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA ones")
    parser.add_argument("--opset", type=int, default=OPSET)


def run(args) -> int:
    from genil_ros.paths import model_path

    out = export_onnx(model_path(args.checkpoint), args.out, use_ema=not args.no_ema, opset=args.opset)
    meta = json.loads((out / META).read_text(encoding="utf-8"))
    print(f"wrote {out}: {', '.join(meta['files'])} (opset {meta['opset']}; max |torch - onnxruntime| "
          f"{meta['verified_max_abs_diff']:.1e}); checksums in {META} and {SUMS}")
    return 0


def main(argv=None) -> int:
    import argparse

    from genil_ros.errors import GenilError

    ap = argparse.ArgumentParser(prog="python -m genil_ros.policy.onnx_export", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        return run(args)
    except GenilError as e:
        print(f"error: {e}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
