"""Train a CIFAR-10 recipe (default: the hybrid, configs/cifar10_hybrid.yaml) on the shared training split and
print val accuracy and wall time per epoch.

    python benchmarks/train_cifar10.py                       # the full recipe (≈ 28 min on 2 cores)
    python benchmarks/train_cifar10.py --config configs/cifar10.yaml   # the conv-stem ViT recipe
    python benchmarks/train_cifar10.py --epochs 1 --per-class 600 --set optim.warmup_epochs=0.2  # smoke run

The tarball (50k JPEGs in train/<class>/) is extracted into a temporary folder; the recipe splits off 5k
images for validation (45k / 5k). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import logging
import os
import tarfile
import tempfile
import time
from pathlib import Path

TARBALL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-train.tar.gz"


def extract(tarball: Path, dest: Path, per_class: int | None) -> None:
    """Extract train/<class>/*.jpg; keep only the first `per_class` images of each class when given."""
    kept: dict[str, int] = {}
    with tarfile.open(tarball) as tar:
        for member in tar:
            if member.isfile():
                cls = Path(member.name).parent.name
                kept[cls] = kept.get(cls, 0) + 1
                if per_class is not None and kept[cls] > per_class:
                    continue
            tar.extract(member, dest, filter="data")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tarball", type=Path, default=TARBALL.resolve())
    recipe = Path(__file__).resolve().parents[1] / "configs" / "cifar10_hybrid.yaml"
    p.add_argument("--config", default=str(recipe), help="recipe YAML (default: configs/cifar10_hybrid.yaml)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--per-class", type=int, help="use only this many images per class (smoke runs)")
    p.add_argument("--out", help="run directory (default: a temporary one)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from vitkit.config import parse_set_items
    from vitkit.runconfig import load_train_config
    from vitkit.rundir import RunDir
    from vitkit.tasks import run

    if not args.tarball.exists():
        raise SystemExit(f"{args.tarball} not found; pass --tarball")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        extract(args.tarball, Path(tmp) / "cifar", args.per_class)
        print(f"extracted in {time.perf_counter() - t0:.1f}s", flush=True)
        overrides = {"data.path": str(Path(tmp) / "cifar"), "out": args.out or str(Path(tmp) / "run"),
                     **({"epochs": args.epochs} if args.epochs else {}), **parse_set_items(args.set)}
        cfg = load_train_config(args.config, overrides)
        print(f"threads: {os.environ.get('OMP_NUM_THREADS', 'default')}, model {cfg.model} {cfg.model_args}",
              flush=True)
        t0 = time.perf_counter()
        summary = run(cfg)
        wall = time.perf_counter() - t0
        entries = RunDir(cfg.out).read_metrics()
        train_rates = [e["img_per_s"] for e in entries if e["split"] == "train"]
        print(f"\n{'epoch':>5} {'val acc1':>9} {'epoch s':>8}")
        for e in (e for e in entries if e["split"] == "val"):
            print(f"{e['epoch'] + 1:>5} {e['acc1']:>9.4f} {e['epoch_seconds']:>8.1f}")
        print(f"final val acc1 {summary['val']['acc1']:.4f}  wall {wall:.0f}s (with decoding and evaluation)"
              f"  median train {sorted(train_rates)[len(train_rates) // 2]:.0f} img/s")
        if "val_flip_tta" in summary:
            print(f"final val acc1 with flip TTA {summary['val_flip_tta']['acc1']:.4f}")


if __name__ == "__main__":
    main()
