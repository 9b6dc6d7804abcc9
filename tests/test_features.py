"""The feature-map backbone API: forward_intermediates(output_fmt="NCHW"), prefix-token removal, and
create_model(features_only=True) with feature_info (channels, strides) for ViT and hybrid models."""

from __future__ import annotations

import pytest
import torch

from vitkit.models import create_model
from vitkit.models.features import FeatureBackbone, default_out_indices, feature_levels

TINY_HYBRID = {"depth": 4, "dim": 32, "num_heads": 2, "image_size": (64, 64),
               "backbone": {"layers": (1, 1, 1), "channels": (32, 64, 128), "stem_width": 16,
                            "num_groups": 4}}


def _vit(**kw):
    return create_model("vit_tiny_patch4_32", dim=32, num_heads=2, depth=3, **kw).eval()


def _reshaped(tokens: torch.Tensor, P: int, grid: tuple[int, int]) -> torch.Tensor:
    """NLC tokens → the NCHW map they should give, written independently of the library's reshape."""
    B, _, D = tokens.shape
    out = torch.empty(B, D, *grid)
    for r in range(grid[0]):
        for c in range(grid[1]):
            out[:, :, r, c] = tokens[:, P + r * grid[1] + c]
    return out


@pytest.mark.parametrize("class_token", [True, False])
def test_nchw_is_nlc_without_prefix_on_the_grid(class_token):
    model = _vit(class_token=class_token, pool="cls" if class_token else "avg")
    P = model.num_prefix_tokens
    assert P == int(class_token)
    images = torch.randn(2, 3, 24, 40)  # non-square: a 6×10 grid
    with torch.no_grad():
        tokens = model.forward_intermediates(images, [0, -1])
        maps = model.forward_intermediates(images, [0, -1], output_fmt="NCHW")
        pairs = model.forward_intermediates(images, [-1], norm=True, output_fmt="NCHW",
                                            return_prefix_tokens=True)
        normed = model.forward_intermediates(images, [-1], norm=True)
    assert [t.shape for t in tokens] == [(2, P + 60, 32)] * 2
    for t, m in zip(tokens, maps, strict=True):
        assert m.shape == (2, 32, 6, 10)
        torch.testing.assert_close(m, _reshaped(t, P, (6, 10)), rtol=0, atol=0)
    (m, prefix), = pairs
    torch.testing.assert_close(m, _reshaped(normed[0], P, (6, 10)), rtol=0, atol=0)
    assert prefix.shape == (2, P, 32) and torch.equal(prefix, normed[0][:, :P])


def test_nchw_argument_errors():
    model = _vit()
    images = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(images, output_fmt="NHWC")
    with pytest.raises(ValueError, match="NCHW"):
        model.forward_intermediates(images, return_prefix_tokens=True)
    with pytest.raises(IndexError, match="out of range"):
        model.forward_intermediates(images, [3])


def test_features_only_vit_channels_strides_and_maps():
    backbone = create_model("vit_tiny_patch4_32", features_only=True, out_indices=(0, 2, -1), dim=32,
                            num_heads=2, depth=4).eval()
    assert isinstance(backbone, FeatureBackbone) and backbone.model.config.num_classes == 0
    assert backbone.channels() == [32, 32, 32] and backbone.reduction() == [4, 4, 4]
    assert [(f.kind, f.position, f.module) for f in backbone.feature_info] == [
        ("block", 0, "blocks.0"), ("block", 2, "blocks.2"), ("block", 3, "blocks.3")]
    images = torch.randn(2, 3, 16, 28)
    with torch.no_grad():
        maps = backbone(images)
        expected = backbone.model.forward_intermediates(images, [0, 2, 3], output_fmt="NCHW")
    assert [m.shape for m in maps] == [(2, 32, 4, 7)] * 3
    assert all(torch.equal(a, b) for a, b in zip(maps, expected, strict=True))
    default = create_model("vit_tiny_patch4_32", features_only=True, depth=8, dim=32, num_heads=2)
    assert default.out_indices == (1, 3, 5, 7)  # the end of each quarter, as DPT taps


def test_features_only_hybrid_addresses_resnet_stages_then_blocks():
    backbone = create_model("vit_base_r50_s16_224", features_only=True, out_indices=(0, 1, 2, 3, -1),
                            **TINY_HYBRID).eval()
    levels = feature_levels(backbone.model)
    assert [(f.kind, f.position) for f in levels] == [("stage", 0), ("stage", 1), ("stage", 2)] + [
        ("block", i) for i in range(4)]
    assert backbone.channels() == [32, 64, 128, 32, 32]
    assert backbone.reduction() == [4, 8, 16, 16, 16]
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        maps = backbone(images)
        stages = backbone.model.patch_embed.forward_stages(images)
        last = backbone.model.forward_intermediates(images, [-1], output_fmt="NCHW")[0]
    assert [tuple(m.shape) for m in maps] == [(1, 32, 16, 24), (1, 64, 8, 12), (1, 128, 4, 6),
                                              (1, 32, 4, 6), (1, 32, 4, 6)]
    assert torch.equal(maps[0], stages[0]) and torch.equal(maps[2], stages[2]) and torch.equal(maps[4], last)
    assert default_out_indices(backbone.model) == (0, 1, 5, 6)  # DPT-Hybrid: two stages, last two quarters
    stages_only = FeatureBackbone(backbone.model, (1,))
    with torch.no_grad():
        assert torch.equal(stages_only(images)[0], stages[1])


def test_features_only_errors():
    with pytest.raises(IndexError, match="out_indices"):
        create_model("vit_tiny_patch4_32", features_only=True, out_indices=(12,))
    with pytest.raises(ValueError, match="features_only"):
        create_model("vit_tiny_patch4_32", out_indices=(1,))
    with pytest.raises(TypeError, match="VisionTransformer"):
        create_model("mae_vit_tiny_patch4_32", features_only=True)
    with pytest.raises(ValueError, match="non-empty"):
        create_model("vit_tiny_patch4_32", features_only=True, out_indices=())


@pytest.mark.parametrize("name", ["dinov2_vits14_reg", "dinov3_vits16", "deit_tiny_distilled_patch16_224"])
def test_features_only_on_the_vit_family_drops_every_prefix_token(name):
    backbone = create_model(name, features_only=True, out_indices=(0, -1), dim=32, num_heads=2,
                            depth=2).eval()
    model = backbone.model
    p = model.patch_size
    assert backbone.channels() == [32, 32] and backbone.reduction() == [p, p]
    images = torch.randn(1, 3, 2 * p, 3 * p)
    with torch.no_grad():
        maps = backbone(images)
        tokens = model.forward_intermediates(images, [-1])[0]
    P = model.num_prefix_tokens
    assert P > 1 and tokens.shape[1] == P + 6  # [CLS] + registers or [DIST]
    assert [m.shape for m in maps] == [(1, 32, 2, 3)] * 2
    torch.testing.assert_close(maps[1], _reshaped(tokens, P, (2, 3)), rtol=0, atol=0)


def test_features_only_stem_only_hybrid():
    backbone = create_model("vit_tiny_r_s16_p8_224", features_only=True, out_indices=(0, 1), dim=32,
                            num_heads=2, depth=2, backbone={"stem_width": 16, "num_groups": 4}).eval()
    assert backbone.channels() == [16, 32] and backbone.reduction() == [4, 32]
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(m.shape) for m in maps] == [(1, 16, 16, 24), (1, 32, 2, 3)]
