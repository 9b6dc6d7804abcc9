"""Image datasets: class-subfolder trees read lazily (`ImageFolder`) or decoded once into memory
(`InMemoryImages`).

Both are map-style datasets whose items are ``(image uint8 (C, H, W), target int)``. An unreadable file in an
`ImageFolder` yields a `SkippedSample` instead (logged with its path and reason); `collate_samples` drops
those
and reports them, and `ImageFolder.load` skips them while decoding into memory. With ``strict=True`` the
`UnreadableImage` error is raised instead.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .decode import UnreadableImage, decode_array

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


@dataclasses.dataclass(frozen=True)
class SkippedSample:
    """A sample left out because its image could not be decoded."""

    path: str
    reason: str


def find_classes(root: str | os.PathLike) -> list[str]:
    """Sorted names of the non-hidden subfolders of `root` (one per class)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root} has no class subfolders; expected {root}/<class>/<image> files")
    return classes


def find_samples(root: str | os.PathLike, classes: Sequence[str] | None = None,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS) -> tuple[list[tuple[str, int]], list[str]]:
    """List ``(path, class index)`` for every image under ``root/<class>/`` (recursively), sorted by path.

    Args:
        root: folder of class subfolders.
        classes: class names to use (e.g. the train split's); None = the subfolders of `root`.
        extensions: lower-case suffixes that count as images (case-insensitive match).

    Raises:
        ValueError: a subfolder that is not in `classes`, or no images at all.
    """
    root = Path(root)
    found = find_classes(root)
    classes = list(found if classes is None else classes)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"{root} has class folders {unknown} that the training classes {classes} lack")
    index = {name: i for i, name in enumerate(classes)}
    suffixes = tuple(e.lower() for e in extensions)
    samples = []
    for name in found:
        for path in sorted((root / name).rglob("*")):
            if path.suffix.lower() in suffixes and path.is_file() and not path.name.startswith("."):
                samples.append((str(path), index[name]))
    if not samples:
        raise ValueError(f"no images with suffixes {list(suffixes)} under {root}")
    return samples, classes


class InMemoryImages(Dataset):
    """Decoded images held as one uint8 tensor; batches are cheap tensor indexing.

    Attributes:
        images: uint8 (N, C, H, W).
        targets: int64 (N,).
        classes: class names, index = target.
        skipped: samples left out while decoding.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, classes: Sequence[str],
                 skipped: Sequence[SkippedSample] = ()) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if targets.shape != (images.shape[0],):
            raise ValueError(f"targets {tuple(targets.shape)} do not match {images.shape[0]} images")
        self.images = images
        self.targets = targets.long()
        self.classes = list(classes)
        self.skipped = list(skipped)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])

    def get_batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(images uint8 (B, C, H, W), targets (B,)) at `index`."""
        return self.images[index], self.targets[index]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> InMemoryImages:
        """The samples at `indices`, sharing class names (skipped samples stay with the parent)."""
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return InMemoryImages(self.images[index], self.targets[index], self.classes)


class ImageFolder(Dataset):
    """Images listed by path and decoded on access (use DataLoader workers to parallelise).

    Args:
        samples: ``(path, class index)`` pairs, e.g. from `find_samples`.
        classes: class names.
        channels: 3 (RGB) or 1 (grayscale).
        size: storage size: None keeps native sizes; an int resizes the shorter side and centre-crops a
            square; ``(h, w)`` resizes exactly (see `decode_image`).
        strict: raise `UnreadableImage` instead of skipping.
        background: colour transparent pixels are composited over.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], classes: Sequence[str], *, channels: int = 3,
                 size: int | tuple[int, int] | None = None, strict: bool = False,
                 background: tuple[int, int, int] = (255, 255, 255)) -> None:
        self.samples = list(samples)
        self.classes = list(classes)
        self.channels = channels
        self.size = size
        self.strict = strict
        self.background = background
        self._warned: set[str] = set()

    @classmethod
    def from_root(cls, root: str | os.PathLike, classes: Sequence[str] | None = None,
                  **kwargs) -> ImageFolder:
        """Dataset of every image under ``root/<class>/``; keyword arguments as for the constructor."""
        samples, classes = find_samples(root, classes)
        return cls(samples, classes, **kwargs)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def targets(self) -> torch.Tensor:
        return torch.tensor([t for _, t in self.samples], dtype=torch.long)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | SkippedSample:
        path, target = self.samples[index]
        result = _decode_one(path, self.channels, self.size, self.background, self.strict)
        if isinstance(result, SkippedSample):
            if result.path not in self._warned:  # once per file and process, not once per epoch
                self._warned.add(result.path)
                log.warning("skipping unreadable image %s: %s", result.path, result.reason)
            return result
        return torch.from_numpy(result), target

    def subset(self, indices: Iterable[int]) -> ImageFolder:
        """The samples at `indices`, with the same decoding settings."""
        picked = [self.samples[int(i)] for i in indices]
        return ImageFolder(picked, self.classes, channels=self.channels, size=self.size, strict=self.strict,
                           background=self.background)

    def decoded_bytes(self) -> int:
        """Bytes `load` would hold: N · C · H · W, with H, W from `size` or the first readable image."""
        if not self.samples:
            return 0
        if isinstance(self.size, int):
            h = w = self.size
        elif self.size is not None:
            h, w = self.size
        else:
            h, w = _first_native_size(self.samples)
        return len(self.samples) * self.channels * h * w

    def load(self, workers: int | None = None, progress: bool = True) -> InMemoryImages:
        """Decode every image once into an `InMemoryImages`, skipping (or, if strict, raising on) bad files.

        Args:
            workers: decoding processes; None = the CPUs this process may use. Small sets decode in-process.
            progress: show a tqdm bar (it hides itself when stderr is not a terminal).

        Raises:
            UnreadableImage: in strict mode.
            ValueError: native image sizes differ and no `size` was set, or nothing was readable.
        """
        from tqdm.auto import tqdm

        workers = _available_cpus() if workers is None else workers
        n = len(self.samples)
        chunks = [range(i, min(i + 256, n)) for i in range(0, n, 256)]
        images: torch.Tensor | None = None
        keep = torch.zeros(n, dtype=torch.bool)
        skipped: list[SkippedSample] = []
        args = [([self.samples[i][0] for i in c], self.channels, self.size, self.background, self.strict)
                for c in chunks]
        with tqdm(total=n, desc="decoding images", unit="img", disable=not progress or None,
                  leave=False) as bar:
            for chunk, results in zip(chunks, _map_chunks(args, workers if n > 2048 else 0), strict=False):
                for i, result in zip(chunk, results, strict=False):
                    if isinstance(result, SkippedSample):
                        log.warning("skipping unreadable image %s: %s", result.path, result.reason)
                        skipped.append(result)
                        continue
                    if images is None:
                        images = torch.empty((n, *result.shape), dtype=torch.uint8)  # (N, C, H, W)
                    if tuple(result.shape) != tuple(images.shape[1:]):
                        raise ValueError(f"{self.samples[i][0]} decodes to {tuple(result.shape)} but earlier "
                                         f"images to {tuple(images.shape[1:])}; set a storage size "
                                         f"(data.image_size) to hold differently sized images in memory")
                    images[i] = torch.from_numpy(result)
                    keep[i] = True
                bar.update(len(chunk))
        if images is None:
            raise ValueError(f"none of the {n} images could be decoded")
        targets = torch.tensor([t for _, t in self.samples], dtype=torch.long)
        if skipped:
            log.warning("%d of %d images were unreadable and skipped", len(skipped), n)
        return InMemoryImages(images[keep], targets[keep], self.classes, skipped)


def collate_samples(batch: Sequence[tuple[torch.Tensor, int] | SkippedSample]
                    ) -> tuple[torch.Tensor, torch.Tensor, list[SkippedSample]]:
    """DataLoader collate: stack images (B, C, H, W) and targets (B,), set skipped samples aside."""
    skipped = [item for item in batch if isinstance(item, SkippedSample)]
    good = [item for item in batch if not isinstance(item, SkippedSample)]
    if not good:
        return torch.zeros(0, dtype=torch.uint8), torch.zeros(0, dtype=torch.long), skipped
    shapes = {tuple(image.shape) for image, _ in good}
    if len(shapes) > 1:
        raise ValueError(f"images in a batch differ in size {sorted(shapes)}; set a storage size "
                         f"(data.image_size) so every image is resized the same way")
    images = torch.stack([image for image, _ in good])
    targets = torch.tensor([target for _, target in good], dtype=torch.long)
    return images, targets, skipped


def _decode_one(path: str, channels: int, size, background, strict: bool) -> np.ndarray | SkippedSample:
    try:
        return decode_array(path, channels=channels, size=size, background=background)
    except UnreadableImage as e:
        if strict:
            raise
        return SkippedSample(e.path, e.reason)


def _decode_chunk(args) -> list[np.ndarray | SkippedSample]:
    paths, channels, size, background, strict = args
    return [_decode_one(p, channels, size, background, strict) for p in paths]


def _map_chunks(args: list, workers: int):
    if workers <= 1:
        yield from map(_decode_chunk, args)
        return
    # fork is cheapest (no re-import); workers touch only Pillow and numpy.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from pool.map(_decode_chunk, args)


def _first_native_size(samples: Sequence[tuple[str, int]]) -> tuple[int, int]:
    from PIL import Image

    for path, _ in samples[:100]:
        try:
            with Image.open(path) as img:
                return img.height, img.width
        except Exception:  # noqa: BLE001 - unreadable files are reported when decoded
            continue
    raise ValueError("none of the first 100 images could be opened to read their size")


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
