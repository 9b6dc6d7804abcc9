"""HF transformers ViT (model_type "vit": ViTModel, ViTForImageClassification) ↔ vitkit VisionTransformer.

Key layout of an HF ``save_pretrained`` directory (``vit.`` prefix only under ViTForImageClassification)::

    embeddings.{cls_token (1,1,D), position_embeddings (1,1+N,D), patch_embeddings.projection}
    encoder.layer.i.{layernorm_before, attention.attention.{query,key,value}, attention.output.dense,
                     layernorm_after, intermediate.dense, output.dense}
    layernorm · pooler.dense (ViTModel) · classifier (ViTForImageClassification)

transformers ≥ 5 names the modules differently in memory (``layers.i.attention.q_proj`` …) but still saves the
layout above; both are accepted.

Pooler decision: HF's ViTModel pooler (Linear + tanh on the [CLS] token) is exactly vitkit's pre-logits layer,
so a ViTModel loads as ``representation_size = pooler_output_size, num_classes = 0``: ``forward_features``
equals HF's ``last_hidden_state`` and ``forward`` equals ``pooler_output``. Pass ``representation_size=None,
strict=False`` to drop it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..config import PreprocessConfig
from ..models.vit import ViTConfig
from . import register_hf_converter
from .hf_common import hf_cls_and_positions, refuse_unless_exportable, rename_keys

# HF's ViTImageProcessor without a preprocessor_config.json: resize (squash) to H × W with PIL bilinear,
# rescale by 1/255, normalise with mean = std = 0.5. `load_pretrained` then reads the file's values, if any.
HF_VIT_PREPROCESS = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear", resize="squash")

# transformers ≥ 5 in-memory names → the saved (legacy) names
_V5_NAMES = [
    (r"(^|\.)layers\.(\d+)\.", r"\1encoder.layer.\2."),
    (r"attention\.q_proj\.", "attention.attention.query."),
    (r"attention\.k_proj\.", "attention.attention.key."),
    (r"attention\.v_proj\.", "attention.attention.value."),
    (r"attention\.o_proj\.", "attention.output.dense."),
    (r"\.mlp\.fc1\.", ".intermediate.dense."),
    (r"\.mlp\.fc2\.", ".output.dense."),
]

# per block: vitkit name → HF name (q/k/v handled apart: they fuse into attn.qkv)
_BLOCK = {
    "norm1": "layernorm_before",
    "attn.proj": "attention.output.dense",
    "norm2": "layernorm_after",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}


def _legacy_names(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return rename_keys(state_dict, _V5_NAMES)


def _hf_image_size(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def vit_to_vitkit(hf_config: dict[str, Any],
                  state_dict: dict[str, Tensor]) -> tuple[ViTConfig, dict[str, Tensor]]:
    """Map an HF ViT config.json dict + state dict to a ViTConfig + vitkit state dict."""
    sd = _legacy_names(state_dict)
    if any(k.startswith("vit.") for k in sd):  # ViTForImageClassification: strip the base-model prefix
        sd = {k[4:] if k.startswith("vit.") else k: v for k, v in sd.items()}
    act = hf_config.get("hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"HF ViT with hidden_act={act!r} is not supported (vitkit's MLP uses exact GELU)")
    patch = hf_config.get("patch_size", 16)
    if not isinstance(patch, int):
        if patch[0] != patch[1]:
            raise ValueError(f"non-square patches {patch} are not supported")
        patch = int(patch[0])
    dim, hidden = hf_config["hidden_size"], hf_config["intermediate_size"]
    has_pooler = "pooler.dense.weight" in sd
    if has_pooler and hf_config.get("pooler_act", "tanh") != "tanh":
        raise ValueError(f"HF ViT pooler_act={hf_config['pooler_act']!r} is not supported "
                         "(vitkit's pre-logits use tanh)")
    num_classes = sd["classifier.weight"].shape[0] if "classifier.weight" in sd else 0
    labels = _label_names(hf_config, num_classes)
    cfg = ViTConfig(
        image_size=_hf_image_size(hf_config.get("image_size", 224)), patch_size=patch,
        in_chans=hf_config.get("num_channels", 3), num_classes=num_classes, dim=dim,
        depth=hf_config["num_hidden_layers"], num_heads=hf_config["num_attention_heads"],
        mlp_ratio=hidden / dim, qkv_bias=hf_config.get("qkv_bias", True),
        representation_size=sd["pooler.dense.weight"].shape[0] if has_pooler else None,
        eps=float(hf_config.get("layer_norm_eps", 1e-12)),
        drop_rate=float(hf_config.get("hidden_dropout_prob", 0.0)),
        attn_drop_rate=float(hf_config.get("attention_probs_dropout_prob", 0.0)))
    cfg.preprocess = PreprocessConfig(**HF_VIT_PREPROCESS, label_names=labels)
    if int(cfg.dim * cfg.mlp_ratio) != hidden:
        raise ValueError(f"intermediate_size {hidden} is not representable as mlp_ratio·{dim}")
    return cfg, _state_dict_to_vitkit(sd, cfg.depth)


def _label_names(hf_config: dict[str, Any], num_classes: int) -> tuple[str, ...]:
    id2label = hf_config.get("id2label") or {}
    if num_classes == 0 or len(id2label) != num_classes:
        return ()
    names = tuple(str(id2label.get(str(i), id2label.get(i, ""))) for i in range(num_classes))
    return () if all(n == f"LABEL_{i}" for i, n in enumerate(names)) else names  # HF's placeholder names


def _state_dict_to_vitkit(sd: dict[str, Tensor], depth: int) -> dict[str, Tensor]:
    sd = dict(sd)
    out: dict[str, Tensor] = {}
    pos = sd.pop("embeddings.position_embeddings")  # (1, 1 + N, D): [CLS] position first
    out["cls_pos_embed"], out["pos_embed.weight"] = pos[:, :1], pos[:, 1:]
    out["cls_token"] = sd.pop("embeddings.cls_token")
    for p in ("weight", "bias"):
        out[f"patch_embed.proj.{p}"] = sd.pop(f"embeddings.patch_embeddings.projection.{p}")
        out[f"norm.{p}"] = sd.pop(f"layernorm.{p}")
        for ours, theirs in (("pre_logits.fc", "pooler.dense"), ("head", "classifier")):
            if f"{theirs}.{p}" in sd:
                out[f"{ours}.{p}"] = sd.pop(f"{theirs}.{p}")
    for i in range(depth):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        for ours, theirs in _BLOCK.items():
            for p in ("weight", "bias"):
                out[f"{dst}{ours}.{p}"] = sd.pop(f"{src}{theirs}.{p}")
        for p in ("weight", "bias"):
            qkv = [sd.pop(f"{src}attention.attention.{n}.{p}", None) for n in ("query", "key", "value")]
            if all(t is not None for t in qkv):
                out[f"{dst}attn.qkv.{p}"] = torch.cat(qkv, dim=0)  # 3 × (D, ...) → (3·D, ...), q k v order
    out.update(sd)  # anything left is reported as unexpected by the loader
    return out


def vitkit_to_vit(cfg: Any, state_dict: dict[str, Tensor]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """ViTConfig + vitkit state dict → HF ViT config.json dict + state dict.

    [CLS]-pooled, learned-position ViTs map exactly: with a head → ViTForImageClassification; without a head →
    ViTModel (a pre-logits layer becomes its tanh pooler). Raises ValueError for what HF's ViT cannot express.
    """
    if not isinstance(cfg, ViTConfig):
        raise TypeError(f"the HF 'vit' exporter handles ViTConfig, not {type(cfg).__name__}")
    later = {"LayerScale": cfg.layer_scale_init is not None, "SwiGLU": cfg.mlp != "gelu",
             "registers": cfg.num_register_tokens, "[DIST]": cfg.distilled, "RoPE": cfg.rope is not None}
    if any(later.values()):  # DeiT / DINOv2 / DINOv3 parts: their exporters claim the model
        raise TypeError(f"a ViT with {', '.join(k for k, v in later.items() if v)} is not HF's plain ViT")
    _check_exportable(cfg)
    classify = cfg.num_classes > 0
    labels = cfg.preprocess.label_names or tuple(f"LABEL_{i}" for i in range(cfg.num_classes))
    gh, gw = cfg.image_size
    hf_config: dict[str, Any] = {
        "model_type": "vit", "architectures": ["ViTForImageClassification" if classify else "ViTModel"],
        "hidden_size": cfg.dim, "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.mlp_width, "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.drop_rate, "attention_probs_dropout_prob": cfg.attn_drop_rate,
        "initializer_range": 0.02, "layer_norm_eps": cfg.eps, "image_size": gh if gh == gw else [gh, gw],
        "patch_size": cfg.patch_size, "num_channels": cfg.in_chans, "qkv_bias": cfg.qkv_bias,
        "encoder_stride": cfg.patch_size, "pooler_output_size": cfg.representation_size or cfg.dim,
        "pooler_act": "tanh",
        "id2label": {str(i): n for i, n in enumerate(labels)},
        "label2id": {n: i for i, n in enumerate(labels)},
    }
    sd = _state_dict_from_vitkit(state_dict, cfg)
    if classify:
        sd = {(k if k.startswith("classifier.") else f"vit.{k}"): v for k, v in sd.items()}
    return hf_config, sd


def _check_exportable(cfg: ViTConfig) -> None:
    problems = []
    if cfg.backbone is not None:
        problems.append("a hybrid (ResNet) patch embedder")
    if cfg.conv_stem is not None:
        problems.append("a convolutional stem (HF's ViT embeds patches with one convolution)")
    if not cfg.class_token or cfg.pool != "cls":
        problems.append("global average pooling (HF's ViT classifies from the [CLS] token)")
    if cfg.use_fc_norm:
        problems.append("fc_norm (HF's ViT has its final LayerNorm before pooling)")
    if cfg.representation_size and cfg.num_classes > 0:
        problems.append("a pre-logits layer under a classifier (HF's classifier sits directly on [CLS]; "
                        "save with num_classes=0 to export it as ViTModel's pooler)")
    if cfg.pos_embed != "learn":
        problems.append("fixed sin-cos or no position embeddings (HF's ViT learns them)")
    if cfg.qk_norm:
        problems.append("QK-norm")
    refuse_unless_exportable("ViT", problems)


def _state_dict_from_vitkit(sd: dict[str, Tensor], cfg: ViTConfig) -> dict[str, Tensor]:
    out = hf_cls_and_positions(sd)
    for p in ("weight", "bias"):
        out[f"embeddings.patch_embeddings.projection.{p}"] = sd[f"patch_embed.proj.{p}"]
        out[f"layernorm.{p}"] = sd[f"norm.{p}"]
        if f"pre_logits.fc.{p}" in sd:
            out[f"pooler.dense.{p}"] = sd[f"pre_logits.fc.{p}"]
        if f"head.{p}" in sd:
            out[f"classifier.{p}"] = sd[f"head.{p}"]
    for i in range(cfg.depth):
        src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
        for ours, theirs in _BLOCK.items():
            for p in ("weight", "bias"):
                out[f"{dst}{theirs}.{p}"] = sd[f"{src}{ours}.{p}"]
        for p in ("weight", "bias") if cfg.qkv_bias else ("weight",):
            q, k, v = sd[f"{src}attn.qkv.{p}"].chunk(3, dim=0)  # (3·D, ...) → 3 × (D, ...)
            for name, t in zip(("query", "key", "value"), (q, k, v), strict=False):
                out[f"{dst}attention.attention.{name}.{p}"] = t
    return {k: v.contiguous() for k, v in out.items()}


register_hf_converter(("vit",), vit_to_vitkit, vitkit_to_vit)
