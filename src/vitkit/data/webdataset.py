"""WebDataset tar shards as a training set: samples ``<key>.<jpg|png|...>`` + ``<key>.cls``.

Each sample holds one image (``jpg``, ``jpeg``, ``png``, ``webp``, ``bmp`` or ``gif``) decoded with
`decode_array`, and its class index as text in ``cls`` (or ``label``). Sources (files, directories, globs,
brace lists, ``pipe:`` commands) and the index beside the shards are described in `vitkit.data.shards`.

`WebDatasetImages` says *what* to read; `vitkit.data.stream` says *how*: which shards each rank and each
DataLoader worker reads, the shuffle buffer, the epoch length every rank stops at, and resuming mid-epoch.
`ImageLoader` serves these sets like any other (``len(loader)``, ``loader.epoch(e, start_batch=k)``).
Shards are streamed, never held in memory.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import torch
from torch.utils.data import IterableDataset

from ..errors import UsageError
from .decode import UnreadableImage, decode_array
from .folder import SkippedSample
from .shards import IMAGE_KEYS, LABEL_KEYS, expand_sources, load_index

log = logging.getLogger(__name__)


@dataclasses.dataclass
class WebDatasetImages(IterableDataset):
    """``(image uint8 (C, H, W), target)`` samples from tar shards (see `vitkit.data.stream` for reading).

    Attributes:
        shards: shard URLs (paths or ``pipe:`` commands).
        classes: class names, index = target.
        shard_counts: samples per shard, or None when unknown (then `samples_per_epoch` must be given).
        channels, size, strict, background: as for `ImageFolder`.
        shuffle_buffer: samples each DataLoader worker holds to shuffle from (0 = read order; shards are
            still shuffled per epoch).
        samples_per_epoch: the length of a training epoch in samples (None = the number of samples).
    """

    shards: list[str]
    classes: list[str]
    shard_counts: list[int] | None = None
    channels: int = 3
    size: int | tuple[int, int] | None = None
    strict: bool = False
    background: tuple[int, int, int] = (255, 255, 255)
    shuffle_buffer: int = 0
    samples_per_epoch: int | None = None

    def __post_init__(self) -> None:
        super().__init__()
        if self.shard_counts is None and self.samples_per_epoch is None:
            raise UsageError(f"{len(self.shards)} shards of unknown size: give data.samples_per_epoch")
        if self.shuffle_buffer < 0:
            raise UsageError(f"data.shuffle_buffer must be >= 0, got {self.shuffle_buffer}")

    @property
    def num_samples(self) -> int:
        """Samples in the shards (the declared epoch length when they were not counted)."""
        return sum(self.shard_counts) if self.shard_counts is not None else int(self.samples_per_epoch)

    @property
    def epoch_samples(self) -> int:
        """Samples in one training epoch, over all ranks."""
        return self.samples_per_epoch or self.num_samples

    def __len__(self) -> int:
        return self.num_samples

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __iter__(self):
        raise TypeError("read WebDatasetImages through vitkit.data.ImageLoader (it splits shards over ranks "
                        "and workers and can resume mid-epoch)")

    def decode(self, sample: dict) -> tuple[torch.Tensor, int] | SkippedSample:
        """One raw sample → (image, target), or `SkippedSample` when its image or label is bad."""
        name = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
        image_key = next((k for k in sample if k in IMAGE_KEYS), None)
        label_key = next((k for k in LABEL_KEYS if k in sample), None)
        try:
            if image_key is None or label_key is None:
                missing = "an image" if image_key is None else "a label (.cls)"
                raise UnreadableImage(name, f"sample lacks {missing}; has {sorted(sample)}")
            target = _label(sample[label_key], name, len(self.classes))
            image = decode_array(bytes(sample[image_key]), channels=self.channels, size=self.size,
                                 background=self.background, name=name)
        except UnreadableImage as e:
            if self.strict:
                raise
            log.warning("skipping bad sample %s: %s", e.path, e.reason)
            return SkippedSample(e.path, e.reason)
        return torch.from_numpy(image), target


def _label(raw: bytes, name: str, num_classes: int) -> int:
    try:
        target = int(bytes(raw).decode().strip())
    except (ValueError, UnicodeDecodeError):
        raise UnreadableImage(name, f"label {bytes(raw)[:20]!r} is not a class index") from None
    if not 0 <= target < num_classes:
        raise UnreadableImage(name, f"class index {target} outside the {num_classes} classes")
    return target


def open_shards(spec: str, *, classes: Sequence[str] | None = None, count: bool = True,
                **kwargs) -> WebDatasetImages:
    """`WebDatasetImages` over the shards `spec` names; other keyword arguments set its fields.

    With ``count=False`` shards without an index are not read up front (`samples_per_epoch` must be given).
    """
    shards = expand_sources(spec)
    index = load_index(shards, classes, count=count)
    data = WebDatasetImages(shards, index.classes, index.shard_counts, **kwargs)
    log.info("%s: %d shards, %d classes, %s samples", spec, len(shards), len(index.classes),
             index.num_samples if index.num_samples is not None else "uncounted")
    return data


def build_webdataset_splits(cfg):
    """`DataSplits` for `DataConfig` `cfg` whose path names shards (val only from ``cfg.val_path``)."""
    from .datasets import DataSplits

    opts = dict(channels=cfg.channels, size=cfg.image_size, strict=cfg.strict, background=cfg.background)
    train = open_shards(cfg.path, count=cfg.samples_per_epoch is None, shuffle_buffer=cfg.shuffle_buffer,
                        samples_per_epoch=cfg.samples_per_epoch, **opts)
    val = open_shards(cfg.val_path, classes=train.classes, **opts) if cfg.val_path else None
    if val is None:
        log.warning("WebDataset shards are not split automatically; give held-out shards as data.val_path")
    return DataSplits(train, val, train.classes)
