"""Random masking by argsort of noise (MAE; HF's `noise=` convention), shared by MAE and other objectives.

Shapes: B batch · N patches · K = N − round-down(N·ratio) kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RandomMask:
    """Result of `random_masking`.

    ids_keep: (B, K) indices of visible patches, in the order the encoder sees them.
    ids_restore: (B, N) inverse permutation, to put [visible; mask tokens] back in patch order.
    mask: (B, N) in patch order, 1 = hidden, 0 = visible.
    """

    ids_keep: Tensor
    ids_restore: Tensor
    mask: Tensor


def random_masking(batch: int, num_patches: int, mask_ratio: float, noise: Tensor | None = None,
                   device: torch.device | str | None = None,
                   generator: torch.Generator | None = None) -> RandomMask:
    """Per-sample random masking: keep the patches with the smallest noise (MAE's and HF's convention).

    `mask_ratio=0` keeps every patch in its original order (no shuffling).
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    len_keep = int(num_patches * (1 - mask_ratio))
    if mask_ratio == 0.0:
        ids = torch.arange(num_patches, device=device).expand(batch, -1)
        return RandomMask(ids, ids, torch.zeros(batch, num_patches, device=device))
    if noise is None:
        noise = torch.rand(batch, num_patches, device=device, generator=generator)
    if noise.shape != (batch, num_patches):
        raise ValueError(f"noise must have shape {(batch, num_patches)}, got {tuple(noise.shape)}")
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, num_patches, device=noise.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # (B, N) back in patch order
    return RandomMask(ids_shuffle[:, :len_keep], ids_restore, mask)


def gather_tokens(tokens: Tensor, ids: Tensor) -> Tensor:
    """tokens (B, N, D), ids (B, K) → (B, K, D)."""
    return torch.gather(tokens, 1, ids.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
