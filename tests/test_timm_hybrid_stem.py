"""timm's R+Ti/16 hybrid (``vit_tiny_r_s16_p8_224``: a ResNetV2 stem alone, then 8×8 patches) against an
independent oracle: a state dict written by timm's key names with random values, and the forward pass computed
here with plain torch ops following timm's math (``StdConv2dSame`` eps 1e-8 with TF-SAME padding,
``GroupNormAct`` 32 groups + ReLU, ``MaxPool2dSame`` padding with −inf, the patch convolution, then the plain
ViT of test_oracle_layouts). No HF model has this architecture, so this is the parity check."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from test_oracle_layouts import assert_close, block, depth_of, layer_norm, linear, timm_vit_weights  # noqa: E402

import vitkit


def pad_same(x: torch.Tensor, k: int, s: int, value: float = 0.0) -> torch.Tensor:
    """TF SAME: output side ceil(n / s); the extra padding pixel at the bottom / right."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


def stem_only_weights(dim: int = 48, depth: int = 2, stem: int = 64) -> dict[str, torch.Tensor]:
    sd = timm_vit_weights(dim, depth, 2 * dim, patch=8, grid=2)  # 64×64 images: stride 4 · 8 → 2×2 tokens
    sd["patch_embed.proj.weight"] = torch.randn(dim, stem, 8, 8) / math.sqrt(stem * 64)
    sd["patch_embed.backbone.conv.weight"] = torch.randn(stem, 3, 7, 7)
    sd["patch_embed.backbone.norm.weight"] = 1 + 0.1 * torch.randn(stem)
    sd["patch_embed.backbone.norm.bias"] = 0.1 * torch.randn(stem)
    return sd


def reference_logits(sd: dict, images: torch.Tensor, heads: int) -> torch.Tensor:
    w = sd["patch_embed.backbone.conv.weight"]
    mean, var = w.mean(dim=(1, 2, 3), keepdim=True), w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    x = F.conv2d(pad_same(images, 7, 2), (w - mean) / torch.sqrt(var + 1e-8), stride=2)
    gamma, beta = sd["patch_embed.backbone.norm.weight"], sd["patch_embed.backbone.norm.bias"]
    x = F.relu(F.group_norm(x, 32, gamma, beta, eps=1e-5))
    x = F.max_pool2d(pad_same(x, 3, 2, value=float("-inf")), 3, 2)  # (B, 64, H/4, W/4)
    x = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=8)
    x = x.flatten(2).transpose(1, 2)  # (B, D, gh, gw) → (B, N, D)
    x = torch.cat([sd["cls_token"].expand(len(x), -1, -1), x], dim=1) + sd["pos_embed"]
    for i in range(depth_of(sd, "blocks.")):
        x = block(x, sd, f"blocks.{i}", heads)
    return linear(layer_norm(x, sd, "norm")[:, 0], sd, "head")


def test_timm_stem_only_hybrid_matches_the_reference(tmp_path):
    torch.manual_seed(0)
    sd = stem_only_weights()
    torch.save(sd, tmp_path / "r_ti.pth")
    model, report = vitkit.load_checkpoint(tmp_path / "r_ti.pth", num_heads=4)
    assert report.format == "timm_hybrid" and report.clean, str(report)
    backbone = model.config.backbone
    assert backbone.layers == () and model.patch_size == 32 and model.config.image_size == (64, 64)
    images = torch.randn(2, 3, 64, 96)  # another grid: 2×3 tokens, positions resampled
    with torch.no_grad():
        assert_close(model(images[..., :64]), reference_logits(sd, images[..., :64], heads=4), "logits")
        assert model(images).shape == (2, 5)


def test_r_ti_preset_is_the_timm_model():
    with torch.device("meta"):
        model = vitkit.create_model("vit_tiny_r_s16_p8_224")
    keys = set(model.state_dict())
    assert {"patch_embed.backbone.stem.conv.weight", "patch_embed.backbone.stem.norm.weight"} <= keys
    assert model.patch_size == 32 and model.pos_embed.weight.shape == (1, 49, 192)
    assert sum(p.numel() for p in model.parameters()) == 6_337_704  # timm's 6.34 M
