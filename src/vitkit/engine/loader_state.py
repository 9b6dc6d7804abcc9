"""The data loader's position in a checkpoint: what a streamed dataset needs to resume mid-epoch.

Map-style datasets resume from the trainer's (epoch, batch_in_epoch) alone; a streamed one
(`vitkit.data.stream.ShardLoader`, through `ImageLoader`) also records how many samples each rank and each
DataLoader worker has emitted. Every rank calls `gather_loader_state` (it is collective); rank 0 saves the
result under ``data`` in train_state.json, and every rank hands it back with `restore_loader_state`.
"""

from __future__ import annotations

from typing import Any

from .distributed import all_gather_object


def gather_loader_state(loader: Any) -> dict[str, Any] | None:
    """``{"ranks": [each rank's loader.state_dict()]}``, or None when the loader keeps no state."""
    state_dict = getattr(loader, "state_dict", None)
    state = state_dict() if callable(state_dict) else None
    gathered = all_gather_object(state)
    return None if all(s is None for s in gathered) else {"ranks": gathered}


def restore_loader_state(loader: Any, state: dict[str, Any] | None) -> None:
    """Give a checkpoint's ``data`` entry back to the loader (nothing to do when either side has none)."""
    load_state_dict = getattr(loader, "load_state_dict", None)
    if state is not None and callable(load_state_dict):
        load_state_dict(state)
