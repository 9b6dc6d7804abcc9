"""Hybrid ViT (Dosovitskiy et al., ICLR 2021, Sec. 3.1 "Hybrid Architecture"): CNN feature maps cut into
patches.

The hybrid is a VisionTransformer with another patch embedder, not a new model class: `ViTConfig.backbone` set
to a `ResNetV2Config` makes `build_patch_embed` return a `HybridEmbed`, which runs the ResNetV2 trunk and
projects its last feature map to D with a p×p convolution (p = `ViTConfig.patch_size`, 1 in the paper and
in timm: every feature-map pixel is a token). The embedder's total stride (its `patch_size` attribute) is
backbone stride × p: 16 for R50 stages (3, 4, 9) with 1×1 patches; the ViT computes its grid from it.

Shapes: B batch · C channels · H, W image sides · C_i, (H_i, W_i) stage i's width and sides · (gh, gw) token
grid · N = gh·gw tokens · D width.
"""

from __future__ import annotations

import dataclasses
import math

from torch import Tensor, nn

from ..layers import check_images
from .registry import register_model
from .resnetv2 import ResNetV2, ResNetV2Config
from .vit import ViTConfig
from .vit_presets import vit_config


class HybridEmbed(nn.Module):
    """ResNetV2 trunk + p×p projection: images (B, C, H, W) → tokens (B, N, D), grid (H / s, W / s).

    Satisfies the patch-embed contract (`forward`, `in_chans`, `patch_size` = total stride s, `dim`) and
    hands back the trunk's stage maps (`forward_stages`, `forward_with_stages`), so dense heads need no hooks.

    Args:
        backbone_cfg: the trunk; its `in_chans` and `num_classes` are replaced by this embedder's (`in_chans`,
            no head).
        in_chans: image channels.
        dim: token width D.
        feature_patch_size: patch side p on the trunk's last feature map (1 = one token per feature pixel).

    State-dict keys: backbone.* (`ResNetV2`), proj.{weight,bias} (D, C_last, p, p).
    """

    def __init__(self, backbone_cfg: ResNetV2Config, in_chans: int, dim: int,
                 feature_patch_size: int = 1) -> None:
        super().__init__()
        backbone_cfg = dataclasses.replace(backbone_cfg, in_chans=in_chans, num_classes=0)
        self.backbone = ResNetV2(backbone_cfg)
        self.in_chans = in_chans
        self.dim = dim
        self.feature_patch_size = feature_patch_size
        self.patch_size = self.backbone.stride * feature_patch_size
        self.proj = nn.Conv2d(backbone_cfg.out_channels, dim, kernel_size=feature_patch_size,
                              stride=feature_patch_size)
        std = math.sqrt(1.0 / self.proj.weight[0].numel())  # lecun-normal over fan-in, as the conv PatchEmbed
        nn.init.trunc_normal_(self.proj.weight, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(self.proj.bias)

    def forward_stages(self, images: Tensor) -> list[Tensor]:
        """images (B, C, H, W), sides multiples of `patch_size` → every ResNet stage's map (B, C_i, H_i, W_i),
        H_i = H / (4·2^i) (for R50 (3, 4, 9): strides 4, 8, 16)."""
        check_images(images, self.in_chans, self.patch_size)
        return self.backbone.forward_stages(images)

    def stage_channels_and_strides(self) -> list[tuple[int, int]]:
        """(C_i, stride s_i) of each map `forward_stages` returns: s_i = 4·2^i (the stem's 4, then ×2 a
        stage); a stem-only trunk's one map is its stem's (stem_width, 4)."""
        cfg = self.backbone.config
        return [(c, 4 * 2 ** i) for i, c in enumerate(cfg.channels)] or [(cfg.stem_width, 4)]

    def embed_stages(self, stages: list[Tensor]) -> tuple[Tensor, tuple[int, int]]:
        """The output of `forward_stages` → tokens (B, N, D) from the last map (after the trunk's norm)."""
        features = self.backbone.norm(stages[-1])
        tokens = self.proj(features)  # (B, D, gh, gw)
        grid = (tokens.shape[-2], tokens.shape[-1])
        return tokens.flatten(2).transpose(1, 2), grid  # (B, D, gh, gw) → (B, N, D)

    def forward_with_stages(self, images: Tensor) -> tuple[Tensor, tuple[int, int], list[Tensor]]:
        """One trunk pass → tokens (B, N, D), grid (gh, gw) and the stage maps [(B, C_i, H_i, W_i), ...]."""
        stages = self.forward_stages(images)
        tokens, grid = self.embed_stages(stages)
        return tokens, grid, stages

    def forward(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """images (B, C, H, W), sides multiples of `patch_size` → tokens (B, N, D), grid (gh, gw)."""
        return self.embed_stages(self.forward_stages(images))


def hybrid_config(image_size: int = 224, **overrides) -> ViTConfig:
    """ViT-B on ResNetV2-R50 stages (3, 4, 9), 1×1 patches (output stride 16): the paper's R50+ViT-B/16."""
    return vit_config("B/1", image_size, **{"backbone": ResNetV2Config(layers=(3, 4, 9)), **overrides})


register_model("vit_base_r50_s16_224", hybrid_config(224))
register_model("vit_base_r50_s16_384", hybrid_config(384))
