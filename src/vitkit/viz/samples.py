"""A few held-out images of a run, and what its model makes of them: classifier predictions with
attention-rollout overlays, or MAE reconstructions.

Used by the run report. The held-out images come from the data section of the run's saved config through
`vitkit.data.build_datasets`, so the split is the one training used; only the chosen samples are decoded.
The model is the one ``--checkpoint RUN`` names (`vitkit.rundir.resolve_model_path`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import build_datasets
from ..data.transforms import resize_images
from ..errors import UsageError
from ..infer.images import data_config, load_classifier
from ..rundir import RunDir
from .colormap import to_rgb_uint8
from .overlays import class_name, compute_attention_maps, normalize_images, overlay_panel
from .reconstruction import load_mae, reconstruct, reconstruction_figure

log = logging.getLogger(__name__)

@dataclass
class SamplePrediction:
    """panel (H, W, 3) uint8 (image and overlay), caption, and whether the top-1 was right (None: unknown)."""

    panel: np.ndarray
    caption: str
    correct: bool | None


def held_out_samples(data_section: dict[str, Any], channels: int, image_size: int,
                     count: int) -> tuple[list, list[str], str]:
    """Up to `count` (image uint8 (C, H, W), target) pairs spread evenly over the run's val split, decoded at
    the run's storage size (`image_size`, the model's side, when the run config leaves it unset, as training
    does).

    Returns:
        samples, class names, and a sentence saying where they came from.
    """
    size = data_section.get("image_size") or image_size
    cfg = data_config(data_section, channels, size, in_memory="never")
    splits = build_datasets(cfg, progress=False)
    val = splits.val
    if val is None or len(val) == 0:
        return [], splits.classes, "The run holds no images out (val_fraction 0 and no val folder)."
    picks = np.unique(np.linspace(0, len(val) - 1, min(count, len(val))).round().astype(int))
    samples = [s for s in (val[int(i)] for i in picks) if isinstance(s, tuple)]  # drops unreadable files
    where = cfg.path or "the built-in default dataset"
    return samples, splits.classes, f"{len(samples)} of {len(val)} held-out images from {where}."


def _held_out_images(run: RunDir, encoder_cfg: Any, count: int) -> tuple[torch.Tensor | None, list[int], str]:
    """uint8 (B, C, H, W) held-out images of the run at the encoder's size, their targets and where they came
    from; None (and why) when the run holds nothing out.

    Raises:
        FileNotFoundError, KeyError, ...: the run's data cannot be reached (moved, renamed, deleted).
    """
    samples, _, where = held_out_samples(run.read_config().get("data") or {}, encoder_cfg.in_chans,
                                         encoder_cfg.image_size[0], count)
    if not samples:
        return None, [], where
    images = torch.stack([s[0] for s in samples])  # uint8 (B, C, h, w)
    return resize_images(images, encoder_cfg.image_size, "bilinear"), [int(s[1]) for s in samples], where


def sample_predictions(run_dir: str | Path, count: int = 8,
                       discard_ratio: float = 0.9) -> tuple[list[SamplePrediction], str]:
    """Predictions and attention-rollout overlays of the run's classifier on held-out images.

    Returns:
        the samples (none when the run has no classifier or holds no images out) and a note: where the images
        and the checkpoint came from, or why there are none.

    Raises:
        FileNotFoundError, KeyError, ...: the run's data cannot be reached.
    """
    run = RunDir(run_dir)
    try:
        classifier = load_classifier(run.root, "cpu")
    except UsageError as e:
        return [], f"No classifier to show: {e}"
    model, cfg = classifier.model, classifier.model.config
    images, targets, where = _held_out_images(run, cfg, count)
    if images is None:
        return [], where
    result = compute_attention_maps(model, normalize_images(images, model), "rollout", head_fusion="mean",
                                    discard_ratio=discard_ratio)
    names = classifier.label_names
    out = []
    for i, target in enumerate(targets):
        index, p = result.predictions[i]
        caption = f"true {class_name(target, names)} · predicted {class_name(index, names)} ({p:.0%})"
        panel = overlay_panel(to_rgb_uint8(images[i].numpy()), result.maps[i].numpy(), result.titles)
        out.append(SamplePrediction(panel, caption, index == target))
    title = result.titles[0].split(": ", 1)[-1]
    return out, f"{where} Checkpoint: {classifier.describe()}. Overlays: attention rollout, {title}."


def sample_reconstructions(run_dir: str | Path, count: int = 4,
                           seed: int = 0) -> tuple[list[np.ndarray], str]:
    """The MAE paper's four panels (original | masked | reconstruction | + visible) of held-out images, for a
    run whose model is an MAE (at its own mask ratio, a seeded mask).

    Returns:
        one (H, W, 3) uint8 figure per image (none for a run without an MAE or held-out images) and a note.
    """
    run = RunDir(run_dir)
    try:
        model = load_mae(run.root)
    except UsageError as e:
        return [], f"No MAE to show: {e}"
    images, _, where = _held_out_images(run, model.config.encoder, count)
    if images is None:
        return [], where
    rec = reconstruct(model, images, model.config.mask_ratio, seed)
    figures = [reconstruction_figure(rec, i) for i in range(images.shape[0])]
    return figures, f"{where} Mask ratio {model.config.mask_ratio:g}, mean loss {rec.loss:.4g}."
