"""Dense tasks (`vitkit train --task depth|segment`): a DPT on built-in procedural scenes or a dense folder.

data (built-in scenes, or DATA/images + DATA/depth or DATA/masks) → DPT preset (or one initialised from a ViT
/ MAE encoder checkpoint) → DepthObjective / SegmentationObjective → held-out depth metrics, or dataset mIoU /
pixel accuracy, and example predictions in RUN/figures/dense_examples.png. An encoder learning rate apart from
the decoder's is ``optim.lr_scale.encoder``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import replace_config
from ..data.datasets import folder_val_fraction
from ..data.dense import DenseFolder, DenseTransform, InMemoryDense, ShapesDense
from ..data.shapes import SHAPE_CLASSES
from ..engine.trainer import Trainer
from ..errors import UsageError, require
from ..infer.dense import as_disparity, colorize_depth, colorize_labels
from ..models import build_model, get_model_config
from ..models.dpt import DPT, DPTConfig, dpt_from_encoder
from ..objectives.depth import DepthObjective
from ..objectives.segmentation import SegmentationObjective, evaluate_segmentation
from ..runconfig import TrainConfig
from ..rundir import model_reference
from ..viz.colormap import image_grid, save_png, upscale
from ..weights import load_pretrained
from .base import TaskParts, replace_task, set_cpu_threads

DEFAULT_MODELS = {"depth": "dpt_tiny_depth", "segment": "dpt_tiny_segment"}


def resolve_model(cfg: TrainConfig) -> TrainConfig:
    """The DPT preset the run uses (the task's tiny DPT when `model` is left at the classifier default), and
    ``task.init_encoder`` as an absolute path; a model that is not a DPT is refused."""
    task = cfg.task
    if task.init_encoder:
        init = model_reference(task.init_encoder)
        return replace_config(replace_task(cfg, init_encoder=init), {"model": None})
    if cfg.model in (None, TrainConfig().model):
        return replace_config(cfg, {"model": DEFAULT_MODELS[task.kind]})
    if not isinstance(get_model_config(cfg.model), DPTConfig):
        raise UsageError(f"--model {cfg.model!r} is not a DPT preset; "
                         "choose one of vitkit.list_models('dpt_*') or list_models('depth_anything_*'), "
                         "or set task.init_encoder to start a DPT from a ViT or MAE encoder")
    return cfg


def build_data(cfg: TrainConfig, size: int) -> tuple[TrainConfig, InMemoryDense, InMemoryDense]:
    """(cfg with its data resolved, train, val): the built-in scenes (seeds apart, so the sets never share a
    scene), a dense folder with DATA/train and DATA/val, or one folder split by data.val_fraction (seeded)."""
    task = cfg.task
    if cfg.data.path is None:
        return (cfg, ShapesDense(task.train_scenes, task.scene_size, seed=cfg.seed),
                ShapesDense(task.val_scenes, task.scene_size, seed=cfg.seed + 1_000_003))
    root = Path(cfg.data.path).expanduser()
    if not root.is_dir():
        raise UsageError(f"--data {root}: no such folder; expected DATA/images/ with DATA/depth/ or "
                         "DATA/masks/ (or DATA/train/ and DATA/val/ laid out so)")
    data = {"path": os.path.abspath(root), "image_size": size, "val_fraction": folder_val_fraction(cfg.data)}
    kwargs = {"task": task.kind, "size": (size, size), "depth_scale": task.depth_scale}
    if (root / "train").is_dir():
        val_root = Path(cfg.data.val_path) if cfg.data.val_path else root / "val"
        data["val_path"] = os.path.abspath(val_root)
        return (replace_config(cfg, {"data": data}), DenseFolder(root / "train", **kwargs),
                DenseFolder(val_root, **kwargs))
    full = DenseFolder(root, **kwargs)
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(cfg.seed))
    n_val = max(1, round(len(full) * data["val_fraction"]))
    train, val = (InMemoryDense(full.get_batch(idx), full.class_names)
                  for idx in (order[n_val:], order[:n_val]))
    return replace_config(cfg, {"data": data}), train, val


def build_model_for(cfg: TrainConfig, encoder: Any, num_classes: int, size: int) -> DPT:
    """The DPT preset at `size`, or a DPT around `encoder` (from ``task.init_encoder``)."""
    task = cfg.task
    overrides = dict(cfg.model_args)
    overrides.setdefault("task", task.kind)
    if task.kind == "depth":
        overrides.setdefault("depth_output", "depth" if task.depth_loss == "silog" else task.depth_space)
    else:
        overrides.setdefault("num_classes", num_classes)
    if encoder is not None:
        return dpt_from_encoder(encoder, **overrides)
    model_cfg = get_model_config(cfg.model, **overrides)
    return build_model(replace_config(model_cfg, {"encoder.image_size": (size, size)}))


def build(cfg: TrainConfig) -> TaskParts:
    cfg = resolve_model(cfg)
    task = cfg.task
    require(task.trim >= 0 and task.train_scenes >= 1 and task.val_scenes >= 1,
            "task.trim must be >= 0 and task.train_scenes / val_scenes >= 1")
    encoder = load_pretrained(task.init_encoder, strict=False) if task.init_encoder else None
    source = get_model_config(cfg.model) if encoder is None else encoder.config
    native = getattr(source, "encoder", source).image_size[0]  # a DPT's or an MAE's encoder, or a ViT
    size = cfg.data.image_size or (task.scene_size if cfg.data.path is None else native)
    cfg, train, val = build_data(cfg, size)
    classes = list(train.class_names or (SHAPE_CLASSES if cfg.data.path is None else ()))
    num_classes = 0
    if task.kind == "segment":
        labels = train.tensors["labels"]
        num_classes = len(classes) or int(labels[labels != task.ignore_index].max()) + 1
    model = build_model_for(cfg, encoder, num_classes, size)
    patch = model.encoder.patch_size
    setting = "task.scene_size" if cfg.data.path is None and not cfg.data.image_size else "data.image_size"
    require(size % patch == 0, f"image size {size} is not a multiple of the model's patch ({patch}): set "
            f"{setting} to a multiple of {patch}")
    set_cpu_threads(cfg.threads, model.config.encoder)
    if task.kind == "segment":
        model.config.encoder.preprocess.label_names = tuple(classes)
        objective: Any = SegmentationObjective(model.config.num_classes, task.ignore_index, task.aux_weight)
    else:
        objective = DepthObjective(task.depth_loss, task.depth_space, task.trim, task.grad_weight)
    pre = model.config.encoder.preprocess
    return TaskParts(cfg, model, objective, train, val,
                     DenseTransform(pre.mean, pre.std, task.crop, task.flip),
                     DenseTransform(pre.mean, pre.std),
                     "miou" if task.kind == "segment" else "delta1", classes)


def summarise(parts: TaskParts, trainer: Trainer, val: dict[str, float]) -> dict[str, Any]:
    """Held-out metrics of the last weights (segmentation: also the exact dataset mIoU / pixel accuracy), and
    RUN/figures/dense_examples.png."""
    val = dict(val)
    if parts.cfg.task.kind == "segment":
        val.update(evaluate_dense_segmentation(parts, trainer.device, parts.cfg.batch_size))
    save_examples(parts, trainer.device, trainer.run.figure("dense_examples.png"))
    return {"val": val}


def evaluate_dense_segmentation(parts: TaskParts, device: torch.device, batch_size: int) -> dict[str, float]:
    """Exact dataset mIoU / pixel accuracy over the validation set (one confusion matrix)."""
    n = len(parts.val)
    batches = (parts.eval_transform({k: v.to(device) for k, v in
                                     parts.val.get_batch(torch.arange(i, min(i + batch_size, n))).items()})
               for i in range(0, n, batch_size))
    scores = evaluate_segmentation(parts.model, batches, parts.model.config.num_classes,
                                   parts.objective.ignore_index)
    return {"dataset_miou": scores["miou"], "dataset_pixel_acc": scores["pixel_acc"]}


@torch.no_grad()
def save_examples(parts: TaskParts, device: torch.device, path: Path, count: int = 6) -> Path:
    """A grid of image · ground truth · prediction rows for the first `count` validation samples."""
    model = parts.model
    batch = parts.val.get_batch(torch.arange(min(count, len(parts.val))))
    images = batch["images"].permute(0, 2, 3, 1).numpy()
    was_training = model.training
    model.eval()
    pred = model(parts.eval_transform({k: v.to(device) for k, v in batch.items()})["images"]).float().cpu()
    model.train(was_training)
    tiles = []
    for i in range(len(images)):
        if "labels" in batch and pred.ndim == 4:
            k = model.config.num_classes
            row = [images[i], colorize_labels(batch["labels"][i].numpy(), k),
                   colorize_labels(pred[i].argmax(0).numpy(), k)]
        else:
            valid = batch["valid"][i].numpy()
            shown = as_disparity(pred[i].numpy(), model.config.depth_output)  # near is bright
            row = [images[i], colorize_depth(1.0 / np.where(valid, batch["depth"][i].numpy(), np.inf)),
                   colorize_depth(shown)]
        tiles += [upscale(t, max(1, 128 // t.shape[0])) for t in row]
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_png(image_grid(tiles, cols=6), path)
