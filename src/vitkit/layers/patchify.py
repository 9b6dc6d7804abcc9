"""Patchify / unpatchify: images (B, C, H, W) ↔ patches (B, N, p·p·C), the MAE reference's pixel order."""

from __future__ import annotations

from torch import Tensor


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """images (B, C, H, W) → patches (B, gh·gw, p·p·C), each patch flattened as (p, p, C)."""
    B, C, H, W = images.shape
    p = patch_size
    if H % p or W % p:
        raise ValueError(f"image sides {H}×{W} are not multiples of the patch size {p}")
    gh, gw = H // p, W // p
    x = images.reshape(B, C, gh, p, gw, p)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, p, p, C)
    return x.reshape(B, gh * gw, p * p * C)


def unpatchify(patches: Tensor, patch_size: int, grid: tuple[int, int], channels: int = 3) -> Tensor:
    """patches (B, gh·gw, p·p·C) → images (B, C, gh·p, gw·p); the inverse of `patchify`."""
    B, N, _ = patches.shape
    gh, gw = grid
    p = patch_size
    if N != gh * gw or patches.shape[-1] != p * p * channels:
        raise ValueError(f"patches {tuple(patches.shape)} do not fit grid {gh}×{gw}, "
                         f"patch {p}, {channels} channels")
    x = patches.reshape(B, gh, gw, p, p, channels)
    x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, gh, p, gw, p)
    return x.reshape(B, channels, gh * p, gw * p)
