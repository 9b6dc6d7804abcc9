"""Batched augmentation: Pillow parity of the colour ops, exact geometry, determinism, soft targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from vitkit.data import (
    Augment,
    AugmentConfig,
    augment_preset,
    mix_batch,
    normalize,
    ops,
    prepare_eval,
    resize_images,
    smooth_one_hot,
)
from vitkit.data.autoaugment import OP_NAMES, RAND_AUGMENT_SPACE, apply_ops, rand_augment, trivial_augment
from vitkit.data.mix import cutmix
from vitkit.data.transforms import color_jitter, random_erasing

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _images(b=6, c=3, h=16, w=16, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, h, w), dtype=torch.uint8, generator=generator)


def _pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).numpy())


def _levels(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().to(torch.int16)


def _from_pil(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).to(torch.int16)


@pytest.mark.parametrize("name, pil_op, factor, tol", [
    ("adjust_brightness", lambda im, f: ImageEnhance.Brightness(im).enhance(f), 1.6, 1),
    ("adjust_contrast", lambda im, f: ImageEnhance.Contrast(im).enhance(f), 0.4, 2),
    ("adjust_saturation", lambda im, f: ImageEnhance.Color(im).enhance(f), 1.7, 2),
    ("adjust_sharpness", lambda im, f: ImageEnhance.Sharpness(im).enhance(f), 1.8, 2),
])
def test_enhance_ops_match_pillow(name, pil_op, factor, tol):
    images = _images()
    out = getattr(ops, name)(images.float() / 255, torch.full((6,), factor))
    for i in range(6):
        expected = _from_pil(pil_op(_pil(images[i]), factor))
        assert (_levels(out[i]) - expected).abs().max() <= tol, name


def test_posterize_solarize_equalize_autocontrast_match_pillow():
    images = _images()
    x = images.float() / 255
    bits = torch.tensor([1, 2, 4, 6, 7, 8])
    post = _levels(ops.posterize(x, bits))
    sol = _levels(ops.solarize(x, torch.full((6,), 100 / 255)))
    eq = _levels(ops.equalize(x))
    low = (x * 0.5 + 0.2).mul(255).round().to(torch.uint8)  # a low-contrast batch to stretch
    auto = _levels(ops.autocontrast(low.float() / 255))
    for i in range(6):
        pil = _pil(images[i])
        assert torch.equal(post[i], _from_pil(ImageOps.posterize(pil, int(bits[i]))))
        assert torch.equal(sol[i], _from_pil(ImageOps.solarize(pil, 100)))
        assert torch.equal(eq[i], _from_pil(ImageOps.equalize(pil)))
        assert (auto[i] - _from_pil(ImageOps.autocontrast(_pil(low[i])))).abs().max() <= 1


def test_equalize_flat_image_unchanged():
    flat = torch.full((2, 3, 5, 5), 0.4)
    assert torch.allclose(ops.equalize(flat), (flat * 255).round() / 255)


def test_geometric_ops_exact_on_pixel_grid():
    x = _images(2, 3, 8, 8).float() / 255
    zero = torch.zeros(2)
    theta = ops.geometric_theta(zero, zero, zero, torch.full((2,), 0.25), zero)
    shift = ops.affine_grid_sample(x, theta, fill=0.5)
    assert torch.allclose(shift[..., 2:], x[..., :-2], atol=1e-5)  # 0.25 of 8 px = 2 px to the right
    assert torch.allclose(shift[..., :2], torch.full_like(shift[..., :2], 0.5))
    turned = ops.affine_grid_sample(x, ops.geometric_theta(torch.full((2,), 90.0), zero, zero, zero, zero))
    assert any(torch.allclose(turned, torch.rot90(x, k, dims=(2, 3)), atol=1e-4) for k in (1, -1))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("op", OP_NAMES)
def test_every_op_shape_dtype_range(op, channels):
    x = (_images(5, channels, 24, 20).float() / 255 * 0.5 + 0.25).mul(255).round() / 255  # low contrast
    index = torch.full((5,), OP_NAMES.index(op))
    out = apply_ops(x, index, torch.linspace(-1, 1, 5), RAND_AUGMENT_SPACE)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    if op != "identity":
        assert not torch.equal(out, x) or op == "color" and channels == 1  # saturation is moot for grey
    else:
        assert torch.equal(out, x)


def test_rand_and_trivial_augment_mix_ops_per_sample():
    x = _images(64, 3, 16, 16).float() / 255
    for fn in (lambda g: rand_augment(x, g, 2, 9), lambda g: trivial_augment(x, g)):
        a, b = fn(torch.Generator().manual_seed(1)), fn(torch.Generator().manual_seed(1))
        c = fn(torch.Generator().manual_seed(2))
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert a.shape == x.shape and 0 <= float(a.min()) and float(a.max()) <= 1
    with pytest.raises(ValueError):
        rand_augment(x, None, 2, 31)


def test_crop_identity_flip_and_padding_shift_exact():
    images = _images(8, 3, 10, 10)
    x = images.float() / 255
    whole = AugmentConfig(crop_scale=(1.0, 1.0))  # no box of full area fits off-square: whole image
    identity = Augment(whole, num_classes=3, mean=(0,) * 3, std=(1,) * 3)
    out, _ = identity(images, torch.zeros(8, dtype=torch.long), torch.Generator().manual_seed(0))
    assert torch.allclose(out, x, atol=1e-5)
    flip = Augment(AugmentConfig(hflip=1.0), num_classes=3, mean=MEAN, std=STD)
    out, _ = flip(images, torch.zeros(8, dtype=torch.long), torch.Generator().manual_seed(0))
    assert torch.allclose(out, normalize(images.flip(-1), MEAN, STD), atol=1e-5)
    pad = Augment(AugmentConfig(crop_padding=2), num_classes=3, mean=(0,) * 3, std=(1,) * 3)
    out, _ = pad(images, torch.zeros(8, dtype=torch.long), torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(8):  # every output is a 10x10 window of the zero-padded image
        windows = [padded[i, :, dy:dy + 10, dx:dx + 10] for dy in range(5) for dx in range(5)]
        assert any(torch.allclose(out[i], w, atol=1e-5) for w in windows)


def test_crop_fractions_fit_and_follow_the_scale_range():
    from vitkit.data.transforms import crop_fractions

    w, h = crop_fractions(4000, (32, 32), (0.08, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0),
                          torch.device("cpu"))
    assert float(w.max()) <= 1 and float(h.max()) <= 1
    assert float((w * h).min()) >= 0.08 - 1e-6 and 0.4 < float((w * h).mean()) < 0.6
    assert float((w / h).log().abs().max()) <= np.log(4 / 3) + 1e-5
    wide_w, wide_h = crop_fractions(3, (20, 40), (1.0, 1.0), (3 / 4, 4 / 3), None, torch.device("cpu"))
    assert torch.allclose(wide_w, torch.full((3,), 2 / 3)) and torch.equal(wide_h, torch.ones(3))


@pytest.mark.parametrize("preset", ["none", "light", "strong"])
@pytest.mark.parametrize("auto", ["none", "randaugment", "trivialaugment"])
def test_augment_determinism_shapes_and_targets(preset, auto):
    cfg = augment_preset(preset, auto_augment=auto, color_jitter=0.3, hue=0.05, image_size=12)
    augment = Augment(cfg, num_classes=5, mean=MEAN, std=STD)
    images, targets = _images(16), torch.arange(16) % 5
    out, soft = augment(images, targets, torch.Generator().manual_seed(0))
    again, soft_again = augment(images, targets, torch.Generator().manual_seed(0))
    other, _ = augment(images, targets, torch.Generator().manual_seed(1))
    assert out.shape == (16, 3, 12, 12) and out.dtype == torch.float32
    assert soft.shape == (16, 5) and soft.dtype == torch.float32
    assert torch.equal(out, again) and torch.equal(soft, soft_again)
    assert not torch.equal(out, other)
    assert torch.allclose(soft.sum(1), torch.ones(16), atol=1e-6)


def test_none_preset_is_normalisation_and_one_hot():
    images, targets = _images(4), torch.tensor([0, 2, 1, 2])
    out, soft = Augment(augment_preset("none"), num_classes=3, mean=MEAN, std=STD)(images, targets)
    assert torch.allclose(out, normalize(images, MEAN, STD))
    assert torch.equal(soft, torch.nn.functional.one_hot(targets, 3).float())


def test_label_smoothing_matches_cross_entropy_convention():
    targets, logits = torch.tensor([0, 3, 1]), torch.randn(3, 4)
    soft = smooth_one_hot(targets, 4, 0.1)
    ours = -(soft * logits.log_softmax(-1)).sum(-1).mean()
    assert torch.allclose(ours, torch.nn.functional.cross_entropy(logits, targets, label_smoothing=0.1))
    with pytest.raises(ValueError):
        smooth_one_hot(torch.tensor([4]), 4)


def test_mixup_targets_follow_the_image_blend():
    x = torch.arange(4, dtype=torch.float).view(4, 1, 1, 1).expand(4, 1, 4, 4).clone()
    targets = torch.tensor([0, 1, 2, 3])
    generator = torch.Generator().manual_seed(0)
    out, soft = mix_batch(x, targets, 4, generator, mixup_alpha=0.8, label_smoothing=0.2)
    lam = (soft[0, 0] - 0.05) / 0.8  # on-value 0.85, off-value 0.05
    assert torch.allclose(out, lam * x + (1 - lam) * x.flip(0), atol=1e-5)
    assert torch.allclose(soft.sum(1), torch.ones(4)) and float(soft.max()) <= 0.85 + 1e-6


def test_cutmix_lambda_equals_kept_area():
    x = torch.arange(4, dtype=torch.float).view(4, 1, 1, 1).expand(4, 1, 20, 20).clone()
    soft = smooth_one_hot(torch.tensor([0, 1, 2, 3]), 4)
    for seed in range(5):
        out, mixed, lam = cutmix(x, soft, 0.6, torch.Generator().manual_seed(seed))
        kept = (out[0] == x[0]).float().mean()
        assert torch.allclose(kept, torch.tensor(lam)) and torch.allclose(mixed[0, 0], torch.tensor(lam))
        assert torch.allclose(mixed.sum(1), torch.ones(4))


def test_mix_switches_between_mixup_and_cutmix_deterministically():
    x, y = _images(8).float(), torch.arange(8) % 4
    runs = [mix_batch(x, y, 4, torch.Generator().manual_seed(s), mixup_alpha=1.0, cutmix_alpha=1.0)[0]
            for s in range(12)]
    # cutmix keeps some pixels exactly; mixup with 0 < λ < 1 changes nearly all of them
    kinds = {bool((r == x).float().mean() > 0.05) for r in runs}
    assert kinds == {True, False}
    again = mix_batch(x, y, 4, torch.Generator().manual_seed(3), mixup_alpha=1.0, cutmix_alpha=1.0)[0]
    assert torch.equal(again, runs[3])
    unmixed, soft = mix_batch(x, y, 4, None, mixup_alpha=1.0, prob=0.0)
    assert torch.equal(unmixed, x) and torch.equal(soft.argmax(1), y)


def test_random_erasing_and_colour_jitter():
    x = normalize(_images(8), MEAN, STD)
    erased = random_erasing(x, 1.0, torch.Generator().manual_seed(0))
    changed = (erased != x).flatten(1).any(1)
    assert bool(changed.all()) and erased.shape == x.shape
    assert torch.equal(random_erasing(x, 0.0, torch.Generator().manual_seed(0)), x)
    y = _images(8).float() / 255
    jittered = color_jitter(y, 0.4, 0.1, torch.Generator().manual_seed(0))
    assert jittered.shape == y.shape and not torch.equal(jittered, y)
    assert float(jittered.min()) >= 0 and float(jittered.max()) <= 1


def test_normalize_resize_and_eval():
    images = _images(2, 3, 8, 8)
    out = normalize(images, MEAN, STD)
    assert torch.allclose(out[:, 1], (images[:, 1].float() / 255 - 0.4) / 0.25)
    assert normalize(images[0], MEAN, STD).shape == (3, 8, 8)
    with pytest.raises(ValueError, match="channels"):
        normalize(images, (0.5,), (0.5,))
    small = resize_images(images, 4)
    assert small.shape == (2, 3, 4, 4) and small.dtype == torch.uint8
    assert prepare_eval(images, MEAN, STD, size=12).shape == (2, 3, 12, 12)
    with pytest.raises(KeyError, match="choose from"):
        augment_preset("medium")
