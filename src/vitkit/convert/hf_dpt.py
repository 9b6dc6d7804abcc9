"""HF transformers DPT (model_type "dpt": DPTForDepthEstimation, DPTForSemanticSegmentation) ↔ vitkit DPT.

HF layout (``save_pretrained``)::

    dpt.embeddings / dpt.encoder / dpt.layernorm       the ViT encoder (as HF "vit", under ``dpt.``);
        hybrid: dpt.embeddings.backbone.* (BiT) and dpt.embeddings.projection (1×1 conv) instead of
        patch_embeddings
    neck.reassemble_stage.readout_projects.i.0         → reassemble.i.readout.proj
    neck.reassemble_stage.layers.i.{projection,resize} → reassemble.i.{proj,resample}
    neck.convs.i                                       → reassemble.i.to_fusion
    neck.fusion_stage.layers.j (j = 0 is the coarsest)  → fusion.(L-1-j) {rcu1,rcu2}.{conv,norm}{1,2}, proj
    head.head.{0,2,4}, head.projection                 → head.{conv1,conv2,conv3}, head.proj        (depth)
    head.head.{0,1,4}, auxiliary_head.head.{0,1,4}     → {head,aux_head}.{conv,norm,classifier}     (segment)

HF keeps an unused residual unit in its coarsest fusion layer; vitkit has none there (dropped on load, filled
with a copy of the block's other unit on export so HF loads without missing keys).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import Tensor

from ..config import PreprocessConfig
from ..models.dpt import DPTConfig
from ..models.vit import ViTConfig
from . import register_hf_converter
from .hf_vit import (
    _label_names,
    _legacy_names,
    _state_dict_from_vitkit,
    _state_dict_to_vitkit,
)

_HF_TRUNK = "dpt.embeddings.backbone.bit."  # DPT-Hybrid's BiT weights
_RCU = [("conv1", "convolution1"), ("conv2", "convolution2"), ("norm1", "batch_norm1"),
        ("norm2", "batch_norm2")]
_DEPTH_HEAD = [("conv1", "head.0"), ("conv2", "head.2"), ("conv3", "head.4"), ("proj", "projection")]
_SEG_HEAD = [("conv", "head.0"), ("norm", "head.1"), ("classifier", "head.4")]


def neck_prefixes(num_levels: int) -> list[tuple[str, str]]:
    """(vitkit prefix, HF prefix) pairs for the reassemble and fusion modules (DPT and Depth Anything name
    them alike)."""
    pairs: list[tuple[str, str]] = []
    for i in range(num_levels):
        hf = f"neck.reassemble_stage.layers.{i}."
        pairs += [(f"reassemble.{i}.readout.proj.", f"neck.reassemble_stage.readout_projects.{i}.0."),
                  (f"reassemble.{i}.proj.", f"{hf}projection."),
                  (f"reassemble.{i}.resample.", f"{hf}resize."),
                  (f"reassemble.{i}.to_fusion.", f"neck.convs.{i}.")]
        hf = f"neck.fusion_stage.layers.{num_levels - 1 - i}."  # HF fuses coarse → fine
        pairs.append((f"fusion.{i}.proj.", f"{hf}projection."))
        for unit, hf_unit in (("rcu1", "residual_layer1"), ("rcu2", "residual_layer2")):
            pairs += [(f"fusion.{i}.{unit}.{a}.", f"{hf}{hf_unit}.{b}.") for a, b in _RCU]
    return pairs


def _neck_prefixes(num_levels: int, task: str) -> list[tuple[str, str]]:
    """(vitkit prefix, HF prefix) pairs for the reassemble, fusion and head modules of an HF DPT."""
    pairs = neck_prefixes(num_levels)
    pairs += [(f"head.{a}.", f"head.{b}.") for a, b in (_DEPTH_HEAD if task == "depth" else _SEG_HEAD)]
    pairs += [(f"aux_head.{a}.", f"auxiliary_head.{b}.") for a, b in _SEG_HEAD]
    return pairs


def rename_prefixes(sd: dict[str, Tensor], pairs: list[tuple[str, str]]) -> dict[str, Tensor]:
    """Keys starting with a pair's first prefix get its second instead (the first matching pair wins)."""
    out = {}
    for key, value in sd.items():
        for src, dst in pairs:
            if key.startswith(src):
                key = dst + key[len(src):]
                break
        out[key] = value
    return out


def _task(hf_config: dict[str, Any], sd: dict[str, Tensor]) -> str:
    arch = " ".join(hf_config.get("architectures") or [])
    if "SemanticSegmentation" in arch or "head.head.1.running_mean" in sd:
        return "segment"
    if "DepthEstimation" in arch or "head.head.4.weight" in sd:
        return "depth"
    raise ValueError("this HF DPT directory has no depth or segmentation head (a bare DPTModel); "
                     "load its encoder as an HF 'vit' model instead")


def dpt_config_to_vitkit(hf_config: dict[str, Any], sd: dict[str, Tensor]) -> DPTConfig:
    """The DPTConfig of an HF DPT config.json (state dict used to tell depth from segmentation)."""
    if hf_config.get("backbone_config") and not hf_config.get("is_hybrid"):
        raise ValueError("HF DPT with a separate backbone (DINOv2, BEiT, Swin …) is not supported; "
                         "vitkit loads ViT and hybrid (BiT) DPTs, and DPTs on DINOv2 as HF Depth Anything "
                         "(model_type 'depth_anything')")
    if hf_config.get("head_in_index", -1) != -1:
        raise ValueError("HF DPT with head_in_index != -1 is not supported")
    patch, dim = int(hf_config.get("patch_size", 16)), hf_config["hidden_size"]
    size = hf_config.get("image_size", 384)
    encoder = ViTConfig(
        image_size=(size, size) if isinstance(size, int) else tuple(size), patch_size=patch,
        in_chans=hf_config.get("num_channels", 3), num_classes=0, dim=dim,
        depth=hf_config["num_hidden_layers"], num_heads=hf_config["num_attention_heads"],
        mlp_ratio=hf_config["intermediate_size"] / dim, qkv_bias=hf_config.get("qkv_bias", True),
        pos_interp="bilinear", eps=float(hf_config.get("layer_norm_eps", 1e-12)),
        drop_rate=float(hf_config.get("hidden_dropout_prob") or 0.0),
        attn_drop_rate=float(hf_config.get("attention_probs_dropout_prob") or 0.0),
        # DPTImageProcessor's defaults: resize (squash) to H × W, PIL bicubic, mean = std = 0.5
        preprocess=PreprocessConfig(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic",
                                    resize="squash"))
    taps = tuple(hf_config.get("backbone_out_indices") or (2, 5, 8, 11))
    factors = hf_config.get("reassemble_factors", (4, 2, 1, 0.5))
    stage_taps: tuple[int, ...] = ()
    strides = [round(patch / f) for f in factors]
    if hf_config.get("is_hybrid"):
        encoder = _hybrid_encoder(hf_config, encoder)
        stage_taps, taps, strides[:2] = (0, 1), taps[2:], [4, 8]
    task = _task(hf_config, sd)
    num_classes = sd["head.head.4.weight"].shape[0] if task == "segment" else 150
    encoder.preprocess.label_names = _label_names(hf_config, num_classes) if task == "segment" else ()
    return DPTConfig(
        encoder=encoder, stage_taps=stage_taps, block_taps=taps,
        readout=hf_config.get("readout_type", "project"),
        features=tuple(hf_config["neck_hidden_sizes"]), strides=tuple(strides),
        fusion_dim=hf_config.get("fusion_hidden_size", 256),
        fusion_batch_norm=bool(hf_config.get("use_batch_norm_in_fusion_residual") or False),
        fusion_bias=hf_config.get("use_bias_in_fusion_residual"), task=task,
        depth_projection=bool(hf_config.get("add_projection", False)), num_classes=num_classes,
        aux_head=any(k.startswith("auxiliary_head.") for k in sd),
        head_dropout=float(hf_config.get("semantic_classifier_dropout", 0.1)))


def _hybrid_encoder(hf_config: dict[str, Any], encoder: ViTConfig) -> ViTConfig:
    """DPT-Hybrid: the BiT trunk becomes the ViT's patch embedder; HF's `patch_size` is the trunk's stride,
    ours the patch side on its last map (1)."""
    if hf_config.get("readout_type", "project") != "project":
        raise ValueError("HF DPT-Hybrid needs readout_type='project'")
    from .hf_bit import bit_config_to_resnetv2

    backbone = bit_config_to_resnetv2(dict(hf_config.get("backbone_config") or {}))
    if len(backbone.layers) != 3:
        raise ValueError(f"DPT-Hybrid expects a 3-stage BiT trunk, got depths {backbone.layers}")
    return dataclasses.replace(encoder, patch_size=1, backbone=backbone)


def dpt_to_vitkit(hf_config: dict[str, Any],
                  state_dict: dict[str, Tensor]) -> tuple[DPTConfig, dict[str, Tensor]]:
    """Map an HF DPT config.json dict + state dict to a DPTConfig + vitkit state dict."""
    enc = _legacy_names({k[4:]: v for k, v in state_dict.items()
                         if k.startswith("dpt.") and not k.startswith(_HF_TRUNK)})
    rest = {k: v for k, v in state_dict.items() if not k.startswith("dpt.")}
    cfg = dpt_config_to_vitkit(hf_config, rest)
    if cfg.encoder.backbone is not None:  # hybrid: BiT trunk + 1×1 projection in place of the patch conv
        for p in ("weight", "bias"):
            enc[f"embeddings.patch_embeddings.projection.{p}"] = enc.pop(f"embeddings.projection.{p}")
    out = {f"encoder.{k}": v for k, v in _state_dict_to_vitkit(enc, cfg.encoder.depth).items()}
    if cfg.encoder.backbone is not None:
        from .hf_bit import bit_state_dict_to_resnetv2

        out.update({f"encoder.patch_embed.backbone.{k}": v
                    for k, v in bit_state_dict_to_resnetv2(state_dict, _HF_TRUNK).items()})
    levels = len(cfg.features)
    unused = "neck.fusion_stage.layers.0.residual_layer1."  # HF's coarsest fusion layer never uses it
    rest = {k: v for k, v in rest.items() if not k.startswith(unused)}
    out.update(rename_prefixes(rest, [(hf, ours) for ours, hf in _neck_prefixes(levels, cfg.task)]))
    return cfg, out


def on_dinov2(cfg: Any) -> bool:
    """True for a DPTConfig that HF would express as Depth Anything rather than DPT: a DINOv2-style encoder
    (LayerScale, SwiGLU, registers) or taps through the final norm."""
    if not isinstance(cfg, DPTConfig):
        return False
    enc = cfg.encoder
    return (cfg.tap_norm or enc.layer_scale_init is not None or enc.mlp == "swiglu"
            or enc.num_register_tokens > 0)


def vitkit_to_dpt(cfg: Any, state_dict: dict[str, Tensor]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """DPTConfig + vitkit state dict → HF DPT config.json dict + state dict."""
    if not isinstance(cfg, DPTConfig):
        raise TypeError(f"the HF 'dpt' exporter handles DPTConfig, not {type(cfg).__name__}")
    if on_dinov2(cfg):
        raise TypeError("a DPT on a DINOv2 encoder (or with normed taps) exports as HF Depth Anything")
    enc = cfg.encoder
    hybrid = enc.backbone is not None
    if hybrid and (cfg.stage_taps != (0, 1) or cfg.readout != "project" or enc.patch_size != 1):
        raise ValueError("HF's DPT-Hybrid taps ResNet stages (0, 1), uses readout 'project' and 1×1 patches")
    if not enc.class_token or enc.pos_embed != "learn" or enc.image_size[0] != enc.image_size[1]:
        raise ValueError("HF's DPT needs a [CLS] token, learned position embeddings and a square image_size")
    patch = enc.patch_size * (16 if hybrid else 1)  # HF's patch_size is the hybrid trunk's stride
    segment = cfg.task == "segment"
    labels = (enc.preprocess.label_names
              or tuple(f"LABEL_{i}" for i in range(cfg.num_classes if segment else 1)))
    hf_config: dict[str, Any] = {
        "model_type": "dpt",
        "architectures": ["DPTForSemanticSegmentation" if segment else "DPTForDepthEstimation"],
        "hidden_size": enc.dim, "num_hidden_layers": enc.depth, "num_attention_heads": enc.num_heads,
        "intermediate_size": int(enc.dim * enc.mlp_ratio), "hidden_act": "gelu", "layer_norm_eps": enc.eps,
        "hidden_dropout_prob": enc.drop_rate, "attention_probs_dropout_prob": enc.attn_drop_rate,
        "image_size": enc.image_size[0], "patch_size": patch, "num_channels": enc.in_chans,
        "qkv_bias": enc.qkv_bias, "is_hybrid": hybrid,
        "backbone_out_indices": [*cfg.stage_taps, *cfg.block_taps],
        "readout_type": cfg.readout, "reassemble_factors": [patch // s if patch % s == 0 else patch / s
                                                            for s in cfg.strides],
        "neck_hidden_sizes": list(cfg.features), "fusion_hidden_size": cfg.fusion_dim, "head_in_index": -1,
        "use_batch_norm_in_fusion_residual": cfg.fusion_batch_norm,
        "use_bias_in_fusion_residual": cfg.fusion_bias, "add_projection": cfg.depth_projection,
        "use_auxiliary_head": segment and cfg.aux_head, "semantic_classifier_dropout": cfg.head_dropout,
        "id2label": {str(i): n for i, n in enumerate(labels)},
        "label2id": {n: i for i, n in enumerate(labels)},
    }
    enc_sd = {k[len("encoder."):]: v for k, v in state_dict.items() if k.startswith("encoder.")}
    if hybrid:
        from .hf_bit import resnetv2_config_to_bit, resnetv2_state_dict_to_bit

        trunk = "patch_embed.backbone."
        grid = enc.image_size[0] // patch
        hf_config.update(backbone_config=resnetv2_config_to_bit(enc.backbone), neck_ignore_stages=[0, 1],
                         backbone_featmap_shape=[1, enc.backbone.channels[-1], grid, grid])
        trunk_sd = {k[len(trunk):]: v for k, v in enc_sd.items() if k.startswith(trunk)}
        out = resnetv2_state_dict_to_bit(trunk_sd,
                                         prefix=_HF_TRUNK)
        enc_sd = {k: v for k, v in enc_sd.items() if not k.startswith(trunk)}
    else:
        out = {}
    out.update({f"dpt.{k}": v for k, v in _state_dict_from_vitkit(enc_sd, enc).items()})
    if hybrid:
        for p in ("weight", "bias"):
            out[f"dpt.embeddings.projection.{p}"] = out.pop(f"dpt.embeddings.patch_embeddings.projection.{p}")
    out.update(rename_prefixes({k: v for k, v in state_dict.items() if not k.startswith("encoder.")},
                               _neck_prefixes(len(cfg.features), cfg.task)))
    coarsest = "neck.fusion_stage.layers.0."
    for key in [k for k in out if k.startswith(coarsest + "residual_layer2.")]:
        out[key.replace("residual_layer2.", "residual_layer1.")] = out[key].clone()
    return hf_config, {k: v.contiguous() for k, v in out.items()}


register_hf_converter(("dpt",), dpt_to_vitkit, vitkit_to_dpt)
