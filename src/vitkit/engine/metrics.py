"""Metric accumulation over batches and processes, and classification summaries (top-k, per class,
confusion)."""

from __future__ import annotations

import torch
from torch import Tensor

from .distributed import all_reduce_sum


class MeanMetrics:
    """Batch-size-weighted means of named floats or scalar tensors, summed over processes on `compute()`.

    Tensors are accumulated where they are (no host synchronisation until `compute`), and the all-reduce
    runs on `device`, the training device: NCCL reduces CUDA tensors only, gloo CPU ones.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.sums: dict[str, float | Tensor] = {}
        self.count = 0

    def update(self, metrics: dict[str, float | Tensor], n: int) -> None:
        for k, v in metrics.items():
            value = v.detach().double() * n if isinstance(v, Tensor) else float(v) * n
            self.sums[k] = self.sums.get(k, 0.0) + value
        self.count += n

    def means(self) -> dict[str, float | Tensor]:
        """This process's means, without synchronising (tensors stay tensors)."""
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}

    def compute(self) -> dict[str, float]:
        """Means over every process (collective under torchrun)."""
        names = sorted(self.sums)
        values = [torch.as_tensor(self.sums[k], dtype=torch.float64, device=self.device).reshape(())
                  for k in names]
        totals = torch.stack([*values, torch.tensor(float(self.count), dtype=torch.float64,
                                                     device=self.device)])
        totals = all_reduce_sum(totals).tolist()
        count = max(totals[-1], 1.0)
        return {k: totals[i] / count for i, k in enumerate(names)}


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
