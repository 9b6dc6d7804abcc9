"""Masked patch prediction objective (ViT paper, appendix B.1.2): the model's loss on corrupted patches.

Batches are images (B, C, H, W), already normalised, or ``(images, targets)`` with the targets ignored.
For the 3-bit colour target it also reports ``acc1``, the share of corrupted patches whose colour class is
right.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from . import ObjectiveOutput
from .mae import batch_images


class MPPObjective:
    """``model(images)`` → loss on corrupted positions; reports ``loss`` (and ``acc1`` for class targets)."""

    def __call__(self, model: nn.Module, batch: Any) -> ObjectiveOutput:
        out = model(batch_images(batch))
        metrics = {"loss": out.loss.detach()}
        if out.target.ndim == 2:  # class targets (B, N); sums, not boolean indexing (a host sync)
            hit = out.pred.detach().argmax(-1) == out.target
            corrupted = out.corrupted.bool()
            metrics["acc1"] = (hit & corrupted).sum() / corrupted.sum().clamp_min(1)
        return ObjectiveOutput(out.loss, metrics, out)
