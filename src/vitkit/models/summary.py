"""Analytic size and cost of a model: parameter count (built on the meta device) and forward FLOPs."""

from __future__ import annotations

from typing import Any

import torch

from .registry import build_model, get_model_config
from .vit import ViTConfig


def vit_forward_flops(cfg: ViTConfig, image_size: tuple[int, int] | None = None, tokens: int | None = None) -> float:
    """Forward FLOPs (2 per multiply-add) of a ViT encoder (patch conv or conv stem) + head for one image.

    Counts the matmuls and convolutions (patch projection or conv stem, qkv, attention scores and mixing,
    output projection, MLP, head); norms, softmax and GELU are left out, as is conventional. A hybrid's
    ResNet trunk is not counted (ValueError).
    """
    if cfg.backbone is not None:
        raise ValueError("vit_forward_flops does not count a hybrid's ResNet trunk")
    h, w = image_size or cfg.image_size
    stem, c_in = 0, cfg.in_chans
    if cfg.conv_stem is not None:  # 3×3 convs, each on its output grid
        for c_out, s in zip(cfg.conv_stem.channels, cfg.conv_stem.strides):
            h, w = -(-h // s), -(-w // s)
            stem += 2 * h * w * 9 * c_in * c_out
            c_in = c_out
    n = (h // cfg.patch_size) * (w // cfg.patch_size)
    t = tokens if tokens is not None else n + int(cfg.class_token)
    d, hidden = cfg.dim, int(cfg.dim * cfg.mlp_ratio)
    patch = stem + 2 * n * c_in * cfg.patch_size ** 2 * d
    per_block = 2 * t * d * 3 * d + 2 * 2 * t * t * d + 2 * t * d * d + 2 * 2 * t * d * hidden
    head = 2 * (cfg.representation_size or d) * cfg.num_classes
    return float(patch + cfg.depth * per_block + head)


def summarize_model(name: str) -> dict[str, Any]:
    """{"name", "params", "gflops", "input"} for a registered preset."""
    cfg = get_model_config(name)
    with torch.device("meta"):
        model = build_model(cfg)
    params = sum(p.numel() for p in model.parameters())
    size = getattr(cfg, "image_size", None) or getattr(getattr(cfg, "encoder", None), "image_size", None)
    flops = vit_forward_flops(cfg) if isinstance(cfg, ViTConfig) and cfg.backbone is None else float("nan")
    return {"name": name, "params": params, "gflops": flops / 1e9,
            "input": f"{size[0]}x{size[1]}" if size else "?"}
