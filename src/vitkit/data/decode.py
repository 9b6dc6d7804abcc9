"""Image decoding: the one function every reader in vitkit uses (datasets, shards, `vitkit predict`).

`decode_image` opens a file (or bytes) with Pillow and returns a uint8 tensor (C, H, W) with C = 1 or 3:

* EXIF orientation is applied (``ImageOps.exif_transpose``); animations give frame 0.
* grayscale ``L`` and 1-bit ``1`` are replicated to RGB (or kept as one channel when ``channels=1``);
* 16-bit and 32-bit integer images (``I;16``, ``I;16B``, ``I;16L``, ``I``) are *scaled* to 8 bits
  (value · 255 / 65535), never clipped; float ``F`` images in [0, 1] are scaled by 255, others min-max scaled;
* ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` are converted to RGB by Pillow;
* transparency (``RGBA``, ``LA``, ``PA``, and ``P``/``L``/``RGB`` with a ``transparency`` entry) is composited
  over `background` (white by default), so transparent pixels look the way a viewer shows them on a white page
  rather than revealing whatever colour the encoder left under alpha = 0.

Anything Pillow cannot read fully — zero-byte, truncated, not an image, or larger than
``PIL.Image.MAX_IMAGE_PIXELS`` (a possible decompression bomb; Pillow's warning is promoted to an error) —
raises `UnreadableImage` carrying the path and the reason.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps

ImageSource = str | os.PathLike | bytes | BinaryIO

# What Pillow raises for bad input; anything else is a bug and propagates.
_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
                Image.DecompressionBombWarning, IndexError, struct.error)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class UnreadableImage(ValueError):
    """An image that cannot be decoded; `path` names it and `reason` says why (a ValueError, so the CLI
    reports it on one line with exit code 2 under ``--strict-data``)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):  # picklable across DataLoader / process-pool workers
        return (UnreadableImage, (self.path, self.reason))


def open_image(source: ImageSource, *, channels: int = 3, background: tuple[int, int, int] = (255, 255, 255),
               name: str | None = None, min_side: int | None = None) -> Image.Image:
    """Open, fully decode and convert an image to Pillow mode ``RGB`` (channels=3) or ``L`` (channels=1).

    Args:
        source: a path, the encoded bytes, or a binary file object.
        channels: 3 for RGB, 1 for grayscale.
        background: RGB colour transparent pixels are composited over.
        name: how to name the image in errors (defaults to the path, or ``"<bytes>"``).
        min_side: lets JPEG decoding downscale by 2/4/8 in the DCT (much faster) while both sides stay
            at least this long; None decodes at full size.

    Raises:
        UnreadableImage: zero-byte, truncated, not an image, or a decompression bomb.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    name = name or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<bytes>")
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                _check_pixels(img)
                img.seek(0)  # frame 0 of GIF / APNG / WebP animations
                if min_side and img.format == "JPEG":
                    img.draft(None, (min_side, min_side))
                img.load()
                img = ImageOps.exif_transpose(img)
                return convert_mode(img, channels, background)
    except FileNotFoundError:
        raise
    except Image.UnidentifiedImageError:
        reason = "empty file (0 bytes)" if _is_empty(source) else "not an image Pillow can identify"
        raise UnreadableImage(name, reason) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UnreadableImage(name, f"decompression bomb: {e}") from None
    except _READ_ERRORS as e:
        raise UnreadableImage(name, f"{type(e).__name__}: {e}") from None


def decode_image(source: ImageSource, *, channels: int = 3, size: int | tuple[int, int] | None = None,
                 crop_pct: float = 1.0, background: tuple[int, int, int] = (255, 255, 255),
                 name: str | None = None) -> torch.Tensor:
    """Decode an image into a uint8 tensor (C, H, W), optionally resized.

    Args:
        source: a path, the encoded bytes, or a binary file object.
        channels: 3 for RGB, 1 for grayscale.
        size: None keeps the native size; an int resizes the shorter side to ``round(size / crop_pct)`` and
            centre-crops a ``size × size`` square (evaluation / storage resize); ``(h, w)`` resizes exactly.
        crop_pct: centre-crop fraction when `size` is an int (1.0 = the square fills the shorter side).
        background: RGB colour transparent pixels are composited over.
        name: how to name the image in errors.

    Returns:
        uint8 tensor (channels, H, W).

    Raises:
        UnreadableImage: see `open_image`.
    """
    return torch.from_numpy(decode_array(source, channels=channels, size=size, crop_pct=crop_pct,
                                         background=background, name=name))


def decode_array(source: ImageSource, *, channels: int = 3, size: int | tuple[int, int] | None = None,
                 crop_pct: float = 1.0, background: tuple[int, int, int] = (255, 255, 255),
                 name: str | None = None) -> np.ndarray:
    """`decode_image` returning a numpy uint8 array (C, H, W); used in worker processes that avoid torch."""
    min_side = None
    if size is not None:
        min_side = math.ceil(size / crop_pct) if isinstance(size, int) else max(size)
    img = open_image(source, channels=channels, background=background, name=name, min_side=min_side)
    if size is not None:
        img = resize_image(img, size, crop_pct)
    array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[None]  # (H, W) -> (1, H, W)
    else:
        array = array.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
    return np.array(array, order="C", copy=True) if not array.flags.writeable else np.ascontiguousarray(array)


def resize_image(img: Image.Image, size: int | tuple[int, int], crop_pct: float = 1.0,
                 resample: Image.Resampling = Image.Resampling.BICUBIC) -> Image.Image:
    """Resize with antialiasing: int → shorter side to size/crop_pct then centre crop; (h, w) → exact."""
    if isinstance(size, int):
        scale = size / crop_pct / min(img.size)
        w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
        if (w, h) != img.size:
            img = img.resize((w, h), resample)
        left, top = (w - size) // 2, (h - size) // 2
        return img.crop((left, top, left + size, top + size)) if (w, h) != (size, size) else img
    h, w = size
    return img if img.size == (w, h) else img.resize((w, h), resample)


def _check_pixels(img: Image.Image) -> None:
    # Pillow only *warns* between MAX_IMAGE_PIXELS and twice that; the warning filter above is not
    # thread-safe, so check explicitly as well.
    limit = Image.MAX_IMAGE_PIXELS
    if limit and img.width * img.height > limit:
        raise Image.DecompressionBombError(
            f"{img.width}x{img.height} = {img.width * img.height} pixels exceeds the limit of {limit}")


def _is_empty(source: ImageSource) -> bool:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).stat().st_size == 0
    if isinstance(source, io.BytesIO):
        return len(source.getbuffer()) == 0
    return False


def convert_mode(img: Image.Image, channels: int, background: tuple[int, int, int]) -> Image.Image:
    """Convert any Pillow mode to ``RGB`` or ``L`` (see the module docstring for the rules); `open_image` and
    `vitkit.transforms_for` (for images given as Pillow images or arrays) use it."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        img = Image.fromarray(_high_depth_to_uint8(np.asarray(img)))  # 2-D uint8 -> "L"
    elif img.mode == "1":
        img = img.convert("L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("L", "RGB") and "transparency" in img.info:
        img = img.convert("LA" if img.mode == "L" else "RGBA")
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        img = Image.alpha_composite(canvas, rgba).convert("RGB")
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)


def _high_depth_to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale 16/32-bit integer or float pixels into 0..255 without clipping."""
    values = array.astype(np.float64)
    if array.dtype.kind == "f":
        lo, hi = (0.0, 1.0) if values.size == 0 or (values.min() >= 0 and values.max() <= 1) else (
            values.min(), values.max())
    elif values.size and (values.min() < 0 or values.max() > 65535):
        lo, hi = values.min(), values.max()  # 32-bit data outside the 16-bit range: stretch to fit
    else:
        lo, hi = 0.0, 65535.0
    scaled = (values - lo) * (255.0 / max(hi - lo, 1e-12))
    return np.rint(scaled).astype(np.uint8)
