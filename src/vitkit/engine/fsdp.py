"""FSDP2 for the trainer: shard a model with `torch.distributed.fsdp.fully_shard`, one unit per transformer
block then the root, and gather it back whole for export.

Every `vitkit.layers.Block` (encoder and MAE decoder blocks alike) becomes its own unit, so only one block's
parameters are gathered at a time; the root unit holds the rest (patch embedding, tokens, norms, heads).
With amp on, `MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)` computes in bf16 while the sharded
master weights, gradients and optimizer state stay fp32. Gradient checkpointing (the model's
``set_grad_checkpointing``, non-reentrant) composes with it: a recomputed block gathers its shard again.

A one-process FSDP run (``vitkit train --strategy fsdp`` without torchrun) joins a one-member process group
held in memory (`ensure_process_group`), so the same code and checkpoint format serve 1..N processes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from ..layers.block import Block


def ensure_process_group(device: torch.device) -> None:
    """Join a one-member process group, held in memory, if `init_distributed` made none (one process)."""
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def mixed_precision(amp: bool, dtype: torch.dtype) -> MixedPrecisionPolicy:
    """Compute in `dtype` with fp32 gradient reduction when `amp`, else fp32 throughout."""
    if not amp:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)


def shard_model(model: nn.Module, policy: MixedPrecisionPolicy) -> nn.Module:
    """`fully_shard` each transformer block, then the root (in place); returns `model`."""
    for module in model.modules():
        if isinstance(module, Block):
            fully_shard(module, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def local(t: Tensor) -> Tensor:
    """This process's shard of a DTensor (sharing its storage); a plain tensor as it is."""
    return t.to_local() if isinstance(t, DTensor) else t


def full(t: Tensor) -> Tensor:
    """The whole value of a DTensor (collective); a plain tensor as it is."""
    return t.full_tensor() if isinstance(t, DTensor) else t


@contextlib.contextmanager
def no_gradient_sync(model: nn.Module) -> Iterator[None]:
    """Accumulate gradients locally (no reduce-scatter) inside the block: FSDP2's ``no_sync``."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def full_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The whole model's state dict on CPU, gathered on rank 0 (collective; other ranks get {})."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def unsharded_copy(model: nn.Module) -> nn.Module | None:
    """A plain (unsharded) module with `model`'s weights on rank 0, built from ``model.config`` (collective;
    None on other ranks). What rank-0-only code (summaries, exports, figures) runs after an FSDP run."""
    from ..models.registry import build_model

    state = full_state_dict(model)
    if dist.get_rank() != 0:
        return None
    plain = build_model(model.config)
    plain.load_state_dict(state)
    return plain.to(local(next(model.parameters())).device).train(model.training)
