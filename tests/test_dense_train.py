"""Dense training end to end: the loss falls on the built-in scenes; train_dense writes a run directory the
`vitkit depth` / `vitkit segment` commands read; separate encoder / decoder learning rates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.cli.main import main
from vitkit.config import replace_config
from vitkit.data.dense import DenseTransform, ShapesDense
from vitkit.engine.config import TrainConfig
from vitkit.engine.dense import DenseConfig, train_dense
from vitkit.engine.optim import build_optimizer
from vitkit.models import create_model
from vitkit.objectives.depth import DepthObjective
from vitkit.objectives.segmentation import SegmentationObjective

SMALL = {"encoder": {"image_size": (32, 32), "dim": 64, "depth": 2, "num_heads": 2},
         "block_taps": (0, 0, 1, 1),
         "features": (16, 32, 64, 64), "fusion_dim": 32}


@pytest.mark.parametrize("task", ["depth", "segment"])
def test_loss_falls_on_builtin_scenes(task):
    torch.manual_seed(0)
    data = ShapesDense(16, 32, seed=0)
    model = create_model(f"dpt_tiny_{task}", **SMALL)
    objective = DepthObjective() if task == "depth" else SegmentationObjective(4)
    batch = DenseTransform((0.5,) * 3, (0.5,) * 3)(data.get_batch(torch.arange(16)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        out = objective(model, batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3]), losses


def test_encoder_and_decoder_learning_rates():
    model = create_model("dpt_tiny_depth", **SMALL)
    opt = build_optimizer(model, 1e-3, lr_scale={"encoder": 0.1})  # a module path, no trailing dot
    for group in opt.param_groups:
        names = group["names"]
        expected = 1e-4 if names[0].startswith("encoder.") else 1e-3
        assert all(n.startswith("encoder.") == names[0].startswith("encoder.") for n in names)
        assert group["lr"] == pytest.approx(expected)


def test_train_dense_then_cli_predicts(tmp_path):
    cfg = replace_config(TrainConfig(),
                         {"out": str(tmp_path / "run"), "epochs": 1, "batch_size": 8, "amp": False,
                                         "model": "dpt_tiny_segment", "model_args": SMALL,
                                         "data.image_size": 32})
    summary = train_dense(cfg, DenseConfig(task="segment", train_scenes=16, val_scenes=8, scene_size=32,
                                           encoder_lr_scale=0.5))
    assert summary["steps"] == 2 and 0.0 <= summary["val"]["dataset_miou"] <= 1.0
    assert (tmp_path / "run" / "figures" / "dense_examples.png").is_file()
    image = tmp_path / "scene.png"
    Image.fromarray(np.asarray(ShapesDense(1, 48, seed=5).tensors["images"][0].permute(1, 2, 0))).save(image)
    assert main(["segment", "--checkpoint", str(tmp_path / "run"), str(image), "--out",
                 str(tmp_path / "o")]) == 0
    mask = Image.open(tmp_path / "o" / "scene_mask.png")
    assert mask.mode == "P" and mask.size == (48, 48) and np.asarray(mask).max() < 4
    assert Image.open(tmp_path / "o" / "scene_overlay.png").size == (48, 48)
    # the depth command refuses a segmentation checkpoint, clearly
    assert main(["depth", "--checkpoint", str(tmp_path / "run"), str(image), "--out",
                 str(tmp_path / "o")]) == 1


def test_depth_cli_writes_png_and_npy(tmp_path):
    from vitkit.weights import save_pretrained

    save_pretrained(create_model("dpt_tiny_depth", **SMALL), tmp_path / "ckpt")
    image = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(image)
    assert main(["depth", "--checkpoint", str(tmp_path / "ckpt"), str(image), "--out",
                 str(tmp_path / "o")]) == 0
    depth = np.load(tmp_path / "o" / "photo_depth.npy")
    assert depth.shape == (30, 50) and depth.dtype == np.float32 and np.isfinite(depth).all()
    assert Image.open(tmp_path / "o" / "photo_depth.png").size == (50, 30)


def test_train_dense_on_a_folder_of_depth_pairs(tmp_path):
    data = ShapesDense(6, 32, seed=2)
    for sub in ("images", "depth"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i in range(6):
        image = Image.fromarray(data[i]["images"].permute(1, 2, 0).numpy())
        image.save(tmp_path / "data" / "images" / f"{i}.png")
        np.save(tmp_path / "data" / "depth" / f"{i}.npy", data[i]["depth"].numpy())
    cfg = replace_config(TrainConfig(),
                         {"out": str(tmp_path / "run"), "epochs": 1, "batch_size": 2, "amp": False,
                          "model": "dpt_tiny_depth", "model_args": SMALL, "data.image_size": 32,
                          "data.path": str(tmp_path / "data"), "data.val_fraction": 0.34})
    summary = train_dense(cfg, DenseConfig(task="depth", depth_loss="silog"))
    assert summary["steps"] == 2 and 0.0 <= summary["val"]["delta1"] <= 1.0  # 4 train / 2 val images
