"""WebDataset tar shards (the ``webdataset`` extra): samples ``<key>.<jpg|png|...>`` + ``<key>.cls``.

Each sample holds one image (``jpg``, ``jpeg``, ``png``, ``webp``, ``bmp`` or ``gif``) decoded with
`decode_image`, and its class index as text in ``cls`` (or ``label``). Class names come from a
``classes.txt`` (one per line) beside the shards when there is one, else they are the indices.

Shards are streamed, never held in memory. With ``shuffle`` the shard order of each epoch is seeded by
``(seed, epoch)``; shards are divided between processes (by rank) and DataLoader workers, so every sample is
read once per epoch when the shard count divides evenly. The ``webdataset`` package is imported only here.
"""

from __future__ import annotations

import dataclasses
import logging
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import IterableDataset, get_worker_info

from .decode import UnreadableImage, decode_array
from .folder import IMAGE_EXTENSIONS, SkippedSample

log = logging.getLogger(__name__)

IMAGE_KEYS = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)
LABEL_KEYS = ("cls", "cls.txt", "label")


def expand_shards(spec: str) -> list[str]:
    """Shard paths from a directory (every ``*.tar``), a brace pattern (``a-{000..009}.tar``) or one file."""
    path = Path(spec)
    if path.is_dir():
        shards = sorted(str(p) for p in path.glob("*.tar"))
    elif "{" in spec:
        from braceexpand import braceexpand  # installed with webdataset

        shards = list(braceexpand(spec))
    else:
        shards = [spec]
    missing = [s for s in shards if not Path(s).is_file()]
    if not shards or missing:
        detail = f"; missing {missing[:3]}" if missing else ""
        raise FileNotFoundError(f"no WebDataset shards at {spec!r}{detail}")
    return shards


def scan_shards(shards: Sequence[str]) -> tuple[int, int]:
    """(number of samples with an image, largest class index) found by reading the tar headers and labels."""
    keys, largest = set(), -1
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                if ext.lower() in IMAGE_KEYS:
                    keys.add((shard, key))
                elif ext.lower() in LABEL_KEYS:
                    largest = max(largest, int(tar.extractfile(member).read().decode().strip()))
    return len(keys), largest


@dataclasses.dataclass
class WebDatasetImages(IterableDataset):
    """Iterable ``(image uint8 (C, H, W), target)`` from tar shards; unreadable images yield `SkippedSample`.

    Attributes:
        shards: tar paths.
        classes: class names, index = target.
        num_samples: samples across all shards (for progress and loader length).
        channels, size, strict, background: as for `ImageFolder`.
        shuffle: seeded shard order per epoch.
        seed, epoch, rank, world_size: order and process split; see `for_epoch`.
    """

    shards: list[str]
    classes: list[str]
    num_samples: int
    channels: int = 3
    size: int | tuple[int, int] | None = None
    strict: bool = False
    background: tuple[int, int, int] = (255, 255, 255)
    shuffle: bool = False
    seed: int = 0
    epoch: int = 0
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        super().__init__()

    def __len__(self) -> int:
        return self.num_samples

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def for_epoch(self, epoch: int, rank: int = 0, world_size: int = 1, shuffle: bool | None = None,
                  seed: int | None = None) -> WebDatasetImages:
        """A copy that reads `epoch`'s shard order and this process's share of the shards."""
        return dataclasses.replace(self, epoch=epoch, rank=rank, world_size=world_size,
                                   shuffle=self.shuffle if shuffle is None else shuffle,
                                   seed=self.seed if seed is None else seed)

    def _my_shards(self) -> list[str]:
        order = list(range(len(self.shards)))
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(len(self.shards), generator=generator).tolist()
        mine = [self.shards[i] for i in order[self.rank::self.world_size]]
        worker = get_worker_info()
        return mine[worker.id::worker.num_workers] if worker is not None else mine

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int] | SkippedSample]:
        import webdataset as wds

        shards = self._my_shards()
        if not shards:
            return
        keep = lambda urls: urls  # noqa: E731 - splitting is done above, reproducibly
        stream = wds.WebDataset(shards, shardshuffle=False, nodesplitter=keep, workersplitter=keep,
                                empty_check=False)
        for sample in stream:
            yield self._decode(sample)

    def _decode(self, sample: dict) -> tuple[torch.Tensor, int] | SkippedSample:
        name = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
        image_key = next((k for k in sample if k.lower() in IMAGE_KEYS), None)
        label_key = next((k for k in sample if k.lower() in LABEL_KEYS), None)
        try:
            if image_key is None or label_key is None:
                raise UnreadableImage(name, f"sample lacks an image or a label (has {sorted(sample)})")
            target = int(bytes(sample[label_key]).decode().strip())
            image = decode_array(bytes(sample[image_key]), channels=self.channels, size=self.size,
                                 background=self.background, name=name)
        except UnreadableImage as e:
            if self.strict:
                raise
            log.warning("skipping unreadable sample %s: %s", e.path, e.reason)
            return SkippedSample(e.path, e.reason)
        return torch.from_numpy(image), target


def open_shards(spec: str, *, classes: Sequence[str] | None = None, **kwargs) -> WebDatasetImages:
    """`WebDatasetImages` over the shards `spec` names; other keyword arguments set its fields."""
    shards = expand_shards(spec)
    num_samples, largest = scan_shards(shards)
    if classes is None:
        names_file = Path(shards[0]).parent / "classes.txt"
        if names_file.is_file():
            classes = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        else:
            classes = [str(i) for i in range(largest + 1)]
    if largest >= len(classes):
        raise ValueError(f"{spec}: class index {largest} but only {len(classes)} class names")
    return WebDatasetImages(list(shards), list(classes), num_samples, **kwargs)


def build_webdataset_splits(cfg):
    """`DataSplits` for `DataConfig` `cfg` whose path names shards (val only from ``cfg.val_path``)."""
    from .datasets import DataSplits

    opts = dict(channels=cfg.channels, size=cfg.image_size, strict=cfg.strict, background=cfg.background)
    train = open_shards(cfg.path, shuffle=True, seed=cfg.split_seed, **opts)
    val = open_shards(cfg.val_path, classes=train.classes, **opts) if cfg.val_path else None
    if val is None:
        log.warning("WebDataset shards are not split automatically; give held-out shards as data.val_path")
    return DataSplits(train, val, train.classes)
