"""An HF ``preprocessor_config.json`` → the model's `PreprocessConfig`, honestly.

What vitkit reproduces exactly is read: ``image_mean`` / ``image_std``, ``resample`` (nearest, bilinear,
bicubic), and ``do_rescale`` / ``rescale_factor`` / ``do_normalize``, which fold into mean and std
(HF computes ``(x · r − m) / s`` on 8-bit ``x``; vitkit ``(x / 255 − m') / s'``, so ``m' = m / (255 r)``,
``s' = s / (255 r)``; no normalisation is mean 0, std 1). A DPT's or an MAE's preprocessing lives
under ``encoder``.

What it does not reproduce (a centre crop, a shortest-edge resize, another size than the model's, no resize,
DPT's aspect-keeping resize to multiples, padding, other resampling filters) is not guessed at: each such
setting becomes a note saying what HF does and what vitkit does instead, which `load_checkpoint` logs as a
warning and keeps in `LoadReport.preprocessing_notes`. The weights are fine either way; the preprocessing
can be overridden (``vitkit.load_pretrained(path, preprocess={...})``; dense models: ``max_side``).
"""

from __future__ import annotations

import math
from typing import Any

from ..config import PreprocessConfig, replace_config
from ..models.registry import model_type_of

RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL codes vitkit resizes with
PIL_NAMES = {1: "lanczos", 4: "box", 5: "hamming"}
DEFAULT_MAX_SIDE = 512  # the dense pipelines' and `vitkit depth/segment`'s --max-side


def with_hf_preprocessing(cfg: Any, data: dict[str, Any]) -> tuple[Any, list[str]]:
    """(`cfg` with what `data` sets that vitkit reproduces exactly, notes on the settings it cannot)."""
    dense = model_type_of(cfg) == "dpt"
    nested = not hasattr(cfg, "preprocess")  # DPT, MAE: the encoder's preprocessing is the model's
    holder = getattr(cfg, "encoder", None) if nested else cfg
    pre: PreprocessConfig | None = getattr(holder, "preprocess", None)
    if pre is None:
        return cfg, []
    changes, notes = _normalisation(pre, data)
    interpolation = RESAMPLE.get(data.get("resample"))
    if interpolation:
        changes["interpolation"] = interpolation
    elif data.get("resample") is not None:
        name = PIL_NAMES.get(data["resample"], data["resample"])
        notes.append(f"resample={data['resample']} ({name}): vitkit resizes with {pre.interpolation} instead")
    notes += resize_notes(data, pre, tuple(holder.image_size), holder.patch_size, dense)
    prefix = "encoder.preprocess." if nested else "preprocess."
    return replace_config(cfg, {prefix + k: v for k, v in changes.items()}), notes


def _normalisation(pre: PreprocessConfig, data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """mean / std changes: the file's, with rescaling and a disabled normalisation folded in."""
    channels = len(pre.mean)
    normalise = data.get("do_normalize", True)
    given = "image_mean" in data and "image_std" in data
    mean = _values(data["image_mean"]) if given else pre.mean
    std = _values(data["image_std"]) if given else pre.std
    if not normalise:
        mean, std = (0.0,) * channels, (1.0,) * channels
    factor = float(data.get("rescale_factor", 1 / 255)) if data.get("do_rescale", True) else 1.0
    scale = 255 * factor  # HF's pixel = vitkit's pixel · scale
    if scale <= 0:
        note = (f"rescale_factor={factor:g}: HF scales every pixel to {factor * 255:g}; vitkit keeps pixels "
                "in [0, 1] and normalises with the file's mean / std")
        return ({"mean": mean, "std": std} if given or not normalise else {}), [note]
    if not math.isclose(scale, 1.0, rel_tol=1e-9):
        mean, std = tuple(m / scale for m in mean), tuple(s / scale for s in std)
    if given or not normalise or mean != pre.mean:
        return {"mean": _broadcast(mean, channels), "std": _broadcast(std, channels)}, []
    return {}, []


def _values(value: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else (float(value),)


def _broadcast(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    return values * channels if len(values) == 1 and channels > 1 else values


def vitkit_resize(pre: PreprocessConfig, image_size: tuple[int, int], dense: bool) -> str:
    """What vitkit does to an image before the model, in words."""
    h, w = image_size
    if pre.resize == "squash":
        return f"resizes the whole image to {h}×{w}, ignoring its aspect ratio"
    if dense:
        return (f"keeps the aspect ratio, scales the longer side down to at most max_side (default "
                f"{DEFAULT_MAX_SIDE}, never up) and rounds each side to a multiple of the patch")
    return (f"scales the shorter side to {round(max(h, w) / pre.crop_pct)} and centre-crops {h}×{w} "
            "(preprocess.resize 'crop')")


def resize_notes(data: dict[str, Any], pre: PreprocessConfig, image_size: tuple[int, int], patch: int,
                 dense: bool) -> list[str]:
    """One note per resize / crop / pad setting of `data` vitkit does not reproduce."""
    instead = f"vitkit {vitkit_resize(pre, image_size, dense)} instead"
    notes = []
    if not data.get("do_resize", True):
        notes.append(f"do_resize=false: HF feeds each image at its own size; {instead}")
    else:
        size = data.get("size")
        size = {"height": size, "width": size} if isinstance(size, int) else size or {}
        hw = (size.get("height"), size.get("width"))
        if data.get("keep_aspect_ratio"):
            notes.append(_aspect_note(data, hw, patch, instead))
        elif "shortest_edge" in size or "longest_edge" in size:
            extra = f", crop_pct={data['crop_pct']}" if "crop_pct" in data else ""
            notes.append(f"size={size}{extra}: HF resizes by an edge, keeping the aspect ratio; {instead}")
        elif None not in hw and tuple(hw) != tuple(image_size):
            notes.append(f"size={hw[0]}×{hw[1]}: HF resizes to that, not the model's "
                         f"{image_size[0]}×{image_size[1]}; {instead}")
    if data.get("do_center_crop"):
        crop = data.get("crop_size")
        notes.append(f"do_center_crop=true (crop_size={crop}): HF crops the centre after resizing; its "
                     "rounding and crop offsets differ from vitkit's 'crop' policy, so it is not mapped; "
                     f"{instead}")
    if data.get("do_pad"):
        notes.append(f"do_pad=true (size_divisor={data.get('size_divisor')}): HF pads the image; "
                     "vitkit does not pad")
    return notes


def _aspect_note(data: dict[str, Any], hw: tuple[Any, Any], patch: int, instead: str) -> str:
    multiple = data.get("ensure_multiple_of", 1)
    return (f"keep_aspect_ratio=true, ensure_multiple_of={multiple}: HF scales by whichever of "
            f"{hw[0]}/h, {hw[1]}/w is closer to 1 (usually the shorter side to {hw[0]}, up or down) and "
            f"rounds each side to a multiple of {multiple}; {instead}"
            + ("" if multiple == patch else f" (patch {patch})"))
