"""HF transformers DeiT (model_type "deit": DeiTForImageClassificationWithTeacher, DeiTModel) ↔ vitkit
VisionTransformer with ``distilled=True``.

The layout is HF's ViT (`hf_vit`) plus a distillation token: ``embeddings.distillation_token`` (1,1,D),
position embeddings (1, 2 + N, D) for [CLS], [DIST] and the patches, and two heads ``cls_classifier`` /
``distillation_classifier`` (``deit.`` prefix on the rest) whose logits HF averages, as vitkit's distilled
model does. DeiTModel loads with ``num_classes = 0`` and its tanh pooler as the pre-logits layer
(``forward`` = HF's ``pooler_output``).

Refused: DeiTForImageClassification, which runs the [DIST] token but classifies from [CLS] alone (vitkit's
distilled model averages two heads); load it as DeiTModel weights (``strict=False``) or use the teacher model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..models.vit import ViTConfig
from . import register_hf_converter
from .hf_common import hf_labels, refuse_unless_exportable, strip_prefix
from .hf_vit import _label_names, _legacy_names, _state_dict_from_vitkit, vit_to_vitkit

_HEADS = {"head": "cls_classifier", "head_dist": "distillation_classifier"}


def deit_to_vitkit(hf_config: dict[str, Any], state_dict: dict[str, Tensor]) -> tuple[ViTConfig, dict]:
    """HF DeiT config.json dict + state dict → ViTConfig (distilled) + vitkit state dict."""
    sd = strip_prefix(_legacy_names(state_dict), "deit.")
    if "classifier.weight" in sd:
        raise ValueError("HF DeiTForImageClassification classifies from [CLS] alone while its [DIST] token "
                         "still runs, which vitkit's distilled ViT (two averaged heads) does not express; "
                         "use DeiTForImageClassificationWithTeacher weights")
    dist = sd.pop("embeddings.distillation_token")
    pos = sd.pop("embeddings.position_embeddings")  # (1, 2 + N, D): [CLS], [DIST], patches
    sd["embeddings.position_embeddings"] = torch.cat([pos[:, :1], pos[:, 2:]], dim=1)  # HF ViT's layout
    heads = {ours: {p: sd.pop(f"{theirs}.{p}") for p in ("weight", "bias")}
             for ours, theirs in _HEADS.items() if f"{theirs}.weight" in sd}
    plain, out = vit_to_vitkit({**hf_config, "id2label": {}}, sd)
    num_classes = heads["head"]["weight"].shape[0] if heads else 0
    cfg = ViTConfig(**{**vars(plain), "distilled": True, "num_classes": num_classes})
    cfg.preprocess.label_names = _label_names(hf_config, num_classes)
    out["dist_token"], out["dist_pos_embed"] = dist, pos[:, 1:2]
    for ours, params in heads.items():
        out |= {f"{ours}.{p}": t for p, t in params.items()}
    return cfg, out


def vitkit_to_deit(cfg: Any, state_dict: dict[str, Tensor]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A distilled ViTConfig → HF DeiTForImageClassificationWithTeacher (with a head) or DeiTModel (without:
    its tanh pooler is the pre-logits layer, so `representation_size` must be set).

    Raises:
        TypeError: not a distilled ViTConfig (another exporter's model).
        ValueError: what HF's DeiT cannot express (named in the message).
    """
    if not isinstance(cfg, ViTConfig) or not cfg.distilled:
        raise TypeError("the HF DeiT exporter handles distilled ViTConfigs")
    parts = {"LayerScale": cfg.layer_scale_init is not None, "a SwiGLU MLP": cfg.mlp != "gelu",
             "QK-norm": cfg.qk_norm, "RoPE": cfg.rope is not None, "registers": cfg.num_register_tokens,
             "no learned position embeddings": cfg.pos_embed != "learn", "fc_norm": cfg.use_fc_norm,
             "another patch embedder": not cfg.patchify_stem,
             "no pooler (set representation_size to export a headless model as DeiTModel)":
                 not cfg.num_classes and not cfg.representation_size}
    problems = [name for name, used in parts.items() if used]
    refuse_unless_exportable("DeiT", problems)
    plain = ViTConfig(**{**vars(cfg), "distilled": False, "num_classes": 0})
    sd = {k: v for k, v in state_dict.items() if not k.startswith(("head", "dist_"))}
    hf_sd = _state_dict_from_vitkit(sd, plain)
    pos = hf_sd.pop("embeddings.position_embeddings")
    # (1, 1, D) + (1, 1, D) + (1, N, D) → (1, 2 + N, D)
    dist_pos = state_dict["dist_pos_embed"]
    hf_sd["embeddings.position_embeddings"] = torch.cat([pos[:, :1], dist_pos, pos[:, 1:]], dim=1)
    hf_sd["embeddings.distillation_token"] = state_dict["dist_token"]
    gh, gw = cfg.image_size
    hf_config: dict[str, Any] = {
        "model_type": "deit", "hidden_size": cfg.dim, "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads, "intermediate_size": cfg.mlp_width, "hidden_act": "gelu",
        "hidden_dropout_prob": cfg.drop_rate, "attention_probs_dropout_prob": cfg.attn_drop_rate,
        "initializer_range": 0.02, "layer_norm_eps": cfg.eps, "image_size": gh if gh == gw else [gh, gw],
        "patch_size": cfg.patch_size, "num_channels": cfg.in_chans, "qkv_bias": cfg.qkv_bias,
        "encoder_stride": cfg.patch_size, "pooler_output_size": cfg.representation_size or cfg.dim,
        "pooler_act": "tanh", **hf_labels(cfg.preprocess.label_names, cfg.num_classes)}
    if not cfg.num_classes:
        return {**hf_config, "architectures": ["DeiTModel"]}, {k: v.contiguous() for k, v in hf_sd.items()}
    out = {f"deit.{k}": v.contiguous() for k, v in hf_sd.items()}
    for ours, theirs in _HEADS.items():
        out |= {f"{theirs}.{p}": state_dict[f"{ours}.{p}"] for p in ("weight", "bias")}
    return {**hf_config, "architectures": ["DeiTForImageClassificationWithTeacher"]}, out


register_hf_converter(("deit",), deit_to_vitkit, vitkit_to_deit)
