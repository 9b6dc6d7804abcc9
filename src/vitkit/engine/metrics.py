"""Metric accumulation over batches and processes, and classification summaries (top-k, per class,
confusion)."""

from __future__ import annotations

import torch
from torch import Tensor

from .distributed import all_reduce_sum


class MeanMetrics:
    """Batch-size-weighted means of named floats, summed over processes on `compute()`."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def update(self, metrics: dict[str, float], n: int) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * n
        self.count += n

    def compute(self) -> dict[str, float]:
        names = sorted(self.sums)
        totals = torch.tensor([self.sums[k] for k in names] + [float(self.count)], dtype=torch.float64)
        totals = all_reduce_sum(totals)
        count = max(totals[-1].item(), 1.0)
        return {k: totals[i].item() / count for i, k in enumerate(names)}


def confusion_matrix(preds: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """(K, K) int64 counts; row = true class, column = predicted class."""
    flat = targets.long() * num_classes + preds.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_summary(logits: Tensor, targets: Tensor, label_names: list[str] | None = None) -> dict:
    """Top-1/top-5 accuracy, per-class accuracy and the confusion matrix of logits (N, K) vs targets (N,)."""
    num_classes = logits.shape[-1]
    k = min(5, num_classes)
    top = logits.topk(k, dim=-1).indices  # (N, k)
    hits = top.eq(targets[:, None])
    cm = confusion_matrix(top[:, 0], targets, num_classes)
    support = cm.sum(dim=1)
    names = label_names or [str(i) for i in range(num_classes)]
    per_class = {names[i]: (cm[i, i] / support[i]).item() if support[i] else None for i in range(num_classes)}
    return {"acc1": hits[:, 0].float().mean().item(), "acc5": hits.any(dim=-1).float().mean().item(),
            "num_samples": int(targets.numel()), "per_class_acc": per_class, "confusion": cm.tolist(),
            "labels": names}
