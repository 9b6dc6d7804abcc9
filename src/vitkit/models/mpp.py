"""Masked patch prediction: the ViT paper's self-supervised objective (Dosovitskiy et al., 2021, app. B.1.2).

images → encoder.embed → corrupt 50% of the patch embeddings (of those: 80% → a learnable [mask] embedding,
10% → a random other patch embedding from the batch, 10% left unchanged) → + positions → +[CLS] → encoder →
per-patch head → loss on the corrupted positions only.

Targets (`MPPConfig.target`), computed from the un-normalised pixels (the encoder's `preprocess` mean/std
undone, clamped to [0, 1]):
  * "color3bit": the patch's mean colour, each channel quantised to 3 bits → one of 2^(3·C) classes (512 for
    RGB), cross-entropy (the paper's main choice);
  * "color": the mean colour itself (C values), L2 regression;
  * "downsampled": the patch average-pooled to 4 × 4 (16·C values), L2 regression.

Shapes: B batch · C channels · p patch · N patches · D width · P prefix tokens.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import patchify
from .registry import get_model_config, register_model, register_model_type
from .vit import VisionTransformer, ViTConfig
from .vit_presets import vit_config

# Corruption kinds, per patch (the `corruption` tensor of MPPOutput).
KEEP, MASKED, RANDOM, UNCHANGED = 0, 1, 2, 3


def _mpp_encoder_config() -> ViTConfig:
    return ViTConfig(num_classes=0)


@dataclass
class MPPConfig:
    """Masked patch prediction: encoder config, corruption rates and the prediction target."""

    encoder: ViTConfig = field(default_factory=_mpp_encoder_config)
    corrupt_ratio: float = 0.5  # share of patches corrupted per image
    mask_prob: float = 0.8  # of the corrupted: replaced by the [mask] embedding
    random_prob: float = 0.1  # of the corrupted: another patch's embedding instead (the rest stay unchanged)
    target: Literal["color3bit", "color", "downsampled"] = "color3bit"
    bits: int = 3  # per channel, for "color3bit"
    downsample: int = 4  # output side, for "downsampled"


@dataclass
class MPPOutput:
    """loss (scalar) · pred (B, N, K) per-patch logits or regressions · target (B, N) classes or (B, N, K) ·
    corrupted (B, N), 1 = corrupted (loss positions) · corruption (B, N): KEEP/MASKED/RANDOM/UNCHANGED."""

    loss: Tensor
    pred: Tensor
    target: Tensor
    corrupted: Tensor
    corruption: Tensor


def corrupt_patches(tokens: Tensor, mask_token: Tensor, corrupt_ratio: float, mask_prob: float,
                    random_prob: float, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """BERT-style corruption of patch embeddings.

    Args:
        tokens: (B, N, D) patch embeddings, before position embeddings.
        mask_token: (1, 1, D) the learnable [mask] embedding.
        corrupt_ratio: share of the N patches of each image chosen (exactly round(N·ratio) of them).
        mask_prob, random_prob: of the chosen, the chances of [mask] and of another patch's embedding.
        generator: random source (defaults to the global one).

    Returns:
        corrupted tokens (B, N, D) and the kind of each position (B, N): KEEP, MASKED, RANDOM or UNCHANGED.
    """
    B, N, D = tokens.shape
    dev = tokens.device
    chosen_count = round(N * corrupt_ratio)
    noise = torch.rand(B, N, device=dev, generator=generator)
    ranks = noise.argsort(dim=1).argsort(dim=1)  # (B, N): each patch's rank; the lowest ranks are chosen
    chosen = ranks < chosen_count
    u = torch.rand(B, N, device=dev, generator=generator)
    kind = torch.full((B, N), KEEP, dtype=torch.long, device=dev)
    kind[chosen & (u < mask_prob)] = MASKED
    kind[chosen & (u >= mask_prob) & (u < mask_prob + random_prob)] = RANDOM
    kind[chosen & (u >= mask_prob + random_prob)] = UNCHANGED
    # another patch of the batch, never the position itself: draw from B·N − 1 and skip over the own index
    own = torch.arange(B * N, device=dev)
    other = torch.randint(0, B * N - 1, (B * N,), device=dev, generator=generator)
    other = other + (other >= own).long()
    flat = tokens.reshape(B * N, D)  # (B·N, D)
    replaced = torch.where((kind == RANDOM).reshape(-1, 1), flat[other], flat).reshape(B, N, D)
    mask_tokens = mask_token.to(tokens.dtype).expand(B, N, D)
    replaced = torch.where((kind == MASKED).unsqueeze(-1), mask_tokens, replaced)
    return replaced, kind


def mean_color_classes(pixels: Tensor, patch_size: int, bits: int = 3) -> Tensor:
    """pixels (B, C, H, W) in [0, 1] → class (B, N) of each patch's mean colour, each channel on `bits` bits.

    Class = Σ_c level_c · L^(C−1−c) with L = 2^bits (so for RGB: r·64 + g·8 + b, 512 classes).
    """
    C = pixels.shape[1]
    levels = 2 ** bits
    mean = patchify(pixels, patch_size).reshape(pixels.shape[0], -1, patch_size * patch_size, C).mean(dim=2)
    q = (mean.clamp(0, 1) * levels).floor().clamp(max=levels - 1).long()  # (B, N, C)
    weights = levels ** torch.arange(C - 1, -1, -1, device=pixels.device)
    return (q * weights).sum(dim=-1)


def mean_colors(pixels: Tensor, patch_size: int) -> Tensor:
    """pixels (B, C, H, W) → mean colour per patch (B, N, C)."""
    C = pixels.shape[1]
    return patchify(pixels, patch_size).reshape(pixels.shape[0], -1, patch_size * patch_size, C).mean(dim=2)


def downsampled_patches(pixels: Tensor, patch_size: int, side: int = 4) -> Tensor:
    """pixels (B, C, H, W) → each patch average-pooled to side × side, flattened (B, N, side·side·C)."""
    if patch_size % side:
        raise ValueError(f"patch size {patch_size} is not a multiple of the downsampled side {side}")
    pooled = F.avg_pool2d(pixels, patch_size // side)  # (B, C, gh·side, gw·side)
    return patchify(pooled, side)


class MaskedPatchPrediction(nn.Module):
    """ViT encoder + [mask] embedding + per-patch linear head; `forward` returns an `MPPOutput`."""

    def __init__(self, cfg: MPPConfig) -> None:
        super().__init__()
        if not 0 < cfg.corrupt_ratio <= 1 or cfg.mask_prob + cfg.random_prob > 1:
            raise ValueError("need 0 < corrupt_ratio <= 1 and mask_prob + random_prob <= 1")
        self.config = cfg
        self.encoder = VisionTransformer(cfg.encoder)
        self.patch_size = self.encoder.patch_size
        C = cfg.encoder.in_chans
        widths = {"color3bit": 2 ** (cfg.bits * C), "color": C, "downsampled": cfg.downsample ** 2 * C}
        out = widths[cfg.target]
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.encoder.dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.head = nn.Linear(cfg.encoder.dim, out)
        nn.init.zeros_(self.head.bias)

    def no_weight_decay(self) -> set[str]:
        return {f"encoder.{n}" for n in self.encoder.no_weight_decay()} | {"mask_token"}

    def pixels(self, images: Tensor) -> Tensor:
        """Undo the encoder's normalisation: images (B, C, H, W) → pixels in [0, 1]."""
        pre = self.config.encoder.preprocess
        mean = torch.tensor(pre.mean, device=images.device, dtype=images.dtype).reshape(1, -1, 1, 1)
        std = torch.tensor(pre.std, device=images.device, dtype=images.dtype).reshape(1, -1, 1, 1)
        return (images * std + mean).clamp(0, 1)

    def targets(self, images: Tensor) -> Tensor:
        """(B, N) classes for "color3bit", else (B, N, K) regression targets."""
        pixels, p, cfg = self.pixels(images), self.patch_size, self.config
        if cfg.target == "color3bit":
            return mean_color_classes(pixels, p, cfg.bits)
        if cfg.target == "color":
            return mean_colors(pixels, p)
        return downsampled_patches(pixels, p, cfg.downsample)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> MPPOutput:
        """images (B, C, H, W), normalised as the encoder's preprocess says → MPPOutput."""
        cfg = self.config
        tokens, grid = self.encoder.embed(images)  # (B, N, D), no positions yet
        tokens, kind = corrupt_patches(tokens, self.mask_token, cfg.corrupt_ratio, cfg.mask_prob,
                                       cfg.random_prob, generator)
        tokens = self.encoder.add_prefix_tokens(self.encoder.add_pos_embed(tokens, grid))
        tokens = self.encoder.forward_tokens(tokens, grid=grid)
        tokens = tokens[:, self.encoder.num_prefix_tokens:]  # (B, P + N, D) → (B, N, D)
        pred = self.head(tokens)  # (B, N, K)
        target = self.targets(images)
        corrupted = kind != KEEP
        if cfg.target == "color3bit":
            loss = F.cross_entropy(pred[corrupted], target[corrupted])
        else:
            loss = F.mse_loss(pred[corrupted], target[corrupted].to(pred.dtype))
        return MPPOutput(loss, pred, target, corrupted.float(), kind)

    def export_encoder(self) -> VisionTransformer:
        """A standalone copy of the encoder (a plain ViT, no head) for fine-tuning or saving."""
        return copy.deepcopy(self.encoder)


register_model_type("mpp", MPPConfig, MaskedPatchPrediction)
register_model("mpp_vit_base_patch16", MPPConfig(encoder=vit_config("B/16", 224, num_classes=0)))
# the encoder of vit_tiny_patch4_32 (CIFAR preprocessing), without a head
register_model("mpp_vit_tiny_patch4_32",
               MPPConfig(encoder=get_model_config("vit_tiny_patch4_32", num_classes=0)))
