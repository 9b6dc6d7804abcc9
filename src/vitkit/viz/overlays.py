"""Attention overlays on input images: model + images → per-image maps → PNGs (numpy and Pillow only).

Methods (`ATTENTION_METHODS`):
  * ``rollout`` — attention rollout through every layer (Abnar & Zuidema), read on the patch grid;
  * ``cls`` — one layer's attention, heads averaged;
  * ``heads`` — one layer's attention, one map per head.
Each map is `analysis.patch_map` of the matrix: the [CLS] row, or for a model without [CLS] the mean attention
each patch receives (the captions say which).

Shapes: B batch · C channels · (H, W) image · (gh, gw) patch grid · K maps per image.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..data.decode import decode_image
from ..errors import require
from ..infer.images import ENCODER_KINDS, FileOutputs, load_model_for, map_images, write_each_image
from ..infer.preprocess import vision_encoder
from ..models.vit import VisionTransformer
from .analysis import attention_rollout, fuse_heads, patch_map, patch_map_title
from .colormap import add_caption, image_grid, overlay, save_png, to_rgb_uint8, upscale
from .record import record_attention

log = logging.getLogger(__name__)


@dataclass
class AttentionMaps:
    """maps (B, K, gh, gw) on the patch grid, one title per map, and the classifier's top-1 (class index,
    probability) per image (None for a model without a head)."""

    maps: Tensor
    titles: list[str]
    predictions: list[tuple[int, float]] | None


def normalize_images(images: Tensor, encoder: VisionTransformer) -> Tensor:
    """uint8 images (B, C, H, W) → float, standardised with the model's preprocess mean/std (a single-value
    mean/std is repeated over the channels)."""
    from ..data.transforms import normalize

    pre, C = encoder.config.preprocess, images.shape[1]
    mean = pre.mean[:C] if len(pre.mean) >= C else pre.mean * C
    std = pre.std[:C] if len(pre.std) >= C else pre.std * C
    return normalize(images, mean, std)


def load_images(paths: Sequence[str | os.PathLike], encoder: VisionTransformer) -> FileOutputs:
    """Decode image files to uint8 (C, H, W) at the model's input size and channel count, one per readable
    file; unreadable ones are logged and listed in `unreadable` (see `infer.images.map_images`)."""
    size = tuple(encoder.config.image_size)
    return map_images([Path(p) for p in paths],
                      lambda path: decode_image(path, channels=encoder.config.in_chans, size=size))


def _rollout(weights: list[Tensor], layer: int, fusion: str, discard: float) -> tuple[Tensor, list[str]]:
    return attention_rollout(weights, fusion, discard)[:, None], [f"rollout ({fusion}, discard {discard:g})"]


def _layer_mean(weights: list[Tensor], layer: int, fusion: str, discard: float) -> tuple[Tensor, list[str]]:
    return fuse_heads(weights[layer], fusion)[:, None], [f"layer {layer % len(weights)}, heads {fusion}"]


def _heads(weights: list[Tensor], layer: int, fusion: str, discard: float) -> tuple[Tensor, list[str]]:
    w = weights[layer]
    return w, [f"layer {layer % len(weights)}, head {h}" for h in range(w.shape[1])]


# name → f(weights per layer, layer, head fusion, discard ratio) -> (matrices (B, K, T, T), K titles)
ATTENTION_METHODS: dict[str, Callable[..., tuple[Tensor, list[str]]]] = {
    "rollout": _rollout, "cls": _layer_mean, "heads": _heads}


@torch.no_grad()
def compute_attention_maps(model: nn.Module, images: Tensor, method: str = "rollout", layer: int = -1,
                           head_fusion: str = "mean", discard_ratio: float = 0.0) -> AttentionMaps:
    """Run `model` on normalised images (B, C, H, W) and turn its attention into maps on the patch grid.

    Args:
        model: a ViT (hybrid included) or a model with a ViT `encoder` (MAE, DPT); its [CLS] / no-[CLS] layout
            decides what the maps show.
        images: float (B, C, H, W), already normalised; sides multiples of the patch size.
        method: one of ATTENTION_METHODS.
        layer: block for "cls" and "heads" (negative counts from the end).
        head_fusion, discard_ratio: for "rollout" (and the head average of "cls").
    """
    if method not in ATTENTION_METHODS:
        raise KeyError(f"unknown attention method {method!r}; choose from {', '.join(ATTENTION_METHODS)}")
    encoder = vision_encoder(model)
    depth = len(encoder.blocks)
    require(-depth <= layer < depth, f"layer {layer} is out of range: the encoder has {depth} blocks, so "
            f"--layer takes {-depth}..{depth - 1} (negative counts from the end)")
    grid = (images.shape[-2] // encoder.patch_size, images.shape[-1] // encoder.patch_size)
    was_training = model.training
    model.eval()
    try:
        with record_attention(encoder) as rec:
            tokens = encoder.forward_features(images)
        predictions = _top1(encoder, tokens) if model is encoder and encoder.config.num_classes > 0 else None
    finally:
        model.train(was_training)
    matrices, titles = ATTENTION_METHODS[method](rec.weights, layer, head_fusion, discard_ratio)
    P = encoder.num_prefix_tokens
    maps = patch_map(matrices, grid, P)  # (B, K, T, T) → (B, K, gh, gw)
    return AttentionMaps(maps.float().cpu(), [f"{t}: {patch_map_title(P)}" for t in titles], predictions)


def _top1(encoder: VisionTransformer, tokens: Tensor) -> list[tuple[int, float]]:
    probs = encoder.forward_head(tokens).float().softmax(dim=-1)  # (B, K)
    p, idx = probs.max(dim=-1)
    return list(zip(idx.tolist(), p.tolist(), strict=False))


def class_name(index: int, names: Sequence[str]) -> str:
    """names[index], or the index itself when there is no such name."""
    return names[index] if 0 <= index < len(names) else str(index)


def display_scale(image_hw: tuple[int, int], min_side: int = 224) -> int:
    """Integer nearest-neighbour factor making small images (e.g. 28×28 digits) at least `min_side` wide."""
    return max(1, -(-min_side // max(image_hw)))


def overlay_panel(image: np.ndarray, maps: np.ndarray, titles: Sequence[str], alpha: float = 0.55,
                  caption: str | None = None) -> np.ndarray:
    """The image, then one captioned overlay per map, in a row (a near-square grid for many heads).

    Args:
        image: (H, W, 3) uint8.
        maps: (K, gh, gw).
        titles: K titles "<map>: <what it shows>" (as `compute_attention_maps` gives them); each tile is
            captioned with <map>, and the panel with <what it shows>.
        caption: the input tile's caption (default "input").
    """
    base = upscale(image, display_scale(image.shape[:2]))
    tiles = [add_caption(base, caption or "input")]
    for values, title in zip(maps, titles, strict=False):
        tiles.append(add_caption(overlay(base, values, alpha), title.split(": ")[0]))
    cols = len(tiles) if len(tiles) <= 5 else int(np.ceil(np.sqrt(len(tiles))))
    panel = image_grid(tiles, cols=cols)
    shows = {t.split(": ", 1)[1] for t in titles if ": " in t}
    return add_caption(panel, "; ".join(sorted(shows)), height=16) if shows else panel


def save_attention_overlays(model: nn.Module | str | os.PathLike, paths: Sequence[str | os.PathLike],
                            out_dir: str | os.PathLike, method: str = "rollout", layer: int = -1,
                            head_fusion: str = "mean", discard_ratio: float = 0.9,
                            alpha: float = 0.55) -> FileOutputs:
    """`vitkit attention`: one PNG per image, ``OUT/<stem>_<method>.png``: the input, then its overlays.

    `model` is a model or a ``--checkpoint`` value (anything with a ViT encoder); folders in `paths` stand for
    the images under them. Images are resized to the model's input size. Returns the written paths;
    unreadable files are listed in `unreadable`.
    """
    if not isinstance(model, nn.Module):
        model, _ = load_model_for(model, ENCODER_KINDS, "a model with a ViT encoder")
    encoder = vision_encoder(model)
    device = next(model.parameters()).device
    size = tuple(encoder.config.image_size)
    log.info("attention maps show the %s", patch_map_title(encoder.num_prefix_tokens))

    def write(path: Path, prefix: Path) -> list[Path]:
        image = decode_image(path, channels=encoder.config.in_chans, size=size)  # uint8 (C, H, W)
        images = normalize_images(image[None], encoder).to(device)  # (1, C, H, W)
        result = compute_attention_maps(model, images, method, layer, head_fusion, discard_ratio)
        caption = None
        if result.predictions is not None:
            index, p = result.predictions[0]
            caption = f"pred {class_name(index, encoder.config.preprocess.label_names)} ({p:.0%})"
        panel = overlay_panel(to_rgb_uint8(image.numpy()), result.maps[0].numpy(), result.titles, alpha,
                              caption)
        return [save_png(panel, f"{prefix}_{method}.png")]

    return write_each_image(paths, out_dir, write)
