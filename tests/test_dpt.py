"""DPT model: shapes at input size (non-square, odd grids), readouts, heads, presets, taps through public
methods, initialisation from ViT / MAE encoders, clear errors."""

from __future__ import annotations

import pytest
import torch

from vitkit.models import create_model, get_model_config, list_models
from vitkit.models.dpt import (
    DPT,
    DepthHead,
    DPTConfig,
    DPTOutput,
    SegmentationHead,
    default_taps,
    dpt_from_encoder,
)
from vitkit.models.vit import ViTConfig


def _cfg(**kw) -> DPTConfig:
    enc = ViTConfig(image_size=(32, 32), patch_size=8, dim=32, depth=4, num_heads=2, num_classes=0)
    return DPTConfig(**{"encoder": enc, "block_taps": (0, 1, 2, 3), "features": (8, 16, 32, 32),
                        "fusion_dim": 16,
                        **kw})


@pytest.mark.parametrize("readout", ["ignore", "add", "project"])
@pytest.mark.parametrize("size", [(32, 32), (24, 56), (40, 16)])
def test_depth_at_input_size_any_readout(readout, size):
    model = DPT(_cfg(readout=readout)).eval()
    with torch.no_grad():
        depth = model(torch.randn(2, 3, *size))
    assert depth.shape == (2, *size) and torch.isfinite(depth).all() and (depth >= 0).all()


def test_segmentation_logits_and_aux():
    model = DPT(_cfg(task="segment", num_classes=5)).eval()
    images = torch.randn(2, 3, 24, 40)
    with torch.no_grad():
        logits = model(images)
        out = model(images, return_aux=True)
    assert logits.shape == (2, 5, 24, 40)
    assert isinstance(out, DPTOutput) and torch.equal(out.pred, logits)
    assert out.aux.shape == (2, 5, 12, 20)  # the finest fused map: half the input
    assert DPT(_cfg(task="segment", num_classes=5, aux_head=False))(images, return_aux=True).aux is None


def test_heads_are_injected_modules():
    head = SegmentationHead(16, 3)
    model = DPT(_cfg(), head=head)
    assert model.head is head and model(torch.randn(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    assert isinstance(DPT(_cfg()).head, DepthHead)


def test_encoder_is_used_through_its_public_intermediates(monkeypatch):
    model = DPT(_cfg(block_taps=(3, 1, 0, 2)))
    seen = []
    original = model.encoder.forward_stages_and_intermediates
    monkeypatch.setattr(model.encoder, "forward_stages_and_intermediates",
                        lambda images, layers, **kw: seen.append(list(layers))
                        or original(images, layers, **kw))
    model(torch.randn(1, 3, 32, 32))
    assert seen == [[3, 1, 0, 2]]


def test_gradients_reach_every_parameter():
    model = DPT(_cfg(task="segment", num_classes=3))
    out = model(torch.randn(2, 3, 32, 32), return_aux=True)
    (out.pred.mean() + out.aux.mean()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []  # every trainable parameter is used (DDP needs this)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["encoder.norm.weight", "encoder.norm.bias"]  # taps are pre-norm, as in the paper and HF


def test_presets_and_taps():
    for name in ("dpt_base_depth", "dpt_large_depth", "dpt_hybrid_depth", "dpt_base_segment",
                 "dpt_large_segment", "dpt_hybrid_segment", "dpt_tiny_depth", "dpt_tiny_segment"):
        assert name in list_models("dpt_*")
    assert get_model_config("dpt_base_depth").block_taps == (2, 5, 8, 11) == default_taps(12)
    assert get_model_config("dpt_large_depth").block_taps == (5, 11, 17, 23) == default_taps(24)
    hybrid = get_model_config("dpt_hybrid_segment")
    assert hybrid.stage_taps == (0, 1) and hybrid.block_taps == (8, 11)
    assert hybrid.encoder.backbone is not None
    with torch.device("meta"):
        params = sum(p.numel() for p in create_model("dpt_large_depth").parameters())
    assert 330e6 < params < 350e6  # Intel/dpt-large: 343M


def test_hybrid_dpt_taps_resnet_stages():
    cfg = get_model_config("dpt_hybrid_depth",
                           encoder={"depth": 2, "dim": 64, "num_heads": 2, "image_size": (64, 64),
                                                        "backbone": {"layers": (1, 1, 1)}},
                           block_taps=(0, 1), features=(256, 512, 64, 64), fusion_dim=32)
    model = DPT(cfg).eval()
    with torch.no_grad():
        taps = model.forward_taps(torch.randn(1, 3, 64, 96))
        assert [tuple(t.shape) for t in taps.maps] == [(1, 256, 16, 24), (1, 512, 8, 12), (1, 64, 4, 6),
                                                        (1, 64, 4, 6)]
        assert taps.readout[:2] == [None, None] and taps.readout[2].shape == (1, 64)
        assert model(torch.randn(1, 3, 64, 96)).shape == (1, 64, 96)


def test_init_from_vit_and_mae_encoders():
    vit = create_model("vit_tiny_patch4_32")
    dpt = dpt_from_encoder(vit, task="segment", num_classes=3)
    assert torch.equal(dpt.encoder.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)
    assert dpt.config.encoder.num_classes == 0 and dpt(torch.randn(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    mae = create_model("mae_vit_tiny_patch4_32")
    dpt = dpt_from_encoder(mae)
    assert torch.equal(dpt.encoder.blocks[-1].mlp.fc2.weight, mae.encoder.blocks[-1].mlp.fc2.weight)
    with pytest.raises(TypeError, match="VisionTransformer"):
        dpt_from_encoder(torch.nn.Linear(2, 2))


def test_clear_errors():
    with pytest.raises(ValueError, match="one feature width and stride per tap"):
        _cfg(features=(8, 16))
    with pytest.raises(ValueError, match="readout"):
        DPT(_cfg(readout="mean"))
    no_cls = _cfg(readout="project")
    no_cls.encoder = ViTConfig(image_size=(32, 32), patch_size=8, dim=32, depth=4, num_heads=2, num_classes=0,
                               class_token=False, pool="avg")
    with pytest.raises(ValueError, match="CLS"):
        DPT(no_cls)
    with pytest.raises(ValueError, match="hybrid"):
        DPT(_cfg(stage_taps=(0,), block_taps=(1, 2, 3)))
    with pytest.raises(ValueError, match="multiples of the patch"):
        DPT(_cfg())(torch.randn(1, 3, 30, 32))
