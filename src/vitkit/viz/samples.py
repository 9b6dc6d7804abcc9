"""Sample predictions of a run's best checkpoint on a few held-out images, with attention-rollout overlays.

Used by the run report. The held-out images come from the run's own data section (config.yaml) through
`vitkit.data.build_datasets`, so the split is the one training used; only the chosen samples are decoded.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .colormap import to_rgb_uint8
from .overlays import class_name, compute_attention_maps, normalize_images, overlay_panel, vision_encoder

log = logging.getLogger(__name__)

CHECKPOINT_NAMES = ("best", "last")


@dataclass
class SamplePrediction:
    """panel (H, W, 3) uint8 (image and overlay), caption, and whether the top-1 was right (None: unknown)."""

    panel: np.ndarray
    caption: str
    correct: bool | None


def find_checkpoint(run_dir: str | Path) -> Path | None:
    """RUN_DIR/checkpoints/best, else .../last, if it holds a config.json; None otherwise."""
    for name in CHECKPOINT_NAMES:
        path = Path(run_dir) / "checkpoints" / name
        if (path / "config.json").exists():
            return path
    return None


def _read_run_config(run_dir: Path) -> dict[str, Any]:
    import yaml

    path = run_dir / "config.yaml"
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    return data if isinstance(data, dict) else {}


def held_out_samples(data_section: dict[str, Any], channels: int, image_size: int,
                     count: int) -> tuple[list, list[str], str]:
    """Up to `count` (image uint8 (C, H, W), target) pairs spread evenly over the run's val split, decoded at the
    run's storage size (`image_size`, the model's side, when the run config leaves it unset, as training does).

    Returns:
        samples, class names, and a sentence saying where they came from.
    """
    from ..config import replace_config
    from ..data import DataConfig, build_datasets

    fields = {f.name for f in dataclasses.fields(DataConfig)}
    known = {k: v for k, v in data_section.items() if k in fields and k not in ("in_memory", "strict")}
    known["image_size"] = known.get("image_size") or image_size
    cfg = replace_config(DataConfig(), known, channels=channels, in_memory="never", strict=False)
    splits = build_datasets(cfg, progress=False)
    val = splits.val
    if val is None or len(val) == 0:
        return [], splits.classes, "The run holds no images out (val_fraction 0 and no val folder)."
    picks = np.unique(np.linspace(0, len(val) - 1, min(count, len(val))).round().astype(int))
    samples = [s for s in (val[int(i)] for i in picks) if isinstance(s, tuple)]  # drops unreadable files
    where = cfg.path or "the built-in default dataset"
    return samples, splits.classes, f"{len(samples)} of {len(val)} held-out images from {where}."


def sample_predictions(run_dir: str | Path, count: int = 8,
                       discard_ratio: float = 0.9) -> tuple[list[SamplePrediction], str]:
    """Predictions and attention-rollout overlays of the run's best (else last) checkpoint on held-out images.

    Returns:
        the samples (possibly none) and a note: where the images came from, or why there are none.
    """
    from ..data.transforms import resize_images
    from ..weights import load_pretrained

    run_dir = Path(run_dir)
    checkpoint = find_checkpoint(run_dir)
    if checkpoint is None:
        return [], "No checkpoint with a config.json under checkpoints/best or checkpoints/last."
    model = load_pretrained(checkpoint)
    try:
        encoder = vision_encoder(model)
    except TypeError as e:
        return [], f"Checkpoint {checkpoint.name}: {e}."
    data_section = _read_run_config(run_dir).get("data") or {}
    if not (model is encoder and encoder.config.num_classes > 0) and not data_section.get("path"):
        # A dense or self-supervised run on generated data: the default built-in set is not its data.
        return [], (f"The checkpoint is a {type(model).__name__}, not a classifier, and the run names no image "
                    f"folder, so no held-out images are shown (the run's own figures are below).")
    try:
        samples, classes, where = held_out_samples(data_section, encoder.config.in_chans,
                                                   encoder.config.image_size[0], count)
    except (FileNotFoundError, KeyError, ValueError, ImportError, OSError) as e:
        return [], f"The run's data could not be reached ({type(e).__name__}: {e}); no sample predictions."
    if not samples:
        return [], where
    images = torch.stack([s[0] for s in samples])  # uint8 (B, C, h, w)
    images = resize_images(images, encoder.config.image_size, "bilinear")  # (B, C, H, W); non-square models
    targets = [int(s[1]) for s in samples]
    result = compute_attention_maps(model, normalize_images(images, encoder), "rollout",
                                    head_fusion="mean", discard_ratio=discard_ratio)
    names = list(encoder.config.preprocess.label_names) or classes
    out = []
    for i, target in enumerate(targets):
        true = class_name(target, names)
        if result.predictions is None:
            caption, correct = f"true {true}", None
        else:
            index, p = result.predictions[i]
            caption = f"true {true} · predicted {class_name(index, names)} ({p:.0%})"
            correct = index == target
        panel = overlay_panel(to_rgb_uint8(images[i].numpy()), result.maps[i].numpy(), result.titles)
        out.append(SamplePrediction(panel, caption, correct))
    title = result.titles[0].split(": ", 1)[-1]
    return out, f"{where} Checkpoint: {checkpoint.name}. Overlays: attention rollout, {title}."
