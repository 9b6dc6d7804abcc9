"""Hybrid ViT: ResNetV2 stages as the patch embedder of the same VisionTransformer (presets, shapes,
gradients, taps for dense heads, save/load, parity with the only HF hybrid ViT embedder in transformers 5:
DPT-Hybrid's)."""

from __future__ import annotations

import pytest
import torch

import vitkit
from vitkit.convert.hf_bit import bit_config_to_resnetv2, bit_state_dict_to_resnetv2
from vitkit.models import VisionTransformer, create_model, get_model_config
from vitkit.models.hybrid import HybridEmbed
from vitkit.models.resnetv2 import ResNetV2Config
from vitkit.weights import save_pretrained

TINY_TRUNK = {"layers": (1, 1, 1), "channels": (32, 64, 128), "stem_width": 16, "num_groups": 4}


def _tiny_hybrid(**overrides) -> VisionTransformer:
    fields = dict(dim=64, depth=3, num_heads=2, num_classes=10, backbone=TINY_TRUNK)
    return create_model("vit_base_r50_s16_224", **{**fields, **overrides})


def test_presets_are_r50_vit_b_at_stride_16():
    for name, side in (("vit_base_r50_s16_224", 224), ("vit_base_r50_s16_384", 384)):
        cfg = get_model_config(name)
        assert cfg.backbone == ResNetV2Config(layers=(3, 4, 9), channels=(256, 512, 1024), block="bottleneck",
                                              padding="same")
        assert (cfg.dim, cfg.depth, cfg.num_heads, cfg.patch_size) == (768, 12, 12, 1)
        assert cfg.image_size == (side, side) and cfg.num_classes == 1000


def test_param_count_r50_vit_b_384():
    """98,950,952 = HF's 3-stage hybrid BitModel trunk + 1×1 projection + ViT-B/16 at 24×24 + 1000-way head.

    timm's results table lists vit_base_r50_s16_384.orig_in21k_ft_in1k at 98.95 M (it keeps two decimals)."""
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        model = create_model("vit_base_r50_s16_384")
        hf_trunk = transformers.BitModel(transformers.BitConfig(
            layer_type="bottleneck", global_padding="same", embedding_dynamic_padding=True, depths=[3, 4, 9],
            hidden_sizes=[256, 512, 1024], out_features=["stage1", "stage2", "stage3"]))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model.patch_embed.backbone) == count(hf_trunk) == 11_894_848
    D, N = 768, 24 * 24
    block = 2 * 2 * D + (D * 3 * D + 3 * D) + (D * D + D) + (D * 4 * D + 4 * D) + (4 * D * D + D)
    vit = 12 * block + (N + 1) * D + D + 2 * D + (D * 1000 + 1000)  # blocks, pos, [CLS], norm, head
    assert count(model) == count(hf_trunk) + (1024 * D + D) + vit == 98_950_952
    assert round(count(model) / 1e6, 2) == 98.95


def test_hybrid_embed_contract_and_stages():
    model = _tiny_hybrid()
    embed = model.patch_embed
    assert isinstance(embed, HybridEmbed)
    assert (embed.in_chans, embed.patch_size, embed.dim, model.patch_size) == (3, 16, 64, 16)
    images = torch.randn(2, 3, 64, 96)
    stages = embed.forward_stages(images)
    # strides 4, 8, 16
    assert [tuple(s.shape[1:]) for s in stages] == [(32, 16, 24), (64, 8, 12), (128, 4, 6)]
    tokens, grid = embed(images)
    assert tokens.shape == (2, 4 * 6, 64) and grid == (4, 6)
    tokens2, grid2, stages2 = embed.forward_with_stages(images)
    assert torch.equal(tokens, tokens2) and grid == grid2
    assert all(torch.equal(a, b) for a, b in zip(stages, stages2, strict=True))


def test_feature_patch_size_multiplies_stride():
    embed = HybridEmbed(ResNetV2Config(**TINY_TRUNK), in_chans=1, dim=8, feature_patch_size=2)
    assert embed.patch_size == 32
    tokens, grid = embed(torch.randn(1, 1, 64, 96))
    assert tokens.shape == (1, 6, 8) and grid == (2, 3)


@pytest.mark.parametrize("size", [(224, 224), (160, 96)])
def test_hybrid_vit_runs_and_backpropagates(size):
    model = _tiny_hybrid(drop_path_rate=0.1)
    model.reset_classifier(10)
    torch.nn.init.normal_(model.head.weight, std=0.02)  # the zero head would give the trunk zero gradients
    images = torch.randn(2, 3, *size)
    logits = model(images)
    assert logits.shape == (2, 10)
    logits.logsumexp(-1).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and g.isfinite().all() for g in grads.values())
    assert grads["patch_embed.backbone.stem.conv.weight"].abs().sum() > 0


def test_bad_inputs_raise_clear_errors():
    model = _tiny_hybrid()
    with pytest.raises(ValueError, match="multiples of the patch size 16"):
        model(torch.randn(1, 3, 72, 64))
    with pytest.raises(ValueError, match="3-channel"):
        model(torch.randn(1, 1, 64, 64))


def test_stages_and_intermediates_in_one_pass():
    model = _tiny_hybrid().eval()
    images = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        stages, tokens = model.forward_stages_and_intermediates(images, layers=[1, 2])
        alone = model.patch_embed.forward_stages(images), model.forward_intermediates(images, [1, 2])
        assert all(torch.equal(a, b) for a, b in zip(stages, alone[0], strict=True))
        assert all(torch.equal(a, b) for a, b in zip(tokens, alone[1], strict=True))
    assert tokens[0].shape == (1, 1 + 4 * 5, 64)
    plain = create_model("vit_tiny_patch16_224", depth=2)
    no_stages, plain_tokens = plain.forward_stages_and_intermediates(torch.randn(1, 3, 32, 48), layers=1)
    assert no_stages == [] and plain_tokens[0].shape == (1, 1 + 6, 192)


def test_save_load_round_trip_is_bit_exact(tmp_path):
    model = _tiny_hybrid(backbone={**TINY_TRUNK, "block": "preact", "padding": "symmetric"}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # no zero head / unit norms left: every tensor must round-trip
    save_pretrained(model, tmp_path)
    loaded = vitkit.load_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    assert model.state_dict().keys() == loaded.state_dict().keys()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    images = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(model(images), loaded(images))


def test_embedder_matches_hf_dpt_hybrid_embeddings():
    """transformers 5 has no ViTHybrid classifier; its hybrid ViT embedder lives in DPT-Hybrid. Our tokens
    and the two early stages must equal DPTViTHybridEmbeddings' (tokens: its output minus [CLS] and
    positions)."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.dpt.modeling_dpt import DPTViTHybridEmbeddings

    bit = dict(layer_type="bottleneck", global_padding="same", embedding_dynamic_padding=True,
               depths=[1, 2, 1], hidden_sizes=[32, 64, 128], embedding_size=16, num_groups=4,
               out_features=["stage1", "stage2", "stage3"])
    cfg = transformers.DPTConfig(is_hybrid=True, backbone_config=bit, hidden_size=48, image_size=64,
                                 patch_size=16, backbone_featmap_shape=[1, 128, 4, 4], num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=96)
    hf = DPTViTHybridEmbeddings(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            scale, shift = (0.2 if "norm" in name else 0.5), (1.0 if "norm.weight" in name else 0)
            p.copy_(torch.randn_like(p) * scale + shift)
    sd = hf.state_dict()
    embed = HybridEmbed(bit_config_to_resnetv2(bit), in_chans=3, dim=48).eval()
    ours = {f"backbone.{k}": v for k, v in bit_state_dict_to_resnetv2(sd, prefix="backbone.bit.").items()}
    ours |= {"proj.weight": sd["projection.weight"], "proj.bias": sd["projection.bias"]}
    embed.load_state_dict(ours)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = hf(images)
        tokens, grid, stages = embed.forward_with_stages(images)
    expected = out.last_hidden_states[:, 1:] - hf.position_embeddings[:, 1:]
    assert grid == (4, 4)
    torch.testing.assert_close(tokens, expected, atol=1e-4, rtol=0)
    for ours_map, hf_map in zip(stages[:2], out.intermediate_activations, strict=True):
        torch.testing.assert_close(ours_map, hf_map, atol=1e-4, rtol=0)


def test_timm_hybrid_state_dict_loads(tmp_path):
    """A timm-layout hybrid (timm's ResNetV2 names are ours; pos_embed holds [CLS] first) is detected and
    loads exactly; the architecture is read off the shapes."""
    from safetensors.torch import save_file

    model = _tiny_hybrid(image_size=(64, 64)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    sd = dict(model.state_dict())
    sd["pos_embed"] = torch.cat([sd.pop("cls_pos_embed"), sd.pop("pos_embed.weight")], dim=1)  # (1, 1 + N, D)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "hybrid.safetensors"))
    loaded, report = vitkit.weights.load_checkpoint(tmp_path / "hybrid.safetensors", num_heads=2,
                                                    backbone={"num_groups": 4})
    assert report.format == "timm_hybrid" and report.clean
    cfg = loaded.config
    assert cfg.backbone == model.config.backbone and cfg.image_size == (64, 64) and cfg.patch_size == 1
    assert (cfg.dim, cfg.depth, cfg.in_chans, cfg.num_classes) == (64, 3, 3, 10)
    images = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(images), model(images))


def test_thread_policy_accepts_a_hybrid():
    """The small-model one-thread rule counts FLOPs; a hybrid's trunk is not countable and never small."""
    from vitkit.tasks.base import set_cpu_threads

    before = torch.get_num_threads()
    try:
        set_cpu_threads(None, get_model_config("vit_base_r50_s16_224"))
        assert torch.get_num_threads() == before
        set_cpu_threads(None, get_model_config("vitc_tiny_stem4_32", depth=1, dim=32, num_heads=2))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
