"""Objectives: turn (model, batch) into a loss and metrics, so one Trainer runs every task.

An objective owns the loss and the task's metrics; the engine owns the loop. Classification lives here; the
self-supervised (MAE, masked patch prediction) and dense (depth, segmentation) objectives plug in the same
way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn


@dataclass
class ObjectiveOutput:
    """What an objective hands back for one batch.

    Attributes:
        loss: scalar tensor to minimise (backpropagated by the trainer).
        metrics: batch means to log (e.g. ``{"acc1": 0.91}``), floats or detached scalar tensors left on the
            device (no host synchronisation: the trainer's `MeanMetrics` reads them at a log step); the
            trainer averages them over batches weighted by batch size.
        outputs: task outputs (logits, reconstructions, ...) for callers that want them; the trainer ignores
        them.
    """

    loss: Tensor
    metrics: dict[str, float | Tensor] = field(default_factory=dict)
    outputs: Any = None


@runtime_checkable
class Objective(Protocol):
    """``objective(model, batch) -> ObjectiveOutput``; `batch` is whatever the task's data yields, on
    device."""

    def __call__(self, model: nn.Module, batch: Any) -> ObjectiveOutput: ...


from .classification import ClassificationObjective, accuracy, soft_target_cross_entropy  # noqa: E402

__all__ = ["ClassificationObjective", "Objective", "ObjectiveOutput", "accuracy", "soft_target_cross_entropy"]
