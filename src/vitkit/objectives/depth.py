"""Monocular depth objectives.

* Relative depth (Ranftl et al., "Towards Robust Monocular Depth Estimation", MiDaS, TPAMI 2020):
  prediction and ground truth are each normalised per image by their median and mean absolute deviation, then
  compared with a trimmed mean absolute error (the largest `trim` fraction of residuals dropped), plus a
  multi-scale gradient matching term on the residual. Works in disparity (inverse depth) space by default, as
  MiDaS does.
* Metric depth (Eigen et al., NeurIPS 2014): scale-invariant log loss sqrt(mean d² − λ·(mean d)²),
  d = log p − log g.

Batches are dicts: ``images`` (B, C, H, W) normalised floats, ``depth`` (B, H, W) ground-truth depth (> 0
where known), optional ``valid`` bool (B, H, W). Pixels with invalid, non-finite or non-positive depth never
count.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ObjectiveOutput
from .dense_metrics import depth_metrics


def valid_mask(depth: Tensor, valid: Tensor | None = None) -> Tensor:
    """bool (B, H, W): finite, positive depth, and `valid` where given."""
    ok = torch.isfinite(depth) & (depth > 0)
    return ok if valid is None else ok & valid.bool()


def normalize_median_mad(x: Tensor, valid: Tensor) -> Tensor:
    """Per image (x − median) / mean|x − median| over valid pixels (B, H, W); invalid pixels become 0."""
    flat = torch.where(valid, x, torch.full_like(x, float("nan"))).flatten(1)  # (B, HW)
    median = flat.nanmedian(dim=1).values.nan_to_num(0.0)  # (B,)
    centred = torch.where(valid, x - median[:, None, None], torch.zeros_like(x))  # no inf·0 from holes
    m = valid.to(x.dtype)
    mad = (centred.abs() * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)
    return torch.where(valid, centred / mad.clamp_min(1e-6)[:, None, None], torch.zeros_like(x))


def trimmed_mae(pred: Tensor, target: Tensor, valid: Tensor, trim: float = 0.2) -> Tensor:
    """Mean over images of the mean absolute residual over each image's (1 − trim) smallest valid
    residuals."""
    residual = torch.where(valid, (pred - target).abs(), torch.full_like(pred, float("inf"))).flatten(1)
    residual, _ = residual.sort(dim=1)  # valid residuals first, ascending
    n_valid = valid.flatten(1).sum(1)
    keep = (n_valid.to(pred.dtype) * (1.0 - trim)).floor().clamp_min(1)  # (B,)
    ranks = torch.arange(residual.shape[1], device=pred.device)[None]
    kept = (ranks < keep[:, None]) & (ranks < n_valid[:, None])
    per_image = torch.where(kept, residual, torch.zeros_like(residual)).sum(1) / keep
    has = n_valid > 0
    return per_image[has].mean() if has.any() else pred.sum() * 0.0


def gradient_matching(pred: Tensor, target: Tensor, valid: Tensor, scales: int = 4) -> Tensor:
    """MiDaS' multi-scale gradient matching: Σ_k mean |∇R_k| over valid neighbour pairs, R_k = (pred − target)
    subsampled by 2^k."""
    total = pred.new_zeros(())
    for k in range(scales):
        step = 2 ** k
        r = (pred - target)[:, ::step, ::step]
        m = valid[:, ::step, ::step].to(pred.dtype)
        mx = m[:, :, 1:] * m[:, :, :-1]  # both neighbours valid
        my = m[:, 1:, :] * m[:, :-1, :]
        gx = (r[:, :, 1:] - r[:, :, :-1]).abs() * mx
        gy = (r[:, 1:, :] - r[:, :-1, :]).abs() * my
        total = total + (gx.sum() + gy.sum()) / (mx.sum() + my.sum()).clamp_min(1)
    return total


def ssi_loss(pred: Tensor, target: Tensor, valid: Tensor, trim: float = 0.2, grad_weight: float = 0.5,
             scales: int = 4) -> Tensor:
    """Scale-and-shift-invariant trimmed loss + `grad_weight` × gradient matching, on (B, H, W) maps."""
    p, t = normalize_median_mad(pred, valid), normalize_median_mad(target, valid)
    loss = trimmed_mae(p, t, valid, trim)
    if grad_weight:
        loss = loss + grad_weight * gradient_matching(p, t, valid, scales)
    return loss


def silog_loss(pred: Tensor, target: Tensor, valid: Tensor, lam: float = 0.85, eps: float = 1e-6) -> Tensor:
    """Scale-invariant log loss per image, averaged: sqrt(mean d² − λ (mean d)²), d = log pred − log
    target."""
    m = valid.to(pred.dtype)
    d = (pred.clamp_min(eps).log() - torch.where(valid, target, torch.ones_like(target)).log()) * m
    n = m.flatten(1).sum(1).clamp_min(1)
    mean, mean_sq = d.flatten(1).sum(1) / n, (d ** 2).flatten(1).sum(1) / n
    return (mean_sq - lam * mean ** 2).clamp_min(1e-12).sqrt().mean()


class DepthObjective:
    """Depth loss on ``model(images)`` (B, H, W) and depth metrics.

    Args:
        loss: "ssi" (relative depth, MiDaS) or "silog" (metric depth).
        space: what the model predicts for "ssi": "disparity" (inverse depth, as MiDaS / DPT) or "depth".
        trim: fraction of largest residuals dropped per image ("ssi").
        grad_weight: weight of gradient matching ("ssi"); scales: its number of scales.
        silog_lambda: λ of the scale-invariant log loss.
    """

    def __init__(self, loss: Literal["ssi", "silog"] = "ssi",
                 space: Literal["disparity", "depth"] = "disparity",
                 trim: float = 0.2, grad_weight: float = 0.5, scales: int = 4,
                 silog_lambda: float = 0.85) -> None:
        if loss not in ("ssi", "silog"):
            raise ValueError(f"depth loss must be 'ssi' or 'silog', got {loss!r}")
        if space not in ("disparity", "depth"):
            raise ValueError(f"space must be 'disparity' or 'depth', got {space!r}")
        if not 0.0 <= trim < 1.0:
            raise ValueError(f"trim must be in [0, 1), got {trim}")
        self.loss_name, self.space, self.trim = loss, space, trim
        self.grad_weight, self.scales, self.silog_lambda = grad_weight, scales, silog_lambda

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> ObjectiveOutput:
        images, depth = batch["images"], batch["depth"]
        valid = valid_mask(depth, batch.get("valid"))
        pred = model(images)
        if pred.shape[-2:] != depth.shape[-2:]:
            pred = F.interpolate(pred[:, None], size=depth.shape[-2:], mode="bilinear",
                                 align_corners=False)[:, 0]
        loss = self.loss(pred.float(), depth.float(), valid)
        align = "none" if self.loss_name == "silog" else self.space
        metrics = {"loss": loss.item(), **depth_metrics(pred, depth, valid, align=align)}
        return ObjectiveOutput(loss, metrics, pred)

    def loss(self, pred: Tensor, depth: Tensor, valid: Tensor) -> Tensor:
        if self.loss_name == "silog":
            return silog_loss(pred, depth, valid, self.silog_lambda)
        target = depth if self.space == "depth" else torch.where(valid, 1.0 / depth.clamp_min(1e-12),
                                                                  torch.zeros_like(depth))
        return ssi_loss(pred, target, valid, self.trim, self.grad_weight, self.scales)
