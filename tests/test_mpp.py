"""Masked patch prediction: targets, corruption statistics, loss positions."""

from __future__ import annotations

import math

import pytest
import torch

from vitkit.models import create_model
from vitkit.models.mpp import (
    KEEP,
    MASKED,
    RANDOM,
    UNCHANGED,
    corrupt_patches,
    downsampled_patches,
    mean_color_classes,
)


def solid(colors: list[tuple[float, float, float]], patch: int = 4) -> torch.Tensor:
    """One image per row of patches, each patch a solid colour: (1, 3, p, p·len(colors))."""
    tiles = [torch.tensor(c).reshape(3, 1, 1).expand(3, patch, patch) for c in colors]
    return torch.cat(tiles, dim=2)[None]


def test_known_colours_map_to_known_classes() -> None:
    colors = [(0, 0, 0), (1, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (0.5, 0.25, 0.9)]
    classes = mean_color_classes(solid(colors), 4).tolist()[0]
    # r·64 + g·8 + b with 3-bit levels floor(v·8) capped at 7: 0.5→4, 0.25→2, 0.9→7
    assert classes == [0, 511, 7 * 64, 7 * 8, 7, 4 * 64 + 2 * 8 + 7]


def test_mean_colour_is_the_patch_mean() -> None:
    image = torch.zeros(1, 3, 4, 4)
    image[:, 0, :2] = 1.0  # red in the top half: mean red 0.5 → level 4
    assert mean_color_classes(image, 4).item() == 4 * 64


def test_downsampled_target() -> None:
    image = torch.arange(64.0).reshape(1, 1, 8, 8).expand(1, 3, 8, 8)
    out = downsampled_patches(image, 8, 4)
    assert out.shape == (1, 1, 48)
    assert out[0, 0, 0].item() == pytest.approx((0 + 1 + 8 + 9) / 4)
    with pytest.raises(ValueError):
        downsampled_patches(image, 6, 4)


def test_corruption_statistics() -> None:
    """50% corrupted per image exactly; of those 80/10/10 within 5 standard deviations."""
    B, N, D = 64, 64, 8
    tokens = torch.randn(B, N, D)
    mask_token = torch.full((1, 1, D), 7.0)
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    for _ in range(10):
        out, kind = corrupt_patches(tokens, mask_token, 0.5, 0.8, 0.1, gen)
        assert ((kind != KEEP).sum(1) == N // 2).all()
        counts += torch.bincount(kind.flatten(), minlength=4)
        # each kind does what it says
        assert torch.equal(out[kind == KEEP], tokens[kind == KEEP])
        assert torch.equal(out[kind == UNCHANGED], tokens[kind == UNCHANGED])
        assert (out[kind == MASKED] == 7.0).all()
        rand = kind == RANDOM
        assert not (out[rand] == tokens[rand]).all(-1).any()  # another patch, never itself
        flat = tokens.reshape(-1, D)
        assert all((flat == row).all(-1).any() for row in out[rand])  # ... but a real patch embedding
    total = counts[1:].sum()
    for k, p in ((MASKED, 0.8), (RANDOM, 0.1), (UNCHANGED, 0.1)):
        sd = math.sqrt(total * p * (1 - p))
        assert abs(counts[k] - total * p) < 5 * sd, (k, counts)


def tiny_mpp(target: str = "color3bit"):
    return create_model("mpp_vit_tiny_patch4_32", target=target,
                        encoder={"depth": 2, "dim": 32, "num_heads": 2}).eval()


@pytest.mark.parametrize("target,shape", [("color3bit", (2, 64, 512)), ("color", (2, 64, 3)),
                                          ("downsampled", (2, 64, 48))])
def test_forward_shapes(target: str, shape: tuple[int, ...]) -> None:
    out = tiny_mpp(target)(torch.randn(2, 3, 32, 32))
    assert out.pred.shape == shape and out.corrupted.sum() == 64 and torch.isfinite(out.loss)


def test_loss_counts_corrupted_positions_only() -> None:
    model = tiny_mpp()
    images = torch.randn(2, 3, 32, 32)
    out = model(images, generator=torch.Generator().manual_seed(1))
    c = out.corrupted.bool()
    expected = torch.nn.functional.cross_entropy(out.pred[c], out.target[c])
    torch.testing.assert_close(out.loss, expected)
    everywhere = torch.nn.functional.cross_entropy(out.pred.flatten(0, 1), out.target.flatten())
    assert not torch.isclose(out.loss, everywhere)
    # same generator → same corruption → same loss
    again = model(images, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again.corruption, out.corruption)


def test_targets_use_unnormalised_pixels() -> None:
    model = tiny_mpp()
    pre = model.config.encoder.preprocess
    white = ((torch.ones(1, 3, 32, 32) - torch.tensor(pre.mean).reshape(1, 3, 1, 1))
             / torch.tensor(pre.std).reshape(1, 3, 1, 1))
    assert (model.targets(white) == 511).all()


def test_export_encoder_is_a_plain_vit() -> None:
    model = tiny_mpp()
    vit = model.export_encoder()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(vit.forward_features(x), model.encoder.forward_features(x))
    assert vit is not model.encoder
