"""Depth and segmentation inference on image files: `vitkit depth` and `vitkit segment` as library calls, plus
the colouring they use (numpy + Pillow only, on top of `vitkit.viz.colormap`).

    predict_depth_files("runs/depth", ["a.jpg"], "out/")  # out/a_depth.png (coloured) + a_depth.npy (raw)
    predict_segment_files("runs/seg", ["a.jpg"], "out/")   # out/a_overlay.png + a_mask.png (index PNG)

Images are resized to the nearest multiple of the patch (keeping the aspect ratio, longer side at most
`max_side`), predicted, and the prediction resized back to the file's own size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .images import FileOutputs, load_model_for, write_each_image

log = logging.getLogger(__name__)


def colorize_depth(values: np.ndarray, cmap: str = "magma") -> np.ndarray:
    """A depth or disparity map (H, W) → RGB uint8 (H, W, 3), scaled between its 2nd and 98th percentiles
    (non-finite pixels black)."""
    from ..viz.colormap import apply_colormap

    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros((*values.shape, 3), np.uint8)
    lo, hi = np.percentile(values[finite], [2, 98])
    rgb = apply_colormap(np.where(finite, values, lo), cmap, float(lo), float(max(hi, lo + 1e-12)))
    rgb[~finite] = 0
    return rgb


def as_disparity(values: np.ndarray, output: str) -> np.ndarray:
    """A depth head's output as something that grows towards the camera (for display): disparity as is,
    depth inverted."""
    return values if output == "disparity" else 1.0 / np.maximum(values, 1e-6)


def label_palette(num_classes: int) -> np.ndarray:
    """(K, 3) uint8 distinct colours: the turbo map at evenly spaced, shuffled positions (neighbours
    differ)."""
    from ..viz.colormap import colormap_lut

    lut = colormap_lut("turbo")
    order = np.argsort([(i * 0.61803398875) % 1.0 for i in range(num_classes)])
    positions = np.empty(num_classes, int)
    positions[order] = np.linspace(10, 245, num_classes).astype(int) if num_classes > 1 else [128]
    return lut[positions]


def colorize_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class indices (H, W) → RGB uint8; indices outside [0, K) (ignored pixels) are black."""
    palette = np.concatenate([label_palette(num_classes), np.zeros((1, 3), np.uint8)])
    labels = np.asarray(labels).astype(np.int64)
    return palette[np.where((labels >= 0) & (labels < num_classes), labels, num_classes)]


def overlay_labels(image: np.ndarray, labels: np.ndarray, num_classes: int, alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over an RGB uint8 image (H, W, 3) of the same size."""
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colorize_labels(labels, num_classes)
    return np.round(blended).astype(np.uint8)


def _model_input(image: np.ndarray, patch: int, max_side: int) -> torch.Tensor:
    """RGB uint8 (H, W, 3) → uint8 (1, 3, h, w), sides multiples of the patch, longer side ≤ max_side."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    th, tw = (max(patch, round(s * scale / patch) * patch) for s in (h, w))
    resized = np.asarray(Image.fromarray(image).resize((tw, th), Image.BICUBIC))
    return torch.from_numpy(np.array(resized)).permute(2, 0, 1)[None]


@torch.no_grad()
def predict_dense(model: nn.Module, image: np.ndarray, max_side: int = 512) -> np.ndarray:
    """Run a DPT on one RGB uint8 image (H, W, 3): depth (H, W) float32, or class logits (K, H, W), at the
    image's own size."""
    from ..data.transforms import normalize

    pre = model.config.encoder.preprocess
    device = next(model.parameters()).device
    images = normalize(_model_input(image, model.encoder.patch_size, max_side).to(device), pre.mean, pre.std)
    pred = model(images).float()
    if pred.ndim == 3:  # depth (1, h, w)
        return F.interpolate(pred[:, None], size=image.shape[:2], mode="bilinear")[0, 0].cpu().numpy()
    return F.interpolate(pred, size=image.shape[:2], mode="bilinear")[0].cpu().numpy()  # logits (K, H, W)


def _read(path: str | Path) -> np.ndarray:
    from ..data.decode import decode_array

    return np.ascontiguousarray(decode_array(path, channels=3).transpose(1, 2, 0))  # (3, H, W) → (H, W, 3)


def predict_depth_files(checkpoint: str | Path, images: Sequence[str | Path], out_dir: str | Path,
                        device: str = "cpu", max_side: int = 512, cmap: str = "magma") -> FileOutputs:
    """For each image (folders: the images under them): OUT/<stem>_depth.png (coloured, near = bright) and
    OUT/<stem>_depth.npy (the raw prediction, float32 (H, W): disparity or depth as the model's `depth_output`
    says). Returns the written paths; unreadable files are listed in `unreadable`."""
    from ..viz.colormap import save_png

    model, _ = load_model_for(checkpoint, ("depth",), "a DPT depth model", device)

    def write(path: Path, prefix: Path) -> list[Path]:
        depth = predict_dense(model, _read(path), max_side).astype(np.float32)
        np.save(f"{prefix}_depth.npy", depth)
        shown = colorize_depth(as_disparity(depth, model.config.depth_output), cmap)
        return [save_png(shown, f"{prefix}_depth.png"), Path(f"{prefix}_depth.npy")]

    return write_each_image(images, out_dir, write)


def predict_segment_files(checkpoint: str | Path, images: Sequence[str | Path], out_dir: str | Path,
                          device: str = "cpu", max_side: int = 512, alpha: float = 0.5) -> FileOutputs:
    """For each image (folders: the images under them): OUT/<stem>_overlay.png (class colours over the image)
    and OUT/<stem>_mask.png (a palette PNG whose pixel values are the class indices). Returns the written
    paths; unreadable files are listed in `unreadable`."""
    from PIL import Image

    from ..viz.colormap import save_png

    model, _ = load_model_for(checkpoint, ("segment",), "a DPT segmentation model", device)
    k = model.config.num_classes

    def write(path: Path, prefix: Path) -> list[Path]:
        image = _read(path)
        labels = predict_dense(model, image, max_side).argmax(0).astype(np.uint8)
        mask = Image.fromarray(labels, mode="P")
        mask.putpalette(label_palette(k).reshape(-1).tolist())
        mask.save(f"{prefix}_mask.png")
        return [save_png(overlay_labels(image, labels, k, alpha), f"{prefix}_overlay.png"),
                Path(f"{prefix}_mask.png")]

    written = write_each_image(images, out_dir, write)
    names = model.config.encoder.preprocess.label_names
    if names:
        log.info("classes: %s", ", ".join(f"{i}={n}" for i, n in enumerate(names)))
    return written
