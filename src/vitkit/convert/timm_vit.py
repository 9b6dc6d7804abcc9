"""timm-layout ViT state dicts (``timm.models.vision_transformer``) → vitkit VisionTransformer.

Keys: ``cls_token`` (1,1,D) · ``pos_embed`` (1,P+N,D) with the [CLS] position first (P = 0 without [CLS];
timm's ``no_embed_class`` models store (1,N,D) and give [CLS] no position) · ``patch_embed.proj`` ·
``blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`` · ``norm`` · ``fc_norm``
(global-average-pooled models) · ``pre_logits.fc`` (older 21k checkpoints) · ``head``. The checkpoint holds no
config, so the architecture is read off the shapes: width, patch, channels, depth, MLP ratio, qkv bias,
classes, pre-logits width. The number of heads is not in the weights: unless ``num_heads`` is given it comes
from the paper's size table, and only for a (width, depth, MLP width) that is exactly a standard size
(logged); any other shape is refused. The grid is taken square unless `image_size` is given. ``model=NAME``
starts from a preset instead; any other override is a ViTConfig field.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import Tensor

from ..config import replace_config
from ..errors import UsageError
from ..models.registry import get_model_config
from ..models.vit import ViTConfig
from ..models.vit_presets import SIZES
from . import register_state_dict_format

log = logging.getLogger(__name__)

_REQUIRED = ("patch_embed.proj.weight", "pos_embed", "blocks.0.attn.qkv.weight")
# (width, depth, MLP width) → (size name, heads): the ViT paper's Table 1, the shapes whose heads are known
VIT_HEADS = {(dim, depth, 4 * dim): (f"ViT-{sym}", heads) for sym, dim, depth, heads in SIZES.values()}


def is_timm_vit(state_dict: dict[str, Tensor]) -> bool:
    """True for a timm-layout ViT (not a vitkit, MAE-pretraining, hybrid or other model sharing some keys)."""
    return all(k in state_dict for k in _REQUIRED) and not any(
        k.startswith(("decoder", "mask_token", "encoder.", "patch_embed.backbone.")) for k in state_dict)


def infer_vit_config(sd: dict[str, Tensor], overrides: dict[str, Any],
                     heads_hint: str = "num_heads=N") -> ViTConfig:
    """A ViTConfig read off a timm-layout state dict's shapes, then `overrides` (``model=NAME``: a preset).

    Raises:
        UsageError: no ``num_heads`` override and the shapes are no standard size; the message says to pass
            `heads_hint` (or model=NAME).
    """
    overrides = dict(overrides)
    preset = overrides.pop("model", None)
    if preset is not None:
        return replace_config(get_model_config(preset), overrides)
    proj = sd["patch_embed.proj.weight"]  # (D, C, p, p)
    dim, in_chans, patch = proj.shape[0], proj.shape[1], proj.shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    class_token = "cls_token" in sd
    fc_norm = "fc_norm.weight" in sd
    mlp_dim = sd["blocks.0.mlp.fc1.weight"].shape[0]
    heads = (overrides["num_heads"] if "num_heads" in overrides
             else heads_from_size_table((dim, depth, mlp_dim), VIT_HEADS, heads_hint))
    fields: dict[str, Any] = dict(
        patch_size=patch, in_chans=in_chans, dim=dim, depth=depth, num_heads=heads,
        mlp_ratio=mlp_dim / dim, qkv_bias="blocks.0.attn.qkv.bias" in sd,
        class_token=class_token, pool="cls" if class_token and not fc_norm else "avg", fc_norm=fc_norm,
        num_classes=sd["head.weight"].shape[0] if "head.weight" in sd else 0,
        representation_size=sd["pre_logits.fc.weight"].shape[0] if "pre_logits.fc.weight" in sd else None)
    if "image_size" not in overrides:
        n = sd["pos_embed"].shape[1] - _prefix_positions(sd)
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"pos_embed holds {n} patch positions, not a square grid; "
                             "pass image_size=(H, W)")
        fields["image_size"] = (side * patch, side * patch)
    return replace_config(ViTConfig(**fields), overrides)


def heads_from_size_table(shape: tuple[int, int, int], table: dict[tuple[int, int, int], tuple[str, int]],
                          hint: str) -> int:
    """The heads of the standard size whose (width, depth, MLP width) is exactly `shape` (logged, since the
    weights do not store it); UsageError naming `hint` for any other shape."""
    dim, depth, mlp_dim = shape
    if shape not in table:
        sizes = ", ".join(f"{name} {w}/{d}/{m}" for (w, d, m), (name, _) in table.items())
        raise UsageError(f"the number of attention heads is not stored in the weights, and width {dim}, "
                         f"depth {depth}, MLP width {mlp_dim} is no standard size (width/depth/MLP: "
                         f"{sizes}); pass {hint} (or model=NAME)")
    name, heads = table[shape]
    log.info("%d attention heads, from %s's size (width %d, depth %d, MLP width %d): the weights do not "
             "store them; pass %s if this model has another number", heads, name, dim, depth, mlp_dim, hint)
    return heads


def _prefix_positions(sd: dict[str, Tensor]) -> int:
    """1 if pos_embed has a [CLS] position (timm default), 0 without [CLS] or for no_embed_class models."""
    if "cls_token" not in sd:
        return 0
    n = sd["pos_embed"].shape[1]
    return 0 if math.isqrt(n) ** 2 == n else 1


def timm_to_vitkit(sd: dict[str, Tensor], overrides: dict[str, Any]) -> tuple[ViTConfig, dict[str, Tensor]]:
    """timm-layout ViT state dict → (ViTConfig, vitkit state dict)."""
    cfg = infer_vit_config(sd, overrides)
    out = dict(sd)
    pos = out.pop("pos_embed")  # (1, P + N, D)
    prefix = _prefix_positions(sd)
    out["pos_embed.weight"] = pos[:, prefix:]
    if "cls_token" in sd and cfg.pos_embed == "learn":
        # no_embed_class checkpoints give [CLS] no position: a zero position embedding is the same model
        out["cls_pos_embed"] = pos[:, :1] if prefix else torch.zeros_like(sd["cls_token"])
    return cfg, out


def is_bare_vitkit_vit(state_dict: dict[str, Tensor]) -> bool:
    """A vitkit ViT state dict saved without its config.json."""
    keys = ("patch_embed.proj.weight", "pos_embed.weight", "blocks.0.attn.qkv.weight")
    foreign = any(k.startswith(("decoder", "encoder.")) for k in state_dict)
    return all(k in state_dict for k in keys) and not foreign


def bare_vitkit_to_vitkit(sd: dict[str, Tensor],
                          overrides: dict[str, Any]) -> tuple[ViTConfig, dict[str, Tensor]]:
    """vitkit ViT state dict without config → (ViTConfig read off the shapes, same state dict).

    The position embeddings are folded into timm's layout and the timm converters (plain or hybrid, whichever
    detects it) read the architecture off the shapes.
    """
    from . import detect_state_dict_format

    timm_sd = dict(sd)
    pos = timm_sd.pop("pos_embed.weight")
    cls_pos = timm_sd.pop("cls_pos_embed", None)
    timm_sd["pos_embed"] = pos if cls_pos is None else torch.cat([cls_pos, pos], dim=1)  # (1, P + N, D)
    layout = detect_state_dict_format(timm_sd)
    return (layout.to_vitkit if layout else timm_to_vitkit)(timm_sd, overrides)


register_state_dict_format("vitkit", is_bare_vitkit_vit, bare_vitkit_to_vitkit)
register_state_dict_format("timm", is_timm_vit, timm_to_vitkit, generic=True)
