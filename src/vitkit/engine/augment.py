"""Batch transforms for classification runs: (images uint8, targets) → (normalised float images, targets).

Training batches go through `vitkit.data.transforms.Augment` (crop, flip, RandAugment/TrivialAugment, jitter,
erasing, mixup/cutmix, label smoothing → soft targets) with the trainer's per-step generator; evaluation
batches are only normalised (hard targets).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..config import PreprocessConfig
from ..data.transforms import Augment, AugmentConfig, normalize

Transform = Callable[[Any, torch.Generator], Any]


def train_transform_for(augment: AugmentConfig, preprocess: PreprocessConfig, num_classes: int) -> Transform:
    """The training batch transform for `vitkit.engine.Trainer` (the classification tasks' held-out batches go
    through `tasks.base.eval_split`'s, the model's evaluation preprocessing)."""
    pipeline = Augment(augment, num_classes=num_classes, mean=preprocess.mean, std=preprocess.std)

    def train_transform(batch: Any, generator: torch.Generator) -> Any:
        images, targets = batch
        return pipeline(images, targets, generator)

    return train_transform


def eval_transform_for(preprocess: PreprocessConfig) -> Transform:
    """Normalisation only: for images already at the model's input size."""
    def eval_transform(batch: Any, generator: torch.Generator) -> Any:
        images, targets = batch
        return normalize(images, preprocess.mean, preprocess.std), targets

    return eval_transform
