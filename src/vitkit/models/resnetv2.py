"""ResNetV2 as in BiT (Kolesnikov et al., "Big Transfer (BiT): General Visual Representation Learning",
ECCV 2020).

Weight-standardised convolutions (`layers.StdConv2d`) and GroupNorm (32 groups) throughout, in two block
flavours:

  * "preact": the pre-activation bottleneck of He et al., "Identity Mappings in Deep Residual Networks" (BiT's
    own models; GN+ReLU before each conv, a final GN+ReLU after the last stage, no norm in the stem);
  * "bottleneck": the post-activation (v1.5) bottleneck used by the ViT paper's hybrid R50 and DPT-Hybrid
    (conv → GN → ReLU, GN without ReLU before the residual sum, ReLU after it; GN+ReLU in the stem).

Both put the stride on the 3×3 conv. The stem is a 7×7/2 conv and a 3×3/2 max pool (total stride 4); each
further stage halves the map, so the hybrid's three stages (3, 4, 9) end at stride 16 and BiT-R50's four at
stride 32.
Module layout and numerics follow HF transformers' `BitModel` (and timm's `ResNetV2`), so weights convert 1:1.

Shapes: B batch · C channels · H, W image sides · stage i (stride s_i = 4·2^i) is ceil(H/s_i) × ceil(W/s_i).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from ..config import PreprocessConfig
from ..layers import DropPath, check_images
from ..layers.std_conv import Padding, StdConv2d, pad_same
from .registry import register_model, register_model_type


@dataclass
class ResNetV2Config:
    """A BiT-style ResNetV2 (the hybrid ViT's patch embedder, or a classifier on its own).

    layers: bottleneck blocks per stage (the ViT paper's hybrid R50: (3, 4, 9), output stride 16).
    channels: output width of each stage (4× the bottleneck width); one per entry of `layers`.
    stem_width: output width of the 7×7 stem conv.
    block: "bottleneck" (post-activation, ViT-hybrid / DPT-hybrid) or "preact" (BiT).
    padding: "same" (TF SAME, the hybrid's; the stem pool pads SAME too) or "symmetric" (PyTorch style; the
        stem pads its output by 1 before an unpadded pool, as BiT does).
    in_chans: input channels (a hybrid ViT sets this from its own `in_chans`).
    num_groups: GroupNorm groups. ws_eps / gn_eps: weight-standardisation and GroupNorm epsilons.
    bottle_ratio: bottleneck width / stage width. drop_path_rate: stochastic depth, linear over all blocks.
    num_classes: 0 for a trunk; > 0 adds global average pooling and a linear head.
    preprocess: what the weights expect when the ResNetV2 is the model; inside a hybrid ViT the ViTConfig's
        `preprocess` applies and this one is unused.
    """

    layers: tuple[int, ...] = (3, 4, 9)
    channels: tuple[int, ...] = (256, 512, 1024)
    stem_width: int = 64
    block: Literal["bottleneck", "preact"] = "bottleneck"
    padding: Literal["same", "symmetric"] = "same"
    in_chans: int = 3
    num_groups: int = 32
    ws_eps: float = 1e-8
    gn_eps: float = 1e-5
    bottle_ratio: float = 0.25
    drop_path_rate: float = 0.0
    num_classes: int = 0
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def __post_init__(self) -> None:
        self.layers, self.channels = tuple(self.layers), tuple(self.channels)
        if len(self.layers) != len(self.channels):
            raise ValueError(f"ResNetV2Config needs one width per stage: layers={self.layers}, "
                             f"channels={self.channels}")

    @property
    def stride(self) -> int:
        """Total stride of the last stage: 4 for the stem, ×2 for every stage after the first."""
        return 4 * 2 ** max(len(self.layers) - 1, 0)

    @property
    def out_channels(self) -> int:
        """Width of the last map: the last stage's, or the stem's for a stem-only trunk (layers=())."""
        return self.channels[-1] if self.channels else self.stem_width


def make_div(value: float, divisor: int = 8) -> int:
    """Round a width to a multiple of `divisor`, never more than 10% down (BiT / timm / HF rounding)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class GroupNormAct(nn.GroupNorm):
    """GroupNorm, optionally followed by ReLU (parameters `weight`, `bias` as nn.GroupNorm)."""

    def __init__(self, num_channels: int, cfg: ResNetV2Config, act: bool = True) -> None:
        super().__init__(cfg.num_groups, num_channels, eps=cfg.gn_eps)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        x = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return F.relu(x) if self.act else x


def _conv(in_chans: int, out_chans: int, kernel_size: int, cfg: ResNetV2Config, stride: int = 1) -> StdConv2d:
    return StdConv2d(in_chans, out_chans, kernel_size, stride, padding=cfg.padding, eps=cfg.ws_eps)


class Downsample(nn.Module):
    """Projection shortcut of a stage's first block: 1×1 StdConv with the stage stride (+ GN, bottleneck)."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, cfg: ResNetV2Config, norm: bool) -> None:
        super().__init__()
        self.conv = _conv(in_chans, out_chans, 1, cfg, stride)
        self.norm = GroupNormAct(out_chans, cfg, act=False) if norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: x + conv3(gn3(conv2(gn2(conv1(gn1(x)))))); the shortcut projects gn1(x)."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, cfg: ResNetV2Config, first: bool,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        mid = make_div(out_chans * cfg.bottle_ratio)
        self.downsample = Downsample(in_chans, out_chans, stride, cfg, norm=False) if first else None
        self.norm1 = GroupNormAct(in_chans, cfg)
        self.conv1 = _conv(in_chans, mid, 1, cfg)
        self.norm2 = GroupNormAct(mid, cfg)
        self.conv2 = _conv(mid, mid, 3, cfg, stride)
        self.norm3 = GroupNormAct(mid, cfg)
        self.conv3 = _conv(mid, out_chans, 1, cfg)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C_in, H, W) → (B, C_out, H / stride, W / stride)."""
        preact = self.norm1(x)
        shortcut = x if self.downsample is None else self.downsample(preact)
        x = self.conv1(preact)
        x = self.conv2(self.norm2(x))
        x = self.conv3(self.norm3(x))
        return self.drop_path(x) + shortcut


class Bottleneck(nn.Module):
    """Post-activation bottleneck: relu(gn3(conv3(relu(gn2(conv2(relu(gn1(conv1(x)))))))) + shortcut)."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, cfg: ResNetV2Config, first: bool,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        mid = make_div(out_chans * cfg.bottle_ratio)
        self.downsample = Downsample(in_chans, out_chans, stride, cfg, norm=True) if first else None
        self.conv1 = _conv(in_chans, mid, 1, cfg)
        self.norm1 = GroupNormAct(mid, cfg)
        self.conv2 = _conv(mid, mid, 3, cfg, stride)
        self.norm2 = GroupNormAct(mid, cfg)
        self.conv3 = _conv(mid, out_chans, 1, cfg)
        self.norm3 = GroupNormAct(out_chans, cfg, act=False)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C_in, H, W) → (B, C_out, H / stride, W / stride)."""
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.norm1(self.conv1(x))
        x = self.norm2(self.conv2(x))
        x = self.norm3(self.conv3(x))
        return F.relu(self.drop_path(x) + shortcut)


BLOCKS: dict[str, type[nn.Module]] = {"preact": PreActBottleneck, "bottleneck": Bottleneck}


class Stem(nn.Module):
    """7×7/2 StdConv → (GN+ReLU, "bottleneck") → 3×3/2 max pool: (B, C, H, W) → (B, stem_width, H/4, W/4)"""

    def __init__(self, cfg: ResNetV2Config) -> None:
        super().__init__()
        self.padding: Padding = cfg.padding
        self.conv = _conv(cfg.in_chans, cfg.stem_width, 7, cfg, stride=2)
        self.norm = GroupNormAct(cfg.stem_width, cfg) if cfg.block == "bottleneck" else nn.Identity()

    def forward(self, images: Tensor) -> Tensor:
        x = self.conv(images)
        if self.padding == "symmetric":
            x = F.pad(x, [1, 1, 1, 1])  # before the norm, as BiT (and HF Bit) do
        x = self.norm(x)
        if self.padding == "same":
            # zero padding as HF Bit; equal to timm's -inf after the ReLU, the hybrid's case
            x = pad_same(x, kernel_size=3, stride=2)
        return F.max_pool2d(x, kernel_size=3, stride=2)


class ResNetStage(nn.Module):
    """`depth` blocks; the first projects the shortcut and carries the stride."""

    def __init__(self, in_chans: int, out_chans: int, stride: int, depth: int, cfg: ResNetV2Config,
                 drop_paths: list[float]) -> None:
        super().__init__()
        block = BLOCKS[cfg.block]
        self.blocks = nn.Sequential(*[
            block(in_chans if i == 0 else out_chans, out_chans, stride if i == 0 else 1, cfg, first=i == 0,
                  drop_path=drop_paths[i])
            for i in range(depth)])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class ResNetV2(nn.Module):
    """BiT ResNetV2: stem → stages → (final GN+ReLU for "preact") → (pool + linear head if num_classes > 0).

    State-dict keys: stem.conv, stem.norm, stages.{i}.blocks.{j}.{conv1,norm1,conv2,norm2,conv3,norm3},
    stages.{i}.blocks.0.downsample.{conv,norm}, norm, head (the same names as timm's ResNetV2).
    """

    def __init__(self, cfg: ResNetV2Config) -> None:
        super().__init__()
        if cfg.block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {cfg.block!r}")
        self.config = cfg
        self.in_chans = cfg.in_chans
        self.stride = cfg.stride
        self.channels = cfg.channels
        self.stem = Stem(cfg)
        total = sum(cfg.layers)
        rates = [cfg.drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # grows with depth
        stages, in_chans, start = [], cfg.stem_width, 0
        for i, (depth, out_chans) in enumerate(zip(cfg.layers, cfg.channels, strict=False)):
            stages.append(ResNetStage(in_chans, out_chans, 1 if i == 0 else 2, depth, cfg,
                                      rates[start:start + depth]))
            in_chans, start = out_chans, start + depth
        self.stages = nn.ModuleList(stages)
        self.norm = GroupNormAct(in_chans, cfg) if cfg.block == "preact" else nn.Identity()
        self.head = nn.Linear(in_chans, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """Kaiming-normal (fan-out) convs, unit GroupNorm, head ~N(0, 0.01), zero bias (timm's BiT init)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if isinstance(self.head, nn.Linear):
            nn.init.normal_(self.head.weight, std=0.01)
            nn.init.zeros_(self.head.bias)

    def forward_stages(self, images: Tensor) -> list[Tensor]:
        """images (B, C, H, W) → every stage's output (B, channels[i], H / s_i, W / s_i), s_i = 4·2^i.

        The last map is taken before the final "preact" norm (as HF's BitBackbone feature maps). A stem-only
        trunk (layers=()) returns the stem's map (stride 4) as its one stage."""
        check_images(images, self.in_chans, 1)
        x = self.stem(images)
        stages = []
        for stage in self.stages:
            x = stage(x)
            stages.append(x)
        return stages or [x]

    def forward_features(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) → last map (B, channels[-1], H / stride, W / stride), after the final norm."""
        return self.norm(self.forward_stages(images)[-1])

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """features (B, C, h, w) → logits (B, num_classes); pooled (B, C) if `pre_logits` or no head."""
        pooled = features.mean(dim=(-2, -1))
        return pooled if pre_logits else self.head(pooled)

    def forward(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) → logits (B, num_classes) (pooled features (B, C) when num_classes == 0)."""
        return self.forward_head(self.forward_features(images))


register_model_type("resnetv2", ResNetV2Config, ResNetV2)
# BiT-M R50x1 (He et al. pre-activation, 4 stages, stride 32), as HF's default BitConfig / google/bit-50.
register_model("resnetv2_50x1_bit", ResNetV2Config(layers=(3, 4, 6, 3), channels=(256, 512, 1024, 2048),
                                                   block="preact", padding="symmetric", num_classes=1000,
                                                   preprocess=PreprocessConfig(interpolation="bilinear")))
