"""Official MAE checkpoints (facebookresearch/mae) → vitkit: pure state-dict mappings (format name "mae").

The release files are pickles ``{"model": state_dict, ...}``; training checkpoints also hold the run's
``argparse.Namespace`` under "args", so `vitkit.load_pretrained` refuses them unless called with
``allow_pickle=("argparse.Namespace",)``. Keys are timm's (``models_mae.py`` / ``models_vit.py``):

* encoder: ``cls_token``, ``pos_embed`` (1, 1 + N, D; fixed 2-D sin-cos with a zero [CLS] row in pretraining
  checkpoints, learned after fine-tuning), ``patch_embed.proj``, ``blocks.i.*``, ``norm``;
* decoder (full pretraining checkpoints): ``mask_token``, ``decoder_embed``, ``decoder_pos_embed``,
  ``decoder_blocks.i.*``, ``decoder_norm``, ``decoder_pred``;
* fine-tuned: ``fc_norm`` (global pooling; ``norm`` removed) and ``head``.

What is built, unless ``model=NAME`` names a preset to load into: a checkpoint with decoder keys → the full
`MaskedAutoencoder`; without → a plain ViT (with a head if the checkpoint has one). Loading into another kind
(e.g. ``model="vit_base_patch16_224"`` for a full checkpoint) leaves the keys that have no place — decoder or
head — to the load report (``strict=False``). A sin-cos ``pos_embed`` becomes ``pos_embed="sincos"``; any
other is kept as learned embeddings. Head counts are not in the weights: the encoder's come from the ViT size
table and the decoder's from the release decoder (width 512, depth 8, MLP 2048: 16 heads), only for exactly
those shapes; pass ``encoder={"num_heads": N}`` / ``decoder_num_heads=N`` for any other (or ``num_heads=N``
for an encoder-only file). Detection claims files with decoder keys, or with the encoder keys and a
sin-cos ``pos_embed``; fine-tuned checkpoints are plain timm ViTs and load through the "timm" format (or
``format="mae"``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..config import replace_config
from ..layers import sincos_pos_embed_2d
from ..models.mae import IMAGENET_PREPROCESS, MAEConfig
from ..models.registry import get_model_config
from ..models.vit import ViTConfig
from . import register_state_dict_format
from .timm_vit import heads_from_size_table, infer_vit_config, timm_to_vitkit  # "timm" is detected last

log = logging.getLogger(__name__)

_DECODER = ("mask_token", "decoder_")
_ENCODER_REQUIRED = ("patch_embed.proj.weight", "pos_embed", "blocks.0.attn.qkv.weight", "cls_token")
_DECODER_TOP = {"decoder_embed": "decoder.embed", "decoder_norm": "decoder.norm",
                "decoder_pred": "decoder.pred",
                "mask_token": "decoder.mask_token"}
# (width, depth, MLP width) → heads of the one decoder the release uses with every encoder size
_DECODER_HEADS = {(512, 8, 2048): ("the MAE release decoder", 16)}


def _sincos_table(dim: int, grid: tuple[int, int]) -> Tensor:
    """(1, 1 + N, D): a zero [CLS] row, then the 2-D sin-cos table (the layout MAE stores)."""
    return torch.cat([torch.zeros(1, dim), sincos_pos_embed_2d(dim, grid)])[None]


def _is_sincos_table(table: Tensor, grid: tuple[int, int] | None = None) -> bool:
    """table (1, 1 + N, D) is `_sincos_table` of `grid` (default: a square grid of N) within 1e-4."""
    n, dim = table.shape[1] - 1, table.shape[-1]
    side = int(round(n ** 0.5))
    grid = grid or (side, side)
    if grid[0] * grid[1] != n or dim % 4:
        return False
    return bool((table.float() - _sincos_table(dim, grid)).abs().max() < 1e-4)


def map_decoder_pos_embed(table: Tensor, cfg: MAEConfig, key: str) -> dict[str, Tensor]:
    """vitkit entries for a stored decoder position table (1, 1 + N, Dd) named `key`.

    Nothing for the sin-cos table vitkit's decoder computes. vitkit's decoder cannot hold any other table, and
    without it the model would reconstruct other pixels than the checkpoint's: the table is kept as
    ``decoder.pos_embed.weight``, a key the model has no place for, so strict loading refuses the checkpoint
    and ``strict=False`` loads it with sin-cos decoder positions, the table listed as unexpected.
    """
    if table.shape[-1] == cfg.decoder_dim and _is_sincos_table(table, _grid(cfg.encoder)):
        return {}
    log.warning("%s is not the fixed 2-D sin-cos table that vitkit's MAE decoder computes for this grid, and "
                "the decoder cannot hold a stored table, so its reconstructions would differ from the "
                "checkpoint's: strict loading refuses it; strict=False loads the model with sin-cos decoder "
                "positions and reports the table as unexpected (decoder.pos_embed.weight)", key)
    return {"decoder.pos_embed.weight": table}


def is_official_mae(state_dict: dict[str, Tensor]) -> bool:
    """Official MAE layout: timm-style encoder keys plus decoder keys, or plus a sin-cos ``pos_embed``."""
    if not all(k in state_dict for k in _ENCODER_REQUIRED):
        return False
    if any(k.startswith("encoder.") for k in state_dict):  # a vitkit MAE state dict
        return False
    return "decoder_embed.weight" in state_dict or _is_sincos_table(state_dict["pos_embed"])


def _decoder_config(sd: dict[str, Tensor], encoder: ViTConfig, overrides: dict[str, Any]) -> MAEConfig:
    ddim = sd["decoder_embed.weight"].shape[0]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("decoder_blocks."))
    mlp_dim = sd["decoder_blocks.0.mlp.fc1.weight"].shape[0]
    heads = (overrides["decoder_num_heads"] if "decoder_num_heads" in overrides
             else heads_from_size_table((ddim, depth, mlp_dim), _DECODER_HEADS, "decoder_num_heads=N"))
    return MAEConfig(encoder=encoder, decoder_dim=ddim, decoder_depth=depth, decoder_num_heads=heads,
                     decoder_mlp_ratio=mlp_dim / ddim)


def _encoder_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """The encoder's share of MAEConfig overrides: ``encoder={...}`` and ``"encoder.<field>"`` keys."""
    nested = overrides.get("encoder")
    out = dict(nested) if isinstance(nested, Mapping) else {}
    out.update({k[len("encoder."):]: v for k, v in overrides.items() if k.startswith("encoder.")})
    return out


def _map_decoder(sd: dict[str, Tensor], cfg: MAEConfig) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        module, _, kind = key.rpartition(".")
        if key.startswith("decoder_blocks."):
            out["decoder.blocks." + key[len("decoder_blocks."):]] = value
        elif key == "decoder_pos_embed":
            out.update(map_decoder_pos_embed(value, cfg, key))
        elif key == "mask_token":
            out["decoder.mask_token"] = value
        elif module in _DECODER_TOP:
            out[f"{_DECODER_TOP[module]}.{kind}"] = value
        else:
            out[key] = value  # unknown: the load report names it
    return out


def mae_to_vitkit(sd: dict[str, Tensor], overrides: dict[str, Any]) -> tuple[Any, dict[str, Tensor]]:
    """Official MAE state dict → (MAEConfig or ViTConfig, vitkit state dict); see the module docstring."""
    overrides = dict(overrides)
    preset = overrides.pop("model", None)
    encoder_sd = {k: v for k, v in sd.items() if not k.startswith(_DECODER)}
    decoder_sd = {k: v for k, v in sd.items() if k.startswith(_DECODER)}
    target = replace_config(get_model_config(preset), overrides) if preset else None
    as_mae = isinstance(target, MAEConfig) if target is not None else bool(decoder_sd)
    if target is None:  # MAE trains on ImageNet-normalised images
        given = _encoder_overrides(overrides) if as_mae else overrides
        hint = "encoder={'num_heads': N}" if as_mae else "num_heads=N"
        encoder_cfg = infer_vit_config(encoder_sd, {"preprocess": IMAGENET_PREPROCESS, **given}, hint)
    else:
        encoder_cfg = target.encoder if as_mae else target
    encoder_cfg = dataclasses.replace(encoder_cfg, pos_embed="learn")
    if as_mae:
        encoder_cfg = dataclasses.replace(encoder_cfg, num_classes=0)
    # the same config comes back, with timm's keys mapped onto ours
    _, encoder_out = timm_to_vitkit(encoder_sd, _as_overrides(encoder_cfg))
    grid = _grid(encoder_cfg)
    if _is_sincos_table(sd["pos_embed"]) and sd["pos_embed"].shape[1] == 1 + grid[0] * grid[1]:
        encoder_cfg = dataclasses.replace(encoder_cfg, pos_embed="sincos")
        encoder_out.pop("pos_embed.weight")
        encoder_out.pop("cls_pos_embed", None)
    if not as_mae:
        return encoder_cfg, {**encoder_out, **decoder_sd}  # decoder keys, if any, are reported unexpected
    if target is not None:
        cfg = dataclasses.replace(target, encoder=encoder_cfg)
    else:
        cfg = (replace_config(_decoder_config(sd, encoder_cfg, overrides), overrides) if decoder_sd
               else MAEConfig(encoder_cfg))
    return cfg, {**{f"encoder.{k}": v for k, v in encoder_out.items()}, **_map_decoder(decoder_sd, cfg)}


def _grid(cfg: ViTConfig) -> tuple[int, int]:
    return cfg.image_size[0] // cfg.patch_size, cfg.image_size[1] // cfg.patch_size


def _as_overrides(cfg: ViTConfig) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


register_state_dict_format("mae", is_official_mae, mae_to_vitkit)
