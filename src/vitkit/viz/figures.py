"""The ViT paper's Figure 7 panels (Dosovitskiy et al., 2021), drawn with matplotlib (the ``plot`` extra).

* left — `plot_embedding_filters`: first principal components of the patch-embedding filters, as RGB tiles;
* centre — `plot_position_similarity`: cosine similarity of each patch's position embedding to all others;
* right — `plot_attention_distance`: mean attention distance per head against depth.

`write_figure7(model, out_dir, images)` writes all three (the `vitkit figures` command).
Shapes: D width · C channels · p patch · (gh, gw) grid · L layers · H heads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import require
from ..infer.images import ENCODER_KINDS, FileOutputs, expand_images, load_model_for
from ..layers import PatchEmbed
from .analysis import (
    filter_principal_components,
    mean_attention_distance,
    patch_distances,
    position_similarity,
)
from .curves import pyplot
from .overlays import load_images, normalize_images, vision_encoder
from .record import record_attention

log = logging.getLogger(__name__)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    pyplot().close(fig)
    return path


def plot_embedding_filters(filters: Tensor, path: str | Path, num_components: int = 28) -> Path:
    """Figure 7 left: top principal components of the patch filters (D, C, p, p), each min-max scaled to an
    RGB (or grey, for C = 1) tile, in rows of 7."""
    plt = pyplot()
    comps, explained = filter_principal_components(filters, num_components)
    K = comps.shape[0]
    cols = min(7, K)
    rows = -(-K // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.2 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k in range(K):
        tile = comps[k].permute(1, 2, 0).numpy()  # (C, p, p) → (p, p, C)
        tile = (tile - tile.min()) / max(float(tile.max() - tile.min()), 1e-12)
        ax = axes.flat[k]
        tile = tile[..., 0] if tile.shape[-1] == 1 else tile[..., :3]
        ax.imshow(tile, cmap="gray", interpolation="nearest")
        ax.set_title(f"{explained[k]:.0%}", fontsize=7)
    fig.suptitle(f"Embedding filters: first {K} principal components (variance explained)", fontsize=9)
    return _save(fig, path)


def plot_position_similarity(pos_embed: Tensor, grid: tuple[int, int], path: str | Path,
                             title: str = "Position embedding similarity") -> Path:
    """Figure 7 centre: for each patch position (row i, column j), a gh×gw tile of the cosine similarity of
    its position embedding (N, D) to every position; tiles laid out on the patch grid."""
    plt = pyplot()
    sim = position_similarity(pos_embed, grid).numpy()  # (gh, gw, gh, gw)
    gh, gw = grid
    pad = 1
    mosaic = np.full((gh * (gh + pad) - pad, gw * (gw + pad) - pad), np.nan)
    for i in range(gh):
        for j in range(gw):
            y, x = i * (gh + pad), j * (gw + pad)
            mosaic[y:y + gh, x:x + gw] = sim[i, j]
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    side = min(8.0, 1.5 + 0.35 * max(gh, gw))
    fig, ax = plt.subplots(figsize=(side * gw / max(gh, gw) + 1.2, side * gh / max(gh, gw)))
    # The colour range starts at the lowest similarity (floored to 0.1), not at -1: fixed sin-cos embeddings
    # on small grids are all similar, and a -1..1 range would paint them one colour.
    vmin = min(np.floor(np.nanmin(mosaic) * 10) / 10, 0.9)
    shown = ax.imshow(np.ma.masked_invalid(mosaic), cmap=cmap, vmin=vmin, vmax=1, interpolation="nearest")
    step = max(1, max(gh, gw) // 7)
    cols, rows = range(0, gw, step), range(0, gh, step)
    ax.set_xticks([j * (gw + pad) + (gw - 1) / 2 for j in cols], [str(j + 1) for j in cols])
    ax.set_yticks([i * (gh + pad) + (gh - 1) / 2 for i in rows], [str(i + 1) for i in rows])
    ax.set_xlabel("Input patch column")
    ax.set_ylabel("Input patch row")
    ax.set_title(title, fontsize=9, pad=10)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="Cosine similarity")
    return _save(fig, path)


def plot_attention_distance(distances: Tensor, path: str | Path, title: str = "Mean attention distance",
                            uniform: float | None = None) -> Path:
    """Figure 7 right: one dot per head at each depth; distances (L, H) in pixels. `uniform`, if given, is
    drawn as a dashed reference line: the distance of attention spread evenly over all patches."""
    plt = pyplot()
    L, H = distances.shape
    fig, ax = plt.subplots(figsize=(4.5, 3.6))
    if uniform is not None:
        ax.axhline(uniform, color="gray", linestyle="--", linewidth=1, label="uniform")
    colors = plt.get_cmap("tab20" if H > 10 else "tab10")
    for h in range(H):
        ax.scatter(np.arange(1, L + 1), distances[:, h].numpy(), s=14, color=colors(h % colors.N),
                   label=f"Head {h + 1}")
    ax.set_xlabel("Network depth (layer)")
    ax.set_ylabel("Mean attention distance (pixels)")
    ax.set_xticks(range(1, L + 1, max(1, L // 12)))
    ax.set_ylim(0, 1.1 * max(float(distances.max()), uniform or 0.0, 1e-6))
    ax.set_title(title, fontsize=9)
    if H <= 16:
        ax.legend(fontsize=6, ncol=2 if H > 6 else 1, loc="lower right", frameon=False)
    return _save(fig, path)


@torch.no_grad()
def attention_distances(model: nn.Module, images: Tensor, batch_size: int = 32) -> Tensor:
    """Mean attention distance (L, H) in pixels of every block of the model's ViT over normalised images
    (B, C, H, W), averaged over images (processed in batches)."""
    encoder = vision_encoder(model)
    grid = (images.shape[-2] // encoder.patch_size, images.shape[-1] // encoder.patch_size)
    device = next(model.parameters()).device
    total, count = None, 0
    was_training = encoder.training
    encoder.eval()
    try:
        for start in range(0, images.shape[0], batch_size):
            batch = images[start:start + batch_size].to(device)
            with record_attention(encoder, device=None) as rec:
                encoder.forward_features(batch)
            per_layer = torch.stack([mean_attention_distance(w, grid, encoder.patch_size,
                                                             encoder.num_prefix_tokens) for w in rec.weights])
            total = per_layer.cpu() * batch.shape[0] + (0 if total is None else total)
            count += batch.shape[0]
    finally:
        encoder.train(was_training)
    return total / count


def write_figure7(model: nn.Module, out_dir: str | Path, images: Tensor | None = None,
                  images_note: str = "") -> dict[str, Path]:
    """Write the three Figure 7 panels as OUT/{embedding_filters,position_similarity,attention_distance}.png.

    Args:
        model: a ViT or a model with a ViT `encoder`.
        out_dir: folder for the PNGs.
        images: normalised images (B, C, H, W) for the attention distances; None uses 16 images of Gaussian
            noise (the title says so; distances on noise only show the architecture's bias).
        images_note: what the images are, for the distance plot's title.

    Returns:
        name → path of the panels written (the filter panel is skipped, with a log line, for a hybrid, whose
        patch embedder is a ResNet rather than one linear filter bank; the similarity panel for a RoPE
        encoder, which has no position embeddings).
    """
    encoder = vision_encoder(model)
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    if isinstance(encoder.patch_embed, PatchEmbed):
        written["embedding_filters"] = plot_embedding_filters(encoder.patch_embed.proj.weight.detach().cpu(),
                                                              out_dir / "embedding_filters.png")
    else:
        log.warning("embedding filters skipped: %s has no linear patch projection",
                    type(encoder.patch_embed).__name__)
    pos = encoder.pos_embed
    if pos is None:
        log.warning("position similarity skipped: the encoder adds no position embeddings (RoPE)")
    else:
        kind = "learned" if encoder.config.pos_embed == "learn" else "fixed sin-cos"
        written["position_similarity"] = plot_position_similarity(
            pos(pos.grid).detach().cpu(), pos.grid, out_dir / "position_similarity.png",
            f"Position embedding similarity\n({kind}, {pos.grid[0]}×{pos.grid[1]} patches)")
    if images is None:
        h, w = encoder.config.image_size
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(16, encoder.config.in_chans, h, w, generator=generator)
        images_note = "16 Gaussian-noise images (pass images for a meaningful plot)"
    distances = attention_distances(model, images)
    grid = (images.shape[-2] // encoder.patch_size, images.shape[-1] // encoder.patch_size)
    uniform = float(patch_distances(grid, encoder.patch_size).mean())
    note = images_note or f"{images.shape[0]} images"
    written["attention_distance"] = plot_attention_distance(
        distances, out_dir / "attention_distance.png", f"Mean attention distance over {note}", uniform)
    return written


def write_figure7_from_files(model: nn.Module | str | Path, images: Sequence[str | Path], out_dir: str | Path,
                             max_images: int = 128) -> FileOutputs:
    """`write_figure7` with the attention distances measured on image files (none: Gaussian noise).

    Args:
        model: a model with a ViT encoder, or a ``--checkpoint`` value naming one.
        images: image files or folders (the images under them); at most `max_images` are used, spread evenly
            over the sorted list (so over every class of a class-per-folder tree, not its first few).
        out_dir: folder for the PNGs.

    Returns:
        the written panels; unreadable images are left out of the distances and listed in `unreadable`.
    """
    require(max_images >= 1, f"max-images must be ≥ 1 (got {max_images})")
    if not isinstance(model, nn.Module):
        model, _ = load_model_for(model, ENCODER_KINDS, "a model with a ViT encoder")
    encoder = vision_encoder(model)
    paths = expand_images(images)
    if len(paths) > max_images:
        step = len(paths) / max_images
        paths = [paths[int(i * step)] for i in range(max_images)]
    decoded = load_images(paths, encoder)
    if not decoded:
        written = write_figure7(model, out_dir)
    else:
        batch = normalize_images(torch.stack(list(decoded)), encoder)  # (B, C, H, W)
        written = write_figure7(model, out_dir, batch, f"{len(decoded)} images")
    return FileOutputs(written.values(), decoded.unreadable)
