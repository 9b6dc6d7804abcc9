"""Evaluation preprocessing, once: any image → the model's normalised input, exactly as `vitkit eval`,
`vitkit predict` and `vitkit.pipeline` prepare it.

    pre = vitkit.transforms_for("runs/cls")        # or a model; the checkpoint's saved PreprocessConfig
    x = pre(Image.open("cat.jpg"))                 # float (C, H, W), normalised
    batch = pre(["a.jpg", array, tensor])          # float (B, C, H, W)

Two steps, each in one place:

1. `Preprocess.load`: an image of any kind → uint8 (C, h, w) at the *storage size*, with Pillow. Files are
   decoded as the datasets `vitkit eval` scores decode them (`decode_image`); Pillow images and arrays are
   brought to the model's channels by the same mode rules (grey, RGBA over white, palette).
2. `model_input`: a uint8 batch at storage size → the model's input, on any device (centre crop or resize,
   then normalisation). `vitkit eval` runs it on its batches.

The resize policy is the checkpoint's ``preprocess.resize`` (see `vitkit.config.PreprocessConfig`):

* ``"crop"``: the shorter side is scaled to ``max(H, W) / crop_pct`` (Pillow bicubic, as every decoded
  file), then (H, W) is centre-cropped: timm's evaluation transform.
* ``"squash"``: Pillow resizes the 8-bit image straight to W × H at ``preprocess.interpolation``, then
  rescales by 1/255 and normalises: what HF's (PIL-backend) image processors do, so a model imported from HF
  scores images as `transformers.pipeline` does. Files are decoded at full size first (no JPEG draft mode).

Accepted images (`INPUTS`): a path or an encoded file's bytes, a Pillow image, a numpy array (H, W) or
(H, W, C), a torch tensor (C, H, W) or (H, W, C) with C in 1, 3, 4; uint8, or float in [0, 1] (quantised to
8 bits, ``round(x · 255)``, as a decoded file is); a list of these, or a 4-D array/tensor, is a batch.

Shapes: B batch · C channels · (H, W) model input · (h, w) storage size.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, Dataset, IterableDataset

from ..config import PreprocessConfig, config_to_dict
from ..data.decode import UnreadableImage, convert_mode, decode_image, open_image, resize_image
from ..data.folder import ImageFolder, SkippedSample
from ..data.transforms import normalize, resize_images
from ..errors import UsageError, require

INPUTS = ("an image path (or its bytes), a PIL image, a numpy array (H, W[, C]), a torch tensor (C, H, W) or "
          "(H, W, C) (uint8, or float in [0, 1]), or a list of these")
log = logging.getLogger(__name__)
RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC}
WHITE = (255, 255, 255)


# ---- any image → Pillow ------------------------------------------------------------------------------------
class UnreadableInput(UnreadableImage, UsageError):
    """An image given to `Preprocess` or a pipeline that cannot be decoded: an `UnreadableImage` (so the
    commands that go through files log it and go on) and a `UsageError` (a one-line message, exit 2)."""


def split_inputs(inputs: Any) -> tuple[list[Any], bool]:
    """(the images `inputs` holds, whether it was one image rather than a list or a 4-D batch)."""
    if isinstance(inputs, (list, tuple)):
        return list(inputs), False
    if isinstance(inputs, (np.ndarray, Tensor)) and inputs.ndim == 4:
        return list(inputs), False
    return [inputs], True


def to_pil(image: Any, channels: int = 3, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """Any accepted image (see `INPUTS`) as a Pillow image of mode ``RGB`` (channels 3) or ``L`` (1).

    Raises:
        UsageError: not an image kind vitkit reads; the message lists the accepted ones.
        UnreadableImage, FileNotFoundError: a path that cannot be read.
    """
    if isinstance(image, (str, os.PathLike, bytes)):
        try:
            return open_image(image, channels=channels, background=background)
        except UnreadableImage as e:
            raise UnreadableInput(e.path, e.reason) from None
    if isinstance(image, Image.Image):
        return convert_mode(image, channels, background)
    if isinstance(image, Tensor):
        image = _tensor_to_hwc(image)
    if isinstance(image, np.ndarray):
        return convert_mode(Image.fromarray(_uint8_hwc(image)), channels, background)
    raise UsageError(f"cannot read a {type(image).__name__} as an image; give {INPUTS}")


def _tensor_to_hwc(image: Tensor) -> np.ndarray:
    image = image.detach().cpu()
    if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
        image = image.permute(1, 2, 0)  # (C, H, W) → (H, W, C)
    elif image.ndim == 3 and image.shape[-1] not in (1, 3, 4):
        raise UsageError(f"a tensor of shape {tuple(image.shape)} is not an image; give {INPUTS}")
    if image.dtype == torch.bfloat16 or image.dtype == torch.float16:
        image = image.float()
    return image.numpy()


def _uint8_hwc(array: np.ndarray) -> np.ndarray:
    """An array (H, W) or (H, W, C) as uint8 (H, W) / (H, W, C) with C in 3, 4 (one channel squeezed)."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))) or min(array.shape[:2]) < 1:
        raise UsageError(f"an array of shape {array.shape} is not an image; give {INPUTS}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.kind != "f":
        raise UsageError(f"an image array of dtype {array.dtype} is ambiguous; give uint8 (0..255) or "
                         "float in [0, 1]")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise UsageError(f"a float image must hold values in [0, 1] (got {np.nanmin(array):.4g}.."
                         f"{np.nanmax(array):.4g}); scale it, or give uint8")
    return np.ascontiguousarray(np.rint(array.astype(np.float64) * 255).astype(np.uint8))


# ---- storage size → model input ----------------------------------------------------------------------------
def storage_size(pre: PreprocessConfig, image_size: Sequence[int]) -> int | tuple[int, int]:
    """The size images are decoded at before `model_input`: "crop" → the side of a square, the model's longer
    side over ``crop_pct``; "squash" → the model's (H, W)."""
    if pre.resize == "squash":
        return int(image_size[0]), int(image_size[1])
    return round(max(image_size) / pre.crop_pct)


def model_input(images: Tensor, pre: PreprocessConfig, image_size: Sequence[int]) -> Tensor:
    """uint8 images (B, C, h, w) → the model's input (B, C, H, W): `fit_to_model`, then normalised."""
    return normalize(fit_to_model(images, pre, image_size), pre.mean, pre.std)


def fit_to_model(images: Tensor, pre: PreprocessConfig, image_size: Sequence[int]) -> Tensor:
    """Images (B, C, h, w) → (B, C, H, W), same dtype: "crop" scales them, keeping the aspect ratio, to cover
    (H, W) / crop_pct and centre-crops (H, W); "squash" resizes to (H, W). Nothing is resampled for images at
    `storage_size`."""
    h, w = image_size
    if pre.resize == "squash":
        size = (h, w)
    else:
        scale = max(h / pre.crop_pct / images.shape[-2], w / pre.crop_pct / images.shape[-1])
        size = (max(h, round(images.shape[-2] * scale)), max(w, round(images.shape[-1] * scale)))
    images = resize_images(images, size, pre.interpolation)  # returns `images` when already that size
    top, left = (size[0] - h) // 2, (size[1] - w) // 2
    return images[..., top:top + h, left:left + w]


@dataclass(frozen=True)
class Preprocess:
    """A model's evaluation preprocessing as a callable: any image or list of images → normalised float
    (C, H, W) or (B, C, H, W) on the CPU. Build it with `transforms_for`."""

    config: PreprocessConfig
    image_size: tuple[int, int]
    channels: int

    @property
    def storage_size(self) -> int | tuple[int, int]:
        return storage_size(self.config, self.image_size)

    def load(self, image: Any) -> Tensor:
        """One image (see `INPUTS`) → uint8 (C, h, w) at `storage_size`, ready for `model_input`."""
        size = self.storage_size
        if isinstance(image, (str, os.PathLike, bytes)) and self.config.resize == "crop":
            try:
                return decode_image(image, channels=self.channels, size=size)  # as the eval datasets decode
            except UnreadableImage as e:
                raise UnreadableInput(e.path, e.reason) from None
        return _to_tensor(resize_image(to_pil(image, self.channels), size, 1.0, self.resample))

    @property
    def resample(self) -> Image.Resampling:
        """Pillow's filter: "squash" → `interpolation` (as HF); "crop" → bicubic, as every decoded file."""
        squash = self.config.resize == "squash"
        return RESAMPLE[self.config.interpolation] if squash else Image.Resampling.BICUBIC

    def batch(self, images: Sequence[Any]) -> Tensor:
        """Images → uint8 (B, C, h, w) at `storage_size`."""
        return torch.stack([self.load(image) for image in images])

    def pixels(self, images: Sequence[Any]) -> Tensor:
        """Images → uint8 (B, C, H, W): what the model sees, before normalisation."""
        return fit_to_model(self.batch(images), self.config, self.image_size)

    def region(self, image_hw: tuple[int, int]) -> tuple[float, float, float, float]:
        """(top, left, height, width) of the part of an image of size `image_hw` that the model sees, in that
        image's pixels: all of it for "squash", the centre crop for "crop"."""
        if self.config.resize == "squash":
            return 0.0, 0.0, float(image_hw[0]), float(image_hw[1])
        side = self.storage_size  # `resize_image`: shorter side → side, centre square
        s = side / min(image_hw)
        top, left = ((max(side, round(n * s)) - side) // 2 for n in image_hw)
        h, w = self.image_size  # `fit_to_model` on the square
        scale = max(h, w) / self.config.crop_pct / side
        covered = max(h, round(side * scale)), max(w, round(side * scale))
        top2, left2 = (covered[0] - h) // 2, (covered[1] - w) // 2
        return (top + top2 / scale) / s, (left + left2 / scale) / s, h / scale / s, w / scale / s

    def __call__(self, inputs: Any) -> Tensor:
        """One image → float (C, H, W); a list or 4-D batch → float (B, C, H, W), normalised."""
        images, single = split_inputs(inputs)
        if not images:
            raise UsageError(f"no images given; give {INPUTS}")
        out = model_input(self.batch(images), self.config, self.image_size)
        return out[0] if single else out

    def dense_size(self, image_hw: tuple[int, int], patch: int, max_side: int) -> tuple[int, int]:
        """The input size (h, w) a dense model (DPT) reads an image of size `image_hw` at. Dense heads predict
        every pixel, so nothing is cropped: "squash" → the model's (H, W); "crop" → the aspect ratio kept,
        sides multiples of the patch, the longer side at most `max_side`."""
        if self.config.resize == "squash":
            return self.image_size
        scale = min(1.0, max_side / max(image_hw))
        h, w = (max(patch, round(side * scale / patch) * patch) for side in image_hw)
        return h, w

    def load_dense(self, image: Any, patch: int, max_side: int) -> tuple[np.ndarray, Tensor]:
        """One image → (the image as RGB uint8 (H, W, 3) at its own size, for display; the normalised model
        input (C, h, w) at `dense_size`)."""
        img = to_pil(image, self.channels)
        h, w = self.dense_size((img.height, img.width), patch, max_side)
        resized = _to_tensor(img if img.size == (w, h) else img.resize((w, h), self.resample))  # (C, h, w)
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
        return rgb, normalize(resized, self.config.mean, self.config.std)

    def to_dict(self) -> dict[str, Any]:
        """The preprocessing as plain data (JSON-serialisable), without the label names."""
        data = {k: v for k, v in config_to_dict(self.config).items() if k != "label_names"}
        return {**data, "image_size": list(self.image_size), "channels": self.channels}


def _to_tensor(img: Image.Image) -> Tensor:
    """A Pillow image (mode L or RGB) → uint8 (C, H, W), a writable copy (Pillow's arrays are read-only)."""
    array = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(np.array(array[None] if array.ndim == 2 else array.transpose(2, 0, 1)))


# ---- datasets decoded by a model's preprocessing ------------------------------------------------------
class PreprocessedImages(Dataset):
    """Samples of an image folder (by path) or an in-memory set (native sizes), each decoded by a model's
    `Preprocess.load`: for "squash" models, whose resize the datasets' square storage cannot express. An
    unreadable file is a `SkippedSample`, as in `ImageFolder`."""

    def __init__(self, dataset: Dataset, preprocess: Preprocess) -> None:
        self.dataset, self.preprocess = dataset, preprocess

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, int] | SkippedSample:
        if not isinstance(self.dataset, ImageFolder):
            image, target = self.dataset[index]
            return self.preprocess.load(image), target
        path, target = self.dataset.samples[index]
        try:
            return self.preprocess.load(path), target
        except (UnreadableImage, FileNotFoundError) as e:
            reason = e.reason if isinstance(e, UnreadableImage) else "no such file"
            log.warning("skipping unreadable image %s: %s", path, reason)
            return SkippedSample(str(path), reason)


def preprocessed(dataset: Dataset, preprocess: Preprocess) -> Dataset:
    """`dataset` (or each part of a ConcatDataset) as `PreprocessedImages`.

    Raises:
        UsageError: WebDataset shards (streamed; their images cannot be squashed one by one here).
    """
    if isinstance(dataset, ConcatDataset):
        return ConcatDataset([preprocessed(part, preprocess) for part in dataset.datasets])
    require(not isinstance(dataset, IterableDataset), "vitkit eval cannot score WebDataset shards with a "
            "model that squashes images (preprocess.resize 'squash'); export the images to a folder")
    return PreprocessedImages(dataset, preprocess)


# ---- which model, which preprocessing ---------------------------------------------------------------------
def vision_encoder(model: nn.Module) -> nn.Module:
    """The ViT that sees the image: the model itself, or its public `encoder` (MAE, MPP, DPT, linear probe).

    Raises:
        UsageError: the model has none (the message says what it is).
    """
    from ..models.vit import VisionTransformer
    from .images import describe_model

    if isinstance(model, VisionTransformer):
        return model
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, VisionTransformer):
        return encoder
    raise UsageError(f"the model is {describe_model(model)[0]}, without a ViT encoder to show")


def transforms_for(model_or_checkpoint: nn.Module | str | Path) -> Preprocess:
    """The exact evaluation preprocessing of a model, or of a checkpoint (anything ``--checkpoint`` takes),
    from its saved `PreprocessConfig`, image size and channels."""
    model = model_or_checkpoint
    if not isinstance(model, nn.Module):
        from .images import ENCODER_KINDS, load_model_for

        model, _ = load_model_for(model, ENCODER_KINDS, "a model with a ViT encoder")
    cfg = vision_encoder(model).config
    return Preprocess(cfg.preprocess, (int(cfg.image_size[0]), int(cfg.image_size[1])), cfg.in_chans)
