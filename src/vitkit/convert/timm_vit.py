"""timm-layout ViT state dicts (``timm.models.vision_transformer`` and ``deit``) → vitkit VisionTransformer.

Keys: ``cls_token`` (1,1,D) · ``dist_token`` (1,1,D; DeiT) · ``reg_token`` (1,R,D; registers) ·
``pos_embed`` (1,P+N,D) with the prefix positions first (timm's ``no_embed_class`` models, DeiT III and
DINOv2 with registers, store (1,N,D) and give prefix tokens no position) · ``patch_embed.proj`` ·
``blocks.i.{norm1, attn.qkv, attn.q_norm, attn.k_norm, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2,
ls2.gamma}`` (SwiGLU: ``mlp.fc1`` packed [gate; up] as ``SwiGLUPacked``, or ``mlp.fc1_g`` / ``mlp.fc1_x``) ·
``norm`` · ``fc_norm`` (global-average-pooled models) · ``pre_logits.fc`` (older 21k checkpoints) · ``head`` ·
``head_dist`` (DeiT). Token order [CLS], [DIST], registers, patches, as timm's. The checkpoint holds no
config, so the architecture is read off the shapes: width, patch, channels, depth, MLP kind and width, qkv
bias, QK-norm, LayerScale, prefix tokens, classes, pre-logits width. The number of heads is not in the
weights: unless ``num_heads`` is given it comes from the paper's size table, and only for a (width, depth,
MLP width) that is exactly a standard size (logged); any other shape is refused. The grid is taken square
unless `image_size` is given. ``model=NAME`` (a vitkit preset, or a timm architecture name listed in
`TIMM_NAMES`) starts from a preset instead; any other override is a ViTConfig field. LayerScale's initial γ
is not stored either (1e-5 is assumed; it matters only for training from scratch).
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
VIT_HEADS[(1536, 40, 4096)] = ("DINOv2 ViT-g/14 (SwiGLU)", 24)
# timm architecture names → the vitkit preset of the same model (for model=NAME)
TIMM_NAMES = {f"vit_{size}_patch14{reg}_dinov2": f"dinov2_vit{size[0]}14{'_reg' if reg else ''}"
              for size in ("small", "base", "large", "giant") for reg in ("", "_reg4")}


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
        return replace_config(get_model_config(TIMM_NAMES.get(preset, preset)), overrides)
    proj = sd["patch_embed.proj.weight"]  # (D, C, p, p)
    dim, in_chans, patch = proj.shape[0], proj.shape[1], proj.shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    class_token = "cls_token" in sd
    fc_norm = "fc_norm.weight" in sd
    mlp, mlp_dim = _mlp_kind(sd)
    heads = (overrides["num_heads"] if "num_heads" in overrides
             else heads_from_size_table((dim, depth, mlp_dim), VIT_HEADS, heads_hint))
    num_classes = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    fields: dict[str, Any] = dict(
        patch_size=patch, in_chans=in_chans, dim=dim, depth=depth, num_heads=heads, mlp=mlp,
        mlp_ratio=mlp_dim / dim, mlp_hidden_dim=mlp_dim if mlp == "swiglu" else None,
        qkv_bias="blocks.0.attn.qkv.bias" in sd, qk_norm="blocks.0.attn.q_norm.weight" in sd,
        layer_scale_init=1e-5 if "blocks.0.ls1.gamma" in sd else None,
        class_token=class_token, pool="cls" if class_token and not fc_norm else "avg", fc_norm=fc_norm,
        distilled="dist_token" in sd, num_classes=num_classes,
        num_register_tokens=sd["reg_token"].shape[1] if "reg_token" in sd else 0,
        representation_size=sd["pre_logits.fc.weight"].shape[0] if "pre_logits.fc.weight" in sd else None)
    if "image_size" not in overrides:
        num_prefix = int(class_token) + int(fields["distilled"]) + fields["num_register_tokens"]
        side = math.isqrt(sd["pos_embed"].shape[1] - prefix_positions(sd, num_prefix))
        fields["image_size"] = (side * patch, side * patch)
    return replace_config(ViTConfig(**fields), overrides)


def _mlp_kind(sd: dict[str, Tensor]) -> tuple[str, int]:
    """("gelu" | "swiglu", hidden width H) of block 0's MLP (a packed SwiGLU's fc1 is 2·H wide)."""
    if "blocks.0.mlp.fc1_g.weight" in sd:
        return "swiglu", sd["blocks.0.mlp.fc1_g.weight"].shape[0]
    fc1, fc2 = sd["blocks.0.mlp.fc1.weight"], sd.get("blocks.0.mlp.fc2.weight")  # (H or 2·H, D), (D, H)
    packed = fc2 is not None and fc1.shape[0] == 2 * fc2.shape[1]
    return ("swiglu", fc2.shape[1]) if packed else ("gelu", fc1.shape[0])


def prefix_positions(sd: dict[str, Tensor], num_prefix: int, num_patches: int | None = None) -> int:
    """How many of pos_embed's positions belong to prefix tokens: all P ([CLS], [DIST], registers; timm's
    default), those before the registers, or none (``no_embed_class``). The count that leaves a square grid
    wins; else the one leaving `num_patches` (a non-square grid from image_size).

    Raises:
        ValueError: no count fits; the message says what to pass.
    """
    n = sd["pos_embed"].shape[1]
    registers = sd["reg_token"].shape[1] if "reg_token" in sd else 0
    candidates = list(dict.fromkeys((num_prefix, num_prefix - registers, 0)))
    for c in candidates:
        if n - c > 0 and math.isqrt(n - c) ** 2 == n - c:
            return c
    for c in candidates:
        if num_patches is not None and n - c == num_patches:
            return c
    raise ValueError(f"pos_embed holds {n} positions; with {num_prefix} prefix tokens ([CLS], [DIST], "
                     f"registers) no count of prefix positions in {candidates} leaves a square patch grid; "
                     "pass image_size=(H, W)")


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


def timm_to_vitkit(sd: dict[str, Tensor], overrides: dict[str, Any]) -> tuple[ViTConfig, dict[str, Tensor]]:
    """timm-layout ViT state dict → (ViTConfig, vitkit state dict)."""
    cfg = infer_vit_config(sd, overrides)
    out = dict(sd)
    pos = out.pop("pos_embed")  # (1, P' + N, D), P' prefix positions
    stride = cfg.patch_size * (cfg.backbone.stride if cfg.backbone is not None else 1)  # a hybrid's trunk
    grid = (cfg.image_size[0] // stride, cfg.image_size[1] // stride)
    prefix = prefix_positions(sd, cfg.num_prefix_tokens, grid[0] * grid[1])
    out["pos_embed.weight"] = pos[:, prefix:]
    for i, name in enumerate(("cls", "dist")[: 1 + int(cfg.distilled)] if "cls_token" in sd else ()):
        if cfg.pos_embed == "learn":
            # no_embed_class checkpoints give prefix tokens no position: a zero one is the same model
            out[f"{name}_pos_embed"] = pos[:, i:i + 1] if prefix else torch.zeros_like(sd["cls_token"])
    if prefix > 1 + int(cfg.distilled):  # registers with positions: constant tokens, so the sum is exact
        out["reg_token"] = sd["reg_token"] + pos[:, 1 + int(cfg.distilled):prefix]
    for gate in [k for k in out if ".mlp.fc1_g." in k]:  # timm's unpacked SwiGLU → fc1 = [gate; up]
        up = out.pop(gate.replace("fc1_g", "fc1_x"))
        out[gate.replace("fc1_g", "fc1")] = torch.cat([out.pop(gate), up])
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
    prefix_pos = [timm_sd.pop(k) for k in ("cls_pos_embed", "dist_pos_embed") if k in timm_sd]
    timm_sd["pos_embed"] = torch.cat([*prefix_pos, pos], dim=1)  # (1, P' + N, D), registers have none
    layout = detect_state_dict_format(timm_sd)
    return (layout.to_vitkit if layout else timm_to_vitkit)(timm_sd, overrides)


register_state_dict_format("vitkit", is_bare_vitkit_vit, bare_vitkit_to_vitkit)
register_state_dict_format("timm", is_timm_vit, timm_to_vitkit, generic=True)
