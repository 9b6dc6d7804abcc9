"""Batch plumbing for the trainer: move batches to a device, measure and split them into micro-batches.
Batches are tensors or (nested) tuples, lists and dicts of tensors."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def batch_size_of(batch: Any) -> int:
    """Length of the first tensor found in `batch`."""
    if isinstance(batch, Tensor):
        return batch.shape[0]
    values = batch.values() if isinstance(batch, dict) else batch
    for v in values:
        n = batch_size_of(v)
        if n:
            return n
    return 0


def split_batch(batch: Any, parts: int) -> list[Any]:
    """Split every tensor of `batch` along dim 0 into `parts` micro-batches (for gradient accumulation)."""
    if parts == 1:
        return [batch]
    if isinstance(batch, Tensor):
        return list(batch.tensor_split(parts))
    if isinstance(batch, dict):
        pieces = {k: split_batch(v, parts) for k, v in batch.items()}
        return [{k: pieces[k][i] for k in batch} for i in range(parts)]
    if isinstance(batch, (list, tuple)):
        pieces = [split_batch(v, parts) for v in batch]
        return [type(batch)(p[i] for p in pieces) for i in range(parts)]
    return [batch] * parts
