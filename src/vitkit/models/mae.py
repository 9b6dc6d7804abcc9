"""Masked autoencoder (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022).

images → encoder.embed → + fixed 2-D sin-cos positions → keep a random (1 − mask_ratio) share of patches →
+[CLS] → encoder blocks + norm → latent → decoder: Linear to decoder width, mask tokens appended, unshuffled
with `ids_restore`, + fixed sin-cos positions ([CLS] at a zero position) → blocks → norm → Linear to p·p·C
pixels. Loss: mean squared error on the hidden patches only, against raw or per-patch normalised pixels
(`norm_pix_loss`).

The encoder is a plain `VisionTransformer` used only through its public methods, so `export_encoder` hands
back a ViT that loads and fine-tunes like any other.

Shapes: B batch · C channels · p patch · (gh, gw) grid · N = gh·gw patches · K visible patches ·
P prefix tokens (1 with [CLS]) · D encoder width · Dd decoder width.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..config import PreprocessConfig
from ..layers import (
    Block,
    RandomMask,
    SinCosPosEmbed,
    gather_tokens,
    patchify,
    random_masking,
    sincos_pos_embed_2d,
)
from .registry import register_model, register_model_type
from .vit import VisionTransformer, ViTConfig
from .vit_presets import vit_config


def _mae_encoder_config() -> ViTConfig:
    return ViTConfig(pos_embed="sincos", num_classes=0)


@dataclass
class MAEConfig:
    """A masked autoencoder: a ViT encoder config plus the decoder's size and the pretraining options."""

    encoder: ViTConfig = field(default_factory=_mae_encoder_config)
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    decoder_mlp_ratio: float = 4.0
    mask_ratio: float = 0.75
    norm_pix_loss: bool = False


@dataclass
class MAEOutput:
    """loss (scalar) · pred (B, N, p·p·C) in patch order · mask (B, N), 1 = hidden · ids_restore (B, N)."""

    loss: Tensor
    pred: Tensor
    mask: Tensor
    ids_restore: Tensor


class MAEDecoder(nn.Module):
    """The MAE decoder: a narrow transformer that fills the hidden patches in from the visible latent."""

    def __init__(self, cfg: MAEConfig, patch_size: int) -> None:
        super().__init__()
        enc = cfg.encoder
        grid = (enc.image_size[0] // patch_size, enc.image_size[1] // patch_size)
        self.embed = nn.Linear(enc.dim, cfg.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_dim))
        self.pos_embed = SinCosPosEmbed(grid, cfg.decoder_dim)  # fixed; computed for any grid (2-D, exact)
        self.blocks = nn.ModuleList([
            Block(cfg.decoder_dim, cfg.decoder_num_heads, cfg.decoder_mlp_ratio, qkv_bias=True, eps=enc.eps)
            for _ in range(cfg.decoder_depth)])
        self.norm = nn.LayerNorm(cfg.decoder_dim, eps=enc.eps)
        self.pred = nn.Linear(cfg.decoder_dim, patch_size * patch_size * enc.in_chans)
        self.init_weights()

    def init_weights(self) -> None:
        """As the MAE reference: xavier-uniform Linear weights, zero biases, mask token ~N(0, 0.02)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: Tensor, ids_restore: Tensor, grid: tuple[int, int], num_prefix: int) -> Tensor:
        """latent (B, P + K, D), ids_restore (B, N) → pred (B, N, p·p·C) in patch order."""
        x = self.embed(latent)  # (B, P + K, Dd)
        prefix, visible = x[:, :num_prefix], x[:, num_prefix:]
        B, N = ids_restore.shape
        mask_tokens = self.mask_token.to(x.dtype).expand(B, N - visible.shape[1], -1)
        patches = torch.cat([visible, mask_tokens], dim=1)  # (B, N, Dd), visible first (shuffled order)
        patches = gather_tokens(patches, ids_restore)  # (B, N, Dd), back in patch order
        patches = patches + self.pos_embed(grid).to(x.dtype)
        x = torch.cat([prefix, patches], dim=1)  # [CLS] keeps a zero position embedding, as in the reference
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, num_prefix:]  # (B, N, p·p·C)


class MaskedAutoencoder(nn.Module):
    """MAE = ViT encoder (visible patches only) + light decoder; `forward` returns an `MAEOutput`."""

    def __init__(self, cfg: MAEConfig) -> None:
        super().__init__()
        if not cfg.encoder.patchify_stem:
            raise ValueError("MAE masks patches, so it needs a patchify encoder; a hybrid (backbone) or "
                             "conv-stem encoder is not supported")
        if cfg.encoder.rope is not None or cfg.encoder.distilled:
            raise ValueError("vitkit's MAE encoder cannot use RoPE (it would need the kept patches' places) "
                             "or a distillation token; registers and LayerScale are fine")
        self.config = cfg
        self.encoder = VisionTransformer(cfg.encoder)
        self.patch_size = self.encoder.patch_size
        self.decoder = MAEDecoder(cfg, self.patch_size)

    def no_weight_decay(self) -> set[str]:
        return {f"encoder.{n}" for n in self.encoder.no_weight_decay()} | {"decoder.mask_token"}

    def forward_encoder(self, images: Tensor, mask_ratio: float,
                        noise: Tensor | None = None) -> tuple[Tensor, RandomMask, tuple[int, int]]:
        """images (B, C, H, W) → latent (B, P + K, D), the masking, grid (gh, gw)."""
        tokens, grid = self.encoder.embed(images)  # (B, N, D)
        tokens = self.encoder.add_pos_embed(tokens, grid)
        B, N, _ = tokens.shape
        masking = random_masking(B, N, mask_ratio, noise=noise, device=tokens.device)
        tokens = gather_tokens(tokens, masking.ids_keep)  # (B, K, D)
        latent = self.encoder.forward_tokens(self.encoder.add_prefix_tokens(tokens))  # (B, P + K, D)
        return latent, masking, grid

    def forward_decoder(self, latent: Tensor, ids_restore: Tensor, grid: tuple[int, int]) -> Tensor:
        """latent (B, P + K, D) → pred (B, N, p·p·C)."""
        return self.decoder(latent, ids_restore, grid, self.encoder.num_prefix_tokens)

    def targets(self, images: Tensor) -> Tensor:
        """The pixels the decoder predicts: patches (B, N, p·p·C), per-patch normalised if `norm_pix_loss`."""
        target = patchify(images, self.patch_size)
        if self.config.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)  # unbiased, as the reference and HF
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        return target

    def forward_loss(self, images: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        """Mean squared error per patch, averaged over the hidden patches (over all when none is hidden)."""
        per_patch = ((pred - self.targets(images)) ** 2).mean(dim=-1)  # (B, N)
        if mask.sum() == 0:
            return per_patch.mean()
        return (per_patch * mask).sum() / mask.sum()

    def forward(self, images: Tensor, mask_ratio: float | None = None,
                noise: Tensor | None = None) -> MAEOutput:
        """images (B, C, H, W), normalised as the encoder's preprocess says.

        Args:
            mask_ratio: share of patches hidden from the encoder (config default, 0.75 in the paper);
                0 runs every patch in its original order.
            noise: (B, N) uniform noise deciding the masking (the smallest `K` are kept); random if None.
        """
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        latent, masking, grid = self.forward_encoder(images, ratio, noise)
        pred = self.forward_decoder(latent, masking.ids_restore, grid)
        loss = self.forward_loss(images, pred, masking.mask)
        return MAEOutput(loss, pred, masking.mask, masking.ids_restore)

    def export_encoder(self, learnable_pos_embed: bool = True) -> VisionTransformer:
        """A standalone copy of the encoder as a plain ViT (no head), for fine-tuning or saving.

        With `learnable_pos_embed` (the MAE fine-tuning recipe) the fixed sin-cos table becomes the initial
        value of learned position embeddings (a zero one for [CLS]); otherwise the copy keeps them fixed.
        """
        if not learnable_pos_embed or self.config.encoder.pos_embed == "learn":
            return copy.deepcopy(self.encoder)
        cfg = copy.deepcopy(self.config.encoder)
        cfg.pos_embed = "learn"
        vit = VisionTransformer(cfg).to(next(self.parameters()).device)
        state = self.encoder.state_dict()
        grid = (cfg.image_size[0] // self.patch_size, cfg.image_size[1] // self.patch_size)
        state["pos_embed.weight"] = sincos_pos_embed_2d(cfg.dim, grid)[None]  # (1, N, D)
        if cfg.class_token:
            state["cls_pos_embed"] = torch.zeros(1, 1, cfg.dim)
        vit.load_state_dict(state, strict=True)
        return vit


register_model_type("mae", MAEConfig, MaskedAutoencoder)

# Presets: the paper's encoders (ImageNet preprocessing, 8 × 512 decoder) and small-image ones (CIFAR-like).
IMAGENET_PREPROCESS = PreprocessConfig(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))  # MAE's
_CIFAR = PreprocessConfig(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


def mae_config(spec: str, image_size: int = 224, decoder: tuple[int, int, int] = (512, 8, 16),
               preprocess: PreprocessConfig = IMAGENET_PREPROCESS, **encoder_overrides) -> MAEConfig:
    """MAE config for a paper size, e.g. ``mae_config("B/16")``; `decoder` is (width, depth, heads)."""
    encoder = vit_config(spec, image_size, pos_embed="sincos", num_classes=0, preprocess=preprocess,
                         **encoder_overrides)
    dim, depth, heads = decoder
    return MAEConfig(encoder=encoder, decoder_dim=dim, decoder_depth=depth, decoder_num_heads=heads)


register_model("mae_vit_base_patch16", mae_config("B/16"))
register_model("mae_vit_large_patch16", mae_config("L/16"))
register_model("mae_vit_huge_patch14", mae_config("H/14"))
register_model("mae_vit_tiny_patch4_32", mae_config("Ti/4", 32, (128, 2, 4), _CIFAR, depth=6))
register_model("mae_vit_small_patch4_32", mae_config("S/4", 32, (192, 4, 6), _CIFAR, depth=8))
