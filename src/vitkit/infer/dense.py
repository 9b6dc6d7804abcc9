"""Depth and segmentation inference: the depth-estimation and image-segmentation pipelines, `vitkit depth`
and `vitkit segment` on top of them, and the colouring they use (numpy + Pillow only, on top of
`vitkit.viz.colormap`).

    vitkit.pipeline("depth-estimation", "runs/depth")(image)  # {"depth": (H, W) float32, "kind": ...}
    predict_depth_files("runs/depth", ["a.jpg"], "out/")  # out/a_depth.png (coloured) + a_depth.npy (raw)
    predict_segment_files("runs/seg", ["a.jpg"], "out/")   # out/a_overlay.png + a_mask.png (index PNG)

Images are resized as `Preprocess.dense_size` says (vitkit's models: the nearest multiple of the patch,
keeping the aspect ratio, longer side at most `max_side`; models imported from HF: the model's size, as HF
does), predicted, and the prediction resized back to the image's own size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import require
from .images import FileOutputs, write_each_image
from .pipeline import Pipeline, class_names

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


class DensePipeline(Pipeline):
    """A DPT on images of any size: each is resized as `Preprocess.dense_size` says, predicted (images of one
    input size share a forward pass), and the prediction resized back (bilinear) to the image's own size."""

    def predict(self, images: Sequence[Any], max_side: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(the image RGB uint8 (H, W, 3), its prediction at (H, W): depth (H, W) or logits (K, H, W))."""
        require(isinstance(max_side, int) and max_side >= 1,
                f"max_side must be an integer ≥ 1 (got {max_side!r})")
        patch = self.model.encoder.patch_size
        loaded = [self.preprocess.load_dense(image, patch, max_side) for image in images]
        preds: list[Tensor | None] = [None] * len(loaded)
        for shape in {tuple(x.shape) for _, x in loaded}:
            index = [i for i, (_, x) in enumerate(loaded) if tuple(x.shape) == shape]
            with self.running():
                out = self.model(torch.stack([loaded[i][1] for i in index]).to(self.device)).float()
            for i, pred in zip(index, out, strict=True):
                preds[i] = pred
        return [(rgb, _at_size(pred, rgb.shape[:2])) for (rgb, _), pred in zip(loaded, preds, strict=True)]


def _at_size(pred: Tensor, size: tuple[int, int]) -> np.ndarray:
    """depth (h, w) or logits (K, h, w) → the same at `size`, bilinear, float32 numpy."""
    x = pred[None, None] if pred.ndim == 2 else pred[None]  # (1, 1 | K, h, w)
    return F.interpolate(x, size=size, mode="bilinear").squeeze(0).squeeze(0).cpu().numpy()


class DepthPipeline(DensePipeline):
    """depth-estimation: ``{"depth": float32 (H, W) at the image's size, "kind": "depth" | "disparity"}``
    (what the head predicts, the model's `depth_output`); option ``colorize=True`` adds ``"image"``: RGB
    uint8, near = bright (`depth_image`)."""

    task = "depth-estimation"
    kinds = ("depth",)
    wanted = "a DPT depth model"
    defaults: ClassVar[dict[str, Any]] = {"max_side": 512, "colorize": False, "cmap": "magma"}

    def _run(self, images: Sequence[Any], options: dict[str, Any], first: int) -> list[Any]:
        kind = self.model.config.depth_output
        results = []
        for _, depth in self.predict(images, options["max_side"]):
            result = {"depth": depth.astype(np.float32), "kind": kind}
            if options["colorize"]:
                result["image"] = depth_image(result, options["cmap"])
            results.append(result)
        return results


def depth_image(result: dict[str, Any], cmap: str = "magma") -> np.ndarray:
    """A depth-estimation result coloured: RGB uint8 (H, W, 3), near = bright."""
    return colorize_depth(as_disparity(result["depth"], result["kind"]), cmap)


class SegmentationPipeline(DensePipeline):
    """image-segmentation: ``{"labels": int64 (H, W) class indices at the image's size, "class_names",
    "present": the names of the classes found, in index order, "overlay": RGB uint8 (H, W, 3)}`` (class
    colours blended over the image at option `alpha`)."""

    task = "image-segmentation"
    kinds = ("segment",)
    wanted = "a DPT segmentation model"
    defaults: ClassVar[dict[str, Any]] = {"max_side": 512, "alpha": 0.5}

    def labels(self) -> list[str]:
        return class_names(self.model.config.encoder.preprocess.label_names, self.model.config.num_classes)

    def _run(self, images: Sequence[Any], options: dict[str, Any], first: int) -> list[Any]:
        names, k = self.labels(), self.model.config.num_classes
        results = []
        for rgb, logits in self.predict(images, options["max_side"]):
            labels = logits.argmax(0).astype(np.int64)  # (K, H, W) → (H, W)
            results.append({"labels": labels, "class_names": names,
                            "present": [names[i] for i in np.unique(labels).tolist()],
                            "overlay": overlay_labels(rgb, labels, k, options["alpha"])})
        return results


def predict_depth_files(checkpoint: str | Path, images: Sequence[str | Path], out_dir: str | Path,
                        device: str = "cpu", max_side: int = 512, cmap: str = "magma") -> FileOutputs:
    """For each image (folders: the images under them): OUT/<stem>_depth.png (coloured, near = bright) and
    OUT/<stem>_depth.npy (the raw prediction, float32 (H, W): disparity or depth as the model's `depth_output`
    says). Returns the written paths; unreadable files are listed in `unreadable`."""
    from ..viz.colormap import save_png

    pipe = DepthPipeline.from_checkpoint(checkpoint, device=device, batch_size=1, max_side=max_side,
                                         colorize=True, cmap=cmap)

    def write(path: Path, prefix: Path) -> list[Path]:
        result = pipe(path)
        np.save(f"{prefix}_depth.npy", result["depth"])
        return [save_png(result["image"], f"{prefix}_depth.png"), Path(f"{prefix}_depth.npy")]

    return write_each_image(images, out_dir, write)


def predict_segment_files(checkpoint: str | Path, images: Sequence[str | Path], out_dir: str | Path,
                          device: str = "cpu", max_side: int = 512, alpha: float = 0.5) -> FileOutputs:
    """For each image (folders: the images under them): OUT/<stem>_overlay.png (class colours over the image)
    and OUT/<stem>_mask.png (a palette PNG whose pixel values are the class indices). Returns the written
    paths; unreadable files are listed in `unreadable`."""
    from PIL import Image

    from ..viz.colormap import save_png

    pipe = SegmentationPipeline.from_checkpoint(checkpoint, device=device, batch_size=1, max_side=max_side,
                                                alpha=alpha)
    k = pipe.model.config.num_classes

    def write(path: Path, prefix: Path) -> list[Path]:
        result = pipe(path)
        mask = Image.fromarray(result["labels"].astype(np.uint8), mode="P")
        mask.putpalette(label_palette(k).reshape(-1).tolist())
        mask.save(f"{prefix}_mask.png")
        return [save_png(result["overlay"], f"{prefix}_overlay.png"), Path(f"{prefix}_mask.png")]

    written = write_each_image(images, out_dir, write)
    names = pipe.model.config.encoder.preprocess.label_names
    if names:
        log.info("classes: %s", ", ".join(f"{i}={n}" for i, n in enumerate(names)))
    return written
