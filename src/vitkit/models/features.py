"""Feature maps from any ViT-family model, as timm's ``features_only``: a backbone for dense heads.

`create_model(name, features_only=True, out_indices=(...))` wraps a VisionTransformer (plain, hybrid, DINOv2)
in a `FeatureBackbone`, whose forward hands back one map (B, C, H/s, W/s) per output index and whose
`feature_info` tells each map's channels C and reduction s. DPT reads its taps through the same functions.

Level indexing. A model's levels are numbered in the order the image meets them:

* a plain ViT: level i is block i (its output tokens with the prefix tokens — [CLS], registers — removed,
  laid out on the patch grid: C = D, s = patch);
* a hybrid: its S ResNet stages first (levels 0 … S-1, C = that stage's width, s = 4·2^i), then its blocks
  (levels S … S + depth - 1).

Negative indices count from the end, so -1 is the last block for both.

Shapes: B batch · H, W image sides · C_i, (h_i, w_i) = (H / s_i, W / s_i) level i's width and sides ·
(gh, gw) patch grid · P prefix tokens · D width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from .vit import VisionTransformer


@dataclass(frozen=True)
class FeatureInfo:
    """One level a model can hand back: its level index, what it is (`kind` and `position`: ResNet stage i or
    block i), its width `channels`, its `reduction` (input side / map side) and the `module` producing it."""

    index: int
    kind: Literal["stage", "block"]
    position: int
    channels: int
    reduction: int
    module: str


@dataclass
class FeatureMaps:
    """maps: one (B, C_i, h_i, w_i) per level asked for. readout: per level, the [CLS] token (B, D) of a block
    level of a model with one (registers are never readouts), else None (ResNet stages, models without
    [CLS])."""

    maps: list[Tensor]
    readout: list[Tensor | None]


def feature_levels(model: VisionTransformer) -> list[FeatureInfo]:
    """Every level `model` can hand back, in level order (a hybrid's ResNet stages, then the blocks)."""
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"feature maps need a ViT-family model (a VisionTransformer), not "
                        f"{type(model).__name__}")
    stages = (model.patch_embed.stage_channels_and_strides()
              if hasattr(model.patch_embed, "stage_channels_and_strides") else [])
    levels = [FeatureInfo(i, "stage", i, c, s, f"patch_embed.backbone.stages.{i}")
              for i, (c, s) in enumerate(stages)]
    S = len(levels)
    levels += [FeatureInfo(S + i, "block", i, model.config.dim, model.patch_size, f"blocks.{i}")
               for i in range(len(model.blocks))]
    return levels


def default_out_indices(model: VisionTransformer) -> tuple[int, ...]:
    """The last block of each quarter of the encoder (DPT's taps); a hybrid: its first two ResNet stages and
    the last two of those blocks (DPT-Hybrid's taps)."""
    levels = feature_levels(model)
    S = sum(level.kind == "stage" for level in levels)
    depth = len(levels) - S
    quarters = sorted({max(depth * q // 4 - 1, 0) for q in (1, 2, 3, 4)})
    if S >= 2:
        return (0, 1, *(S + b for b in quarters[-2:]))
    return tuple(S + b for b in quarters)


def select_levels(model: VisionTransformer, out_indices: Sequence[int] | None = None) -> list[FeatureInfo]:
    """The levels `out_indices` name, in that order (module docstring; None: `default_out_indices`)."""
    levels = feature_levels(model)
    if out_indices is None:
        out_indices = default_out_indices(model)
    if isinstance(out_indices, int) or len(out_indices) == 0:
        raise ValueError(f"out_indices must be a non-empty sequence of level indices, got {out_indices!r}")
    n = len(levels)
    bad = [i for i in out_indices if not -n <= i < n]
    if bad:
        raise IndexError(f"out_indices {bad} out of range: {type(model).__name__} has {n} levels "
                         f"({n - len(model.blocks)} ResNet stages, then {len(model.blocks)} blocks)")
    return [levels[i % n] for i in out_indices]


def stage_and_block_levels(model: VisionTransformer, stages: Sequence[int],
                           blocks: Sequence[int]) -> list[FeatureInfo]:
    """The levels of ResNet stages `stages`, then of blocks `blocks` (negative block indices from the end)."""
    levels = feature_levels(model)
    S = sum(level.kind == "stage" for level in levels)
    if any(not 0 <= s < S for s in stages):
        raise IndexError(f"stage taps {tuple(stages)} out of range: the encoder has {S} ResNet stages")
    depth = len(levels) - S
    if any(not -depth <= b < depth for b in blocks):
        raise IndexError(f"block taps {tuple(blocks)} out of range for a {depth}-block encoder")
    return [levels[s] for s in stages] + [levels[S + b % depth] for b in blocks]


def forward_feature_maps(model: VisionTransformer, images: Tensor, levels: Sequence[FeatureInfo],
                         norm: bool = False) -> FeatureMaps:
    """One pass of `model` through its public methods → the maps of `levels` (from `select_levels`).

    Args:
        images: (B, C, H, W), sides multiples of the model's patch.
        norm: pass block outputs through the model's final norm (DINOv2 backbones, Depth Anything).
    """
    blocks = [level.position for level in levels if level.kind == "block"]
    if blocks:
        stages, pairs = model.forward_stages_and_intermediates(images, blocks, norm=norm, output_fmt="NCHW",
                                                               return_prefix_tokens=True)
    else:  # ResNet stages only: the transformer need not run
        stages, pairs = model.patch_embed.forward_stages(images), []
    has_cls = model.config.class_token
    found = iter(pairs)
    maps: list[Tensor] = []
    readout: list[Tensor | None] = []
    for level in levels:
        if level.kind == "stage":
            maps.append(stages[level.position])
            readout.append(None)
        else:
            patch_map, prefix = next(found)  # (B, D, gh, gw), (B, P, D)
            maps.append(patch_map)
            readout.append(prefix[:, 0] if has_cls else None)  # [CLS] comes first among the prefix tokens
    return FeatureMaps(maps, readout)


class FeatureBackbone(nn.Module):
    """A ViT-family model as a feature extractor: images (B, C, H, W) → [(B, C_i, H / s_i, W / s_i), ...].

    Args:
        model: a VisionTransformer (its head is not used).
        out_indices: levels to hand back (see the module docstring); None: `default_out_indices`.
        norm: apply the model's final norm to block outputs.

    The wrapped model stays whole under ``model.`` (its state dict loads as it is).
    """

    def __init__(self, model: VisionTransformer, out_indices: Sequence[int] | None = None,
                 norm: bool = False) -> None:
        super().__init__()
        self.levels = select_levels(model, out_indices)
        self.model = model
        self.norm = norm

    @property
    def feature_info(self) -> list[FeatureInfo]:
        """One FeatureInfo per output, in output order."""
        return list(self.levels)

    @property
    def out_indices(self) -> tuple[int, ...]:
        return tuple(level.index for level in self.levels)

    def channels(self) -> list[int]:
        """C_i of each output map."""
        return [level.channels for level in self.levels]

    def reduction(self) -> list[int]:
        """Stride s_i of each output map."""
        return [level.reduction for level in self.levels]

    def forward_with_readout(self, images: Tensor) -> FeatureMaps:
        """images (B, C, H, W) → the maps and, per map, the [CLS] token (B, D) (None where there is none)."""
        return forward_feature_maps(self.model, images, self.levels, self.norm)

    def forward(self, images: Tensor) -> list[Tensor]:
        """images (B, C, H, W), sides multiples of the patch → [(B, C_i, H / s_i, W / s_i), ...]."""
        return self.forward_with_readout(images).maps
