"""HF transformers Depth Anything (model_type "depth_anything": DepthAnythingForDepthEstimation) ↔ vitkit DPT.

Depth Anything (Yang et al., CVPR 2024; V2: NeurIPS 2024) is a DPT on a DINOv2 backbone, so it loads as a
vitkit `DPT` whose encoder is a DINOv2 `VisionTransformer` and whose taps go through the encoder's final norm
(`tap_norm`). Where it differs from HF's DPT, and how the DPTConfig says so:

* taps: HF's Dinov2Backbone ``out_indices`` name hidden states (stage k = the output of block k - 1), normed
  when ``apply_layernorm`` (always, in the released models) → ``block_taps = k - 1``, ``tap_norm``;
* reassemble: the [CLS] token is dropped (``readout="ignore"``), factors (4, 2, 1, 0.5) on the patch-14 grid
  → ``strides = 14 / factor`` = (3.5, 7, 14, 28);
* fusion: residual units with biases and no BatchNorm, and, as vitkit's DPT, no residual unit for the
  coarsest level (HF keeps an unused one: dropped on load, a copy of the level's other unit on export);
* head: conv (F → F/2) → upsample to the input → conv (→ ``head_hidden_size``) → ReLU → conv (→ 1) → ReLU
  ("relative") or sigmoid ("metric"), times ``max_depth`` → ``depth_hidden``, ``depth_estimation``,
  ``max_depth``. Relative models predict disparity, metric ones depth in metres (``depth_output``).

HF layout (``save_pretrained``): backbone.{embeddings,encoder,layernorm}.* (HF DINOv2, converted by
`vitkit.convert.hf_dinov2`), neck.{reassemble_stage,convs,fusion_stage}.* (named as in HF's DPT),
head.{conv1,conv2,conv3}.* (vitkit's names already).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import Tensor

from ..config import PreprocessConfig
from ..models.dpt import DPTConfig
from . import register_hf_converter
from .hf_dinov2 import dinov2_to_vitkit, vitkit_to_dinov2
from .hf_dpt import neck_prefixes, on_dinov2, rename_prefixes

IMAGENET = PreprocessConfig(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bicubic")
_UNUSED = "neck.fusion_stage.layers.0.residual_layer1."  # HF's coarsest fusion layer never runs it


def _block_taps(backbone: dict[str, Any]) -> tuple[int, ...]:
    """HF's stage indices (``out_indices``, or ``out_features`` names "stageK") → vitkit block indices."""
    stages = backbone.get("out_indices")
    if not stages and backbone.get("out_features"):
        stages = [int(name.removeprefix("stage")) for name in backbone["out_features"]]
    stages = list(stages or (9, 10, 11, 12))  # DepthAnythingConfig's default backbone
    if min(stages) < 1:
        raise ValueError("a Depth Anything backbone that taps the embeddings (stage0) is not supported")
    return tuple(k - 1 for k in stages)


def depth_anything_config_to_vitkit(hf_config: dict[str, Any], encoder: Any) -> DPTConfig:
    """The DPTConfig of an HF Depth Anything config.json, around the converted DINOv2 `encoder` config."""
    backbone = dict(hf_config.get("backbone_config") or {})
    if hf_config.get("head_in_index", -1) != -1:
        raise ValueError("HF Depth Anything with head_in_index != -1 is not supported")
    if hf_config.get("reassemble_hidden_size", encoder.dim) != encoder.dim:
        raise ValueError(f"reassemble_hidden_size {hf_config['reassemble_hidden_size']} differs from the "
                         f"backbone's hidden_size {encoder.dim}")
    patch = encoder.patch_size
    if hf_config.get("patch_size", patch) not in (patch, [patch, patch]):
        raise ValueError(f"the neck's patch_size {hf_config['patch_size']} differs from the backbone's "
                         f"({patch})")
    estimation = hf_config.get("depth_estimation_type", "relative")
    if estimation not in ("relative", "metric"):
        raise ValueError(f"depth_estimation_type {estimation!r} is not 'relative' or 'metric'")
    factors = hf_config.get("reassemble_factors", (4, 2, 1, 0.5))
    return DPTConfig(
        encoder=encoder, block_taps=_block_taps(backbone),
        tap_norm=bool(backbone.get("apply_layernorm", True)), readout="ignore",
        features=tuple(hf_config.get("neck_hidden_sizes", (48, 96, 192, 384))),
        strides=tuple(_stride(patch, f) for f in factors), fusion_dim=hf_config.get("fusion_hidden_size", 64),
        fusion_batch_norm=False, fusion_bias=True, task="depth",
        depth_hidden=hf_config.get("head_hidden_size", 32), depth_estimation=estimation,
        max_depth=float(hf_config.get("max_depth") or 1.0),
        depth_output="disparity" if estimation == "relative" else "depth", aux_head=False)


def _stride(patch: int, factor: float) -> int | float:
    stride = patch / factor
    return int(stride) if stride == int(stride) else stride


def depth_anything_to_vitkit(hf_config: dict[str, Any],
                             state_dict: dict[str, Tensor]) -> tuple[DPTConfig, dict[str, Tensor]]:
    """Map an HF Depth Anything config.json dict + state dict to a DPTConfig + vitkit state dict."""
    if hf_config.get("backbone") and not hf_config.get("backbone_config"):
        raise ValueError(f"this Depth Anything names its backbone {hf_config['backbone']!r} instead of "
                         "describing it (backbone_config); vitkit needs the config to build it")
    backbone = dict(hf_config.get("backbone_config") or {"model_type": "dinov2"})
    if backbone.get("model_type", "dinov2") != "dinov2":  # HF's neck drops one prefix token: no registers
        raise ValueError(f"Depth Anything on a {backbone['model_type']!r} backbone is not supported "
                         "(vitkit loads DINOv2 backbones without registers)")
    encoder, enc_sd = dinov2_to_vitkit(backbone, {k[len("backbone."):]: v for k, v in state_dict.items()
                                                  if k.startswith("backbone.")})
    encoder = dataclasses.replace(encoder, num_classes=0, preprocess=dataclasses.replace(IMAGENET))
    cfg = depth_anything_config_to_vitkit(hf_config, encoder)
    out = {f"encoder.{k}": v for k, v in enc_sd.items()}
    rest = {k: v for k, v in state_dict.items() if not k.startswith(("backbone.", _UNUSED))}
    out.update(rename_prefixes(rest, [(hf, ours) for ours, hf in neck_prefixes(len(cfg.features))]))
    return cfg, out


def vitkit_to_depth_anything(cfg: Any,
                             state_dict: dict[str, Tensor]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A Depth Anything DPTConfig (taps through the final norm) + state dict → HF config.json + state dict.

    Raises:
        TypeError: not a DPTConfig with `tap_norm` (HF's DPT exporter handles the others).
        ValueError: a part HF's Depth Anything cannot express (named in the message).
    """
    if not on_dinov2(cfg):
        raise TypeError("the HF 'depth_anything' exporter handles DPTs on DINOv2 encoders (LayerScale, "
                        "SwiGLU or registers) or with taps through the final norm")
    _check_exportable(cfg)
    patch = cfg.encoder.patch_size
    backbone, enc_sd = vitkit_to_dinov2(cfg.encoder, {k[len("encoder."):]: v for k, v in state_dict.items()
                                                      if k.startswith("encoder.")})
    backbone.update(out_indices=[b + 1 for b in cfg.block_taps], apply_layernorm=cfg.tap_norm,
                    reshape_hidden_states=False)
    factors = [patch / s for s in cfg.strides]
    hf_config = {
        "model_type": "depth_anything", "architectures": ["DepthAnythingForDepthEstimation"],
        "backbone_config": backbone, "patch_size": patch, "reassemble_hidden_size": cfg.encoder.dim,
        "reassemble_factors": [int(f) if f == int(f) else f for f in factors],
        "neck_hidden_sizes": list(cfg.features), "fusion_hidden_size": cfg.fusion_dim, "head_in_index": -1,
        "head_hidden_size": cfg.depth_hidden, "depth_estimation_type": cfg.depth_estimation,
        "max_depth": int(cfg.max_depth) if cfg.max_depth == int(cfg.max_depth) else cfg.max_depth,
    }
    out = {f"backbone.{k}": v for k, v in enc_sd.items()}
    out.update(rename_prefixes({k: v for k, v in state_dict.items() if not k.startswith("encoder.")},
                               neck_prefixes(len(cfg.features))))
    for key in [k for k in out if k.startswith("neck.fusion_stage.layers.0.residual_layer2.")]:
        out[key.replace("residual_layer2.", "residual_layer1.")] = out[key].clone()
    return hf_config, {k: v.contiguous() for k, v in out.items()}


def _check_exportable(cfg: DPTConfig) -> None:
    patch = cfg.encoder.patch_size
    problems = []
    if cfg.encoder.num_register_tokens:
        problems.append("register tokens (HF's Depth Anything drops the [CLS] token alone)")
    if list(cfg.block_taps) != sorted(set(cfg.block_taps)):
        problems.append(f"block taps {cfg.block_taps} (HF's backbone taps distinct blocks in order)")
    if cfg.stage_taps or cfg.readout != "ignore":
        problems.append("ResNet-stage taps or a readout other than 'ignore'")
    if cfg.task != "depth" or cfg.depth_projection:
        problems.append("a segmentation head or a depth projection")
    if cfg.fusion_batch_norm or cfg.fusion_bias is False:
        problems.append("fusion units with BatchNorm or without biases")
    if not all((patch / s).is_integer() or (s / patch).is_integer() for s in cfg.strides):
        problems.append(f"strides {cfg.strides} (HF resamples the patch grid by integer factors or their "
                        "inverses)")
    if problems:
        raise ValueError("HF transformers' Depth Anything cannot express this model: " + "; ".join(problems)
                         + ". Save it in vitkit format instead (format='vitkit').")


register_hf_converter(("depth_anything",), depth_anything_to_vitkit, vitkit_to_depth_anything)
