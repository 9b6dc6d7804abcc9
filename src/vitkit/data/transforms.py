"""Batched training augmentation and evaluation preprocessing, on any device, without torchvision.

`Augment` takes a uint8 batch (B, C, H, W) and class indices (B,) and returns normalised float images and
soft targets (B, K), in this order: random resized crop + horizontal flip (one affine warp), RandAugment or
TrivialAugment, colour jitter, normalisation, random erasing, mixup/cutmix (with label smoothing).
All randomness comes from the `torch.Generator` passed in, so a seed fixes the output; draws are made on the
generator's device, so pass a generator on the batch's device to avoid host↔device copies.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from . import ops
from .autoaugment import rand_augment, trivial_augment
from .mix import mix_batch

Tensor = torch.Tensor


@dataclasses.dataclass
class AugmentConfig:
    """Training augmentation (the ``augment`` section of a training config); every op is off by default.

    Attributes:
        image_size: output side (square) after cropping; None = the input size.
        crop_scale: random resized crop area range; None = no crop (only `crop_padding` shifts).
        crop_ratio: aspect-ratio range of the crop.
        crop_padding: random shift of up to this many pixels with zero fill ("pad and random crop").
        hflip: probability of a horizontal flip (keep 0 for digits and text).
        auto_augment: ``"randaugment"``, ``"trivialaugment"`` or ``"none"``.
        ra_num_ops: RandAugment's N.
        ra_magnitude: RandAugment's M in [0, 30].
        color_jitter: brightness/contrast/saturation factors drawn from [1 − s, 1 + s] (0 = off).
        hue: hue shift drawn from [−hue, hue] turns (0 = off).
        erase_prob: probability of random erasing per sample (one box filled with normal noise).
        mixup_alpha: mixup Beta parameter (0 = off).
        cutmix_alpha: cutmix Beta parameter (0 = off).
        mix_prob: probability that a batch is mixed.
        switch_prob: probability of cutmix instead of mixup when both are on.
        label_smoothing: applied to every soft target (mixed or not).
        interpolation: resampling of the crop warp.
    """

    image_size: int | None = None
    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    crop_padding: int = 0
    hflip: float = 0.0
    auto_augment: Literal["none", "randaugment", "trivialaugment"] = "none"
    ra_num_ops: int = 2
    ra_magnitude: int = 9
    color_jitter: float = 0.0
    hue: float = 0.0
    erase_prob: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.0
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"


AUGMENT_PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    "light": AugmentConfig(crop_scale=(0.35, 1.0), hflip=0.5),
    "strong": AugmentConfig(crop_scale=(0.35, 1.0), hflip=0.5, auto_augment="randaugment", ra_magnitude=9,
                            erase_prob=0.25, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1),
}


def augment_preset(name: str, **overrides) -> AugmentConfig:
    """A copy of preset `name` (``"none"``, ``"light"``, ``"strong"``) with field `overrides`."""
    if name not in AUGMENT_PRESETS:
        raise KeyError(f"unknown augmentation preset {name!r}; choose from {sorted(AUGMENT_PRESETS)}")
    return dataclasses.replace(AUGMENT_PRESETS[name], **overrides)


def to_float(images: Tensor) -> Tensor:
    """uint8 images → float32 in [0, 1]; float images pass through."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(images / 255 − mean) / std per channel, for uint8 (or float [0, 1]) images (B, C, H, W) or (C, H, W).

    Raises:
        ValueError: when the channel count differs from len(mean).
    """
    if images.shape[-3] != len(mean) or len(mean) != len(std):
        raise ValueError(f"images have {images.shape[-3]} channels but mean/std have {len(mean)}/{len(std)}")
    mean_t = torch.tensor(mean, device=images.device, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=torch.float32).view(-1, 1, 1)
    return (to_float(images) - mean_t) / std_t


def resize_images(images: Tensor, size: int | tuple[int, int], interpolation: str = "bicubic") -> Tensor:
    """Resize a batch (B, C, H, W) to `size` with antialiasing, keeping the dtype (uint8 is rounded)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == size:
        return images
    antialias = interpolation in ("bilinear", "bicubic")
    out = F.interpolate(to_float(images), size=size, mode=interpolation, antialias=antialias,
                        align_corners=False if antialias else None)
    if images.dtype == torch.uint8:
        return out.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
    return out.clamp_(0, 1)


def prepare_eval(images: Tensor, mean: Sequence[float], std: Sequence[float], size: int | None = None,
                 interpolation: str = "bicubic") -> Tensor:
    """Evaluation preprocessing of a uint8 batch: optional resize to `size`, then `normalize`."""
    if size is not None:
        images = resize_images(images, size, interpolation)
    return normalize(images, mean, std)


def crop_fractions(batch: int, image_hw: tuple[int, int], scale: tuple[float, float],
                   ratio: tuple[float, float], generator: torch.Generator | None, device: torch.device,
                   attempts: int = 10) -> tuple[Tensor, Tensor]:
    """Random resized crop sizes (width, height: fractions of the side, each (B,)), drawn as torchvision does.

    Each sample takes the first of `attempts` (area, log-uniform aspect) draws whose box fits in the image;
    when none fits it falls back to the largest centred box with an aspect inside `ratio` (the whole image for
    a square input), so ``scale=(1, 1)`` means no crop whatever the ratio range.
    """
    h, w = image_hw
    area = ops.uniform(batch * attempts, *scale, generator, device).view(batch, attempts)
    low, high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(ops.uniform(batch * attempts, low, high, generator, device)).view(batch, attempts)
    frac_w = torch.sqrt(area * aspect * h / w)  # (B, attempts)
    frac_h = torch.sqrt(area / aspect * w / h)
    fits = (frac_w <= 1) & (frac_h <= 1)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # index of the first fitting draw (0 if none)
    in_ratio = w / h
    fallback_w = min(1.0, ratio[1] / in_ratio)  # widest centred box whose aspect stays within range
    fallback_h = min(1.0, in_ratio / ratio[0])
    any_fit = fits.any(1)
    fallback = torch.ones_like(area[:, 0])
    chosen_w = torch.where(any_fit, frac_w.gather(1, first).squeeze(1), fallback * fallback_w)
    chosen_h = torch.where(any_fit, frac_h.gather(1, first).squeeze(1), fallback * fallback_h)
    return chosen_w, chosen_h


def crop_flip_theta(batch: int, image_hw: tuple[int, int], cfg: AugmentConfig,
                    generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Output→input affine maps (B, 2, 3) for random resized crop, padding shift and horizontal flip."""
    h, w = image_hw
    if cfg.crop_scale is not None:
        frac_w, frac_h = crop_fractions(batch, (h, w), cfg.crop_scale, cfg.crop_ratio, generator, device)
        cx = ops.uniform(batch, -1.0, 1.0, generator, device) * (1 - frac_w)
        cy = ops.uniform(batch, -1.0, 1.0, generator, device) * (1 - frac_h)
    else:
        frac_w = frac_h = torch.ones(batch, device=device)
        cx = cy = torch.zeros(batch, device=device)
    if cfg.crop_padding > 0:
        shift = ops.randint(2 * batch, 2 * cfg.crop_padding + 1, generator, device).float() - cfg.crop_padding
        cx = cx + 2 * shift[:batch] / w
        cy = cy + 2 * shift[batch:] / h
    flip = torch.where(ops.uniform(batch, 0.0, 1.0, generator, device) < cfg.hflip, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 2] = frac_w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = frac_h, cy
    return theta


def color_jitter(images: Tensor, strength: float, hue: float = 0.0,
                 generator: torch.Generator | None = None) -> Tensor:
    """Random brightness, contrast and saturation in [1 − strength, 1 + strength], then hue in ±hue turns."""
    b, device = images.shape[0], images.device
    if strength > 0:
        lo, hi = max(0.0, 1 - strength), 1 + strength
        images = ops.adjust_brightness(images, ops.uniform(b, lo, hi, generator, device))
        images = ops.adjust_contrast(images, ops.uniform(b, lo, hi, generator, device))
        images = ops.adjust_saturation(images, ops.uniform(b, lo, hi, generator, device))
    if hue > 0:
        images = ops.adjust_hue(images, ops.uniform(b, -hue, hue, generator, device))
    return images


def random_erasing(images: Tensor, prob: float, generator: torch.Generator | None = None,
                   scale: tuple[float, float] = (0.02, 1 / 3), ratio: tuple[float, float] = (0.3, 1 / 0.3)
                   ) -> Tensor:
    """Replace one random box per chosen sample (probability `prob`) with standard-normal noise.

    Meant for normalised images (noise then matches the data's scale), as in Zhong et al. (2020) / timm.
    """
    b, c, h, w = images.shape
    device = images.device
    chosen = ops.uniform(b, 0.0, 1.0, generator, device) < prob
    area = ops.uniform(b, *scale, generator, device) * h * w
    aspect = torch.exp(ops.uniform(b, math.log(ratio[0]), math.log(ratio[1]), generator, device))
    box_h = torch.sqrt(area * aspect).round().clamp(1, h)
    box_w = torch.sqrt(area / aspect).round().clamp(1, w)
    top = (ops.uniform(b, 0.0, 1.0, generator, device) * (h - box_h + 1)).floor()
    left = (ops.uniform(b, 0.0, 1.0, generator, device) * (w - box_w + 1)).floor()
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + box_h).view(-1, 1, 1))
              & (cols >= left.view(-1, 1, 1)) & (cols < (left + box_w).view(-1, 1, 1)))  # (B, H, W)
    index = chosen.nonzero().squeeze(1)
    if index.numel() == 0:
        return images
    gen_device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn((index.numel(), c, h, w), generator=generator, device=gen_device)
    noise = noise.to(device, images.dtype)
    out = images.clone()
    out[index] = torch.lerp(images[index], noise, inside[index, None].to(images.dtype))
    return out


class Augment:
    """The training pipeline of an `AugmentConfig`, as a callable on batches.

    Args:
        cfg: which ops run, and how strongly.
        num_classes: K of the soft targets.
        mean: per-channel normalisation mean (on [0, 1] pixels), e.g. the model's PreprocessConfig.mean.
        std: per-channel normalisation std.
    """

    def __init__(self, cfg: AugmentConfig, *, num_classes: int, mean: Sequence[float], std: Sequence[float]):
        if cfg.auto_augment not in ("none", "randaugment", "trivialaugment"):
            raise ValueError(f"auto_augment must be 'none', 'randaugment' or 'trivialaugment', "
                             f"got {cfg.auto_augment!r}")
        self.cfg = cfg
        self.num_classes = num_classes
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __call__(self, images: Tensor, targets: Tensor, generator: torch.Generator | None = None
                 ) -> tuple[Tensor, Tensor]:
        """Augment one batch.

        Args:
            images: uint8 (B, C, H, W) (float in [0, 1] also accepted).
            targets: (B,) class indices.
            generator: random source; same generator state → same output.

        Returns:
            images: float32 (B, C, S, S) normalised, S = cfg.image_size or the input size.
            targets: float32 (B, K) soft targets (label smoothing and mixing applied; rows sum to 1).
        """
        cfg = self.cfg
        x = to_float(images)
        b, _, h, w = x.shape
        size = (cfg.image_size, cfg.image_size) if cfg.image_size else (h, w)
        if cfg.crop_scale is not None or cfg.crop_padding > 0 or cfg.hflip > 0:
            theta = crop_flip_theta(b, (h, w), cfg, generator, x.device)
            x = ops.affine_grid_sample(x, theta, size=size, fill=0.0, mode=cfg.interpolation)
        elif size != (h, w):
            x = resize_images(x, size, cfg.interpolation)  # antialiased, unlike a plain warp
        if cfg.auto_augment == "randaugment":
            x = rand_augment(x, generator, cfg.ra_num_ops, cfg.ra_magnitude)
        elif cfg.auto_augment == "trivialaugment":
            x = trivial_augment(x, generator)
        if cfg.color_jitter > 0 or cfg.hue > 0:
            x = color_jitter(x, cfg.color_jitter, cfg.hue, generator)
        x = normalize(x, self.mean, self.std)
        if cfg.erase_prob > 0:
            x = random_erasing(x, cfg.erase_prob, generator)
        return mix_batch(x, targets, self.num_classes, generator, mixup_alpha=cfg.mixup_alpha,
                         cutmix_alpha=cfg.cutmix_alpha, prob=cfg.mix_prob, switch_prob=cfg.switch_prob,
                         label_smoothing=cfg.label_smoothing)
