"""VisionTransformer: registry-wide checks (tiny widths, real image sizes), paper details, bad input."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import vitkit
from vitkit import ViTConfig
from vitkit.models.registry import build_model
from vitkit.viz.record import record_attention

VIT_NAMES = [n for n in vitkit.list_models() if isinstance(vitkit.get_model_config(n), ViTConfig)]
TINY_BACKBONE = {"layers": (1, 1, 1), "channels": (32, 64, 128), "stem_width": 16, "num_groups": 8}


def tiny_overrides(cfg) -> dict:
    """Shrink widths and depths of any registered config (ViT fields, hybrid backbone, MAE decoder, DPT)."""
    out: dict = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, ViTConfig):
            out[f.name] = tiny_overrides(value)
        elif f.name == "backbone" and value is not None:
            stages = len(value.layers)
            out[f.name] = {k: v[:stages] if isinstance(v, tuple) else v for k, v in TINY_BACKBONE.items()}
    if isinstance(cfg, ViTConfig):
        out.update(dim=32, num_heads=2)
        if not hasattr(cfg, "block_taps"):
            out["depth"] = 2
    for name, value in (("decoder_dim", 32), ("decoder_depth", 1), ("decoder_num_heads", 2)):
        if hasattr(cfg, name):
            out[name] = value
    if hasattr(cfg, "block_taps") or hasattr(cfg, "stage_taps"):  # DPT: keep the encoder deep enough to tap
        out.setdefault("encoder", {}).update(dim=32, num_heads=2)
        out["encoder"].pop("depth", None)  # the taps name blocks up to the preset's depth
    return out


def tiny_vit(name: str, **overrides):
    return vitkit.create_model(name, **{**tiny_overrides(vitkit.get_model_config(name)), **overrides})


def images_for(model, batch: int = 1, extra: tuple[int, int] = (0, 0)):
    h, w = model.config.image_size
    return torch.randn(batch, model.config.in_chans, h + extra[0], w + extra[1])


@pytest.mark.parametrize("name", VIT_NAMES)
def test_forward_gradients_intermediates(name):
    model = tiny_vit(name).train()
    images = images_for(model, batch=2)
    tokens = model.forward_features(images)
    T = model.num_prefix_tokens + math.prod(model.patch_grid(images))
    assert tokens.shape == (2, T, 32)
    logits = model.forward_head(tokens)
    assert logits.shape == (2, model.config.num_classes or model.num_features)  # no head: pooled features
    (logits.sum() + tokens.square().mean()).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    model.eval()
    with torch.no_grad():
        inter = model.forward_intermediates(images)
        assert len(inter) == model.config.depth and all(t.shape == (2, T, 32) for t in inter)
        last = model.forward_intermediates(images, layers=[-1], norm=True)
        assert torch.allclose(last[0], model.forward_features(images), atol=1e-6)
        assert [t.shape for t in model.forward_intermediates(images, layers=1)] == [(2, T, 32)]


@pytest.mark.parametrize("name", VIT_NAMES)
def test_attention_rows_paths_and_masks(name):
    model = tiny_vit(name).eval()
    images = images_for(model)
    with torch.no_grad():
        fused = model(images)
        with record_attention(model) as rec:
            explicit = model(images)
        assert (fused - explicit).abs().max() < 1e-5
        for weights in rec.weights:
            assert torch.allclose(weights.sum(-1), torch.ones_like(weights[..., 0]), atol=1e-5)
        tokens = model.prepare_tokens(images)
        T = tokens.shape[1]
        allowed = torch.rand(1, 1, T, T) > 0.3
        allowed[..., 0] = True
        bias = torch.zeros(1, 1, T, T).masked_fill(~allowed, float("-inf"))
        grid = model.patch_grid(images)  # RoPE needs it
        boolean, additive = (model.forward_tokens(tokens, m, grid=grid) for m in (allowed, bias))
        assert (boolean - additive).abs().max() < 1e-5


@pytest.mark.parametrize("name", VIT_NAMES)
def test_save_load_round_trip_is_bit_exact(name, tmp_path):
    model = tiny_vit(name).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    vitkit.save_pretrained(model, tmp_path)
    loaded, report = vitkit.load_checkpoint(tmp_path)
    assert report.clean and loaded.config == model.config
    theirs = loaded.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())
    images = images_for(model)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(images), model(images))


@pytest.mark.parametrize("name", [n for n in vitkit.list_models() if n not in VIT_NAMES])
def test_other_families_round_trip(name, tmp_path):
    model = build_model(vitkit.get_model_config(name, **tiny_overrides(vitkit.get_model_config(name))))
    vitkit.save_pretrained(model, tmp_path)
    loaded, report = vitkit.load_checkpoint(tmp_path)
    assert report.clean and type(loaded) is type(model) and loaded.config == model.config
    theirs = loaded.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())


def test_non_square_inputs_resample_position_embeddings():
    model = tiny_vit("vit_tiny_patch16_224").eval()
    images = torch.randn(1, 3, 224, 160)
    tokens, grid = model.embed(images)
    assert grid == (14, 10)
    pos = vitkit.layers.resample_pos_embed(model.pos_embed.weight, (14, 14), (14, 10))
    expected = model.add_cls(tokens + pos)
    assert torch.allclose(model.prepare_tokens(images), expected, atol=1e-6)
    assert model(images).shape == (1, 1000)


@pytest.mark.parametrize("spec, count", [("Ti/16", 5_717_416), ("S/16", 22_050_664), ("B/16", 86_567_656),
                                         ("L/16", 304_326_632), ("H/14", 632_045_800)])
def test_parameter_counts_match_the_reference(spec, count):
    from vitkit.models.vit_presets import vit_config

    with torch.device("meta"):
        model = vitkit.VisionTransformer(vit_config(spec, 224))
    assert sum(p.numel() for p in model.parameters()) == count


def test_paper_defaults():
    model = vitkit.create_model("vit_small_patch16_224", depth=2)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * 2 + 1 and all(m.eps == 1e-6 for m in norms)
    assert not model.head.weight.any() and not model.head.bias.any()
    assert not model.cls_token.any()
    for block in model.blocks:
        for linear in (block.attn.qkv, block.attn.proj):
            bound = math.sqrt(6 / sum(linear.weight.shape))
            assert linear.weight.abs().max() <= bound and not linear.bias.any()
            assert abs(linear.weight.std().item() - bound / math.sqrt(3)) < 0.02 * bound
        assert block.mlp.fc1.bias.abs().max() < 1e-5  # N(0, 1e-6)
    assert isinstance(model.blocks[0].mlp.act, torch.nn.GELU)
    assert model.blocks[0].mlp.act.approximate == "none"


def test_bad_inputs_name_the_problem():
    model = tiny_vit("vit_tiny_patch16_224")
    with pytest.raises(ValueError, match="3-channel"):
        model(torch.randn(1, 1, 224, 224))
    with pytest.raises(ValueError, match="not multiples of the patch size 16"):
        model(torch.randn(1, 3, 224, 200))
    with pytest.raises(KeyError, match="vit_base_patch16_224"):
        vitkit.create_model("vit_base_patch16_244")
    with pytest.raises(KeyError, match="did you mean num_heads"):
        vitkit.create_model("vit_tiny_patch4_32", num_head=2)
    with pytest.raises(TypeError, match="depth"):
        vitkit.create_model("vit_tiny_patch4_32", depth="2")
    with pytest.raises(ValueError, match="pool='avg'"):
        vitkit.create_model("vit_tiny_patch4_32", class_token=False)


def test_gap_fc_norm_variant_and_reset_classifier():
    model = tiny_vit("vit_tiny_patch4_32", pool="avg", class_token=False).eval()
    assert model.num_prefix_tokens == 0 and isinstance(model.norm, torch.nn.Identity)
    images = torch.randn(2, 3, 32, 32)
    tokens = model.forward_features(images)
    pooled = model.forward_head(tokens, pre_logits=True)
    assert torch.allclose(pooled, model.fc_norm(tokens.mean(1)), atol=1e-6)
    model.reset_classifier(5)
    assert model(images).shape == (2, 5) and model.config.num_classes == 5 and not model.head.weight.any()
    model.reset_classifier(0)
    assert model(images).shape == (2, 32)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_vit("vit_tiny_patch4_32")
    with torch.no_grad():
        model.head.weight.normal_()
    images = torch.randn(2, 3, 32, 32)
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        model(images).square().sum().backward()
        grads.append(model.blocks[0].attn.qkv.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_no_weight_decay_names_exist():
    model = tiny_vit("vit_tiny_patch4_32")
    assert model.no_weight_decay() <= {n for n, _ in model.named_parameters()}
