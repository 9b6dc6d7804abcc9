"""`vitkit serve`'s page in headless Chromium, driven over the DevTools protocol: pick an image into the
page's file input, wait for the results, read the DOM, and collect console errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from chromium_devtools import CHROMIUM, Browser
from live_server import live_server
from PIL import Image

import vitkit
from vitkit.config import PreprocessConfig
from vitkit.models import VisionTransformer, ViTConfig
from vitkit.serve import create_app, load_service

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")
LABELS = ("cat", "dog", "bird")
DONE = "document.body.dataset.state === 'idle' && document.body.dataset.done === 'attention classify'"
BARS = ("[...document.querySelectorAll('#bars li')].map(li => [li.querySelector('.bar-label').textContent, "
        "parseFloat(li.querySelector('.bar').style.width)])")
OVERLAY = ("(() => { const i = document.getElementById('attention-overlay'); "
           "return [i.hidden, i.complete, i.naturalWidth]; })()")


def choose(page, element: str, value: str) -> None:
    page.evaluate(f"(() => {{ const e = document.getElementById('{element}'); e.value = '{value}'; "
                  "e.dispatchEvent(new Event('change')); })()")


@needs_chromium
def test_the_page_shows_top_k_bars_and_an_attention_overlay(tmp_path):
    cfg = ViTConfig(image_size=(16, 16), patch_size=4, num_classes=3, dim=32, depth=2, num_heads=2,
                    preprocess=PreprocessConfig(label_names=LABELS))
    torch.manual_seed(0)
    model = VisionTransformer(cfg)
    torch.nn.init.normal_(model.head.weight, std=0.5)  # a zero-initialised head scores every class alike
    vitkit.save_pretrained(model, tmp_path / "classifier")
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(image)
    app = create_app(load_service(tmp_path / "classifier", device="cpu"))
    with live_server(app) as url, Browser(CHROMIUM, tmp_path / "profile") as browser:
        page = browser.open(url + "/")
        page.wait_for("document.body.dataset.state === 'ready'")
        assert "cpu" in page.evaluate("document.getElementById('model-card').textContent")
        page.set_files("#file", [image])
        page.wait_for(DONE)
        bars = page.evaluate(BARS)
        hidden, complete, width = page.evaluate(OVERLAY)
        choose(page, "method", "cls")
        choose(page, "head", "1")
        page.wait_for("document.getElementById('attention-caption').textContent.includes('head 1')")
        page.wait_for(DONE)
        errors = page.errors
        page.evaluate("setTimeout(() => { throw new Error('planted') }, 0)")  # the check can fail
        page.wait_for("true")
        planted = page.errors
    assert [label for label, _ in bars] and {label for label, _ in bars} <= set(LABELS) and len(bars) == 3
    assert all(0 < w <= 100 for _, w in bars) and [w for _, w in bars] == sorted((w for _, w in bars),
                                                                                 reverse=True)
    assert not hidden and complete and width > 0
    assert errors == []
    assert any("planted" in e for e in planted)


IDLE = "document.body.dataset.state === 'idle'"
PANELS = ("[...document.querySelectorAll('#reconstruction img')].map(i => [i.alt, i.complete && "
          "i.naturalWidth > 0, i.src.length])")


@needs_chromium
def test_the_page_shows_an_mae_reconstruction_and_a_depth_map_with_its_colour_bar(tmp_path):
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(image)
    found = {}
    with Browser(CHROMIUM, tmp_path / "profile") as browser:
        for kind, name in (("mae", "mae_vit_tiny_patch4_32"), ("depth", "dpt_tiny_depth")):
            torch.manual_seed(0)
            vitkit.save_pretrained(vitkit.create_model(name), tmp_path / kind)
            with live_server(create_app(load_service(tmp_path / kind, device="cpu"))) as url:
                page = browser.open(url + "/")
                page.wait_for("document.body.dataset.state === 'ready'")
                page.set_files("#file", [image])
                done = "attention reconstruct" if kind == "mae" else "depth"
                page.wait_for(f"{IDLE} && document.body.dataset.done === '{done}'")
                if kind == "mae":
                    found["panels"] = page.evaluate(PANELS)
                    found["loss"] = page.evaluate("document.getElementById('reconstruct-loss').textContent")
                    masked = "document.querySelector('#reconstruction img[alt^=masked]').src"
                    before = page.evaluate(masked)
                    choose(page, "mask-ratio", "0.25")
                    page.wait_for(f"{masked} !== '{before}'")
                else:
                    found["depth"] = page.evaluate(
                        "[document.getElementById('depth-image').naturalWidth, "
                        "document.getElementById('depth-legend').hidden, "
                        "getComputedStyle(document.getElementById('depth-gradient')).backgroundImage, "
                        "document.getElementById('depth-min').textContent, "
                        "document.getElementById('depth-max').textContent]")
                found[f"{kind} errors"] = page.errors
    assert [alt for alt, _, _ in found["panels"]] == [
        "original", "masked input", "reconstruction", "reconstruction + visible patches"]
    assert all(ok for _, ok, _ in found["panels"]) and found["loss"].startswith("loss ")
    width, hidden, gradient, low, high = found["depth"]
    assert width == 48 and not hidden and gradient.startswith("linear-gradient") and float(low) <= float(high)
    assert found["mae errors"] == [] and found["depth errors"] == []
