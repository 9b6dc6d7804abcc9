"""Self-supervised pretraining on CIFAR-10 at small scale: MAE and masked patch prediction vs training
from scratch.

Reproduces the claim of both papers on the shared CIFAR-10 training split: pretrain MAE and MPP on all
training images without labels, then fine-tune and linear-probe on 10% of the labels, against the same ViT
trained from scratch on the same 10% with the same fine-tuning budget. Accuracy is measured on a held-out,
class-stratified part of the split that no stage trains on (pretraining included). Prints one table.

    python benchmarks/ssl_cifar10.py                                  # default budget (hours on a CPU)
    python benchmarks/ssl_cifar10.py --minutes-pretrain 30 --minutes-finetune 10 --device cuda
    python benchmarks/ssl_cifar10.py --minutes-pretrain 14 --minutes-finetune 4 --epochs-linprobe 30
    # ≈ 45 min on 2 CPU cores: MAE fine-tune 48.1%, MPP 46.0%, scratch 34.0% (held-out, 10% labels)
    python benchmarks/ssl_cifar10.py --limit 600 --epochs-pretrain 1 --epochs-finetune 1 --epochs-linprobe 1
    # smoke

Budgets: ``--epochs-*`` per stage, or ``--minutes-*`` converted to epochs from the measured speed of a few
steps (the cosine schedule needs its length up front). The encoder is ViT-Ti/4 (6 blocks) at 32 × 32 for all
arms.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vitkit.bench import BenchConfig, build_candidates, time_call  # noqa: E402
from vitkit.config import replace_config  # noqa: E402
from vitkit.data import DataConfig, DataSplits, build_datasets  # noqa: E402
from vitkit.runconfig import TrainConfig  # noqa: E402
from vitkit.tasks import run as run_task  # noqa: E402
from vitkit.tasks.base import labelled_subset  # noqa: E402

ENCODER = "vit_tiny_patch4_32"
PRETRAIN_MODELS = {"mae": "mae_vit_tiny_patch4_32", "mpp": "mpp_vit_tiny_patch4_32"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="/work/shared/data/cifar10-train.tar.gz",
                   help="tar.gz of train/<class>/*.jpg")
    p.add_argument("--workdir", help="where to extract and write runs (default: a temporary directory)")
    p.add_argument("--label-fraction", type=float, default=0.1)
    p.add_argument("--heldout-fraction", type=float, default=0.1,
                   help="share of the split held out for accuracy")
    p.add_argument("--limit", type=int, help="use only this many training images (smoke tests)")
    p.add_argument("--batch-size", type=int, default=256)
    for stage, epochs in (("pretrain", 100), ("finetune", 50), ("linprobe", 50)):
        p.add_argument(f"--epochs-{stage}", type=int, default=epochs)
        p.add_argument(f"--minutes-{stage}", type=float, help=f"wall-clock budget of each {stage} run")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def load_cifar(args: argparse.Namespace, root: Path) -> tuple[DataConfig, DataSplits]:
    """Extract the tarball (with --limit, the first limit/10 images of each class) and decode it once to count
    and time; every stage's run decodes the same folder with the same seeded held-out split."""
    if not (root / "train").is_dir():
        per_class: dict[str, int] = {}
        with tarfile.open(args.data) as tar:
            for member in tar:
                cls = Path(member.name).parent.name
                if member.isfile() and args.limit and per_class.get(cls, 0) >= args.limit // 10:
                    continue
                per_class[cls] = per_class.get(cls, 0) + member.isfile()
                tar.extract(member, root, filter="data")
    data = DataConfig(path=str(root), val_fraction=args.heldout_fraction, image_size=32, split_seed=args.seed)
    return data, build_datasets(data, progress=False)


def epochs_for(minutes: float | None, epochs: int, preset: str, batch: int, images: int, device: torch.device,
               amp: bool) -> int:
    """`epochs`, or as many epochs as fit in `minutes` at the speed of the benchmark harness's training step
    (`vitkit.bench`: forward, loss, backward, AdamW), after warm-up, under the run's precision."""
    if minutes is None:
        return epochs
    bench = BenchConfig(model=preset, batch_sizes=(batch,), precision="bf16" if amp else "fp32", hf=False,
                        device=str(device))
    step = build_candidates(bench, batch)[0].step
    for _ in range(3):  # warm-up
        step()
    steps_per_epoch = max(1, images // batch)  # training drops the short last batch
    per_epoch = statistics.median(time_call(step, device) for _ in range(5)) * steps_per_epoch
    return max(1, int(minutes * 60 / per_epoch))


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="ssl_cifar10_"))
    t0 = time.perf_counter()
    data, splits = load_cifar(args, root / "data")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    print(f"data: {len(splits.train)} train / {len(splits.val)} held-out images, decoded in "
          f"{time.perf_counter() - t0:.0f}s; runs in {root}")
    base = replace_config(TrainConfig(), {"batch_size": args.batch_size, "seed": args.seed, "amp": args.amp,
                                          "device": str(device), "log_every": 50, "report": False})
    base = replace_config(base, {"data": {"path": data.path, "val_fraction": data.val_fraction,
                                          "image_size": 32, "split_seed": args.seed}})
    rows: list[tuple[str, str, float, float]] = []
    labelled = len(labelled_subset(splits.train, args.label_fraction, args.seed))

    def run(name: str, cfg: TrainConfig, task: dict) -> dict:
        cfg = replace_config(cfg, {"out": str(root / name), "task": task})
        start = time.perf_counter()
        summary = run_task(cfg)
        seconds = time.perf_counter() - start
        acc = summary.get("val", {}).get("acc1", float("nan")) if task["kind"] != "pretrain" else float("nan")
        rows.append((name, task["kind"], acc, seconds))
        print(f"  {name:<22} {'' if acc != acc else f'acc {acc:.2%}  '}{seconds:.0f}s", flush=True)
        return summary

    for method, preset in PRETRAIN_MODELS.items():
        epochs = epochs_for(args.minutes_pretrain, args.epochs_pretrain, preset, args.batch_size,
                            len(splits.train), device, args.amp)
        cfg = replace_config(base, {"model": preset, "epochs": epochs, "optim.lr": 1.5e-3,
                                    "optim.min_lr": 1e-5, "optim.weight_decay": 0.05,
                                    "optim.betas": (0.9, 0.95),
                                    "optim.warmup_epochs": min(5.0, epochs / 10)})
        run(f"pretrain_{method}", cfg, {"kind": "pretrain", "method": method})

    ft_epochs = epochs_for(args.minutes_finetune, args.epochs_finetune, ENCODER, args.batch_size, labelled,
                           device, args.amp)
    ft_cfg = replace_config(base, {"model": ENCODER, "epochs": ft_epochs, "optim.lr": 1e-3,
                                   "optim.weight_decay": 0.05, "optim.layer_decay": 0.75,
                                   "optim.warmup_epochs": min(5.0, ft_epochs / 10),
                                   "model_args": {"drop_path_rate": 0.1}, "augment.crop_padding": 4,
                                   "augment.hflip": 0.5, "augment.label_smoothing": 0.1,
                                   "augment.mixup_alpha": 0.8, "augment.cutmix_alpha": 1.0})
    scratch_cfg = replace_config(ft_cfg, {"optim.layer_decay": None})
    lp_cfg = replace_config(base, {"model": ENCODER, "epochs": args.epochs_linprobe, "optim.lr": 1e-2,
                                   "optim.weight_decay": 0.0, "optim.warmup_epochs": 1.0})
    fraction = args.label_fraction
    for method in PRETRAIN_MODELS:
        ckpt = str(root / f"pretrain_{method}")
        run(f"finetune_{method}", ft_cfg, {"kind": "finetune", "init": ckpt, "label_fraction": fraction})
        run(f"linprobe_{method}", lp_cfg, {"kind": "linprobe", "init": ckpt, "label_fraction": fraction})
    run("scratch", scratch_cfg, {"kind": "finetune", "label_fraction": fraction})
    run("linprobe_random_init", lp_cfg, {"kind": "linprobe", "label_fraction": fraction})

    print(f"\nCIFAR-10, ViT-Ti/4 (6 blocks), {args.label_fraction:.0%} labels ({labelled} images), held-out "
          f"{len(splits.val)} images; pretrain {args.batch_size}-image batches on "
          f"{len(splits.train)} images; device {device}")
    print(f"| {'run':<22} | {'stage':<9} | {'held-out acc':>12} | {'wall time':>9} |")
    print(f"|{'-' * 24}|{'-' * 11}|{'-' * 14}|{'-' * 11}|")
    for name, kind, acc, seconds in rows:
        shown = "-" if acc != acc else f"{acc:.2%}"
        print(f"| {name:<22} | {kind:<9} | {shown:>12} | {seconds:>8.0f}s |")


if __name__ == "__main__":
    main()
