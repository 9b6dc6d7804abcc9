"""Patch embedding: a k×k convolution with stride k turns an image into a grid of D-wide tokens.

Every patch embedder in vitkit (this one, the hybrid's ResNet stem) has the same contract:
``forward(images (B, C, H, W)) -> (tokens (B, N, D), grid (gh, gw))`` and attributes `in_chans`, `patch_size`
(the total stride) and `dim`, so the VisionTransformer takes any of them.
"""

from __future__ import annotations

from torch import Tensor, nn


def check_images(images: Tensor, in_chans: int, patch_size: int) -> tuple[int, int]:
    """Validate (B, C, H, W) images against a channel count and a patch size; return the patch grid."""
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got shape {tuple(images.shape)}")
    _, c, h, w = images.shape
    if c != in_chans:
        raise ValueError(f"model expects {in_chans}-channel images, got {c} channels "
                         f"(convert grayscale/RGBA inputs to {in_chans} channels first)")
    if h % patch_size or w % patch_size:
        raise ValueError(f"image sides {h}×{w} are not multiples of the patch size {patch_size}; "
                         f"resize or crop to e.g. {h // patch_size * patch_size}×"
                         f"{w // patch_size * patch_size}")
    return h // patch_size, w // patch_size


class PatchEmbed(nn.Module):
    """Conv patch embedding (kernel = stride = patch_size)."""

    def __init__(self, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.dim = dim
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """images (B, C, H, W) → tokens (B, N, D) with N = gh·gw in row-major order, grid (gh, gw)."""
        grid = check_images(images, self.in_chans, self.patch_size)
        tokens = self.proj(images).flatten(2).transpose(1, 2)  # (B, D, gh, gw) → (B, N, D)
        return tokens, grid
