"""Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021).

images → patch embedding (conv k×k, or a ResNet stem for the hybrid) → + position embeddings →
prefix tokens prepended → pre-norm transformer encoder → final LayerNorm →
pooled token ([CLS], mean of patches + fc-norm, or both concatenated) → optional pre-logits (Linear + tanh)
→ classification head.

The later ViT family is the same model with other modules chosen by the config: LayerScale (DeiT III,
DINOv2), a SwiGLU MLP (DINOv2-g, DINOv3), QK-norm, 2-D RoPE in the attention instead of added position
embeddings (DINOv3), register tokens (Darcet et al., "Vision Transformers Need Registers", ICLR 2024) and a
distillation token with its own head (DeiT, Touvron et al., ICML 2021). Presets live in `vit_presets` and
`vit_family`.

Prefix tokens, in this order: [CLS] · [DIST] (DeiT) · R registers. [CLS] and [DIST] may have position
embeddings; registers never do.

Shapes: B batch · C channels · H, W image sides · p patch · (gh, gw) patch grid · N = gh·gw patches ·
P prefix tokens · T = P + N tokens · D width.

The prefix tokens and their position embeddings are stored apart from the patch position embeddings, so MAE,
MPP and DPT never slice parameters; converters fold and unfold foreign layouts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..config import PreprocessConfig
from ..layers import (
    Block,
    LearnedPosEmbed,
    Mlp,
    PatchEmbed,
    RopeConfig,
    RotaryEmbedding2d,
    SinCosPosEmbed,
    SwiGLU,
    swiglu_hidden_dim,
)
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
    pool: Literal["cls", "avg", "cls+avg"] = "cls"  # cls+avg: [CLS] and the patch mean concatenated (2·D)
    fc_norm: bool | None = None  # LayerNorm after pooling instead of before; default: pool == "avg"
    representation_size: int | None = None  # pre-logits width (Linear + tanh), as in the paper's 21k models
    pos_embed: Literal["learn", "sincos", "none"] = "learn"  # added position embeddings ("none": RoPE only)
    pos_interp: str = "bicubic"  # F.interpolate mode used to resample position embeddings to a new grid
    pos_antialias: bool = False
    eps: float = 1e-6
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    head_drop_rate: float = 0.0
    backbone: ResNetV2Config | None = None  # hybrid: a ResNetV2 feature map fed as 1×1 patches
    conv_stem: ConvStemConfig | None = None  # early convolutions (Xiao et al. 2021) replace the patch conv
    num_register_tokens: int = 0  # registers: prefix tokens after [CLS] (and [DIST]), no position embeddings
    distilled: bool = False  # DeiT: a [DIST] token after [CLS] with its own head; logits = mean of the two
    layer_scale_init: float | None = None  # LayerScale's initial γ on both residual branches; None: none
    mlp: Literal["gelu", "swiglu"] = "gelu"
    mlp_hidden_dim: int | None = None  # MLP width H; default: see `mlp_width`
    qk_norm: bool = False  # LayerNorm on each head's queries and keys
    rope: RopeConfig | None = None  # 2-D rotary position embeddings on the patch tokens (DINOv3)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def __post_init__(self) -> None:
        if isinstance(self.image_size, int):
            self.image_size = (self.image_size, self.image_size)
        self.image_size = tuple(self.image_size)
        if self.pool == "cls" and not self.class_token:
            raise ValueError("pool='cls' needs class_token=True; use pool='avg' for a model without [CLS]")
        if self.backbone is not None and self.conv_stem is not None:
            raise ValueError("a ViT has one patch embedder: set backbone (hybrid) or conv_stem, not both")
        if (self.distilled or self.num_register_tokens) and not self.class_token:
            raise ValueError("a distillation token or register tokens need class_token=True")
        if self.distilled and (self.pool != "cls" or (self.representation_size and self.num_classes)):
            raise ValueError("a distilled (DeiT) model classifies [CLS] and [DIST] with two linear heads: "
                             "use pool='cls' and no representation_size under a head")
        if self.pool == "cls+avg" and (self.fc_norm or not self.class_token):
            raise ValueError("pool='cls+avg' needs class_token=True and fc_norm off")
        if self.mlp not in ("gelu", "swiglu"):
            raise ValueError(f"mlp must be 'gelu' or 'swiglu', got {self.mlp!r}")

    @property
    def patchify_stem(self) -> bool:
        """True for the paper's plain stem: one k×k conv with stride k (no ResNet trunk, no conv stem)."""
        return self.backbone is None and self.conv_stem is None

    @property
    def use_fc_norm(self) -> bool:
        return self.pool == "avg" if self.fc_norm is None else self.fc_norm

    @property
    def num_prefix_tokens(self) -> int:
        """P: [CLS] + [DIST] + registers."""
        return int(self.class_token) + int(self.distilled) + self.num_register_tokens

    @property
    def mlp_width(self) -> int:
        """The MLP's hidden width H (per branch for SwiGLU)."""
        if self.mlp_hidden_dim is not None:
            return self.mlp_hidden_dim
        if self.mlp == "swiglu":
            return swiglu_hidden_dim(self.dim, self.mlp_ratio)
        return int(self.dim * self.mlp_ratio)


def build_patch_embed(cfg: ViTConfig) -> nn.Module:
    """The patch embedder a config asks for: conv patches, a conv stem, or the hybrid's ResNetV2 trunk."""
    if cfg.conv_stem is not None:
        return ConvStem(cfg.conv_stem, cfg.in_chans, cfg.dim, cfg.patch_size)
    if cfg.backbone is None:
        return PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.dim)
    from .hybrid import HybridEmbed

    return HybridEmbed(cfg.backbone, cfg.in_chans, cfg.dim, cfg.patch_size)


def build_block(cfg: ViTConfig, drop_path: float) -> Block:
    """One encoder block with the MLP, LayerScale and QK-norm the config chooses."""
    mlp_cls = SwiGLU if cfg.mlp == "swiglu" else Mlp
    qk_norm = partial(nn.LayerNorm, eps=cfg.eps) if cfg.qk_norm else None
    return Block(cfg.dim, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.drop_rate, cfg.attn_drop_rate,
                 drop_path, cfg.eps, mlp=mlp_cls(cfg.dim, cfg.mlp_width, drop=cfg.drop_rate),
                 layer_scale_init=cfg.layer_scale_init, qk_norm=qk_norm)


def _token(enabled: bool, count: int, dim: int) -> nn.Parameter | None:
    return nn.Parameter(torch.zeros(1, count, dim)) if enabled and count else None


class VisionTransformer(nn.Module):
    """ViT classifier with the uniform vitkit contract.

    Public methods, from fine to coarse:
    `embed` (patches, no positions) → `add_pos_embed` → `add_prefix_tokens` → `forward_blocks` →
    `forward_tokens` (blocks + final norm) → `forward_features` → `forward_head` → `forward`.
    With RoPE the block-running methods need the patch `grid` (the rotation depends on each patch's place).
    `forward_intermediates` hands back the tokens after chosen blocks for dense heads and probing.
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.config = cfg
        D = cfg.dim
        self.patch_embed = build_patch_embed(cfg)
        self.patch_size = self.patch_embed.patch_size
        grid = (cfg.image_size[0] // self.patch_size, cfg.image_size[1] // self.patch_size)
        self.num_prefix_tokens = cfg.num_prefix_tokens
        learned = cfg.pos_embed == "learn"
        self.cls_token = _token(cfg.class_token, 1, D)
        self.cls_pos_embed = _token(cfg.class_token and learned, 1, D)
        self.dist_token = _token(cfg.distilled, 1, D)
        self.dist_pos_embed = _token(cfg.distilled and learned, 1, D)
        self.reg_token = _token(True, cfg.num_register_tokens, D)  # (1, R, D)
        self.pos_embed = {"learn": lambda: LearnedPosEmbed(grid, D, cfg.pos_interp, cfg.pos_antialias),
                          "sincos": lambda: SinCosPosEmbed(grid, D), "none": lambda: None}[cfg.pos_embed]()
        self.rope = None if cfg.rope is None else RotaryEmbedding2d(D // cfg.num_heads, cfg.rope)
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # grows with depth
        self.blocks = nn.ModuleList([build_block(cfg, rate) for rate in rates])
        self.norm = nn.Identity() if cfg.use_fc_norm else nn.LayerNorm(D, eps=cfg.eps)
        self.fc_norm = nn.LayerNorm(D, eps=cfg.eps) if cfg.use_fc_norm else nn.Identity()
        self.pre_logits = nn.Identity()
        if cfg.representation_size:
            self.pre_logits = nn.Sequential()
            self.pre_logits.add_module("fc", nn.Linear(D, cfg.representation_size))
            self.pre_logits.add_module("act", nn.Tanh())
        self.head_drop = nn.Dropout(cfg.head_drop_rate)
        self.head = self._new_head(cfg.num_classes)
        self.head_dist = self._new_head(cfg.num_classes) if cfg.distilled and cfg.num_classes else None
        self.grad_checkpointing = False
        self.init_weights()

    # ---- construction -------------------------------------------------------------------------------------
    @property
    def num_features(self) -> int:
        cfg = self.config
        return cfg.representation_size or (2 * cfg.dim if cfg.pool == "cls+avg" else cfg.dim)

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
        for token in (self.dist_token, self.reg_token):  # timm's init: distinct from the zero [CLS]
            if token is not None:
                nn.init.trunc_normal_(token, std=0.02)
        if isinstance(self.patch_embed, PatchEmbed):
            w = self.patch_embed.proj.weight
            std = math.sqrt(1.0 / w[0].numel())  # lecun-normal over fan-in = C·p·p
            nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)
            nn.init.zeros_(self.patch_embed.proj.bias)
        if self.cls_token is not None:
            nn.init.zeros_(self.cls_token)
        self._zero_heads()

    def _zero_heads(self) -> None:
        for head in (self.head, self.head_dist):
            if isinstance(head, nn.Linear):
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    def reset_classifier(self, num_classes: int,
                         pool: Literal["cls", "avg", "cls+avg"] | None = None) -> None:
        """New zero-initialised head(s) for `num_classes` (0 = no head); optionally change pooling."""
        if pool is not None:
            if pool != "avg" and self.cls_token is None:
                raise ValueError("this model has no [CLS] token; use pool='avg'")
            if self.head_dist is not None and pool != "cls":
                raise ValueError("a distilled model classifies from [CLS] and [DIST]; keep pool='cls'")
            self.config.pool = pool
        self.config.num_classes = num_classes
        device = next(self.parameters()).device
        self.head = self._new_head(num_classes).to(device)
        if self.config.distilled:
            self.head_dist = self._new_head(num_classes).to(device) if num_classes else None
        self._zero_heads()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass (less memory, ~30% more compute)."""
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Parameter names that AdamW should not decay (tokens and position embeddings)."""
        names = {"cls_token", "cls_pos_embed", "dist_token", "dist_pos_embed", "reg_token",
                 "pos_embed.weight"}
        return names & {name for name, _ in self.named_parameters()}

    # ---- the forward pass, step by step --------------------------------------------------------------------
    def embed(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """images (B, C, H, W) → patch tokens (B, N, D) without positions, grid (gh, gw)."""
        return self.patch_embed(images)

    def add_pos_embed(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """tokens (B, N, D) in patch order → tokens + position embeddings resampled to `grid`."""
        return tokens if self.pos_embed is None else tokens + self.pos_embed(grid).to(tokens.dtype)

    def add_prefix_tokens(self, tokens: Tensor) -> Tensor:
        """tokens (B, N, D) → (B, P + N, D): [CLS], [DIST] (each + its position embedding) and the registers
        prepended, as configured."""
        prefix = []
        for token, pos in ((self.cls_token, self.cls_pos_embed), (self.dist_token, self.dist_pos_embed),
                           (self.reg_token, None)):
            if token is not None:
                prefix.append(token if pos is None else token + pos)
        if not prefix:
            return tokens
        prefix = torch.cat(prefix, dim=1).to(tokens.dtype)  # (1, P, D)
        return torch.cat([prefix.expand(tokens.shape[0], -1, -1), tokens], dim=1)

    add_cls = add_prefix_tokens  # the name from before registers and [DIST]; MAE, MPP and DPT call it

    def rope_for(self, grid: tuple[int, int] | None) -> tuple[Tensor, Tensor] | None:
        """RoPE's (cos, sin), each (N, d), for a patch grid; None without RoPE."""
        if self.rope is None:
            return None
        if grid is None:
            raise ValueError("this encoder uses RoPE, which needs each patch's place: pass grid=(gh, gw)")
        return self.rope(grid)

    def forward_blocks(self, tokens: Tensor, mask: Tensor | None = None,
                       grid: tuple[int, int] | None = None) -> Tensor:
        """Run the encoder blocks on tokens (B, T, D); no final norm. `grid` (gh, gw): needed with RoPE."""
        rope = self.rope_for(grid)
        for block in self.blocks:
            tokens = self._run_block(block, tokens, mask, rope)
        return tokens

    def _run_block(self, block: Block, tokens: Tensor, mask: Tensor | None,
                   rope: tuple[Tensor, Tensor] | None) -> Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, tokens, mask, rope, use_reentrant=False)
        return block(tokens, mask, rope)

    def forward_tokens(self, tokens: Tensor, mask: Tensor | None = None,
                       grid: tuple[int, int] | None = None) -> Tensor:
        """Encoder on prepared tokens (B, T, D): blocks, then the final norm."""
        return self.norm(self.forward_blocks(tokens, mask, grid))

    def prepare_tokens(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) → input tokens (B, T, D): embed, positions, prefix tokens, dropout."""
        tokens, grid = self.embed(images)
        return self.pos_drop(self.add_prefix_tokens(self.add_pos_embed(tokens, grid)))

    def patch_grid(self, images: Tensor) -> tuple[int, int]:
        """The (gh, gw) patch grid of images (B, C, H, W)."""
        return images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size

    def forward_features(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) → tokens (B, T, D) after the final norm."""
        return self.forward_tokens(self.prepare_tokens(images), grid=self.patch_grid(images))

    def pool(self, tokens: Tensor) -> Tensor:
        """tokens (B, T, D) → [CLS] (B, D), the mean of the patch tokens (B, D; prefix tokens left out), or
        both concatenated (B, 2·D)."""
        if self.config.pool == "cls":
            return tokens[:, 0]
        patches = tokens[:, self.num_prefix_tokens:].mean(dim=1)
        return patches if self.config.pool == "avg" else torch.cat([tokens[:, 0], patches], dim=-1)

    def forward_head(self, tokens: Tensor, pre_logits: bool = False) -> Tensor:
        """tokens (B, T, D) → logits (B, num_classes), or pooled features if `pre_logits`.

        A distilled model averages its two heads, on [CLS] and on [DIST] (DeiT's inference, as HF's
        DeiTForImageClassificationWithTeacher); its features are the pooled [CLS], as HF's DeiTModel pools."""
        x = self.pre_logits(self.fc_norm(self.pool(tokens)))
        if pre_logits:
            return x
        logits = self.head(self.head_drop(x))
        if self.head_dist is not None:
            dist = tokens[:, 1]  # [DIST] comes right after [CLS]
            logits = (logits + self.head_dist(self.head_drop(dist))) / 2
        return logits

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
        found = self._intermediates(tokens, layers, norm, grid)
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

    def _intermediates(self, tokens: Tensor, layers: int | Sequence[int] | None, norm: bool,
                       grid: tuple[int, int] | None = None) -> list[Tensor]:
        wanted = self.block_indices(layers)
        found: dict[int, Tensor] = {}
        rope = self.rope_for(grid)
        for i, block in enumerate(self.blocks[: max(wanted) + 1]):
            tokens = self._run_block(block, tokens, None, rope)
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
