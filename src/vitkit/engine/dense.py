"""Dense tasks (depth, segmentation) on the shared Trainer: ``train_dense(TrainConfig(...), DenseConfig())``.

data (built-in procedural scenes, or a dense folder) → DPT preset (or one initialised from a ViT / MAE encoder
checkpoint) → DepthObjective / SegmentationObjective → Trainer.fit with separate encoder / decoder learning
rates → summary (held-out depth metrics, or dataset mIoU / pixel accuracy) in DIR/summary.json and example
predictions in DIR/figures/dense_examples.png. `build_dense_task` hands back the pieces for callers that run
their own Trainer.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import replace_config
from ..data.dense import (
    DenseFolder,
    DenseLoader,
    DenseTransform,
    InMemoryDense,
    ShapesDense,
)
from ..data.shapes import SHAPE_CLASSES
from ..models import build_model, get_model_config
from ..models.dpt import DPT, dpt_from_encoder
from ..objectives.depth import DepthObjective
from ..objectives.segmentation import SegmentationObjective, evaluate_segmentation
from .config import TrainConfig
from .dense_config import DenseConfig
from .optim import build_optimizer
from .trainer import Trainer, seed_everything

log = logging.getLogger(__name__)

DEFAULT_MODELS = {"depth": "dpt_tiny_depth", "segment": "dpt_tiny_segment"}


@dataclass
class DenseTask:
    """Everything the Trainer needs for one dense run."""

    model: nn.Module
    objective: Any
    train_data: Any
    val_data: Any
    train_transform: DenseTransform
    eval_transform: DenseTransform
    select: str
    class_names: tuple[str, ...] = ()


def build_dense_data(cfg: TrainConfig, dense: DenseConfig, size: int) -> tuple[InMemoryDense, InMemoryDense]:
    """(train, val): the built-in scenes (seeds 0 and 1, so the sets never share a scene), or a dense folder
    with DATA/train and DATA/val, or one folder split by data.val_fraction (seeded)."""
    if cfg.data.path is None:
        return (ShapesDense(dense.train_scenes, dense.scene_size, seed=cfg.seed),
                ShapesDense(dense.val_scenes, dense.scene_size, seed=cfg.seed + 1_000_003))
    root = Path(cfg.data.path)
    kwargs = {"task": dense.task, "size": (size, size), "depth_scale": dense.depth_scale}
    if (root / "train").is_dir():
        val_root = Path(cfg.data.val_path) if cfg.data.val_path else root / "val"
        return DenseFolder(root / "train", **kwargs), DenseFolder(val_root, **kwargs)
    full = DenseFolder(root, **kwargs)
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(cfg.seed))
    n_val = max(1, round(len(full) * cfg.data.val_fraction))
    split = [InMemoryDense(full.get_batch(idx), full.class_names) for idx in (order[n_val:], order[:n_val])]
    return split[0], split[1]


def build_dense_model(cfg: TrainConfig, dense: DenseConfig, num_classes: int, size: int) -> DPT:
    overrides = dict(cfg.model_args)
    overrides.setdefault("task", dense.task)
    if dense.task == "depth":
        overrides.setdefault("depth_output", "depth" if dense.depth_loss == "silog" else dense.depth_space)
    if dense.task == "segment":
        overrides.setdefault("num_classes", num_classes)
    if dense.init_encoder:
        from ..weights import load_pretrained

        return dpt_from_encoder(load_pretrained(dense.init_encoder, strict=False), **overrides)
    model_cfg = get_model_config(cfg.model, **overrides)
    if not hasattr(model_cfg, "encoder"):
        raise ValueError(f"--model {cfg.model!r} is not a DPT preset; choose one of vitkit.list_models('dpt_*')")
    return build_model(replace_config(model_cfg, {"encoder.image_size": (size, size)}))


def build_dense_task(cfg: TrainConfig, dense: DenseConfig) -> DenseTask:
    """Model, objective, data and transforms of a dense run (no training)."""
    if dense.task not in DEFAULT_MODELS:
        raise ValueError(f"dense task must be 'depth' or 'segment', got {dense.task!r}")
    size = cfg.data.image_size or (dense.scene_size if cfg.data.path is None else
                                   get_model_config(cfg.model).encoder.image_size[0])
    train, val = build_dense_data(cfg, dense, size)
    class_names = train.class_names or (SHAPE_CLASSES if cfg.data.path is None else ())
    num_classes = 0
    if dense.task == "segment":
        num_classes = len(class_names) or int(train.tensors["labels"][train.tensors["labels"] != dense.ignore_index]
                                              .max()) + 1
    model = build_dense_model(cfg, dense, num_classes, size)
    if dense.task == "segment":
        model.config.encoder.preprocess.label_names = tuple(class_names)
        objective: Any = SegmentationObjective(model.config.num_classes, dense.ignore_index, dense.aux_weight)
        select = "miou"
    else:
        objective = DepthObjective(dense.depth_loss, dense.depth_space, dense.trim, dense.grad_weight)
        select = "delta1"
    pre = model.config.encoder.preprocess
    return DenseTask(model, objective, train, val, DenseTransform(pre.mean, pre.std, dense.crop, dense.flip),
                     DenseTransform(pre.mean, pre.std), select, tuple(class_names))


def train_dense(cfg: TrainConfig, dense: DenseConfig | None = None) -> dict[str, Any]:
    """Train (or resume) a dense run; return the summary also written to DIR/summary.json.

    `dense` defaults to ``cfg.dense`` when TrainConfig carries one, else DenseConfig(). The model defaults to
    the tiny DPT of the task when `cfg.model` is not a DPT preset.
    """
    dense = dense or cfg.dense or DenseConfig()
    if not cfg.model.startswith("dpt") and not dense.init_encoder:
        cfg = replace_config(cfg, {"model": DEFAULT_MODELS[dense.task]})
    seed_everything(cfg.seed)
    task = build_dense_task(cfg, dense)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    loaders = [DenseLoader(data, cfg.batch_size // world, shuffle=train, drop_last=train, seed=cfg.seed,
                           rank=rank, world_size=world) for data, train in ((task.train_data, True),
                                                                            (task.val_data, False))]
    trainer = Trainer(task.model, task.objective, loaders[0], loaders[1], cfg, cfg.out,
                      train_transform=task.train_transform, eval_transform=task.eval_transform, select=task.select)
    if dense.encoder_lr_scale != 1.0:  # the engine's param-group builder, with an encoder lr multiplier
        o = cfg.optim
        trainer.optimizer = build_optimizer(trainer.model, o.lr, o.weight_decay, o.betas, o.layer_decay,
                                            lr_scale={"encoder": dense.encoder_lr_scale})
    start = time.perf_counter()
    val = trainer.fit()
    if trainer.interrupted and trainer.val_data is not None:  # stopped early: still report where it got to
        val = trainer.evaluate()
    summary: dict[str, Any] = {
        "task": dense.task, "model": cfg.model, "params": sum(p.numel() for p in task.model.parameters()),
        "epochs": trainer.epoch, "steps": trainer.step,
        "train_seconds": round(time.perf_counter() - start, 1),
        "best": trainer.best, "interrupted": trainer.interrupted, "val": val}
    if not trainer.dist.is_main:
        return summary
    if dense.task == "segment":
        summary["val"] = {**val, **evaluate_dense_segmentation(task, trainer.device, cfg.batch_size)}
    out = Path(cfg.out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    save_examples(task, trainer.device, out / "figures" / "dense_examples.png")
    return summary


def evaluate_dense_segmentation(task: DenseTask, device: torch.device, batch_size: int) -> dict[str, float]:
    """Exact dataset mIoU / pixel accuracy over the validation set (one confusion matrix)."""
    n = len(task.val_data)
    batches = (task.eval_transform({k: v.to(device) for k, v in
                                    task.val_data.get_batch(torch.arange(i, min(i + batch_size, n))).items()})
               for i in range(0, n, batch_size))
    scores = evaluate_segmentation(task.model, batches, task.model.config.num_classes,
                                   task.objective.ignore_index)
    return {"dataset_miou": scores["miou"], "dataset_pixel_acc": scores["pixel_acc"]}


@torch.no_grad()
def save_examples(task: DenseTask, device: torch.device, path: Path, count: int = 6) -> Path:
    """A grid of image · ground truth · prediction rows for the first `count` validation samples."""
    from ..viz.colormap import image_grid, save_png, upscale
    from .dense_predict import as_disparity, colorize_depth, colorize_labels

    batch = task.val_data.get_batch(torch.arange(min(count, len(task.val_data))))
    images = batch["images"].permute(0, 2, 3, 1).numpy()
    was_training = task.model.training
    task.model.eval()
    inputs = task.eval_transform({k: v.to(device) for k, v in batch.items()})["images"]
    pred = task.model(inputs).float().cpu()
    task.model.train(was_training)
    tiles = []
    for i in range(len(images)):
        if "labels" in batch and pred.ndim == 4:
            k = task.model.config.num_classes
            row = [images[i], colorize_labels(batch["labels"][i].numpy(), k),
                   colorize_labels(pred[i].argmax(0).numpy(), k)]
        else:
            valid = batch["valid"][i].numpy()
            shown = as_disparity(pred[i].numpy(), task.model.config.depth_output)  # near is bright
            row = [images[i], colorize_depth(1.0 / np.where(valid, batch["depth"][i].numpy(), np.inf)),
                   colorize_depth(shown)]
        tiles += [upscale(t, max(1, 128 // t.shape[0])) for t in row]
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_png(image_grid(tiles, cols=6), path)
