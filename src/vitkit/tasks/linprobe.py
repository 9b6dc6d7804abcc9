"""Linear probing (`vitkit linprobe`): a frozen encoder + BatchNorm(affine=False) + Linear, as in MAE. With
``task.cache`` the pooled features are computed once (no augmentation) and the probe trains on them;
RUN/classifier holds the trained probe folded into a plain ViT classifier."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..config import replace_config
from ..data import ImageLoader
from ..data.transforms import normalize
from ..engine.augment import train_transform_for
from ..engine.distributed import all_gather_rows, init_distributed, local_rank, resolve_device
from ..engine.runtime import configure_backends
from ..engine.trainer import BatchTransform, Trainer
from ..errors import RunFailure, UsageError
from ..models.probe import LinearProbe, LinearProbeConfig
from ..objectives import ClassificationObjective
from ..runconfig import TrainConfig
from ..weights import load_pretrained, save_pretrained
from .base import (
    TaskParts,
    eval_split,
    held_out_summary,
    labelled_splits,
    labelled_subset,
    run_card,
    set_cpu_threads,
)
from .finetune import resolve_encoder


class FeatureSet:
    """Cached (features (N, D), targets (N,)), served by `ImageLoader` like any in-memory set."""

    def __init__(self, features: Tensor, targets: Tensor) -> None:
        self.features, self.targets = features, targets

    def __len__(self) -> int:
        return len(self.targets)

    def get_batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        return self.features[index], self.targets[index]


@torch.no_grad()
def extract_features(probe: LinearProbe, dataset: Any, device: torch.device, batch_size: int = 256,
                     amp: bool = False, amp_dtype: torch.dtype = torch.bfloat16,
                     transform: BatchTransform | None = None) -> FeatureSet:
    """Pooled features (N, D) float32 and targets (N,) of a labelled image dataset, in dataset order.
    `transform`: (uint8 images, targets) → (model inputs, targets), e.g. the held-out images' `eval_split`
    transform; None normalises images already at the model's size.

    Under torchrun each process encodes its share of the images (contiguous slices of every batch, as in
    training) on its own device, and the shares are all-gathered: every rank ends with the whole set.
    """
    pre = probe.config.encoder.preprocess
    probe.to(device).eval()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    loader = ImageLoader(dataset, max(batch_size // world, 1), rank=rank, world_size=world)
    feats, targets = [], []
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        if transform is None:
            images = normalize(images, pre.mean, pre.std)
        else:
            images, _ = transform((images, None), None)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            feats.append(probe.features(images).float())
        targets.append(labels.to(device))
    feats, targets = torch.cat(feats), torch.cat(targets)
    if world == 1:
        return FeatureSet(feats.cpu(), targets.cpu())
    index = torch.cat(loader.batch_indices(0)).to(device)
    if len(index) != len(feats):
        raise RunFailure(f"{len(index) - len(feats)} images could not be read on rank {rank}, so the shared "
                         "feature pass cannot be put back in order; remove them or set task.cache=false")
    index, feats, targets = all_gather_rows(index), all_gather_rows(feats), all_gather_rows(targets)
    out_feats = feats.new_empty((len(dataset), feats.shape[1]))
    out_targets = targets.new_empty(len(dataset))
    out_feats[index], out_targets[index] = feats, targets  # wrapped (padding) samples write the same rows
    return FeatureSet(out_feats.cpu(), out_targets.cpu())


def build(cfg: TrainConfig) -> TaskParts:
    cfg, encoder = resolve_encoder(cfg)
    cfg, splits = labelled_splits(cfg, encoder.config.in_chans, encoder.config.image_size[0])
    task = cfg.task
    train = labelled_subset(splits.train, task.label_fraction, cfg.data.split_seed)
    probe_cfg = LinearProbeConfig(encoder=replace_config(encoder.config, {
        "preprocess.label_names": tuple(splits.classes)}), num_classes=splits.num_classes, pool=task.pool)
    model = LinearProbe(probe_cfg)
    missing, unexpected = model.encoder.load_state_dict(encoder.state_dict(), strict=False)
    if missing or any(not k.startswith(("head.", "fc_norm.", "pre_logits.")) for k in unexpected):
        raise UsageError(f"{task.init}: encoder weights do not fit a probe (missing {missing}, unexpected "
                         f"{unexpected}); probe a pretrained encoder, not a classifier with fc-norm")
    set_cpu_threads(cfg.threads, encoder.config)
    info: dict[str, Any] = {"from": task.init, "pool": task.pool, "train_images": len(train),
                            "cached": task.cache}
    val, eval_tf = eval_split(cfg, splits, model)
    if not task.cache:  # augmented batches through the frozen encoder; Augment's soft targets smooth labels
        train_tf = train_transform_for(cfg.augment, encoder.config.preprocess, splits.num_classes)
        return TaskParts(cfg, model, ClassificationObjective(), train, val, train_tf, eval_tf, "acc1",
                         list(splits.classes), info)
    device, start = resolve_device(cfg.device, local_rank()), time.perf_counter()
    configure_backends(cfg.deterministic, device)
    init_distributed(device)  # the Trainer joins the same group later
    dtype = torch.float16 if cfg.amp_dtype == "fp16" else torch.bfloat16
    train_set = extract_features(model, train, device, cfg.batch_size, cfg.amp, dtype)
    val_set = (extract_features(model, val, device, cfg.batch_size, cfg.amp, dtype, eval_tf)
               if val else None)
    info["feature_seconds"] = round(time.perf_counter() - start, 1)
    # no augmentation here, so label smoothing is the objective's (still applied once)
    return TaskParts(cfg, model, ClassificationObjective(cfg.augment.label_smoothing), train_set, val_set,
                     None, None, "acc1", list(splits.classes), info, val_images=(val, eval_tf))


def summarise(parts: TaskParts, trainer: Trainer, val: dict[str, float]) -> dict[str, Any]:
    """Held-out accuracy of the probe's last weights on images (not cached features), and RUN/classifier: the
    best checkpoint's probe (else the last) folded into a plain ViT classifier, which a run directory given
    as ``--checkpoint`` resolves to."""
    best = trainer.run.checkpoint("best")
    probe = load_pretrained(best) if trainer.best is not None else trainer.export_model()
    best_score = {trainer.select: trainer.best}
    card = (run_card(parts.cfg, best_score, f"held-out, best epoch {trainer.best_epoch}")
            if trainer.best is not None else run_card(parts.cfg, val, f"held-out, epoch {trainer.epoch}"))
    path = save_pretrained(probe.to_classifier(), trainer.run.export("classifier"), card=card)
    return {**parts.info, **held_out_summary(parts, trainer), "classifier": str(path),
            "classifier_from": str(best if trainer.best is not None else trainer.run.checkpoint("last"))}
