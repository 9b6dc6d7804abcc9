"""Independent oracles for the timm and official-MAE state-dict layouts.

Each test writes a state dict by the format's documented key names with random values (nothing is derived
from a vitkit model or mapping), computes the forward pass here with plain torch ops following the reference
models' math (timm's ``Attention`` / ``Block`` / ``VisionTransformer``; MAE's ``forward_encoder``,
``forward_decoder`` and ``forward_loss`` with a fixed masking noise), loads the file with vitkit and compares
in fp32. The JAX .npz oracle lives in test_convert_vit.py.

Shapes: B batch · C channels · p patch · N patches · D width · H heads · d = D / H.
"""

from __future__ import annotations

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

import vitkit
from vitkit.errors import UsageError

ATOL = 1e-5
EPS = 1e-6  # timm's and MAE's LayerNorm epsilon


def normal(*shape: int, std: float | None = None) -> torch.Tensor:
    """Random values; weights (out, in, ...) get std 1/sqrt(fan-in) so activations stay O(1) at any depth."""
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    return torch.randn(shape) * (std if std is not None else fan_in ** -0.5)


# ---- the reference layouts ---------------------------------------------------------------------------------
def norm_weights(name: str, dim: int) -> dict[str, torch.Tensor]:
    return {f"{name}.weight": 1 + normal(dim, std=0.1), f"{name}.bias": normal(dim, std=0.1)}


def linear_weights(name: str, out_dim: int, in_dim: int, bias: bool = True) -> dict[str, torch.Tensor]:
    weights = {f"{name}.weight": normal(out_dim, in_dim)}
    return {**weights, f"{name}.bias": normal(out_dim, std=0.1)} if bias else weights


def block_weights(name: str, dim: int, mlp_dim: int, qkv_bias: bool = True) -> dict[str, torch.Tensor]:
    """timm's ``Block`` (MAE's encoder and decoder blocks are the same class)."""
    return {**norm_weights(f"{name}.norm1", dim),
            **linear_weights(f"{name}.attn.qkv", 3 * dim, dim, qkv_bias),
            **linear_weights(f"{name}.attn.proj", dim, dim), **norm_weights(f"{name}.norm2", dim),
            **linear_weights(f"{name}.mlp.fc1", mlp_dim, dim),
            **linear_weights(f"{name}.mlp.fc2", dim, mlp_dim)}


def timm_vit_weights(dim: int, depth: int, mlp_dim: int, *, patch: int = 8, grid: int = 4, classes: int = 5,
                     class_token: bool = True, pool: str = "token", qkv_bias: bool = True) -> dict:
    """timm ``VisionTransformer.state_dict()``; pool "token" keeps ``norm``, "avg" has ``fc_norm``."""
    sd = {"patch_embed.proj.weight": normal(dim, 3, patch, patch),
          "patch_embed.proj.bias": normal(dim, std=0.1),
          "pos_embed": normal(1, grid * grid + class_token, dim, std=0.5)}
    if class_token:
        sd["cls_token"] = normal(1, 1, dim, std=0.5)
    for i in range(depth):
        sd.update(block_weights(f"blocks.{i}", dim, mlp_dim, qkv_bias))
    sd.update(norm_weights("norm" if pool == "token" else "fc_norm", dim))
    return {**sd, **linear_weights("head", classes, dim)}


def mae_weights(dim: int, depth: int, decoder_dim: int, decoder_depth: int, *, patch: int = 8, grid: int = 4,
                pos_embed: str = "sincos") -> dict[str, torch.Tensor]:
    """models_mae ``MaskedAutoencoderViT.state_dict()`` (MLP ratio 4): fixed sin-cos tables unless
    `pos_embed` is "random" (the encoder's only)."""
    encoder_pos = (mae_sincos_table(dim, grid) if pos_embed == "sincos"
                   else normal(1, 1 + grid * grid, dim, std=0.5))
    sd = {"cls_token": normal(1, 1, dim, std=0.5), "pos_embed": encoder_pos,
          "patch_embed.proj.weight": normal(dim, 3, patch, patch),
          "patch_embed.proj.bias": normal(dim, std=0.1),
          **norm_weights("norm", dim), **linear_weights("decoder_embed", decoder_dim, dim),
          "mask_token": normal(1, 1, decoder_dim, std=0.5),
          "decoder_pos_embed": mae_sincos_table(decoder_dim, grid),
          **norm_weights("decoder_norm", decoder_dim),
          **linear_weights("decoder_pred", patch * patch * 3, decoder_dim)}
    for i in range(depth):
        sd.update(block_weights(f"blocks.{i}", dim, 4 * dim))
    for i in range(decoder_depth):
        sd.update(block_weights(f"decoder_blocks.{i}", decoder_dim, 4 * decoder_dim))
    return sd


def mae_sincos_table(dim: int, side: int) -> torch.Tensor:
    """MAE's util/pos_embed table (1, 1 + N, D): a zero [CLS] row, then per patch (row-major) the 1-D sin-cos
    embedding of its column index in the first D/2 channels and of its row index in the last D/2 (MAE's
    meshgrid puts w first), each [sin(pos·ω), cos(pos·ω)] with ω_i = 10000^(-i / (D/4))."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")

    def embed(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1).double() * omega  # (N, D/4)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    table = torch.cat([embed(cols), embed(rows)], dim=1)  # (N, D)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float()[None]


# ---- the reference forward passes, from the reference models' math -----------------------------------------
def layer_norm(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], EPS)


def linear(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    return F.linear(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"))


def attention(x: torch.Tensor, sd: dict, name: str, heads: int) -> torch.Tensor:
    """timm ``Attention``: fused qkv split as (3, H, d) per token, q scaled by d^-1/2, softmax over keys."""
    B, N, D = x.shape
    qkv = linear(x, sd, f"{name}.qkv").reshape(B, N, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, N, d)
    weights = ((q * (D // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, H, N, N)
    out = (weights @ v).transpose(1, 2).reshape(B, N, D)  # (B, H, N, d) → (B, N, D)
    return linear(out, sd, f"{name}.proj")


def block(x: torch.Tensor, sd: dict, name: str, heads: int) -> torch.Tensor:
    """timm ``Block``: pre-norm attention and GELU MLP, each added to the residual stream."""
    x = x + attention(layer_norm(x, sd, f"{name}.norm1"), sd, f"{name}.attn", heads)
    hidden = F.gelu(linear(layer_norm(x, sd, f"{name}.norm2"), sd, f"{name}.mlp.fc1"))
    return x + linear(hidden, sd, f"{name}.mlp.fc2")


def depth_of(sd: dict, prefix: str) -> int:
    return 1 + max(int(k[len(prefix):].split(".")[0]) for k in sd if k.startswith(prefix))


def embed_patches(sd: dict, images: torch.Tensor) -> torch.Tensor:
    """timm ``PatchEmbed``: a stride-p convolution, flattened row-major → (B, N, D)."""
    kernel = sd["patch_embed.proj.weight"]
    x = F.conv2d(images, kernel, sd["patch_embed.proj.bias"], stride=kernel.shape[-1])  # (B, D, gh, gw)
    return x.flatten(2).transpose(1, 2)


def timm_vit_logits(sd: dict, images: torch.Tensor, heads: int) -> torch.Tensor:
    """timm ``VisionTransformer.forward``: [CLS] prepended, then positions added, blocks, norm, pool, head."""
    x = embed_patches(sd, images)
    if "cls_token" in sd:
        x = torch.cat([sd["cls_token"].expand(len(x), -1, -1), x], dim=1)
    x = x + sd["pos_embed"]
    for i in range(depth_of(sd, "blocks.")):
        x = block(x, sd, f"blocks.{i}", heads)
    if "fc_norm.weight" in sd:  # global_pool="avg": mean of the patch tokens, then fc_norm
        pooled = layer_norm(x[:, 1 if "cls_token" in sd else 0:].mean(dim=1), sd, "fc_norm")
    else:
        pooled = layer_norm(x, sd, "norm")[:, 0]
    return linear(pooled, sd, "head")


def mae_forward(sd: dict, images: torch.Tensor, noise: torch.Tensor, heads: int, decoder_heads: int,
                mask_ratio: float = 0.75) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """models_mae ``forward`` with its random masking driven by `noise` → (loss, pred, mask; 1 = removed)."""
    # forward_encoder: positions without [CLS], keep the patches of smallest noise, then [CLS] + its position
    x = embed_patches(sd, images) + sd["pos_embed"][:, 1:]
    B, N, D = x.shape
    keep = int(N * (1 - mask_ratio))
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    x = x.gather(1, ids_shuffle[:, :keep, None].expand(-1, -1, D))  # (B, keep, D)
    mask = torch.ones(B, N)
    mask[:, :keep] = 0
    mask = mask.gather(1, ids_restore)
    cls = (sd["cls_token"] + sd["pos_embed"][:, :1]).expand(B, -1, -1)
    x = torch.cat([cls, x], dim=1)
    for i in range(depth_of(sd, "blocks.")):
        x = block(x, sd, f"blocks.{i}", heads)
    x = layer_norm(x, sd, "norm")
    # forward_decoder: mask tokens appended, unshuffled, [CLS] back in front, positions, blocks, prediction
    x = linear(x, sd, "decoder_embed")
    Dd = x.shape[-1]
    tokens = torch.cat([x[:, 1:], sd["mask_token"].expand(B, N - keep, -1)], dim=1)  # (B, N, Dd)
    tokens = tokens.gather(1, ids_restore[..., None].expand(-1, -1, Dd))
    x = torch.cat([x[:, :1], tokens], dim=1) + sd["decoder_pos_embed"]
    for i in range(depth_of(sd, "decoder_blocks.")):
        x = block(x, sd, f"decoder_blocks.{i}", decoder_heads)
    pred = linear(layer_norm(x, sd, "decoder_norm"), sd, "decoder_pred")[:, 1:]  # (B, N, p·p·3)
    # forward_loss: MAE's patchify is (row, col, py, px, channel) per patch
    p = sd["patch_embed.proj.weight"].shape[-1]
    h, w = images.shape[2] // p, images.shape[3] // p
    target = torch.einsum("nchpwq->nhwpqc", images.reshape(B, 3, h, p, w, p)).reshape(B, h * w, p * p * 3)
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum(), pred, mask


# ---- timm --------------------------------------------------------------------------------------------------
def assert_close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    assert ours.shape == theirs.shape, f"{what}: {tuple(ours.shape)} vs {tuple(theirs.shape)}"
    err = (ours - theirs).abs().max().item()
    assert err <= ATOL, f"{what}: max abs error {err}"


TIMM_CASES = {
    "token-pool": dict(),
    "avg-pool-fc-norm-no-qkv-bias": dict(pool="avg", qkv_bias=False),
    "avg-pool-no-class-token": dict(pool="avg", class_token=False),
}


@pytest.mark.parametrize("case", list(TIMM_CASES))
def test_timm_layout_matches_the_reference_forward(tmp_path, case):
    torch.manual_seed(0)
    sd = timm_vit_weights(48, 2, 96, **TIMM_CASES[case])
    torch.save(sd, tmp_path / "vit.pth")
    model, report = vitkit.load_checkpoint(tmp_path / "vit.pth", num_heads=4)
    assert report.format == "timm" and report.clean, str(report)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_close(model(images), timm_vit_logits(sd, images, heads=4), "logits")
        wrong = timm_vit_logits(sd, images, heads=3)  # the oracle is sensitive to the head count
    assert (wrong - model(images)).abs().max() > 1e-3


def test_timm_standard_size_takes_heads_from_the_table(tmp_path, caplog):
    torch.manual_seed(0)
    sd = timm_vit_weights(192, 12, 768)  # ViT-Ti's width, depth and MLP: 3 heads
    torch.save(sd, tmp_path / "vit_ti.pth")
    with caplog.at_level("INFO", logger="vitkit.convert"):
        model, report = vitkit.load_checkpoint(tmp_path / "vit_ti.pth")
    assert report.clean and model.config.num_heads == 3 and "from ViT-Ti's size" in caplog.text
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_close(model(images), timm_vit_logits(sd, images, heads=3), "logits")


@pytest.mark.parametrize("dim, depth, mlp_dim, heads", [(192, 6, 768, 4), (48, 2, 96, 4)])
def test_timm_non_standard_size_needs_num_heads(tmp_path, dim, depth, mlp_dim, heads):
    torch.manual_seed(0)
    sd = timm_vit_weights(dim, depth, mlp_dim)
    torch.save(sd, tmp_path / "vit.pth")
    with pytest.raises(UsageError, match=r"pass num_heads=N \(or model=NAME\)"):
        vitkit.load_pretrained(tmp_path / "vit.pth")
    model = vitkit.load_pretrained(tmp_path / "vit.pth", num_heads=heads)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_close(model(images), timm_vit_logits(sd, images, heads=heads), "logits")


# ---- official MAE ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pos_embed", ["sincos", "random"])
def test_official_mae_layout_matches_the_reference_forward(tmp_path, pos_embed):
    torch.manual_seed(0)
    sd = mae_weights(32, 2, 24, 2, pos_embed=pos_embed)
    torch.save({"model": sd, "epoch": 399, "args": argparse.Namespace(mask_ratio=0.75)}, tmp_path / "mae.pth")
    model, report = vitkit.load_checkpoint(tmp_path / "mae.pth", allow_pickle=("argparse.Namespace",),
                                           encoder={"num_heads": 2}, decoder_num_heads=3)
    assert report.format == "mae" and report.clean, str(report)
    assert model.config.encoder.pos_embed == ("sincos" if pos_embed == "sincos" else "learn")
    images, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    with torch.no_grad():
        out = model(images, noise=noise)
        loss, pred, mask = mae_forward(sd, images, noise, heads=2, decoder_heads=3)
    assert torch.equal(out.mask, mask)
    assert_close(out.pred, pred, "pred")
    assert_close(out.loss, loss, "loss")
