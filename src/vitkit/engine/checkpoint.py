"""Atomic training checkpoints: DIR/checkpoints/{last,best}/ each hold

    config.json + model.safetensors   the model, loadable by `vitkit.load_pretrained`
    train_state.safetensors            optimizer moments, EMA weights, torch RNG states (tensors)
    train_state.json                   step, epoch, sampler position, optimizer hyperparameters, python
                                       and numpy RNG states, run config (plain JSON: nothing to unpickle)

A checkpoint is written into a temporary sibling directory (every file fsynced), then swapped in by renames,
so a failure at any point (disk full, SIGKILL) leaves the previous checkpoint whole. `train_state.json` is
written last and marks a complete checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from ..checkpoint_files import write_safetensors
from ..config import flatten_config

log = logging.getLogger(__name__)

STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"


class CheckpointError(RuntimeError):
    pass


# ---- writing -----------------------------------------------------------------------------------------------
def save_checkpoint(directory: str | Path, model: nn.Module, tensors: dict[str, Tensor],
                    meta: dict[str, Any]) -> Path:
    """Write model + training state to `directory` atomically (replacing an older checkpoint there).

    Raises:
        CheckpointError: a model weight or state tensor is not finite (nothing is written).
    """
    directory = Path(directory)
    check_finite(model.state_dict(), "model")
    check_finite(tensors, "training state")
    directory.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_dir(directory) as tmp:
        write_model(model, tmp)
        write_safetensors({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp / STATE_TENSORS)
        write_text(tmp / STATE_JSON, json.dumps(meta))
    return directory


def copy_checkpoint(source: str | Path, directory: str | Path) -> Path:
    """Atomically replace `directory` with a copy of checkpoint `source` (e.g. last → best)."""
    source, directory = Path(source), Path(directory)
    with _atomic_dir(directory) as tmp:
        for f in source.iterdir():
            if f.is_dir():
                shutil.copytree(f, tmp / f.name)  # the dcp/ shards of an FSDP checkpoint
            else:
                shutil.copy2(f, tmp / f.name)
    return directory


@contextmanager
def _atomic_dir(directory: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `directory` to fill; on success fsync every file and swap it in, on any
    failure (disk full, an exception, a signal) delete it and leave the old `directory` untouched."""
    tmp = make_temp_dir(directory)
    try:
        yield tmp
        commit_temp_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def commit_temp_dir(tmp: Path, directory: Path) -> None:
    """fsync every file under the filled temporary directory `tmp`, then swap it in as `directory`."""
    for f in sorted(tmp.rglob("*")):
        if f.is_file():
            _fsync_file(f)
    for d in [*sorted((d for d in tmp.rglob("*") if d.is_dir()), reverse=True), tmp]:
        _fsync_dir(d)
    _swap_in(tmp, directory)


def write_model(model: nn.Module, directory: Path) -> None:
    """config.json + model.safetensors in vitkit format (what `vitkit.load_pretrained` reads)."""
    from ..weights import save_pretrained

    save_pretrained(model, directory)


def make_temp_dir(final: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a checkpoint is as readable as any other file
    return tmp


def _swap_in(tmp: Path, final: Path) -> None:
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)  # until the next rename, `old` is the checkpoint (see find_checkpoint)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_finite(tensors: dict[str, Tensor], what: str) -> None:
    bad = [k for k, v in tensors.items() if v.dtype.is_floating_point and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"refusing to save non-finite {what} tensors: {', '.join(bad[:5])}")


# ---- reading -----------------------------------------------------------------------------------------------
def find_checkpoint(directory: str | Path) -> Path | None:
    """The complete checkpoint at `directory`, or the one a crash mid-swap left at ``.NAME.old``; else
    None."""
    directory = Path(directory)
    for candidate in (directory, directory.with_name(f".{directory.name}.old")):
        if (candidate / STATE_JSON).is_file():
            return candidate
    return None


def read_meta(directory: str | Path) -> dict[str, Any]:
    """train_state.json of a checkpoint directory (step, position, run config, ...)."""
    return json.loads((Path(directory) / STATE_JSON).read_text())


def load_checkpoint_state(directory: str | Path
                          ) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Tensor]]:
    """(model state dict, training-state JSON, training-state tensors) of a checkpoint directory."""
    directory = Path(directory)
    model_state = load_file(str(directory / "model.safetensors"))
    meta = json.loads((directory / STATE_JSON).read_text())
    tensors = load_file(str(directory / STATE_TENSORS))
    return model_state, meta, tensors


# ---- optimizer and RNG state as (tensors, JSON) ------------------------------------------------------------
def optimizer_to_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, slots in sd["state"].items():
        for name, value in slots.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{name}"] = value
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_state(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor],
                         meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_to_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Python, numpy, torch CPU and CUDA generator states."""
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors = {"rng.torch": torch.get_rng_state(),
               "rng.numpy_keys": torch.from_numpy(np_keys.astype(np.int64))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    meta = {"python": [version, list(mt), gauss], "numpy": [np_name, np_pos, np_has_gauss, np_gauss]}
    return tensors, meta


def rng_from_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    version, mt, gauss = meta["python"]
    random.setstate((version, tuple(mt), gauss))
    np_name, np_pos, np_has_gauss, np_gauss = meta["numpy"]
    keys = tensors["rng.numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state((np_name, keys, np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[f"rng.cuda.{i}"] for i in range(sum(k.startswith("rng.cuda.") for k in tensors))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def check_same_model(directory: str | Path, model: nn.Module) -> None:
    """Refuse to resume a checkpoint whose config.json describes a different model than `model.config`.

    Raises:
        ValueError: listing each differing field as ``field: checkpoint → now``.
    """
    from ..models.registry import config_to_json_dict

    saved = flatten_config(json.loads((Path(directory) / "config.json").read_text()))
    current = flatten_config(json.loads(json.dumps(config_to_json_dict(model.config))))
    diff = [f"  {k}: {saved.get(k, '<missing>')!r} → {current[k]!r}" for k in sorted(current)
            if saved.get(k, "<missing>") != current[k]]
    if diff:
        raise ValueError(f"refusing to resume from {directory}: the model config differs from the "
                         "checkpoint's\n" + "\n".join(diff)
                         + "\nuse another --out directory, or restore the model settings")


def pack_training_state(optimizer: torch.optim.Optimizer, ema: Any = None
                        ) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Optimizer, RNG and EMA state as (tensors for safetensors, JSON-able dict)."""
    tensors, optim_meta = optimizer_to_state(optimizer)
    rng_tensors, rng_meta = rng_to_state()
    tensors.update(rng_tensors)
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    return tensors, {"optimizer": optim_meta, "rng": rng_meta, "ema_updates": ema.updates if ema else 0}


def unpack_training_state(tensors: dict[str, Tensor], meta: dict[str, Any], optimizer: torch.optim.Optimizer,
                          ema: Any = None, restore_rng: bool = True) -> None:
    """Inverse of `pack_training_state`; an EMA missing from the checkpoint keeps its current weights."""
    optimizer_from_state(optimizer, tensors, meta["optimizer"])
    if ema is not None:
        ema_state = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
        if ema_state:
            ema.load_state_dict(ema_state, meta["ema_updates"])
    if restore_rng:
        rng_from_state(tensors, meta["rng"])
