"""The task contract: what every task hands the runner, and the pieces the labelled tasks share.

A task module (classify, dense, pretrain, finetune, linprobe) has two functions:

* ``build(cfg) -> TaskParts``: the model, objective, data and transforms the run config asks for, and the
  *resolved* config (what will actually run: model, channels, storage size, absolute data path, mask ratio,
  ...), which the Trainer saves as RUN/config.yaml.
* ``summarise(parts, trainer, val) -> dict``: the held-out figures after training (`val`: the Trainer's
  last evaluation), and any exported model. It runs on rank 0 alone, so it must not call anything
  collective (such as `Trainer.evaluate`).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import config_to_dict, flatten_config, replace_config
from ..data import DataSplits, ImageFolder, InMemoryImages, build_datasets, split_indices
from ..data.datasets import resolve_data
from ..engine.metrics import classification_summary
from ..engine.trainer import BatchTransform, Trainer
from ..errors import UsageError, require
from ..infer.images import FlipTTA, eval_splits, input_transform, predict_logits
from ..infer.preprocess import transforms_for
from ..model_card import METRIC_NAMES, ModelCard, write_model_card
from ..models import ViTConfig
from ..models.summary import vit_forward_flops
from ..runconfig import TrainConfig

log = logging.getLogger(__name__)

# the settings a model card lists as the recipe (those present and set)
RECIPE_KEYS = ("model", "task.kind", "task.method", "task.mask_ratio", "task.pool", "task.label_fraction",
               "epochs", "batch_size", "optim.lr", "optim.weight_decay", "optim.warmup_epochs",
               "optim.layer_decay", "optim.ema_decay", "augment.crop_scale", "augment.hflip",
               "augment.auto_augment", "augment.mixup_alpha", "augment.cutmix_alpha",
               "augment.label_smoothing", "data.image_size", "seed")


@dataclass
class TaskParts:
    """Everything the Trainer needs for one run, and the config that describes it exactly."""

    cfg: TrainConfig  # resolved: saved as RUN/config.yaml
    model: nn.Module
    objective: Any
    train: Any
    val: Any
    train_transform: BatchTransform | None = None
    eval_transform: BatchTransform | None = None
    select: str = "acc1"  # validation metric that picks checkpoints/best
    classes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # task facts for the summary (train_images, ...)
    # (held-out images, their transform) for the final figures when `val` holds something else (features)
    val_images: tuple[Any, BatchTransform] | None = None
    select_mode: str = "max"  # "max" (accuracy, mIoU) or "min" (a loss)


def labelled_splits(cfg: TrainConfig, channels: int,
                    image_size: int | None) -> tuple[TrainConfig, DataSplits]:
    """(cfg with its data section resolved, the decoded splits), refusing data no classifier can learn from:
    fewer than 2 classes, or a class without a readable training image."""
    data = resolve_data(cfg.data, channels, image_size)
    splits = build_datasets(data, progress=sys.stdout.isatty())
    require_classes(splits, data.path)
    return replace_config(cfg, {"data": config_to_dict(data)}), splits


def require_classes(splits: DataSplits, where: str | None) -> None:
    """Raise `UsageError` for a set with fewer than 2 classes or a class with no training image."""
    layout = ("expected DATA/<class>/<image> (or DATA/train/<class>/ + DATA/val/<class>/) "
              "with 2 or more classes")
    if splits.num_classes < 2:
        found = f"one class, {splits.classes[0]!r}" if splits.classes else "no class folders"
        raise UsageError(f"--data {where}: found {found}; a classifier needs 2 or more; {layout}")
    if isinstance(splits.train, torch.utils.data.IterableDataset):
        return  # shards are streamed: their classes are only seen while training
    counts = torch.bincount(torch.as_tensor(targets_of(splits.train)), minlength=splits.num_classes)
    empty = [name for name, n in zip(splits.classes, counts.tolist(), strict=False) if n == 0]
    if empty:
        raise UsageError(f"--data {where}: class(es) {', '.join(map(repr, empty))} have no readable training "
                         f"image; add images or remove the folder(s); {layout}")


def targets_of(dataset: Any) -> list[int]:
    """Class index of every sample of a labelled dataset (in memory, a folder, or a subset of one)."""
    if isinstance(dataset, InMemoryImages):
        return dataset.targets.tolist()
    if isinstance(dataset, torch.utils.data.Subset):
        inner = targets_of(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    if hasattr(dataset, "samples"):
        return [int(t) for _, t in dataset.samples]
    raise UsageError(f"a {type(dataset).__name__} cannot be split by class; give an image folder or a "
                     "built-in set")


def labelled_subset(dataset: Any, fraction: float, seed: int = 0) -> Any:
    """A class-stratified `fraction` of `dataset` (seeded); the dataset itself when fraction is 1."""
    require(0.0 < fraction <= 1.0, f"label_fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return dataset
    _, keep = split_indices(targets_of(dataset), fraction, seed)
    if isinstance(dataset, InMemoryImages):
        index = torch.as_tensor(keep)
        return InMemoryImages(dataset.images[index], dataset.targets[index], dataset.classes)
    return torch.utils.data.Subset(dataset, list(keep))


def eval_split(cfg: TrainConfig, splits: DataSplits, model: nn.Module) -> tuple[Any, BatchTransform]:
    """(held-out images, batch transform) as `vitkit eval RUN` reads them: with the model's evaluation
    preprocessing (`vitkit.transforms_for`: size, crop_pct or squash, interpolation), so the val figures a
    run logs, picks its best checkpoint by and summarises are the ones `vitkit eval` reproduces.

    Training decodes every image at the storage size (shorter side to ``data.image_size``, centre square).
    Where the model reads images otherwise (crop_pct below 1, "squash", another size), the held-out images
    are decoded again as `eval_splits` decodes them (in memory when the training split is). Streamed
    WebDataset shards cannot be squashed one by one: for a squash model on shards the storage images are
    scored, with a warning."""
    pre = transforms_for(model)
    transform = input_transform(pre)
    if splits.val is None or (pre.config.resize == "crop" and pre.storage_size == cfg.data.image_size):
        return splits.val, transform  # decoded as `vitkit eval` decodes: fit_to_model resamples nothing
    try:
        held_out = eval_splits(config_to_dict(cfg.data), pre, in_memory="never").val
    except UsageError as e:
        log.warning("the held-out figures use the training storage (centre squares), not the model's "
                    "preprocessing: %s", e)
        return splits.val, transform
    if isinstance(splits.val, InMemoryImages) and isinstance(held_out, ImageFolder):
        held_out = held_out.load(cfg.data.decode_workers, progress=False)
    c = pre.config
    log.info("held-out images decoded as the model reads them (%s, crop_pct %g, %s, %s), not at the "
             "training storage size %s", c.resize, c.crop_pct, c.interpolation,
             "×".join(map(str, pre.image_size)), cfg.data.image_size)
    return held_out, transform


def held_out_summary(parts: TaskParts, trainer: Trainer, flip_tta: bool = False) -> dict[str, Any]:
    """``val`` (acc1, acc5, per-class accuracy, confusion) of the last weights on the held-out images, and
    ``val_flip_tta`` (acc1, acc5 of `FlipTTA`) when asked; {} without a held-out split."""
    dataset, transform = parts.val_images or (parts.val, parts.eval_transform)
    if dataset is None:
        return {}
    def scores(model: nn.Module) -> dict[str, Any]:
        logits, targets = predict_logits(model, dataset, transform, trainer.device, parts.cfg.amp,
                                         parts.cfg.batch_size)
        return classification_summary(logits, targets, list(parts.classes))

    out: dict[str, Any] = {"val": scores(trainer.model)}
    if flip_tta:
        tta = scores(FlipTTA(trainer.model))
        out["val_flip_tta"] = {"acc1": tta["acc1"], "acc5": tta["acc5"]}
    return out


def set_cpu_threads(threads: int | None, model_cfg: Any) -> None:
    """Apply `TrainConfig.threads` (None: one thread for a ViT under 50 MFLOPs per image, else torch's
    default; a hybrid's ResNet trunk is never that small)."""
    small = (isinstance(model_cfg, ViTConfig) and model_cfg.backbone is None
             and vit_forward_flops(model_cfg) < 5e7)
    if threads is None and small:
        threads = 1
    if threads is not None:
        require(threads >= 1, f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
        log.info("using %d CPU thread%s", threads, "" if threads == 1 else "s")


def replace_task(cfg: TrainConfig, **changes: Any) -> TrainConfig:
    """`cfg` with fields of its task section changed."""
    return dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, **changes))


def run_card(cfg: TrainConfig, metrics: dict[str, Any], note: str) -> ModelCard:
    """The model card facts of a run: its data (a folder by name: no local paths), recipe, and the held-out
    `metrics` (those with a known name; an EMA's ``ema_`` prefix dropped) for the weights `note` names."""
    data = cfg.data.path or "builtin"
    dataset = data if data.startswith("builtin:") or "://" in data else data.rstrip("/").rpartition("/")[2]
    flat = flatten_config(config_to_dict(cfg))
    recipe = {k: flat[k] for k in RECIPE_KEYS if flat.get(k) not in (None, "", [], ())}
    figures = {k.removeprefix("ema_"): float(v) for k, v in metrics.items()
               if k.removeprefix("ema_") in METRIC_NAMES and isinstance(v, (int, float))}
    init = getattr(cfg.task, "init", None) or getattr(cfg.task, "init_encoder", None)
    return ModelCard(dataset=dataset, metrics=figures, metrics_note=note if figures else "", recipe=recipe,
                     base_model=init)


def write_checkpoint_cards(parts: TaskParts, trainer: Trainer, val: dict[str, Any]) -> None:
    """Model cards with the run's facts in RUN/checkpoints/last (the last evaluation) and best (its score)."""
    params = sum(p.numel() for p in parts.model.parameters())
    config = parts.model.config
    best = {trainer.select: trainer.best} if trainer.best is not None else {}
    for name, metrics, note in (("last", val, f"held-out, epoch {trainer.epoch}"),
                                ("best", best, f"held-out, best epoch {trainer.best_epoch}")):
        folder = trainer.run.checkpoint(name)
        if (folder / "config.json").is_file():
            write_model_card(folder, config, params, run_card(parts.cfg, metrics, note))
