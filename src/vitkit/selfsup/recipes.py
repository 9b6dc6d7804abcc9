"""Self-supervised recipes on the shared Trainer: pretrain (MAE / MPP), fine-tune, linear-probe.

Every recipe takes the engine's `TrainConfig` (data, epochs, batch size, optimizer, augmentation, output
directory) plus the few options specific to it, and returns a summary dict (also written to DIR/summary.json).

* `pretrain(cfg)`: ``cfg.model`` is an MAE or MPP preset; labels are ignored. Images get the MAE paper's
  random resized crop (scale 0.2–1) and horizontal flip. Writes the full model to DIR/checkpoints/last
  (decoder kept) and the encoder alone, as a plain ViT, to DIR/encoder.
* `finetune(checkpoint, cfg)`: the encoder of `checkpoint` (a pretrain run, a checkpoint directory or any file
  `vitkit.load_pretrained` reads; None trains ``cfg.model`` from scratch) gets a new head: [CLS] or global
  average pooling with fc-norm, a small-init head (trunc-normal std 2e-5), drop path from ``cfg.model_args``,
  layer-wise lr decay from ``cfg.optim.layer_decay``, mixup / cutmix / label smoothing from ``cfg.augment``.
* `linprobe(checkpoint, cfg)`: a frozen encoder + BatchNorm(affine=False) + Linear. With ``cache=True`` (no
  augmentation) features are computed once and the probe trains on them; DIR/classifier holds the probe folded
  into a plain ViT classifier.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from ..config import replace_config
from ..data import DataSplits, InMemoryImages, build_datasets, split_indices
from ..data.transforms import normalize
from ..engine.augment import classification_transforms, eval_transform_for
from ..engine.config import TrainConfig
from ..engine.inference import predict_logits
from ..engine.metrics import classification_summary
from ..engine.trainer import Trainer, seed_everything
from ..models import build_model, get_model_config
from ..models.mae import MAEConfig
from ..models.mpp import MPPConfig
from ..models.probe import LinearProbe, LinearProbeConfig
from ..models.vit import VisionTransformer
from ..objectives import ClassificationObjective
from ..objectives.mae import MAEObjective
from ..objectives.mpp import MPPObjective

log = logging.getLogger(__name__)


# ---- data -------------------------------------------------------------------------------------------------
def _splits(cfg: TrainConfig, encoder_cfg: Any):
    data = dataclasses.replace(cfg.data, channels=encoder_cfg.in_chans, image_size=encoder_cfg.image_size[0])
    return build_datasets(data, progress=sys.stdout.isatty())


def labelled_subset(dataset: Any, fraction: float, seed: int = 0) -> Any:
    """A class-stratified `fraction` of `dataset` (seeded); the dataset itself when fraction is 1."""
    if fraction >= 1.0:
        return dataset
    if not 0.0 < fraction:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    targets = dataset.targets if isinstance(dataset, InMemoryImages) else [t for _, t in dataset.samples]
    _, keep = split_indices(list(map(int, targets)), fraction, seed)
    if isinstance(dataset, InMemoryImages):
        index = torch.as_tensor(keep)
        return InMemoryImages(dataset.images[index], dataset.targets[index], dataset.classes)
    return torch.utils.data.Subset(dataset, list(keep))


def pretrain_transform(preprocess: Any, crop_scale: tuple[float, float] = (0.2, 1.0)):
    """(images uint8, targets) → (normalised, cropped and flipped images, targets): MAE's pretraining augmentation."""
    from ..data.transforms import Augment, AugmentConfig

    augment = Augment(AugmentConfig(crop_scale=crop_scale, hflip=0.5, interpolation="bicubic"), num_classes=1,
                      mean=preprocess.mean, std=preprocess.std)

    def transform(batch: Any, generator: torch.Generator) -> Any:
        images, targets = batch
        return augment(images, torch.zeros_like(targets), generator)[0], targets

    return transform


# ---- pretraining ------------------------------------------------------------------------------------------
def pretrain(cfg: TrainConfig, mask_ratio: float | None = None, crop_scale: tuple[float, float] = (0.2, 1.0),
             method: str | None = None, splits: DataSplits | None = None) -> dict[str, Any]:
    """Pretrain the MAE or MPP preset ``cfg.model`` on ``cfg.data`` without labels; see the module docstring.

    `method` ("mae" / "mpp"), when given, must match the preset's model type. `splits` (already decoded, at
    the encoder's size and channels) replaces ``cfg.data``, so several stages can share one decode.
    """
    seed_everything(cfg.seed)
    model_cfg = get_model_config(cfg.model, **cfg.model_args)
    kind = {MAEConfig: "mae", MPPConfig: "mpp"}.get(type(model_cfg))
    if kind is None or (method is not None and method != kind):
        raise ValueError(f"{cfg.model} is not a{'n ' + method.upper() if method else ' self-supervised'} model; "
                         f"use an {method or 'mae'}_* preset (`vitkit models '{method or 'm'}*'`)")
    objective = MAEObjective(mask_ratio) if isinstance(model_cfg, MAEConfig) else MPPObjective()
    splits = splits or _splits(cfg, model_cfg.encoder)
    model = build_model(model_cfg)
    pre = model_cfg.encoder.preprocess
    trainer = Trainer(model, objective, splits.train, splits.val, cfg, cfg.out,
                      train_transform=pretrain_transform(pre, crop_scale), eval_transform=eval_transform_for(pre))
    start = time.perf_counter()
    val = trainer.fit()
    summary = {"model": cfg.model, "method": kind,
               "epochs": trainer.epoch, "steps": trainer.step, "train_seconds": round(time.perf_counter() - start, 1),
               "val": val, "interrupted": trainer.interrupted}
    if trainer.dist.is_main and not trainer.interrupted:
        from ..weights import save_pretrained

        summary["encoder"] = str(save_pretrained(model.export_encoder(), Path(cfg.out) / "encoder"))
        _write_summary(cfg.out, summary)
    return summary


# ---- encoders and heads -----------------------------------------------------------------------------------
def load_encoder(checkpoint: str | Path, allow_pickle: tuple[str, ...] = ()) -> VisionTransformer:
    """The encoder in `checkpoint`, as a plain ViT.

    Accepts what `vitkit.load_pretrained` accepts: a pretrain run directory, a checkpoint directory or file of
    an MAE / MPP model (its encoder is exported, MAE's fixed positions made learnable) or of a ViT.
    """
    from ..weights import load_pretrained

    model = load_pretrained(checkpoint, allow_pickle=allow_pickle)
    if hasattr(model, "export_encoder"):
        return model.export_encoder()
    if isinstance(model, VisionTransformer):
        return model
    raise TypeError(f"{checkpoint} holds a {type(model).__name__}, not a ViT or a self-supervised model")


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
    state = {k: v for k, v in encoder.state_dict().items()
             if not k.startswith(("head.", "fc_norm.", "pre_logits.")) and not (pool == "avg" and k.startswith("norm."))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    fresh = {k for k in missing if not k.startswith(("head.", "fc_norm."))}
    if fresh or unexpected:
        raise ValueError(f"encoder weights do not fit the classifier: missing {sorted(fresh)}, "
                         f"unexpected {sorted(unexpected)}")
    with torch.no_grad():
        if head_init_std > 0:
            nn.init.trunc_normal_(model.head.weight, std=head_init_std)
        else:
            nn.init.zeros_(model.head.weight)
        nn.init.zeros_(model.head.bias)
    return model


# ---- fine-tuning ------------------------------------------------------------------------------------------
def finetune(checkpoint: str | Path | None, cfg: TrainConfig, *, pool: str = "avg", label_fraction: float = 1.0,
             head_init_std: float = 2e-5, allow_pickle: tuple[str, ...] = (),
             splits: DataSplits | None = None) -> dict[str, Any]:
    """Fine-tune the encoder of `checkpoint` (None: ``cfg.model`` from scratch) as a classifier on ``cfg.data``.

    `label_fraction` keeps a class-stratified share of the training labels (seeded by
    ``cfg.data.split_seed``); the held-out split is untouched. `splits`: as for `pretrain`.
    """
    seed_everything(cfg.seed)
    encoder = _encoder(checkpoint, cfg, allow_pickle)
    splits = splits or _splits(cfg, encoder.config)
    train = labelled_subset(splits.train, label_fraction, cfg.data.split_seed)
    model = classifier_from_encoder(encoder, splits.num_classes, pool, head_init_std, **cfg.model_args)
    model.config.preprocess = dataclasses.replace(model.config.preprocess, label_names=tuple(splits.classes))
    train_tf, eval_tf = classification_transforms(cfg.augment, model.config.preprocess, splits.num_classes)
    objective = ClassificationObjective(cfg.augment.label_smoothing)
    trainer = Trainer(model, objective, train, splits.val, cfg, cfg.out, train_transform=train_tf,
                      eval_transform=eval_tf)
    return _fit_and_summarise(trainer, cfg, splits, eval_tf, {"from": str(checkpoint), "pool": pool,
                                                              "train_images": len(train)})


# ---- linear probing ---------------------------------------------------------------------------------------
class FeatureLoader:
    """Seeded batches of cached (features (N, D), targets (N,)): the loader protocol the Trainer reads."""

    def __init__(self, features: Tensor, targets: Tensor, batch_size: int, shuffle: bool, seed: int = 0) -> None:
        self.features, self.targets = features, targets
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed

    def __len__(self) -> int:
        n = len(self.targets)
        return max(n // self.batch_size, 1) if self.shuffle else -(-n // self.batch_size)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.targets)
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
                 if self.shuffle else torch.arange(n))
        for b in range(start_batch, len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self.features[index], self.targets[index]


@torch.no_grad()
def extract_features(probe: LinearProbe, dataset: Any, device: torch.device, batch_size: int = 256,
                     amp: bool = False) -> tuple[Tensor, Tensor]:
    """Pooled features (N, D) float32 and targets (N,) of a labelled image dataset, in dataset order."""
    from ..data import ImageLoader

    pre = probe.config.encoder.preprocess
    probe.to(device).eval()
    feats, targets = [], []
    for images, labels in ImageLoader(dataset, batch_size):
        images = normalize(images.to(device), pre.mean, pre.std)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            feats.append(probe.features(images).float().cpu())
        targets.append(labels)
    return torch.cat(feats), torch.cat(targets)


def linprobe(checkpoint: str | Path | None, cfg: TrainConfig, *, pool: str = "cls", label_fraction: float = 1.0,
             cache: bool = True, allow_pickle: tuple[str, ...] = (),
             splits: DataSplits | None = None) -> dict[str, Any]:
    """Train a linear probe on the frozen encoder of `checkpoint` (None: a random ``cfg.model``, a baseline).

    With `cache` the features are computed once (no augmentation); otherwise every batch runs through the
    frozen encoder with ``cfg.augment``. `splits`: as for `pretrain`.
    """
    seed_everything(cfg.seed)
    encoder = _encoder(checkpoint, cfg, allow_pickle)
    splits = splits or _splits(cfg, encoder.config)
    train = labelled_subset(splits.train, label_fraction, cfg.data.split_seed)
    model = LinearProbe(LinearProbeConfig(encoder=encoder.config, num_classes=splits.num_classes, pool=pool))
    missing, unexpected = model.encoder.load_state_dict(encoder.state_dict(), strict=False)
    if missing or any(not k.startswith(("head.", "fc_norm.", "pre_logits.")) for k in unexpected):
        raise ValueError(f"{checkpoint}: encoder weights do not fit a probe (missing {missing}, unexpected "
                         f"{unexpected}); probe a pretrained encoder, not a classifier with fc-norm")
    objective = ClassificationObjective(cfg.augment.label_smoothing)
    extra = {"from": str(checkpoint), "pool": pool, "train_images": len(train), "cached": cache}
    if cache:
        device = _device(cfg)
        start = time.perf_counter()
        train_data = FeatureLoader(*extract_features(model, train, device, cfg.batch_size, cfg.amp),
                                   cfg.batch_size, shuffle=True, seed=cfg.seed)
        val_data = (FeatureLoader(*extract_features(model, splits.val, device, cfg.batch_size, cfg.amp),
                                  cfg.batch_size, shuffle=False) if splits.val is not None else None)
        extra["feature_seconds"] = round(time.perf_counter() - start, 1)
        trainer = Trainer(model, objective, train_data, val_data, cfg, cfg.out)
    else:
        train_tf, eval_tf = classification_transforms(cfg.augment, encoder.config.preprocess, splits.num_classes)
        trainer = Trainer(model, objective, train, splits.val, cfg, cfg.out, train_transform=train_tf,
                          eval_transform=eval_tf)
    summary = _fit_and_summarise(trainer, cfg, splits, eval_transform_for(encoder.config.preprocess), extra)
    if trainer.dist.is_main and not trainer.interrupted:
        from ..weights import save_pretrained

        summary["classifier"] = str(save_pretrained(model.to_classifier(), Path(cfg.out) / "classifier"))
        _write_summary(cfg.out, summary)
    return summary


# ---- shared -----------------------------------------------------------------------------------------------
def _encoder(checkpoint: str | Path | None, cfg: TrainConfig, allow_pickle: tuple[str, ...]) -> VisionTransformer:
    """The pretrained encoder, or with no checkpoint a freshly initialised ``cfg.model`` (+ ``cfg.model_args``)."""
    if checkpoint is None:
        return build_model(get_model_config(cfg.model, **{**cfg.model_args, "num_classes": 0}))
    return load_encoder(checkpoint, allow_pickle)


def _device(cfg: TrainConfig) -> torch.device:
    from ..engine.distributed import resolve_device

    return resolve_device(cfg.device, 0)


def _fit_and_summarise(trainer: Trainer, cfg: TrainConfig, splits: Any, eval_tf: Any,
                       extra: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    trainer.fit()
    summary: dict[str, Any] = {**extra, "epochs": trainer.epoch, "steps": trainer.step,
                               "train_seconds": round(time.perf_counter() - start, 1),
                               "interrupted": trainer.interrupted}
    if trainer.interrupted or not trainer.dist.is_main:
        return summary
    if splits.val is not None:
        logits, targets = predict_logits(trainer.model, splits.val, eval_tf, trainer.device, cfg.amp, cfg.batch_size)
        summary["val"] = classification_summary(logits, targets, list(splits.classes))
    _write_summary(cfg.out, summary)
    return summary


def _write_summary(out: str | Path, summary: dict[str, Any]) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "summary.json").write_text(json.dumps(summary, indent=2))
