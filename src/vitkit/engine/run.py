"""`vitkit train` as one library call: ``train_classifier(TrainConfig(...))``.

data (built-in digits, an image folder, shards) → model preset sized to the data → ClassificationObjective →
Trainer.fit (resuming DIR/checkpoints/last when it exists) → held-out summary (top-1/top-5, per-class
accuracy, confusion matrix) in DIR/summary.json → figures (DIR/figures) and DIR/report.html when matplotlib is
installed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..config import replace_config
from ..data import build_datasets
from ..models import ViTConfig, build_model, get_model_config
from ..models.summary import vit_forward_flops
from ..objectives import ClassificationObjective
from .augment import classification_transforms
from .config import TrainConfig
from .inference import FlipTTA, predict_logits
from .metrics import classification_summary
from .runtime import seed_everything
from .trainer import Trainer

log = logging.getLogger(__name__)


def train_classifier(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume) the classifier `cfg` describes; return the summary also written to DIR/summary.json.

    The summary holds ``val`` (acc1, acc5, per_class_acc, confusion, labels) when there is a held-out set,
    ``val_flip_tta`` (acc1, acc5 of `FlipTTA`) when the run also trained with horizontal flips,
    ``best_acc1``, ``epochs``, ``steps``, ``train_seconds``, ``params``, ``nonfinite_steps`` and
    ``skipped_images``; ``interrupted`` is True when SIGTERM stopped the run (a checkpoint was written).
    """
    seed_everything(cfg.seed)
    model_cfg = get_model_config(cfg.model, **cfg.model_args)
    if cfg.data.path is not None and model_cfg.in_chans == 1:
        log.warning("%s reads 1-channel images: colour images are converted to grey (choose an RGB model, "
                    "e.g. --model vit_tiny_patch4_32, for colour data)", cfg.model)
    size = cfg.data.image_size or model_cfg.image_size[0]
    data_cfg = dataclasses.replace(cfg.data, channels=model_cfg.in_chans, image_size=size)
    splits = build_datasets(data_cfg, progress=sys.stdout.isatty())
    model_cfg = replace_config(model_cfg, {"image_size": (size, size), "num_classes": splits.num_classes,
                                           "preprocess.label_names": tuple(splits.classes)})
    model = build_model(model_cfg)
    set_cpu_threads(cfg.threads, model_cfg)
    train_tf, eval_tf = classification_transforms(cfg.augment, model_cfg.preprocess, splits.num_classes)
    objective = ClassificationObjective()  # label smoothing is in Augment's soft targets
    trainer = Trainer(model, objective, splits.train, splits.val, cfg, cfg.out, train_transform=train_tf,
                      eval_transform=eval_tf)
    start = time.perf_counter()
    trainer.fit()
    summary: dict[str, Any] = {
        "model": cfg.model, "params": sum(p.numel() for p in model.parameters()), "epochs": trainer.epoch,
        "steps": trainer.step, "train_seconds": round(time.perf_counter() - start, 1),
        "best_acc1": trainer.best, "nonfinite_steps": trainer.nonfinite_total,
        "skipped_images": getattr(trainer.train_data, "num_skipped", 0), "interrupted": trainer.interrupted}
    if trainer.interrupted or not trainer.dist.is_main:
        return summary
    if trainer.val_data is not None:
        logits, targets = predict_logits(trainer.model, splits.val, eval_tf, trainer.device, cfg.amp,
                                         cfg.batch_size)
        summary["val"] = classification_summary(logits, targets, list(splits.classes))
        if cfg.augment.hflip > 0:  # trained on mirror images: also report the flip test-time augmentation
            logits, targets = predict_logits(FlipTTA(trainer.model), splits.val, eval_tf, trainer.device,
                                             cfg.amp, cfg.batch_size)
            tta = classification_summary(logits, targets, list(splits.classes))
            summary["val_flip_tta"] = {"acc1": tta["acc1"], "acc5": tta["acc5"]}
    out = Path(cfg.out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if cfg.report:
        write_figures(out, summary)
    return summary


def set_cpu_threads(threads: int | None, model_cfg: Any) -> None:
    """Apply `TrainConfig.threads` (None: one thread for a ViT under 50 MFLOPs per image, else torch's default;
    a hybrid's ResNet trunk is never that small)."""
    small = (isinstance(model_cfg, ViTConfig) and model_cfg.backbone is None
             and vit_forward_flops(model_cfg) < 5e7)
    if threads is None and small:
        threads = 1
    if threads is not None:
        torch.set_num_threads(threads)
        log.info("using %d CPU thread%s", threads, "" if threads == 1 else "s")


def write_figures(out: Path, summary: dict[str, Any]) -> None:
    """DIR/figures/curves.png, confusion.png and DIR/report.html, when the viz module and matplotlib exist."""
    try:
        from ..viz.curves import plot_confusion, plot_curves
        from ..viz.report import write_report
    except ImportError as e:
        log.warning("figures skipped (%s); install matplotlib: pip install 'vitkit[plot]'", e)
        return
    try:
        plot_curves(out)
        if "val" in summary:
            plot_confusion(torch.tensor(summary["val"]["confusion"]), summary["val"]["labels"],
                           out / "figures" / "confusion.png")
        write_report(out)
    except ImportError as e:  # matplotlib imported lazily inside the plotting functions
        log.warning("figures skipped (%s); install matplotlib: pip install 'vitkit[plot]'", e)
