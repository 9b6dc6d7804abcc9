"""Seeded, stratified train/val splits: the same (targets, fraction, seed) always gives the same split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def split_indices(targets: Sequence[int] | np.ndarray, val_fraction: float, seed: int = 0,
                  stratify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into (train, val), both sorted, deterministic given `seed`.

    With `stratify`, each class contributes ``round(val_fraction · n_class)`` samples to val (at least one
    when the class has two or more), so class balance is kept even for small sets.

    Args:
        targets: class index per sample (N,).
        val_fraction: fraction of samples in val, in [0, 1).
        seed: split seed; independent of the training seed.
        stratify: split per class rather than over the whole set.

    Returns:
        (train_indices, val_indices), int64 arrays that partition ``range(N)``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    targets = np.asarray(targets, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if not stratify:
        order = rng.permutation(len(targets))
        n_val = round(val_fraction * len(targets))
        return np.sort(order[n_val:]), np.sort(order[:n_val])
    val_parts = []
    for cls in np.unique(targets):
        members = np.flatnonzero(targets == cls)
        n_val = round(val_fraction * len(members))
        if val_fraction > 0 and n_val == 0 and len(members) >= 2:
            n_val = 1
        val_parts.append(rng.permutation(members)[:n_val])
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(len(targets)), val, assume_unique=True)
    return train.astype(np.int64), val.astype(np.int64)
