"""Reading WebDataset shards at scale: per-rank and per-worker splits, a shuffle buffer, equal epochs on every
rank, skipped bad samples, and resuming mid-epoch.

**Readers.** With R ranks and W DataLoader workers per rank (W = 1 without workers) there are R·W readers;
reader ``rank·W + worker`` reads every (R·W)-th shard of the epoch's shard order (seeded by ``(seed, epoch)``
when shuffling), so every rank, and every worker within it, reads a disjoint set of shards. When there are
fewer shards than readers, every reader reads all shards and keeps every (R·W)-th sample (still disjoint,
but each shard is read R·W times: write at least R·W shards with ``vitkit shards --shard-size``).

**Shuffle buffer.** Each reader passes its samples through a buffer of B samples (``data.shuffle_buffer``):
while full, each new sample takes the place of a uniformly chosen one, which is emitted. B = 0 keeps read
order. Samples are decoded after the buffer, so it holds encoded bytes.

**Equal epochs.** A training epoch (``drop_last``) has ``E = data.samples_per_epoch`` samples (default: the
count in the shard index), and every rank yields exactly ``E // (batch_size · R)`` full batches: a reader
whose shards run out starts them over (a new shard order), so no rank stops early and DDP never waits on a
missing batch. Uneven shards therefore mean that, within one epoch, some samples repeat and some are left out.
Bad samples (an undecodable image, a missing or invalid label) are skipped, replaced by the next sample,
logged with their keys and counted (`ImageLoader.num_skipped`). Evaluation (no ``drop_last``) reads each
sample once; ranks may then yield different numbers of batches.

**Resuming mid-epoch.** Batch j of a rank comes from its worker ``j mod W`` (DataLoader's round robin), and
the loader records how many samples each worker has emitted (decoded or skipped) in the batches it has handed
out; `state_dict` returns those counts and the trainer saves them with its checkpoint. A resumed epoch
starts reader w after the first ``n_w`` samples of its stream (whole shards are skipped unread when their
counts are known) with an empty shuffle buffer. Guarantee: with buffer B per worker, the resumed epoch
repeats at most B samples per worker that were already seen and leaves out exactly as many (at most B) that
were not; with B = 0 it yields exactly the batches the uninterrupted epoch would have yielded. Resuming needs
the same number of ranks, workers, batch size and buffer (refused otherwise).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import UsageError
from .decode import UnreadableImage
from .folder import SkippedSample
from .shards import iter_samples

log = logging.getLogger(__name__)


def shuffle_buffer(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Items of `items` shuffled through a buffer of `size` (0 = in order)."""
    if size <= 0:
        yield from items
        return
    buffer: list = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(size)
        buffer[i], item = item, buffer[i]
        yield item
    rng.shuffle(buffer)
    yield from buffer


def shard_order(num_shards: int, shuffle: bool, seed: int, epoch: int, repeat: int) -> list[int]:
    """The shard order of one pass (`repeat`) over the shards in `epoch`."""
    if not shuffle:
        return list(range(num_shards))
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_009 + repeat)
    return torch.randperm(num_shards, generator=generator).tolist()


@dataclasses.dataclass
class ShardReader(IterableDataset):
    """One rank's stream of batches, each from one DataLoader worker (used with ``batch_size=None``).

    Yields dicts ``{"images" uint8 (b, C, H, W), "targets" (b,), "worker", "emitted", "skipped"}``: `worker`
    is the reader's logical worker index, `emitted` the samples it has emitted so far this epoch (including
    `skips`), `skipped` the bad samples in this batch; or ``{"error": exception}`` as its last item.
    """

    data: Any  # WebDatasetImages
    batch_size: int
    epoch: int = 0
    seed: int = 0
    shuffle: bool = False
    rank: int = 0
    world_size: int = 1
    repeat: bool = False  # training: start the shards over instead of ending (see "Equal epochs")
    skips: tuple[int, ...] = (0,)  # samples already emitted, per logical worker
    worker_offset: int = 0  # physical worker p serves logical worker (p + offset) mod W

    def __post_init__(self) -> None:
        super().__init__()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            yield from self._batches()
        except (UsageError, UnreadableImage) as e:  # handed over whole: DataLoader would wrap its traceback
            yield {"error": e}

    def _batches(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        physical, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        worker = (physical + self.worker_offset) % workers
        reader, readers = self.rank * workers + worker, self.world_size * workers
        emitted = self.skips[worker]
        rng = random.Random(hash((self.seed, self.epoch, reader, emitted)))
        raw = shuffle_buffer(self._samples(reader, readers, emitted), self.data.shuffle_buffer, rng)
        images, targets, skipped, good = [], [], [], 0
        for repeat, sample in raw:
            emitted += 1
            item = self.data.decode(sample)
            if isinstance(item, SkippedSample):
                skipped.append(item)
                if repeat >= 2 and not good:
                    raise UsageError(f"reader {reader} of {readers} found no readable sample in two passes "
                                     f"over its shards; check the shards ({self.data.shards[0]}, ...)")
                continue
            images.append(item[0])
            targets.append(item[1])
            good += 1
            if len(images) == self.batch_size:
                yield _batch(images, targets, worker, emitted, skipped)
                images, targets, skipped = [], [], []
        if images or skipped:
            yield _batch(images, targets, worker, emitted, skipped)

    def _samples(self, reader: int, readers: int, skip: int) -> Iterator[tuple[int, dict]]:
        """(pass, raw sample) of this reader, after the first `skip` of them."""
        counts = self.data.shard_counts
        for repeat in itertools.count() if self.repeat else (0,):
            order = shard_order(len(self.data.shards), self.shuffle, self.seed, self.epoch, repeat)
            split_shards = len(order) >= readers
            mine = order[reader::readers] if split_shards else order
            if counts is not None:
                total = sum(counts[i] for i in mine)
                kept = total if split_shards else len(range(reader, total, readers))
                if kept == 0 and self.repeat:
                    raise UsageError(f"reader {reader} of {readers} has no samples: {sum(counts)} samples "
                                     f"in {len(order)} shards; use fewer data.num_workers or ranks")
                if skip >= kept:
                    skip -= kept
                    continue
            position = found = 0  # samples read in this pass (all shards, for splitting samples), kept
            for shard in mine:
                if split_shards and counts is not None and skip >= counts[shard]:
                    skip -= counts[shard]
                    continue
                for sample in iter_samples(self.data.shards[shard]):
                    position += 1
                    if not split_shards and (position - 1) % readers != reader:
                        continue
                    found += 1
                    if skip:
                        skip -= 1
                        continue
                    yield repeat, sample
            if self.repeat and counts is None and not found:  # else caught above, from the counts
                raise UsageError(f"reader {reader} of {readers} found no samples in its shards "
                                 f"({self.data.shards[mine[0]]}, ...)")


def _batch(images: list, targets: list, worker: int, emitted: int, skipped: list) -> dict[str, Any]:
    if len({tuple(i.shape) for i in images}) > 1:
        raise ValueError("images in a batch differ in size; set a storage size (data.image_size)")
    stacked = torch.stack(images) if images else torch.zeros(0, dtype=torch.uint8)
    return {"images": stacked, "targets": torch.tensor(targets, dtype=torch.long), "worker": worker,
            "emitted": emitted, "skipped": skipped}


def _as_is(batch: Any) -> Any:
    return batch


class ShardLoader:
    """Batches of a `WebDatasetImages` for one rank; `ImageLoader` hands stream datasets to this class.

    Args: as for `ImageLoader`; ``drop_last`` selects a training epoch (fixed length on every rank, see the
    module docstring), otherwise every sample is read once.
    """

    def __init__(self, dataset: Any, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int,
                 num_workers: int, rank: int, world_size: int, pin_memory: bool) -> None:
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last
        self.seed, self.num_workers, self.rank, self.world_size = seed, num_workers, rank, world_size
        self.pin_memory = pin_memory
        self.workers = max(1, num_workers)
        self.skipped: dict[str, str] = {}
        self._position: dict[str, Any] = {"epoch": 0, "batches": 0, "emitted": [0] * self.workers}
        self._loaded: dict[str, Any] | None = None
        self._check_split()

    def __len__(self) -> int:
        per_step = self.batch_size * self.world_size
        if self.drop_last:
            return self.dataset.epoch_samples // per_step
        return -(-self.dataset.num_samples // per_step)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches of `epoch` from batch `start_batch` on (see "Resuming mid-epoch")."""
        if self.drop_last and start_batch >= len(self):
            return
        skips = self._skips(epoch, start_batch)
        reader = ShardReader(self.dataset, self.batch_size, epoch, self.seed, self.shuffle, self.rank,
                             self.world_size, repeat=self.drop_last, skips=tuple(skips),
                             worker_offset=start_batch % self.workers)
        loader = DataLoader(reader, batch_size=None, num_workers=self.num_workers, collate_fn=_as_is,
                            pin_memory=self.pin_memory)
        position = self._position = {"epoch": epoch, "batches": start_batch, "emitted": list(skips)}
        skipped: list[str] = []  # this epoch's bad samples (`self.skipped` keeps every one seen)
        for batch in loader:
            if "error" in batch:
                raise batch["error"]
            if self.drop_last and position["batches"] >= len(self):
                break
            position["emitted"][batch["worker"]] = batch["emitted"]
            self.skipped.update((s.path, s.reason) for s in batch["skipped"])
            skipped.extend(s.path for s in batch["skipped"])
            if len(batch["targets"]):
                position["batches"] += 1
                yield batch["images"], batch["targets"]
        if skipped:
            log.warning("epoch %d: skipped %d bad samples on rank %d (first: %s)", epoch, len(skipped),
                        self.rank, ", ".join(skipped[:3]))

    def state_dict(self) -> dict[str, Any]:
        """This rank's position: epoch, batches handed out, samples emitted per worker, and the layout."""
        return {**self._position, "emitted": list(self._position["emitted"]), "layout": self._layout()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict()` (or ``{"ranks": [one per rank]}``): the next ``epoch(e, k)`` call with
        the saved epoch and batch count continues each worker's stream where it stopped.

        Raises:
            UsageError: the checkpoint was written with other ranks, workers, batch size or buffer.
        """
        if "ranks" in state:
            if len(state["ranks"]) != self.world_size:
                raise UsageError(f"the checkpoint's data position was saved by {len(state['ranks'])} "
                                 f"processes; resume with that many (not {self.world_size})")
            state = state["ranks"][self.rank]
        saved, now = state["layout"], self._layout()
        diff = [f"{k} {saved.get(k)} → {now[k]}" for k in now if saved.get(k) != now[k]]
        if diff:
            raise UsageError("cannot resume the shard stream mid-epoch with another layout ("
                             + ", ".join(diff) + "); resume with the saved settings or from an epoch end")
        self._loaded = state

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def _layout(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "workers": self.workers, "batch_size": self.batch_size,
                "shuffle_buffer": self.dataset.shuffle_buffer, "shards": len(self.dataset.shards)}

    def _skips(self, epoch: int, start_batch: int) -> list[int]:
        """Samples each logical worker emitted before batch `start_batch` of `epoch`."""
        if start_batch == 0:
            return [0] * self.workers
        loaded = self._loaded
        if loaded is not None and (loaded["epoch"], loaded["batches"]) == (epoch, start_batch):
            return list(loaded["emitted"])
        log.info("no saved data position for epoch %d batch %d: assuming no bad sample came before it",
                 epoch, start_batch)
        return [self.batch_size * len(range(w, start_batch, self.workers)) for w in range(self.workers)]

    def _check_split(self) -> None:
        readers, counts = self.world_size * self.workers, self.dataset.shard_counts
        shards = len(self.dataset.shards)
        if self.drop_last and counts is not None and sum(counts) < readers:
            raise UsageError(f"{sum(counts)} samples cannot feed {self.world_size} ranks x {self.workers} "
                             "workers; lower data.num_workers")
        if shards < readers:
            log.warning("%d shards < %d ranks x %d workers: every worker reads all shards and keeps 1/%d of "
                        "the samples; write >= %d shards (vitkit shards --shard-size) to read each once",
                        shards, self.world_size, self.workers, readers, readers)
        elif shards % readers and self.drop_last:
            log.warning("%d shards over %d readers (%d ranks x %d workers) is uneven: within an epoch some "
                        "samples repeat and others wait for the next; use a multiple of %d shards",
                        shards, readers, self.world_size, self.workers, readers)
