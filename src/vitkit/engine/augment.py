"""Batch transforms for classification runs: (images uint8, targets) → (normalised float images, targets).

Training batches go through `vitkit.data.transforms.Augment` (crop, flip, RandAugment/TrivialAugment, jitter,
erasing, mixup/cutmix → soft targets) with the trainer's per-step generator; evaluation batches are only normalised.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ..config import PreprocessConfig

Transform = Callable[[Any, torch.Generator], Any]


def normalize_images(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 (B, C, H, W) → float32 ``(x / 255 − mean) / std`` per channel."""
    mean_t = torch.tensor(mean, device=images.device).view(1, -1, 1, 1) * 255.0
    std_t = torch.tensor(std, device=images.device).view(1, -1, 1, 1) * 255.0
    return (images.float() - mean_t) / std_t


def classification_transforms(augment: Any, preprocess: PreprocessConfig, num_classes: int
                              ) -> tuple[Transform, Transform]:
    """(train transform, eval transform) for `vitkit.engine.Trainer`."""
    mean, std = preprocess.mean, preprocess.std

    def eval_transform(batch: Any, generator: torch.Generator) -> Any:
        images, targets = batch
        return normalize_images(images, mean, std), targets

    return eval_transform, eval_transform
