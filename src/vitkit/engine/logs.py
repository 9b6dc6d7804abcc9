"""Run logging: metrics.jsonl (append-safe across resumes), optional TensorBoard, and the terminal display
(a tqdm bar with images/s, loss, lr and ETA on a terminal; one summary line per epoch otherwise)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class MetricsLog:
    """Writes ``{"step", "epoch", "split", ...}`` lines to `path` (RUN/metrics.jsonl); only the main process
    writes.

    On resume from step s, entries with step > s (written after the checkpoint being resumed) are dropped
    first, so the file never holds a step twice.
    """

    def __init__(self, path: Path, tensorboard: Path | None = None, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tb = _tensorboard_writer(tensorboard) if enabled and tensorboard is not None else None

    def truncate_after(self, step: int) -> None:
        """Keep only entries with step <= `step` (a fresh run passes -1 and starts an empty file)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and _step_of(line) is not None and _step_of(line) <= step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)

    def write(self, step: int, epoch: int, split: str, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        entry = {"step": step, "epoch": epoch, "split": split, **values}
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a torn last line from a killed run


def _tensorboard_writer(directory: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError("TensorBoard logging needs the extra: pip install 'vitkit[tensorboard]'") from e
    return SummaryWriter(str(directory))


class Progress:
    """Per-epoch display: a tqdm bar on a terminal, else a single line when the epoch ends."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar_mode = enabled and sys.stdout.isatty()
        self.bar: Any = None

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int = 0) -> None:
        if self.bar_mode:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                            dynamic_ncols=True, leave=True)

    def update(self, images_per_s: float, loss: float, lr: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{images_per_s:.0f} img/s  loss {loss:.4f}  lr {lr:.2e}", refresh=False)
            self.bar.update(1)

    def end_epoch(self, line: str) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.enabled:
            print(line, flush=True)
