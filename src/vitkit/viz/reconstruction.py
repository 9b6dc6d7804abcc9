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

import numpy as np
import torch
from torch import Tensor

from ..data.decode import decode_image
from ..infer.images import FileOutputs, expand_images, load_model_for, map_images
from ..layers import patchify, unpatchify
from ..models.mae import MaskedAutoencoder
from .colormap import add_caption, image_grid, output_stems, save_png, upscale

PANELS = ("original", "masked", "reconstruction", "reconstruction + visible")
MASK_GREY = 0.45  # fill of hidden patches in the "masked" panel


@dataclass
class Reconstruction:
    """Images (B, C, H, W) in [0, 1] for each panel, and the mask (B, N), 1 = hidden."""

    original: Tensor
    masked: Tensor
    reconstruction: Tensor
    pasted: Tensor
    mask: Tensor
    loss: float


def _stats(preprocess, images: Tensor) -> tuple[Tensor, Tensor]:
    mean = torch.tensor(preprocess.mean, device=images.device).reshape(1, -1, 1, 1)
    std = torch.tensor(preprocess.std, device=images.device).reshape(1, -1, 1, 1)
    return mean, std


@torch.no_grad()
def reconstruct(model: MaskedAutoencoder, images: Tensor, mask_ratio: float = 0.75,
                seed: int = 0) -> Reconstruction:
    """Run `model` on images (B, C, H, W) in [0, 1] (uint8 also accepted) with a seeded mask.

    Returns the four panels in pixel space; the same `seed` gives the same mask for the same image count/size.
    """
    device = next(model.parameters()).device
    pixels = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    pixels = pixels.to(device)
    mean, std = _stats(model.config.encoder.preprocess, pixels)
    x = (pixels - mean) / std  # (B, C, H, W), the model's input space
    p = model.patch_size
    grid = (x.shape[-2] // p, x.shape[-1] // p)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(x.shape[0], grid[0] * grid[1], generator=generator).to(device)
    was_training = model.training
    model.eval()
    out = model(x, mask_ratio=mask_ratio, noise=noise)
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
                          out.mask.cpu(), out.loss.item())


def reconstruction_figure(rec: Reconstruction, index: int = 0, min_side: int = 160) -> np.ndarray:
    """One image's four panels side by side, captioned, at least `min_side` pixels high → (H, W, 3) uint8."""
    panels = [rec.original, rec.masked, rec.reconstruction, rec.pasted]
    h = rec.original.shape[-2]
    factor = max(1, -(-min_side // h))
    tiles = [add_caption(upscale(panel[index].numpy(), factor), title)
             for panel, title in zip(panels, PANELS, strict=False)]
    return image_grid(tiles, cols=len(tiles), pad=4)


def load_mae(checkpoint: str | Path, allow_pickle: Sequence[str] = ()) -> MaskedAutoencoder:
    """The MAE of a pretrain run directory, a checkpoint directory or file (what `load_pretrained` accepts).

    Raises:
        UsageError: the checkpoint holds another model (the message says what it is and what to use).
    """
    model, _ = load_model_for(checkpoint, ("mae",), "an MAE with its decoder (reconstructions need the full "
                              "pretraining checkpoint)", allow_pickle=allow_pickle)
    return model


def save_reconstructions(model: MaskedAutoencoder | str | Path, image_paths: Sequence[str | Path],
                         out_dir: str | Path, mask_ratio: float = 0.75, seed: int = 0,
                         allow_pickle: Sequence[str] = ()) -> FileOutputs:
    """Write ``out_dir/<image stem>_mae.png`` (the four-panel figure) for each image, folders standing for the
    images under them; returns the paths (stems that collide get their folder names, `output_stems`), and
    lists unreadable files in `unreadable`.

    `model` is an MAE or a checkpoint for `load_mae`. Images are resized (shorter side) and centre-cropped to
    the encoder's image size.
    """
    if not isinstance(model, MaskedAutoencoder):
        model = load_mae(model, allow_pickle)
    size = model.config.encoder.image_size
    channels = model.config.encoder.in_chans
    side = size[0] if size[0] == size[1] else size
    decoded = map_images(expand_images(image_paths),
                         lambda path: (path, decode_image(path, channels=channels, size=side)))
    if not decoded:
        return FileOutputs((), decoded.unreadable)
    rec = reconstruct(model, torch.stack([image for _, image in decoded]), mask_ratio, seed)
    written = [save_png(reconstruction_figure(rec, i), Path(out_dir) / f"{stem}_mae.png")
               for i, stem in enumerate(output_stems([path for path, _ in decoded]))]
    return FileOutputs(written, decoded.unreadable)
