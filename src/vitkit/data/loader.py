"""Batches in a seeded, resumable, shardable order, from in-memory or file-backed datasets.

`ImageLoader` yields ``(images uint8 (B, C, H, W), targets int64 (B,))``. The order of epoch ``e`` is a pure
function of ``(seed, e)``, so a resumed run can restart mid-epoch with ``epoch(e, start_batch=k)``. Under
data parallelism each global batch of ``batch_size · world_size`` samples is split into contiguous rank
slices,
so N processes see exactly the samples one process would see in the same step.

In-memory datasets (`InMemoryImages`) are batched by tensor indexing in the calling process (no workers
needed); file-backed ones (`ImageFolder`) go through a `torch.utils.data.DataLoader` with workers; WebDataset
shards (`WebDatasetImages`) are streamed by `vitkit.data.stream.ShardLoader` (its docstring says how they
are split, how long an epoch is and what resuming guarantees). Samples that could not be decoded are
collected in `skipped` (path → reason) for the epoch summary.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ..errors import UsageError
from .folder import SkippedSample, collate_samples
from .stream import ShardLoader

log = logging.getLogger(__name__)


class ImageLoader:
    """Seeded batches of one dataset split.

    Args:
        dataset: `InMemoryImages`, `ImageFolder`, any map-style dataset of ``(image (C,H,W), target)``, or
            one held in memory with ``get_batch(index)`` (dense sets, cached features), batched by one gather.
        batch_size: samples per batch on this process.
        shuffle: permute every epoch (seeded by ``seed`` and the epoch); False keeps dataset order.
        drop_last: drop a last incomplete global batch (use for training).
        seed: order seed.
        num_workers: DataLoader workers for file-backed datasets (ignored for in-memory ones).
        rank: this process's rank under data parallelism.
        world_size: number of processes.
        pin_memory: pin batches for faster host→GPU copies.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, shuffle: bool = False, drop_last: bool = False,
                 seed: int = 0, num_workers: int = 0, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.num_workers = num_workers
        self.rank = rank
        self.world_size = world_size
        self.pin_memory = pin_memory and torch.cuda.is_available()  # pinning needs an accelerator
        self.skipped: dict[str, str] = {s.path: s.reason for s in getattr(dataset, "skipped", ())}
        self.stream: ShardLoader | None = None
        if isinstance(dataset, IterableDataset):
            self.stream = ShardLoader(dataset, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed,
                                      num_workers=num_workers, rank=rank, world_size=world_size,
                                      pin_memory=self.pin_memory)
            self.skipped = self.stream.skipped
        self._epoch = 0
        if len(self) == 0:
            raise UsageError(f"{len(dataset)} samples make no batch of {batch_size} x {world_size} "
                             f"processes with drop_last={drop_last}; lower --batch-size or give more images")

    def __len__(self) -> int:
        """Batches per epoch on each process."""
        if self.stream is not None:
            return len(self.stream)
        global_batch = self.batch_size * self.world_size
        n = len(self.dataset)
        return n // global_batch if self.drop_last else -(-n // global_batch)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch plain iteration (``for batch in loader``) uses."""
        self._epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(self._epoch)

    def batch_indices(self, epoch: int) -> list[torch.Tensor]:
        """Dataset indices of each of this process's batches in `epoch` (a pure function of seed, epoch)."""
        n = len(self.dataset)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        global_batch = self.batch_size * self.world_size
        batches = []
        for b in range(len(self)):
            chunk = order[b * global_batch:(b + 1) * global_batch]
            if len(chunk) < global_batch and self.world_size > 1:
                # pad a short last batch by wrapping so every rank gets a share (as DistributedSampler does)
                need = -(-len(chunk) // self.world_size) * self.world_size - len(chunk)
                chunk = torch.cat([chunk, order[:need]])
            share = len(chunk) // self.world_size
            batches.append(chunk[self.rank * share:(self.rank + 1) * share])
        return batches

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield this process's batches of `epoch`, starting at batch `start_batch` (for mid-epoch resume).

        WebDataset shards continue each worker's stream where batch `start_batch` left it (exactly so after
        `load_state_dict`; see `vitkit.data.stream`).
        """
        if self.stream is not None:
            yield from self.stream.epoch(epoch, start_batch)
            return
        batches = self.batch_indices(epoch)[start_batch:]
        if callable(getattr(self.dataset, "get_batch", None)):  # in memory: a batch is one tensor gather
            for index in batches:
                batch = self.dataset.get_batch(index)
                yield _pinned(batch) if self.pin_memory else batch
            return
        loader = DataLoader(self.dataset, batch_sampler=[b.tolist() for b in batches],
                            num_workers=self.num_workers, collate_fn=collate_samples,
                            pin_memory=self.pin_memory, persistent_workers=False)
        for images, targets, skipped in loader:
            self._note_skipped(skipped)
            if len(targets):
                yield images, targets

    def state_dict(self) -> dict[str, Any] | None:
        """Where a streamed epoch stands (for checkpoints); None for map-style datasets, whose position is the
        (epoch, batch) pair alone."""
        return self.stream.state_dict() if self.stream is not None else None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` (a streamed dataset's position); nothing to restore otherwise."""
        if self.stream is not None:
            self.stream.load_state_dict(state)

    def _note_skipped(self, skipped: list[SkippedSample]) -> None:
        for sample in skipped:
            self.skipped[sample.path] = sample.reason

    @property
    def num_skipped(self) -> int:
        """Distinct samples found unreadable so far (while loading into memory or while streaming)."""
        return len(self.skipped)


def _pinned(batch: Any) -> Any:
    if isinstance(batch, dict):
        return {k: v.pin_memory() for k, v in batch.items()}
    return tuple(t.pin_memory() for t in batch)
