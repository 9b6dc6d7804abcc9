"""Hugging Face ``datasets`` as a labelled image set: ``data.path: hf:/path/to/saved`` (the ``hfdatasets``
extra).

The path is a directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``. A DatasetDict's
``train`` split trains and its ``validation`` (or ``val``, ``valid``, ``test``) split is held out; a single
Dataset is split like an image folder (``data.val_fraction``, ``data.split_seed``), or held out by
``data.val_path: hf:/other/saved``.

Columns: the image column is the one ``Image`` feature, the label column the one ``ClassLabel`` feature (else
the one integer column named ``label``, ``labels``, ``target``, ``class`` or ``fine_label``); name them with
``data.image_column`` / ``data.label_column`` when that is ambiguous. ClassLabel names become the class
names. Images are decoded by `decode_array` from their stored bytes, like every other source.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..errors import UsageError
from .decode import UnreadableImage, decode_array
from .folder import SkippedSample
from .split import split_indices

log = logging.getLogger(__name__)

HF_PREFIX = "hf:"
VAL_SPLITS = ("validation", "val", "valid", "test")
LABEL_NAMES = ("label", "labels", "target", "class", "fine_label")


class HFImages(Dataset):
    """Map-style ``(image uint8 (C, H, W), target)`` over a `datasets.Dataset` (bad images: `SkippedSample`).

    Args:
        table: the Dataset.
        image_column, label_column: columns to read.
        classes: class names, index = label.
        channels, size, strict, background: as for `ImageFolder`.
    """

    def __init__(self, table: Any, image_column: str, label_column: str, classes: list[str], *,
                 channels: int = 3, size: int | tuple[int, int] | None = None, strict: bool = False,
                 background: tuple[int, int, int] = (255, 255, 255)) -> None:
        from datasets import Image

        self.table = table.cast_column(image_column, Image(decode=False))  # stored bytes, decoded by us
        self.image_column, self.classes = image_column, list(classes)
        self.labels = [int(t) for t in table[label_column]]
        self.channels, self.size, self.strict, self.background = channels, size, strict, background
        bad = sorted({t for t in self.labels if not 0 <= t < len(self.classes)})
        if bad:
            raise UsageError(f"column {label_column!r} holds labels {bad[:5]} outside 0..{len(classes) - 1} "
                             "(-1 often marks unlabelled rows); filter them out before save_to_disk")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def samples(self) -> list[tuple[str, int]]:
        """``(row name, class index)`` per row, as `ImageFolder.samples` lists (path, class index)."""
        return [(f"row {i}", t) for i, t in enumerate(self.labels)]

    def subset(self, indices: list[int]) -> HFImages:
        picked = HFImages.__new__(HFImages)
        picked.__dict__.update(self.__dict__)
        picked.table = self.table.select(indices)
        picked.labels = [self.labels[i] for i in indices]
        return picked

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | SkippedSample:
        cell = self.table[int(index)][self.image_column]
        name = cell.get("path") or f"row {index}"
        try:
            if cell.get("bytes") is None and not cell.get("path"):
                raise UnreadableImage(name, "no image stored")
            source = cell["bytes"] if cell.get("bytes") is not None else cell["path"]
            image = decode_array(source, channels=self.channels, size=self.size, background=self.background,
                                 name=name)
        except UnreadableImage as e:
            if self.strict:
                raise
            log.warning("skipping unreadable image %s: %s", e.path, e.reason)
            return SkippedSample(e.path, e.reason)
        return torch.from_numpy(image), self.labels[index]


def pick_columns(features: dict[str, Any], image_column: str | None = None,
                 label_column: str | None = None) -> tuple[str, str, list[str] | None]:
    """(image column, label column, ClassLabel names or None) of a Dataset's `features`.

    Raises:
        UsageError: a named column is missing, or none / several columns could be the image or the label.
    """
    from datasets import ClassLabel, Image, Value

    columns = sorted(features)
    images = [c for c in columns if isinstance(features[c], Image)]
    labels = [c for c in columns if isinstance(features[c], ClassLabel)]
    if not labels:
        labels = [c for c in LABEL_NAMES if c in features and isinstance(features[c], Value)
                  and "int" in features[c].dtype]
    image = _choose("image", image_column, images, columns, "an Image feature")
    label = _choose("label", label_column, labels, columns, "a ClassLabel (or an integer label) feature")
    names = features[label].names if isinstance(features[label], ClassLabel) else None
    return image, label, names


def _choose(role: str, given: str | None, candidates: list[str], columns: list[str], kind: str) -> str:
    if given is not None:
        if given not in columns:
            raise UsageError(f"data.{role}_column={given!r} is not a column; columns: {columns}")
        return given
    if len(candidates) == 1:
        return candidates[0]
    found = f"columns {candidates} all could be" if candidates else "no column is"
    raise UsageError(f"{found} the {role} ({kind}); set data.{role}_column to one of {columns}")


def load_saved(spec: str) -> Any:
    """The Dataset or DatasetDict saved at ``hf:PATH`` (or PATH)."""
    try:
        from datasets import load_from_disk
    except ImportError:
        raise ImportError("hf: data needs the `datasets` package: pip install 'vitkit[hfdatasets]'") from None
    path = Path(spec[len(HF_PREFIX):] if spec.startswith(HF_PREFIX) else spec)
    if not path.is_dir():
        raise FileNotFoundError(f"--data {spec}: no directory {path} (expected a save_to_disk folder)")
    try:
        return load_from_disk(str(path))
    except FileNotFoundError as e:
        raise UsageError(f"--data {spec}: not a save_to_disk folder ({e})") from None


def build_hf_splits(cfg: Any):
    """`DataSplits` for a `DataConfig` whose path is ``hf:PATH`` (see the module docstring)."""
    from datasets import DatasetDict

    from .datasets import DataSplits, folder_val_fraction

    saved = load_saved(cfg.path)
    val_table = None
    if isinstance(saved, DatasetDict):
        if "train" not in saved:
            raise UsageError(f"--data {cfg.path}: no 'train' split among {sorted(saved)}")
        val_table = next((saved[s] for s in VAL_SPLITS if s in saved), None)
        saved = saved["train"]
    if cfg.val_path is not None:
        val_table = load_saved(cfg.val_path)
        val_table = val_table["train"] if isinstance(val_table, DatasetDict) else val_table
    image, label, names = pick_columns(saved.features, cfg.image_column, cfg.label_column)
    if names is None:
        names = [str(i) for i in range(max(int(t) for t in saved[label]) + 1)]
    opts = dict(channels=cfg.channels, size=cfg.image_size, strict=cfg.strict, background=cfg.background)
    train = HFImages(saved, image, label, names, **opts)
    val = HFImages(val_table, image, label, names, **opts) if val_table is not None else None
    if val is None and folder_val_fraction(cfg) > 0:
        train_idx, val_idx = split_indices(train.labels, folder_val_fraction(cfg), cfg.split_seed)
        train, val = train.subset(list(train_idx)), train.subset(list(val_idx))
    log.info("%s: columns %s / %s, %d classes, %d train / %d val rows", cfg.path, image, label, len(names),
             len(train), len(val) if val is not None else 0)
    return DataSplits(train, val, names)
