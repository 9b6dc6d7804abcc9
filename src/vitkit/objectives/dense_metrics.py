"""Dense prediction metrics: depth (AbsRel, RMSE, δ < 1.25^k after optional per-image least-squares
scale-and-shift alignment) and segmentation (confusion matrix → mIoU, pixel accuracy).

Shapes: B batch · H, W map sides · K classes. `valid` masks are bool (B, H, W), True where ground truth
exists.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor


def align_scale_shift(pred: Tensor, target: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image least squares: (scale, shift) (B,) minimising Σ_valid (scale·pred + shift − target)².

    Images with fewer than two valid pixels (or a constant prediction) get scale 1 on a best shift of 0 — they
    cannot be aligned.
    """
    m = valid.flatten(1).to(pred.dtype)  # (B, HW)
    p, t = pred.flatten(1) * m, target.flatten(1).nan_to_num(0.0, 0.0, 0.0) * m
    a00, a01, a11 = (p * p).sum(1), p.sum(1), m.sum(1)  # normal equations [[a00, a01], [a01, a11]]
    b0, b1 = (p * t).sum(1), t.sum(1)
    det = a00 * a11 - a01 * a01
    ok = det.abs() > 1e-12 * (a00 * a11).clamp_min(1e-30)
    safe = torch.where(ok, det, torch.ones_like(det))
    scale = torch.where(ok, (a11 * b0 - a01 * b1) / safe, torch.ones_like(det))
    shift = torch.where(ok, (-a01 * b0 + a00 * b1) / safe, torch.zeros_like(det))
    return scale, shift


def depth_metrics(pred: Tensor, target: Tensor, valid: Tensor | None = None,
                  align: Literal["none", "depth", "disparity"] = "none") -> dict[str, float]:
    """Standard monocular depth metrics, averaged over images (each image: mean over its valid pixels).

    Args:
        pred: predicted depth (B, H, W), or predicted disparity (inverse depth) when ``align="disparity"``.
        target: ground-truth depth (B, H, W), > 0 where valid.
        valid: bool (B, H, W); default: finite target > 0.
        align: "none" (metric depth); "depth": least-squares scale and shift of `pred` to `target` per image;
            "disparity": align `pred` to 1/target, then invert (predicted depth is capped at the image's
            largest ground-truth depth, as relative-depth benchmarks do).

    Returns:
        {"abs_rel", "rmse", "delta1", "delta2", "delta3"}.
    """
    pred, target = pred.detach().float(), target.detach().float()
    valid = _valid(target, valid)
    if align == "depth":
        scale, shift = align_scale_shift(pred, target, valid)
        pred = pred * scale[:, None, None] + shift[:, None, None]
    elif align == "disparity":
        disp = torch.where(valid, 1.0 / target.clamp_min(1e-12), torch.zeros_like(target))
        scale, shift = align_scale_shift(pred, disp, valid)
        pred_disp = pred * scale[:, None, None] + shift[:, None, None]
        far = torch.where(valid, target, torch.zeros_like(target)).flatten(1).amax(1)  # (B,)
        pred = 1.0 / torch.maximum(pred_disp, (1.0 / far.clamp_min(1e-12))[:, None, None])
    elif align != "none":
        raise ValueError(f"align must be 'none', 'depth' or 'disparity', got {align!r}")
    pred = pred.clamp_min(1e-6)
    m = valid.float()
    n = m.flatten(1).sum(1).clamp_min(1)  # (B,)
    tgt = torch.where(valid, target, torch.ones_like(target))
    ratio = torch.maximum(pred / tgt, tgt / pred)
    per_image = {
        "abs_rel": ((pred - tgt).abs() / tgt * m).flatten(1).sum(1) / n,
        "rmse": (((pred - tgt) ** 2 * m).flatten(1).sum(1) / n).sqrt(),
        **{f"delta{k}": ((ratio < 1.25 ** k).float() * m).flatten(1).sum(1) / n for k in (1, 2, 3)},
    }
    has = valid.flatten(1).any(1)
    return {k: v[has].mean().item() if has.any() else float("nan") for k, v in per_image.items()}


def _valid(target: Tensor, valid: Tensor | None) -> Tensor:
    ok = torch.isfinite(target) & (target > 0)
    return ok if valid is None else ok & valid.bool()


def confusion_matrix(pred: Tensor, labels: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """Confusion counts (K, K), rows = true class, columns = predicted, over pixels whose label is not
    ignored.

    Args:
        pred: predicted class indices (B, H, W) (or logits (B, K, H, W), argmax taken).
        labels: true class indices (B, H, W); `ignore_index` (and anything outside [0, K)) is skipped.
    """
    if pred.ndim == labels.ndim + 1:
        pred = pred.argmax(1)
    keep = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
    idx = labels[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(idx, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def segmentation_scores(confusion: Tensor) -> dict[str, float]:
    """{"miou", "pixel_acc"} from confusion counts (K, K); mIoU averages the classes that occur in the labels
    or the predictions (IoU of a class absent from both is undefined and left out)."""
    c = confusion.double()
    tp = c.diag()
    union = c.sum(0) + c.sum(1) - tp
    present = union > 0
    miou = (tp[present] / union[present]).mean().item() if present.any() else float("nan")
    total = c.sum()
    return {"miou": miou, "pixel_acc": (tp.sum() / total).item() if total > 0 else float("nan")}
