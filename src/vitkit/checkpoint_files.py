"""Reading checkpoint files without running code: safetensors, torch pickles (weights_only) and .npz.

`read_state_dict` is the one entry point; `vitkit.weights` builds models on top of it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import Tensor

from .errors import UsageError

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


class UnsafeCheckpointError(ValueError):
    """A pickle checkpoint that needs globals beyond plain tensors and containers."""


def read_state_dict(path: str | Path, allow_pickle: Iterable[str] = ()) -> dict[str, Tensor]:
    """Read a flat {name: tensor} dict from .safetensors, .pth/.pt/.bin/.ckpt or .npz without running code.

    Pickles load with ``torch.load(weights_only=True)``; nested ``{"model": ...}`` / ``{"state_dict": ...}``
    wrappers are unwrapped.

    Args:
        path: the file.
        allow_pickle: fully qualified names of extra globals a pickle may use (e.g. ``"argparse.Namespace"``),
            allowed through `torch.serialization.safe_globals` for this load only. Name only types you trust.

    Raises:
        FileNotFoundError: no such file.
        UsageError: the file is not readable (permission denied).
        UnsafeCheckpointError: the pickle needs globals not in `allow_pickle` (never loaded unsafely).
        ValueError: empty, truncated or corrupt files, object arrays in an .npz, no tensors found.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    _check_readable(path)
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint file {path} is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix == ".npz":
        return _read_npz(path)
    if suffix in PICKLE_SUFFIXES:
        return _unwrap(_read_pickle(path, tuple(allow_pickle)), path)
    raise ValueError(f"unknown checkpoint type {path.name!r}: expected .safetensors, .npz or one of "
                     f"{', '.join(PICKLE_SUFFIXES)}")


def _check_readable(path: Path) -> None:
    """Raise `UsageError` for a file this process may not read; the readers would misreport it (safetensors
    says "No such file or directory", numpy "truncated or corrupt")."""
    try:
        open(path, "rb").close()
    except PermissionError as e:
        raise UsageError(f"cannot read {path}: permission denied; give this user read access to it (chmod, "
                         "chown) or load it as a user who may read it") from e


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises SafetensorError / OSError variants for bad headers and sizes
        raise ValueError(f"cannot read safetensors file {path} ({path.stat().st_size} bytes): it is "
                         f"truncated or corrupt ({e})") from e


def _read_npz(path: Path) -> dict[str, Tensor]:
    import zipfile

    import numpy as np

    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ValueError(f"cannot read .npz file {path}: truncated or corrupt ({e})") from e
    out = {}
    with archive:
        for key in archive.files:
            try:
                array = archive[key]
            except ValueError as e:  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
                raise ValueError(f"{path} holds an object array {key!r}; vitkit refuses .npz files that need "
                                 "pickle to load (they can run code)") from e
            out[key] = torch.from_numpy(np.ascontiguousarray(array))
    return out


def _read_pickle(path: Path, allow_pickle: tuple[str, ...]) -> Any:
    import pickle

    allowed = [_resolve_global(name) for name in allow_pickle]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        needed = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(e))))
        if not needed:
            raise ValueError(f"cannot read {path}: not a valid torch checkpoint ({e})") from e
        raise UnsafeCheckpointError(
            f"{path} is a pickle that needs {', '.join(needed)} beyond plain tensors, so it was not loaded "
            f"(unpickling such files can run arbitrary code). If you trust the file, allow exactly those "
            f"types: load_pretrained(..., allow_pickle={tuple(needed)!r})") from None
    except (RuntimeError, EOFError) as e:
        raise ValueError(f"cannot read {path}: truncated or not a torch checkpoint ({e})") from e


def _resolve_global(name: str) -> Any:
    import importlib

    module_name, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"allow_pickle names {name!r}, which cannot be imported") from e


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    """The tensor dict inside a checkpoint: itself, or under "model" / "state_dict" / "module"."""
    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, Tensor) for v in obj.values()):
            return dict(obj)
        if isinstance(obj, dict):
            wrappers = ("model", "state_dict", "module")
            inner = next((obj[k] for k in wrappers if isinstance(obj.get(k), dict)), None)
            if inner is not None:
                obj = inner
                continue
        break
    raise ValueError(f"{path} holds no flat {{name: tensor}} state dict (found {type(obj).__name__})")
