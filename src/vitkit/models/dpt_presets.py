"""DPT presets: ViT-B/16, ViT-L/16 and hybrid (R50 + ViT-B/16) encoders × depth and segmentation heads, a
tiny DPT for the built-in procedural dense data (64×64 scenes), and Depth Anything (DPT on DINOv2)."""

from __future__ import annotations

import dataclasses

from ..config import PreprocessConfig
from .dpt import DPT, DPTConfig
from .hybrid import hybrid_config
from .registry import get_model_config, register_model, register_model_type
from .vit import ViTConfig
from .vit_family import IMAGENET as DINOV2_PREPROCESS
from .vit_presets import vit_config

register_model_type("dpt", DPTConfig, DPT)

_DPT_PREPROCESS = PreprocessConfig(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic")


def _encoder(spec: str, **overrides) -> ViTConfig:
    return vit_config(spec, 384, num_classes=0, pos_interp="bilinear", preprocess=_DPT_PREPROCESS,
                      **overrides)


_BASE = DPTConfig(encoder=_encoder("B/16"), block_taps=(2, 5, 8, 11), features=(96, 192, 384, 768))
_LARGE = DPTConfig(encoder=_encoder("L/16"), block_taps=(5, 11, 17, 23), features=(256, 512, 1024, 1024))
_HYBRID = DPTConfig(encoder=hybrid_config(384, num_classes=0, pos_interp="bilinear",
                                          preprocess=_DPT_PREPROCESS),
                    stage_taps=(0, 1), block_taps=(8, 11), features=(256, 512, 768, 768))
_SEGMENT = {"task": "segment", "num_classes": 150, "fusion_batch_norm": True}

for _name, _cfg in (("base", _BASE), ("large", _LARGE), ("hybrid", _HYBRID)):
    register_model(f"dpt_{_name}_depth", dataclasses.replace(_cfg, task="depth"))
    register_model(f"dpt_{_name}_segment", dataclasses.replace(_cfg, **_SEGMENT))

# Tiny DPT for the built-in shapes scenes (64×64, patch 8 → strides 4/8/16/32 from an 8×8 grid).
_TINY_ENCODER = vit_config("Ti/8", 64, num_classes=0, depth=4, dim=128, num_heads=4, pos_interp="bilinear",
                           preprocess=_DPT_PREPROCESS)
_TINY = DPTConfig(encoder=_TINY_ENCODER, block_taps=(0, 1, 2, 3), features=(32, 64, 128, 128), fusion_dim=64)
register_model("dpt_tiny_depth", dataclasses.replace(_TINY, task="depth"))
register_model("dpt_tiny_segment", dataclasses.replace(_TINY, task="segment", num_classes=4, aux_head=True))

# Depth Anything (Yang et al., "Depth Anything: Unleashing the Power of Large-Scale Unlabeled Data",
# CVPR 2024): a DPT on DINOv2 ViT-S/B/L-14 at 518² whose taps are the last four blocks through the final
# norm (ViT-L: blocks 20-23), the [CLS] token ignored, the patch-14 grid resampled ×4, ×2, ×1, ×0.5
# (strides 3.5 … 28); relative inverse depth (disparity). `vitkit.convert.hf_depth_anything` loads the
# released weights.
_DA_PREPROCESS = dataclasses.replace(DINOV2_PREPROCESS, crop_pct=1.0, interpolation="bicubic")


def depth_anything_config(letter: str, block_taps: tuple[int, ...], features: tuple[int, ...],
                          fusion_dim: int) -> DPTConfig:
    """Depth Anything on DINOv2 ViT-`letter`/14 (s, b, l), with the reassemble widths and fusion width of the
    release."""
    encoder = get_model_config(f"dinov2_vit{letter}14", preprocess=_DA_PREPROCESS)
    return DPTConfig(encoder=encoder, block_taps=block_taps, tap_norm=True, readout="ignore",
                     features=features, strides=(3.5, 7, 14, 28), fusion_dim=fusion_dim, fusion_bias=True,
                     task="depth", depth_output="disparity", aux_head=False)


register_model("depth_anything_small", depth_anything_config("s", (8, 9, 10, 11), (48, 96, 192, 384), 64))
register_model("depth_anything_base", depth_anything_config("b", (8, 9, 10, 11), (96, 192, 384, 768), 128))
register_model("depth_anything_large",
               depth_anything_config("l", (20, 21, 22, 23), (256, 512, 1024, 1024), 256))
