"""HF transformers DeiT (distilled) and DINOv3 ViT ↔ vitkit: the same numbers both ways (tiny random models,
fp32, ≤ 1e-4), hidden states and attention weights layer by layer."""

from __future__ import annotations

import pytest
import torch
from test_convert_vit import assert_close, jitter, vitkit_activations  # noqa: E402

import vitkit
from vitkit.layers import RopeConfig

transformers = pytest.importorskip("transformers")

DEIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
            patch_size=8, attn_implementation="eager")


def compare_layers(model, out, images):
    hidden, attentions = vitkit_activations(model, images)
    for i, (a, b) in enumerate(zip(hidden, out.hidden_states, strict=True)):
        assert_close(a, b, f"hidden state {i}")
    for i, (a, b) in enumerate(zip(attentions, out.attentions, strict=True)):
        assert_close(a, b, f"attention weights of layer {i}")


@pytest.mark.parametrize("cls_name", ["DeiTForImageClassificationWithTeacher", "DeiTModel"])
def test_hf_deit_to_vitkit_parity(cls_name, tmp_path):
    hf = jitter(getattr(transformers, cls_name)(transformers.DeiTConfig(num_labels=4, **DEIT)))
    hf.save_pretrained(tmp_path)
    model, report = vitkit.load_checkpoint(tmp_path)
    assert report.clean and report.format == "hf:deit", str(report)
    assert model.config.distilled and model.num_prefix_tokens == 2
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = hf(images, output_hidden_states=True, output_attentions=True)
        if cls_name == "DeiTModel":
            assert_close(model(images), out.pooler_output, "pooler_output (as pre-logits)")
        else:
            assert_close(model(images), out.logits, "logits (mean of the [CLS] and [DIST] heads)")
    compare_layers(model, out, images)
    vitkit.save_pretrained(model, tmp_path / "back", format="hf")  # and back to HF
    again = getattr(transformers, cls_name).from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        theirs = again(images)
        assert_close(model(images), theirs.logits if model.config.num_classes else theirs.pooler_output,
                     "vitkit → HF")


def test_hf_deit_single_head_is_refused(tmp_path):
    hf = transformers.DeiTForImageClassification(transformers.DeiTConfig(num_labels=3, **DEIT))
    hf.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="DeiTForImageClassificationWithTeacher"):
        vitkit.load_pretrained(tmp_path)


DINOV3 = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=8,
              image_size=32, layerscale_value=0.5, attn_implementation="eager")


@pytest.mark.parametrize("overrides, size", [
    (dict(num_register_tokens=4), (32, 48)),
    (dict(num_register_tokens=0, use_gated_mlp=True, hidden_act="silu", key_bias=True, rope_theta=50.0),
     (40, 24)),
])
def test_hf_dinov3_to_vitkit_parity(tmp_path, overrides, size):
    hf = jitter(transformers.DINOv3ViTModel(transformers.DINOv3ViTConfig(**{**DINOV3, **overrides})))
    hf.save_pretrained(tmp_path)
    model, report = vitkit.load_checkpoint(tmp_path)
    assert report.clean and report.format == "hf:dinov3_vit", str(report)
    assert model.rope is not None and model.pos_embed is None
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        out = hf(images, output_hidden_states=True, output_attentions=True)
        assert_close(model.forward_features(images), out.last_hidden_state, "last_hidden_state")
        assert_close(model(images), out.pooler_output, "pooler_output")
    compare_layers(model, out, images)


def test_vitkit_to_hf_dinov3_parity(tmp_path):
    model = vitkit.create_model("dinov3_vits16plus", dim=32, depth=2, num_heads=2, mlp_hidden_dim=48,
                                image_size=(32, 32), num_register_tokens=2)
    jitter(model)
    with torch.no_grad():
        for block in model.blocks:  # DINOv3 has no key bias: keep that slice zero so the export says so
            block.attn.qkv.bias[32:64] = 0
    vitkit.save_pretrained(model, tmp_path, format="hf")
    hf = transformers.DINOv3ViTModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert hf.config.key_bias is False and hf.config.use_gated_mlp
    images = torch.randn(2, 3, 48, 32)
    with torch.no_grad():
        assert_close(model(images), hf(images).pooler_output, "vitkit → HF pooler_output")
        assert_close(vitkit.load_pretrained(tmp_path)(images), model(images), "vitkit → HF → vitkit")


def test_rope_augmentations_follow_train_and_eval():
    model = vitkit.create_model("dinov3_vits16", dim=32, depth=1, num_heads=2, mlp_hidden_dim=64,
                                layer_scale_init=1.0, rope=RopeConfig(rescale=2.0)).eval()
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.forward_features(images), model.forward_features(images))  # eval: fixed
        model.train()  # training: coordinates rescaled at random on every pass
        assert not torch.equal(model.forward_features(images), model.forward_features(images))
