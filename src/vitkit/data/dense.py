"""Dense (per-pixel) datasets and their joint augmentation.

Every dataset here yields dicts: ``images`` uint8 (3, H, W) and, by task, ``depth`` float32 (H, W) with
``valid`` bool (H, W) (False where depth is missing), or ``labels`` int64 (H, W) (`ignore_index` where
unlabelled). `get_batch(indices)` returns the same keys batched; `vitkit.data.ImageLoader` serves
them in the trainer's seeded order.

* `ShapesDense`: the built-in procedural scenes (`vitkit.data.shapes`), exact depth and labels, seeded.
* `DenseFolder`: ``root/images/*`` with ``root/depth/<stem>.png`` (16-bit, 0 = missing) or ``.npy``
  (non-finite or ≤ 0 = missing), and/or ``root/masks/<stem>.png`` (palette / grey index PNG).
* `load_motorcycle`: scikit-image's real Middlebury motorcycle stereo pair; depth ∝ 1 / disparity, +inf
  disparity holes become invalid pixels — a real-image sanity check of the depth path and its masks.

`DenseTransform` crops and flips image and targets jointly on the batch's device, then normalises the images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from .shapes import SHAPE_CLASSES, render_scenes
from .transforms import normalize

Task = Literal["depth", "segment"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class InMemoryDense:
    """Dense samples held as stacked tensors: a dict of (N, ...) tensors with the same N."""

    def __init__(self, tensors: dict[str, Tensor], class_names: tuple[str, ...] = ()) -> None:
        sizes = {k: v.shape[0] for k, v in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"dense tensors disagree on the sample count: {sizes}")
        self.tensors, self.class_names = tensors, class_names

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[index] for k, v in self.tensors.items()}

    def get_batch(self, indices: Tensor | Sequence[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {k: v[idx] for k, v in self.tensors.items()}


class ShapesDense(InMemoryDense):
    """`count` procedural scenes of `size`² pixels (scene i from seed (seed, i)); depth and labels both
    present."""

    def __init__(self, count: int, size: int = 64, seed: int = 0) -> None:
        images, depth, labels = render_scenes(count, size, seed)
        super().__init__({
            # (N, H, W, 3) → (N, 3, H, W)
            "images": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
            "depth": torch.from_numpy(depth),
            "valid": torch.ones(depth.shape, dtype=torch.bool),
            "labels": torch.from_numpy(labels).long(),
        }, SHAPE_CLASSES)


def _stems(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    return ({p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in suffixes}
            if folder.is_dir() else {})


def read_depth(path: Path, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Depth (H, W) float32 and validity (H, W) bool from a 16-bit PNG (value × `scale`, 0 = missing) or
    .npy."""
    from PIL import Image

    if path.suffix.lower() == ".npy":
        depth = np.load(path, allow_pickle=False).astype(np.float32)
    else:
        depth = np.asarray(Image.open(path)).astype(np.float32) * scale
    if depth.ndim != 2:
        raise ValueError(f"{path}: depth must be a single-channel map, got shape {depth.shape}")
    valid = np.isfinite(depth) & (depth > 0)
    return np.where(valid, depth, 0.0).astype(np.float32), valid


class DenseFolder(InMemoryDense):
    """A folder of dense pairs, decoded into memory (resized to `size` if given: images bilinear, targets
    nearest).

    Args:
        root: holds ``images/`` and ``depth/`` (task "depth") or ``masks/`` (task "segment").
        task: which targets to read; every image must have one (same file stem).
        size: (H, W) to resize every sample to; None requires all samples to share a size.
        depth_scale: multiplier for 16-bit PNG depth values (e.g. 0.001 for millimetres → metres).
        class_names: names of the mask indices (optional, for overlays).
    """

    def __init__(self, root: str | Path, task: Task, size: tuple[int, int] | None = None,
                 depth_scale: float = 1.0, class_names: tuple[str, ...] = ()) -> None:
        from PIL import Image

        root = Path(root)
        images = _stems(root / "images", IMAGE_SUFFIXES)
        if not images:
            raise FileNotFoundError(f"{root}/images has no images ({', '.join(IMAGE_SUFFIXES)})")
        folder = root / ("depth" if task == "depth" else "masks")
        targets = _stems(folder, (".png", ".npy") if task == "depth" else (".png",))
        missing = sorted(set(images) - set(targets))
        if missing:
            raise FileNotFoundError(f"{len(missing)} images have no target in {folder} (e.g. {missing[0]!r})")
        data: dict[str, list[np.ndarray]] = {}
        for stem, path in images.items():
            image = Image.open(path).convert("RGB")
            target_size = (size[1], size[0]) if size else image.size  # PIL sizes are (W, H)
            data.setdefault("images", []).append(np.asarray(image.resize(target_size, Image.BILINEAR)))
            if task == "depth":
                depth, valid = read_depth(targets[stem], depth_scale)
                data.setdefault("depth", []).append(_resize_nearest(depth, target_size))
                data.setdefault("valid", []).append(_resize_nearest(valid, target_size))
            else:
                mask = np.asarray(Image.open(targets[stem]))
                if mask.ndim != 2:
                    raise ValueError(f"{targets[stem]}: masks must be index (palette or grey) PNGs")
                data.setdefault("labels", []).append(_resize_nearest(mask, target_size).astype(np.int64))
        shapes = {a.shape[:2] for a in data["images"]}
        if len(shapes) > 1:
            raise ValueError(f"{root}: images have different sizes {sorted(shapes)[:3]}…; pass size=(H, W)")
        tensors = {k: torch.from_numpy(np.stack(v)) for k, v in data.items()}
        tensors["images"] = tensors["images"].permute(0, 3, 1, 2).contiguous()  # (N, H, W, 3) → (N, 3, H, W)
        super().__init__(tensors, class_names)


def _resize_nearest(array: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    h, w = array.shape
    if (w, h) == tuple(size_wh):
        return array
    rows = (np.arange(size_wh[1]) + 0.5) * h / size_wh[1]
    cols = (np.arange(size_wh[0]) + 0.5) * w / size_wh[0]
    return array[rows.astype(int).clip(0, h - 1)][:, cols.astype(int).clip(0, w - 1)]


def load_motorcycle(size: tuple[int, int] | None = (240, 352)) -> dict[str, Tensor]:
    """The Middlebury motorcycle (scikit-image) as a batch of one: images uint8 (1, 3, H, W), depth (1, H, W)
    = 1 / disparity (relative: the calibration is unknown here), valid (1, H, W) False at the +inf holes."""
    from PIL import Image
    from skimage.data import stereo_motorcycle

    left, _right, disparity = stereo_motorcycle()
    valid = np.isfinite(disparity) & (disparity > 0)
    depth = np.where(valid, 1.0 / np.where(valid, disparity, 1.0), 0.0).astype(np.float32)
    if size is not None:
        left = np.asarray(Image.fromarray(left).resize((size[1], size[0]), Image.BILINEAR))
        depth, valid = _resize_nearest(depth, (size[1], size[0])), _resize_nearest(valid, (size[1], size[0]))
    return {"images": torch.from_numpy(np.array(left)).permute(2, 0, 1)[None],
            "depth": torch.from_numpy(np.array(depth))[None],
            "valid": torch.from_numpy(np.array(valid))[None]}


class DenseTransform:
    """Joint random crop + horizontal flip of images and their maps, then normalisation: a batch transform
    ``(batch dict, generator) -> batch dict`` for the trainer.

    Args:
        mean, std: image normalisation.
        crop: (h, w) crop taken at a random place per sample (None: no crop); flip: random horizontal flips.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], crop: tuple[int, int] | None = None,
                 flip: bool = False) -> None:
        self.mean, self.std, self.crop, self.flip = tuple(mean), tuple(std), crop, flip

    def __call__(self, batch: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
        batch = dict(batch)
        maps = [k for k in ("images", "depth", "valid", "labels") if k in batch]
        n, (h, w) = batch["images"].shape[0], batch["images"].shape[-2:]
        dev = batch["images"].device
        if self.crop is not None and tuple(self.crop) != (h, w):
            ch, cw = self.crop
            if ch > h or cw > w:
                raise ValueError(f"crop {ch}×{cw} is larger than the images {h}×{w}")
            top = torch.randint(0, h - ch + 1, (n,), generator=generator, device=dev).tolist()
            left = torch.randint(0, w - cw + 1, (n,), generator=generator, device=dev).tolist()
            for k in maps:
                batch[k] = torch.stack([batch[k][i, ..., t:t + ch, x:x + cw] for i, (t, x) in
                                        enumerate(zip(top, left, strict=False))])
        if self.flip:
            flip = torch.rand(n, generator=generator, device=dev) < 0.5
            for k in maps:
                shape = (n,) + (1,) * (batch[k].ndim - 1)
                batch[k] = torch.where(flip.view(shape), batch[k].flip(-1), batch[k])
        batch["images"] = normalize(batch["images"], self.mean, self.std)
        return batch
