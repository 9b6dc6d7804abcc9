"""The trainer's model over processes: DDP or FSDP2 (``TrainConfig.strategy``), the split of the global batch,
and where each strategy's checkpoints are written and read.

ddp: every process holds the whole model; gradients are all-reduced; rank 0 writes `checkpoint` files and
tells every rank whether that worked (`run_on_main`). fsdp: parameters, gradients and optimizer state are
sharded (`engine.fsdp`); every rank writes its shard (`engine.dcp`), and any number of ranks resume it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import UsageError
from ..runconfig import TrainConfig
from . import checkpoint as ckpt
from . import dcp, fsdp
from .distributed import DistInfo, run_on_main


def wrap(model: nn.Module, ema: Any, cfg: TrainConfig, info: DistInfo, device: torch.device,
         amp_dtype: torch.dtype) -> nn.Module:
    """The module the objective calls. fsdp shards `model` and the EMA's copy alike, in place (call it before
    building the optimizer); ddp under torchrun wraps `model` in DistributedDataParallel."""
    if cfg.strategy == "fsdp":
        policy = fsdp.mixed_precision(cfg.amp, amp_dtype)
        fsdp.shard_model(model, policy)
        if ema is not None:
            fsdp.shard_model(ema.module, policy)
        return model
    if info.enabled:
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model


def no_sync(forward_model: nn.Module, model: nn.Module) -> contextlib.AbstractContextManager:
    """Accumulate gradients without synchronising them (all micro-batches but the last)."""
    if fsdp.is_sharded(model):
        return fsdp.no_gradient_sync(model)
    ddp = getattr(forward_model, "_orig_mod", forward_model)  # unwrap torch.compile
    return ddp.no_sync() if isinstance(ddp, DistributedDataParallel) else contextlib.nullcontext()


def save(last: Path, best: Path | None, model: nn.Module, optimizer: torch.optim.Optimizer, ema: Any,
         meta: dict[str, Any], ema_best: bool) -> None:
    """Write checkpoint `last` and, when `best` is given, `best` (the EMA's weights when `ema_best`, else a
    copy of `last`). Collective: every rank calls it."""
    if fsdp.is_sharded(model):
        dcp.save_sharded(last, model, optimizer, ema, meta)
        if best is not None and ema_best:
            dcp.save_sharded(best, model, optimizer, ema, meta, export=ema.module)
        elif best is not None:
            run_on_main(lambda: ckpt.copy_checkpoint(last, best), f"writing {best}")
        return

    def write() -> None:
        tensors, state = ckpt.pack_training_state(optimizer, ema)
        ckpt.save_checkpoint(last, model, tensors, {**state, **meta})
        if best is not None and ema_best:
            ckpt.save_checkpoint(best, ema.module, tensors, {**state, **meta})
        elif best is not None:
            ckpt.copy_checkpoint(last, best)

    run_on_main(write, f"writing {last}")


def load(found: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: Any,
         is_main: bool) -> dict[str, Any]:
    """Load checkpoint `found` into model, optimizer and EMA (rank 0's RNG states on rank 0); returns its
    train_state.json. A checkpoint of the other strategy is refused before (its config differs)."""
    if fsdp.is_sharded(model):
        if not dcp.is_sharded_checkpoint(found):
            raise UsageError(f"{found} is not a sharded (FSDP) checkpoint; resume it with strategy=ddp")
        return dcp.load_sharded(found, model, optimizer, ema, is_main)
    model_state, meta, tensors = ckpt.load_checkpoint_state(found)
    model.load_state_dict(model_state)
    ckpt.unpack_training_state(tensors, meta, optimizer, ema, restore_rng=is_main)
    return meta


def as_loader(data: Any, cfg: TrainConfig, info: DistInfo, device: torch.device, train: bool) -> Any:
    """`data` if it is a loader (has an ``epoch`` method), else an ImageLoader over it for this process.

    A dataset may carry an ``epoch`` number (WebDataset shards do); only a callable ``epoch`` makes a loader.
    This is the one place the global batch is split: ``cfg.batch_size / world_size`` images per process.
    On CUDA its batches are pinned, so the trainer's ``non_blocking`` copies overlap with compute.
    """
    if callable(getattr(data, "epoch", None)):
        return data
    from ..data import ImageLoader

    if cfg.batch_size % info.world_size:
        raise UsageError(f"batch_size {cfg.batch_size} must be divisible by the {info.world_size} processes")
    return ImageLoader(data, cfg.batch_size // info.world_size, shuffle=train, drop_last=train, seed=cfg.seed,
                       num_workers=cfg.data.num_workers, rank=info.rank, world_size=info.world_size,
                       pin_memory=device.type == "cuda")
