"""RandAugment (Cubuk et al., 2019) and TrivialAugment (Müller & Hutter, 2021) as batched tensor ops.

Every sample draws its own op (and, for TrivialAugment, its own magnitude); samples that drew a geometric op
are warped together by one ``grid_sample``, and each colour op runs once on the samples that drew it.
Magnitudes follow torchvision's tables: RandAugment's strength m ∈ [0, 30] (``num_magnitude_bins = 31``);
TrivialAugment's "wide" ranges with a uniformly drawn magnitude. Images are float (B, C, H, W) in [0, 1].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from . import ops

Tensor = torch.Tensor


@dataclasses.dataclass(frozen=True)
class OpSpace:
    """The maximum strength of each op (reached at magnitude fraction 1)."""

    shear: float  # shear factor
    translate: float  # fraction of the side
    rotate: float  # degrees
    enhance: float  # brightness / colour / contrast / sharpness factor = 1 ± enhance
    posterize_bits: float  # bits removed at full strength (8 → 8 − posterize_bits)


RAND_AUGMENT_SPACE = OpSpace(shear=0.3, translate=150 / 331, rotate=30.0, enhance=0.9, posterize_bits=4)
# TrivialAugment-wide; its 32-pixel translation is taken relative to a 224-pixel side
TRIVIAL_AUGMENT_SPACE = OpSpace(shear=0.99, translate=32 / 224, rotate=135.0, enhance=0.99, posterize_bits=6)

GEOMETRIC_OPS = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
_Op = Callable[[Tensor, Tensor, OpSpace], Tensor]  # (images, signed magnitude fraction (B,), space)
COLOR_OPS: dict[str, _Op] = {
    "identity": lambda x, m, s: x,
    "brightness": lambda x, m, s: ops.adjust_brightness(x, 1 + s.enhance * m),
    "color": lambda x, m, s: ops.adjust_saturation(x, 1 + s.enhance * m),
    "contrast": lambda x, m, s: ops.adjust_contrast(x, 1 + s.enhance * m),
    "sharpness": lambda x, m, s: ops.adjust_sharpness(x, 1 + s.enhance * m),
    "posterize": lambda x, m, s: ops.posterize(x, 8 - (s.posterize_bits * m.abs()).round().int()),
    "solarize": lambda x, m, s: ops.solarize(x, 1 - m.abs()),
    "autocontrast": lambda x, m, s: ops.autocontrast(x),
    "equalize": lambda x, m, s: ops.equalize(x),
}
OP_NAMES = tuple(COLOR_OPS) + GEOMETRIC_OPS


def apply_ops(images: Tensor, op_index: Tensor, magnitude: Tensor, space: OpSpace, fill: float = 0.5,
              op_names: tuple[str, ...] = OP_NAMES) -> Tensor:
    """Apply op ``op_names[op_index[i]]`` at signed magnitude fraction ``magnitude[i]`` to sample i.

    Args:
        images: (B, C, H, W) float in [0, 1].
        op_index: (B,) int indices into `op_names`.
        magnitude: (B,) signed strength fractions in [−1, 1] (the sign picks the direction where one exists).
        space: op strengths at fraction 1.
        fill: value of pixels uncovered by geometric ops.
        op_names: the op set `op_index` indexes.

    Returns:
        (B, C, H, W) float in [0, 1].
    """
    # Group samples by op (all geometric ops in one group sharing a single warp); each group is gathered with
    # index_select and written back with index_copy_, far cheaper on CPU than boolean indexing per op.
    geometric = torch.tensor([n in GEOMETRIC_OPS for n in op_names], device=op_index.device)
    group = torch.where(geometric[op_index], len(op_names), op_index)  # geometric ops → one last group
    order = torch.argsort(group, stable=True)
    counts = torch.bincount(group, minlength=len(op_names) + 1).tolist()
    out = images.clone()
    start = 0
    for k, count in enumerate(counts):
        rows = order[start:start + count]
        start += count
        if count == 0 or (k < len(op_names) and op_names[k] == "identity"):
            continue
        x, strength = images.index_select(0, rows), magnitude.index_select(0, rows)
        if k == len(op_names):
            x = _warp(x, op_index.index_select(0, rows), strength, space, fill, op_names)
        else:
            x = COLOR_OPS[op_names[k]](x, strength, space)
        out.index_copy_(0, rows, x)
    return out


def _warp(images: Tensor, op_index: Tensor, magnitude: Tensor, space: OpSpace, fill: float,
          op_names: tuple[str, ...]) -> Tensor:
    def pick(name: str, scale: float) -> Tensor:
        if name not in op_names:
            return torch.zeros_like(magnitude)
        return torch.where(op_index == op_names.index(name), magnitude * scale, torch.zeros_like(magnitude))

    theta = ops.geometric_theta(pick("rotate", space.rotate), pick("shear_x", space.shear),
                                pick("shear_y", space.shear), pick("translate_x", space.translate),
                                pick("translate_y", space.translate),
                                aspect=images.shape[-1] / images.shape[-2])
    return ops.affine_grid_sample(images, theta, fill=fill, mode="bilinear")


def rand_augment(images: Tensor, generator: torch.Generator | None = None, num_ops: int = 2,
                 magnitude: int = 9, fill: float = 0.5) -> Tensor:
    """RandAugment: `num_ops` ops drawn uniformly per sample, each at strength ``magnitude / 30``.

    Args:
        images: (B, C, H, W) float in [0, 1].
        generator: random source (draws happen on its device).
        num_ops: ops applied in sequence (N in the paper).
        magnitude: strength M in [0, 30].
        fill: value of pixels uncovered by geometric ops.

    Returns:
        (B, C, H, W) float in [0, 1].
    """
    if not 0 <= magnitude <= 30:
        raise ValueError(f"RandAugment magnitude must be in [0, 30], got {magnitude}")
    b, device = images.shape[0], images.device
    for _ in range(num_ops):
        op_index = ops.randint(b, len(OP_NAMES), generator, device)
        strength = ops.random_sign(b, generator, device) * (magnitude / 30)
        images = apply_ops(images, op_index, strength, RAND_AUGMENT_SPACE, fill)
    return images


def trivial_augment(images: Tensor, generator: torch.Generator | None = None, fill: float = 0.5) -> Tensor:
    """TrivialAugment (wide): one op per sample at a uniformly drawn strength.

    Args:
        images: (B, C, H, W) float in [0, 1].
        generator: random source.
        fill: value of pixels uncovered by geometric ops.

    Returns:
        (B, C, H, W) float in [0, 1].
    """
    b, device = images.shape[0], images.device
    op_index = ops.randint(b, len(OP_NAMES), generator, device)
    bins = ops.randint(b, 31, generator, device).float() / 30  # magnitude bin 0..30, as torchvision
    strength = ops.random_sign(b, generator, device) * bins
    return apply_ops(images, op_index, strength, TRIVIAL_AUGMENT_SPACE, fill)
