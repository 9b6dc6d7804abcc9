"""Convolutional stem (Xiao et al., "Early Convolutions Help Transformers See Better", NeurIPS 2021).

The ViT's patchify stem — one k×k convolution with stride k — is replaced by a few 3×3 convolutions with
BatchNorm and ReLU, followed by a p×p projection to the token width (p = 1 in the paper: every pixel of the
last feature map is a token). The paper finds this stem makes ViTs train faster, more stably and to higher
accuracy for the same compute; on small images and short schedules it is the cheapest way to give a ViT
the locality prior it otherwise learns from data.

Shapes: B batch · C channels · H, W image sides · C_i stage i's width ·
(gh, gw) token grid · N = gh·gw · D width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from .patch_embed import check_images


@dataclass
class ConvStemConfig:
    """channels / strides: width and stride of each 3×3 conv (+ BatchNorm + ReLU), one entry per conv.

    The total stride is the product of `strides` times the ViT's `patch_size` (the projection's kernel).
    """

    channels: tuple[int, ...] = (64, 128)
    strides: tuple[int, ...] = (2, 2)

    def __post_init__(self) -> None:
        self.channels, self.strides = tuple(self.channels), tuple(self.strides)
        if len(self.channels) != len(self.strides) or not self.channels:
            raise ValueError(f"ConvStemConfig needs one stride per conv: channels={self.channels}, "
                             f"strides={self.strides}")

    @property
    def stride(self) -> int:
        return math.prod(self.strides)


class ConvStem(nn.Module):
    """3×3 conv-BN-ReLU stack + p×p projection: images (B, C, H, W) → tokens (B, N, D), grid (H / s, W / s).

    Satisfies the patch-embed contract (`forward`, `in_chans`, `patch_size` = total stride s, `dim`).

    State-dict keys: convs.{i}.{0.weight, 1.weight, 1.bias, 1.running_mean, ...}, proj.{weight,bias}.
    """

    def __init__(self, cfg: ConvStemConfig, in_chans: int, dim: int, feature_patch_size: int = 1) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.dim = dim
        self.patch_size = cfg.stride * feature_patch_size
        widths = (in_chans, *cfg.channels)
        self.convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(c_out),
                          nn.ReLU(inplace=True))
            for c_in, c_out, s in zip(widths[:-1], widths[1:], cfg.strides, strict=False))
        self.proj = nn.Conv2d(widths[-1], dim, kernel_size=feature_patch_size, stride=feature_patch_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal (fan-out) convs as in ResNets, unit BatchNorm; lecun-normal projection, zero bias."""
        for conv in self.convs:
            nn.init.kaiming_normal_(conv[0].weight, mode="fan_out", nonlinearity="relu")
            conv[1].reset_parameters()
        std = math.sqrt(1.0 / self.proj.weight[0].numel())
        nn.init.trunc_normal_(self.proj.weight, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(self.proj.bias)

    def forward(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """images (B, C, H, W), sides multiples of `patch_size` → tokens (B, N, D), grid (gh, gw)."""
        check_images(images, self.in_chans, self.patch_size)
        x = images
        for conv in self.convs:
            x = conv(x)
        tokens = self.proj(x)  # (B, D, gh, gw)
        return tokens.flatten(2).transpose(1, 2), (tokens.shape[-2], tokens.shape[-1])
