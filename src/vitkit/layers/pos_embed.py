"""Position embeddings: learned 1-D (resampled in 2-D to any grid) and fixed 2-D sin-cos.

Shapes: N = gh·gw patch positions in row-major order, D width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sincos_pos_embed_2d(dim: int, grid: tuple[int, int], temperature: float = 10000.0) -> Tensor:
    """Fixed 2-D sin-cos embedding (MAE) for a (gh, gw) grid → (N, D), float32.

    Channel layout as in the MAE reference and HF: the first D/2 channels encode the column (w) coordinate,
    the last D/2 the row (h); each half is [sin(pos·ω), cos(pos·ω)] with ω = temperature^(-i/(D/4)).
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    gh, gw = grid
    h = torch.arange(gh, dtype=torch.float64)
    w = torch.arange(gw, dtype=torch.float64)
    hh, ww = torch.meshgrid(h, w, indexing="ij")  # (gh, gw) each
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4.0))

    def embed_1d(pos: Tensor) -> Tensor:
        out = pos.reshape(-1, 1) * omega[None]  # (N, D/4)
        return torch.cat([out.sin(), out.cos()], dim=1)  # (N, D/2)

    return torch.cat([embed_1d(ww), embed_1d(hh)], dim=1).float()  # (N, D)


def resample_pos_embed(pos: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int],
                       mode: str = "bicubic", antialias: bool = False) -> Tensor:
    """Resample patch position embeddings (1, N_old, D) on a 2-D grid to (1, N_new, D).

    `mode` is any `F.interpolate` mode for 4-D input ("bicubic", "bilinear", "nearest", "area");
    align_corners is False, as in HF transformers and timm. A grid traced as symbolic sizes (ONNX or
    torch.export with dynamic height and width) always resamples, so the graph holds the resize for any size.
    """
    if _is_static(new_grid) and tuple(old_grid) == tuple(new_grid):
        return pos
    if pos.shape[1] != old_grid[0] * old_grid[1]:
        raise ValueError(f"{pos.shape[1]} position embeddings do not form a {old_grid[0]}×{old_grid[1]} grid")
    dim = pos.shape[-1]
    grid = pos.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)  # (1, D, gh, gw)
    kwargs = {} if mode in ("nearest", "area") else {"align_corners": False, "antialias": antialias}
    grid = F.interpolate(grid.float(), size=tuple(new_grid), mode=mode, **kwargs).to(pos.dtype)
    return grid.permute(0, 2, 3, 1).reshape(1, -1, dim)  # (1, D, gh', gw') → (1, N', D)


def _is_static(grid: tuple[int, int]) -> bool:
    """True for a grid of plain ints; False when traced with symbolic sizes (`torch.SymInt`)."""
    return not any(isinstance(side, torch.SymInt) for side in grid)


class LearnedPosEmbed(nn.Module):
    """Learned patch position embeddings stored for `grid`, resampled on the fly for other grids."""

    def __init__(self, grid: tuple[int, int], dim: int, mode: str = "bicubic",
                 antialias: bool = False) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.mode = mode
        self.antialias = antialias
        self.weight = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, grid: tuple[int, int]) -> Tensor:
        """Position embeddings (1, gh·gw, D) for `grid`."""
        return resample_pos_embed(self.weight, self.grid, grid, self.mode, self.antialias)


class SinCosPosEmbed(nn.Module):
    """Fixed 2-D sin-cos embeddings computed for any grid (a buffer caches the configured one)."""

    def __init__(self, grid: tuple[int, int], dim: int) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.dim = dim
        self.register_buffer("weight", sincos_pos_embed_2d(dim, self.grid)[None], persistent=False)

    def forward(self, grid: tuple[int, int]) -> Tensor:
        if _is_static(grid) and tuple(grid) == self.grid:
            return self.weight
        return sincos_pos_embed_2d(self.dim, tuple(grid))[None].to(self.weight)
