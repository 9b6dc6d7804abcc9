"""MAE pretraining objective: the model's own masked-patch reconstruction loss.

Batches are images (B, C, H, W), already normalised, or ``(images, targets)`` with the targets ignored (so the
labelled loaders of classification feed it unchanged).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from . import ObjectiveOutput


def batch_images(batch: Any) -> Tensor:
    """The images of a batch: the batch itself, or its first element."""
    return batch if isinstance(batch, Tensor) else batch[0]


class MAEObjective:
    """``model(images, mask_ratio=...)`` → MSE on hidden patches; reports ``loss``.

    Args:
        mask_ratio: share of patches hidden; None uses the model config's (0.75 in the paper).
    """

    def __init__(self, mask_ratio: float | None = None) -> None:
        if mask_ratio is not None and not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.mask_ratio = mask_ratio

    def __call__(self, model: nn.Module, batch: Any) -> ObjectiveOutput:
        out = model(batch_images(batch), mask_ratio=self.mask_ratio)
        return ObjectiveOutput(out.loss, {"loss": out.loss.detach()}, out)
