"""Self-supervised pretraining without labels (`vitkit pretrain`): MAE or the ViT paper's masked patch
prediction. Images get MAE's random resized crop and horizontal flip; RUN/encoder holds the encoder as a plain
ViT (MAE's fixed positions made learnable) for fine-tuning."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import torch

from ..config import config_to_dict, replace_config
from ..data import build_datasets
from ..data.datasets import resolve_data
from ..data.transforms import Augment, AugmentConfig
from ..engine.augment import eval_transform_for
from ..engine.trainer import Trainer
from ..errors import UsageError, require
from ..models import build_model, get_model_config
from ..models.mae import MAEConfig
from ..models.mpp import MPPConfig
from ..objectives.mae import MAEObjective
from ..objectives.mpp import MPPObjective
from ..runconfig import TrainConfig, default_augment
from ..weights import save_pretrained
from .base import TaskParts, replace_task, run_card, set_cpu_threads

METHODS = {"mae": MAEConfig, "mpp": MPPConfig}


def pretrain_augment(task: Any) -> AugmentConfig:
    """The augmentation pretraining runs: MAE's random resized crop (`task.crop_scale`) and flip, no label
    mixing or smoothing."""
    return AugmentConfig(crop_scale=task.crop_scale, hflip=0.5, interpolation="bicubic")


def build(cfg: TrainConfig) -> TaskParts:
    task = cfg.task
    model_cfg = get_model_config(cfg.model, **cfg.model_args)
    if not isinstance(model_cfg, METHODS[task.method]):
        raise UsageError(f"--model {cfg.model} is not an {task.method.upper()} model; use an {task.method}_* "
                         f"preset (`vitkit models '{task.method}*'`)")
    augment = pretrain_augment(task)
    if cfg.augment not in (default_augment(), augment):
        raise UsageError("pretraining does not read the augment section (it crops and flips as MAE does); "
                         "remove the augment.* settings, or set task.crop_scale")
    if task.method == "mae":
        ratio = model_cfg.mask_ratio if task.mask_ratio is None else task.mask_ratio
        require(0.0 <= ratio < 1.0, f"mask_ratio must be in [0, 1), got {ratio}")
        cfg = replace_task(cfg, mask_ratio=ratio)
    elif task.mask_ratio is not None:
        raise UsageError("--mask-ratio is MAE's; masked patch prediction corrupts 50% of the patches as the "
                         "ViT paper does (set the preset's corrupt_ratio through model_args instead)")
    encoder = model_cfg.encoder
    data = resolve_data(cfg.data, encoder.in_chans, encoder.image_size[0])
    cfg = dataclasses.replace(replace_config(cfg, {"data": config_to_dict(data)}), augment=augment)
    splits = build_datasets(data, progress=sys.stdout.isatty())
    set_cpu_threads(cfg.threads, encoder)
    objective = MAEObjective(cfg.task.mask_ratio) if task.method == "mae" else MPPObjective()
    pre = encoder.preprocess
    mae_augment = Augment(augment, num_classes=1, mean=pre.mean, std=pre.std)

    def train_transform(batch: Any, generator: torch.Generator) -> Any:
        images, targets = batch
        return mae_augment(images, torch.zeros_like(targets), generator)[0], targets

    return TaskParts(cfg, build_model(model_cfg), objective, splits.train, splits.val, train_transform,
                     eval_transform_for(pre), "loss", list(splits.classes), select_mode="min")


def summarise(parts: TaskParts, trainer: Trainer, val: dict[str, float]) -> dict[str, Any]:
    """The held-out loss, and the encoder exported to RUN/encoder."""
    card = run_card(parts.cfg, val, f"{parts.cfg.task.method.upper()} loss, held-out, epoch {trainer.epoch}")
    path = save_pretrained(trainer.export_model().export_encoder(), trainer.run.export("encoder"), card=card)
    return {"method": parts.cfg.task.method, "encoder": str(path)}
