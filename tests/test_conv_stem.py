"""Conv-stem ViT (Xiao et al. 2021): the stem as a patch embedder, its config, FLOPs, save/load, refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vitkit
from vitkit.layers.conv_stem import ConvStem, ConvStemConfig
from vitkit.models import create_model, get_model_config
from vitkit.models.summary import vit_forward_flops

PRESET = "vitc_tiny_stem4_32"


def test_stem_layout_and_token_grid():
    stem = ConvStem(ConvStemConfig(channels=(8, 16, 24), strides=(1, 2, 2)), in_chans=3, dim=32)
    assert stem.patch_size == 4
    convs = [m for m in stem.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.stride, c.out_channels) for c in convs] == [
        ((3, 3), (1, 1), 8), ((3, 3), (2, 2), 16), ((3, 3), (2, 2), 24), ((1, 1), (1, 1), 32)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in stem.modules()) == 3
    tokens, grid = stem(torch.randn(2, 3, 32, 48))
    assert grid == (8, 12) and tokens.shape == (2, 96, 32)
    # token n is feature pixel (n // gw, n % gw) of the projection, row-major like PatchEmbed
    x = torch.randn(1, 3, 32, 48)
    stem.eval()
    feature = x
    for conv in stem.convs:
        feature = conv(feature)
    expected = stem.proj(feature)[0, :, 3, 5]
    assert torch.allclose(stem(x)[0][0, 3 * 12 + 5], expected, atol=1e-6)


def test_preset_is_an_8x8_grid_vit():
    cfg = get_model_config(PRESET)
    assert cfg.conv_stem == ConvStemConfig(channels=(32, 64, 128), strides=(1, 2, 2))
    assert (cfg.patch_size, cfg.dim, cfg.depth, cfg.pool) == (1, 128, 6, "avg") and not cfg.patchify_stem
    model = create_model(PRESET).eval()
    assert model.patch_embed.patch_size == 4
    with torch.no_grad():
        assert model.prepare_tokens(torch.randn(2, 3, 32, 32)).shape == (2, 65, 128)
    with pytest.raises(ValueError, match="multiples of the patch size 4"):
        model(torch.randn(1, 3, 30, 30))


def test_config_errors():
    with pytest.raises(ValueError, match="one stride per conv"):
        ConvStemConfig(channels=(8, 16), strides=(2,))
    with pytest.raises(ValueError, match="not both"):
        get_model_config(PRESET, backbone={"layers": (1,), "channels": (32,)})


def test_flops_count_the_stem_convolutions():
    cfg = get_model_config(PRESET)
    stem = 2 * 9 * (32 * 32 * 3 * 32 + 16 * 16 * 32 * 64 + 8 * 8 * 64 * 128)
    proj = 2 * 64 * 128 * 128
    plain = get_model_config(PRESET, conv_stem=None, patch_size=4)
    patch4 = 2 * 64 * 3 * 16 * 128
    assert vit_forward_flops(cfg) == pytest.approx(vit_forward_flops(plain) - patch4 + stem + proj)


def test_save_load_round_trip_keeps_batchnorm_statistics(tmp_path):
    model = create_model(PRESET, depth=2)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32))  # move the BatchNorm running statistics off their init
    vitkit.save_pretrained(model, tmp_path)
    loaded, report = vitkit.load_checkpoint(tmp_path)
    assert report.clean and loaded.config == model.config
    assert isinstance(loaded.config.conv_stem, ConvStemConfig)
    ours = model.state_dict()
    assert any("running_mean" in k for k in ours)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in ours.items())


def test_refused_where_a_patchify_stem_is_needed(tmp_path):
    model = create_model(PRESET, depth=1)
    with pytest.raises(ValueError, match="convolutional stem"):
        vitkit.save_pretrained(model, tmp_path, format="hf")
    encoder = get_model_config(PRESET, num_classes=0, pool="cls")
    with pytest.raises(ValueError, match="patchify encoder"):
        create_model("mae_vit_tiny_patch4_32", encoder=encoder)


def test_trains_under_bf16_autocast():
    torch.manual_seed(0)
    model = create_model(PRESET, depth=2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    losses = []
    for _ in range(15):
        with torch.autocast("cpu", torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("name, channels, strides, grid, conv_share", [
    ("vit_hybrid_conv4_32", (64, 128, 128, 256), (1, 2, 1, 2), 8, (0.45, 0.55)),
    ("vit_hybrid_conv7_32", (64, 128, 128, 256, 256, 256, 256), (1, 2, 1, 2, 1, 1, 2), 4, (0.84, 0.92)),
])
def test_hybrid_presets_token_grid_and_conv_share(name, channels, strides, grid, conv_share):
    cfg = get_model_config(name)
    assert cfg.conv_stem == ConvStemConfig(channels=channels, strides=strides)
    assert (cfg.dim, cfg.depth, cfg.pool) == (256, 2, "avg")
    model = create_model(name).eval()
    with torch.no_grad():
        assert model.prepare_tokens(torch.randn(2, 3, 32, 32)).shape == (2, grid * grid + 1, 256)  # + [CLS]
    convs, side, c_in = 0, 32, 3
    for c_out, s in zip(channels, strides, strict=True):
        side //= s
        convs += 2 * 9 * side * side * c_in * c_out  # 3x3 conv at the output resolution
        c_in = c_out
    assert conv_share[0] < convs / vit_forward_flops(cfg) < conv_share[1]
