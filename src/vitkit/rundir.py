"""The run directory: the one place that names a run's files, and the one resolver from a user's
``--checkpoint`` / ``--from`` value to a model on disk.

A run directory (``vitkit train --out RUN``, ``pretrain``, ``finetune``, ``linprobe``) holds::

    config.yaml            the resolved config: what ran, enough to run it again (`vitkit train --config`)
    metrics.jsonl          one JSON line per logged step (train and val), no step twice across resumes
    summary.json           the final figures
    checkpoints/last/      the latest checkpoint: config.json + model.safetensors + training state
    checkpoints/best/      the checkpoint with the best validation score (when the run evaluates)
    encoder/, classifier/  exported models (pretrain's encoder as a plain ViT; linprobe's probe as a ViT)
    figures/, report.html  pictures and the HTML report
    run.lock               held while a process writes the run (its pid and host)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import RunFailure, UsageError
from .hub import download, is_hub_name, pinned_name

log = logging.getLogger(__name__)

MODEL_CONFIG = "config.json"  # a model directory: config.json + weights (vitkit or HF transformers)
ACCEPTED = ("a run directory (RUN, from `vitkit train --out RUN`), RUN/checkpoints/best or "
            "RUN/checkpoints/last, a vitkit or HF transformers model directory (config.json + weights), "
            "a weights file (.safetensors, .pth, .bin, .npz in the timm, JAX or MAE layout), or a Hugging "
            "Face Hub name hf-hub:ORG/NAME[@REVISION] (vitkit, HF transformers or timm repo)")


class RunDir:
    """Names the files of one run directory and guards it (`lock`). Nothing else spells these names."""

    CONFIG = "config.yaml"
    METRICS = "metrics.jsonl"
    SUMMARY = "summary.json"
    CHECKPOINTS = "checkpoints"
    FIGURES = "figures"
    REPORT = "report.html"
    TENSORBOARD = "tensorboard"
    LOCK = "run.lock"
    EXPORTS = ("classifier", "encoder")  # models a task exports besides its checkpoints

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    # ---- names ---------------------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.root / self.CONFIG

    @property
    def metrics(self) -> Path:
        return self.root / self.METRICS

    @property
    def summary(self) -> Path:
        return self.root / self.SUMMARY

    @property
    def figures(self) -> Path:
        return self.root / self.FIGURES

    @property
    def report(self) -> Path:
        return self.root / self.REPORT

    @property
    def tensorboard(self) -> Path:
        return self.root / self.TENSORBOARD

    @property
    def checkpoints(self) -> Path:
        return self.root / self.CHECKPOINTS

    def checkpoint(self, name: str = "last") -> Path:
        """RUN/checkpoints/<name> ("last" or "best")."""
        return self.checkpoints / name

    def figure(self, name: str) -> Path:
        return self.figures / name

    def export(self, name: str) -> Path:
        """RUN/<name> for an exported model ("encoder", "classifier")."""
        if name not in self.EXPORTS:
            raise ValueError(f"unknown export {name!r}; one of {self.EXPORTS}")
        return self.root / name

    @classmethod
    def is_run(cls, path: str | Path) -> bool:
        """True for a folder that holds a run's config or checkpoints."""
        path = Path(path)
        return (path / cls.CONFIG).is_file() or (path / cls.CHECKPOINTS).is_dir()

    # ---- reading and writing -------------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        """The run's config.yaml as a plain mapping ({} when there is none)."""
        import yaml

        if not self.config.is_file():
            return {}
        try:
            data = yaml.safe_load(self.config.read_text()) or {}
        except yaml.YAMLError as e:
            raise UsageError(f"{self.config} is not valid YAML ({_first_line(e)}); "
                             "fix or remove it") from None
        if not isinstance(data, dict):
            raise UsageError(f"{self.config}: expected a mapping of config fields at the top level")
        return data

    def write_config(self, data: dict[str, Any]) -> Path:
        import yaml

        return write_atomic(self.config, yaml.safe_dump(data, sort_keys=False))

    def read_metrics(self) -> list[dict[str, Any]]:
        """The entries of RUN/metrics.jsonl in order (a torn last line from a killed run is left out)."""
        if not self.metrics.is_file():
            return []
        entries = []
        for line in self.metrics.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return entries

    def read_summary(self) -> dict[str, Any]:
        if not self.summary.is_file():
            return {}
        try:
            data = json.loads(self.summary.read_text())
        except json.JSONDecodeError:
            return {}
        return data if isinstance(data, dict) else {}

    def write_summary(self, summary: dict[str, Any]) -> Path:
        return write_atomic(self.summary, json.dumps(summary, indent=2))

    # ---- guarding ------------------------------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[RunDir]:
        """Hold RUN/run.lock while writing the run; a second process gets `RunFailure` naming the holder.

        A lock whose process is gone (same host) is stale and taken over; stale temporary folders left by a
        process killed mid-save are removed once the lock is held.
        """
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"--out {self.root} is a file; give a folder for the run")
        created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / self.LOCK
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_holder(path)
                if _alive(holder):
                    raise RunFailure(
                        f"{self.root} is in use by process {holder.get('pid')} on {holder.get('host')}; wait "
                        f"for it to finish, stop it, or use another --out (delete {path} if that process is "
                        "gone)") from None
                log.info("removing the stale lock of process %s", holder.get("pid"))
                path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
            break
        else:
            raise RunFailure(f"could not take {path}; another process keeps creating it")
        try:
            self.clean_stale()
            yield self
        finally:
            path.unlink(missing_ok=True)
            if created and not any(self.root.iterdir()):
                self.root.rmdir()  # a run refused before writing anything leaves no empty folder behind

    def clean_stale(self) -> list[Path]:
        """Remove ``.NAME.tmp-*`` folders that a process killed during a save left behind; return them."""
        removed = []
        for folder in (self.root, self.checkpoints):
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp-*"):
                    shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
                    removed.append(tmp)
        if removed:
            log.info("removed %d temporary folder(s) left by an interrupted save", len(removed))
        return removed


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}  # being written right now, or torn: treat as held by an unknown process


def _alive(holder: dict[str, Any]) -> bool:
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return True  # unreadable: assume someone holds it (the message says how to clear it)
    if holder.get("host") != socket.gethostname():
        return True  # another machine on a shared disk: its processes cannot be checked from here
    if pid == os.getpid():
        return False  # this process's own stale lock (an earlier run in the same process was killed)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_atomic(path: Path, text: str) -> Path:
    """Write `text` to `path` through a temporary sibling and a rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


# ---- from a --checkpoint value to a model on disk ----------------------------------------------------------
def resolve_model_path(value: str | Path, prefer: tuple[str, ...] = ("best", "last")) -> Path:
    """The model directory or weights file that a ``--checkpoint`` / ``--from`` value names.

    A run directory resolves to its exported classifier (a linear probe's, as a plain ViT) if it has one,
    else to RUN/checkpoints/<name> for the first of `prefer` that holds a model; a model directory or a
    weights file is returned as it is (a checkpoint's own ``model.safetensors`` as its directory); a hub name
    ``hf-hub:ORG/NAME[@REVISION]`` resolves to its snapshot in the Hugging Face cache (`vitkit.hub.download`).

    Raises:
        UsageError: the value names nothing, or a folder that is neither a run nor a model directory; the
            message lists what is accepted.
    """
    if is_hub_name(value):
        return download(str(value))
    path = Path(value).expanduser()
    if not path.exists():
        raise UsageError(f"{value}: no such file or folder; expected {ACCEPTED}")
    if path.is_file():
        if path.name in ("model.safetensors", "pytorch_model.bin") and (path.parent / MODEL_CONFIG).is_file():
            return path.parent
        return path
    if (path / MODEL_CONFIG).is_file():
        return path
    if RunDir.is_run(path):
        run = RunDir(path)
        candidates = [run.export("classifier")] + [run.checkpoint(name) for name in prefer]
        for candidate in candidates:
            if (candidate / MODEL_CONFIG).is_file():
                log.info("using %s", candidate)
                return candidate
        raise UsageError(f"{value} is a run directory without a saved model yet (no "
                         f"{' or '.join(str(run.checkpoint(n)) for n in prefer)}); train it first or give "
                         "a checkpoint folder")
    raise UsageError(f"{value} is a folder but neither a run nor a model directory (no {MODEL_CONFIG}); "
                     f"expected {ACCEPTED}")


def model_reference(value: str | Path) -> str:
    """What a resolved run config records for a ``--from`` / ``init`` value: the model path
    `resolve_model_path` finds, made absolute; for a hub name, that name pinned to the commit it resolved to
    (``hf-hub:ORG/NAME@<commit>``), so the run reads the same weights again."""
    path = resolve_model_path(value).resolve()
    return pinned_name(str(value), path) if is_hub_name(value) else str(path)


def run_of(model_path: str | Path) -> RunDir | None:
    """The run directory that a model path belongs to (RUN/checkpoints/best → RUN, RUN/classifier → RUN, a
    weights file inside either → RUN); None for a model that no run holds."""
    path = Path(model_path).expanduser().resolve()
    folder = path.parent if path.is_file() else path
    if folder.parent.name == RunDir.CHECKPOINTS:
        candidate = folder.parent.parent
    elif folder.name in RunDir.EXPORTS:
        candidate = folder.parent
    else:
        return None
    return RunDir(candidate) if RunDir.is_run(candidate) else None
