"""Soft targets: label smoothing, mixup (Zhang et al., 2018) and cutmix (Yun et al., 2019), per batch.

Targets come out as probabilities (B, K) that sum to 1, with label smoothing already applied to both mixed
labels, so the loss is always soft-target cross-entropy and never smooths a second time.
As in timm's batch mode, a batch is mixed with its own reverse (sample i with sample B−1−i) using one λ.
"""

from __future__ import annotations

import numpy as np
import torch

from . import ops

Tensor = torch.Tensor


def smooth_one_hot(targets: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """(B,) class indices → (B, K) float targets.

    ``1 − smoothing + smoothing/K`` on the class and ``smoothing/K`` elsewhere: the convention of
    ``F.cross_entropy(label_smoothing=...)``.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(f"targets must lie in [0, {num_classes}), "
                         f"got {int(targets.min())}..{int(targets.max())}")
    off = smoothing / num_classes
    soft = torch.full((targets.shape[0], num_classes), off, device=targets.device)
    return soft.scatter_(1, targets.long()[:, None], 1.0 - smoothing + off)


def sample_beta(alpha: float, generator: torch.Generator | None) -> float:
    """One draw from Beta(alpha, alpha), reproducible from `generator` (torch has no seeded Beta sampler)."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=gen_device))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mixup(images: Tensor, soft_targets: Tensor, lam: float) -> tuple[Tensor, Tensor]:
    """Blend each sample with its reversed partner: ``λ·x + (1−λ)·x.flip(0)``, targets likewise."""
    mixed = images * lam + images.flip(0) * (1.0 - lam)
    return mixed, soft_targets * lam + soft_targets.flip(0) * (1.0 - lam)


def cutmix(images: Tensor, soft_targets: Tensor, lam: float, generator: torch.Generator | None
           ) -> tuple[Tensor, Tensor, float]:
    """Paste a box covering about ``1 − λ`` of the area from the reversed partner.

    The box centre is uniform over the image and the box is clipped at the borders, so λ is recomputed from
    the pasted area to keep the targets exact.

    Returns:
        (images (B, C, H, W), targets (B, K), λ actually used).
    """
    _, _, h, w = images.shape
    cut = np.sqrt(1.0 - lam)
    cy, cx = ops.uniform(2, 0.0, 1.0, generator, torch.device("cpu")).tolist()
    cy, cx = int(cy * h), int(cx * w)
    half_h, half_w = int(h * cut) // 2, int(w * cut) // 2
    y0, y1 = max(cy - half_h, 0), min(cy + half_h, h)
    x0, x1 = max(cx - half_w, 0), min(cx + half_w, w)
    mixed = images.clone()
    mixed[:, :, y0:y1, x0:x1] = images.flip(0)[:, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    return mixed, soft_targets * lam + soft_targets.flip(0) * (1.0 - lam), lam


def mix_batch(images: Tensor, targets: Tensor, num_classes: int, generator: torch.Generator | None = None, *,
              mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0,
              switch_prob: float = 0.5, label_smoothing: float = 0.0) -> tuple[Tensor, Tensor]:
    """Mixup or cutmix a batch with probability `prob`, returning smoothed soft targets either way.

    Args:
        images: (B, C, H, W) float.
        targets: (B,) class indices.
        num_classes: K.
        generator: random source.
        mixup_alpha: Beta parameter of mixup (0 = off).
        cutmix_alpha: Beta parameter of cutmix (0 = off).
        prob: chance that a batch is mixed at all.
        switch_prob: chance of cutmix rather than mixup when both are on.
        label_smoothing: smoothing applied to each label before mixing.

    Returns:
        images (B, C, H, W) and soft targets (B, K) whose rows sum to 1.
    """
    soft = smooth_one_hot(targets, num_classes, label_smoothing).to(images.dtype)
    if (mixup_alpha <= 0 and cutmix_alpha <= 0) or images.shape[0] < 2:
        return images, soft
    draws = ops.uniform(2, 0.0, 1.0, generator, torch.device("cpu")).tolist()
    if draws[0] >= prob:
        return images, soft
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or draws[1] < switch_prob)
    if use_cutmix:
        mixed, soft, _ = cutmix(images, soft, sample_beta(cutmix_alpha, generator), generator)
        return mixed, soft
    return mixup(images, soft, sample_beta(mixup_alpha, generator))
