"""Semantic segmentation: per-pixel cross-entropy with an ignore index, plus a weighted auxiliary loss
(DPT / UPerNet style: 0.4 × the auxiliary head's cross-entropy).

Batches are dicts: ``images`` (B, C, H, W) normalised floats, ``labels`` (B, H, W) int64 class indices, with
`ignore_index` where unlabelled. Logits of any size are resized (bilinear) to the label size.

The mIoU logged per batch is the batch's own mIoU (the trainer averages batch metrics); for the exact dataset
mIoU accumulate `dense_metrics.confusion_matrix` over the whole set (`evaluate_segmentation`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ObjectiveOutput
from .dense_metrics import confusion_matrix, segmentation_scores


def _resize(logits: Tensor, size: tuple[int, int]) -> Tensor:
    if logits.shape[-2:] == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class SegmentationObjective:
    """Cross-entropy (ignore index) on the main logits + `aux_weight` × the auxiliary logits' cross-entropy.

    Args:
        num_classes: K.
        ignore_index: label value that never counts (255 in ADE20k / VOC conventions).
        aux_weight: weight of the auxiliary head's loss; 0 skips it (the model is then called without aux).
        label_smoothing: cross-entropy label smoothing.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, aux_weight: float = 0.4,
                 label_smoothing: float = 0.0) -> None:
        if num_classes < 2:
            raise ValueError(f"segmentation needs at least 2 classes, got {num_classes}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.aux_weight, self.label_smoothing = aux_weight, label_smoothing

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> ObjectiveOutput:
        images, labels = batch["images"], batch["labels"].long()
        out = model(images, return_aux=True) if self.aux_weight else model(images)
        logits, aux = (out.pred, out.aux) if hasattr(out, "pred") else (out, None)
        logits = _resize(logits, labels.shape[-2:])
        loss = self.cross_entropy(logits, labels)
        metrics: dict[str, float | Tensor] = {}
        if aux is not None and self.aux_weight:
            aux_loss = self.cross_entropy(_resize(aux, labels.shape[-2:]), labels)
            loss = loss + self.aux_weight * aux_loss
            metrics["aux_loss"] = aux_loss.detach()
        scores = segmentation_scores(confusion_matrix(logits.detach(), labels, self.num_classes,
                                                      self.ignore_index))
        return ObjectiveOutput(loss, {"loss": loss.detach(), **metrics, **scores}, logits)

    def cross_entropy(self, logits: Tensor, labels: Tensor) -> Tensor:
        if not (labels != self.ignore_index).any():  # an all-ignored batch: zero loss, gradient still defined
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), labels, ignore_index=self.ignore_index,
                               label_smoothing=self.label_smoothing)


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, batches: Iterable[dict[str, Any]], num_classes: int,
                          ignore_index: int = 255) -> dict[str, float]:
    """Dataset mIoU and pixel accuracy from one confusion matrix accumulated over `batches` (dicts as
    above)."""
    was_training = model.training
    model.eval()
    total = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for batch in batches:
        logits = _resize(model(batch["images"]), batch["labels"].shape[-2:])
        total += confusion_matrix(logits, batch["labels"], num_classes, ignore_index).cpu()
    model.train(was_training)
    return segmentation_scores(total)
