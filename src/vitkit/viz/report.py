"""One self-contained HTML page per run: `write_report(run_dir)` → the run's report (`RunDir.report`).

Sections, each shown only when the run has something for it: the resolved configuration, training curves,
final metrics, the confusion matrix (classify, finetune, linprobe), sample predictions with attention-rollout
overlays (the run's classifier on a few held-out images), MAE reconstructions of held-out images (pretrain
runs), the predictions a depth / segmentation run drew, and every other figure under the run's figures/.
A section that fails is logged as a warning and left out: `write_report` runs at the end of every task and
never fails the run for a picture. Images are embedded as base64 PNG, so the page can be mailed or archived
alone.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import require
from ..rundir import RunDir
from .colormap import apply_colormap
from .curves import CONFUSION, CURVES
from .reconstruction import PANELS
from .samples import sample_predictions, sample_reconstructions

log = logging.getLogger(__name__)

DENSE_EXAMPLES = "dense_examples.png"  # the figure a depth / segmentation run draws of its val predictions
MAX_FIGURES = 40  # other figures embedded at most (the rest are listed)
MAX_FIGURE_BYTES = 4 * 2**20
MAX_TABLE_CLASSES = 30  # larger confusion matrices are shown as an image, not a table

SECTIONS = (("config", "Configuration"), ("curves", "Training curves"), ("metrics", "Final metrics"),
            ("confusion", "Confusion matrix"), ("samples", "Sample predictions"),
            ("reconstructions", "MAE reconstructions"), ("dense", "Dense predictions"),
            ("figures", "Other figures"))

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{margin-bottom:.2em} nav a{margin-right:1em} section{margin:2em 0;border-top:1px solid #ddd}
pre{background:#f6f6f6;padding:1em;overflow:auto;max-height:30em;font-size:12px}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f2f2f2} .note{color:#866;font-style:italic} img{max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0;text-align:center;font-size:12px}
figure.wrong figcaption{color:#b00} figure.right figcaption{color:#070}
.cm td{min-width:2em;text-align:center} .grid img{min-width:96px;image-rendering:pixelated}
#render-warning{display:none;background:#fdd;padding:.5em}
"""

# Shows a banner if an embedded image fails to decode; also leaves the counts on <body> for automated checks.
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.body.setAttribute('data-images', imgs.length + ' loaded ' + (imgs.length - bad.length));
  if (bad.length) { var w = document.getElementById('render-warning');
    w.textContent = bad.length + ' image(s) could not be shown.'; w.style.display = 'block'; }
});
"""


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def png_data_uri(data: bytes | np.ndarray) -> str:
    """PNG bytes, or an (H, W, 3) uint8 array (encoded with Pillow), as a data: URI."""
    if isinstance(data, np.ndarray):
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(data).save(buffer, format="PNG")
        data = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _img(uri: str, alt: str, width: int | None = None) -> str:
    size = f' width="{width}"' if width else ""
    return f'<img src="{uri}" alt="{html.escape(alt)}"{size}>'


def _embed(png: Path, used: set[Path], alt: str) -> str:
    used.add(png.resolve())
    return _img(png_data_uri(png.read_bytes()), alt)


def _config_section(run: RunDir, used: set[Path], count: int) -> str | None:
    return f"<pre>{html.escape(run.config.read_text())}</pre>" if run.config.is_file() else None


def _curves_section(run: RunDir, used: set[Path], count: int) -> str | None:
    png = run.figure(CURVES)
    if run.metrics.is_file():
        try:
            from .curves import plot_curves

            png = plot_curves(run.root)
        except (ImportError, ValueError) as e:
            log.warning("training curves not redrawn: %s", e)
    return _embed(png, used, "training curves") if png.is_file() else None


def _metrics_rows(data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key in ("confusion", "labels"):
            continue
        if isinstance(value, dict):
            rows += _metrics_rows(value, name + ".")
        elif isinstance(value, float):
            rows.append((name, f"{value:.4g}"))
        elif isinstance(value, (int, str, bool)) or value is None:
            rows.append((name, str(value)))
    return rows


def _metrics_section(run: RunDir, used: set[Path], count: int) -> str | None:
    rows = _metrics_rows(run.read_summary())
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>" if rows else None


def _find_confusion(data: Any) -> tuple[list[list[int]], list[str] | None] | None:
    """The first {"confusion": [[...]], "labels": [...]} found in the summary, depth first."""
    if isinstance(data, dict):
        if isinstance(data.get("confusion"), list) and data["confusion"]:
            return data["confusion"], data.get("labels")
        for value in data.values():
            found = _find_confusion(value)
            if found:
                return found
    return None


def confusion_table(matrix: Any, labels: list[str] | None) -> str:
    """An HTML table of a (K, K) confusion matrix, cells shaded by row-normalised value (no matplotlib)."""
    cm = np.asarray(matrix, dtype=np.int64)
    K = cm.shape[0]
    labels = [str(x) for x in labels] if labels and len(labels) == K else [str(i) for i in range(K)]
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    colours = apply_colormap(1.0 - rates, "gray", 0.0, 1.0)  # darker = more of the row
    head = "".join(f"<th>{html.escape(x)}</th>" for x in labels)
    rows = []
    for i in range(K):
        cells = []
        for j in range(K):
            r, g, b = (int(c) for c in colours[i, j])
            fg = "#fff" if rates[i, j] > 0.5 else "#000"
            cells.append(f'<td style="background:rgb({r},{g},{b});color:{fg}">{cm[i, j]}</td>')
        rows.append(f"<tr><th>{html.escape(labels[i])}</th>{''.join(cells)}</tr>")
    return (f'<table class="cm"><tr><th>true \\ predicted</th>{head}</tr>{"".join(rows)}</table>'
            f"<p>Rows: true class; columns: predicted. Shading: fraction of the true class.</p>")


def _confusion_section(run: RunDir, used: set[Path], count: int) -> str | None:
    found = _find_confusion(run.read_summary())
    png = run.figure(CONFUSION)
    if png.is_file():
        used.add(png.resolve())
    if found and len(found[0]) <= MAX_TABLE_CLASSES:
        return confusion_table(*found)
    if found and not png.is_file():
        from .curves import plot_confusion  # matplotlib: an ImportError leaves the section out

        png = plot_confusion(found[0], found[1], png)
    return _embed(png, used, "confusion matrix") if png.is_file() else None


def _figure_grid(figures: list[tuple[str, str, str]]) -> str:
    """(data URI, caption, css class) per figure → a wrapping grid of captioned images."""
    return '<div class="grid">' + "".join(
        f'<figure class="{css}">{_img(uri, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>'
        for uri, caption, css in figures) + "</div>"


def _samples_section(run: RunDir, used: set[Path], count: int) -> str | None:
    samples, note = sample_predictions(run.root, count)
    if not samples:
        log.info("no sample predictions in the report: %s", note)
        return None
    verdicts = {None: "", True: "right", False: "wrong"}
    return f"<p>{html.escape(note)}</p>" + _figure_grid(
        [(png_data_uri(s.panel), s.caption, verdicts[s.correct]) for s in samples])


def _reconstructions_section(run: RunDir, used: set[Path], count: int) -> str | None:
    figures, note = sample_reconstructions(run.root, min(count, 4))
    if not figures:
        log.info("no MAE reconstructions in the report: %s", note)
        return None
    panels = html.escape(" | ".join(PANELS))
    return f"<p>{html.escape(note)} Panels: {panels}.</p>" + _figure_grid(
        [(png_data_uri(f), f"held-out image {i + 1}", "") for i, f in enumerate(figures)])


def _dense_section(run: RunDir, used: set[Path], count: int) -> str | None:
    png = run.figure(DENSE_EXAMPLES)
    return _embed(png, used, "held-out predictions") if png.is_file() else None


def _figures_section(run: RunDir, used: set[Path], count: int) -> str | None:
    if not run.figures.is_dir():
        return None
    pngs = sorted(p for p in run.figures.rglob("*.png") if p.resolve() not in used)
    parts, skipped = [], []
    for p in pngs:
        rel = str(p.relative_to(run.root))
        if len(parts) >= MAX_FIGURES or p.stat().st_size > MAX_FIGURE_BYTES:
            skipped.append(rel)
            continue
        parts.append((png_data_uri(p.read_bytes()), rel, ""))
    if not pngs:
        return None
    extra = _note(f"Not embedded (too many or too large): {', '.join(skipped)}") if skipped else ""
    return (_figure_grid(parts) if parts else "") + extra


_BUILDERS: dict[str, Callable[[RunDir, set[Path], int], str | None]] = {
    "config": _config_section, "curves": _curves_section, "metrics": _metrics_section,
    "confusion": _confusion_section, "samples": _samples_section, "reconstructions": _reconstructions_section,
    "dense": _dense_section, "figures": _figures_section}


def _build_sections(run: RunDir, num_samples: int) -> dict[str, str]:
    """key → HTML body of every section that has something to show, in `SECTIONS` order (the figures last,
    after the others claimed their PNGs); a section that fails is logged and left out."""
    used: set[Path] = set()
    bodies = {}
    for key, title in SECTIONS:
        try:
            body = _BUILDERS[key](run, used, num_samples)
        except Exception as e:  # noqa: BLE001 — the report must still be written; say what went wrong
            log.warning("report section %r left out: %s: %s", title, type(e).__name__, e,
                        exc_info=log.isEnabledFor(logging.DEBUG))
            continue
        if body:
            bodies[key] = body
    return bodies


def write_report(run_dir: str | Path, path: str | Path | None = None, num_samples: int = 8) -> Path:
    """Write the run's HTML report (default: the run's `RunDir.report`) and return its path.

    Sections the run has nothing for (no summary, no classifier, no figures) are left out, and a section that
    fails is logged as a warning and left out, so any run directory, finished or not, gets a page.

    Args:
        run_dir: a run directory (`vitkit train --out`, pretrain, finetune, linprobe).
        path: where to write the page.
        num_samples: held-out images shown with predictions and attention overlays.

    Raises:
        UsageError: `run_dir` is not a folder.
    """
    run = RunDir(run_dir)
    what = "a file" if run.root.exists() else "no such folder"
    require(run.root.is_dir(), f"{run_dir} is not a run directory ({what}); give the --out folder of a run")
    bodies = _build_sections(run, num_samples)
    shown = [(key, title) for key, title in SECTIONS if key in bodies]
    nav = "".join(f'<a href="#{key}">{title}</a>' for key, title in shown)
    sections = "".join(f'<section id="{key}"><h2>{title}</h2>{bodies[key]}</section>' for key, title in shown)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    name = html.escape(run.root.resolve().name)
    empty = "" if shown else _note("Nothing to show yet: the run has no config, metrics, model or figures.")
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>vitkit run {name}</title>'
            f"<style>{_STYLE}</style></head><body><div id=\"render-warning\"></div><h1>Run {name}</h1>"
            f"<p>{html.escape(str(run.root.resolve()))} · report written {stamp}</p><nav>{nav}</nav>{empty}"
            f"{sections}<script>{_SCRIPT}</script></body></html>")
    out = Path(path) if path is not None else run.report
    out.write_text(page, encoding="utf-8")
    log.info("wrote %s", out)
    return out
