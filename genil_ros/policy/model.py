"""The noise-prediction network of Diffusion Policy (Chi et al. 2023, CNN variant).

A 1-D temporal U-Net over the action chunk ``(B, T_p, A)``. Every residual block is FiLM-conditioned on
one global vector: the sinusoidal diffusion-step embedding (through a small MLP) concatenated with the
flattened ``T_o`` observation features. Convolutions run along time, channels are action dimensions.

The conditioning part does not depend on the sample: :meth:`ConditionalUnet1D.film` maps (diffusion step,
global conditioning) to every block's FiLM scale and bias at once, and :meth:`ConditionalUnet1D.forward_film`
runs the U-Net body on them. ``forward`` is the two in a row; a sampler that knows its steps in advance
computes the FiLM vectors of the whole chain in one batched call and runs only the body per step (the
same arithmetic, so the same result).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SinusoidalPosEmb", "Conv1dBlock", "ConditionalResidualBlock1D", "ConditionalUnet1D"]


class SinusoidalPosEmb(nn.Module):
    """Transformer-style sinusoidal embedding of a (B,) tensor of diffusion steps -> (B, dim)."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"diffusion_step_embed_dim must be even, got {dim}")
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        scale = -math.log(10000.0) / max(half - 1, 1)
        freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * scale)
        args = t.float()[:, None] * freqs[None, :]
        return torch.cat([args.sin(), args.cos()], dim=-1)


class Conv1dBlock(nn.Sequential):
    """Conv1d -> GroupNorm -> Mish, length preserving."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, n_groups: int):
        super().__init__(
            nn.Conv1d(in_ch, out_ch, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(_groups(out_ch, n_groups), out_ch),
            nn.Mish(),
        )


def _groups(channels: int, n_groups: int) -> int:
    """The largest divisor of ``channels`` that is <= n_groups (GroupNorm needs a divisor)."""
    g = min(n_groups, channels)
    while channels % g:
        g -= 1
    return g


class ConditionalResidualBlock1D(nn.Module):
    """Two conv blocks; between them the features are modulated by FiLM from the conditioning vector.

    With ``cond_predict_scale`` the conditioning predicts a per-channel scale and bias
    (``h * scale + bias``), otherwise only a bias.
    """

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, kernel_size: int = 5, n_groups: int = 8,
                 cond_predict_scale: bool = True):
        super().__init__()
        self.blocks = nn.ModuleList([
            Conv1dBlock(in_ch, out_ch, kernel_size, n_groups),
            Conv1dBlock(out_ch, out_ch, kernel_size, n_groups),
        ])
        self.out_ch = out_ch
        self.cond_predict_scale = cond_predict_scale
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, out_ch * (2 if cond_predict_scale else 1)))
        self.residual_conv = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.film_dim = out_ch * (2 if cond_predict_scale else 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.forward_film(x, self.cond_encoder(cond))

    def forward_film(self, x: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        """The block with its FiLM vector (B, film_dim) already computed from the conditioning."""
        h = self.blocks[0](x)
        film = film.unsqueeze(-1)  # (B, C or 2C, 1)
        if self.cond_predict_scale:
            scale, bias = film[:, : self.out_ch], film[:, self.out_ch:]
            h = h * scale + bias
        else:
            h = h + film
        h = self.blocks[1](h)
        return h + self.residual_conv(x)


class ConditionalUnet1D(nn.Module):
    """1-D U-Net: ``forward(sample (B, T, A), timestep (B,) or scalar, global_cond (B, G)) -> (B, T, A)``.

    ``down_dims`` gives the channels per level; every level but the last halves the time axis. Chunks
    whose length is not a multiple of ``2 ** (len(down_dims) - 1)`` are padded (replicating the last
    step) inside and cropped back, so any T_p works.
    """

    def __init__(self, input_dim: int, global_cond_dim: int, diffusion_step_embed_dim: int = 128,
                 down_dims: Sequence[int] = (256, 512, 1024), kernel_size: int = 5, n_groups: int = 8,
                 cond_predict_scale: bool = True, output_dim: int | None = None):
        super().__init__()
        down_dims = list(down_dims)
        dsed = diffusion_step_embed_dim
        self.input_dim = input_dim
        self.global_cond_dim = global_cond_dim
        self.diffusion_step_encoder = nn.Sequential(
            SinusoidalPosEmb(dsed), nn.Linear(dsed, dsed * 4), nn.Mish(), nn.Linear(dsed * 4, dsed),
        )
        cond_dim = dsed + global_cond_dim
        all_dims = [input_dim] + down_dims
        in_out = list(zip(all_dims[:-1], all_dims[1:]))

        def res(i, o):
            return ConditionalResidualBlock1D(i, o, cond_dim, kernel_size, n_groups, cond_predict_scale)

        self.down_modules = nn.ModuleList()
        for ind, (d_in, d_out) in enumerate(in_out):
            last = ind == len(in_out) - 1
            self.down_modules.append(nn.ModuleList([
                res(d_in, d_out), res(d_out, d_out),
                nn.Conv1d(d_out, d_out, 3, stride=2, padding=1) if not last else nn.Identity(),
            ]))
        mid = down_dims[-1]
        self.mid_modules = nn.ModuleList([res(mid, mid), res(mid, mid)])
        self.up_modules = nn.ModuleList()
        # Every up level doubles the time axis again; the skip of the full-resolution level is not used.
        for d_in, d_out in reversed(in_out[1:]):
            self.up_modules.append(nn.ModuleList([
                res(d_out * 2, d_in), res(d_in, d_in), nn.ConvTranspose1d(d_in, d_in, 4, stride=2, padding=1),
            ]))
        self.final_conv = nn.Sequential(
            Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups),
            nn.Conv1d(down_dims[0], output_dim or input_dim, 1),  # output_dim: when inputs carry extra channels
        )
        self.time_multiple = 2 ** (len(down_dims) - 1)
        # the residual blocks in the order forward_film runs them, and where each one's FiLM vector sits
        self._film_blocks = [m for level in self.down_modules for m in level[:2]] + list(self.mid_modules) + \
            [m for level in self.up_modules for m in level[:2]]
        ends = [0]
        for blk in self._film_blocks:
            ends.append(ends[-1] + blk.film_dim)
        self.film_slices = [(a, b) for a, b in zip(ends[:-1], ends[1:])]
        self.film_dim = ends[-1]

    def film(self, timestep, global_cond: torch.Tensor | None = None, batch: int | None = None) -> torch.Tensor:
        """FiLM vectors of every residual block, concatenated: (B, film_dim). ``timestep`` is (B,), a
        0-dim tensor or an int (broadcast to ``batch`` or to ``global_cond``'s batch)."""
        dev = global_cond.device if global_cond is not None else next(self.parameters()).device
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], dtype=torch.long, device=dev)
        elif timestep.ndim == 0:
            timestep = timestep[None].to(dev)
        B = batch or (global_cond.shape[0] if global_cond is not None else timestep.shape[0])
        cond = self.diffusion_step_encoder(timestep.expand(B))
        if global_cond is not None:
            cond = torch.cat([cond, global_cond.to(cond.dtype)], dim=-1)
        m = F.mish(cond)  # every block's cond_encoder is Mish -> Linear of the same vector
        return torch.cat([F.linear(m, blk.cond_encoder[1].weight, blk.cond_encoder[1].bias)
                          for blk in self._film_blocks], dim=-1)

    def forward(self, sample: torch.Tensor, timestep, global_cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_film(sample, self.film(timestep, global_cond, batch=sample.shape[0]))

    def forward_film(self, sample: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        """The U-Net body: ``sample`` (B, T, A) and the FiLM vectors from :meth:`film` (B, film_dim)."""
        B, T, _ = sample.shape
        film = film.to(sample.dtype)
        films = iter([film[:, a:b] for a, b in self.film_slices])
        x = sample.transpose(1, 2)  # (B, A, T)
        pad = (-T) % self.time_multiple
        if pad:
            x = F.pad(x, (0, pad), mode="replicate")
        skips = []
        for res1, res2, down in self.down_modules:
            x = res2.forward_film(res1.forward_film(x, next(films)), next(films))
            skips.append(x)
            x = down(x)
        for m in self.mid_modules:
            x = m.forward_film(x, next(films))
        for res1, res2, up in self.up_modules:
            x = torch.cat([x, skips.pop()], dim=1)
            x = res2.forward_film(res1.forward_film(x, next(films)), next(films))
            x = up(x)
        x = self.final_conv(x)
        return x[..., :T].transpose(1, 2)
