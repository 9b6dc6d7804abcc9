"""Linear probing (`vitkit linprobe`): a frozen encoder + BatchNorm(affine=False) + Linear, as in MAE. With
``task.cache`` the pooled features are computed once (no augmentation) and the probe trains on them;
RUN/classifier holds the trained probe folded into a plain ViT classifier."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from ..config import replace_config
from ..data import ImageLoader
from ..data.transforms import normalize
from ..engine.augment import classification_transforms, eval_transform_for
from ..engine.distributed import resolve_device
from ..engine.trainer import Trainer
from ..errors import UsageError
from ..models.probe import LinearProbe, LinearProbeConfig
from ..objectives import ClassificationObjective
from ..runconfig import TrainConfig
from ..weights import load_pretrained, save_pretrained
from .base import TaskParts, held_out_summary, labelled_splits, labelled_subset, run_card, set_cpu_threads
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
                     amp: bool = False) -> FeatureSet:
    """Pooled features (N, D) float32 and targets (N,) of a labelled image dataset, in dataset order."""
    pre = probe.config.encoder.preprocess
    probe.to(device).eval()
    feats, targets = [], []
    for images, labels in ImageLoader(dataset, batch_size):
        images = normalize(images.to(device), pre.mean, pre.std)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            feats.append(probe.features(images).float().cpu())
        targets.append(labels)
    return FeatureSet(torch.cat(feats), torch.cat(targets))


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
    eval_tf = eval_transform_for(encoder.config.preprocess)
    if not task.cache:  # augmented batches through the frozen encoder; Augment's soft targets smooth labels
        train_tf, eval_tf = classification_transforms(cfg.augment, encoder.config.preprocess,
                                                      splits.num_classes)
        return TaskParts(cfg, model, ClassificationObjective(), train, splits.val, train_tf, eval_tf, "acc1",
                         list(splits.classes), info)
    device, start = resolve_device(cfg.device), time.perf_counter()
    train_set = extract_features(model, train, device, cfg.batch_size, cfg.amp)
    val_set = extract_features(model, splits.val, device, cfg.batch_size, cfg.amp) if splits.val else None
    info["feature_seconds"] = round(time.perf_counter() - start, 1)
    # no augmentation here, so label smoothing is the objective's (still applied once)
    return TaskParts(cfg, model, ClassificationObjective(cfg.augment.label_smoothing), train_set, val_set,
                     None, None, "acc1", list(splits.classes), info, val_images=(splits.val, eval_tf))


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
