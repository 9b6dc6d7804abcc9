"""HF transformers DINOv2 (model_type "dinov2": Dinov2Model, Dinov2ForImageClassification; and
"dinov2_with_registers": the same with register tokens) ↔ vitkit VisionTransformer.

Key layout of an HF ``save_pretrained`` directory (``dinov2.`` / ``dinov2_with_registers.`` prefix only under
the classification model)::

    embeddings.{cls_token (1,1,D), mask_token (1,D), register_tokens (1,R,D), position_embeddings (1,1+N,D),
                patch_embeddings.projection}
    encoder.layer.i.{norm1, attention.attention.{query,key,value}, attention.output.dense,
                     layer_scale1.lambda1, norm2, layer_scale2.lambda1,
                     mlp.{fc1,fc2} or SwiGLU mlp.{weights_in (2·H,D) gate rows first, weights_out}}
    layernorm · classifier (2·D → classes, on [CLS] ⊕ mean of the patch tokens)

transformers ≥ 5's in-memory names (``attention.q_proj``, ``mlp.gate_proj`` / ``up_proj`` / ``down_proj``) are
accepted too. Token order: [CLS], registers, patches; registers have no position embedding. Position
embeddings are resampled bicubic to other grids, with antialiasing for the register model only (as HF does):
vitkit's `pos_antialias`.

Not carried over: ``mask_token``, used only by DINOv2's masked-image pretraining (HF's ``bool_masked_pos``);
a vitkit model has no place for it, and the export writes zeros (HF's initial value).

Dinov2Model loads with ``num_classes = 0``: ``forward`` returns HF's ``pooler_output`` ([CLS] after the final
norm), ``forward_features`` its ``last_hidden_state``. Dinov2ForImageClassification loads with
``pool = "cls+avg"``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from ..models.vit import ViTConfig
from . import register_hf_converter
from .hf_common import (
    fuse_qkv,
    hf_cls_and_positions,
    hf_labels,
    hf_patch_size,
    move,
    refuse_unless_exportable,
    rename_keys,
    split_qkv,
    strip_prefix,
)
from .hf_vit import _hf_image_size, _label_names

log = logging.getLogger(__name__)

_PREFIXES = {"dinov2": "dinov2.", "dinov2_with_registers": "dinov2_with_registers."}
_IN_MEMORY = [  # transformers ≥ 5 module names → the saved ones
    (r"\.attention\.q_proj\.", ".attention.attention.query."),
    (r"\.attention\.k_proj\.", ".attention.attention.key."),
    (r"\.attention\.v_proj\.", ".attention.attention.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.mlp\.down_proj\.", ".mlp.weights_out."),
]
_QKV = ("attention.attention.query", "attention.attention.key", "attention.attention.value")
_BLOCK = {"norm1": "norm1", "attn.proj": "attention.output.dense", "norm2": "norm2"}
_MLP = {"gelu": {"mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"},
        "swiglu": {"mlp.fc1": "mlp.weights_in", "mlp.fc2": "mlp.weights_out"}}


def _saved_names(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    out = rename_keys(sd, _IN_MEMORY)
    for gate in [k for k in out if ".mlp.gate_proj." in k]:  # separate gate / up → packed weights_in
        up = gate.replace("gate_proj", "up_proj")
        out[gate.replace("gate_proj", "weights_in")] = torch.cat([out.pop(gate), out.pop(up)], dim=0)
    return out


def dinov2_to_vitkit(hf_config: dict[str, Any], state_dict: dict[str, Tensor]) -> tuple[ViTConfig, dict]:
    """HF DINOv2 (with or without registers) config.json dict + state dict → ViTConfig + vitkit state dict."""
    model_type = hf_config.get("model_type", "dinov2")
    sd = _saved_names(strip_prefix(state_dict, _PREFIXES.get(model_type, "dinov2.")))
    swiglu = bool(hf_config.get("use_swiglu_ffn", False))
    if not swiglu and hf_config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"HF DINOv2 with hidden_act={hf_config['hidden_act']!r} is not supported "
                         "(vitkit's MLP uses exact GELU)")
    num_classes = sd["classifier.weight"].shape[0] if "classifier.weight" in sd else 0
    cfg = ViTConfig(
        image_size=_hf_image_size(hf_config.get("image_size", 224)),
        patch_size=hf_patch_size(hf_config.get("patch_size", 14)), in_chans=hf_config.get("num_channels", 3),
        num_classes=num_classes, dim=hf_config["hidden_size"], depth=hf_config["num_hidden_layers"],
        num_heads=hf_config["num_attention_heads"], mlp_ratio=float(hf_config.get("mlp_ratio", 4)),
        qkv_bias=hf_config.get("qkv_bias", True), pool="cls+avg" if num_classes else "cls",
        eps=float(hf_config.get("layer_norm_eps", 1e-6)), pos_antialias=model_type == "dinov2_with_registers",
        drop_rate=float(hf_config.get("hidden_dropout_prob", 0.0)),
        attn_drop_rate=float(hf_config.get("attention_probs_dropout_prob", 0.0)),
        drop_path_rate=float(hf_config.get("drop_path_rate", 0.0)),
        layer_scale_init=float(hf_config.get("layerscale_value", 1.0)), mlp="swiglu" if swiglu else "gelu",
        num_register_tokens=int(hf_config.get("num_register_tokens", 0)) if model_type != "dinov2" else 0)
    cfg.preprocess.label_names = _label_names(hf_config, num_classes)
    return cfg, _to_vitkit_keys(sd, cfg)


def _to_vitkit_keys(sd: dict[str, Tensor], cfg: ViTConfig) -> dict[str, Tensor]:
    sd = dict(sd)
    if sd.pop("embeddings.mask_token", None) is not None:  # masked-image pretraining only
        log.info("embeddings.mask_token not loaded: vitkit's ViT has no masked-image pretraining input")
    out: dict[str, Tensor] = {"cls_token": sd.pop("embeddings.cls_token")}
    pos = sd.pop("embeddings.position_embeddings")  # (1, 1 + N, D): [CLS] position first
    out["cls_pos_embed"], out["pos_embed.weight"] = pos[:, :1], pos[:, 1:]
    if "embeddings.register_tokens" in sd:
        out["reg_token"] = sd.pop("embeddings.register_tokens")  # (1, R, D)
    move(sd, out, {"patch_embed.proj": "embeddings.patch_embeddings.projection", "norm": "layernorm",
                   "head": "classifier"}, "", "")
    for i in range(cfg.depth):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        move(sd, out, _BLOCK | _MLP[cfg.mlp], src, dst)
        move(sd, out, {"ls1": "layer_scale1", "ls2": "layer_scale2"}, src, dst, params=("lambda1",))
        for ls in ("ls1", "ls2"):
            if f"{dst}{ls}.lambda1" in out:
                out[f"{dst}{ls}.gamma"] = out.pop(f"{dst}{ls}.lambda1")
        fuse_qkv(sd, out, src, f"{dst}attn.", _QKV)
    out.update(sd)  # anything left is reported as unexpected by the loader
    return out


def vitkit_to_dinov2(cfg: Any, state_dict: dict[str, Tensor]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """ViTConfig of the DINOv2 family (LayerScale, SwiGLU or registers) → HF DINOv2 config + state dict.

    Raises:
        TypeError: not a ViTConfig with one of those parts (another exporter's model).
        ValueError: a part HF's DINOv2 cannot express (named in the message).
    """
    family = isinstance(cfg, ViTConfig) and cfg.rope is None and not cfg.distilled  # else DINOv3's / DeiT's
    if not (family and (cfg.layer_scale_init is not None or cfg.mlp == "swiglu" or cfg.num_register_tokens)):
        raise TypeError("the HF DINOv2 exporter handles ViTConfigs with LayerScale, SwiGLU or registers "
                        "(and no RoPE or [DIST])")
    _check_exportable(cfg)
    registers = cfg.num_register_tokens > 0
    model_type = "dinov2_with_registers" if registers else "dinov2"
    classify = cfg.num_classes > 0
    arch = ("Dinov2WithRegisters" if registers else "Dinov2") + (
        "ForImageClassification" if classify else "Model")
    hf_config: dict[str, Any] = {
        "model_type": model_type, "architectures": [arch], "hidden_size": cfg.dim,
        "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.num_heads, "mlp_ratio": int(cfg.mlp_ratio),
        "hidden_act": "gelu", "hidden_dropout_prob": cfg.drop_rate,
        "attention_probs_dropout_prob": cfg.attn_drop_rate, "initializer_range": 0.02,
        "layer_norm_eps": cfg.eps, "image_size": cfg.image_size[0], "patch_size": cfg.patch_size,
        "num_channels": cfg.in_chans, "qkv_bias": cfg.qkv_bias,
        "layerscale_value": 1.0 if cfg.layer_scale_init is None else cfg.layer_scale_init,
        "drop_path_rate": cfg.drop_path_rate, "use_swiglu_ffn": cfg.mlp == "swiglu", "use_mask_token": True,
        **hf_labels(cfg.preprocess.label_names, cfg.num_classes),
    }
    if registers:
        hf_config["num_register_tokens"] = cfg.num_register_tokens
    sd = _from_vitkit_keys(state_dict, cfg)
    if classify:
        sd = {(k if k.startswith("classifier.") else _PREFIXES[model_type] + k): v for k, v in sd.items()}
    return hf_config, sd


def _check_exportable(cfg: ViTConfig) -> None:
    problems = []
    if not cfg.patchify_stem:
        problems.append("a hybrid or conv-stem patch embedder")
    if cfg.pos_embed != "learn" or not cfg.class_token:
        problems.append("no [CLS] token or no learned position embeddings")
    if cfg.pool != ("cls+avg" if cfg.num_classes else "cls"):
        problems.append(f"pool={cfg.pool!r} (Dinov2Model pools [CLS], the classifier [CLS] ⊕ patch mean)")
    if cfg.use_fc_norm or cfg.representation_size:
        problems.append("fc_norm or a pre-logits layer")
    if cfg.image_size[0] != cfg.image_size[1]:
        problems.append(f"a non-square position grid {cfg.image_size} (HF resamples from a square one)")
    if cfg.mlp_ratio != int(cfg.mlp_ratio):
        problems.append(f"mlp_ratio {cfg.mlp_ratio} (HF's DINOv2 takes an integer)")
    if cfg.mlp_hidden_dim is not None:
        problems.append("an explicit mlp_hidden_dim (HF's DINOv2 derives the width from mlp_ratio)")
    if (cfg.pos_interp, cfg.pos_antialias) != ("bicubic", cfg.num_register_tokens > 0):
        problems.append("position-embedding resampling other than HF's (bicubic, antialiased only with "
                        "registers)")
    if cfg.qk_norm:
        problems.append("QK-norm")
    refuse_unless_exportable("DINOv2", problems)


def _from_vitkit_keys(sd: dict[str, Tensor], cfg: ViTConfig) -> dict[str, Tensor]:
    out = hf_cls_and_positions(sd)
    out["embeddings.mask_token"] = torch.zeros(1, cfg.dim, dtype=sd["cls_token"].dtype)
    if "reg_token" in sd:
        out["embeddings.register_tokens"] = sd["reg_token"]
    sd = dict(sd)
    move(sd, out, {"embeddings.patch_embeddings.projection": "patch_embed.proj", "layernorm": "norm",
                   "classifier": "head"}, "", "")
    for i in range(cfg.depth):
        src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
        move(sd, out, {theirs: ours for ours, theirs in (_BLOCK | _MLP[cfg.mlp]).items()}, src, dst)
        for ls, theirs in (("ls1", "layer_scale1"), ("ls2", "layer_scale2")):
            gamma = sd.get(f"{src}{ls}.gamma", torch.ones(cfg.dim))  # no LayerScale: γ = 1 is the same block
            out[f"{dst}{theirs}.lambda1"] = gamma
        split_qkv(sd, out, f"{src}attn.", dst, _QKV)
    return {k: v.contiguous() for k, v in out.items()}


register_hf_converter(("dinov2", "dinov2_with_registers"), dinov2_to_vitkit, vitkit_to_dinov2)
