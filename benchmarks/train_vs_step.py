"""End-to-end training speed against the pure model step (issue 7: `vitkit train` should sustain ≥ 90% of it).

    python benchmarks/train_vs_step.py                          # CIFAR-10 recipe, 1000 images per class
    python benchmarks/train_vs_step.py --config configs/cifar10.yaml --per-class 500 --epochs 1

Three measurements in one process, in this order: the pure step, `vitkit.tasks.run` on the real CIFAR-10 JPEGs
(in-memory uint8 images, batched augmentation, the Trainer's loop with clipping, finite checks, metrics,
logging), the pure step again. The pure step is the Trainer's own `train_step` (forward + loss + backward +
clip + AdamW) on one already-augmented batch resident on the run's device (the GPU when training runs there),
same model, optimizer and precision. MFU divides the model's training FLOP/s (3 × forward) by the GPU's dense
bf16 peak from `vitkit.hardware` (H100 SXM / H200 989, A100 312, L4 121 TFLOP/s, ...; none on a CPU or an
unlisted GPU). The Trainer's rate is the median of its
logged windows (`metrics.jsonl`, every 10 steps; evaluation excluded); the first window (warm-up) is dropped.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_cifar10 import TARBALL, extract  # noqa: E402


def pure_step_rate(cfg, model_cfg, train_set, batch, steps: int, out: Path) -> float:
    """Median images/s of the Trainer's own optimizer step (`Trainer.train_step`: forward, loss, backward,
    clipping, finite check, AdamW) on one resident, already-augmented batch: the loop without its data,
    logging and evaluation."""
    from vitkit.bench import time_call
    from vitkit.engine.batches import to_device
    from vitkit.engine.trainer import Trainer
    from vitkit.models import build_model
    from vitkit.objectives import ClassificationObjective

    torch.manual_seed(cfg.seed)
    trainer = Trainer(build_model(model_cfg), ClassificationObjective(), train_set, None, cfg, out)
    batch = to_device(batch, trainer.device)  # timed where the run trains
    for _ in range(3):  # warm-up
        trainer.train_step(batch)
    times = [time_call(lambda: trainer.train_step(batch), trainer.device) for _ in range(steps)]
    return len(batch[1]) / statistics.median(times)


def mfu(img_s: float, model_cfg, device: torch.device) -> float | None:
    """Model FLOP/s utilisation of a training rate against the GPU's dense bf16 peak (None: not listed)."""
    from vitkit.hardware import dense_bf16_peak_tflops
    from vitkit.models.summary import forward_flops

    peak = dense_bf16_peak_tflops(device)
    return None if peak is None else 3 * forward_flops(model_cfg) * img_s / (peak * 1e12)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tarball", type=Path, default=TARBALL.resolve())
    p.add_argument("--data", help="an image folder instead of the tarball")
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "cifar10.yaml"))
    p.add_argument("--per-class", type=int, default=1000, help="images per class extracted from the tarball")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps", type=int, default=30, help="timed pure steps before and after")
    args = p.parse_args()

    from vitkit.bench import device_name
    from vitkit.data import build_datasets
    from vitkit.engine.augment import train_transform_for
    from vitkit.engine.distributed import resolve_device
    from vitkit.models import get_model_config
    from vitkit.runconfig import load_train_config
    from vitkit.rundir import RunDir
    from vitkit.tasks import run
    from vitkit.tasks.base import set_cpu_threads

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            extract(args.tarball, Path(tmp) / "cifar", args.per_class)
            data = str(Path(tmp) / "cifar")
        cfg = load_train_config(args.config, {"data.path": data, "out": str(Path(tmp) / "run"),
                                              "epochs": args.epochs, "log_every": 10, "report": False})
        splits = build_datasets(cfg.data, progress=False)
        model_cfg = get_model_config(cfg.model, num_classes=splits.num_classes, **cfg.model_args)
        set_cpu_threads(cfg.threads, model_cfg)
        train_tf = train_transform_for(cfg.augment, model_cfg.preprocess, splits.num_classes)
        index = torch.arange(cfg.batch_size) % len(splits.train)
        raw = splits.train.images[index], splits.train.targets[index]
        batch = train_tf(raw, torch.Generator().manual_seed(0))

        before = pure_step_rate(cfg, model_cfg, splits.train, batch, args.steps, Path(tmp) / "step")
        summary = run(cfg)
        after = pure_step_rate(cfg, model_cfg, splits.train, batch, args.steps, Path(tmp) / "step")
        entries = RunDir(cfg.out).read_metrics()
        windows = [e["img_per_s"] for e in entries if e["split"] == "train"][1:]
        if not windows:
            raise SystemExit("fewer than two 10-step windows were logged: raise --per-class or --epochs")
        train = statistics.median(windows)
        device = resolve_device(cfg.device)
        pure = (before + after) / 2
        result = {"model": cfg.model, "batch": cfg.batch_size, "amp": cfg.amp,
                  "threads": torch.get_num_threads(),
                  "pure_step_img_s_before": round(before, 1), "pure_step_img_s_after": round(after, 1),
                  "train_img_s_median": round(train, 1), "train_windows": len(windows),
                  "train_over_pure": round(train / pure, 3), "train_seconds": summary["train_seconds"],
                  "device": device_name(device), "train_mfu": mfu(train, model_cfg, device),
                  "pure_step_mfu": mfu(pure, model_cfg, device)}
        print(json.dumps(result))
        print(f"{cfg.model}, batch {cfg.batch_size}, {torch.get_num_threads()} threads: pure step "
              f"{before:.0f} → {after:.0f} img/s; vitkit train {train:.0f} img/s (median of {len(windows)} "
              f"windows) = {train / pure:.1%} of the pure step (target ≥ 90%) on {device_name(device)}; MFU "
              + ("n/a (no known GPU peak)" if result["train_mfu"] is None else f"{result['train_mfu']:.1%}"))


if __name__ == "__main__":
    main()
