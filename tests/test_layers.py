"""Layers: attention (fused vs explicit, masks, init), block, patch embedding, position embeddings, patchify,
masking, drop path."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vitkit.layers import (
    Attention,
    Block,
    DropPath,
    LearnedPosEmbed,
    PatchEmbed,
    SinCosPosEmbed,
    additive_mask,
    explicit_attention,
    gather_tokens,
    patchify,
    random_masking,
    resample_pos_embed,
    sincos_pos_embed_2d,
    unpatchify,
)


def randomized_attention(dim=32, heads=4, qkv_bias=True):
    attn = Attention(dim, heads, qkv_bias=qkv_bias).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
    return attn


# ---- attention ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("qkv_bias", [True, False])
def test_fused_and_explicit_paths_agree(qkv_bias):
    attn = randomized_attention(qkv_bias=qkv_bias)
    x = torch.randn(3, 17, 32)
    fused = attn(x)
    explicit, weights = attn(x, return_weights=True)
    assert (fused - explicit).abs().max() < 1e-5
    assert weights.shape == (3, 4, 17, 17)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 4, 17), atol=1e-6)


def test_attention_matches_the_textbook_formula():
    attn = randomized_attention(dim=24, heads=3)
    x = torch.randn(2, 5, 24)
    q, k, v = attn.qkv(x).reshape(2, 5, 3, 3, 8).permute(2, 0, 3, 1, 4)  # each (B, H, T, d)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 5, 24))
    out, got = attn(x, return_weights=True)
    assert torch.allclose(got, weights, atol=1e-6) and torch.allclose(out, expected, atol=1e-5)


def test_boolean_and_additive_masks_are_equivalent_on_both_paths():
    attn = randomized_attention()
    x = torch.randn(2, 9, 32)
    allowed = torch.rand(2, 1, 9, 9) > 0.4
    allowed[..., 0] = True  # every query may attend somewhere
    bias = torch.zeros(2, 1, 9, 9).masked_fill(~allowed, float("-inf"))
    assert torch.equal(additive_mask(allowed, torch.float32), bias)
    outs = [attn(x, mask=allowed), attn(x, mask=bias)]
    for mask in (allowed, bias):
        out, weights = attn(x, mask=mask, return_weights=True)
        outs.append(out)
        assert not weights.masked_select(~allowed.expand_as(weights)).any()  # masked keys get zero weight
        assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 9), atol=1e-6)
    for out in outs[1:]:
        assert (out - outs[0]).abs().max() < 1e-5


def test_explicit_attention_dropout_only_affects_the_output():
    q, k, v = torch.randn(3, 1, 2, 6, 4).unbind(0)
    out, weights = explicit_attention(q, k, v, dropout_p=0.5)
    _, clean = explicit_attention(q, k, v)
    assert torch.equal(weights, clean) and out.shape == (1, 2, 6, 4)


def test_attention_init_is_xavier_uniform_with_zero_biases():
    torch.manual_seed(0)
    attn = Attention(256, 8)
    for linear in (attn.qkv, attn.proj):
        fan_out, fan_in = linear.weight.shape
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert linear.weight.abs().max() <= bound
        assert abs(linear.weight.std().item() - bound / math.sqrt(3)) < 0.02 * bound  # uniform(-a, a) std
        assert not linear.bias.any()


def test_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="divisible"):
        Attention(30, 4)


def test_observer_sees_weights_and_forces_explicit_path():
    attn = randomized_attention()
    seen = []
    attn.observer = seen.append
    x = torch.randn(1, 4, 32)
    assert torch.allclose(attn(x), attn(x, return_weights=True)[0])
    assert len(seen) == 2 and seen[0].shape == (1, 4, 4, 4)


# ---- block -------------------------------------------------------------------------------------------------
def test_block_is_pre_norm_residual():
    block = Block(16, 2, mlp_ratio=2.0, eps=1e-6).eval()
    x = torch.randn(2, 5, 16)
    h = x + block.attn(block.norm1(x))
    assert torch.allclose(block(x), h + block.mlp(block.norm2(h)), atol=1e-6)
    assert block.norm1.eps == 1e-6 and block.mlp.fc1.out_features == 32


def test_drop_path_drops_whole_samples_and_rescales():
    drop = DropPath(0.5).train()
    out = drop(torch.ones(1000, 3, 2))
    per_sample = out.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()
    assert 0.4 < (per_sample[:, 0] > 0).float().mean() < 0.6
    assert torch.equal(drop.eval()(torch.ones(4, 2)), torch.ones(4, 2))


# ---- patch embedding ---------------------------------------------------------------------------------------
def test_patch_embed_is_a_linear_map_of_flattened_patches():
    embed = PatchEmbed(4, 3, 8)
    images = torch.randn(2, 3, 8, 12)
    tokens, grid = embed(images)
    assert grid == (2, 3) and tokens.shape == (2, 6, 8)
    # conv k=s=p equals a Linear on each patch flattened as (C, p, p)
    patches = images.reshape(2, 3, 2, 4, 3, 4).permute(0, 2, 4, 1, 3, 5).reshape(2, 6, 48)
    expected = patches @ embed.proj.weight.reshape(8, 48).T + embed.proj.bias
    assert torch.allclose(tokens, expected, atol=1e-5)


def test_patch_embed_bad_inputs_name_the_problem():
    embed = PatchEmbed(4, 3, 8)
    with pytest.raises(ValueError, match="3-channel.*got 1 channels"):
        embed(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="10×8 are not multiples of the patch size 4"):
        embed(torch.randn(1, 3, 10, 8))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        embed(torch.randn(3, 8, 8))


# ---- position embeddings -----------------------------------------------------------------------------------
def test_learned_pos_embed_resamples_on_the_fly():
    pos = LearnedPosEmbed((4, 4), 8)
    assert pos((4, 4)) is pos.weight
    out = pos((6, 2))
    expected = F.interpolate(pos.weight.reshape(1, 4, 4, 8).permute(0, 3, 1, 2), size=(6, 2), mode="bicubic",
                             align_corners=False).permute(0, 2, 3, 1).reshape(1, 12, 8)
    assert torch.allclose(out, expected)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear", "nearest", "area"])
def test_resample_modes_preserve_a_constant_grid(mode):
    pos = torch.full((1, 9, 4), 0.5)
    out = resample_pos_embed(pos, (3, 3), (5, 7), mode)
    assert out.shape == (1, 35, 4) and torch.allclose(out, torch.full_like(out, 0.5), atol=1e-6)


def test_resample_rejects_a_wrong_grid():
    with pytest.raises(ValueError, match="3×4 grid"):
        resample_pos_embed(torch.zeros(1, 10, 4), (3, 4), (2, 2))


def test_sincos_embedding_layout():
    emb = sincos_pos_embed_2d(8, (2, 3))  # D/4 = 2 frequencies: ω = (1, 1/100)
    assert emb.shape == (6, 8)
    row, col = 1, 2  # token 5
    w = torch.tensor([1.0, 0.01])
    expected = torch.cat([torch.sin(col * w), torch.cos(col * w), torch.sin(row * w), torch.cos(row * w)])
    assert torch.allclose(emb[5], expected, atol=1e-6)
    fixed = SinCosPosEmbed((2, 3), 8)
    assert torch.equal(fixed((2, 3))[0], emb) and fixed((4, 4)).shape == (1, 16, 8)
    assert not list(fixed.parameters()) and "weight" not in fixed.state_dict()
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_pos_embed_2d(6, (2, 2))


# ---- patchify, masking -------------------------------------------------------------------------------------
def test_patchify_round_trip_and_pixel_order():
    images = torch.randn(2, 3, 8, 12)
    patches = patchify(images, 4)
    assert patches.shape == (2, 6, 48)
    # patch 1 is row 0, column 1; flattened as (p, p, C)
    assert torch.equal(patches[0, 1], images[0, :, 0:4, 4:8].permute(1, 2, 0).reshape(-1))
    assert torch.equal(unpatchify(patches, 4, (2, 3), 3), images)
    with pytest.raises(ValueError):
        patchify(torch.randn(1, 3, 6, 8), 4)


def test_random_masking_follows_noise():
    noise = torch.tensor([[0.9, 0.1, 0.5, 0.3]])
    m = random_masking(1, 4, 0.5, noise=noise)
    assert m.ids_keep.tolist() == [[1, 3]] and m.mask.tolist() == [[1, 0, 1, 0]]
    tokens = torch.arange(4.0).reshape(1, 4, 1)
    assert gather_tokens(tokens, m.ids_keep).flatten().tolist() == [1.0, 3.0]
    shuffled = torch.cat([gather_tokens(tokens, m.ids_keep), torch.full((1, 2, 1), -1.0)], dim=1)
    restored = gather_tokens(shuffled, m.ids_restore)
    assert restored.flatten().tolist() == [-1.0, 1.0, -1.0, 3.0]
