"""One self-contained HTML page per training run: `write_report(run_dir)` → RUN_DIR/report.html.

Sections (each always present; a note says why when its material is missing): resolved configuration
(config.yaml), training curves (metrics.jsonl), final metrics (summary.json), confusion matrix, sample
predictions with attention-rollout overlays (checkpoints/best, a few held-out images when the run's data can
be reached), and every other figure the run wrote (MAE reconstructions, depth maps, masks: PNGs under figures/
and samples/).
Images are embedded as base64 PNG, so the page can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .colormap import apply_colormap
from .samples import sample_predictions

log = logging.getLogger(__name__)

MAX_FIGURES = 40  # other figures embedded at most (the rest are listed)
MAX_FIGURE_BYTES = 4 * 2**20
MAX_TABLE_CLASSES = 30  # larger confusion matrices are shown as an image, not a table

SECTIONS = (("config", "Configuration"), ("curves", "Training curves"), ("metrics", "Final metrics"),
            ("confusion", "Confusion matrix"), ("samples", "Sample predictions"),
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


def _config_section(run_dir: Path, used: set[Path]) -> str:
    path = run_dir / "config.yaml"
    if not path.exists():
        return _note("config.yaml not found.")
    return f"<pre>{html.escape(path.read_text())}</pre>"


def _curves_section(run_dir: Path, used: set[Path]) -> str:
    png = run_dir / "figures" / "curves.png"
    note = ""
    if (run_dir / "metrics.jsonl").exists():
        try:
            from .curves import plot_curves

            png = plot_curves(run_dir)
        except (ImportError, ValueError) as e:
            note = _note(f"Curves not redrawn: {e}")
    if not png.exists():
        return note or _note("No metrics.jsonl and no figures/curves.png.")
    used.add(png.resolve())
    return note + _img(png_data_uri(png.read_bytes()), "training curves")


def _read_summary(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "summary.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        log.warning("%s is not valid JSON: %s", path, e)
        return None
    return data if isinstance(data, dict) else {"value": data}


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


def _metrics_section(run_dir: Path, used: set[Path]) -> str:
    summary = _read_summary(run_dir)
    if summary is None:
        return _note("summary.json not found (the run may not have finished).")
    rows = _metrics_rows(summary)
    if not rows:
        return _note("summary.json holds no scalar metrics.")
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _find_confusion(data: Any) -> tuple[list[list[int]], list[str] | None] | None:
    """The first {"confusion": [[...]], "labels": [...]} found in summary.json, depth first."""
    if isinstance(data, dict):
        if isinstance(data.get("confusion"), list):
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


def _confusion_section(run_dir: Path, used: set[Path]) -> str:
    found = _find_confusion(_read_summary(run_dir) or {})
    png = run_dir / "figures" / "confusion.png"
    if png.exists():
        used.add(png.resolve())
    if found and len(found[0]) <= MAX_TABLE_CLASSES:
        return confusion_table(*found)
    if found and not png.exists():
        try:
            from .curves import plot_confusion

            png = plot_confusion(found[0], found[1], png)
            used.add(png.resolve())
        except ImportError as e:
            return _note(f"{len(found[0])} classes are too many for a table and matplotlib is missing: {e}")
    if png.exists():
        return _img(png_data_uri(png.read_bytes()), "confusion matrix")
    return _note("No confusion matrix in summary.json and no figures/confusion.png "
                 "(not a classification run?).")


def _samples_section(run_dir: Path, used: set[Path], num_samples: int = 8) -> str:
    try:
        samples, note = sample_predictions(run_dir, num_samples)
    except Exception as e:  # noqa: BLE001 — the report must still be written; say what went wrong
        log.warning("sample predictions failed: %s", e, exc_info=log.isEnabledFor(logging.DEBUG))
        return _note(f"Sample predictions unavailable: {type(e).__name__}: {e}")
    if not samples:
        return _note(note)
    figures = []
    for s in samples:
        verdict = "" if s.correct is None else (" right" if s.correct else " wrong")
        figures.append(f'<figure class="{verdict.strip()}">{_img(png_data_uri(s.panel), s.caption)}'
                       f"<figcaption>{html.escape(s.caption)}</figcaption></figure>")
    return f"<p>{html.escape(note)}</p><div class=\"grid\">{''.join(figures)}</div>"


def _figures_section(run_dir: Path, used: set[Path]) -> str:
    pngs = sorted(p for folder in ("figures", "samples") if (run_dir / folder).is_dir()
                  for p in (run_dir / folder).rglob("*.png") if p.resolve() not in used)
    if not pngs:
        return _note("No other figures under figures/ or samples/ (MAE reconstructions, depth maps and "
                     "masks appear here when a run writes them).")
    parts, skipped = [], []
    for p in pngs:
        if len(parts) >= MAX_FIGURES or p.stat().st_size > MAX_FIGURE_BYTES:
            skipped.append(str(p.relative_to(run_dir)))
            continue
        rel = str(p.relative_to(run_dir))
        parts.append(f"<figure>{_img(png_data_uri(p.read_bytes()), rel)}<figcaption>{html.escape(rel)}"
                     f"</figcaption></figure>")
    extra = _note(f"Not embedded (too many or too large): {', '.join(skipped)}") if skipped else ""
    return f"<div class=\"grid\">{''.join(parts)}</div>{extra}"


_BUILDERS: dict[str, Callable[..., str]] = {
    "config": _config_section, "curves": _curves_section, "metrics": _metrics_section,
    "confusion": _confusion_section, "samples": _samples_section, "figures": _figures_section}


def write_report(run_dir: str | Path, path: str | Path | None = None, num_samples: int = 8) -> Path:
    """Write the run's HTML report (default RUN_DIR/report.html) and return its path.

    Args:
        run_dir: a `vitkit train --out` directory (config.yaml, metrics.jsonl, summary.json, checkpoints/,
            figures/); missing parts become notes in their section.
        path: where to write the page.
        num_samples: held-out images shown with predictions and attention overlays.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    used: set[Path] = set()
    bodies = {}
    for key, _ in SECTIONS:  # figures last, after the others claimed their PNGs
        builder = _BUILDERS[key]
        bodies[key] = builder(run_dir, used, num_samples) if key == "samples" else builder(run_dir, used)
    nav = "".join(f'<a href="#{key}">{title}</a>' for key, title in SECTIONS)
    sections = "".join(f'<section id="{key}"><h2>{title}</h2>{bodies[key]}</section>'
                       for key, title in SECTIONS)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    name = html.escape(run_dir.resolve().name)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>vitkit run {name}</title>'
            f"<style>{_STYLE}</style></head><body><div id=\"render-warning\"></div><h1>Run {name}</h1>"
            f"<p>{html.escape(str(run_dir.resolve()))} · report written {stamp}</p><nav>{nav}</nav>{sections}"
            f"<script>{_SCRIPT}</script></body></html>")
    out = Path(path) if path is not None else run_dir / "report.html"
    out.write_text(page, encoding="utf-8")
    log.info("wrote %s", out)
    return out
