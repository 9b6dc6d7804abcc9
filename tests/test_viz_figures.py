"""Overlays, Figure 7 panels, training charts and the viz CLI on tiny models."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.cli.main import main
from vitkit.errors import UsageError
from vitkit.models import VisionTransformer, ViTConfig
from vitkit.viz import attention_layers
from vitkit.viz.overlays import ATTENTION_METHODS, compute_attention_maps, overlay_panel

pytest.importorskip("matplotlib")


def tiny(class_token=True, pos_embed="learn"):
    cfg = ViTConfig(image_size=(16, 24), patch_size=4, num_classes=3, dim=32, depth=2, num_heads=2,
                    class_token=class_token, pool="cls" if class_token else "avg", pos_embed=pos_embed)
    torch.manual_seed(0)
    return VisionTransformer(cfg)


@pytest.mark.parametrize("class_token", [True, False])
@pytest.mark.parametrize("method", list(ATTENTION_METHODS))
def test_attention_maps_on_a_non_square_grid(method, class_token):
    model = tiny(class_token).train()
    out = compute_attention_maps(model, torch.randn(2, 3, 16, 24), method, layer=0)
    K = 2 if method == "heads" else 1
    assert out.maps.shape == (2, K, 4, 6) and len(out.titles) == K
    shown = ("[CLS] attention to patches" if class_token
             else "mean attention received per patch (no [CLS] token)")
    assert all(title.endswith(shown) for title in out.titles)
    assert len(out.predictions) == 2 and all(0 <= i < 3 for i, _ in out.predictions)
    assert model.training  # mode restored
    assert all(layer.observer is None for layer in attention_layers(model))
    panel = overlay_panel(np.zeros((16, 24, 3), np.uint8), out.maps[0].numpy(), out.titles)
    assert panel.ndim == 3 and panel.shape[1] >= 224


def test_bad_method_and_layer():
    with pytest.raises(KeyError, match="rollout, cls, heads"):
        compute_attention_maps(tiny(), torch.randn(1, 3, 16, 24), "grad-cam")
    with pytest.raises(UsageError, match="out of range: the encoder has 2 blocks, so --layer takes -2..1"):
        compute_attention_maps(tiny(), torch.randn(1, 3, 16, 24), "cls", layer=2)


@pytest.mark.parametrize("pos_embed", ["learn", "sincos"])
def test_figure7_panels(tmp_path, pos_embed):
    from vitkit.viz.figures import attention_distances, write_figure7

    model = tiny(pos_embed=pos_embed)
    written = write_figure7(model, tmp_path)
    assert set(written) == {"embedding_filters", "position_similarity", "attention_distance"}
    for path in written.values():
        assert Image.open(path).size[0] > 100
    d = attention_distances(model, torch.randn(5, 3, 16, 24), batch_size=2)
    assert d.shape == (2, 2)
    max_distance = 4 * float(np.hypot(3, 5))  # corner to corner of a 4×6 grid of 4-pixel patches
    assert (d >= 0).all() and (d <= max_distance).all()


def test_curves_and_confusion(tmp_path):
    from vitkit.viz.curves import plot_confusion, plot_curves, read_metrics

    lines = [{"step": s, "epoch": 0, "split": "train", "loss": 2.0 / s, "lr": 1e-3} for s in range(1, 6)]
    lines.append({"step": 5, "epoch": 0, "split": "val", "loss": 0.5, "acc1": 0.8, "acc5": 1.0})
    (tmp_path / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n{torn")
    assert len(read_metrics(tmp_path)) == 6
    path = plot_curves(tmp_path)
    assert path == tmp_path / "figures" / "curves.png" and Image.open(path).size[0] > 300
    cm_path = plot_confusion([[3, 1], [0, 4]], ["a", "b"], tmp_path / "cm.png")
    assert cm_path.exists()
    with pytest.raises(ValueError, match="2 labels"):
        plot_confusion(np.eye(3), ["a", "b"], tmp_path / "x.png")
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "split": "train"}) + "\n")
    with pytest.raises(ValueError, match="no loss"):
        plot_curves(tmp_path)
    with pytest.raises(FileNotFoundError):
        plot_curves(tmp_path / "nope")


def test_cli_attention_figures_report(tmp_path, caplog):
    model = tiny()
    vitkit.save_pretrained(model, tmp_path / "ckpt")
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(image)
    assert main(["attention", "--checkpoint", str(tmp_path / "ckpt"), str(image), "--method", "heads",
                 "--out", str(tmp_path / "att")]) == 0
    png = tmp_path / "att" / "photo_heads.png"
    assert png.exists() and Image.open(png).size[0] > 3 * 224
    assert main(["figures", "--checkpoint", str(tmp_path / "ckpt"), str(tmp_path),
                 "--out", str(tmp_path / "fig")]) == 0
    assert len(list((tmp_path / "fig").glob("*.png"))) == 3
    assert main(["report", str(tmp_path / "fig")]) == 0  # not a run directory: notes everywhere, still a page
    assert (tmp_path / "fig" / "report.html").exists()
    assert main(["attention", "--checkpoint", str(tmp_path / "ckpt"), str(tmp_path / "missing.png"),
                 "--out", str(tmp_path / "att")]) == 1
    assert any("missing.png: no such file" in r.getMessage() for r in caplog.records)


def test_figure7_hybrid_skips_filters(tmp_path):
    from vitkit.models.resnetv2 import ResNetV2Config
    from vitkit.viz.figures import write_figure7

    backbone = ResNetV2Config(layers=(1, 1), channels=(16, 32), stem_width=8, num_groups=8)
    hybrid = VisionTransformer(ViTConfig(image_size=(32, 48), patch_size=1, num_classes=3, dim=32, depth=2,
                                         num_heads=2, backbone=backbone))
    written = write_figure7(hybrid, tmp_path, torch.randn(2, 3, 32, 48), "2 noise images")
    assert set(written) == {"position_similarity", "attention_distance"}
