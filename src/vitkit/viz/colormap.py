"""Colour maps, overlays and image grids with numpy and Pillow only (no plotting library).

Everything here works on numpy arrays: scalar maps (H, W) float, RGB images (H, W, 3) uint8. The colour
maps are 256-entry lookup tables interpolated in numpy from 17 anchor colours sampled from matplotlib's
perceptually uniform maps (viridis, magma, inferno) and Google's turbo; each is within 0.03 (about 7/255) of
matplotlib's table.

Typical use::

    heat = apply_colormap(depth, "magma")                # (H, W) float → (H, W, 3) uint8
    shown = overlay(image, attention_map, alpha=0.5)     # map upsampled onto the image
    save_png(image_grid([shown, heat], cols=2), "out.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# 17 evenly spaced anchor colours per map (positions 0, 1/16, ..., 1).
_ANCHORS = {
    "viridis": "440154 48186a 472d7b 424086 3b528b 33638d 2c728e 26828e 21918c 1fa088 28ae80 3fbc73 5ec962 "
               "84d44b addc30 d8e219 fde725",
    "magma": "000004 0a0822 1d1147 36106b 51127c 6a1c81 832681 9c2e7f b73779 d0416f e75263 f56b5c fc8961 "
             "fea772 fec488 fde2a3 fcfdbf",
    "inferno": "000004 0b0724 210c4a 3d0965 57106e 71196e 8a226a a32c61 bc3754 d24644 e45a31 f1731d f98e09 "
               "fcac11 f9cb35 f2ea69 fcffa4",
    "turbo": "30123b 4040a2 466be3 4294ff 28bceb 18ddc2 32f298 6dfe62 a4fc3c cdec34 eecf3a fdac34 fb7e21 "
             "eb500e d02f05 a91601 7a0403",
    "gray": "000000 ffffff",
}

COLORMAPS: tuple[str, ...] = tuple(_ANCHORS)


def colormap_lut(name: str = "viridis") -> np.ndarray:
    """The (256, 3) uint8 lookup table of colour map `name` (one of COLORMAPS)."""
    if name not in _ANCHORS:
        raise KeyError(f"unknown colour map {name!r}; choose from {', '.join(COLORMAPS)}")
    anchors = np.array([[int(h[i:i + 2], 16) for i in (0, 2, 4)] for h in _ANCHORS[name].split()], float)
    at = np.linspace(0.0, 1.0, len(anchors))
    x = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(x, at, anchors[:, c]) for c in range(3)], axis=1)  # (256, 3)
    return np.round(lut).astype(np.uint8)


def normalize_map(values: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Scale `values` linearly to [0, 1] (min/max of the data unless given); a constant map becomes zeros."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    lo = float(values.min()) if vmin is None else vmin
    hi = float(values.max()) if vmax is None else vmax
    if hi <= lo:
        return np.zeros_like(values)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0)


def apply_colormap(values: np.ndarray, name: str = "viridis", vmin: float | None = None,
                   vmax: float | None = None) -> np.ndarray:
    """Colour a scalar map (H, W) → RGB (H, W, 3) uint8; values outside [vmin, vmax] are clipped."""
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"expected a 2-D map (H, W), got shape {values.shape}")
    idx = np.round(normalize_map(values, vmin, vmax) * 255).astype(np.intp)
    return colormap_lut(name)[idx]


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Any image as (H, W, 3) uint8: accepts (H, W), (H, W, 1|3|4) or channel-first (1|3, H, W);
    floats are read as [0, 1]."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3, 4):
        image = image.transpose(1, 2, 0)  # (C, H, W) → (H, W, C)
    if image.dtype != np.uint8:
        image = np.round(np.clip(image.astype(np.float64), 0.0, 1.0) * 255).astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"cannot read an image of shape {image.shape}")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def resize_map(values: np.ndarray, size: tuple[int, int], resample: str = "bilinear") -> np.ndarray:
    """Resize a float map (h, w) to size (H, W) with Pillow ("bilinear", "bicubic" or "nearest")."""
    modes = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
    if resample not in modes:
        raise KeyError(f"unknown resample {resample!r}; choose from {', '.join(modes)}")
    img = Image.fromarray(np.asarray(values, dtype=np.float32), mode="F")
    return np.asarray(img.resize((size[1], size[0]), modes[resample]), dtype=np.float32)


def overlay(image: np.ndarray, values: np.ndarray, alpha: float = 0.5, cmap: str = "turbo",
            resample: str = "bilinear") -> np.ndarray:
    """Blend a coloured scalar map over an image.

    Args:
        image: (H, W, 3) uint8 (or anything `to_rgb_uint8` reads).
        values: (h, w) map, e.g. attention on the patch grid; min-max scaled, then resized to (H, W).
        alpha: weight of the colour map (0 = image only, 1 = map only).
        cmap: colour map name.
        resample: how the map is upsampled ("nearest" shows the patch grid).

    Returns:
        (H, W, 3) uint8.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    base = to_rgb_uint8(image)
    heat = apply_colormap(resize_map(normalize_map(values), base.shape[:2], resample), cmap, 0.0, 1.0)
    blended = (1.0 - alpha) * base.astype(np.float32) + alpha * heat.astype(np.float32)
    return np.round(blended).astype(np.uint8)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Enlarge an image by an integer factor with nearest-neighbour (keeps pixels crisp)."""
    image = to_rgb_uint8(image)
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def add_caption(image: np.ndarray, text: str, height: int = 14, background: int = 255) -> np.ndarray:
    """A strip of text above an image (Pillow's default bitmap font) → (H + height, W, 3) uint8."""
    image = to_rgb_uint8(image)
    strip = Image.new("RGB", (image.shape[1], height), (background,) * 3)
    ImageDraw.Draw(strip).text((2, 1), text, fill=(0, 0, 0))
    return np.concatenate([np.asarray(strip), image], axis=0)


def image_grid(images: Sequence[np.ndarray], cols: int | None = None, pad: int = 2,
               pad_value: int = 255) -> np.ndarray:
    """Tile images of possibly different sizes row by row into one (H, W, 3) uint8 image.

    Each cell is as large as the largest image; smaller ones sit top-left, padded with `pad_value`.
    `cols` defaults to ceil(sqrt(n)).
    """
    if not images:
        raise ValueError("image_grid needs at least one image")
    tiles = [to_rgb_uint8(im) for im in images]
    cols = cols or int(np.ceil(np.sqrt(len(tiles))))
    rows = -(-len(tiles) // cols)
    ch = max(t.shape[0] for t in tiles)
    cw = max(t.shape[1] for t in tiles)
    out = np.full((rows * (ch + pad) + pad, cols * (cw + pad) + pad, 3), pad_value, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = pad + r * (ch + pad), pad + c * (cw + pad)
        out[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    return out


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an image (anything `to_rgb_uint8` reads) as PNG, creating parent folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_rgb_uint8(image)).save(path)
    return path


def output_stems(paths: Sequence[str | Path]) -> list[str]:
    """One output name per input image: its file stem, made unique across `paths` by prefixing parent
    folder names where stems collide (``cat/4999.jpg``, ``dog/4999.jpg`` → ``cat_4999``, ``dog_4999``),
    then an index. A second image with the stem of the first must not overwrite the first one's figure."""
    parts = [Path(p).resolve().parts for p in paths]
    names = [Path(p).stem for p in paths]
    depth = 1
    while len(set(names)) < len(names) and any(depth < len(p) for p in parts):
        clash = {n for n in names if names.count(n) > 1}
        names = [("_".join((*p[-depth - 1:-1], Path(p[-1]).stem)) if n in clash else n)
                 for n, p in zip(names, parts, strict=False)]
        depth += 1
    if len(set(names)) < len(names):
        names = [f"{i}_{n}" for i, n in enumerate(names)]
    return names
