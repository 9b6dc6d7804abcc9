"""decode_image: every Pillow mode converted correctly, every bad file kind raises UnreadableImage."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.data import UnreadableImage, decode_image


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


def test_rgb_jpeg_png_webp_bmp_shapes(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    for suffix in ("png", "bmp", "webp", "jpg"):
        path = _save(Image.fromarray(array), tmp_path / f"x.{suffix}", **({"lossless": True}
                                                                            if suffix == "webp" else {}))
        out = decode_image(path)
        assert out.dtype == torch.uint8 and out.shape == (3, 12, 20)
        if suffix != "jpg":  # lossless formats round-trip exactly
            assert torch.equal(out, torch.from_numpy(array).permute(2, 0, 1))


def test_grayscale_to_rgb_and_single_channel(tmp_path):
    array = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    path = _save(Image.fromarray(array, mode="L"), tmp_path / "g.png")
    rgb = decode_image(path)
    assert rgb.shape == (3, 8, 8) and all(torch.equal(rgb[c], torch.from_numpy(array)) for c in range(3))
    gray = decode_image(path, channels=1)
    assert gray.shape == (1, 8, 8) and torch.equal(gray[0], torch.from_numpy(array))


def test_one_bit(tmp_path):
    img = Image.new("1", (4, 2), 0)
    img.putpixel((1, 0), 1)
    out = decode_image(_save(img, tmp_path / "b.png"), channels=1)
    assert out.shape == (1, 2, 4) and out[0, 0, 1] == 255 and out[0, 0, 0] == 0


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    out = decode_image(path, channels=1)[0, 0].tolist()
    assert out == [0, 4, 128, 255]  # 1000 · 255/65535 ≈ 3.9: scaled, a clip would give 255
    assert decode_image(path).shape == (3, 1, 4)


@pytest.mark.parametrize("mode", ["I;16B", "I"])
def test_sixteen_bit_big_endian_and_mode_i(mode):
    values = np.array([[0, 65535, 300]], dtype=">u2")
    img = Image.frombytes("I;16B", (3, 1), values.tobytes())
    img = img if mode == "I;16B" else img.convert("I")
    buf = io.BytesIO()
    img.save(buf, format="TIFF")
    assert Image.open(io.BytesIO(buf.getvalue())).mode == mode
    assert decode_image(buf.getvalue(), channels=1)[0, 0].tolist() == [0, 255, 1]


def test_cmyk_jpeg(tmp_path):
    path = _save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "c.jpg", quality=100)
    assert Image.open(path).mode == "CMYK"
    r, g, b = decode_image(path)[:, 4, 4].tolist()
    assert r > 240 and g < 15 and b < 15  # pure red


def test_palette_with_transparency_composited_on_white(tmp_path):
    img = Image.new("P", (4, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putdata([0, 1, 1, 0])
    path = _save(img, tmp_path / "p.png", transparency=1)
    out = decode_image(path)
    assert out[:, 0, 0].tolist() == [255, 0, 0]
    assert out[:, 0, 1].tolist() == [255, 255, 255]  # transparent index → background
    black = decode_image(path, background=(0, 0, 0))
    assert black[:, 0, 1].tolist() == [0, 0, 0]


def test_rgba_and_la_composited(tmp_path):
    rgba = Image.new("RGBA", (2, 2), (255, 0, 0, 128))
    out = decode_image(_save(rgba, tmp_path / "a.png"))
    assert out[:, 0, 0].tolist() == [255, 127, 127]
    la = Image.new("LA", (2, 2), (0, 0))  # fully transparent black
    assert decode_image(_save(la, tmp_path / "la.png"), channels=1)[0, 0, 0] == 255


def test_exif_orientation_applied(tmp_path):
    array = np.zeros((10, 20, 3), dtype=np.uint8)  # 10 high, 20 wide; left half white
    array[:, :10] = 255
    img = Image.fromarray(array)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    path = _save(img, tmp_path / "rot.jpg", exif=exif.tobytes(), quality=100)
    out = decode_image(path)
    assert out.shape == (3, 20, 10)  # height and width swapped
    # clockwise rotation puts the former left half at the top
    assert out[:, :8].float().mean() > 240 and out[:, 12:].float().mean() < 15


def test_animated_gif_gives_frame_zero(tmp_path):
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(path).n_frames == 3
    assert decode_image(path)[:, 3, 3].tolist() == [255, 0, 0]


def test_resize_shorter_side_and_centre_crop(tmp_path):
    path = _save(Image.new("RGB", (40, 20), (10, 20, 30)), tmp_path / "wide.png")
    assert decode_image(path, size=10).shape == (3, 10, 10)
    assert decode_image(path, size=(7, 9)).shape == (3, 7, 9)
    assert decode_image(path, size=16, crop_pct=0.8).shape == (3, 16, 16)
    jpeg = _save(Image.new("RGB", (256, 128), (200, 10, 10)), tmp_path / "big.jpg")
    assert decode_image(jpeg, size=32).shape == (3, 32, 32)  # JPEG draft (DCT downscale) path


@pytest.mark.parametrize("kind", ["truncated", "zero_byte", "text", "bomb_error", "bomb_warning"])
def test_bad_files_raise_unreadable(tmp_path, monkeypatch, kind):
    path = tmp_path / "bad.jpg"
    if kind == "truncated":
        buf = io.BytesIO()
        noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(noise).save(buf, "JPEG")
        path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not an image\n")
    else:
        Image.new("RGB", (64, 64)).save(path)
        # 4096 pixels: over twice the limit is Pillow's error, between 1x and 2x only a warning
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000 if kind == "bomb_error" else 3000)
    with pytest.raises(UnreadableImage) as info:
        decode_image(path)
    assert info.value.path == str(path)
    expected = {"truncated": "truncated", "zero_byte": "0 bytes", "text": "not an image",
                "bomb_error": "decompression bomb", "bomb_warning": "decompression bomb"}[kind]
    assert expected in info.value.reason
    assert str(path) in str(info.value)


def test_unreadable_pickles_and_missing_file_is_not_unreadable(tmp_path):
    err = pickle.loads(pickle.dumps(UnreadableImage("/x.jpg", "why")))
    assert (err.path, err.reason) == ("/x.jpg", "why")
    with pytest.raises(FileNotFoundError):
        decode_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="channels"):
        decode_image(tmp_path / "missing.png", channels=2)
