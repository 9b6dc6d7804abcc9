"""Feeding a GPU: images/s of the 224-pixel training input pipeline per worker process, and how many workers
keep a ViT-B/16 bf16 training step fed at 2,000 and 4,000 img/s.

    python benchmarks/input_pipeline.py                  # 200 JPEGs at 500x375 and 1200x900
    python benchmarks/input_pipeline.py --quick          # 24 JPEGs at 500x375, a smoke run
    python benchmarks/input_pipeline.py --device cuda    # also time the batched augmentation on the GPU

The JPEGs are random crops and resizes of scikit-image's bundled photos (astronaut, coffee, chelsea, rocket,
hubble_deep_field, immunohistochemistry, retina), saved at quality 90 into a temporary folder: realistic sizes
and content, unlike CIFAR-10's 32-pixel images. Each pipeline runs in this one process with one torch thread,
as one DataLoader worker does; workers needed = ceil(target / per-worker rate) assumes linear scaling, one
core per worker.

Pipelines, per image, then a collate of --batch images:

* ``cpu``: Pillow decode at full size → random resized crop (scale 0.08–1, ratio 3/4–4/3) to 224 → flip →
  float normalise (what a torchvision-style worker does);
* ``cpu+draft``: the same with ``Image.draft("RGB", (224, 224))`` first, which lets libjpeg decode at 1/2,
  1/4 or 1/8 scale while both sides stay >= 224: it only helps when the source is at least twice that (it
  also upsamples small crops a little more);
* ``vitkit``: what vitkit's workers do: `decode_array` to the storage size (``--storage``, shorter side +
  centre crop; draft is used where it can be) → uint8 collate; the crop, flip and normalise then run batched
  on the training device (``augment`` row: images/s of `Augment` on --device, a whole batch at a time).
"""

from __future__ import annotations

import argparse
import io
import math
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vitkit.data import Augment, augment_preset
from vitkit.data.decode import decode_array

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TARGETS = (2000, 4000)


def make_jpegs(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> list[bytes]:
    """`count` JPEGs of `size` (w, h): random crops of the bundled photos, resized; also saved to `folder`."""
    import skimage.data

    rng = random.Random(seed)
    photos = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in PHOTOS]
    encoded = []
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        scale = rng.uniform(0.5, 1.0)
        cw, ch = int(w * scale), int(h * scale)
        x, y = rng.randrange(w - cw + 1), rng.randrange(h - ch + 1)
        image = photo.crop((x, y, x + cw, y + ch)).resize(size, Image.BICUBIC)
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        (folder / f"{i:04d}.jpg").write_bytes(buf.getvalue())
        encoded.append(buf.getvalue())
    return encoded


def random_resized_crop_box(w: int, h: int, rng: random.Random) -> tuple[int, int, int, int]:
    """A (left, top, right, bottom) box of area 8–100 % and aspect ratio 3/4–4/3 (Inception-style)."""
    for _ in range(10):
        area = w * h * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = rng.randrange(w - cw + 1), rng.randrange(h - ch + 1)
            return x, y, x + cw, y + ch
    side = min(w, h)
    return (w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2


def cpu_sample(data: bytes, size: int, draft: bool, rng: random.Random) -> torch.Tensor:
    """Decode → random resized crop → flip → float normalise, all in the worker: (3, size, size) float32."""
    with Image.open(io.BytesIO(data)) as img:
        if draft:
            img.draft("RGB", (size, size))
        img = img.convert("RGB")
    img = img.resize((size, size), Image.BILINEAR, box=random_resized_crop_box(*img.size, rng))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div_(255)  # (H, W, C) -> (C, H, W)
    return x.sub_(torch.tensor(MEAN).view(3, 1, 1)).div_(torch.tensor(STD).view(3, 1, 1))


def vitkit_sample(data: bytes, storage: int) -> torch.Tensor:
    return torch.from_numpy(decode_array(data, size=storage))


def per_worker_rate(make_sample, images: list[bytes], batch: int, rounds: int) -> float:
    """Median images/s over `rounds` passes: one sample at a time, stacked every `batch` images."""
    rates = []
    for _ in range(rounds):
        start, pending = time.perf_counter(), []
        for data in images:
            pending.append(make_sample(data))
            if len(pending) == batch:
                torch.stack(pending)
                pending = []
        if pending:
            torch.stack(pending)
        rates.append(len(images) / (time.perf_counter() - start))
    return statistics.median(rates)


def augment_rate(storage: int, size: int, batch: int, device: torch.device, rounds: int) -> float:
    """Images/s of vitkit's batched crop + flip + normalise on `device`, from a uint8 batch already there."""
    augment = Augment(augment_preset("light", image_size=size, crop_scale=(0.08, 1.0)), num_classes=1000,
                      mean=MEAN, std=STD)
    images = torch.randint(0, 256, (batch, 3, storage, storage), dtype=torch.uint8, device=device)
    targets = torch.zeros(batch, dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    times = []
    for _ in range(rounds + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        augment(images, targets, generator)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="JPEGs per source size")
    parser.add_argument("--sizes", nargs="+", default=["500x375", "1200x900"], help="source sizes WxH")
    parser.add_argument("--size", type=int, default=224, help="training crop side")
    parser.add_argument("--storage", type=int, default=256, help="vitkit's decoded storage side")
    parser.add_argument("--batch", type=int, default=64, help="collate batch")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the images (median reported)")
    parser.add_argument("--device", default="cpu", help="where the batched augmentation is timed")
    parser.add_argument("--quick", action="store_true", help="24 images at 500x375, one round")
    args = parser.parse_args()
    if args.quick:
        args.images, args.sizes, args.rounds = 24, ["500x375"], 1
    torch.set_num_threads(1)  # one DataLoader worker = one process, one thread
    rng = random.Random(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.sizes:
            w, h = (int(v) for v in spec.lower().split("x"))
            images = make_jpegs(Path(tmp), args.images, (w, h))
            pipelines = {"cpu": lambda d: cpu_sample(d, args.size, False, rng),
                         "cpu+draft": lambda d: cpu_sample(d, args.size, True, rng),
                         f"vitkit (decode {args.storage})": lambda d: vitkit_sample(d, args.storage)}
            for name, fn in pipelines.items():
                rows.append((name, spec, per_worker_rate(fn, images, args.batch, args.rounds)))
    device = torch.device(args.device)
    torch.set_num_threads(torch.get_num_threads() if device.type == "cuda" else 1)
    gpu = augment_rate(args.storage, args.size, args.batch, device, max(args.rounds, 3))
    print(f"{'pipeline':<22} {'source':>9} {'img/s/worker':>13} " +
          " ".join(f"{'workers@' + str(t):>13}" for t in TARGETS))
    for name, spec, rate in rows:
        needed = " ".join(f"{math.ceil(t / rate):>13d}" for t in TARGETS)
        print(f"{name:<22} {spec:>9} {rate:>13.0f} {needed}")
    print(f"{'augment on ' + args.device:<22} {args.storage:>9} {gpu:>13.0f}  (batched crop + flip + "
          f"normalise of uint8 {args.storage}px batches of {args.batch}, on the training device)")
    print("workers = ceil(target / img/s per worker): one core per worker, linear scaling assumed; a "
          "ViT-B/16 bf16 training step at 2,000 / 4,000 img/s needs that many worker cores on the host.")


if __name__ == "__main__":
    main()
