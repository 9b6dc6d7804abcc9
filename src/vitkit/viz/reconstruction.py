"""MAE reconstructions, drawn as in the MAE paper's figures: original | masked | reconstruction |
reconstruction with the visible patches pasted back.

With `norm_pix_loss` the decoder predicts each patch normalised by its own mean and variance, so predictions
are brought back to pixels with the statistics of the true patch (mean and unbiased std of the target patch in
the model's normalised input space, as the MAE-pytorch visualisation does); the reconstruction then shows the
predicted structure inside each patch, its overall colour taken from the image. Without `norm_pix_loss` the
predictions are pixels already. Either way they are un-normalised with the encoder's preprocess mean/std.

Drawn with numpy and Pillow only. Shapes: B batch · C channels · N patches · p patch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import require
from ..infer.images import FileOutputs, expand_images, load_model_for, map_images
from ..infer.pipeline import Pipeline
from ..layers import patchify, unpatchify
from ..models.mae import MaskedAutoencoder
from .colormap import add_caption, image_grid, output_stems, save_png, to_rgb_uint8, upscale

PANELS = {"original": "original", "masked": "masked", "reconstruction": "reconstruction",
          "reconstruction_visible": "reconstruction + visible"}  # result key → caption
MASK_GREY = 0.45  # fill of hidden patches in the "masked" panel


@dataclass
class Reconstruction:
    """Images (B, C, H, W) in [0, 1] for each panel, the mask (B, N), 1 = hidden, the batch's loss and each
    image's (`MaskedAutoencoder.forward_loss` of the image alone)."""

    original: Tensor
    masked: Tensor
    reconstruction: Tensor
    pasted: Tensor
    mask: Tensor
    loss: float
    losses: list[float]

    def panels(self, index: int) -> dict[str, np.ndarray]:
        """Image `index`'s panels as RGB uint8 (H, W, 3), keyed as `PANELS`."""
        images = (self.original, self.masked, self.reconstruction, self.pasted)
        return {key: to_rgb_uint8(panel[index].numpy()) for key, panel in zip(PANELS, images, strict=True)}


def _stats(preprocess, images: Tensor) -> tuple[Tensor, Tensor]:
    mean = torch.tensor(preprocess.mean, device=images.device).reshape(1, -1, 1, 1)
    std = torch.tensor(preprocess.std, device=images.device).reshape(1, -1, 1, 1)
    return mean, std


@torch.no_grad()
def reconstruct(model: MaskedAutoencoder, images: Tensor, mask_ratio: float = 0.75,
                seed: int = 0) -> Reconstruction:
    """Run `model` on images (B, C, H, W) in [0, 1] (uint8 also accepted) with a seeded mask.

    Returns the four panels in pixel space; image b's mask is drawn from seed ``seed + b``, so the same seed
    gives the same mask for an image of the same size at the same place.
    """
    device = next(model.parameters()).device
    pixels = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    pixels = pixels.to(device)
    mean, std = _stats(model.config.encoder.preprocess, pixels)
    x = (pixels - mean) / std  # (B, C, H, W), the model's input space
    p = model.patch_size
    grid = (x.shape[-2] // p, x.shape[-1] // p)
    noise = torch.stack([torch.rand(grid[0] * grid[1], generator=torch.Generator().manual_seed(seed + b))
                         for b in range(x.shape[0])]).to(device)  # (B, N)
    was_training = model.training
    model.eval()
    out = model(x, mask_ratio=mask_ratio, noise=noise)
    losses = [model.forward_loss(x[b:b + 1], out.pred[b:b + 1], out.mask[b:b + 1]).item()
              for b in range(x.shape[0])]
    model.train(was_training)
    pred = out.pred.float()  # (B, N, p·p·C)
    if model.config.norm_pix_loss:
        target = patchify(x, p)
        pred = pred * (target.var(dim=-1, keepdim=True) + 1e-6) ** 0.5 + target.mean(dim=-1, keepdim=True)
    C = x.shape[1]
    recon = unpatchify(pred, p, grid, C) * std + mean  # (B, C, H, W) pixels
    hidden = unpatchify(out.mask[..., None].expand(-1, -1, p * p * C), p, grid, C)  # (B, C, H, W), 1 = hidden
    masked = pixels * (1 - hidden) + MASK_GREY * hidden
    pasted = pixels * (1 - hidden) + recon * hidden
    return Reconstruction(pixels.cpu(), masked.cpu(), recon.clamp(0, 1).cpu(), pasted.clamp(0, 1).cpu(),
                          out.mask.cpu(), out.loss.item(), losses)


def reconstruction_figure(rec: Reconstruction | dict[str, Any], index: int = 0,
                          min_side: int = 160) -> np.ndarray:
    """One image's four panels side by side, captioned, at least `min_side` pixels high → (H, W, 3) uint8.

    `rec` is a `Reconstruction` (`index` picks the image) or one mae-reconstruction pipeline result."""
    panels = rec.panels(index) if isinstance(rec, Reconstruction) else rec
    factor = max(1, -(-min_side // panels["original"].shape[0]))
    tiles = [add_caption(upscale(panels[key], factor), caption) for key, caption in PANELS.items()]
    return image_grid(tiles, cols=len(tiles), pad=4)


def load_mae(checkpoint: str | Path, allow_pickle: Sequence[str] = ()) -> MaskedAutoencoder:
    """The MAE of a pretrain run directory, a checkpoint directory or file (what `load_pretrained` accepts).

    Raises:
        UsageError: the checkpoint holds another model (the message says what it is and what to use).
    """
    model, _ = load_model_for(checkpoint, ("mae",), "an MAE with its decoder (reconstructions need the full "
                              "pretraining checkpoint)", allow_pickle=allow_pickle)
    return model


class ReconstructionPipeline(Pipeline):
    """mae-reconstruction: each image → its four panels as RGB uint8 (H, W, 3), ``{"original", "masked",
    "reconstruction", "reconstruction_visible", "loss"}``, at the model's input size (the image preprocessed
    as `transforms_for` says). Options: ``mask_ratio`` (default: the model's), ``seed`` (image i of a call is
    masked with seed + i)."""

    task = "mae-reconstruction"
    kinds = ("mae",)
    wanted = "an MAE with its decoder (reconstructions need the full pretraining checkpoint)"

    def __init__(self, model: nn.Module, **kwargs: Any) -> None:
        ratio = model.config.mask_ratio if isinstance(model, MaskedAutoencoder) else 0.75
        self.defaults = {"mask_ratio": ratio, "seed": 0}
        super().__init__(model, **kwargs)

    def _run(self, images: Sequence[Any], options: dict[str, Any], first: int) -> list[Any]:
        ratio, seed = options["mask_ratio"], options["seed"]
        require(isinstance(ratio, (int, float)) and 0 <= ratio < 1,
                f"mask_ratio must be in [0, 1) (got {ratio!r})")
        require(isinstance(seed, int), f"seed must be an integer (got {seed!r})")
        with self.running():
            rec = reconstruct(self.model, self.preprocess.pixels(images), float(ratio), seed + first)
        return [{**rec.panels(b), "loss": rec.losses[b]} for b in range(len(images))]


def save_reconstructions(model: MaskedAutoencoder | str | Path, image_paths: Sequence[str | Path],
                         out_dir: str | Path, mask_ratio: float = 0.75, seed: int = 0,
                         allow_pickle: Sequence[str] = ()) -> FileOutputs:
    """Write ``out_dir/<image stem>_mae.png`` (the four-panel figure) for each image, folders standing for the
    images under them; returns the paths (stems that collide get their folder names, `output_stems`), and
    lists unreadable files in `unreadable`.

    `model` is an MAE or a checkpoint for `load_mae`. Images are preprocessed as the model's
    `transforms_for` says (crop or squash to the encoder's image size); image i is masked with seed + i.
    """
    if not isinstance(model, MaskedAutoencoder):
        model = load_mae(model, allow_pickle)
    pipe = ReconstructionPipeline(model, device=next(model.parameters()).device)
    decoded = map_images(expand_images(image_paths), lambda path: (path, pipe.preprocess.load(path)))
    if not decoded:
        return FileOutputs((), decoded.unreadable)
    results = pipe([image for _, image in decoded], mask_ratio=mask_ratio, seed=seed)
    written = [save_png(reconstruction_figure(result), Path(out_dir) / f"{stem}_mae.png")
               for result, stem in zip(results, output_stems([path for path, _ in decoded]), strict=True)]
    return FileOutputs(written, decoded.unreadable)
