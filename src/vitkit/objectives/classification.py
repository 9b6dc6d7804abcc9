"""Image classification: cross-entropy with label smoothing and soft targets (mixup / cutmix), top-k accuracy.

Batches are ``(images, targets)``: images (B, C, H, W) float, already normalised; targets (B,) class indices
or (B, K) soft targets (rows summing to 1, as mixup and cutmix produce).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ObjectiveOutput


def soft_target_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of logits (B, K) against target distributions (B, K)."""
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()


def accuracy(logits: Tensor, targets: Tensor, topk: Sequence[int] = (1,)) -> list[Tensor]:
    """Top-k accuracies in [0, 1] of logits (B, K) against class indices (B,) (soft targets: their argmax), as
    scalar tensors on the logits' device (no host synchronisation)."""
    if targets.ndim == 2:
        targets = targets.argmax(dim=-1)
    k_max = min(max(topk), logits.shape[-1])
    top = logits.topk(k_max, dim=-1).indices  # (B, k_max)
    hits = top.eq(targets[:, None])
    return [hits[:, : min(k, k_max)].any(dim=-1).float().mean() for k in topk]


class ClassificationObjective:
    """Cross-entropy on ``model(images)`` logits; reports loss, top-1 and top-5 accuracy.

    Args:
        label_smoothing: mass spread uniformly over the classes (hard and soft targets alike).
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def __call__(self, model: nn.Module, batch: Any) -> ObjectiveOutput:
        images, targets = batch
        logits = model(images)
        loss = self.loss(logits.float(), targets)
        acc1, acc5 = accuracy(logits.detach(), targets, (1, 5))
        return ObjectiveOutput(loss, {"loss": loss.detach(), "acc1": acc1, "acc5": acc5}, logits)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        if targets.ndim == 1:
            return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        num_classes = logits.shape[-1]
        smoothed = targets * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        return soft_target_cross_entropy(logits, smoothed)
