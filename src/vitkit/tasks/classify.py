"""Classification from scratch (`vitkit train`): a model preset sized to the data, cross-entropy on
augmented batches (label smoothing, mixup and cutmix live in the augmentation's soft targets)."""

from __future__ import annotations

from typing import Any

from ..config import replace_config
from ..engine.augment import train_transform_for
from ..engine.trainer import Trainer
from ..models import build_model, get_model_config
from ..objectives import ClassificationObjective
from ..runconfig import TrainConfig
from .base import TaskParts, eval_split, held_out_summary, labelled_splits, log, set_cpu_threads


def build(cfg: TrainConfig) -> TaskParts:
    model_cfg = get_model_config(cfg.model, **cfg.model_args)
    if cfg.data.path is not None and model_cfg.in_chans == 1:
        log.warning("%s reads 1-channel images: colour images are converted to grey (choose an RGB model, "
                    "e.g. --model vit_tiny_patch4_32, for colour data)", cfg.model)
    size = cfg.data.image_size or model_cfg.image_size[0]
    cfg, splits = labelled_splits(cfg, model_cfg.in_chans, size)
    model_cfg = replace_config(model_cfg, {"image_size": (size, size), "num_classes": splits.num_classes,
                                           "preprocess.label_names": tuple(splits.classes)})
    set_cpu_threads(cfg.threads, model_cfg)
    model = build_model(model_cfg)
    train_tf = train_transform_for(cfg.augment, model_cfg.preprocess, splits.num_classes)
    val, eval_tf = eval_split(cfg, splits, model)
    return TaskParts(cfg, model, ClassificationObjective(), splits.train, val, train_tf, eval_tf, "acc1",
                     list(splits.classes))


def summarise(parts: TaskParts, trainer: Trainer, val: dict[str, float]) -> dict[str, Any]:
    """Held-out accuracy of the last weights, with flip test-time augmentation when the run trained on
    mirror images."""
    return held_out_summary(parts, trainer, flip_tta=parts.cfg.augment.hflip > 0)
