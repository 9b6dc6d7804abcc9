"""Fine-tuning a pretrained encoder as a classifier (`vitkit finetune`), MAE style: [CLS] or global average
pooling with a fresh fc-norm, a small-init head (trunc-normal std 2e-5), drop path from ``model_args``,
layer-wise lr decay from ``optim.layer_decay``, mixup / cutmix / label smoothing from ``augment``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import replace_config
from ..engine.augment import train_transform_for
from ..engine.trainer import Trainer
from ..errors import UsageError, require
from ..models import build_model, get_model_config
from ..models.vit import VisionTransformer
from ..objectives import ClassificationObjective
from ..runconfig import TrainConfig
from ..rundir import model_reference
from ..weights import load_pretrained
from .base import (
    TaskParts,
    eval_split,
    held_out_summary,
    labelled_splits,
    labelled_subset,
    replace_task,
    set_cpu_threads,
)


def load_encoder(checkpoint: str | Path, allow_pickle: tuple[str, ...] = ()) -> VisionTransformer:
    """The encoder in `checkpoint` (anything `vitkit.load_pretrained` reads), as a plain ViT: an MAE / MPP
    model's encoder is exported (MAE's fixed positions made learnable)."""
    model = load_pretrained(checkpoint, allow_pickle=allow_pickle)
    if hasattr(model, "export_encoder"):
        return model.export_encoder()
    if isinstance(model, VisionTransformer):
        return model
    raise UsageError(f"{checkpoint} holds a {type(model).__name__}, not a ViT or a self-supervised model; "
                     "give a pretrain run, a ViT or an MAE checkpoint")


def resolve_encoder(cfg: TrainConfig) -> tuple[TrainConfig, VisionTransformer]:
    """(cfg recording exactly which encoder was used, the encoder): ``task.init`` as an absolute model path (a
    hub name pinned to its commit) and ``model`` None, or with no init a fresh ``model`` (+ ``model_args``),
    the from-scratch baseline."""
    task = cfg.task
    require(0.0 < task.label_fraction <= 1.0, f"label_fraction must be in (0, 1], got {task.label_fraction}")
    if task.init is None:
        require(cfg.model is not None, "training from scratch needs a model preset: give --model NAME")
        encoder = build_model(get_model_config(cfg.model, **{**cfg.model_args, "num_classes": 0}))
        return cfg, encoder
    init = model_reference(task.init)
    encoder = load_encoder(init, tuple(task.allow_pickle))
    return replace_config(replace_task(cfg, init=init), {"model": None}), encoder


def classifier_from_encoder(encoder: VisionTransformer, num_classes: int, pool: str = "avg",
                            head_init_std: float = 2e-5, **overrides: Any) -> VisionTransformer:
    """A ViT classifier with `encoder`'s weights and a new head.

    ``pool="avg"``: mean of patch tokens followed by a fresh fc-norm (the pretrained final norm is dropped, as
    in MAE fine-tuning); ``pool="cls"``: the [CLS] token after the pretrained final norm. The head is
    trunc-normal with std `head_init_std` (0: zeros), biases zero. `overrides` are ViTConfig fields (e.g.
    drop_path_rate).
    """
    cfg = replace_config(encoder.config, {"num_classes": num_classes, "pool": pool, "fc_norm": pool == "avg",
                                          "representation_size": None, **overrides})
    model = VisionTransformer(cfg)
    dropped = ("head.", "fc_norm.", "pre_logits.") + (("norm.",) if pool == "avg" else ())
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith(dropped)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    fresh = {k for k in missing if not k.startswith(("head.", "fc_norm."))}
    if fresh or unexpected:
        raise UsageError(f"encoder weights do not fit the classifier: missing {sorted(fresh)}, "
                         f"unexpected {sorted(unexpected)}")
    with torch.no_grad():
        if head_init_std > 0:
            nn.init.trunc_normal_(model.head.weight, std=head_init_std)
        else:
            nn.init.zeros_(model.head.weight)
        nn.init.zeros_(model.head.bias)
    return model


def build(cfg: TrainConfig) -> TaskParts:
    cfg, encoder = resolve_encoder(cfg)
    cfg, splits = labelled_splits(cfg, encoder.config.in_chans, encoder.config.image_size[0])
    task = cfg.task
    train = labelled_subset(splits.train, task.label_fraction, cfg.data.split_seed)
    model = classifier_from_encoder(encoder, splits.num_classes, task.pool, task.head_init_std,
                                    **cfg.model_args)
    model.config.preprocess = replace_config(model.config.preprocess, label_names=tuple(splits.classes))
    set_cpu_threads(cfg.threads, model.config)
    train_tf = train_transform_for(cfg.augment, model.config.preprocess, splits.num_classes)
    val, eval_tf = eval_split(cfg, splits, model)
    return TaskParts(cfg, model, ClassificationObjective(), train, val, train_tf, eval_tf, "acc1",
                     list(splits.classes), {"from": task.init, "pool": task.pool, "train_images": len(train)})


def summarise(parts: TaskParts, trainer: Trainer, val: dict[str, float]) -> dict[str, Any]:
    return {**parts.info, **held_out_summary(parts, trainer)}
