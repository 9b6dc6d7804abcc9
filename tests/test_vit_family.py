"""The modern ViT family: LayerScale, SwiGLU, QK-norm, RoPE, registers and a distillation token compose into
the one VisionTransformer; presets have their releases' parameter counts; the explicit attention path,
attention maps and pooling handle the extra prefix tokens."""

from __future__ import annotations

import pytest
import torch

import vitkit
from vitkit.layers import LayerScale, SwiGLU, apply_rope, swiglu_hidden_dim
from vitkit.layers.rope import RopeConfig, RotaryEmbedding2d
from vitkit.models.summary import counted_forward_flops, vit_forward_flops
from vitkit.viz.analysis import attention_rollout, patch_map
from vitkit.viz.record import record_attention

transformers = pytest.importorskip("transformers")

TINY = dict(image_size=(32, 48), patch_size=8, dim=32, depth=2, num_heads=2, num_classes=5)
OPTIONS = {
    "layerscale": dict(layer_scale_init=0.1),
    "swiglu": dict(mlp="swiglu"),
    "qk-norm": dict(qk_norm=True),
    "registers": dict(num_register_tokens=3),
    "distilled": dict(distilled=True),
    "rope": dict(pos_embed="none", rope=RopeConfig(), num_register_tokens=2, layer_scale_init=1.0),
    "everything": dict(layer_scale_init=0.5, mlp="swiglu", qk_norm=True, num_register_tokens=2,
                       distilled=True, rope=RopeConfig(rescale=None)),
}


def tiny(**overrides):
    model = vitkit.create_model("vit_tiny_patch16_224", **{**TINY, **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("name", list(OPTIONS))
def test_every_option_runs_both_attention_paths_and_keeps_its_prefix(name, tmp_path):
    model = tiny(**OPTIONS[name])
    cfg = model.config
    images = torch.randn(2, 3, 32, 48)
    grid, P = (4, 6), cfg.num_prefix_tokens
    assert P == 1 + cfg.distilled + cfg.num_register_tokens
    with torch.no_grad():
        fused = model(images)
        with record_attention(model) as rec:  # the explicit path, weights handed back
            explicit = model(images)
        tokens = model.forward_features(images)
    assert fused.shape == (2, 5) and (fused - explicit).abs().max() < 1e-5
    assert tokens.shape == (2, P + 24, 32) and rec[-1].shape == (2, 2, P + 24, P + 24)
    assert patch_map(rec[-1], grid, P).shape == (2, 2, 4, 6)  # prefix tokens dropped from the map
    assert patch_map(attention_rollout(rec.weights), grid, P).shape == (2, 4, 6)
    inter = model.forward_intermediates(images, layers=[-1], norm=True)[0]
    assert (inter - tokens).abs().max() < 1e-5
    vitkit.save_pretrained(model, tmp_path)
    again = vitkit.load_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(again(images), fused)


def test_pooling_leaves_registers_and_dist_out():
    model = tiny(num_register_tokens=3, pool="avg", num_classes=0)
    with torch.no_grad():
        tokens = model.forward_features(torch.randn(2, 3, 32, 48))
        assert torch.allclose(model.forward_head(tokens, pre_logits=True),
                              model.fc_norm(tokens[:, 4:].mean(1)))
    both = tiny(num_register_tokens=2, pool="cls+avg", num_classes=0)
    tokens = torch.randn(2, 3 + 24, 32)
    assert torch.equal(both.pool(tokens), torch.cat([tokens[:, 0], tokens[:, 3:].mean(1)], dim=-1))
    deit = tiny(distilled=True)
    with torch.no_grad():
        tokens = deit.forward_features(torch.randn(2, 3, 32, 48))
        expected = (deit.head(tokens[:, 0]) + deit.head_dist(tokens[:, 1])) / 2
        assert torch.allclose(deit.forward_head(tokens), expected)


def test_layer_scale_swiglu_and_rope_parts():
    assert torch.equal(LayerScale(4, 1e-5).gamma, torch.full((4,), 1e-5))
    assert swiglu_hidden_dim(1536, 4) == 4096 and swiglu_hidden_dim(384, 4) == 1024
    mlp = SwiGLU(8, 16)
    x = torch.randn(3, 8)
    gate, up = mlp.fc1.weight[:16], mlp.fc1.weight[16:]
    manual = torch.nn.functional.silu(x @ gate.T + mlp.fc1.bias[:16]) * (x @ up.T + mlp.fc1.bias[16:])
    assert torch.allclose(mlp(x), mlp.fc2(manual), atol=1e-6)
    rope = RotaryEmbedding2d(8, RopeConfig()).eval()
    cos, sin = rope((2, 3))
    assert cos.shape == (6, 8)
    q = torch.randn(1, 1, 2 + 6, 8)
    rotated = apply_rope(q, (cos, sin))
    assert torch.equal(rotated[..., :2, :], q[..., :2, :])  # prefix tokens untouched
    assert torch.allclose(rotated.norm(dim=-1), q.norm(dim=-1), atol=1e-5)  # a rotation keeps lengths
    assert not torch.equal(rope.train()((2, 3))[0], cos)  # coordinates augmented in training only


def test_options_are_refused_where_they_cannot_apply():
    with pytest.raises(ValueError, match="need class_token"):
        vitkit.create_model("vit_tiny_patch16_224", class_token=False, pool="avg", num_register_tokens=1)
    with pytest.raises(ValueError, match="distilled"):
        vitkit.create_model("vit_tiny_patch16_224", distilled=True, pool="avg")
    with pytest.raises(ValueError, match="RoPE"):
        tiny(pos_embed="none", rope=RopeConfig()).forward_tokens(torch.randn(1, 25, 32))


@pytest.mark.parametrize("name", ["deit_tiny_distilled_patch16_224", "dinov2_vitg14_reg",
                                  "dinov3_vits16plus"])
def test_analytic_flops_match_the_counter(name):
    cfg = vitkit.get_model_config(name, depth=2, image_size=(224, 224))
    with torch.device("meta"):
        model = vitkit.build_model(cfg)
    assert vit_forward_flops(cfg) == counted_forward_flops(model, (3, 224, 224))


def meta_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def hf_params(config) -> int:
    cls = {"dinov2": transformers.Dinov2Model, "dinov2_with_registers": transformers.Dinov2WithRegistersModel,
           "dinov3_vit": transformers.DINOv3ViTModel,
           "deit": transformers.DeiTForImageClassificationWithTeacher}[config.model_type]
    with torch.device("meta"):
        return meta_params(cls(config))


def ours(name: str) -> int:
    with torch.device("meta"):
        return meta_params(vitkit.create_model(name))


# sizes of the HF reference configs (DINOv3: + MLP width, gated, millions of parameters)
DINOV2 = {"s": (384, 12, 6), "b": (768, 12, 12), "l": (1024, 24, 16), "g": (1536, 40, 24)}
DINOV3 = {"s16": (384, 12, 6, 1536, False, 21.6), "s16plus": (384, 12, 6, 1536, True, 28.7),
          "b16": (768, 12, 12, 3072, False, 85.7), "l16": (1024, 24, 16, 4096, False, 303.2),
          "h16plus": (1280, 32, 20, 5120, True, 840.6), "7b16": (4096, 40, 32, 8192, True, 6716.5)}


@pytest.mark.parametrize("letter", list(DINOV2))
@pytest.mark.parametrize("reg", [False, True])
def test_dinov2_parameter_counts_equal_hf(letter, reg):
    dim, depth, heads = DINOV2[letter]
    fields = dict(hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads, image_size=518,
                  patch_size=14, use_swiglu_ffn=letter == "g")
    config = (transformers.Dinov2WithRegistersConfig(num_register_tokens=4, **fields) if reg
              else transformers.Dinov2Config(**fields))
    name = f"dinov2_vit{letter}14" + ("_reg" if reg else "")
    assert ours(name) == hf_params(config) - dim  # HF's mask token (pretraining only) is not kept
    paper = {"s": 21, "b": 86, "l": 300, "g": 1100}[letter]  # DINOv2 paper, Table 17 (millions)
    assert abs(ours(name) / 1e6 - paper) / paper < 0.06


@pytest.mark.parametrize("name", list(DINOV3))
def test_dinov3_parameter_counts_equal_hf(name):
    dim, depth, heads, hidden, gated, millions = DINOV3[name]
    config = transformers.DINOv3ViTConfig(
        hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads, intermediate_size=hidden,
        use_gated_mlp=gated, num_register_tokens=4, hidden_act="silu" if gated else "gelu")
    # vitkit holds DINOv3's absent key bias as zeros in the fused qkv; HF keeps an unused mask token
    assert ours(f"dinov3_vit{name}") == hf_params(config) + depth * dim - dim
    assert round(ours(f"dinov3_vit{name}") / 1e6, 1) == millions


@pytest.mark.parametrize("size, dims, millions", [("tiny", (192, 12, 3), 5.7), ("small", (384, 12, 6), 22.1),
                                                  ("base", (768, 12, 12), 86.6)])
def test_deit_parameter_counts(size, dims, millions):
    dim, depth, heads = dims
    config = transformers.DeiTConfig(hidden_size=dim, num_hidden_layers=depth, num_attention_heads=heads,
                                     intermediate_size=4 * dim, num_labels=1000)
    assert ours(f"deit_{size}_distilled_patch16_224") == hf_params(config)
    # DeiT paper, Table 1 (22.1 M is timm's count; the paper rounds it to 22 M)
    assert round(ours(f"deit_{size}_patch16_224") / 1e6, 1) == millions
    if size != "tiny":  # DeiT III = DeiT + LayerScale (2·D per block)
        assert ours(f"deit3_{size}_patch16_224") == ours(f"deit_{size}_patch16_224") + 2 * depth * dim


def test_attention_overlays_and_figure7_with_registers_and_rope(tmp_path):
    pytest.importorskip("matplotlib")
    from vitkit.viz.figures import write_figure7
    from vitkit.viz.overlays import compute_attention_maps

    model = tiny(num_register_tokens=3, distilled=True)
    for method in ("rollout", "cls", "heads"):
        maps = compute_attention_maps(model, torch.randn(2, 3, 32, 48), method, layer=-1).maps
        assert maps.shape[-2:] == (4, 6)  # the 1 + 1 + 3 prefix tokens are not on the map
    rope = tiny(pos_embed="none", rope=RopeConfig(), num_register_tokens=2)
    written = write_figure7(rope, tmp_path, torch.randn(2, 3, 32, 48), "2 noise images")
    assert set(written) == {"embedding_filters", "attention_distance"}  # no position embeddings to compare
