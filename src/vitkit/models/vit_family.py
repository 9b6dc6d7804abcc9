"""Presets of the ViT family after the paper, each the same `VisionTransformer` with other parts chosen:

* DeiT (Touvron et al., "Training data-efficient image transformers & distillation through attention", ICML
  2021): the paper's ViT trained on ImageNet-1k; the ``_distilled`` models add a [DIST] token and head.
* DeiT III (Touvron et al., "DeiT III: Revenge of the ViT", ECCV 2022): LayerScale (γ₀ = 1e-6), no position
  embedding on [CLS] (timm's ``no_embed_class``: a zero one here).
* DINOv2 (Oquab et al., 2023): patch 14 at 518², LayerScale (1e-5), SwiGLU for ViT-g; ``_reg``: 4 registers
  (Darcet et al., "Vision Transformers Need Registers", ICLR 2024).
* DINOv3 (Siméoni et al., 2025): patch 16, 2-D RoPE instead of position embeddings, 4 registers, LayerScale,
  no key bias (held as zeros in the fused qkv), LayerNorm eps 1e-5; SwiGLU for S+, H+ and 7B.
* Hybrids from AugReg (Steiner et al., "How to train your ViT?", 2021) as timm names them: R+Ti/16 (the ResNet
  stem alone, stride 4, then 8×8 patches) and R26+S/32.

Widths, depths and heads come from each release (HF transformers / timm / the papers' tables).
"""

from __future__ import annotations

from ..config import PreprocessConfig
from ..layers import RopeConfig
from .registry import register_model
from .resnetv2 import ResNetV2Config
from .vit import ViTConfig
from .vit_presets import vit_config

IMAGENET = PreprocessConfig(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_pct=0.875)
_DEIT = {"tiny": "Ti", "small": "S", "base": "B", "large": "L"}

for _name, _sym in _DEIT.items():
    if _name != "large":
        register_model(f"deit_{_name}_patch16_224", vit_config(f"{_sym}/16", preprocess=IMAGENET))
        register_model(f"deit_{_name}_distilled_patch16_224",
                       vit_config(f"{_sym}/16", distilled=True, preprocess=IMAGENET))
    if _name != "tiny":
        register_model(f"deit3_{_name}_patch16_224",
                       vit_config(f"{_sym}/16", layer_scale_init=1e-6, preprocess=IMAGENET))

# DINOv2: (letter, dim, depth, heads, mlp); ViT-g/14 has 1536 wide, 40 blocks, 24 heads, SwiGLU 4096.
DINOV2 = [("s", 384, 12, 6, "gelu"), ("b", 768, 12, 12, "gelu"), ("l", 1024, 24, 16, "gelu"),
          ("g", 1536, 40, 24, "swiglu")]
for _letter, _dim, _depth, _heads, _mlp in DINOV2:
    _cfg = dict(image_size=(518, 518), patch_size=14, num_classes=0, dim=_dim, depth=_depth, num_heads=_heads,
                mlp=_mlp, layer_scale_init=1e-5, preprocess=IMAGENET)
    register_model(f"dinov2_vit{_letter}14", ViTConfig(**_cfg))
    register_model(f"dinov2_vit{_letter}14_reg", ViTConfig(**_cfg, num_register_tokens=4, pos_antialias=True))

# DINOv3 as HF ships it: (name, dim, depth, heads, MLP width, mlp).
DINOV3 = [("s16", 384, 12, 6, 1536, "gelu"), ("s16plus", 384, 12, 6, 1536, "swiglu"),
          ("b16", 768, 12, 12, 3072, "gelu"), ("l16", 1024, 24, 16, 4096, "gelu"),
          ("h16plus", 1280, 32, 20, 5120, "swiglu"), ("7b16", 4096, 40, 32, 8192, "swiglu")]
for _name, _dim, _depth, _heads, _hidden, _mlp in DINOV3:
    register_model(f"dinov3_vit{_name}", ViTConfig(
        image_size=(224, 224), patch_size=16, num_classes=0, dim=_dim, depth=_depth, num_heads=_heads,
        mlp=_mlp, mlp_hidden_dim=_hidden, mlp_ratio=_hidden / _dim, layer_scale_init=1e-5, eps=1e-5,
        pos_embed="none", rope=RopeConfig(), num_register_tokens=4, preprocess=IMAGENET))

# R+Ti/16: ResNetV2 stem only (7×7/2 StdConv, GroupNorm + ReLU, 3×3/2 max pool: stride 4), 8×8 patches.
for _res in (224, 384):
    register_model(f"vit_tiny_r_s16_p8_{_res}", vit_config(
        "Ti/8", _res, backbone=ResNetV2Config(layers=(), channels=())))
    register_model(f"vit_small_r26_s32_{_res}", vit_config(
        "S/1", _res, backbone=ResNetV2Config(layers=(2, 2, 2, 2), channels=(256, 512, 1024, 2048))))
