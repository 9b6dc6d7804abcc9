"""Colour maps, overlays and grids (numpy + Pillow)."""

import numpy as np
import pytest
from PIL import Image

from vitkit.viz.colormap import (
    COLORMAPS,
    add_caption,
    apply_colormap,
    colormap_lut,
    image_grid,
    overlay,
    save_png,
    to_rgb_uint8,
    upscale,
)


@pytest.mark.parametrize("name", ["viridis", "magma", "inferno", "turbo", "gray"])
def test_lut_matches_matplotlib(name):
    matplotlib = pytest.importorskip("matplotlib")
    lut = colormap_lut(name)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    ref = matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255
    assert np.abs(lut.astype(float) - ref).max() <= 0.03 * 255


def test_unknown_colormap_names_choices():
    with pytest.raises(KeyError, match="viridis"):
        colormap_lut("jet")
    assert "turbo" in COLORMAPS


def test_apply_colormap_ends_and_constant_map():
    lut = colormap_lut("viridis")
    out = apply_colormap(np.array([[0.0, 1.0], [0.5, 2.0]]), "viridis", vmin=0, vmax=1)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert (out[0, 0] == lut[0]).all() and (out[0, 1] == lut[255]).all() and (out[1, 1] == lut[255]).all()
    assert (apply_colormap(np.ones((3, 3))) == lut[0]).all()
    with pytest.raises(ValueError, match="2-D"):
        apply_colormap(np.ones((2, 2, 2)))


def test_overlay_blends_and_resizes():
    image = np.zeros((32, 48, 3), np.uint8)
    heat = np.arange(6, dtype=float).reshape(2, 3)
    full_map = overlay(image, heat, alpha=1.0, cmap="gray", resample="nearest")
    assert full_map.shape == (32, 48, 3)
    assert full_map[0, 0, 0] == 0 and full_map[-1, -1, 0] == 255
    assert (overlay(image, heat, alpha=0.0) == image).all()
    half = overlay(np.full((4, 4, 3), 200, np.uint8), np.ones((2, 2)), alpha=0.5, cmap="gray")
    assert (half == 100).all()  # constant map → 0 → black, blended half-way
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, heat, alpha=2)


def test_to_rgb_grid_caption_save(tmp_path):
    assert to_rgb_uint8(np.ones((3, 5, 7))).shape == (5, 7, 3)  # channel-first floats
    assert to_rgb_uint8(np.zeros((5, 7))).shape == (5, 7, 3)
    assert upscale(np.zeros((2, 3)), 4).shape == (8, 12, 3)
    grid = image_grid([np.zeros((4, 4, 3), np.uint8), np.zeros((2, 6), np.uint8)] * 3, cols=2, pad=1)
    assert grid.shape == (3 * 5 + 1, 2 * 7 + 1, 3)
    assert grid[0, 0, 0] == 255 and grid[1, 1, 0] == 0
    captioned = add_caption(np.zeros((10, 60, 3), np.uint8), "head 1")
    assert captioned.shape == (24, 60, 3) and (captioned[:14] < 255).any()
    path = save_png(grid, tmp_path / "sub" / "grid.png")
    assert Image.open(path).size == (grid.shape[1], grid.shape[0])


def test_attention_overlays_need_no_matplotlib(tmp_path, monkeypatch):
    import sys

    import torch

    from vitkit.models import VisionTransformer, ViTConfig
    from vitkit.viz.overlays import save_attention_overlays

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # any import of it now raises ImportError
    model = VisionTransformer(ViTConfig(image_size=(16, 16), patch_size=4, num_classes=2, dim=16, depth=1,
                                        num_heads=2))
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "x.png")
    with torch.no_grad():
        paths = save_attention_overlays(model, [tmp_path / "x.png"], tmp_path / "out", "heads")
    assert paths[0].exists()
    with pytest.raises(ImportError, match="vitkit\\[plot\\]"):
        from vitkit.viz.curves import plot_confusion

        plot_confusion([[1]], ["a"], tmp_path / "cm.png")


def test_output_stems_never_let_one_image_overwrite_another(tmp_path):
    from vitkit.viz.colormap import output_stems

    assert output_stems(["a/cat.jpg", "b/dog.png"]) == ["cat", "dog"]
    assert output_stems(["cat/4999.jpg", "dog/4999.jpg", "x/1.png"]) == ["cat_4999", "dog_4999", "1"]
    assert output_stems(["a/x/1.jpg", "b/x/1.jpg"]) == ["a_x_1", "b_x_1"]
    same = str(tmp_path / "img.png")
    names = output_stems([same, same])
    assert len(set(names)) == 2 and all(n.endswith("img") for n in names)
