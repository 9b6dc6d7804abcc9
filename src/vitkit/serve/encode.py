"""Pipeline results → JSON: images as base64 PNG, a depth map as a 16-bit PNG with its min and max (exact to
1/65535 of the range; a float list of H·W values would be ~20× larger), colours as ``#rrggbb``."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

from ..viz.colormap import colormap_lut, normalize_map, to_rgb_uint8

LEGEND_STOPS = 11  # colours a colour bar is drawn from (CSS linear-gradient stops)


def png_base64(image: np.ndarray | Image.Image) -> str:
    """An image (anything `to_rgb_uint8` reads, or a Pillow image kept in its mode) as base64 PNG."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(to_rgb_uint8(image))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast; these are small and short-lived
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def hex_colour(rgb: Any) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


def encode_map(values: np.ndarray) -> dict[str, Any]:
    """A float map (H, W) as ``{"png": 16-bit grayscale PNG, "min", "max", "shape"}``: pixel v stands for
    min + v / 65535 · (max - min); non-finite values are stored as min."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    lo = float(values[finite].min()) if finite.any() else 0.0
    hi = float(values[finite].max()) if finite.any() else 0.0
    scaled = np.where(finite, (values - lo) / (hi - lo), 0.0) if hi > lo else np.zeros_like(values)
    levels = np.round(scaled * 65535).astype(np.uint16)
    return {"png": png_base64(Image.fromarray(levels)), "min": lo, "max": hi, "shape": list(values.shape)}


def colour_bar(cmap: str, reverse: bool = False) -> list[str]:
    """`LEGEND_STOPS` colours of `cmap` from the low end to the high end (reversed: high to low)."""
    lut = colormap_lut(cmap)
    stops = [hex_colour(lut[i]) for i in np.linspace(0, 255, LEGEND_STOPS).round().astype(int)]
    return stops[::-1] if reverse else stops


def depth_json(result: dict[str, Any], cmap: str = "magma") -> dict[str, Any]:
    """A depth result (``depth`` float32 (H, W), ``kind``: "depth" or "disparity") → the raw map
    (`encode_map`), a coloured PNG (near = bright: depth is drawn with the map reversed) and its colour bar
    from the map's min to its max."""
    depth = np.asarray(result["depth"], dtype=np.float32)
    kind = str(result.get("kind", "depth"))
    raw = encode_map(depth)
    near_is_low = kind == "depth"
    lut = colormap_lut(cmap)[::-1] if near_is_low else colormap_lut(cmap)
    levels = np.round(normalize_map(depth, raw["min"], raw["max"]) * 255).astype(np.intp)  # (H, W) in 0..255
    coloured = lut[levels]  # (H, W, 3)
    return {"kind": kind, "depth": raw, "image": png_base64(coloured),
            "legend": {"colors": colour_bar(cmap, reverse=near_is_low), "min": raw["min"], "max": raw["max"],
                       "label": kind}}
