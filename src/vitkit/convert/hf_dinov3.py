"""HF transformers DINOv3 ViT (model_type "dinov3_vit": DINOv3ViTModel) ↔ vitkit VisionTransformer with RoPE.

Key layout (no prefix)::

    embeddings.{cls_token (1,1,D), mask_token (1,1,D), register_tokens (1,R,D), patch_embeddings (conv)}
    layer.i.{norm1, attention.{q_proj, k_proj (no bias by default), v_proj, o_proj}, layer_scale1.lambda1,
             norm2, layer_scale2.lambda1, mlp.{up_proj, down_proj} or mlp.{gate_proj, up_proj, down_proj}}
    norm

No position embeddings: 2-D RoPE (`layers.rope`) from ``rope_theta`` and the training-time coordinate
augmentations ``pos_embed_shift / jitter / rescale`` (`RopeConfig`). Token order [CLS], registers, patches.
An absent q/k/v bias (DINOv3 has none on the keys) is a zero slice of vitkit's fused qkv bias; the export
writes ``key_bias=False`` while that slice is still zero. Not carried over: ``mask_token`` (masked-image
pretraining only; the export writes zeros). Loads with ``num_classes = 0``: ``forward`` returns HF's
``pooler_output`` ([CLS] after the final norm), ``forward_features`` its ``last_hidden_state``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from ..layers import RopeConfig
from ..models.vit import ViTConfig
from . import register_hf_converter
from .hf_common import fuse_qkv, hf_patch_size, move, refuse_unless_exportable, split_qkv
from .hf_vit import _hf_image_size

log = logging.getLogger(__name__)

_QKV = ("attention.q_proj", "attention.k_proj", "attention.v_proj")
_BLOCK = {"norm1": "norm1", "attn.proj": "attention.o_proj", "norm2": "norm2", "mlp.fc2": "mlp.down_proj"}
_ACT = {"gelu": "gelu", "swiglu": "silu"}


def dinov3_to_vitkit(hf_config: dict[str, Any], state_dict: dict[str, Tensor]) -> tuple[ViTConfig, dict]:
    """HF DINOv3 ViT config.json dict + state dict → ViTConfig + vitkit state dict."""
    mlp = "swiglu" if hf_config.get("use_gated_mlp", False) else "gelu"
    act = hf_config.get("hidden_act", "gelu")
    if act != _ACT[mlp]:
        raise ValueError(f"HF DINOv3 with hidden_act={act!r} and use_gated_mlp={mlp == 'swiglu'} is not "
                         f"supported (vitkit's {mlp} MLP uses {_ACT[mlp]})")
    if not (hf_config.get("proj_bias", True) and hf_config.get("mlp_bias", True)):
        raise ValueError("HF DINOv3 without output-projection or MLP biases is not supported")
    dim, hidden = hf_config["hidden_size"], hf_config["intermediate_size"]
    rope = RopeConfig(theta=float(hf_config.get("rope_theta", 100.0)),
                      shift=hf_config.get("pos_embed_shift"), jitter=hf_config.get("pos_embed_jitter"),
                      rescale=hf_config.get("pos_embed_rescale", 2.0))
    cfg = ViTConfig(
        image_size=_hf_image_size(hf_config.get("image_size", 224)),
        patch_size=hf_patch_size(hf_config.get("patch_size", 16)), in_chans=hf_config.get("num_channels", 3),
        num_classes=0, dim=dim, depth=hf_config["num_hidden_layers"],
        num_heads=hf_config["num_attention_heads"], mlp_ratio=hidden / dim, mlp_hidden_dim=hidden, mlp=mlp,
        eps=float(hf_config.get("layer_norm_eps", 1e-5)),
        qkv_bias=any(hf_config.get(f"{n}_bias", n != "key") for n in ("query", "key", "value")),
        attn_drop_rate=float(hf_config.get("attention_dropout", 0.0)),
        drop_path_rate=float(hf_config.get("drop_path_rate", 0.0)),
        layer_scale_init=float(hf_config.get("layerscale_value", 1.0)), pos_embed="none", rope=rope,
        num_register_tokens=int(hf_config.get("num_register_tokens", 0)))
    sd = dict(state_dict)
    if sd.pop("embeddings.mask_token", None) is not None:  # masked-image pretraining only
        log.info("embeddings.mask_token not loaded: vitkit's ViT has no masked-image pretraining input")
    out: dict[str, Tensor] = {"cls_token": sd.pop("embeddings.cls_token")}
    registers = sd.pop("embeddings.register_tokens", None)
    if cfg.num_register_tokens:
        out["reg_token"] = registers  # (1, R, D)
    move(sd, out, {"patch_embed.proj": "embeddings.patch_embeddings", "norm": "norm"}, "", "")
    for i in range(cfg.depth):
        src, dst = f"layer.{i}.", f"blocks.{i}."
        move(sd, out, _BLOCK, src, dst)
        for ls in ("1", "2"):
            out[f"{dst}ls{ls}.gamma"] = sd.pop(f"{src}layer_scale{ls}.lambda1")
        for p in ("weight", "bias"):
            names = [f"{src}mlp.{n}.{p}" for n in ("gate_proj", "up_proj") if f"{src}mlp.{n}.{p}" in sd]
            out[f"{dst}mlp.fc1.{p}"] = torch.cat([sd.pop(n) for n in names], dim=0)  # gated: [gate; up]
        fuse_qkv(sd, out, src, f"{dst}attn.", _QKV)
    out.update(sd)  # anything left is reported as unexpected by the loader
    return cfg, out


def vitkit_to_dinov3(cfg: Any, state_dict: dict[str, Tensor]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A RoPE ViTConfig → HF DINOv3ViTModel config + state dict.

    Raises:
        TypeError: not a ViTConfig with RoPE (another exporter's model).
        ValueError: what HF's DINOv3 cannot express (named in the message).
    """
    if not isinstance(cfg, ViTConfig) or cfg.rope is None:
        raise TypeError("the HF DINOv3 exporter handles ViTConfigs with RoPE")
    parts = {"added position embeddings": cfg.pos_embed != "none", "no [CLS]": not cfg.class_token,
             "a head (DINOv3ViTModel has none; save with num_classes=0)": cfg.num_classes,
             "pooling other than [CLS]": cfg.pool != "cls", "fc_norm or pre-logits": cfg.use_fc_norm
             or cfg.representation_size, "QK-norm": cfg.qk_norm, "a distillation token": cfg.distilled,
             "another patch embedder": not cfg.patchify_stem}
    problems = [name for name, used in parts.items() if used]
    refuse_unless_exportable("DINOv3", problems)
    sd = dict(state_dict)
    out: dict[str, Tensor] = {"embeddings.cls_token": sd.pop("cls_token"),
                              "embeddings.mask_token": torch.zeros(1, 1, cfg.dim)}
    out["embeddings.register_tokens"] = sd.pop("reg_token", torch.zeros(1, 0, cfg.dim))
    move(sd, out, {"embeddings.patch_embeddings": "patch_embed.proj", "norm": "norm"}, "", "")
    biases = {}
    for i in range(cfg.depth):
        src, dst = f"blocks.{i}.", f"layer.{i}."
        move(sd, out, {theirs: ours for ours, theirs in _BLOCK.items()}, src, dst)
        for ls in ("1", "2"):
            out[f"{dst}layer_scale{ls}.lambda1"] = sd.get(f"{src}ls{ls}.gamma", torch.ones(cfg.dim))
        names = ("gate_proj", "up_proj") if cfg.mlp == "swiglu" else ("up_proj",)
        for p in ("weight", "bias"):
            for name, t in zip(names, sd[f"{src}mlp.fc1.{p}"].chunk(len(names), dim=0), strict=True):
                out[f"{dst}mlp.{name}.{p}"] = t
        split_qkv(sd, out, f"{src}attn.", dst, _QKV)
        for n in ("q", "k", "v"):
            bias = out.get(f"{dst}attention.{n}_proj.bias")
            biases[n] = biases.get(n, False) or (bias is not None and bool(bias.any()))
    for i in range(cfg.depth):  # HF has no bias tensor where a projection's bias is off
        for n in ("q", "k", "v"):
            if not biases[n]:
                out.pop(f"layer.{i}.attention.{n}_proj.bias", None)
    return _hf_config(cfg, biases), {k: v.contiguous() for k, v in out.items()}


def _hf_config(cfg: ViTConfig, biases: dict[str, bool]) -> dict[str, Any]:
    """DINOv3ViTConfig fields for `cfg`; `biases`: whether the q, k, v projections have a bias."""
    rope = cfg.rope
    return {
        "model_type": "dinov3_vit", "architectures": ["DINOv3ViTModel"], "hidden_size": cfg.dim,
        "intermediate_size": cfg.mlp_width, "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads, "hidden_act": _ACT[cfg.mlp],
        "use_gated_mlp": cfg.mlp == "swiglu",
        "attention_dropout": cfg.attn_drop_rate,
        "initializer_range": 0.02, "layer_norm_eps": cfg.eps, "rope_theta": rope.theta,
        "image_size": cfg.image_size[0] if cfg.image_size[0] == cfg.image_size[1] else list(cfg.image_size),
        "patch_size": cfg.patch_size, "num_channels": cfg.in_chans, "query_bias": biases["q"],
        "key_bias": biases["k"], "value_bias": biases["v"], "proj_bias": True, "mlp_bias": True,
        "layerscale_value": 1.0 if cfg.layer_scale_init is None else cfg.layer_scale_init,
        "drop_path_rate": cfg.drop_path_rate, "num_register_tokens": cfg.num_register_tokens,
        "pos_embed_shift": rope.shift, "pos_embed_jitter": rope.jitter, "pos_embed_rescale": rope.rescale}


register_hf_converter(("dinov3_vit",), dinov3_to_vitkit, vitkit_to_dinov3)
