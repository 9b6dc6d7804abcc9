"""Linear probe: a frozen ViT encoder, its [CLS] or mean-pooled features, BatchNorm (no affine), one Linear.

As in MAE's linear probing (He et al. 2022, appendix A.2): the BatchNorm (affine=False) only standardises the
frozen features, so the probe stays a linear classifier; `to_classifier` folds it into the Linear and hands
back a plain `VisionTransformer` classifier.

`forward` takes images (B, C, H, W) or features (B, D) computed beforehand with `features` (the cached path
used when training without augmentation: the encoder then runs once per image, not once per epoch).

Shapes: B batch · D encoder width · K classes.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from .registry import register_model_type
from .vit import VisionTransformer, ViTConfig


@dataclass
class LinearProbeConfig:
    """A frozen encoder and the probe on its pooled features."""

    encoder: ViTConfig = field(default_factory=ViTConfig)
    num_classes: int = 10
    pool: Literal["cls", "avg"] = "cls"  # [CLS] token, or the mean of patch tokens after the final norm


class LinearProbe(nn.Module):
    """Frozen encoder + BatchNorm1d(affine=False) + Linear; the encoder stays in eval mode, without grads."""

    def __init__(self, cfg: LinearProbeConfig) -> None:
        super().__init__()
        self.config = cfg
        # the encoder pools with the probe's choice, through its own head path (final norm kept, no fc_norm)
        encoder_cfg = dataclasses.replace(cfg.encoder, num_classes=0, pool=cfg.pool, fc_norm=False,
                                          representation_size=None)
        self.encoder = VisionTransformer(encoder_cfg)
        self.encoder.requires_grad_(False)
        self.norm = nn.BatchNorm1d(cfg.encoder.dim, affine=False, eps=1e-6)
        self.head = nn.Linear(cfg.encoder.dim, cfg.num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)  # MAE's linear-probe init
        nn.init.zeros_(self.head.bias)

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        self.encoder.eval()  # frozen: no dropout / drop path, ever
        return self

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) → pooled features (B, D) of the frozen encoder."""
        return self.encoder.forward_head(self.encoder.forward_features(images), pre_logits=True)

    def forward(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) or precomputed features (B, D) → logits (B, K)."""
        features = self.features(x) if x.ndim == 4 else x
        return self.head(self.norm(features.float()))

    def to_classifier(self) -> VisionTransformer:
        """A plain ViT classifier computing the same logits (eval mode): BatchNorm folded into the head."""
        cfg = dataclasses.replace(copy.deepcopy(self.encoder.config), num_classes=self.config.num_classes)
        vit = VisionTransformer(cfg).to(self.head.weight.device)
        scale = (self.norm.running_var + self.norm.eps).rsqrt()  # (D,)
        state = self.encoder.state_dict()
        state["head.weight"] = self.head.weight.detach() * scale  # (K, D)
        state["head.bias"] = self.head.bias.detach() - state["head.weight"] @ self.norm.running_mean
        vit.load_state_dict(state, strict=True)
        return vit


register_model_type("linear_probe", LinearProbeConfig, LinearProbe)
