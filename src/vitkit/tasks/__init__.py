"""Tasks: one module per task, and `run(cfg)`, the one entry that every training command calls.

``run(cfg)`` takes the run directory's lock, seeds, builds the task ``cfg.task.kind`` names (classify, depth,
segment, pretrain, finetune, linprobe), runs the Trainer (resuming RUN/checkpoints/last), summarises, and
writes RUN/summary.json and the report. RUN/config.yaml is the resolved config: ``vitkit train --config
RUN/config.yaml --out NEW`` runs the same thing again.
"""

from __future__ import annotations

import contextlib
import logging
import os
from types import ModuleType
from typing import Any

import torch

from ..config import replace_config
from ..engine.distributed import process_rank, resolve_device
from ..engine.runtime import seed_everything
from ..engine.trainer import Trainer
from ..errors import UsageError
from ..runconfig import TrainConfig, check_loop_config
from ..rundir import RunDir
from . import classify, dense, finetune, linprobe, pretrain
from .base import TaskParts, write_checkpoint_cards

log = logging.getLogger(__name__)

TASKS: dict[str, ModuleType] = {"classify": classify, "depth": dense, "segment": dense, "pretrain": pretrain,
                                "finetune": finetune, "linprobe": linprobe}

__all__ = ["TASKS", "TaskParts", "run"]


def run(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume) the run `cfg` describes; return the summary also written to RUN/summary.json.

    The summary holds the task's held-out figures (``val``), ``last`` and ``best`` (which checkpoint holds
    which epoch and score), ``epochs``, ``steps``, ``train_seconds``, ``params`` and ``interrupted`` (the
    signal's name when SIGTERM or SIGINT stopped the run after writing a checkpoint).

    Raises:
        UsageError: a config value, path, model or device that cannot run as asked (nothing on disk changes).
        RunFailure: the run directory is in use, or training diverged.
    """
    if not cfg.out:
        raise UsageError("the run needs an output folder: give --out DIR (or set out in the config)")
    resolve_device(cfg.device)  # an unavailable device or a bad loop setting is refused before any work
    check_loop_config(cfg)
    cfg = replace_config(cfg, out=os.path.abspath(cfg.out))
    run_dir = RunDir(cfg.out)
    with run_dir.lock() if is_main_process() else contextlib.nullcontext():
        seed_everything(cfg.seed)
        task = TASKS[cfg.task.kind]
        parts = task.build(cfg)
        trainer = Trainer(parts.model, parts.objective, parts.train, parts.val, parts.cfg, run_dir.root,
                          train_transform=parts.train_transform, eval_transform=parts.eval_transform,
                          select=parts.select, select_mode=parts.select_mode)
        val = trainer.fit()
        if not val and trainer.val_data is not None and not trainer.interrupted:
            val = trainer.evaluate()  # a finished run re-run (every rank: evaluation is collective)
        summary = run_summary(parts, trainer, val)
        if trainer.interrupted or not trainer.dist.is_main:
            return summary
        summary.update(task.summarise(parts, trainer, val))  # rank 0 alone: nothing collective from here
        write_checkpoint_cards(parts, trainer, val)
        run_dir.write_summary(summary)
        if parts.cfg.report:
            write_figures(run_dir, summary)
        return summary


def run_summary(parts: TaskParts, trainer: Trainer, val: dict[str, float]) -> dict[str, Any]:
    """What every task reports: the model, the schedule done, and which checkpoint holds what."""
    cfg = parts.cfg
    best = None
    if trainer.best is not None:
        best = {"checkpoint": str(trainer.run.checkpoint("best")), "epoch": trainer.best_epoch,
                "metric": trainer.select, "value": trainer.best}
    return {"task": cfg.task.kind, "model": cfg.model or getattr(cfg.task, "init", None)
            or getattr(cfg.task, "init_encoder", None),
            "params": sum(p.numel() for p in parts.model.parameters()), "epochs": trainer.epoch,
            "steps": trainer.step, "train_seconds": round(trainer.train_seconds, 1),
            "interrupted": trainer.interrupted, "nonfinite_steps": trainer.nonfinite_total,
            "skipped_images": getattr(trainer.train_data, "num_skipped", 0),
            "val": val, "last": {"checkpoint": str(trainer.run.checkpoint("last")), "epoch": trainer.epoch,
                                    "val": val},
            "best": best}


def is_main_process() -> bool:
    return process_rank() == 0


def write_figures(run_dir: RunDir, summary: dict[str, Any]) -> None:
    """RUN/figures/curves.png, confusion.png and RUN/report.html, when matplotlib is installed. Each one is
    tried on its own; one that fails is logged, never fatal: the run's results are already on disk."""
    try:
        from ..viz.curves import plot_confusion, plot_curves
        from ..viz.report import write_report
    except ImportError as e:
        log.warning("figures skipped (%s); install matplotlib: pip install 'vitkit[plot]'", e)
        return
    val = summary.get("val") or {}

    def confusion() -> None:
        plot_confusion(torch.tensor(val["confusion"]), val["labels"], run_dir.figure("confusion.png"))

    steps = [("curves", lambda: plot_curves(run_dir.root), run_dir.metrics.is_file()),
             ("confusion matrix", confusion, "confusion" in val),
             ("report", lambda: write_report(run_dir.root), True)]
    for name, draw, wanted in steps:
        if not wanted:
            continue
        try:
            draw()
        except ImportError as e:  # matplotlib is imported inside the plotting functions
            log.warning("%s skipped (%s); install matplotlib: pip install 'vitkit[plot]'", name, e)
        except Exception as e:  # a figure must not fail a finished run
            log.warning("%s not written: %s: %s", name, type(e).__name__, e)
