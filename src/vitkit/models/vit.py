"""Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021).

images → patch embedding (conv k×k, or a ResNet stem for the hybrid) → + position embeddings →
[CLS] prepended → pre-norm transformer encoder → final LayerNorm →
pooled token ([CLS] or mean of patches + fc-norm) → optional pre-logits (Linear + tanh) → classification head.

Shapes: B batch · C channels · H, W image sides · p patch · (gh, gw) patch grid · N = gh·gw patches ·
P prefix tokens (1 with [CLS], else 0) · T = P + N tokens · D width.

The [CLS] token and its position embedding are stored apart from the patch position embeddings, so MAE, MPP
and DPT never slice parameters; converters fold and unfold foreign layouts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..config import PreprocessConfig
from ..layers import Block, LearnedPosEmbed, PatchEmbed, SinCosPosEmbed
from ..layers.conv_stem import ConvStem, ConvStemConfig
from .resnetv2 import ResNetV2Config


@dataclass
class ViTConfig:
    """Architecture of a VisionTransformer (and the preprocessing its weights expect)."""

    image_size: tuple[int, int] = (224, 224)
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    class_token: bool = True
    pool: Literal["cls", "avg"] = "cls"
    fc_norm: bool | None = None  # LayerNorm after pooling instead of before; default: pool == "avg"
    representation_size: int | None = None  # pre-logits width (Linear + tanh), as in the paper's 21k models
    pos_embed: Literal["learn", "sincos"] = "learn"
    pos_interp: str = "bicubic"  # F.interpolate mode used to resample position embeddings to a new grid
    pos_antialias: bool = False
    eps: float = 1e-6
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    head_drop_rate: float = 0.0
    backbone: ResNetV2Config | None = None  # hybrid: a ResNetV2 feature map fed as 1×1 patches
    conv_stem: ConvStemConfig | None = None  # early convolutions (Xiao et al. 2021) replace the patch conv
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def __post_init__(self) -> None:
        if isinstance(self.image_size, int):
            self.image_size = (self.image_size, self.image_size)
        self.image_size = tuple(self.image_size)
        if self.pool == "cls" and not self.class_token:
            raise ValueError("pool='cls' needs class_token=True; use pool='avg' for a model without [CLS]")
        if self.backbone is not None and self.conv_stem is not None:
            raise ValueError("a ViT has one patch embedder: set backbone (hybrid) or conv_stem, not both")

    @property
    def patchify_stem(self) -> bool:
        """True for the paper's plain stem: one k×k conv with stride k (no ResNet trunk, no conv stem)."""
        return self.backbone is None and self.conv_stem is None

    @property
    def use_fc_norm(self) -> bool:
        return self.pool == "avg" if self.fc_norm is None else self.fc_norm


def build_patch_embed(cfg: ViTConfig) -> nn.Module:
    """The patch embedder a config asks for: conv patches, a conv stem, or the hybrid's ResNetV2 trunk."""
    if cfg.conv_stem is not None:
        return ConvStem(cfg.conv_stem, cfg.in_chans, cfg.dim, cfg.patch_size)
    if cfg.backbone is None:
        return PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.dim)
    from .hybrid import HybridEmbed

    return HybridEmbed(cfg.backbone, cfg.in_chans, cfg.dim, cfg.patch_size)


class VisionTransformer(nn.Module):
    """ViT classifier with the uniform vitkit contract.

    Public methods, from fine to coarse:
    `embed` (patches, no positions) → `add_pos_embed` → `add_cls` → `forward_blocks` →
    `forward_tokens` (blocks + final norm) → `forward_features` → `forward_head` → `forward`.
    `forward_intermediates` hands back the tokens after chosen blocks for dense heads and probing.
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.config = cfg
        D = cfg.dim
        self.patch_embed = build_patch_embed(cfg)
        self.patch_size = self.patch_embed.patch_size
        grid = (cfg.image_size[0] // self.patch_size, cfg.image_size[1] // self.patch_size)
        self.num_prefix_tokens = 1 if cfg.class_token else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D)) if cfg.class_token else None
        learned = cfg.pos_embed == "learn"
        self.cls_pos_embed = nn.Parameter(torch.zeros(1, 1, D)) if cfg.class_token and learned else None
        self.pos_embed = (LearnedPosEmbed(grid, D, cfg.pos_interp, cfg.pos_antialias) if learned
                          else SinCosPosEmbed(grid, D))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # grows with depth
        self.blocks = nn.ModuleList([
            Block(D, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias,
                  cfg.drop_rate, cfg.attn_drop_rate, rate, cfg.eps)
            for rate in rates])
        self.norm = nn.Identity() if cfg.use_fc_norm else nn.LayerNorm(D, eps=cfg.eps)
        self.fc_norm = nn.LayerNorm(D, eps=cfg.eps) if cfg.use_fc_norm else nn.Identity()
        self.pre_logits = nn.Identity()
        if cfg.representation_size:
            self.pre_logits = nn.Sequential()
            self.pre_logits.add_module("fc", nn.Linear(D, cfg.representation_size))
            self.pre_logits.add_module("act", nn.Tanh())
        self.head_drop = nn.Dropout(cfg.head_drop_rate)
        self.head = self._new_head(cfg.num_classes)
        self.grad_checkpointing = False
        self.init_weights()

    # ---- construction -------------------------------------------------------------------------------------
    @property
    def num_features(self) -> int:
        return self.config.representation_size or self.config.dim

    def _new_head(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def init_weights(self) -> None:
        """The reference JAX init: xavier-uniform Linear weights (MLP biases ~N(0, 1e-6)), lecun-normal patch
        projection, position embeddings ~N(0, 0.02), zero [CLS] and a zero head."""
        for block in self.blocks:
            block.attn.reset_parameters()
            for fc in (block.mlp.fc1, block.mlp.fc2):
                nn.init.xavier_uniform_(fc.weight)
                nn.init.normal_(fc.bias, std=1e-6)
        if isinstance(self.patch_embed, PatchEmbed):
            w = self.patch_embed.proj.weight
            std = math.sqrt(1.0 / w[0].numel())  # lecun-normal over fan-in = C·p·p
            nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(self.patch_embed.proj.bias)
        if self.cls_token is not None:
            nn.init.zeros_(self.cls_token)
        if isinstance(self.head, nn.Linear):
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def reset_classifier(self, num_classes: int, pool: Literal["cls", "avg"] | None = None) -> None:
        """Replace the head (zero-initialised) for `num_classes` (0 = no head); optionally change pooling."""
        if pool is not None:
            if pool == "cls" and self.cls_token is None:
                raise ValueError("this model has no [CLS] token; use pool='avg'")
            self.config.pool = pool
        self.config.num_classes = num_classes
        device = next(self.parameters()).device
        self.head = self._new_head(num_classes).to(device)
        if isinstance(self.head, nn.Linear):
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass (less memory, ~30% more compute)."""
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Parameter names that AdamW should not decay (tokens and position embeddings)."""
        return {"cls_token", "cls_pos_embed", "pos_embed.weight"}

    # ---- the forward pass, step by step --------------------------------------------------------------------
    def embed(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """images (B, C, H, W) → patch tokens (B, N, D) without positions, grid (gh, gw)."""
        return self.patch_embed(images)

    def add_pos_embed(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """tokens (B, N, D) in patch order → tokens + position embeddings resampled to `grid`."""
        return tokens + self.pos_embed(grid).to(tokens.dtype)

    def add_cls(self, tokens: Tensor) -> Tensor:
        """tokens (B, N, D) → (B, P + N, D): [CLS] (+ its position embedding) prepended when configured."""
        if self.cls_token is None:
            return tokens
        cls = self.cls_token if self.cls_pos_embed is None else self.cls_token + self.cls_pos_embed
        return torch.cat([cls.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)

    def forward_blocks(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """Run the encoder blocks on tokens (B, T, D); no final norm."""
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, mask, use_reentrant=False)
            else:
                tokens = block(tokens, mask)
        return tokens

    def forward_tokens(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """Encoder on prepared tokens (B, T, D): blocks, then the final norm."""
        return self.norm(self.forward_blocks(tokens, mask))

    def prepare_tokens(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) → input tokens (B, T, D): embed, add positions, prepend [CLS], dropout."""
        tokens, grid = self.embed(images)
        return self.pos_drop(self.add_cls(self.add_pos_embed(tokens, grid)))

    def forward_features(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) → tokens (B, T, D) after the final norm."""
        return self.forward_tokens(self.prepare_tokens(images))

    def pool(self, tokens: Tensor) -> Tensor:
        """tokens (B, T, D) → (B, D): [CLS] token, or the mean of patch tokens."""
        if self.config.pool == "cls":
            return tokens[:, 0]
        return tokens[:, self.num_prefix_tokens:].mean(dim=1)

    def forward_head(self, tokens: Tensor, pre_logits: bool = False) -> Tensor:
        """tokens (B, T, D) → logits (B, num_classes), or pooled features if `pre_logits`."""
        x = self.pre_logits(self.fc_norm(self.pool(tokens)))
        return x if pre_logits else self.head(self.head_drop(x))

    def forward(self, images: Tensor) -> Tensor:
        """images (B, C, H, W), sides multiples of the patch → logits (B, num_classes)."""
        return self.forward_head(self.forward_features(images))

    def forward_intermediates(self, images: Tensor, layers: int | Sequence[int] | None = None,
                              norm: bool = False, output_fmt: Literal["NLC", "NCHW"] = "NLC",
                              return_prefix_tokens: bool = False,
                              ) -> list[Tensor] | list[tuple[Tensor, Tensor]]:
        """The encoder's output after the chosen blocks: tokens, or patch maps for dense heads.

        Args:
            images: (B, C, H, W), sides multiples of the patch (non-square too).
            layers: block indices (negative counts from the end), or an int n for the last n blocks;
                None for every block.
            norm: apply the final norm to each returned tensor.
            output_fmt: "NLC": all tokens (B, T, D) as the blocks see them (prefix tokens first);
                "NCHW": the P prefix tokens ([CLS], registers) removed and the N patch tokens laid out on the
                patch grid, (B, D, gh, gw).
            return_prefix_tokens: with "NCHW", return (map (B, D, gh, gw), prefix tokens (B, P, D)) pairs.
        """
        return self.forward_stages_and_intermediates(images, layers, norm, output_fmt,
                                                     return_prefix_tokens)[1]

    def forward_stages_and_intermediates(
            self, images: Tensor, layers: int | Sequence[int] | None = None, norm: bool = False,
            output_fmt: Literal["NLC", "NCHW"] = "NLC", return_prefix_tokens: bool = False,
    ) -> tuple[list[Tensor], list[Tensor] | list[tuple[Tensor, Tensor]]]:
        """One pass → (the patch embedder's stage maps, what `forward_intermediates` returns).

        Stage maps are a hybrid's ResNet stages [(B, C_i, H_i, W_i), ...] (`HybridEmbed.forward_with_stages`);
        a conv-patch ViT has none ([]). Dense heads (DPT-Hybrid) tap both without running the trunk twice.
        """
        if output_fmt not in ("NLC", "NCHW"):
            raise ValueError(f"output_fmt must be 'NLC' or 'NCHW', not {output_fmt!r}")
        if return_prefix_tokens and output_fmt != "NCHW":
            raise ValueError("return_prefix_tokens needs output_fmt='NCHW' (NLC tokens keep their prefix)")
        if hasattr(self.patch_embed, "forward_with_stages"):
            tokens, grid, stages = self.patch_embed.forward_with_stages(images)
        else:
            (tokens, grid), stages = self.embed(images), []
        tokens = self.pos_drop(self.add_cls(self.add_pos_embed(tokens, grid)))  # as in prepare_tokens
        found = self._intermediates(tokens, layers, norm)
        if output_fmt == "NLC":
            return stages, found
        maps = [self.tokens_to_map(t, grid) for t in found]
        if return_prefix_tokens:
            return stages, [(m, t[:, :self.num_prefix_tokens]) for m, t in zip(maps, found, strict=True)]
        return stages, maps

    def tokens_to_map(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """tokens (B, P + N, D) → patch map (B, D, gh, gw): the P prefix tokens dropped, patches on the
        grid."""
        patches = tokens[:, self.num_prefix_tokens:]
        if patches.shape[1] != grid[0] * grid[1]:
            raise ValueError(f"{patches.shape[1]} patch tokens do not fill a {grid[0]}×{grid[1]} grid")
        return patches.transpose(1, 2).reshape(patches.shape[0], -1, *grid)  # (B, N, D) → (B, D, gh, gw)

    def _intermediates(self, tokens: Tensor, layers: int | Sequence[int] | None, norm: bool) -> list[Tensor]:
        wanted = self.block_indices(layers)
        found: dict[int, Tensor] = {}
        for i, block in enumerate(self.blocks[: max(wanted) + 1]):
            if self.grad_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, None, use_reentrant=False)
            else:
                tokens = block(tokens)
            if i in wanted:
                found[i] = self.norm(tokens) if norm else tokens
        return [found[i] for i in wanted]

    def block_indices(self, layers: int | Sequence[int] | None) -> list[int]:
        """`layers` as `forward_intermediates` takes it → block indices in [0, depth), in the order given."""
        depth = len(self.blocks)
        if layers is None:
            return list(range(depth))
        if isinstance(layers, int):
            if not 0 < layers <= depth:
                raise IndexError(f"cannot take the last {layers} blocks of a {depth}-block encoder")
            return list(range(depth - layers, depth))
        if len(layers) == 0:
            raise IndexError("no layers asked for")
        return [i % depth if -depth <= i < depth else _bad_layer(i, depth) for i in layers]


def _bad_layer(i: int, depth: int) -> int:
    raise IndexError(f"layer {i} out of range for a {depth}-block encoder")
