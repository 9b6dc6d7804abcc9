"""Dense Prediction Transformer (Ranftl et al., "Vision Transformers for Dense Prediction", ICCV 2021).

images → ViT-family encoder, read through the feature-map API (`vitkit.models.features`: block outputs as
patch maps (B, D, gh, gw) with the [CLS] token apart; the hybrid taps its two early ResNet stages instead of
the first two blocks; Depth Anything taps a DINOv2's normed blocks) → reassemble (readout ignore / add /
project, 1×1 projection, resample to strides 4/8/16/32, 3×3 conv to the fusion width) → fusion
(RefineNet-style blocks with residual conv units, coarse to fine, each upsampling to the next map's size) →
head (depth or segmentation) at input size.

Shapes: B batch · H, W image sides · p patch (total stride of the patch embedder) · (gh, gw) = (H/p, W/p)
patch grid · D encoder width · F fusion width · K classes.

Unlike the reference code and HF (which reshape tokens to a square and upsample by exactly ×2), every reshape
uses the real patch grid and every upsampling targets the next feature map's size, so any input whose sides
are multiples of the patch works, non-square included; on even grids this equals the ×2 cascade of the
reference.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import replace_config
from .features import FeatureMaps, forward_feature_maps, stage_and_block_levels
from .vit import VisionTransformer, ViTConfig


@dataclass
class DPTConfig:
    """A DPT: a ViT (or hybrid) encoder config plus the reassemble / fusion / head layout.

    stage_taps: ResNet stages of a hybrid encoder tapped directly (DPT-Hybrid: (0, 1)); () for a plain ViT.
    block_taps: encoder blocks tapped (ViT-B: 2, 5, 8, 11; ViT-L: 5, 11, 17, 23; hybrid: 8, 11).
    tap_norm: pass tapped blocks through the encoder's final norm (DINOv2 backbones: Depth Anything); DPT's
        own taps are pre-norm.
    features: reassembled width per tap, fine to coarse; strides: output stride per tap (4, 8, 16, 32;
        fractional for a patch that is not a power of two: DINOv2's 14 gives 3.5, 7, 14, 28, i.e. ×4, ×2,
        ×1, ×0.5 the patch grid).
    task: which head `build_heads` injects ("depth": non-negative (B, H, W); "segment": logits (B, K, H, W)).
    depth_hidden: width of the depth head's last hidden conv. depth_estimation: "relative" ends the depth head
        in ReLU, "metric" in a sigmoid (Depth Anything's metric models); either way times `max_depth`.
    """

    encoder: ViTConfig = field(default_factory=lambda: ViTConfig(image_size=(384, 384), num_classes=0))
    stage_taps: tuple[int, ...] = ()
    block_taps: tuple[int, ...] = (2, 5, 8, 11)
    tap_norm: bool = False
    readout: Literal["ignore", "add", "project"] = "project"
    features: tuple[int, ...] = (96, 192, 384, 768)
    strides: tuple[int | float, ...] = (4, 8, 16, 32)
    fusion_dim: int = 256
    fusion_batch_norm: bool = False
    fusion_bias: bool | None = None  # default: not fusion_batch_norm
    task: Literal["depth", "segment"] = "depth"
    depth_projection: bool = False  # an extra 3×3 conv + ReLU before the depth head (HF `add_projection`)
    depth_hidden: int = 32
    depth_estimation: Literal["relative", "metric"] = "relative"
    max_depth: float = 1.0
    # what the depth head's values mean (MiDaS / HF DPT: relative inverse depth), so tools colour near as
    # bright
    depth_output: Literal["disparity", "depth"] = "disparity"
    num_classes: int = 150
    aux_head: bool = True  # segmentation: an auxiliary classifier on the finest fused map (training only)
    head_dropout: float = 0.1

    def __post_init__(self) -> None:
        n = len(self.stage_taps) + len(self.block_taps)
        if not n == len(self.features) == len(self.strides):
            raise ValueError(f"DPT needs one feature width and stride per tap: {n} taps, "
                             f"{len(self.features)} features, {len(self.strides)} strides")
        if n < 2:
            raise ValueError("DPT fuses at least two taps")


# ---- reassemble --------------------------------------------------------------------------------------------
class ReadoutIgnore(nn.Module):
    """Ignore the readout ([CLS]) token: the patch map (B, D, gh, gw) passes as it is."""

    def __init__(self, dim: int) -> None:
        super().__init__()

    def forward(self, maps: Tensor, readout: Tensor | None) -> Tensor:
        return maps


class ReadoutAdd(ReadoutIgnore):
    """Add the readout token (B, D) to every patch."""

    def forward(self, maps: Tensor, readout: Tensor | None) -> Tensor:
        return maps + readout[:, :, None, None]  # (B, D) → (B, D, 1, 1)


class ReadoutProject(ReadoutIgnore):
    """Concatenate the readout token to every patch, then Linear(2D → D) + GELU."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.proj = nn.Linear(2 * dim, dim)
        self.act = nn.GELU()

    def forward(self, maps: Tensor, readout: Tensor | None) -> Tensor:
        both = torch.cat([maps, readout[:, :, None, None].expand_as(maps)], dim=1)  # (B, 2D, gh, gw)
        return self.act(self.proj(both.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)  # Linear on (B, gh, gw, 2D)


READOUTS: dict[str, type[ReadoutIgnore]] = {"ignore": ReadoutIgnore, "add": ReadoutAdd,
                                            "project": ReadoutProject}


def build_readout(kind: str, dim: int, has_cls: bool) -> ReadoutIgnore:
    """The readout module for `kind`; "add" and "project" read the [CLS] token (never a register)."""
    if kind not in READOUTS:
        raise ValueError(f"unknown readout {kind!r}; choose one of {', '.join(READOUTS)}")
    if kind != "ignore" and not has_cls:
        raise ValueError(f"readout {kind!r} needs a [CLS] token; the encoder has none (use readout='ignore')")
    return READOUTS[kind](dim)


def build_resample(channels: int, patch: int, stride: int | float) -> nn.Module:
    """Resample a map at stride `patch` to stride `stride`: transposed conv up, identity, or strided 3×3
    down."""
    up, down = patch / stride, stride / patch
    if up >= 1 and up == int(up):
        return nn.ConvTranspose2d(channels, channels, int(up), stride=int(up)) if up > 1 else nn.Identity()
    if down > 1 and down == int(down):
        return nn.Conv2d(channels, channels, 3, stride=int(down), padding=1)
    raise ValueError(f"cannot resample patch stride {patch} to stride {stride}: one must divide the other")


class TokenReassemble(nn.Module):
    """One block tap, a patch map (B, D, gh, gw) and its readout token → a map (B, F, gh·p/s, gw·p/s)."""

    def __init__(self, readout: ReadoutIgnore, dim: int, features: int, patch: int, stride: int | float,
                 fusion_dim: int) -> None:
        super().__init__()
        self.readout = readout
        self.proj = nn.Conv2d(dim, features, 1)
        self.resample = build_resample(features, patch, stride)
        self.to_fusion = nn.Conv2d(features, fusion_dim, 3, padding=1, bias=False)

    def forward(self, maps: Tensor, readout: Tensor | None) -> Tensor:
        return self.to_fusion(self.resample(self.proj(self.readout(maps, readout))))


class MapReassemble(nn.Module):
    """A convolutional feature map (a hybrid's ResNet stage) needs only the 3×3 conv to the fusion width."""

    def __init__(self, features: int, fusion_dim: int) -> None:
        super().__init__()
        self.to_fusion = nn.Conv2d(features, fusion_dim, 3, padding=1, bias=False)

    def forward(self, maps: Tensor, readout: Tensor | None = None) -> Tensor:
        return self.to_fusion(maps)


# ---- fusion ------------------------------------------------------------------------------------------------
class ResidualConvUnit(nn.Module):
    """Pre-activation residual unit: x + conv(ReLU(conv(ReLU(x)))), optional BatchNorm after each conv."""

    def __init__(self, dim: int, batch_norm: bool = False, bias: bool | None = None) -> None:
        super().__init__()
        bias = not batch_norm if bias is None else bias
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1, bias=bias)
        self.norm1 = nn.BatchNorm2d(dim) if batch_norm else nn.Identity()
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, bias=bias)
        self.norm2 = nn.BatchNorm2d(dim) if batch_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm1(self.conv1(F.relu(x)))
        return x + self.norm2(self.conv2(F.relu(y)))


class FeatureFusionBlock(nn.Module):
    """x (+ RCU(skip)) → RCU → bilinear upsample to `size` → 1×1 projection. The coarsest block has no
    skip."""

    def __init__(self, dim: int, has_skip: bool, batch_norm: bool = False, bias: bool | None = None) -> None:
        super().__init__()
        self.rcu1 = ResidualConvUnit(dim, batch_norm, bias) if has_skip else None
        self.rcu2 = ResidualConvUnit(dim, batch_norm, bias)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor, skip: Tensor | None, size: tuple[int, int]) -> Tensor:
        if self.rcu1 is not None and skip is not None:
            x = x + self.rcu1(skip)
        x = F.interpolate(self.rcu2(x), size=size, mode="bilinear", align_corners=True)
        return self.proj(x)


# ---- heads: head(fused (B, F, h, w), size) → prediction ----------------------------------------------------
class DepthHead(nn.Module):
    """Conv(F → F/2) → upsample to `size` → Conv(→ hidden) → ReLU → Conv(→ 1) → ReLU (relative) or sigmoid
    (metric) → × max_depth: depth (B, H, W) ≥ 0."""

    def __init__(self, dim: int, hidden: int = 32, projection: bool = False,
                 estimation: Literal["relative", "metric"] = "relative", max_depth: float = 1.0) -> None:
        super().__init__()
        if estimation not in ("relative", "metric"):
            raise ValueError(f"depth_estimation must be 'relative' or 'metric', not {estimation!r}")
        self.proj = nn.Conv2d(dim, dim, 3, padding=1) if projection else None
        self.conv1 = nn.Conv2d(dim, dim // 2, 3, padding=1)
        self.conv2 = nn.Conv2d(dim // 2, hidden, 3, padding=1)
        self.conv3 = nn.Conv2d(hidden, 1, 1)
        self.act = nn.ReLU() if estimation == "relative" else nn.Sigmoid()
        self.max_depth = max_depth

    def forward(self, fused: Tensor, size: tuple[int, int]) -> Tensor:
        x = fused if self.proj is None else F.relu(self.proj(fused))
        x = F.interpolate(self.conv1(x), size=size, mode="bilinear", align_corners=True)
        depth = self.act(self.conv3(F.relu(self.conv2(x)))) * self.max_depth
        return depth.squeeze(1)  # (B, 1, H, W) → (B, H, W)


class SegmentationHead(nn.Module):
    """Conv3×3 → BatchNorm → ReLU → Dropout → Conv1×1 (→ K) → bilinear upsample to `size` (None: keep)."""

    def __init__(self, dim: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(dim)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(dim, num_classes, 1)

    def forward(self, fused: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        logits = self.classifier(self.drop(F.relu(self.norm(self.conv(fused)))))  # (B, K, h, w)
        if size is None:
            return logits
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def build_heads(cfg: DPTConfig) -> tuple[nn.Module, nn.Module | None]:
    """The (head, auxiliary head) a config asks for."""
    if cfg.task == "depth":
        return DepthHead(cfg.fusion_dim, cfg.depth_hidden, cfg.depth_projection, cfg.depth_estimation,
                         cfg.max_depth), None
    if cfg.task == "segment":
        aux = SegmentationHead(cfg.fusion_dim, cfg.num_classes, 0.1) if cfg.aux_head else None
        return SegmentationHead(cfg.fusion_dim, cfg.num_classes, cfg.head_dropout), aux
    raise ValueError(f"unknown DPT task {cfg.task!r}; choose 'depth' or 'segment'")


@dataclass
class DPTOutput:
    """pred: depth (B, H, W) or logits (B, K, H, W); aux: auxiliary logits (B, K, H/2, W/2) or None."""

    pred: Tensor
    aux: Tensor | None = None


# ---- the model ---------------------------------------------------------------------------------------------
class DPT(nn.Module):
    """Encoder → reassemble → fusion → head. Heads are modules: pass your own, or let the config choose.

    The encoder is read only through the feature-map API (`vitkit.models.features`, on its public
    `forward_stages_and_intermediates`), so any ViT-family checkpoint (plain, hybrid, DINOv2) initialises it.
    """

    def __init__(self, cfg: DPTConfig, head: nn.Module | None = None,
                 aux_head: nn.Module | None = None) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = VisionTransformer(cfg.encoder)
        patch, dim, has_cls = self.encoder.patch_size, cfg.encoder.dim, cfg.encoder.class_token
        if cfg.stage_taps and cfg.encoder.backbone is None:
            raise ValueError("stage_taps need a hybrid encoder (encoder.backbone set)")
        self.levels = stage_and_block_levels(self.encoder, cfg.stage_taps, cfg.block_taps)
        n_stage = len(cfg.stage_taps)
        self.reassemble = nn.ModuleList(
            [MapReassemble(f, cfg.fusion_dim) for f in cfg.features[:n_stage]]
            + [TokenReassemble(build_readout(cfg.readout, dim, has_cls), dim, f, patch, s, cfg.fusion_dim)
               for f, s in zip(cfg.features[n_stage:], cfg.strides[n_stage:], strict=False)])
        last = len(cfg.features) - 1
        self.fusion = nn.ModuleList([FeatureFusionBlock(cfg.fusion_dim, i < last, cfg.fusion_batch_norm,
                                                        cfg.fusion_bias) for i in range(last + 1)])
        default_head, default_aux = build_heads(cfg)
        self.head = head if head is not None else default_head
        self.aux_head = aux_head if aux_head is not None else default_aux
        # DPT taps pre-norm tokens (as the paper and HF do): the encoder's final norms then get no gradient,
        # so they are frozen (kept in checkpoints for interop) and DDP does not wait for them.
        self.encoder.norm.requires_grad_(cfg.tap_norm)
        self.encoder.fc_norm.requires_grad_(False)

    def no_weight_decay(self) -> set[str]:
        return {f"encoder.{n}" for n in self.encoder.no_weight_decay()}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.encoder.set_grad_checkpointing(enable)

    def forward_taps(self, images: Tensor) -> FeatureMaps:
        """images (B, C, H, W) → the taps, fine to coarse: ResNet stage maps (B, C_i, h_i, w_i) for a hybrid,
        then block patch maps (B, D, gh, gw), each with its [CLS] readout token (B, D) or None. One encoder
        pass."""
        return forward_feature_maps(self.encoder, images, self.levels, norm=self.config.tap_norm)

    def forward_features(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) → the finest fused map (B, F, 2·H/s_0, 2·W/s_0) (H/2 × W/2 for stride 4)."""
        taps = self.forward_taps(images)
        maps = [r(m, t)  # (B, F, h_i, w_i)
                for r, m, t in zip(self.reassemble, taps.maps, taps.readout, strict=True)]
        x = self.fusion[-1](maps[-1], None, maps[-2].shape[-2:])
        for i in range(len(maps) - 2, -1, -1):
            size = maps[i - 1].shape[-2:] if i else (2 * maps[0].shape[-2], 2 * maps[0].shape[-1])
            x = self.fusion[i](x, maps[i], size)
        return x

    def forward(self, images: Tensor, return_aux: bool = False) -> Tensor | DPTOutput:
        """images (B, C, H, W), sides multiples of the patch → depth (B, H, W) or logits (B, K, H, W).

        With `return_aux`, a DPTOutput with the auxiliary head's logits too (None without an auxiliary head);
        objectives ask for it through `forward` so DDP sees every parameter used.
        """
        fused = self.forward_features(images)
        pred = self.head(fused, images.shape[-2:])
        if not return_aux:
            return pred
        return DPTOutput(pred, self.aux_head(fused) if self.aux_head is not None else None)


def default_taps(depth: int) -> tuple[int, ...]:
    """The last block of each quarter of the encoder: (2, 5, 8, 11) for 12 blocks, (5, 11, 17, 23) for 24."""
    return tuple(depth * q // 4 - 1 for q in (1, 2, 3, 4))


def dpt_from_encoder(encoder: nn.Module, **overrides: Any) -> DPT:
    """A DPT initialised from a trained encoder: a VisionTransformer (its head dropped), or a model that
    exports one (`export_encoder()`, e.g. an MAE). Reassemble, fusion and head start fresh.

    Args:
        encoder: the source model. **overrides: DPTConfig fields (``task="segment"``, ``num_classes=4``,
            ``block_taps=...``); taps default to the end of each quarter of the encoder, widths to (D/8, D/4,
            D/2, D).
    """
    if hasattr(encoder, "export_encoder"):
        encoder = encoder.export_encoder()
    if not isinstance(encoder, VisionTransformer):
        raise TypeError(f"expected a VisionTransformer (or a model with export_encoder()), got "
                        f"{type(encoder).__name__}")
    enc_cfg = replace_config(encoder.config, {"num_classes": 0})
    d = enc_cfg.dim
    base = DPTConfig(encoder=enc_cfg, block_taps=default_taps(enc_cfg.depth),
                     features=(d // 8, d // 4, d // 2, d))
    if enc_cfg.backbone is not None:  # hybrid: the two early ResNet stages + the last two quarter taps
        base = dataclasses.replace(base, stage_taps=(0, 1), block_taps=base.block_taps[2:],
                                   features=(*enc_cfg.backbone.channels[:2], d, d))
    model = DPT(replace_config(base, overrides))
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("head.")}
    missing, unexpected = model.encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"encoder weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model
