"""HF transformers `ViTMAEForPreTraining` (model_type "vit_mae") ↔ vitkit `MaskedAutoencoder`: pure mappings.

Reads every key layout transformers has written: the hub layout
(``vit.encoder.layer.i.attention.attention.query``, ``decoder.decoder_layers.i...``), the one transformers 5
saves (``decoder.decoder_encoder.layer.i...``) and its in-memory names (``vit.layers.i.attention.q_proj``,
``mlp.fc1``). Writes the hub layout.

Position embeddings: HF stores its fixed sin-cos tables as frozen parameters (N + 1 rows, [CLS] first). When
the encoder's table equals vitkit's sin-cos (within 1e-4) the model gets ``pos_embed="sincos"``; otherwise its
values are kept as learned embeddings, so the conversion stays exact. vitkit's decoder always uses fixed
sin-cos and cannot hold another table: one that differs is refused by strict loading (see
`mae_official.map_decoder_pos_embed`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import torch
from torch import Tensor

from ..layers import sincos_pos_embed_2d
from ..models.mae import IMAGENET_PREPROCESS, MAEConfig
from ..models.vit import ViTConfig
from . import register_hf_converter
from .mae_official import map_decoder_pos_embed

# Older / on-disk HF names → the canonical names used below (order matters: attention.output before output).
_LEGACY = [
    (r"^vit\.encoder\.layer\.(\d+)\.", r"vit.layers.\1."),
    (r"^decoder\.decoder_encoder\.layer\.(\d+)\.", r"decoder.decoder_layers.\1."),
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
]
# canonical HF layer names → ours, apart from q/k/v which are fused into qkv
_LAYER = {"layernorm_before": "norm1", "layernorm_after": "norm2", "attention.o_proj": "attn.proj",
          "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_TOP = {
    "vit.embeddings.patch_embeddings.projection": "encoder.patch_embed.proj",
    "vit.layernorm": "encoder.norm",
    "decoder.decoder_embed": "decoder.embed",
    "decoder.decoder_norm": "decoder.norm",
    "decoder.decoder_pred": "decoder.pred",
}


def _canonical(key: str) -> str:
    for pattern, repl in _LEGACY:
        key = re.sub(pattern, repl, key)
    return key


def _grid(cfg: ViTConfig) -> tuple[int, int]:
    return cfg.image_size[0] // cfg.patch_size, cfg.image_size[1] // cfg.patch_size


def _is_sincos(table: Tensor, dim: int, grid: tuple[int, int]) -> bool:
    """table (1, 1 + N, D): a zero [CLS] row followed by the 2-D sin-cos table."""
    expected = torch.cat([torch.zeros(1, dim), sincos_pos_embed_2d(dim, grid)])[None]
    return table.shape == expected.shape and bool((table.float() - expected).abs().max() < 1e-4)


def config_to_vitkit(hf: dict[str, Any]) -> MAEConfig:
    """MAEConfig from a HF ViTMAEConfig dict (config.json)."""
    if hf.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"vitkit's MAE uses exact GELU; this checkpoint uses {hf['hidden_act']!r}")
    size = hf.get("image_size", 224)
    size = (size, size) if isinstance(size, int) else tuple(size)
    dim = hf.get("hidden_size", 768)
    ddim = hf.get("decoder_hidden_size", 512)
    encoder = ViTConfig(
        image_size=size, patch_size=hf.get("patch_size", 16), in_chans=hf.get("num_channels", 3),
        num_classes=0,
        dim=dim, depth=hf.get("num_hidden_layers", 12), num_heads=hf.get("num_attention_heads", 12),
        mlp_ratio=hf.get("intermediate_size", 3072) / dim, qkv_bias=hf.get("qkv_bias", True),
        pos_embed="sincos", eps=hf.get("layer_norm_eps", 1e-12),
        preprocess=dataclasses.replace(IMAGENET_PREPROCESS, resize="squash", interpolation="bilinear"))
    return MAEConfig(encoder=encoder, decoder_dim=ddim, decoder_depth=hf.get("decoder_num_hidden_layers", 8),
                     decoder_num_heads=hf.get("decoder_num_attention_heads", 16),
                     decoder_mlp_ratio=hf.get("decoder_intermediate_size", 2048) / ddim,
                     mask_ratio=hf.get("mask_ratio", 0.75), norm_pix_loss=hf.get("norm_pix_loss", False))


def to_vitkit(hf_config: dict[str, Any],
              state_dict: dict[str, Tensor]) -> tuple[MAEConfig, dict[str, Tensor]]:
    """(HF config dict, HF state dict) → (MAEConfig, vitkit state dict). Unknown keys are passed through
    unchanged so the load report names them."""
    cfg = config_to_vitkit(hf_config)
    sd = {_canonical(k): v for k, v in state_dict.items()}
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}  # (block prefix, weight|bias) → {"q"|"k"|"v": tensor}
    layer = re.compile(r"^(vit\.layers|decoder\.decoder_layers)\.(\d+)\.(.+)\.(weight|bias)$")
    for key, value in sd.items():
        m = layer.match(key)
        if m:
            side = "encoder" if m.group(1) == "vit.layers" else "decoder"
            prefix, name, kind = f"{side}.blocks.{m.group(2)}", m.group(3), m.group(4)
            proj = re.fullmatch(r"attention\.([qkv])_proj", name)
            if proj:
                qkv.setdefault((prefix, kind), {})[proj.group(1)] = value
            elif name in _LAYER:
                out[f"{prefix}.{_LAYER[name]}.{kind}"] = value
            else:
                out[key] = value
            continue
        module, _, kind = key.rpartition(".")
        if module in _TOP:
            out[f"{_TOP[module]}.{kind}"] = value
        elif key == "vit.embeddings.cls_token":
            out["encoder.cls_token"] = value
        elif key == "decoder.mask_token":
            out["decoder.mask_token"] = value
        elif key == "vit.embeddings.position_embeddings":
            if not _is_sincos(value, cfg.encoder.dim, _grid(cfg.encoder)):
                cfg.encoder.pos_embed = "learn"  # keep the checkpoint's values: the conversion stays exact
                out["encoder.cls_pos_embed"] = value[:, :1]
                out["encoder.pos_embed.weight"] = value[:, 1:]
        elif key == "decoder.decoder_pos_embed":
            out.update(map_decoder_pos_embed(value, cfg, key))
        else:
            out[key] = value
    for (prefix, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"{prefix}: incomplete attention projections {sorted(parts)} in the checkpoint")
        out[f"{prefix}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return cfg, out


def config_from_vitkit(cfg: MAEConfig) -> dict[str, Any]:
    """HF ViTMAEConfig dict for a vitkit MAEConfig (square or not; HF itself handles square images only)."""
    enc = cfg.encoder
    h, w = enc.image_size
    return {
        "model_type": "vit_mae", "architectures": ["ViTMAEForPreTraining"],
        "hidden_size": enc.dim, "num_hidden_layers": enc.depth, "num_attention_heads": enc.num_heads,
        "intermediate_size": int(enc.dim * enc.mlp_ratio), "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02,
        "layer_norm_eps": enc.eps, "image_size": h if h == w else [h, w], "patch_size": enc.patch_size,
        "num_channels": enc.in_chans, "qkv_bias": enc.qkv_bias,
        "decoder_num_attention_heads": cfg.decoder_num_heads, "decoder_hidden_size": cfg.decoder_dim,
        "decoder_num_hidden_layers": cfg.decoder_depth,
        "decoder_intermediate_size": int(cfg.decoder_dim * cfg.decoder_mlp_ratio),
        "mask_ratio": cfg.mask_ratio, "norm_pix_loss": cfg.norm_pix_loss,
    }


def from_vitkit(cfg: MAEConfig, state_dict: dict[str, Tensor]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(MAEConfig, vitkit state dict) → (HF config dict, HF state dict in the hub's key layout)."""
    if not isinstance(cfg, MAEConfig):
        raise TypeError(f"the vit_mae exporter handles MAEConfig, not {type(cfg).__name__}")
    enc = cfg.encoder
    if not enc.class_token or not enc.patchify_stem:
        raise ValueError("HF ViTMAE needs an encoder with a [CLS] token and conv patches")
    legacy = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense",
              "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    top = {ours: theirs for theirs, ours in _TOP.items()}
    out: dict[str, Tensor] = {}
    layer = re.compile(r"^(encoder|decoder)\.blocks\.(\d+)\.(.+)\.(weight|bias)$")
    for key, value in state_dict.items():
        m = layer.match(key)
        if m:
            prefix = (f"vit.encoder.layer.{m.group(2)}" if m.group(1) == "encoder"
                      else f"decoder.decoder_layers.{m.group(2)}")
            name, kind = m.group(3), m.group(4)
            if name == "attn.qkv":
                for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=False):
                    out[f"{prefix}.attention.attention.{part}.{kind}"] = chunk.clone()
            else:
                out[f"{prefix}.{legacy[name]}.{kind}"] = value
            continue
        module, _, kind = key.rpartition(".")
        if module in top:
            out[f"{top[module]}.{kind}"] = value
        elif key in ("encoder.cls_token", "decoder.mask_token"):
            out["vit.embeddings.cls_token" if key == "encoder.cls_token" else key] = value
        elif key not in ("encoder.pos_embed.weight", "encoder.cls_pos_embed"):
            raise ValueError(f"no HF ViTMAE key for vitkit key {key!r}")
    grid = _grid(enc)
    if enc.pos_embed == "learn":
        patch_pos, cls_pos = state_dict["encoder.pos_embed.weight"], state_dict["encoder.cls_pos_embed"]
    else:
        patch_pos, cls_pos = sincos_pos_embed_2d(enc.dim, grid)[None], torch.zeros(1, 1, enc.dim)
    out["vit.embeddings.position_embeddings"] = torch.cat([cls_pos, patch_pos], dim=1).contiguous()
    out["decoder.decoder_pos_embed"] = torch.cat(
        [torch.zeros(1, 1, cfg.decoder_dim), sincos_pos_embed_2d(cfg.decoder_dim, grid)[None]], dim=1)
    return config_from_vitkit(cfg), out


register_hf_converter(("vit_mae",), to_vitkit, from_vitkit)
