"""timm-layout hybrid ViT state dicts (``timm.models.vision_transformer_hybrid``, e.g.
vit_base_r50_s16_384) → vitkit VisionTransformer with a `HybridEmbed`.

timm's ResNetV2 already uses vitkit's names, so the trunk keys ``patch_embed.backbone.{stem.conv,
stem.norm, stages.i.blocks.j.*, norm}`` and ``patch_embed.proj`` pass through unchanged; the ViT part
(``pos_embed`` with the [CLS] position first, blocks, head) is the plain timm ViT layout
(`timm_vit.timm_to_vitkit`).

A stem-only trunk (timm's ``vit_tiny_r_s16_p8_*``, R+Ti/16: ``_resnetv2(layers=())``) is timm's bare stem
module, so its keys lack the ``stem.`` level: ``patch_embed.backbone.{conv, norm}`` are read as
``patch_embed.backbone.stem.{conv, norm}`` of a ResNetV2 with ``layers=()`` (stride 4).

Read off the shapes: stage depths and widths, stem width, input channels, block type (a stem norm means the
post-activation "bottleneck" of the ViT hybrids, none means BiT's "preact"). Not stored, so assumed: timm's
hybrid defaults — TF-SAME padding for "bottleneck" (``padding_same=True``), symmetric for "preact" — and
StdConv eps 1e-8 (as timm's `_resnetv2`) and GroupNorm with 32 groups; override any of them with e.g.
``backbone={"padding": "symmetric", "num_groups": 8}``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from torch import Tensor

from ..config import replace_config
from ..models.resnetv2 import ResNetV2Config
from . import register_state_dict_format
from .timm_vit import timm_to_vitkit  # the generic "timm" detector rejects hybrids, so order does not matter

_TRUNK = "patch_embed.backbone."
_REQUIRED = ("patch_embed.proj.weight", "pos_embed", "blocks.0.attn.qkv.weight")
_STEM_ONLY = f"{_TRUNK}conv.weight"  # timm's stem-only trunk: the stem module itself


def is_timm_hybrid(state_dict: dict[str, Tensor]) -> bool:
    """True for a timm hybrid ViT: the timm ViT layout with a ResNetV2 trunk (or its stem) under
    patch_embed.backbone."""
    trunk = f"{_TRUNK}stem.conv.weight" in state_dict or _STEM_ONLY in state_dict
    return trunk and all(k in state_dict for k in _REQUIRED)


def _stem_only_to_resnetv2(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """patch_embed.backbone.{conv, norm}.* (timm's bare stem) → patch_embed.backbone.stem.{conv, norm}.*"""
    if _STEM_ONLY not in sd:
        return sd
    stem = (f"{_TRUNK}conv.", f"{_TRUNK}norm.")
    return {(f"{_TRUNK}stem.{k[len(_TRUNK):]}" if k.startswith(stem) else k): v for k, v in sd.items()}


def infer_resnetv2_config(state_dict: dict[str, Tensor], prefix: str = "") -> ResNetV2Config:
    """A ResNetV2Config read off timm/vitkit-named ResNetV2 weights under `prefix`."""
    depths: dict[int, int] = {}
    for key in state_dict:
        m = re.match(re.escape(prefix) + r"stages\.(\d+)\.blocks\.(\d+)\.", key)
        if m:
            stage, block = int(m[1]), int(m[2])
            depths[stage] = max(depths.get(stage, 0), block + 1)
    if not depths and f"{prefix}stem.conv.weight" not in state_dict:
        raise ValueError(f"no ResNetV2 stem or stages under {prefix!r}")
    n = len(depths)
    channels = tuple(state_dict[f"{prefix}stages.{i}.blocks.0.conv3.weight"].shape[0] for i in range(n))
    stem = state_dict[f"{prefix}stem.conv.weight"]  # (stem_width, C, 7, 7)
    preact = f"{prefix}stem.norm.weight" not in state_dict
    return ResNetV2Config(
        layers=tuple(depths[i] for i in range(n)), channels=channels, stem_width=stem.shape[0],
        block="preact" if preact else "bottleneck", padding="symmetric" if preact else "same",
        in_chans=stem.shape[1])


def timm_hybrid_to_vitkit(sd: dict[str, Tensor], overrides: dict[str, Any]) -> tuple[Any, dict[str, Tensor]]:
    """timm hybrid ViT state dict → (ViTConfig with `backbone`, vitkit state dict)."""
    sd = _stem_only_to_resnetv2(sd)
    overrides = dict(overrides)
    if "model" not in overrides:
        backbone = infer_resnetv2_config(sd, _TRUNK)
        if isinstance(overrides.get("backbone"), dict):
            backbone = replace_config(backbone, overrides.pop("backbone"))
        overrides.setdefault("backbone", backbone)
        overrides.setdefault("in_chans", backbone.in_chans)
        if "image_size" not in overrides:
            stride = backbone.stride * sd["patch_embed.proj.weight"].shape[-1]
            n = sd["pos_embed"].shape[1]
            side = math.isqrt(n) if math.isqrt(n) ** 2 == n else math.isqrt(n - 1)
            if side * side not in (n, n - 1):
                raise ValueError(f"pos_embed holds {n} positions, not a square grid; pass image_size=(H, W)")
            overrides["image_size"] = (side * stride, side * stride)
    return timm_to_vitkit(sd, overrides)


register_state_dict_format("timm_hybrid", is_timm_hybrid, timm_hybrid_to_vitkit)
