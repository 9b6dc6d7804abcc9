"""ViT presets. Sizes are data: the paper's Table 1 decodes "B/16" into width, depth and heads."""

from __future__ import annotations

from ..config import PreprocessConfig
from ..layers.conv_stem import ConvStemConfig
from .registry import register_model, register_model_type
from .vit import VisionTransformer, ViTConfig

# name → (paper symbol, dim, depth, heads); MLP width is 4·dim throughout
SIZES: dict[str, tuple[str, int, int, int]] = {
    "tiny": ("Ti", 192, 12, 3),
    "small": ("S", 384, 12, 6),
    "base": ("B", 768, 12, 12),
    "large": ("L", 1024, 24, 16),
    "huge": ("H", 1280, 32, 16),
}
_BY_SYMBOL = {sym: name for name, (sym, *_rest) in SIZES.items()}


def vit_config(spec: str, image_size: int = 224, **overrides) -> ViTConfig:
    """Config for a paper size, e.g. ``vit_config("B/16", 384, num_classes=10)``."""
    symbol, _, patch = spec.partition("/")
    if symbol not in _BY_SYMBOL or not patch.isdigit():
        raise ValueError(f"size spec must look like 'B/16' with a size in {sorted(_BY_SYMBOL)}, got {spec!r}")
    _, dim, depth, heads = SIZES[_BY_SYMBOL[symbol]]
    fields = dict(image_size=(image_size, image_size), patch_size=int(patch), dim=dim, depth=depth,
                  num_heads=heads)
    return ViTConfig(**{**fields, **overrides})


register_model_type("vit", ViTConfig, VisionTransformer)

for _name, (_sym, *_dims) in SIZES.items():
    for _patch, _sizes in ((14, (224,)), (16, (224, 384)), (32, (224, 384))):
        for _res in _sizes:
            register_model(f"vit_{_name}_patch{_patch}_{_res}", vit_config(f"{_sym}/{_patch}", _res))

# Small-image presets (CIFAR-like 32×32 and MNIST-like 28×28), 10 classes, no pre-logits.
_CIFAR = PreprocessConfig(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
_GRAY = PreprocessConfig(mean=(0.5,), std=(0.5,))
register_model("vit_tiny_patch4_32", vit_config("Ti/4", 32, num_classes=10, depth=6, preprocess=_CIFAR))
register_model("vit_small_patch4_32", vit_config("S/4", 32, num_classes=10, depth=8, preprocess=_CIFAR))
register_model("vit_tiny_patch2_32", vit_config("Ti/2", 32, num_classes=10, depth=6, preprocess=_CIFAR))
register_model("vit_tiny_patch4_28", vit_config("Ti/4", 28, num_classes=10, depth=6,
                                                in_chans=1, preprocess=_GRAY))
register_model("vit_tiny_patch2_28", vit_config("Ti/2", 28, num_classes=10, depth=6,
                                                in_chans=1, preprocess=_GRAY))
# `vitkit train`'s default: 16×16 grey (built-in digits, 8×8 upsampled), 16 patches, 0.45 M parameters.
register_model("vit_micro_patch4_16", vit_config("Ti/4", 16, num_classes=10, dim=96, depth=6, num_heads=4,
                                                 mlp_ratio=2.0, in_chans=1, preprocess=_GRAY))
# Conv-stem ViT for 32×32 (Xiao et al. 2021's ViT_C at CIFAR scale): three 3×3 convs (strides 1, 2, 2) make
# the 8×8 token grid that patch 4 would; the CIFAR-10 recipe (configs/cifar10.yaml) trains it.
register_model("vitc_tiny_stem4_32", vit_config(
    "Ti/1", 32, num_classes=10, dim=128, depth=6, num_heads=4, mlp_ratio=2.0, pool="avg", preprocess=_CIFAR,
    conv_stem=ConvStemConfig(channels=(32, 64, 128), strides=(1, 2, 2))))
# Hybrid for 32×32 (the paper's Sec. 3.1 at CIFAR scale): four 3×3 conv-BN-ReLU layers (64-128-128-256,
# strides 1, 2, 1, 2) make a 256-channel 8×8 feature map fed as 1×1 patches to 2 blocks of width 256. About
# half the forward FLOPs are convolutions (81.9% CIFAR-10 val in 30 min on 2 cores; vit_hybrid_conv7_32 does
# better).
register_model("vit_hybrid_conv4_32", vit_config(
    "Ti/1", 32, num_classes=10, dim=256, depth=2, num_heads=4, mlp_ratio=2.0, pool="avg", preprocess=_CIFAR,
    conv_stem=ConvStemConfig(channels=(64, 128, 128, 256), strides=(1, 2, 1, 2))))
# Deeper trunk, fewer tokens: seven 3×3 convs (64-128-128-256-256-256-256, strides 1, 2, 1, 2, 1, 1, 2)
# make a 4×4 map (16 tokens) for 2 blocks of width 256. About 88 % of the forward FLOPs are convolutions; at
# equal time on 2 CPU cores it trains CIFAR-10 further than vit_hybrid_conv4_32 (configs/cifar10_hybrid.yaml).
register_model("vit_hybrid_conv7_32", vit_config(
    "Ti/1", 32, num_classes=10, dim=256, depth=2, num_heads=4, mlp_ratio=2.0, pool="avg", preprocess=_CIFAR,
    conv_stem=ConvStemConfig(channels=(64, 128, 128, 256, 256, 256, 256), strides=(1, 2, 1, 2, 1, 1, 2))))
