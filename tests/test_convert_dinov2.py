"""HF transformers DINOv2 and DINOv2-with-registers ↔ vitkit: the same numbers both ways (tiny random models,
fp32, ≤ 1e-4), hidden states and attention weights layer by layer, non-square inputs through the position
embedding resampling."""

from __future__ import annotations

import pytest
import torch
from test_convert_vit import assert_close, jitter, vitkit_activations  # noqa: E402

import vitkit

transformers = pytest.importorskip("transformers")

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=14,
            layerscale_value=0.5, attn_implementation="eager")
CASES = {
    # name: (HF class, config overrides, input (H, W))
    "model": ("Dinov2Model", {}, (28, 28)),
    "model-swiglu-70x98": ("Dinov2Model", dict(use_swiglu_ffn=True, mlp_ratio=3), (70, 98)),
    "classifier": ("Dinov2ForImageClassification", dict(num_labels=4), (28, 28)),
    "reg-model-70x98": ("Dinov2WithRegistersModel", dict(num_register_tokens=3), (70, 98)),
    "reg-classifier": ("Dinov2WithRegistersForImageClassification", dict(num_register_tokens=2, num_labels=3),
                       (42, 28)),
}


def hf_dinov2(cls_name: str, save_dir, **overrides):
    config_cls = (transformers.Dinov2WithRegistersConfig if "Registers" in cls_name
                  else transformers.Dinov2Config)
    model = jitter(getattr(transformers, cls_name)(config_cls(**{**TINY, **overrides})))
    model.save_pretrained(save_dir)
    return model


@pytest.mark.parametrize("case", list(CASES))
def test_hf_dinov2_to_vitkit_parity(case, tmp_path):
    cls_name, overrides, (h, w) = CASES[case]
    hf = hf_dinov2(cls_name, tmp_path, **overrides)
    model, report = vitkit.load_checkpoint(tmp_path)
    assert report.format.startswith("hf:dinov2") and report.unexpected == [] and report.missing == []
    cfg = model.config
    assert cfg.num_prefix_tokens == 1 + overrides.get("num_register_tokens", 0)
    assert cfg.pos_antialias == ("Registers" in cls_name)
    images = torch.randn(2, 3, h, w)
    with torch.no_grad():
        out = hf(images, output_hidden_states=True, output_attentions=True)
    hidden, attentions = vitkit_activations(model, images)
    theirs = out.hidden_states
    for i, (a, b) in enumerate(zip(hidden, theirs, strict=True)):
        assert_close(a, b, f"hidden state {i}")
    for i, (a, b) in enumerate(zip(attentions, out.attentions, strict=True)):
        assert_close(a, b, f"attention weights of layer {i}")
    with torch.no_grad():
        if "Classification" in cls_name:
            assert_close(model(images), out.logits, "logits ([CLS] ⊕ patch mean, registers left out)")
        else:
            assert_close(model.forward_features(images), out.last_hidden_state, "last_hidden_state")
            assert_close(model(images), out.pooler_output, "pooler_output")


@pytest.mark.parametrize("overrides", [
    dict(layer_scale_init=1e-5, num_classes=0),
    dict(layer_scale_init=0.3, mlp="swiglu", num_classes=5, pool="cls+avg"),
    dict(num_register_tokens=4, num_classes=0, pos_antialias=True),
])
def test_vitkit_to_hf_dinov2_parity(tmp_path, overrides):
    model = jitter(vitkit.create_model("vit_tiny_patch16_224", dim=32, depth=2, num_heads=2, patch_size=14,
                                       image_size=(28, 28), **overrides))
    vitkit.save_pretrained(model, tmp_path, format="hf")
    registers = model.config.num_register_tokens > 0
    name = ("Dinov2WithRegisters" if registers else "Dinov2") + (
        "ForImageClassification" if model.config.num_classes else "Model")
    hf = getattr(transformers, name).from_pretrained(tmp_path, attn_implementation="eager").eval()
    images = torch.randn(2, 3, 28, 42)  # another grid than the stored one: positions resampled on both sides
    with torch.no_grad():
        out = hf(images, output_hidden_states=True)
        theirs = out.logits if model.config.num_classes else out.pooler_output
        assert_close(model(images), theirs, "vitkit → HF output")
        again = vitkit.load_pretrained(tmp_path)
        assert_close(again(images), model(images), "vitkit → HF → vitkit")


def test_hf_dinov2_export_refuses_what_it_cannot_express(tmp_path):
    model = vitkit.create_model("vit_tiny_patch16_224", dim=32, depth=1, num_heads=2, layer_scale_init=1.0,
                                pool="avg", num_classes=0)
    with pytest.raises(ValueError, match="DINOv2 cannot express.*pool='avg'"):
        vitkit.save_pretrained(model, tmp_path, format="hf")
    model = vitkit.create_model("vit_tiny_patch16_224", dim=32, depth=1, num_heads=2, num_register_tokens=2,
                                qk_norm=True, image_size=(32, 48))
    with pytest.raises(ValueError, match="non-square position grid.*QK-norm"):
        vitkit.save_pretrained(model, tmp_path, format="hf")


def test_hf_dinov2_in_memory_names_load_too(tmp_path):
    """transformers ≥ 5 names modules q_proj / gate_proj / up_proj in memory; a state dict saved from there
    loads as the saved layout does."""
    from safetensors.torch import save_file

    hf = hf_dinov2("Dinov2ForImageClassification", tmp_path, use_swiglu_ffn=True, num_labels=3)
    sd = hf.state_dict()
    assert any(".mlp.gate_proj." in k for k in sd) and any(".attention.q_proj." in k for k in sd)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "model.safetensors"))
    model = vitkit.load_pretrained(tmp_path)
    images = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        assert_close(model(images), hf(images).logits, "logits")
