"""The training loop: one readable Trainer that runs any Objective.

The objective owns the loss and metrics (classification, MAE, MPP, depth, segmentation); the trainer owns the
rest: AdamW groups, warmup + cosine as a function of the step, gradient accumulation and clipping, EMA, bf16
or fp16 (GradScaler) autocast with fp32 master weights, optional torch.compile, non-finite detection,
evaluation, atomic checkpoints with automatic resume, DDP or FSDP2 (``strategy``) under torchrun, and logging
(DIR/metrics.jsonl, progress display).

Objectives must call the model through ``model(...)`` (its forward), so DDP / FSDP can synchronise gradients.
Host synchronisation per step: one read of (every rank finite, some rank asked to stop), which under torchrun
is one all-reduce, plus one all-reduce of "every rank has a batch"; metrics stay on the device until a log
step.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import config_to_dict
from ..errors import RunFailure, require
from ..objectives import Objective
from ..runconfig import TrainConfig, check_loop_config, check_resumable
from ..rundir import RunDir
from . import checkpoint as ckpt
from . import fsdp, parallel, runtime
from .batches import batch_size_of, split_batch, to_device
from .distributed import (
    agree_to_step,
    all_reduce_sum,
    init_distributed,
    local_rank,
    rank_seed,
    resolve_device,
)
from .ema import ModelEMA
from .loader_state import gather_loader_state, restore_loader_state
from .logs import MetricsLog, Progress
from .metrics import MeanMetrics
from .optim import build_optimizer
from .schedule import warmup_cosine_lr

log = logging.getLogger(__name__)

# (batch, generator) -> batch, run on the training device; the generator is seeded from (seed, step, rank).
BatchTransform = Callable[[Any, torch.Generator], Any]


class NonFiniteError(RunFailure):
    """Too many optimizer steps in a row had a non-finite loss or gradient."""


class Trainer:
    """Fit `model` with `objective` on `train_data`, evaluating on `val_data` (may be None).

    `train_data` and `val_data` are loaders: ``len(loader)`` batches per epoch and ``loader.epoch(e,
    start_batch=k)`` yielding this process's batches of epoch e from batch k on, in an order that is a pure
    function of (seed, e) — like `vitkit.data.ImageLoader`. A plain dataset of ``(image, target)`` is wrapped
    in an ImageLoader with ``cfg.batch_size`` split over the processes. Batches go to the device, then through
    `train_transform` / `eval_transform` (augmentation, normalisation), then to the objective. `select` names
    the validation metric whose maximum picks RUN/checkpoints/best (``ema_<select>`` and the EMA's weights
    when ``cfg.best_weights == "ema"``). The optimizer comes from ``cfg.optim`` (AdamW groups, layer decay,
    per-prefix lr scales).
    """

    def __init__(self, model: nn.Module, objective: Objective, train_data: Any, val_data: Any,
                 cfg: TrainConfig, out_dir: str | Path, *, train_transform: BatchTransform | None = None,
                 eval_transform: BatchTransform | None = None, select: str = "acc1",
                 select_mode: str = "max") -> None:
        check_loop_config(cfg)
        self.cfg, self.objective, self.run = cfg, objective, RunDir(out_dir)
        self.out_dir = self.run.root
        self.select = f"ema_{select}" if cfg.best_weights == "ema" else select
        require(select_mode in ("max", "min"), f"select_mode must be 'max' or 'min', got {select_mode!r}")
        self.sign = 1.0 if select_mode == "max" else -1.0  # best = the largest sign × metric
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.device = resolve_device(cfg.device, local_rank())
        self.amp_dtype = torch.float16 if cfg.amp_dtype == "fp16" else torch.bfloat16
        if cfg.amp and cfg.amp_dtype == "bf16" and not runtime.native_bf16(self.device):
            log.warning("this CPU has no native bf16 (%s): bf16 autocast runs far slower than fp32 here; "
                        "pass --no-amp (amp=false)", torch.backends.cpu.get_cpu_capability())
        runtime.configure_backends(cfg.deterministic, self.device)
        self.dist = init_distributed(self.device)
        if cfg.strategy == "fsdp":
            fsdp.ensure_process_group(self.device)  # FSDP needs a group, even of one process
        self.train_data = parallel.as_loader(train_data, cfg, self.dist, self.device, train=True)
        self.val_data = (None if val_data is None
                         else parallel.as_loader(val_data, cfg, self.dist, self.device, train=False))
        self.model = model.to(self.device)
        if cfg.grad_checkpointing:
            require(hasattr(model, "set_grad_checkpointing"), f"{type(model).__name__} has no gradient "
                    "checkpointing; set grad_checkpointing=false")
            self.model.set_grad_checkpointing(True)
        o = cfg.optim
        self.ema = ModelEMA(self.model, o.ema_decay) if o.ema_decay else None
        # FSDP shards in place: before the optimizer sees the parameters
        self.forward_model = parallel.wrap(self.model, self.ema, cfg, self.dist, self.device, self.amp_dtype)
        self.optimizer = build_optimizer(self.model, o.lr, o.weight_decay, o.betas, o.layer_decay, o.lr_scale,
                                         fused=self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp and cfg.amp_dtype == "fp16")
        if self.dist.rank:  # masks, dropout and drop path differ per rank; the weights were made before
            runtime.seed_everything(rank_seed(cfg.seed, self.dist.rank))
        if cfg.compile:
            self.forward_model = torch.compile(self.forward_model)
        self.steps_per_epoch = len(self.train_data)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.warmup_steps = round(o.warmup_epochs * self.steps_per_epoch)
        self.step = self.epoch = self.batch_in_epoch = 0  # sampler position = (epoch, batch_in_epoch)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.nonfinite_total = self.nonfinite_run = 0
        self.interrupted: str | None = None  # "SIGTERM" / "SIGINT" when a signal stopped the run
        self.epoch_seconds = 0.0  # training time of the last epoch (this session's part of it after a resume)
        self.train_seconds = 0.0  # training time of the whole run, over all sessions
        self.stop = runtime.StopFlag()
        self.stop_agreed = False  # every rank agreed to stop (set by the last step's all-reduce)
        self.logger = MetricsLog(self.run.metrics, self.run.tensorboard if cfg.tensorboard else None,
                                 self.dist.is_main)
        self.progress = Progress(self.dist.is_main)

    # ---- the loop ------------------------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train to `cfg.epochs` (resuming from RUN/checkpoints/last if present); return the last val metrics.

        A resume that is refused (another model or settings) raises before anything on disk changes; then
        RUN/config.yaml is written. On SIGTERM or SIGINT the current step finishes, a checkpoint is written
        and `fit` returns with `interrupted` set to the signal's name.
        """
        self.resume()
        if self.dist.is_main:
            self.run.write_config(config_to_dict(self.cfg))
        val: dict[str, float] = {}
        with self.stop.catch_signals(), runtime.deterministic_algorithms(self.cfg.deterministic, self.device):
            for epoch in range(self.epoch, self.cfg.epochs):
                line = self.train_epoch(epoch)
                if self.interrupted:
                    self.progress.end_epoch(f"interrupted at step {self.step}; checkpoint saved")
                    return val
                self.epoch, self.batch_in_epoch = epoch + 1, 0
                val = {}
                if self.val_data is not None and (epoch + 1 == self.cfg.epochs
                                                  or (epoch + 1) % self.cfg.eval_every == 0):
                    val = self.evaluate()
                    self.logger.write(self.step, epoch, "val", {**val, "epoch_seconds": self.epoch_seconds})
                    line += "  val " + _fmt(val)
                improved = self.select in val and (self.best is None
                                                   or self.sign * val[self.select] > self.sign * self.best)
                if improved:
                    self.best, self.best_epoch = val[self.select], epoch + 1
                self.save(best=improved)
                self.progress.end_epoch(line)
        self.logger.close()
        runtime.dump_for_test({k: fsdp.local(v) for k, v in self.model.state_dict().items()}, self.dist.rank)
        return val

    def train_epoch(self, epoch: int) -> str:
        """Train the rest of `epoch`; return its summary line (or stop early with `interrupted` set)."""
        self.model.train()
        self.progress.start_epoch(epoch, self.cfg.epochs, self.steps_per_epoch, self.batch_in_epoch)
        epoch_meter, window = MeanMetrics(self.device), MeanMetrics(self.device)
        start = window_start = time.perf_counter()
        images = images_in_window = 0
        shown_loss = float("nan")  # the progress display's loss, refreshed at log steps (no per-step sync)
        batches = iter(self.train_data.epoch(epoch, start_batch=self.batch_in_epoch))
        # Every rank agrees to stop before drawing the next batch, so a saved stream position counts trained
        # batches only: here once, then through each step's non-finite all-reduce (`train_step`).
        self.stop_agreed = agree_to_step(True, self.stop.requested is not None, self.device)[1]
        while True:
            if self.stop_agreed:  # every rank stops here
                self.save()
                self.interrupted = self.stop.requested or "SIGTERM"
                return ""
            batch = next(batches, None)
            if not agree_to_step(batch is not None, False, self.device)[0]:  # the shortest rank is done:
                break  # the epoch ends on every rank
            metrics, lr = self.train_step(to_device(batch, self.device))
            self.batch_in_epoch += 1
            images += batch_size_of(batch) * self.dist.world_size
            images_in_window += batch_size_of(batch) * self.dist.world_size
            epoch_meter.update(metrics, 1)
            window.update(metrics, 1)
            if self.step % self.cfg.log_every == 0:
                per_s = images_in_window / (time.perf_counter() - window_start)
                values = {**window.compute(), "lr": lr, "img_per_s": per_s}
                self.logger.write(self.step, epoch, "train", values)
                shown_loss, images_in_window = values.get("loss", shown_loss), 0
                window, window_start = MeanMetrics(self.device), time.perf_counter()
            self.progress.update(images / max(time.perf_counter() - start, 1e-9), shown_loss, lr)
            mid_epoch = self.batch_in_epoch < self.steps_per_epoch  # epoch ends save after evaluating
            if self.cfg.ckpt_every and self.step % self.cfg.ckpt_every == 0 and mid_epoch:
                self.save()
            runtime.crash_for_test(self.step, self.dist.rank)
        took = self.epoch_seconds = time.perf_counter() - start
        self.train_seconds += took
        notes = [f"{images / max(took, 1e-9):.0f} img/s", f"{took:.1f}s"]
        if self.nonfinite_total:
            notes.append(f"non-finite steps {self.nonfinite_total}")
        if getattr(self.train_data, "num_skipped", 0):
            notes.append(f"unreadable images skipped {self.train_data.num_skipped}")
        return (f"epoch {epoch + 1}/{self.cfg.epochs}  step {self.step}  train " + _fmt(epoch_meter.compute())
                + "  " + "  ".join(notes))

    def train_step(self, batch: Any) -> tuple[dict[str, float], float]:
        """One optimizer step over `accum_steps` micro-batches; returns (batch metrics, lr used)."""
        o = self.cfg.optim
        lr = warmup_cosine_lr(self.step, self.total_steps, o.lr, self.warmup_steps, o.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        if self.train_transform is not None:
            batch = self.train_transform(batch, self._generator())
        meter = MeanMetrics(self.device)
        finite = torch.ones((), device=self.device)
        micro_batches = split_batch(batch, o.accum_steps)
        for i, micro in enumerate(micro_batches):
            sync = i == len(micro_batches) - 1
            with (contextlib.nullcontext() if sync else self._no_sync()):
                with self._autocast():
                    out = self.objective(self.forward_model, micro)
                self.scaler.scale(out.loss / len(micro_batches)).backward()
            finite *= torch.isfinite(out.loss.detach()).float()
            meter.update(out.metrics, batch_size_of(micro))
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.clip_grad or math.inf)
        grad_norm = fsdp.full(grad_norm)  # FSDP: a replicated DTensor
        if not self.scaler.is_enabled():  # fp16: overflowing gradients are the scaler's to skip, not errors
            finite = finite * torch.isfinite(grad_norm).float()
        stop = torch.tensor(float(self.stop.requested is not None), device=self.device)
        if self.dist.enabled:  # one all-reduce: every rank finite, and whether any rank was asked to stop
            finite, stop = all_reduce_sum(torch.stack([finite, stop]))
            finite = (finite == self.dist.world_size).float()
        all_finite, self.stop_agreed = (bool(v) for v in torch.stack([finite, stop]).tolist())
        if all_finite:
            self.scaler.step(self.optimizer)  # optimizer.step(), unless fp16 gradients overflowed
            self.scaler.update()
            if self.ema is not None:
                self.ema.update(self.model)
            self.nonfinite_run = 0
        else:
            self._count_nonfinite()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {**meter.means(), "grad_norm": grad_norm.detach()}, lr  # this process's batch means

    def _count_nonfinite(self) -> None:
        self.nonfinite_total += 1
        self.nonfinite_run += 1
        log.warning("non-finite loss or gradient at step %d: update skipped (%d in a row, %d in total)",
                    self.step, self.nonfinite_run, self.nonfinite_total)
        if self.nonfinite_run >= self.cfg.max_nonfinite:
            raise NonFiniteError(
                f"stopping at step {self.step}: {self.nonfinite_run} steps in a row had a non-finite loss or "
                f"gradient; lower optim.lr, set optim.clip_grad, or check the data. Weights were not updated "
                f"by those steps and no non-finite weights were saved.")

    @torch.no_grad()
    def evaluate(self, model: nn.Module | None = None) -> dict[str, float]:
        """Mean objective metrics over `val_data`, all processes together (with the EMA's as ``ema_*``)."""
        results = self._evaluate(model or self.model)
        if self.ema is not None and model is None:
            results.update({f"ema_{k}": v for k, v in self._evaluate(self.ema.module).items()})
        return results

    def _evaluate(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        meter = MeanMetrics(self.device)
        for batch in self.val_data.epoch(0):
            batch = to_device(batch, self.device)
            if self.eval_transform is not None:
                batch = self.eval_transform(batch, self._generator())
            with self._autocast():
                out = self.objective(model, batch)
            meter.update(out.metrics, batch_size_of(batch))
        model.train(was_training)
        return meter.compute()

    def consolidate(self) -> None:
        """After an FSDP run, gather the sharded model (and EMA) into plain modules on rank 0 (collective),
        for what rank 0 does alone afterwards (summaries, exports, figures). A no-op under DDP."""
        if fsdp.is_sharded(self.model):
            self.model = fsdp.unsharded_copy(self.model)
            if self.ema is not None:
                self.ema.module = fsdp.unsharded_copy(self.ema.module)

    def export_model(self) -> nn.Module:
        """The weights a run exports (RUN/encoder, RUN/classifier): the EMA's with ``best_weights: ema``, else
        the model's."""
        return self.ema.module if self.cfg.best_weights == "ema" else self.model

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def save(self, best: bool = False) -> None:
        """Write RUN/checkpoints/last (and best: a copy, or the EMA weights): on the main process under DDP
        (the others learn whether it worked), every rank its shard under FSDP (`engine.dcp`)."""
        meta = dict(step=self.step, epoch=self.epoch, batch_in_epoch=self.batch_in_epoch, best=self.best,
                    best_epoch=self.best_epoch, nonfinite_total=self.nonfinite_total,
                    train_seconds=self.train_seconds, ema_updates=self.ema.updates if self.ema else 0,
                    config=config_to_dict(self.cfg))
        meta["data"] = gather_loader_state(self.train_data)  # a stream's per-rank, per-worker position
        parallel.save(self.run.checkpoint("last"), self.run.checkpoint("best") if best else None, self.model,
                      self.optimizer, self.ema, meta, ema_best=self.cfg.best_weights == "ema")

    def resume(self) -> bool:
        """Load RUN/checkpoints/last if it exists; refuse (changing nothing) when the model or a setting that
        decides what the run computes differs from the checkpoint's. True if resumed."""
        found = ckpt.find_checkpoint(self.run.checkpoint("last"))
        if found is None:
            if self.dist.is_main:
                self.logger.truncate_after(-1)
            return False
        ckpt.check_same_model(found, self.model)
        check_resumable(found, ckpt.read_meta(found).get("config", {}), config_to_dict(self.cfg))
        meta = parallel.load(found, self.model, self.optimizer, self.ema, self.dist.is_main)
        if not self.dist.is_main:  # only rank 0's generators are saved; the others reseed, tied to the step
            runtime.seed_everything(rank_seed(self.cfg.seed, self.dist.rank, meta["step"]))
        self.step, self.epoch, self.batch_in_epoch = meta["step"], meta["epoch"], meta["batch_in_epoch"]
        restore_loader_state(self.train_data, meta.get("data"))
        self.best, self.nonfinite_total = meta["best"], meta["nonfinite_total"]
        self.best_epoch, self.train_seconds = meta.get("best_epoch"), meta.get("train_seconds", 0.0)
        if self.dist.is_main:
            self.logger.truncate_after(self.step)
        restarts = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")  # torchrun restarted the workers
        log.info("resumed from %s at epoch %d, step %d%s", found, self.epoch, self.step,
                 f" (torchrun restart {restarts})" if restarts != "0" else "")
        return True

    # ---- helpers -------------------------------------------------------------------------------------------
    def _generator(self) -> torch.Generator:
        """Augmentation randomness as a function of (seed, step, rank): resumes reproduce it exactly."""
        seed = (self.cfg.seed * 1_000_003 + self.step) * 1_009 + self.dist.rank
        return torch.Generator(device=self.device).manual_seed(seed)

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.cfg.amp)

    def _no_sync(self) -> contextlib.AbstractContextManager:
        return parallel.no_sync(self.forward_model, self.model)


def _fmt(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "grad_norm")
