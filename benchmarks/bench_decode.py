"""Time the one-off in-memory decode of an image folder (e.g. the extracted CIFAR-10 tarball).

    mkdir -p /tmp/cifar && tar -xzf ../shared/data/cifar10-train.tar.gz -C /tmp/cifar
    python benchmarks/bench_decode.py /tmp/cifar/train --workers 1 2

Prints images/s and the decoded size for each worker count.
"""

from __future__ import annotations

import argparse
import time

from vitkit.data import ImageFolder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="folder of class subfolders")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--size", type=int, default=None, help="storage size (shorter side + centre crop)")
    args = parser.parse_args()
    folder = ImageFolder.from_root(args.root, size=args.size)
    for workers in args.workers:
        start = time.perf_counter()
        data = folder.load(workers=workers, progress=False)
        seconds = time.perf_counter() - start
        print(f"workers {workers}: {len(data)} images {tuple(data.images.shape[1:])} in {seconds:.1f} s "
              f"({len(data) / seconds:,.0f} img/s), {data.images.numel() / 2**20:.0f} MiB, "
              f"{len(data.skipped)} skipped")


if __name__ == "__main__":
    main()
