"""Write an image folder (``DIR/<class>/<image>``) as WebDataset tar shards, plus their index.

Each sample is ``<key>.<ext>`` (the image file's bytes unchanged: ``jpg``, ``png``, ...), ``<key>.cls``
(the class index as text) and ``<key>.path`` (the image's path relative to DIR); keys are the sample
numbers, ``00000042``. Beside the shards, ``classes.json`` (`vitkit.data.shards.SHARD_INDEX`) holds the class
names, the samples per class and per shard: the readers take the epoch length and the class names from it,
and skip whole shards when resuming.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import random
import tarfile
from pathlib import Path

from tqdm import tqdm

from ..errors import UsageError
from .datasets import VAL_FOLDER_NAMES
from .folder import find_samples
from .shards import SHARD_INDEX

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ShardsWritten:
    """What `write_shards` wrote."""

    shards: list[Path]
    classes: list[str]
    class_counts: list[int]
    index: Path

    @property
    def num_samples(self) -> int:
        return sum(self.class_counts)

    @property
    def pattern(self) -> str:
        """A brace list naming every shard (what ``--data`` takes)."""
        first, last = self.shards[0].stem, self.shards[-1].stem
        prefix, _, _ = first.rpartition("-")
        start, end = first.rpartition("-")[2], last.rpartition("-")[2]
        return str(self.shards[0].parent / f"{prefix}-{{{start}..{end}}}.tar")


def write_shards(root: str | os.PathLike, out: str | os.PathLike, shard_size: int, *, shuffle: bool = False,
                 seed: int = 0, prefix: str = "shards", overwrite: bool = False,
                 progress: bool = True) -> ShardsWritten:
    """Write the images under ``root/<class>/`` into ``out/<prefix>-000000.tar``, ... of `shard_size` samples.

    Args:
        shuffle: write the samples in a seeded random order (else sorted by class, then path): readers shuffle
            shards and a buffer of samples, which mixes classes only if the shards do.
        seed: seed of that order.
        overwrite: replace shards and an index already in `out` (else refuse).

    Raises:
        FileNotFoundError / ValueError: `root` is missing or holds no class subfolders of images.
        UsageError: a bad shard size, a ``train/`` + ``val/`` tree, or existing shards without `overwrite`.
    """
    root, out = Path(root), Path(out)
    if shard_size < 1:
        raise UsageError(f"--shard-size must be >= 1, got {shard_size}")
    if (root / "train").is_dir() and any((root / v).is_dir() for v in VAL_FOLDER_NAMES):
        raise UsageError(f"{root} holds train/ and val/ splits: convert each one (vitkit shards {root}/train "
                         f"OUT/train, then {root}/val OUT/val)")
    samples, classes = find_samples(root)
    _clear(out, prefix, overwrite)
    order = list(range(len(samples)))
    if shuffle:
        random.Random(seed).shuffle(order)
    shard_paths, shard_counts, class_counts = [], {}, [0] * len(classes)
    bar = tqdm(total=len(samples), unit="img", desc="writing shards", disable=not progress)
    for start in range(0, len(order), shard_size):
        path = out / f"{prefix}-{len(shard_paths):06d}.tar"
        chunk = order[start:start + shard_size]
        _write_shard(path, [(i, *samples[i]) for i in chunk], root)
        for i in chunk:
            class_counts[samples[i][1]] += 1
        shard_paths.append(path)
        shard_counts[path.name] = len(chunk)
        bar.update(len(chunk))
    bar.close()
    index = out / SHARD_INDEX
    index.write_text(json.dumps({
        "classes": classes, "class_counts": class_counts, "shards": shard_counts, "num_samples": len(samples),
        "source": str(root.resolve()), "shuffled": shuffle, "seed": seed if shuffle else None}, indent=1))
    return ShardsWritten(shard_paths, classes, class_counts, index)


def _clear(out: Path, prefix: str, overwrite: bool) -> None:
    existing = sorted(out.glob(f"{prefix}-*.tar"))
    if (out / SHARD_INDEX).exists():
        existing.append(out / SHARD_INDEX)
    if existing and not overwrite:
        raise UsageError(f"{out} already holds shards ({existing[0].name}, ...): pass --overwrite to replace "
                         "them, or choose another OUT")
    for path in existing:
        path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _write_shard(path: Path, samples: list[tuple[int, str, int]], root: Path) -> None:
    """One tar of (sample number, image path, class index), written beside and renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for number, image_path, target in samples:
            key = f"{number:08d}"
            ext = Path(image_path).suffix.lower().lstrip(".")
            add_member(tar, f"{key}.{ext}", Path(image_path).read_bytes())
            add_member(tar, f"{key}.cls", str(target).encode())
            add_member(tar, f"{key}.path", str(Path(image_path).relative_to(root)).encode())
    os.replace(tmp, path)


def add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    """Add a file `name` holding `payload` to an open tar."""
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(payload))
