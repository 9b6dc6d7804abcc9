"""Time batched augmentation on CPU (or --device cuda): ms per batch for each op and each preset.

    OMP_NUM_THREADS=2 python benchmarks/bench_augment.py --batch 256 --size 32

Prints, per batch, the median and best wall time of `--repeats` runs and the mean CPU time of this process
(on a busy shared machine wall times include waiting for a core; CPU time does not).
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch

from vitkit.bench import time_call
from vitkit.data import Augment, augment_preset
from vitkit.data.autoaugment import OP_NAMES, RAND_AUGMENT_SPACE, apply_ops


def timed(fn, repeats: int, device: torch.device) -> tuple[float, float, float]:
    for _ in range(5):  # warm-up: the first runs pay for fresh memory pages
        fn()
    times = []
    cpu_start = time.process_time()
    for _ in range(repeats):
        times.append(time_call(fn, device) * 1000)
    cpu = (time.process_time() - cpu_start) * 1000 / repeats
    return statistics.median(times), min(times), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    g = torch.Generator(device=device).manual_seed(0)
    shape = (args.batch, args.channels, args.size, args.size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    targets = torch.randint(0, 10, (args.batch,), device=device)
    x = images.float() / 255
    print(f"batch {shape} on {device}, torch threads {torch.get_num_threads()}: ms median / best / CPU")
    for k, name in enumerate(OP_NAMES):
        index = torch.full((args.batch,), k, device=device)
        strength = torch.full((args.batch,), 0.5, device=device)
        op = partial(apply_ops, x, index, strength, RAND_AUGMENT_SPACE)
        med, best, cpu = timed(op, args.repeats, device)
        print(f"  op {name:<14} {med:7.2f} / {best:6.2f} / {cpu:6.2f}")
    mean, std = (0.5,) * args.channels, (0.5,) * args.channels
    for preset in ("none", "light", "strong"):
        for auto in ("none", "randaugment", "trivialaugment"):
            augment = Augment(augment_preset(preset, auto_augment=auto), num_classes=10, mean=mean, std=std)
            med, best, cpu = timed(partial(augment, images, targets, g), args.repeats, device)
            print(f"  preset {preset:<6} + {auto:<15} {med:7.2f} / {best:6.2f} / {cpu:6.2f}")


if __name__ == "__main__":
    main()
