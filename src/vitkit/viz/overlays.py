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
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ..errors import require
from ..infer.images import ENCODER_KINDS, FileOutputs, map_images, write_each_image
from ..infer.pipeline import Pipeline, class_names
from ..infer.preprocess import fit_to_model, to_pil, transforms_for, vision_encoder
from ..models.vit import VisionTransformer
from .analysis import attention_rollout, fuse_heads, patch_map, patch_map_title
from .colormap import (
    add_caption,
    image_grid,
    normalize_map,
    overlay,
    resize_map,
    save_png,
    to_rgb_uint8,
    upscale,
)
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
    """Image files as the model sees them (`transforms_for`), uint8 (C, H, W), one per readable file;
    unreadable ones are logged and listed in `unreadable` (see `infer.images.map_images`)."""
    preprocess = transforms_for(encoder)
    return map_images([Path(p) for p in paths], lambda path: preprocess.pixels([path])[0])


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


class AttentionPipeline(Pipeline):
    """attention: each image → ``{"map": float32 (H, W) in [0, 1] at the image's size (0 outside the part the
    model sees when its preprocessing crops), "grid": [gh, gw], "patch_map": float32 (gh, gw) (the raw map
    on the patch grid), "overlay": RGB uint8 (H, W, 3), "titles": [what the map is: what it shows],
    "prediction": the classifier's top-1 {"label", "index", "score"} or None}``.

    Options: ``method`` "rollout" (through every layer) or "cls" (one layer); ``layer`` (for "cls", negative
    counts from the end); ``head`` (for "cls": one head; None = the heads' mean); ``discard_ratio``
    (rollout); ``alpha`` (overlay opacity). Models without [CLS] show the mean attention each patch receives
    (`analysis.patch_map`).
    """

    task = "attention"
    kinds = ENCODER_KINDS
    wanted = "a model with a ViT encoder"
    defaults: ClassVar[dict[str, Any]] = {"method": "rollout", "layer": -1, "head": None,
                                          "discard_ratio": 0.9, "alpha": 0.55}

    def attention(self, images: Sequence[Any], method: str, layer: int = -1, head_fusion: str = "mean",
                  discard_ratio: float = 0.9) -> tuple[list[Image.Image], Tensor, AttentionMaps]:
        """(the images as Pillow images at their own size, what the model sees: uint8 (B, C, H, W), and
        `compute_attention_maps` of it, for any of `ATTENTION_METHODS`)."""
        channels = self.preprocess.channels
        originals = [to_pil(image, channels) for image in images]
        pixels = fit_to_model(torch.stack([self.preprocess.load(image) for image in originals]),
                              self.preprocess.config, self.preprocess.image_size)  # (B, C, H, W)
        encoder = vision_encoder(self.model)
        with self.running():
            result = compute_attention_maps(self.model, normalize_images(pixels, encoder).to(self.device),
                                            method, layer, head_fusion, discard_ratio)
        return originals, pixels, result

    def _run(self, images: Sequence[Any], options: dict[str, Any], first: int) -> list[Any]:
        method, head = options["method"], options["head"]
        require(method in ("rollout", "cls"), f"method must be 'rollout' or 'cls' (got {method!r})")
        require(head is None or method == "cls", "head picks one head of one layer: use method='cls'")
        originals, _, result = self.attention(images, "heads" if head is not None else method,
                                              options["layer"], "mean", options["discard_ratio"])
        maps, titles = result.maps, result.titles
        if head is not None:
            require(isinstance(head, int) and -maps.shape[1] <= head < maps.shape[1],
                    f"head {head!r} is out of range: the layer has {maps.shape[1]} heads")
            maps, titles = maps[:, [head]], [titles[head]]
        names = self.labels()
        return [self._result(image, maps[b, 0].numpy(), titles, options["alpha"],
                             None if result.predictions is None else result.predictions[b], names)
                for b, image in enumerate(originals)]

    def _result(self, image: Image.Image, patch_values: np.ndarray, titles: list[str], alpha: float,
                prediction: tuple[int, float] | None, names: list[str]) -> dict[str, Any]:
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
        H, W = rgb.shape[:2]
        top, left, height, width = self.preprocess.region((H, W))
        y, x = min(H - 1, max(0, round(top))), min(W - 1, max(0, round(left)))
        h, w = min(H - y, max(1, round(height))), min(W - x, max(1, round(width)))
        full = np.zeros((H, W), np.float32)
        full[y:y + h, x:x + w] = resize_map(normalize_map(patch_values), (h, w))  # the part the model sees
        top1 = None if prediction is None else {"label": class_name(prediction[0], names),
                                                "index": prediction[0], "score": prediction[1]}
        return {"map": full, "grid": list(patch_values.shape), "patch_map": patch_values.astype(np.float32),
                "overlay": overlay(rgb, full, alpha), "titles": list(titles), "prediction": top1}

    def labels(self) -> list[str]:
        encoder = vision_encoder(self.model)
        k = encoder.config.num_classes if self.model is encoder else 0
        return class_names(encoder.config.preprocess.label_names, k)


def save_attention_overlays(model: nn.Module | str | os.PathLike, paths: Sequence[str | os.PathLike],
                            out_dir: str | os.PathLike, method: str = "rollout", layer: int = -1,
                            head_fusion: str = "mean", discard_ratio: float = 0.9,
                            alpha: float = 0.55) -> FileOutputs:
    """`vitkit attention`: one PNG per image, ``OUT/<stem>_<method>.png``: what the model sees (the image
    preprocessed as `transforms_for` says), then its overlays (one per head for "heads").

    `model` is a model or a ``--checkpoint`` value (anything with a ViT encoder); folders in `paths` stand for
    the images under them. Returns the written paths; unreadable files are listed in `unreadable`.
    """
    if isinstance(model, nn.Module):
        pipe = AttentionPipeline(model, device=next(model.parameters()).device)
    else:
        pipe = AttentionPipeline.from_checkpoint(model, device="cpu")
    names = pipe.labels()
    log.info("attention maps show the %s", patch_map_title(vision_encoder(pipe.model).num_prefix_tokens))

    def write(path: Path, prefix: Path) -> list[Path]:
        _, pixels, result = pipe.attention([path], method, layer, head_fusion, discard_ratio)
        caption = None
        if result.predictions is not None:
            index, p = result.predictions[0]
            caption = f"pred {class_name(index, names)} ({p:.0%})"
        panel = overlay_panel(to_rgb_uint8(pixels[0].numpy()), result.maps[0].numpy(), result.titles, alpha,
                              caption)
        return [save_png(panel, f"{prefix}_{method}.png")]

    return write_each_image(paths, out_dir, write)
