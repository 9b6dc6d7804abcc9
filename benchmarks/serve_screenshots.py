"""Screenshots of `vitkit serve`'s page, one per kind of model, to look at (not timed, not asserted).

    python benchmarks/serve_screenshots.py /tmp/serve-shots            # classifier, mae, depth, segment PNGs
    python benchmarks/serve_screenshots.py /tmp/shots --kinds classifier --image cat.jpg

Each model is small and randomly initialised (so scores and maps are noise: this shows the page, not a
model); the photo is scikit-image's Chelsea the cat when scikit-image is installed, else a drawn scene.
Needs Chromium (/usr/bin/chromium) and the serve extra.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the DevTools client and live server
from chromium_devtools import CHROMIUM, Browser  # noqa: E402
from live_server import live_server  # noqa: E402

import vitkit  # noqa: E402
from vitkit.config import PreprocessConfig  # noqa: E402
from vitkit.models import VisionTransformer, ViTConfig  # noqa: E402
from vitkit.serve import create_app, load_service  # noqa: E402

LABELS = ("tabby cat", "tiger cat", "lynx", "Egyptian cat", "fox", "dog", "rabbit")


def build(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "classifier":
        model = VisionTransformer(ViTConfig(image_size=(64, 64), patch_size=8, num_classes=len(LABELS),
                                            dim=96, depth=4, num_heads=3,
                                            preprocess=PreprocessConfig(label_names=LABELS)))
        torch.nn.init.normal_(model.head.weight, std=0.3)  # a zero head would score all classes alike
        return model
    model = vitkit.create_model({"mae": "mae_vit_tiny_patch4_32", "depth": "dpt_tiny_depth",
                                 "segment": "dpt_tiny_segment"}[kind])
    if kind == "segment":  # untrained, one class wins everywhere: louder weights show a legend of several
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(3.0)
    return model


def photo(path: Path) -> Path:
    try:
        from skimage.data import chelsea

        Image.fromarray(chelsea()).save(path)
    except ImportError:
        image = Image.new("RGB", (320, 240), (120, 170, 220))
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 160, 320, 240), fill=(90, 150, 70))
        draw.ellipse((120, 70, 220, 170), fill=(230, 150, 60))
        image.save(path)
    return path


def screenshot(kind: str, image: Path, out: Path, work: Path) -> Path:
    checkpoint = work / kind
    vitkit.save_pretrained(build(kind), checkpoint)
    service = load_service(checkpoint, device="cpu")
    done = " ".join(sorted(service.pipelines))
    with live_server(create_app(service)) as url, Browser(CHROMIUM, work / f"profile-{kind}") as browser:
        page = browser.open(url + "/", width=1280, height=820)
        page.wait_for("document.body.dataset.state === 'ready'")
        page.set_files("#file", [image])
        page.wait_for(f"document.body.dataset.state === 'idle' && document.body.dataset.done === '{done}'")
        page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        shot = page.screenshot(out / f"serve_{kind}.png")
        if page.errors:
            print(f"{kind}: console errors: {page.errors}", file=sys.stderr)
    return shot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder for the PNGs")
    parser.add_argument("--kinds", nargs="+", default=["classifier", "mae", "depth", "segment"],
                        choices=["classifier", "mae", "depth", "segment"])
    parser.add_argument("--image", help="the image to upload (default: a photo of a cat)")
    args = parser.parse_args()
    if CHROMIUM is None:
        sys.exit("serve_screenshots: needs Chromium (Debian: apt-get install chromium)")
    out = Path(args.out)
    work = out / ".work"
    work.mkdir(parents=True, exist_ok=True)
    image = Path(args.image) if args.image else photo(work / "photo.png")
    for kind in args.kinds:
        print(screenshot(kind, image, out, work))


if __name__ == "__main__":
    main()
