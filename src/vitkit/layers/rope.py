"""2-D axial rotary position embeddings on the patch grid, as DINOv3 uses them (Siméoni et al., "DINOv3",
2025; RoPE: Su et al., "RoFormer", 2021).

Each patch centre gets coordinates (y, x) in [-1, 1] (centre of patch i of n: 2·(i + ½)/n − 1, so any grid
spans the same range). A head of width d rotates d/4 frequency pairs per axis, ω_k = θ^(−4k/d) for
k < d/4; the angles 2π·y·ω and 2π·x·ω make d/2 angles, tiled twice to d and applied in the "rotate half"
layout (channel c pairs with c + d/2). Only patch tokens are rotated: [CLS] and registers keep their q and k.
In training the coordinates may be shifted, jittered per axis and rescaled (DINOv3's augmentations, off in
eval).

Shapes: B batch · H heads · T = P + N tokens (P prefix tokens first) · N = gh·gw patches · d head width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class RopeConfig:
    """theta: the base period θ (DINOv3: 100). shift / jitter / rescale: training-time coordinate
    augmentations (uniform shift in ±shift; per-axis scale in [1/jitter, jitter]; one scale in
    [1/rescale, rescale], both log-uniform); None turns one off. HF's DINOv3 default: rescale 2 alone."""

    theta: float = 100.0
    shift: float | None = None
    jitter: float | None = None
    rescale: float | None = 2.0


def patch_centres(grid: tuple[int, int], device: torch.device | None = None) -> Tensor:
    """(y, x) centres of a (gh, gw) grid's patches in [-1, 1], row-major → (N, 2) float32."""
    ys = (torch.arange(grid[0], dtype=torch.float32, device=device) + 0.5) / grid[0]
    xs = (torch.arange(grid[1], dtype=torch.float32, device=device) + 0.5) / grid[1]
    coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)  # (gh, gw, 2)
    return 2.0 * coords.flatten(0, 1) - 1.0  # (N, 2)


def _log_uniform(limit: float, shape: tuple[int, ...], like: Tensor) -> Tensor:
    bound = math.log(limit)
    return torch.empty(shape, dtype=like.dtype, device=like.device).uniform_(-bound, bound).exp()


class RotaryEmbedding2d(nn.Module):
    """Produces (cos, sin), each (N, d), for a patch grid; `apply_rope` rotates q and k with them."""

    def __init__(self, head_dim: int, cfg: RopeConfig) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"2-D RoPE needs a head width divisible by 4, got {head_dim}")
        self.config = cfg
        periods = cfg.theta ** torch.arange(0, 1, 4 / head_dim, dtype=torch.float32)  # (d/4,)
        self.register_buffer("inv_freq", 1.0 / periods, persistent=False)

    def augment(self, coords: Tensor) -> Tensor:
        """DINOv3's training-time coordinate augmentations on (N, 2) centres."""
        cfg = self.config
        if cfg.shift is not None:
            coords = coords + torch.empty(1, 2, device=coords.device).uniform_(-cfg.shift, cfg.shift)
        if cfg.jitter is not None:
            coords = coords * _log_uniform(cfg.jitter, (1, 2), coords)
        if cfg.rescale is not None:
            coords = coords * _log_uniform(cfg.rescale, (1,), coords)
        return coords

    def forward(self, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """(gh, gw) → cos, sin, each (N, d) float32."""
        coords = patch_centres(grid, self.inv_freq.device)
        if self.training:
            coords = self.augment(coords)
        angles = 2 * math.pi * coords[:, :, None] * self.inv_freq  # (N, 2, d/4): y then x
        angles = angles.flatten(1).tile(2)  # (N, d/2) → (N, d)
        return angles.cos(), angles.sin()


def rotate_half(x: Tensor) -> Tensor:
    """(..., d) → (−x[d/2:], x[:d/2]) along the last axis."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rope(x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
    """Rotate the last N tokens of x (B, H, P + N, d) by (cos, sin) (N, d); the P prefix tokens pass as they
    are."""
    cos, sin = (t.to(x.dtype) for t in rope)
    prefix, patches = x.split((x.shape[-2] - cos.shape[0], cos.shape[0]), dim=-2)
    return torch.cat([prefix, patches * cos + rotate_half(patches) * sin], dim=-2)
