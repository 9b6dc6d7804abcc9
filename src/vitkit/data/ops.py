"""Batched image operations on float images in [0, 1], shape (B, C, H, W), with per-sample parameters.

Each op takes a batch and one value per sample (a (B,) tensor), so a whole batch is augmented in a few
kernels on whatever device it lives on. Colour ops follow Pillow's ImageEnhance / ImageOps definitions
(``out = degenerate + factor · (image − degenerate)``); geometric ops are affine warps done by one
``grid_sample`` per batch, with out-of-image pixels filled by a constant.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

# ITU-R 601-2 luma, as Pillow's convert("L")
_LUMA = (0.299, 0.587, 0.114)


def uniform(n: int, low: float, high: float, generator: torch.Generator | None,
            device: torch.device) -> Tensor:
    """n samples of U(low, high) drawn from `generator` (on its own device), moved to `device`."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    values = torch.rand(n, generator=generator, device=gen_device)
    return (low + (high - low) * values).to(device)


def randint(n: int, high: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """n integers in [0, high) from `generator`, moved to `device`."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(high, (n,), generator=generator, device=gen_device).to(device)


def random_sign(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """n values of ±1 with equal probability."""
    return randint(n, 2, generator, device).float() * 2 - 1


def _per_sample(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1) to broadcast over (B, C, H, W)


def blend(images: Tensor, degenerate: Tensor, factor: Tensor) -> Tensor:
    """``degenerate + factor · (images − degenerate)`` clamped to [0, 1]; factor (B,)."""
    return torch.lerp(degenerate.expand_as(images), images, _per_sample(factor)).clamp_(0.0, 1.0)


def grayscale(images: Tensor) -> Tensor:
    """Luma (B, 1, H, W) of RGB images, or the image itself when it has one channel."""
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """Scale towards black: factor 0 = black, 1 = unchanged."""
    return (images * _per_sample(factor)).clamp_(0.0, 1.0)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with the image's mean grey level: factor 0 = flat grey, 1 = unchanged."""
    mean = grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    return blend(images, mean, factor)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with the grey image (Pillow's "Color"): factor 0 = grey, 1 = unchanged."""
    return blend(images, grayscale(images), factor)


def adjust_sharpness(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with Pillow's SMOOTH-filtered image (borders kept): 0 = smoothed, 1 = unchanged, 2 = sharper."""
    # SMOOTH = [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 = (3x3 box sum + 4 · centre) / 13, as shifted sums
    # (several times faster than a depthwise conv2d on CPU)
    rows = images[..., :-2, :] + images[..., 1:-1, :] + images[..., 2:, :]  # (B, C, H-2, W)
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]  # (B, C, H-2, W-2)
    degenerate = images.clone()
    degenerate[..., 1:-1, 1:-1] = box.add_(images[..., 1:-1, 1:-1], alpha=4.0).div_(13.0)
    return blend(images, degenerate, factor)


def adjust_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate hue by `shift` turns (−0.5..0.5) in YIQ space (a linear approximation of an HSV shift)."""
    if images.shape[1] == 1:
        return images
    angle = shift * 2 * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    to_yiq = images.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    from_yiq = torch.linalg.inv(to_yiq)
    rot = torch.zeros(len(shift), 3, 3, device=images.device, dtype=images.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    matrix = from_yiq @ rot @ to_yiq  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", matrix, images).clamp_(0.0, 1.0)


def posterize(images: Tensor, bits: Tensor) -> Tensor:
    """Keep the top `bits` (B,) bits (1..8) of each 8-bit value."""
    levels = (images * 255).round_().to(torch.uint8)
    shift = (8 - bits.clamp(1, 8)).to(torch.uint8)
    mask = (torch.full_like(shift, 255) >> shift) << shift  # uint8 (B,)
    return (levels & mask.view(-1, 1, 1, 1)).float() / 255


def solarize(images: Tensor, threshold: Tensor) -> Tensor:
    """Invert pixels at or above `threshold` (B,) in [0, 1]."""
    # |x − 1| = 1 − x where inverted, |x − 0| = x elsewhere (cheaper than torch.where on CPU)
    return (images - (images >= _per_sample(threshold)).to(images.dtype)).abs_()


def autocontrast(images: Tensor) -> Tensor:
    """Stretch each channel to span [0, 1] (channels with one value are left unchanged)."""
    lo = images.amin(dim=(2, 3), keepdim=True)
    hi = images.amax(dim=(2, 3), keepdim=True)
    scale = torch.where(hi > lo, 1.0 / (hi - lo).clamp_min(1e-6), torch.ones_like(hi))
    offset = torch.where(hi > lo, lo, torch.zeros_like(lo))
    return ((images - offset) * scale).clamp_(0.0, 1.0)


def equalize(images: Tensor) -> Tensor:
    """Histogram-equalise each channel on 8-bit levels, following Pillow's ImageOps.equalize LUT."""
    b, c, h, w = images.shape
    levels = (images * 255).round_().long().view(b * c, h * w)  # (B·C, H·W)
    ones = torch.ones_like(levels, dtype=torch.float)
    hist = torch.zeros(b * c, 256, device=images.device).scatter_add_(1, levels, ones)  # (B·C, 256)
    # Pillow: step = (pixels − count of the last non-empty level) // 255; identity when step == 0
    last = 255 - torch.argmax((hist.flip(1) > 0).float(), dim=1)
    step = torch.div(h * w - hist.gather(1, last[:, None]).squeeze(1), 255, rounding_mode="floor")
    before = torch.cumsum(hist, 1) - hist  # pixels strictly below each level
    lut = torch.div(before + torch.div(step, 2, rounding_mode="floor")[:, None], step.clamp_min(1)[:, None],
                    rounding_mode="floor").clamp_(0, 255)
    identity = torch.arange(256, device=images.device, dtype=lut.dtype).expand_as(lut)
    lut = torch.where((step > 0)[:, None], lut, identity)
    return (lut.gather(1, levels) / 255).view(b, c, h, w)


def affine_grid_sample(images: Tensor, theta: Tensor, size: tuple[int, int] | None = None,
                       fill: float = 0.0, mode: str = "bilinear") -> Tensor:
    """Warp with per-sample affine maps from output to input coordinates.

    Args:
        images: (B, C, H, W) float.
        theta: (B, 2, 3) maps normalised output coordinates (x, y in [−1, 1], align_corners=False) to input.
        size: output (h, w); None = input size.
        fill: value of pixels that fall outside the input.
        mode: ``"bilinear"``, ``"bicubic"`` or ``"nearest"``.

    Returns:
        (B, C, h, w).
    """
    out_h, out_w = size or images.shape[-2:]
    grid = affine_grid(theta.to(images.dtype), out_h, out_w)
    if fill == 0.0:
        warped = F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)
    else:  # sample (images − fill) with zero padding, so uncovered pixels come out as `fill`
        warped = F.grid_sample(images - fill, grid, mode=mode, padding_mode="zeros", align_corners=False)
        warped.add_(fill)
    return warped.clamp_(0.0, 1.0) if mode == "bicubic" else warped


def affine_grid(theta: Tensor, height: int, width: int) -> Tensor:
    """``F.affine_grid(theta, (B, ·, height, width), align_corners=False)`` by broadcasting (3x faster on
    CPU).

    Returns:
        (B, height, width, 2) sampling positions (x, y) in [−1, 1] coordinates.
    """
    xs = (torch.arange(width, device=theta.device, dtype=theta.dtype) * 2 + 1) / width - 1  # pixel centres
    ys = (torch.arange(height, device=theta.device, dtype=theta.dtype) * 2 + 1) / height - 1
    t = theta[:, :, :, None, None]  # (B, 2, 3, 1, 1)
    grid = t[:, :, 0] * xs.view(1, 1, 1, width) + t[:, :, 1] * ys.view(1, 1, height, 1) + t[:, :, 2]
    return grid.permute(0, 2, 3, 1)  # (B, 2, h, w) -> (B, h, w, 2)


def geometric_theta(angle_deg: Tensor, shear_x: Tensor, shear_y: Tensor, translate_x: Tensor,
                    translate_y: Tensor, aspect: float = 1.0) -> Tensor:
    """Output→input affine maps (B, 2, 3) for rotation about the centre, shear and translation.

    Translations are fractions of the image side (positive moves content right / down); shears are
    Pillow-style factors. `aspect` = W / H keeps rotations rigid on non-square images.
    """
    b = angle_deg.shape[0]
    rad = torch.deg2rad(angle_deg)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # forward map in pixel-proportional coordinates: rotate, then shear; theta is its inverse
    forward = torch.zeros(b, 3, 3, device=angle_deg.device)
    forward[:, 0, 0], forward[:, 0, 1] = cos, -sin * aspect ** -1
    forward[:, 1, 0], forward[:, 1, 1] = sin * aspect, cos
    forward[:, 2, 2] = 1
    shear = torch.zeros_like(forward)
    shear[:, 0, 0] = shear[:, 1, 1] = shear[:, 2, 2] = 1
    shear[:, 0, 1] = shear_x / aspect
    shear[:, 1, 0] = shear_y * aspect
    forward = shear @ forward
    forward[:, 0, 2] = 2 * translate_x
    forward[:, 1, 2] = 2 * translate_y
    return torch.linalg.inv(forward)[:, :2]  # (B, 2, 3)
