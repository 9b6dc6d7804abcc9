"""Training charts from a run directory: loss / accuracy / learning-rate curves and the confusion matrix.

matplotlib (the ``plot`` extra) is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..rundir import RunDir

log = logging.getLogger(__name__)

CURVES, CONFUSION = "curves.png", "confusion.png"  # the run's figures/ these charts are saved as


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, imported on first use (the `plot` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("charts need matplotlib: pip install 'vitkit[plot]'") from e
    return plt


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The entries of the run's metrics log (`RunDir.metrics`) in file order; torn or malformed lines are
    skipped (warning)."""
    path = RunDir(run_dir).metrics
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (is {run_dir} a `vitkit train --out` directory?)")
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s:%d: skipping a malformed line", path, n)
            continue
        if isinstance(entry, dict) and "step" in entry:
            entries.append(entry)
    return entries


def _series(entries: list[dict[str, Any]], split: str, key: str) -> tuple[list[float], list[float]]:
    rows = sorted((e["step"], e[key]) for e in entries
                  if e.get("split") == split and isinstance(e.get(key), (int, float)))
    return [r[0] for r in rows], [r[1] for r in rows]


def plot_curves(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """Loss, accuracy and learning rate against the optimizer step, from the run's metrics log.

    Panels: loss (every split that logs it), accuracies (keys starting with "acc", per split) and lr (train);
    a panel without data is left out. Writes `path` (default: the run's figure `CURVES`) and returns it.

    Raises:
        FileNotFoundError: the run has no metrics log.
        ValueError: it holds no plottable values.
    """
    entries = read_metrics(run_dir)
    splits = sorted({str(e.get("split")) for e in entries}, key=lambda s: (s != "train", s))
    acc_keys = sorted({k for e in entries for k in e if k.startswith("acc")})
    panels = [("loss", [(s, "loss") for s in splits]),
              ("accuracy", [(s, k) for s in splits for k in acc_keys]),
              ("learning rate", [("train", "lr")])]
    panels = [(title, [(s, k, *_series(entries, s, k)) for s, k in lines]) for title, lines in panels]
    panels = [(title, [line for line in lines if line[2]]) for title, lines in panels]
    panels = [(title, lines) for title, lines in panels if lines]
    if not panels:
        raise ValueError(f"{RunDir(run_dir).metrics} holds no loss, accuracy or lr values")
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels, strict=False):
        for split, key, steps, values in lines:
            style = "-" if split == "train" else "o-"
            label = split if title != "accuracy" else f"{split} {key}"
            ax.plot(steps, values, style, markersize=3, linewidth=1.2, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if title == "loss" and all(v > 0 for line in lines for v in line[3]):
            ax.set_yscale("log")
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        else:
            ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    out = Path(path) if path is not None else RunDir(run_dir).figure(CURVES)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_confusion(matrix: Sequence[Sequence[int]] | np.ndarray, labels: Sequence[str] | None,
                   path: str | Path, normalize: bool = True) -> Path:
    """Confusion matrix (K, K) — rows true class, columns predicted — as a heat map; counts written in the
    cells for K ≤ 20. Colours are row-normalised (per-class recall) when `normalize`."""
    cm = np.asarray(matrix, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix must be square (K, K), got shape {cm.shape}")
    K = cm.shape[0]
    labels = [str(x) for x in labels] if labels else [str(i) for i in range(K)]
    if len(labels) != K:
        raise ValueError(f"{len(labels)} labels for a {K}×{K} confusion matrix")
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    plt = pyplot()
    side = min(12.0, 2.5 + 0.4 * K)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ticks = range(K) if K <= 40 else range(0, K, max(1, K // 20))
    ax.set_xticks(list(ticks), [labels[i] for i in ticks], rotation=90 if K > 10 else 0, fontsize=7)
    ax.set_yticks(list(ticks), [labels[i] for i in ticks], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if K <= 20:
        for i in range(K):
            for j in range(K):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if shown[i, j] > 0.5 * shown.max() else "black")
    label = "fraction of true class" if normalize else "count"
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=label)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
