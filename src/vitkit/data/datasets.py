"""From a data argument to (train, val) datasets: built-in names, image folders and WebDataset shards.

`build_datasets(DataConfig(path=...))` accepts

* nothing or a built-in name (``"digits"``, ``"mnist"``): the built-in set and its fixed held-out split;
* ``DATA/`` with ``DATA/train/<class>/`` and ``DATA/val/<class>/`` (also ``valid``/``validation``);
* ``DATA/train/<class>/`` alone, or ``DATA/<class>/``: a seeded stratified split (`val_fraction`,
  `split_seed`);
* WebDataset ``.tar`` shards (a file, a directory of them, a glob, a brace list ``shards-{000..009}.tar``
  or a ``pipe:`` command; see `vitkit.data.shards`), streamed; give the held-out shards in `val_path`;
* ``hf:/path/to/saved``: a Hugging Face ``datasets`` directory written by ``save_to_disk`` (the
  ``hfdatasets`` extra; see `vitkit.data.hfdata`).

Folders whose decoded size (N · C · H · W bytes at the storage size) is under `memory_limit_gb` are decoded
once, in parallel, into `InMemoryImages`; larger ones stream from disk through DataLoader workers.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import UsageError, require
from .builtin import BUILTIN_DATASETS, DEFAULT_BUILTIN, load_builtin
from .folder import ImageFolder, InMemoryImages, find_samples
from .hfdata import HF_PREFIX
from .shards import is_pipe, looks_like_shards
from .split import split_indices

log = logging.getLogger(__name__)

VAL_FOLDER_NAMES = ("val", "valid", "validation")


@dataclasses.dataclass
class DataConfig:
    """Where the data is and how it is read (the ``data`` section of a training config).

    Attributes:
        path: None = the default built-in set; a built-in name (``digits``, or ``builtin:digits``, which no
            folder can shadow; a resolved config writes that form); an image folder; or WebDataset shards.
        val_path: held-out folder or shards, overriding the automatic choice.
        val_fraction: share held out by the seeded split when no val folder exists (0 = no val set; None =
            0.1); built-in sets always use their own fixed held-out split (None, or that fraction).
        split_seed: seed of that split (independent of the training seed).
        image_size: storage size: an int resizes the shorter side and centre-crops a square (so mixed
            sizes can be batched and held in memory); None keeps native sizes.
        channels: 3 (RGB) or 1 (grayscale); set it to the model's ``in_chans``.
        in_memory: ``"auto"`` decodes into memory when it fits `memory_limit_gb`; ``"always"``/``"never"``.
        memory_limit_gb: decoded-size threshold for ``"auto"``.
        strict: raise on the first unreadable image instead of skipping it (``--strict-data``).
        num_workers: DataLoader workers when streaming from disk.
        decode_workers: processes for the one-off in-memory decode; None = all usable CPUs.
        background: RGB colour transparent pixels are composited over.
        shuffle_buffer: WebDataset shards: samples each DataLoader worker shuffles within (0 = read order).
        samples_per_epoch: WebDataset shards: samples in a training epoch over all ranks (None = the count
            in the shard index); every rank yields ``samples_per_epoch // global batch`` batches.
        image_column, label_column: ``hf:`` datasets: the columns to read (None = detected).
    """

    path: str | None = None
    val_path: str | None = None
    val_fraction: float | None = None
    split_seed: int = 0
    image_size: int | None = None
    channels: int = 3
    in_memory: Literal["auto", "always", "never"] = "auto"
    memory_limit_gb: float = 2.0
    strict: bool = False
    num_workers: int = 2
    decode_workers: int | None = None
    background: tuple[int, int, int] = (255, 255, 255)
    shuffle_buffer: int = 1000
    samples_per_epoch: int | None = None
    image_column: str | None = None
    label_column: str | None = None


@dataclasses.dataclass
class DataSplits:
    """The datasets of a run. `val` is None when nothing is held out."""

    train: Dataset
    val: Dataset | None
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def skipped(self) -> list:
        """Samples found unreadable while building (streamed sets report more as they are read)."""
        return [s for d in (self.train, self.val) if d is not None for s in getattr(d, "skipped", ())]


def build_datasets(cfg: DataConfig, progress: bool = True) -> DataSplits:
    """Train and val datasets for `cfg` (see the module docstring for what `cfg.path` may be).

    Raises:
        FileNotFoundError: a path that does not exist.
        KeyError: a name that is neither a path nor a built-in set.
    """
    path = cfg.path or DEFAULT_BUILTIN
    name = builtin_name(path)
    if name is not None:
        return _builtin_splits(name, cfg)
    if path.startswith(HF_PREFIX):
        from .hfdata import build_hf_splits

        return build_hf_splits(cfg)
    if looks_like_shards(path):
        from .webdataset import build_webdataset_splits

        return build_webdataset_splits(cfg)
    root = Path(path)
    if not root.exists():
        raise UsageError(f"--data {path!r} is neither an existing path nor a built-in dataset "
                         f"{sorted(BUILTIN_DATASETS)}")
    train_root, val_root = _folder_roots(root, cfg.val_path)
    train_samples, classes = find_samples(train_root)
    if val_root is not None:
        val_samples, _ = find_samples(val_root, classes)
    elif folder_val_fraction(cfg) > 0:
        train_idx, val_idx = split_indices([t for _, t in train_samples], folder_val_fraction(cfg),
                                           cfg.split_seed)
        val_samples = [train_samples[i] for i in val_idx]
        train_samples = [train_samples[i] for i in train_idx]
    else:
        val_samples = []
    log.info("%s: %d classes, %d train / %d val images", root, len(classes), len(train_samples),
             len(val_samples))
    opts = dict(channels=cfg.channels, size=cfg.image_size, strict=cfg.strict, background=cfg.background)
    train = ImageFolder(train_samples, classes, **opts)
    val = ImageFolder(val_samples, classes, **opts) if val_samples else None
    if _fits_in_memory(train, val, cfg):
        train = train.load(cfg.decode_workers, progress)
        val = val.load(cfg.decode_workers, progress) if val is not None else None
    return DataSplits(train, val, classes)


BUILTIN_PREFIX = "builtin:"
DEFAULT_VAL_FRACTION = 0.1


def builtin_name(path: str) -> str | None:
    """The built-in set `path` names (``builtin:NAME``, or a bare NAME that is not an existing path)."""
    if path.startswith(BUILTIN_PREFIX):
        name = path[len(BUILTIN_PREFIX):]
        if name not in BUILTIN_DATASETS:
            raise UsageError(f"unknown built-in dataset {name!r}; choose from {sorted(BUILTIN_DATASETS)}")
        return name
    return path if path in BUILTIN_DATASETS and not Path(path).exists() else None


def folder_val_fraction(cfg: DataConfig) -> float:
    return DEFAULT_VAL_FRACTION if cfg.val_fraction is None else cfg.val_fraction


def resolve_data(cfg: DataConfig, channels: int, image_size: int | None) -> DataConfig:
    """`cfg` as it will run: the model's channels and storage size, an absolute path (``builtin:NAME`` for a
    built-in set, so no folder of that name can shadow it) and the held-out fraction actually used.

    Raises:
        UsageError: a path that does not exist, or a val_fraction a built-in set cannot honour.
    """
    require(image_size is None or image_size >= 1, f"data.image_size must be >= 1, got {image_size}")
    require(cfg.val_fraction is None or 0.0 <= cfg.val_fraction < 1.0,
            f"data.val_fraction must be in [0, 1), got {cfg.val_fraction}")
    path = cfg.path or DEFAULT_BUILTIN
    name = builtin_name(path)
    changes: dict = {"channels": channels, "image_size": image_size}
    if name is not None:
        fraction = BUILTIN_DATASETS[name].val_fraction
        if cfg.val_fraction not in (None, fraction):
            raise UsageError(f"the built-in {name!r} set has a fixed held-out split of {fraction:.0%}; "
                             f"remove data.val_fraction={cfg.val_fraction}, or export the set to a folder")
        changes.update(path=BUILTIN_PREFIX + name, val_fraction=fraction)
    elif path.startswith(HF_PREFIX):
        saved = _absolute(path[len(HF_PREFIX):])
        changes.update(path=HF_PREFIX + saved, val_fraction=folder_val_fraction(cfg))
    elif is_pipe(path):
        changes.update(val_fraction=folder_val_fraction(cfg))
    elif not looks_like_shards(path) and not Path(path).exists():
        raise UsageError(f"--data {path!r} is neither an existing path nor a built-in dataset "
                         f"{sorted(BUILTIN_DATASETS)}")
    else:
        changes.update(path=_absolute(path), val_fraction=folder_val_fraction(cfg))
    if cfg.val_path is not None and not is_pipe(cfg.val_path):
        changes["val_path"] = _absolute(cfg.val_path)
    return dataclasses.replace(cfg, **changes)


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _builtin_splits(name: str, cfg: DataConfig) -> DataSplits:
    train = _resized(load_builtin(name, "train", cfg.channels), cfg.image_size)
    val = _resized(load_builtin(name, "val", cfg.channels), cfg.image_size)
    return DataSplits(train, val, train.classes)


def _resized(data: InMemoryImages, size: int | None) -> InMemoryImages:
    if size is None or tuple(data.images.shape[-2:]) == (size, size):
        return data
    images = F.interpolate(data.images.float(), size=(size, size), mode="bilinear", antialias=True,
                           align_corners=False)
    images = images.round().clamp(0, 255).to(torch.uint8)
    return InMemoryImages(images, data.targets, data.classes, data.skipped)


def _folder_roots(root: Path, val_path: str | None) -> tuple[Path, Path | None]:
    if not root.is_dir():
        raise UsageError(f"--data {root} is a file; give a folder of class subfolders or .tar shards")
    train_root = root / "train" if (root / "train").is_dir() else root
    if val_path is not None:
        return train_root, Path(val_path)
    if train_root != root:
        for name in VAL_FOLDER_NAMES:
            if (root / name).is_dir():
                return train_root, root / name
    return train_root, None


def _fits_in_memory(train: ImageFolder, val: ImageFolder | None, cfg: DataConfig) -> bool:
    if cfg.in_memory != "auto":
        return cfg.in_memory == "always"
    total = train.decoded_bytes() + (val.decoded_bytes() if val is not None else 0)
    fits = total <= cfg.memory_limit_gb * 2**30
    log.info("decoded size %.2f GB %s the %.2f GB in-memory limit: %s", total / 2**30,
             "within" if fits else "over", cfg.memory_limit_gb, "in memory" if fits else "streaming")
    return fits
