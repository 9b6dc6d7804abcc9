"""ResNetV2 (BiT): parity with HF transformers' Bit models through vitkit.load_pretrained, export, padding."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import vitkit
from vitkit.convert.hf_bit import bit_config_to_resnetv2, bit_state_dict_to_resnetv2
from vitkit.layers import StdConv2d, pad_same
from vitkit.models import create_model
from vitkit.models.resnetv2 import ResNetV2, ResNetV2Config
from vitkit.weights import load_checkpoint, save_pretrained

transformers = pytest.importorskip("transformers")

# The hybrid's setting (ViT-hybrid / DPT-hybrid) and BiT's default, on a tiny random config.
HYBRID = dict(layer_type="bottleneck", global_padding="same", embedding_dynamic_padding=True)
BIT = dict(layer_type="preactivation")
TINY = dict(num_channels=3, embedding_size=16, hidden_sizes=[32, 64, 128], depths=[1, 2, 1], num_groups=4)


def _hf_bit(kind: dict, cls_name: str = "BitModel", **extra):
    cfg = transformers.BitConfig(**TINY, **kind, **extra)
    model = getattr(transformers, cls_name)(cfg).eval()
    with torch.no_grad():  # HF inits GroupNorm to (1, 0): randomise so the norms are really tested
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("kind", [HYBRID, BIT], ids=["bottleneck-same", "preact-symmetric"])
@pytest.mark.parametrize("size", [(64, 64), (48, 80), (37, 45)])
def test_bit_model_parity(kind, size, tmp_path):
    hf = _hf_bit(kind)
    hf.save_pretrained(tmp_path)
    model, report = load_checkpoint(tmp_path)
    assert isinstance(model, ResNetV2) and report.clean and report.format == "hf:bit"
    model.eval()
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        ref = hf(images, output_hidden_states=True)
        stages = model.forward_stages(images)
        features = model.forward_features(images)
        pooled = model(images)
    assert len(stages) == 3
    for ours, theirs in zip(stages, ref.hidden_states[1:], strict=True):  # hidden_states[0] is the stem
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    torch.testing.assert_close(features, ref.last_hidden_state, atol=1e-4, rtol=0)
    torch.testing.assert_close(pooled, ref.pooler_output.flatten(1), atol=1e-4, rtol=0)


def test_bit_backbone_feature_maps(tmp_path):
    """BitBackbone (what HF's DPT-hybrid embeds) saves under `bit.`; its feature maps are our stages."""
    hf = _hf_bit(HYBRID, "BitBackbone", out_features=["stage1", "stage2", "stage3"])
    hf.save_pretrained(tmp_path)
    model = vitkit.load_pretrained(tmp_path).eval()
    images = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        maps = hf(images).feature_maps
        stages = model.forward_stages(images)
    for ours, theirs in zip(stages, maps, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_bit_classifier_parity_and_hf_export(tmp_path):
    hf = _hf_bit(BIT, "BitForImageClassification", num_labels=7)
    hf.save_pretrained(tmp_path / "hf")
    model = vitkit.load_pretrained(tmp_path / "hf").eval()
    assert model.config.num_classes == 7
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = hf(images).logits
        torch.testing.assert_close(model(images), expected, atol=1e-4, rtol=0)
    # ...and back out: HF's own class loads our export with every weight used
    save_pretrained(model, tmp_path / "out", format="hf")
    back = transformers.BitForImageClassification.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(images).logits, expected, atol=1e-5, rtol=0)


def test_trunk_export_loads_in_hf(tmp_path):
    cfg = ResNetV2Config(layers=(1, 1, 1), channels=(32, 64, 128), stem_width=16, num_groups=4)
    model = ResNetV2(cfg).eval()
    save_pretrained(model, tmp_path, format="hf")
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "bit"
    hf = transformers.BitModel.from_pretrained(tmp_path).eval()
    images = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        theirs = hf(images).last_hidden_state
        torch.testing.assert_close(model.forward_features(images), theirs, atol=1e-5, rtol=0)


def test_converter_rejects_what_it_cannot_express():
    with pytest.raises(ValueError, match="embedding_dynamic_padding"):
        bit_config_to_resnetv2({"global_padding": "SAME", "embedding_dynamic_padding": False})
    with pytest.raises(ValueError, match="dilated"):
        bit_config_to_resnetv2({"depths": [3, 4, 6, 3], "output_stride": 16})
    with pytest.raises(ValueError, match="hidden_act"):
        bit_config_to_resnetv2({"hidden_act": "gelu"})
    with pytest.raises(KeyError, match="unexpected"):
        bit_state_dict_to_resnetv2({"bit.pooler.weight": torch.zeros(1)}, prefix="bit.")


def test_width_factor_and_hidden_sizes_map_to_channels():
    cfg = bit_config_to_resnetv2({"hidden_sizes": [256, 512, 1024, 2048], "width_factor": 3,
                                  "layer_type": "preactivation"})
    assert cfg.channels == (768, 1536, 3072, 6144) and cfg.block == "preact" and cfg.padding == "symmetric"


def test_same_padding_matches_tf_sizes():
    """TF SAME: output ceil(H / stride), the odd pixel padded at the bottom/right."""
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    padded = pad_same(x, kernel_size=3, stride=2)  # total padding 2 → 1 each side
    assert padded.shape[-2:] == (7, 7)
    padded = pad_same(torch.ones(1, 1, 6, 6), kernel_size=3, stride=2)  # total 1 → all at the end
    assert padded.shape[-2:] == (7, 7) and padded[0, 0, 0, 0] == 1 and padded[0, 0, -1, -1] == 0
    conv = StdConv2d(1, 1, 7, stride=2, padding="same")
    assert conv(torch.randn(1, 1, 37, 50)).shape[-2:] == (19, 25)


def test_std_conv_standardises_filters():
    conv = StdConv2d(3, 4, 3, padding="symmetric")
    w = conv.standardized_weight().flatten(1)
    torch.testing.assert_close(w.mean(1), torch.zeros(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(w.var(1, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.standardized_weight(), padding=1))


def test_resnetv2_shapes_grads_and_bad_input():
    model = ResNetV2(ResNetV2Config(layers=(1, 1, 1), channels=(32, 64, 128), stem_width=16, num_groups=4,
                                    num_classes=5, drop_path_rate=0.1))
    images = torch.randn(2, 3, 64, 96, requires_grad=True)
    stages = model.forward_stages(images)
    assert [s.shape[1:] for s in stages] == [(32, 16, 24), (64, 8, 12), (128, 4, 6)]
    model(images).sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())
    with pytest.raises(ValueError, match="3-channel"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="one width per stage"):
        ResNetV2Config(layers=(1, 1), channels=(32,))


def test_bit_preset_matches_hf_default_size():
    """resnetv2_50x1_bit is HF's default BitConfig (google/bit-50): same parameter count, 1000 classes."""
    hf = transformers.BitForImageClassification(transformers.BitConfig(num_labels=1000))
    ours = create_model("resnetv2_50x1_bit")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in hf.parameters()) == 25_549_352
