"""Sharded checkpoints of FSDP runs with `torch.distributed.checkpoint` (DCP). A checkpoint directory holds

    dcp/                               model, optimizer and EMA state: one ``__<rank>_0.distcp`` file per
                                       rank plus DCP's ``.metadata``; any number of processes load it
    config.json + model.safetensors    the whole model gathered on rank 0 (what `vitkit.load_pretrained`,
                                       exports and evaluation read), as in a DDP checkpoint
    train_state.safetensors            rank 0's RNG states
    train_state.json                   step, epoch, sampler position, best score, run config; written last

Every rank writes its shard into one temporary sibling directory (rank 0 makes it and broadcasts its name);
after `dcp.save` returns (DCP has committed ``.metadata``), rank 0 adds the rest, fsyncs and renames it into
place, exactly as `checkpoint.save_checkpoint` does. Multi-node runs need a filesystem every node shares.
The learning-rate schedule is a function of the step, so the step is the scheduler's whole state.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ..checkpoint_files import write_safetensors
from . import checkpoint as ckpt
from .distributed import broadcast_object, run_on_main
from .fsdp import unsharded_copy

SHARDS = "dcp"


def is_sharded_checkpoint(directory: Path) -> bool:
    return (Path(directory) / SHARDS / ".metadata").is_file()


def _sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer, ema: Any) -> dict[str, Any]:
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer)}
    if ema is not None:
        state["ema"] = get_model_state_dict(ema.module)
    return state


def save_sharded(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: Any,
                 meta: dict[str, Any], export: nn.Module | None = None) -> None:
    """Write the checkpoint (collective: every rank calls it). `export` (default `model`) is the module whose
    whole weights fill model.safetensors (the EMA's for a best checkpoint picked by EMA score)."""
    directory = Path(directory)
    main = dist.get_rank() == 0
    tmp = None
    if main:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.make_temp_dir(directory)
    tmp = broadcast_object(str(tmp))
    try:
        dcp.save(_sharded_state(model, optimizer, ema), checkpoint_id=Path(tmp) / SHARDS)
        plain = unsharded_copy(export or model)  # collective; the module on rank 0, None elsewhere
    except BaseException:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise

    def finish() -> None:
        try:
            ckpt.check_finite(plain.state_dict(), "model")
            ckpt.write_model(plain, Path(tmp))
            rng, rng_meta = ckpt.rng_to_state()
            write_safetensors(rng, Path(tmp) / ckpt.STATE_TENSORS)
            full_meta = {**meta, "rng": rng_meta, "format": "dcp", "ema": ema is not None,
                         "world_size": dist.get_world_size()}
            ckpt.write_text(Path(tmp) / ckpt.STATE_JSON, json.dumps(full_meta))
            ckpt.commit_temp_dir(Path(tmp), directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    run_on_main(finish, f"writing {directory}")


def load_sharded(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: Any,
                 restore_rng: bool) -> dict[str, Any]:
    """Load a sharded checkpoint into the sharded `model`, `optimizer` and `ema` (collective; any number of
    processes); returns train_state.json. An EMA missing from the checkpoint keeps its current weights."""
    directory = Path(directory)
    meta = json.loads((directory / ckpt.STATE_JSON).read_text())
    state = _sharded_state(model, optimizer, ema if meta.get("ema") else None)
    dcp.load(state, checkpoint_id=directory / SHARDS)
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optim"])
    if "ema" in state:
        set_model_state_dict(ema.module, state["ema"])
        ema.updates = meta["ema_updates"]
    if restore_rng:
        ckpt.rng_from_state(load_file(str(directory / ckpt.STATE_TENSORS)), meta["rng"])
    return meta
