"""Size and cost of a model: parameter count and forward FLOPs, both without allocating any weights.

FLOPs are analytic for a ViT (`vit_forward_flops`) and an MAE (`mae_forward_flops`), whose token counts the
formulas take as arguments; any other model (hybrids, DPT) is built on the meta device and its forward pass on
one image counted by `torch.utils.flop_counter` (`counted_forward_flops`). Both count 2 FLOPs per multiply-add
over matmuls, convolutions and attention, and agree exactly on ViTs (tested).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .mae import MAEConfig
from .registry import build_model, get_model_config
from .vit import ViTConfig


def vit_forward_flops(cfg: ViTConfig, image_size: tuple[int, int] | None = None,
                      tokens: int | None = None) -> float:
    """Forward FLOPs (2 per multiply-add) of a ViT encoder (patch conv or conv stem) + head for one image.

    Counts the matmuls and convolutions (patch projection or conv stem, qkv, attention scores and mixing,
    output projection, MLP, pre-logits, head); norms, softmax and GELU are left out, as is conventional.
    A hybrid's ResNet trunk is not in the formula (ValueError; `forward_flops` counts hybrids).
    """
    if cfg.backbone is not None:
        raise ValueError("vit_forward_flops does not count a hybrid's ResNet trunk")
    h, w = image_size or cfg.image_size
    stem, c_in = 0, cfg.in_chans
    if cfg.conv_stem is not None:  # 3×3 convs, each on its output grid
        for c_out, s in zip(cfg.conv_stem.channels, cfg.conv_stem.strides, strict=False):
            h, w = -(-h // s), -(-w // s)
            stem += 2 * h * w * 9 * c_in * c_out
            c_in = c_out
    n = (h // cfg.patch_size) * (w // cfg.patch_size)
    t = tokens if tokens is not None else n + cfg.num_prefix_tokens
    d, hidden = cfg.dim, cfg.mlp_width
    patch = stem + 2 * n * c_in * cfg.patch_size ** 2 * d
    mlp_matrices = 3 if cfg.mlp == "swiglu" else 2  # SwiGLU: gate, up and down projections
    per_block = 2 * t * d * 3 * d + 2 * 2 * t * t * d + 2 * t * d * d + mlp_matrices * 2 * t * d * hidden
    pooled = 2 * d if cfg.pool == "cls+avg" else d
    pre_logits = 2 * pooled * cfg.representation_size if cfg.representation_size else 0
    head = pre_logits + 2 * (cfg.representation_size or pooled) * cfg.num_classes * (1 + int(cfg.distilled))
    return float(patch + cfg.depth * per_block + head)


def mae_forward_flops(cfg: MAEConfig) -> float:
    """Forward FLOPs per image of an MAE: encoder on the visible patches + [CLS], then `mae_decoder_flops`."""
    enc = cfg.encoder
    return vit_forward_flops(enc, tokens=_mae_visible(cfg) + enc.num_prefix_tokens) + mae_decoder_flops(cfg)


def mae_decoder_flops(cfg: MAEConfig) -> float:
    """Forward FLOPs per image of an MAE's decoder: embedding the visible tokens, blocks on all N + [CLS]
    tokens, and the pixel prediction."""
    enc = cfg.encoder
    n = (enc.image_size[0] // enc.patch_size) * (enc.image_size[1] // enc.patch_size)
    prefix = enc.num_prefix_tokens
    dec = dataclasses.replace(enc, dim=cfg.decoder_dim, depth=cfg.decoder_depth,
                              num_heads=cfg.decoder_num_heads, mlp_ratio=cfg.decoder_mlp_ratio, num_classes=0,
                              mlp="gelu", mlp_hidden_dim=None)
    # decoder blocks on all N + P tokens: the block term of vit_forward_flops (its depth-0 value is the rest)
    blocks = vit_forward_flops(dec, tokens=n + prefix) - vit_forward_flops(dataclasses.replace(dec, depth=0),
                                                                           tokens=n + prefix)
    embed = 2 * (_mae_visible(cfg) + prefix) * enc.dim * cfg.decoder_dim
    pred = 2 * (n + prefix) * cfg.decoder_dim * enc.patch_size**2 * enc.in_chans
    return blocks + embed + pred


def _mae_visible(cfg: MAEConfig) -> int:
    """Patches the MAE encoder sees at the config's mask ratio."""
    enc = cfg.encoder
    n = (enc.image_size[0] // enc.patch_size) * (enc.image_size[1] // enc.patch_size)
    return int(n * (1 - cfg.mask_ratio))


def counted_forward_flops(model: nn.Module, image_shape: tuple[int, ...]) -> float:
    """FLOPs of ``model(images)`` for one image of shape (C, H, W), counted by `FlopCounterMode`.

    Run the model on the meta device (``with torch.device("meta"): build_model(cfg)``) and nothing is
    computed. Raises NotImplementedError for forward passes built on ops whose output shape depends on the
    data, which have no meta kernel (MPP's loss indexes the corrupted patches with a boolean mask).
    """
    device = next(model.parameters()).device
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.empty(1, *image_shape, device=device))
    return float(counter.get_total_flops())


def input_field(cfg: Any, name: str) -> Any:
    """An input field (``image_size``, ``in_chans``) of a config or of its encoder or backbone, else None."""
    for c in (cfg, getattr(cfg, "encoder", None), getattr(cfg, "backbone", None)):
        if getattr(c, name, None) is not None:
            return getattr(c, name)
    return None


def forward_flops(cfg: Any) -> float:
    """Forward FLOPs per image of any registered model's config (NaN where none can be had: no input size, or
    a forward pass that depends on the data)."""
    if isinstance(cfg, ViTConfig) and cfg.backbone is None:
        return vit_forward_flops(cfg)
    if isinstance(cfg, MAEConfig):
        return mae_forward_flops(cfg)
    size, chans = input_field(cfg, "image_size"), input_field(cfg, "in_chans")
    if size is None or chans is None:
        return math.nan
    with torch.device("meta"):
        model = build_model(cfg)
    try:
        return counted_forward_flops(model, (chans, *size))
    except NotImplementedError:
        return math.nan


def summarize_model(name: str) -> dict[str, Any]:
    """{"name", "params", "gflops", "input"} of a preset (gflops is NaN where `forward_flops` has none)."""
    cfg = get_model_config(name)
    with torch.device("meta"):
        model = build_model(cfg)
    params = sum(p.numel() for p in model.parameters())
    size = input_field(cfg, "image_size")
    return {"name": name, "params": params, "gflops": forward_flops(cfg) / 1e9,
            "input": f"{size[0]}x{size[1]}" if size else "?"}
