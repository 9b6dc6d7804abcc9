"""DenseConfig: what a dense (depth / segmentation) run adds to TrainConfig. Import-light on purpose, so
`engine.config.TrainConfig` can carry one as a field (``dense: DenseConfig``) without importing the dense
engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class DenseConfig:
    """What a dense run adds to TrainConfig (which supplies model, data.path, epochs, optim, ...).

    depth_loss: "ssi" (relative depth, MiDaS) or "silog" (metric); depth_space: what the model predicts for
    "ssi" ("disparity" as MiDaS / DPT, or "depth"). encoder_lr_scale: encoder lr = optim.lr × this (decoder
    and heads at optim.lr). init_encoder: a ViT / MAE checkpoint whose encoder initialises the DPT.
    train_scenes / val_scenes / scene_size: the built-in procedural set (when data.path is None).
    """

    task: Literal["depth", "segment"] = "depth"
    depth_loss: Literal["ssi", "silog"] = "ssi"
    depth_space: Literal["disparity", "depth"] = "disparity"
    trim: float = 0.2
    grad_weight: float = 0.5
    aux_weight: float = 0.4
    ignore_index: int = 255
    encoder_lr_scale: float = 1.0
    init_encoder: str | None = None
    crop: tuple[int, int] | None = None
    flip: bool = True
    depth_scale: float = 1.0
    train_scenes: int = 2000
    val_scenes: int = 200
    scene_size: int = 64
