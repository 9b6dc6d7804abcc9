"""Seeing inside vitkit models: attention recording and analyses, colour maps, figures and run reports.

Recording, analyses and colour maps need only torch, numpy and Pillow; `figures`, `curves` and the charts in
`report` import matplotlib lazily (the ``plot`` extra).
"""

from .analysis import (
                       attention_rollout,
                       filter_principal_components,
                       fuse_heads,
                       mean_attention_distance,
                       patch_distances,
                       patch_map,
                       patch_map_title,
                       position_similarity,
)
from .colormap import COLORMAPS, apply_colormap, colormap_lut, image_grid, overlay, save_png
from .record import AttentionRecording, attention_layers, record_attention

__all__ = [
    "COLORMAPS", "AttentionRecording", "apply_colormap", "attention_layers", "attention_rollout",
    "colormap_lut",
    "filter_principal_components", "fuse_heads", "image_grid", "mean_attention_distance", "overlay",
    "patch_distances", "patch_map", "patch_map_title", "position_similarity", "record_attention", "save_png",
]
