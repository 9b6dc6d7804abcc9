"""Depth Anything: a DPT on a DINOv2 backbone. Parity with HF transformers' DepthAnythingForDepthEstimation
(random tiny configs, square and non-square inputs, relative and metric heads, export back), presets against
HF's parameter counts, DINOv2 feature maps, a 2-step training run and the `vitkit depth` command on it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from test_dpt_hf import _randomise

import vitkit
from vitkit.cli.main import main
from vitkit.config import replace_config
from vitkit.models import create_model, get_model_config
from vitkit.models.dpt import DPT
from vitkit.runconfig import TrainConfig
from vitkit.tasks import run
from vitkit.weights import load_pretrained, save_pretrained

transformers = pytest.importorskip("transformers")
warnings.filterwarnings("ignore", category=UserWarning)

BACKBONE = dict(model_type="dinov2", hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                image_size=56, patch_size=14, out_indices=[1, 2, 3, 4], apply_layernorm=True,
                reshape_hidden_states=False, layerscale_value=1.0)
TINY = dict(backbone_config=BACKBONE, reassemble_hidden_size=32, patch_size=14,
            neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8)
SMALL = {"encoder": {"dim": 32, "depth": 2, "num_heads": 2}, "block_taps": (0, 0, 1, 1),
         "features": (8, 16, 32, 32), "fusion_dim": 16}


def _hf_model(tmp_path, **config):
    cfg = transformers.DepthAnythingConfig(**{**TINY, **config})
    torch.manual_seed(0)
    model = transformers.DepthAnythingForDepthEstimation(cfg).eval()
    _randomise(model)
    model.save_pretrained(tmp_path / "hf")
    return model


def _hf_depth(model, images):
    with torch.no_grad():
        return model(pixel_values=images).predicted_depth


@pytest.mark.parametrize("config", [{}, {"depth_estimation_type": "metric", "max_depth": 20},
                                    {"backbone_config": dict(BACKBONE, apply_layernorm=False,
                                                             out_indices=[1, 2, 4]),
                                     "reassemble_factors": [2, 1, 0.25], "neck_hidden_sizes": [8, 16, 32]}],
                         ids=["relative", "metric", "pre-norm-3-taps"])
def test_parity_with_hf_square_and_non_square(config, tmp_path):
    hf = _hf_model(tmp_path, **config)
    ours = load_pretrained(tmp_path / "hf").eval()
    assert isinstance(ours, DPT) and ours.config.readout == "ignore"
    assert ours.config.tap_norm == hf.config.backbone_config.apply_layernorm
    assert ours.config.strides == tuple(14 / f for f in hf.config.reassemble_factors)
    metric = config.get("depth_estimation_type") == "metric"
    assert ours.config.depth_output == ("depth" if metric else "disparity")
    for h, w in [(56, 56), (42, 70), (84, 56), (70, 42)]:  # 4×4 (native), 3×5, 6×4 and 5×3 patch grids
        images = torch.randn(2, 3, h, w)
        ref = _hf_depth(hf, images)
        with torch.no_grad():
            out = ours(images)
        assert out.shape == ref.shape == (2, h, w)
        assert ref.std() > 1e-2  # a meaningful comparison, not two near-constant maps
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    save_pretrained(ours, tmp_path / "back", format="hf")
    back = transformers.DepthAnythingForDepthEstimation.from_pretrained(tmp_path / "back").eval()
    images = torch.randn(1, 3, 42, 70)
    torch.testing.assert_close(_hf_depth(back, images), _hf_depth(hf, images), atol=1e-4, rtol=1e-4)


# HF's parameter counts (DepthAnythingForDepthEstimation on the meta device, the released configs) less
# what vitkit does not hold: DINOv2's mask token (D) and the coarsest fusion level's unused residual unit.
HF_PARAMS = {"small": (24_785_089, 384 + 73_856), "base": (97_470_785, 768 + 295_168),
             "large": (335_315_649, 1024 + 1_180_160)}


@pytest.mark.parametrize("size", ["small", "base", "large"])
def test_presets_match_hf_parameter_counts(size):
    with torch.device("meta"):
        model = create_model(f"depth_anything_{size}")
    hf_total, not_held = HF_PARAMS[size]
    assert sum(p.numel() for p in model.parameters()) == hf_total - not_held
    cfg = model.config
    assert cfg.encoder.patch_size == 14 and cfg.encoder.image_size == (518, 518) and cfg.tap_norm
    assert cfg.block_taps == ((20, 21, 22, 23) if size == "large" else (8, 9, 10, 11))


def test_dinov2_feature_maps_and_the_readout_ignores_registers():
    backbone = create_model("depth_anything_small", **SMALL).encoder
    feats = vitkit.models.features.FeatureBackbone(backbone, (0, -1), norm=True).eval()
    assert feats.channels() == [32, 32] and feats.reduction() == [14, 14]
    images = torch.randn(1, 3, 28, 42)
    with torch.no_grad():
        maps = feats(images)
        tokens = backbone.forward_intermediates(images, [-1], norm=True)[0]
    P = backbone.num_prefix_tokens
    assert [m.shape for m in maps] == [(1, 32, 2, 3)] * 2
    torch.testing.assert_close(maps[1], tokens[:, P:].transpose(1, 2).reshape(1, 32, 2, 3), rtol=0, atol=0)
    # registers sit between [CLS] and the patches: removed from the maps, never used as the readout
    cfg = get_model_config("dpt_tiny_depth", readout="project",
                           encoder={"num_register_tokens": 4, "depth": 2}, block_taps=(0, 0, 1, 1))
    dpt = DPT(cfg).eval()
    images = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        taps = dpt.forward_taps(images)
        tokens = dpt.encoder.forward_intermediates(images, [1])[0]
    assert dpt.encoder.num_prefix_tokens == 5 and tokens.shape[1] == 5 + 4 * 6
    assert [m.shape for m in taps.maps] == [(2, 128, 4, 6)] * 4
    torch.testing.assert_close(taps.readout[3], tokens[:, 0], rtol=0, atol=0)  # [CLS], not a register
    torch.testing.assert_close(taps.maps[3], tokens[:, 5:].transpose(1, 2).reshape(2, 128, 4, 6),
                               rtol=0, atol=0)


def test_train_two_steps_then_depth_command(tmp_path):
    cfg = replace_config(TrainConfig(),
                         {"out": str(tmp_path / "run"), "epochs": 1, "batch_size": 4, "amp": False,
                          "model": "depth_anything_small", "model_args": SMALL,
                          "task": {"kind": "depth", "train_scenes": 8, "val_scenes": 4, "scene_size": 28}})
    summary = run(cfg)
    assert summary["steps"] == 2 and np.isfinite(summary["val"]["delta1"])
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(image)
    assert main(["depth", "--checkpoint", str(tmp_path / "run"), str(image), "--out",
                 str(tmp_path / "o")]) == 0
    depth = np.load(tmp_path / "o" / "photo_depth.npy")
    assert depth.shape == (30, 50) and np.isfinite(depth).all() and (depth >= 0).all()
    assert Image.open(tmp_path / "o" / "photo_depth.png").size == (50, 30)
    bad = replace_config(cfg, {"out": str(tmp_path / "bad"), "task.scene_size": 32})
    with pytest.raises(vitkit.errors.UsageError, match="multiple of 14"):
        run(bad)


def test_depth_command_reads_an_hf_depth_anything_directory(tmp_path):
    _hf_model(tmp_path, depth_estimation_type="metric", max_depth=20)
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(image)
    assert main(["depth", "--checkpoint", str(tmp_path / "hf"), str(image), "--out", str(tmp_path / "o"),
                 "--max-side", "56"]) == 0
    depth = np.load(tmp_path / "o" / "photo_depth.npy")
    assert depth.shape == (40, 60) and (depth >= 0).all() and (depth <= 20).all()  # metric: sigmoid × 20


def test_export_refuses_what_hf_cannot_express(tmp_path):
    registers = create_model("depth_anything_small",
                             **{**SMALL, "encoder": {**SMALL["encoder"], "num_register_tokens": 4}})
    with pytest.raises(ValueError, match="register tokens"):
        save_pretrained(registers, tmp_path / "a", format="hf")
    unordered = create_model("depth_anything_small", **{**SMALL, "block_taps": (1, 0, 1, 0)})
    with pytest.raises(ValueError, match="block taps"):
        save_pretrained(unordered, tmp_path / "b", format="hf")
    with pytest.raises(ValueError, match="registers"):  # HF's neck drops one prefix token: refused on load
        vitkit.convert.get_hf_converter("depth_anything").to_vitkit(
            {"backbone_config": {"model_type": "dinov2_with_registers"}}, {})
