"""Reading checkpoint files without running code: safetensors, torch pickles (weights_only) and .npz.

`read_state_dict` is the one entry point; `vitkit.weights` builds models on top of it.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import UsageError

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")

# What `allow_pickle` may name: types that hold only data, and numpy's functions that rebuild arrays, scalars
# and dtypes from bytes (torch's weights_only loader needs them for numpy values in a checkpoint). Nothing
# else: a function (builtins.exec, os.system, shutil.copyfile, ...) is called with whatever arguments the file
# gives, and building an arbitrary class can run its code.
DATA_ONLY_GLOBALS = (
    "argparse.Namespace",
    "collections.OrderedDict",
    "numpy.ndarray",
    "numpy.dtype",  # with its classes numpy.dtypes.*DType, which pickles never name
    "numpy._core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct",  # numpy 1's names for the two above
    "numpy.core.multiarray.scalar",
)


class UnsafeCheckpointError(UsageError):
    """A pickle checkpoint that needs globals beyond plain tensors and containers (a ValueError)."""


def read_state_dict(path: str | Path, allow_pickle: Iterable[str] = ()) -> dict[str, Tensor]:
    """Read a flat {name: tensor} dict from .safetensors, .pth/.pt/.bin/.ckpt or .npz without running code.

    Pickles load with ``torch.load(weights_only=True)``; nested ``{"model": ...}`` / ``{"state_dict": ...}``
    wrappers are unwrapped.

    Args:
        path: the file.
        allow_pickle: fully qualified names of extra globals a pickle may use (e.g. ``"argparse.Namespace"``),
            allowed through `torch.serialization.safe_globals` for this load only; only names in
            `DATA_ONLY_GLOBALS` are accepted (anything else could run code when unpickled).

    Raises:
        FileNotFoundError: no such file.
        UsageError: the file is not readable (permission denied), or `allow_pickle` names a global that is
            not in `DATA_ONLY_GLOBALS`.
        UnsafeCheckpointError: the pickle needs globals not in `allow_pickle` (never loaded unsafely); the
            message suggests an `allow_pickle` only when every global it needs is in `DATA_ONLY_GLOBALS`.
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
    allowed = _allowed_globals(allow_pickle)
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        needed = [name for name in _globals_needed(path, e) if name not in allow_pickle]
        if not needed:
            raise ValueError(f"cannot read {path}: not a valid torch checkpoint ({e})") from e
        raise UnsafeCheckpointError(_refusal(path, needed, allow_pickle)) from None
    except (RuntimeError, EOFError) as e:
        raise ValueError(f"cannot read {path}: truncated or not a torch checkpoint ({e})") from e


def _allowed_globals(names: tuple[str, ...]) -> list[tuple[Any, str]]:
    """(object, name as pickles spell it) for `torch.serialization.safe_globals`; UsageError for any name not
    in `DATA_ONLY_GLOBALS`."""
    allowed = []
    for name in names:
        obj = _import_global(name)
        if name not in DATA_ONLY_GLOBALS:
            kind = ("a function" if callable(obj) and not isinstance(obj, type)
                    else "not a type known to hold only data")
            raise UsageError(f"allow_pickle names {name!r}, {kind}: unpickling it can run code, so vitkit "
                             f"never allows it (allowed: {', '.join(DATA_ONLY_GLOBALS)})")
        allowed.append((obj, name))
        if name == "numpy.dtype":  # a dtype is built as its class (numpy.dtypes.Float32DType, ...)
            allowed += [(cls, f"numpy.dtypes.{cls.__name__}") for cls in _dtype_classes(obj)]
    return allowed


def _dtype_classes(dtype: type) -> list[type]:
    """numpy's per-dtype classes (numpy ≥ 1.25 names them in numpy.dtypes; a pickle never does)."""
    try:
        module = importlib.import_module("numpy.dtypes")
    except ImportError:
        return []
    classes = {id(c): c for c in vars(module).values() if isinstance(c, type) and issubclass(c, dtype)}
    return list(classes.values())  # without aliases (ByteDType is Int8DType)


def _import_global(name: str) -> Any:
    module_name, _, attr = name.rpartition(".")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2 warns on numpy 1's numpy.core
            return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise UsageError(f"allow_pickle names {name!r}, which cannot be imported") from e


def _globals_needed(path: Path, error: Exception) -> list[str]:
    """Every global the pickle names beyond torch's defaults (read without unpickling), else the one in
    `error`."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # older torch, or a file the scanner cannot parse
        return sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(error))))


def _refusal(path: Path, needed: list[str], allowed: tuple[str, ...]) -> str:
    """Why a pickle was not loaded; suggests `allow_pickle` only when every needed global may be allowed."""
    head = f"{path} is a pickle that needs {', '.join(needed)} beyond plain tensors, so it was not loaded"
    code = [name for name in needed if name not in DATA_ONLY_GLOBALS]
    if code:
        return (f"{head}: unpickling {', '.join(code)} can run code, so vitkit never allows it. Open it only "
                "if you trust its source, and keep its tensors as .safetensors")
    suggest = tuple(dict.fromkeys((*allowed, *needed)))
    return (f"{head} (unpickling other types can run code). These hold only data; if you trust the file, "
            f"allow them: load_pretrained(..., allow_pickle={suggest!r})")


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


def write_safetensors(tensors: dict[str, Tensor], path: str | Path,
                      metadata: dict[str, str] | None = None) -> Path:
    """Save `tensors` to `path` as safetensors with the mode any new file gets here (0644 under umask 022):
    safetensors writes a private temporary file (0600) and renames it, so others sharing a run could not read
    it."""
    from safetensors.torch import save_file

    path = Path(path)
    save_file(tensors, str(path), metadata=metadata)
    os.chmod(path, 0o666 & ~_umask())
    return path


def _umask() -> int:
    """This process's umask (reading it means setting it: 0o077 meanwhile errs on the private side)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask
