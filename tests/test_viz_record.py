"""record_attention: right weights, unchanged outputs, fused path restored, recorders that don't interfere."""

import pytest
import torch
from torch import nn

import vitkit
from vitkit.layers import Attention
from vitkit.layers import attention as attention_module
from vitkit.models import VisionTransformer, ViTConfig
from vitkit.viz import attention_layers, record_attention


def tiny_vit(**kw) -> VisionTransformer:
    cfg = ViTConfig(image_size=(16, 24), patch_size=4, in_chans=3, num_classes=5, dim=32, depth=3,
                    num_heads=4, **kw)
    torch.manual_seed(0)
    model = VisionTransformer(cfg).eval()
    nn.init.normal_(model.head.weight, std=0.1)  # the zero head would hide output differences
    return model


@pytest.fixture
def explicit_calls(monkeypatch):
    """Count calls of the explicit attention path (the test patches the module, the library never does)."""
    calls = []
    original = attention_module.explicit_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(attention_module, "explicit_attention", counting)
    return calls


def test_shapes_rows_sum_to_one_and_outputs_unchanged():
    model = tiny_vit()
    images = torch.randn(2, 3, 16, 24)
    with torch.no_grad():
        plain = model(images)
        with record_attention(model) as rec:
            recorded = model(images)
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)
    assert len(rec) == 3 and rec.layers == [0, 1, 2]
    T = 1 + 4 * 6
    for w in rec.weights:
        assert w.shape == (2, 4, T, T) and w.device.type == "cpu" and not w.requires_grad
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, T))
        assert (w >= 0).all()
    assert rec.stack().shape == (3, 2, 4, T, T)
    torch.testing.assert_close(rec[-1], rec.weights[2])



def test_iterating_yields_the_recorded_layers_in_model_order():
    model = tiny_vit()
    with torch.no_grad(), record_attention(model) as every, record_attention(model, layers=[2, 1]) as rec:
        model(torch.randn(1, 3, 16, 24))
    assert len(list(every)) == 3  # the reported failure: KeyError 'layer 3 was not recorded'
    assert rec.layers == [1, 2]
    listed = list(rec)  # Python's fallback iteration would ask rec[0]: layer 0 was not recorded
    assert len(listed) == len(rec) == 2
    for ours, expected in zip(listed, (rec[1], rec[2]), strict=False):
        assert ours is expected
    assert [w.shape for w in rec] == [w.shape for w in rec.weights]

def test_weights_match_return_weights_path():
    model = tiny_vit()
    images = torch.randn(1, 3, 16, 24)
    with torch.no_grad(), record_attention(model, layers=[0]) as rec:
        model(images)
        tokens = model.prepare_tokens(images)
        block = model.blocks[0]
        _, expected = block.attn(block.norm1(tokens), return_weights=True)
    torch.testing.assert_close(rec[0], expected)


def test_fused_path_restored_and_only_chosen_layers_explicit(explicit_calls):
    model = tiny_vit()
    images = torch.randn(1, 3, 16, 24)
    with torch.no_grad():
        model(images)
        assert explicit_calls == []
        with record_attention(model, layers=[-1]) as rec:
            model(images)
        assert len(explicit_calls) == 1  # only the last layer left the fused path
        assert rec.layers == [2]
        assert all(layer.observer is None for layer in attention_layers(model))
        model(images)
        assert len(explicit_calls) == 1  # fused again everywhere


def test_restored_when_the_block_raises():
    model = tiny_vit()
    with pytest.raises(RuntimeError, match="boom"):
        with record_attention(model):
            raise RuntimeError("boom")
    assert all(layer.observer is None for layer in attention_layers(model))


def test_nested_recorders_chain_and_restore():
    model = tiny_vit()
    images = torch.randn(1, 3, 16, 24)
    layers = attention_layers(model)
    with torch.no_grad(), record_attention(model) as outer:
        outer_observer = layers[1].observer
        with record_attention(model, layers=1) as inner:
            model(images)
        assert layers[1].observer is outer_observer
        model(images)
    assert all(layer.observer is None for layer in layers)
    assert len(inner.calls[1]) == 1
    assert len(outer.calls[1]) == 2 and len(outer.calls[0]) == 2
    torch.testing.assert_close(inner[1], outer.calls[1][0])


def test_two_models_at_once_do_not_interfere():
    a, b = tiny_vit(), tiny_vit(class_token=False, pool="avg")
    images = torch.randn(1, 3, 16, 24)
    with torch.no_grad(), record_attention(a) as rec_a, record_attention(b, layers=0) as rec_b:
        a(images)
        a(images)
        b(images)
    assert [len(c) for c in rec_a.calls.values()] == [2, 2, 2]
    assert rec_b.layers == [0] and len(rec_b.calls[0]) == 1
    assert rec_a[0].shape[-1] == 25 and rec_b[0].shape[-1] == 24  # with and without [CLS]


def test_keep_on_device_and_errors():
    model = tiny_vit()
    with torch.no_grad(), record_attention(model, device=None) as rec:
        model(torch.randn(1, 3, 16, 24))
    assert rec[0].device == next(model.parameters()).device
    with pytest.raises(IndexError, match="out of range"):
        with record_attention(model, layers=[3]):
            pass
    with pytest.raises(ValueError, match="no vitkit attention layers"):
        with record_attention(nn.Linear(2, 2)):
            pass
    with record_attention(model) as rec:
        pass
    with pytest.raises(RuntimeError, match="no attention was recorded"):
        _ = rec.weights
    with pytest.raises(KeyError, match="not recorded"):
        with record_attention(model, layers=0) as rec:
            model(torch.randn(1, 3, 16, 24))
        rec[1]


def test_works_on_any_module_with_attention_and_top_level_export():
    assert vitkit.record_attention is record_attention
    attn = Attention(16, 2)
    with record_attention(attn) as rec:
        attn(torch.randn(3, 5, 16))
    assert rec[0].shape == (3, 2, 5, 5)


def test_grad_flows_while_recording():
    model = tiny_vit().train()
    images = torch.randn(2, 3, 16, 24)
    with record_attention(model) as rec:
        model(images).sum().backward()
    assert model.blocks[0].attn.qkv.weight.grad is not None
    assert not rec[0].requires_grad


def test_every_model_family():
    """ViT hybrid, MAE (encoder then decoder), MPP, DPT backbone: recording finds their attention layers."""
    from vitkit.models.resnetv2 import ResNetV2Config
    from vitkit.viz.overlays import compute_attention_maps

    backbone = ResNetV2Config(layers=(1, 1), channels=(16, 32), stem_width=8, num_groups=8)
    hybrid = VisionTransformer(ViTConfig(image_size=(32, 48), patch_size=1, num_classes=3, dim=32, depth=2,
                                         num_heads=2, backbone=backbone))
    models = [hybrid] + [vitkit.create_model(n) for n in ("mae_vit_tiny_patch4_32", "mpp_vit_tiny_patch4_32",
                                                          "dpt_tiny_depth")]
    for model in models:
        model.eval()
        encoder = model if isinstance(model, VisionTransformer) else model.encoder
        images = torch.randn(1, encoder.config.in_chans, *encoder.config.image_size)
        grid = (images.shape[-2] // encoder.patch_size, images.shape[-1] // encoder.patch_size)
        tokens = encoder.num_prefix_tokens + grid[0] * grid[1]
        with torch.no_grad(), record_attention(encoder) as rec:
            encoder.forward_features(images)
        assert len(rec) == len(encoder.blocks)
        assert all(w.shape[-2:] == (tokens, tokens) for w in rec.weights), type(model).__name__
        assert compute_attention_maps(model, images, "rollout").maps.shape == (1, 1, *grid)
    mae = models[1]
    assert len(attention_layers(mae)) == len(mae.encoder.blocks) + mae.config.decoder_depth
    with torch.no_grad(), record_attention(mae) as rec:
        mae(torch.randn(1, 3, 32, 32))  # 75 % of the 64 patches hidden: 1 + 16 encoder tokens, 65 decoder
    assert rec[0].shape[-1] == 17 and rec[-1].shape[-1] == 65


def test_partial_forward_records_the_layers_that_ran():
    model = tiny_vit()
    with torch.no_grad(), record_attention(model) as rec:
        model.forward_intermediates(torch.randn(1, 3, 16, 24), layers=[1])  # blocks 0 and 1 run, 2 does not
    assert rec[0].shape == rec[1].shape == (1, 4, 25, 25)
    with pytest.raises(RuntimeError, match="layer 2 has not run"):
        rec[2]
    with pytest.raises(RuntimeError, match=r"no attention was recorded for layers \[2\]"):
        _ = rec.weights
