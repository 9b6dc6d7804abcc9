"""ResNetV2 (BiT) configuration; the module itself lives here too (hybrid issue)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ResNetV2Config:
    """A BiT-style ResNetV2 trunk used as the hybrid ViT's patch embedder.

    layers: bottleneck blocks per stage (the ViT paper's hybrid R50 uses stages 3, 4, 9; output stride 16).
    width: stem width (64 for R50).
    """

    layers: tuple[int, ...] = (3, 4, 9)
    width: int = 64
