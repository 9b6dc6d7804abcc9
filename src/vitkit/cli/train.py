"""`vitkit train`, `vitkit eval`, `vitkit predict`: parse options, call one library function, print the
result."""

from __future__ import annotations

import argparse
import json
import sys

TRAIN_EPILOG = """\
precedence: defaults < --config FILE.yaml < the options above < --set key=value.
examples:
  vitkit train                                   # small ViT on the built-in digits set, ~3 min on 2 cores
  vitkit train --data cifar10/ --config configs/cifar10.yaml --out runs/cifar10
  vitkit train --set optim.lr=5e-4 --set augment.mixup_alpha=0.8 --set model_args.drop_path_rate=0.1
  torchrun --nproc_per_node=2 -m vitkit train --data photos/ --batch-size 256
Re-running the same command (same --out) resumes from DIR/checkpoints/last; SIGTERM saves a checkpoint
first."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a classifier or (--task) a DPT; no arguments: a small ViT on digits",
                       description="Train a ViT classifier on an image folder or a built-in set (or, with "
                                   "--task depth|segment, a DPT on dense pairs or built-in scenes), with "
                                   "automatic resume, held-out evaluation, figures and a report in --out.",
                       epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["classify", "depth", "segment"], default="classify",
                   help="classify (default); depth or segment train a DPT (default: the tiny DPT on built-in "
                        "procedural scenes; --data DIR with images/ + depth/ or masks/ for your own pairs)")
    p.add_argument("--data", metavar="PATH", help="folder of class subfolders (DATA/<class>/*, or DATA/train "
                   "and DATA/val), .tar shards, or a built-in name (digits, mnist); default: built-in digits")
    p.add_argument("--model", metavar="NAME", help="model preset (`vitkit models` lists them)")
    p.add_argument("--epochs", type=int, help="passes over the training set")
    p.add_argument("--batch-size", type=int, help="global images per optimizer step (over all processes)")
    p.add_argument("--lr", type=float, help="peak learning rate (optim.lr)")
    p.add_argument("--out", metavar="DIR", help="run directory (config, metrics, checkpoints, figures, "
                   "report); default: runs/<data>-<model>")
    p.add_argument("--seed", type=int, help="seed for initialisation, data order and augmentation")
    p.add_argument("--config", metavar="FILE.yaml",
                   help="YAML file of TrainConfig fields, e.g. configs/cifar10.yaml")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override any config field by dotted key, e.g. optim.lr=1e-3 (repeatable)")
    p.add_argument("--strict-data", action="store_true",
                   help="fail on an unreadable image instead of skipping it")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast with fp32 master weights (default: on)")
    p.add_argument("--workers", type=int, help="DataLoader workers for data streamed from disk")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard events (extra: tensorboard)")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from ..config import parse_set_items, replace_config
    from ..engine.config import load_train_config
    from ..engine.run import train_classifier

    options = {"data.path": args.data, "model": args.model, "epochs": args.epochs,
               "batch_size": args.batch_size,
               "optim.lr": args.lr, "out": args.out, "seed": args.seed, "device": args.device,
               "compile": args.compile, "amp": args.amp, "data.num_workers": args.workers,
               "data.strict": args.strict_data or None, "tensorboard": args.tensorboard or None}
    if args.task != "classify":
        options["dense.task"] = args.task
    given = {k: v for k, v in options.items() if v is not None}
    cfg = load_train_config(args.config, {**given, **parse_set_items(args.set)})
    if not cfg.out:
        cfg = replace_config(cfg, out=default_out(cfg))
    if cfg.dense is not None:
        from ..engine.dense import train_dense

        summary = train_dense(cfg, cfg.dense)
        print(f"held-out {cfg.dense.task} metrics: " + ", ".join(
            f"{k} {v:.4f}" for k, v in summary.get("val", {}).items() if isinstance(v, float)) + f"; run: {cfg.out}")
        return 143 if summary.get("interrupted") else 0
    summary = train_classifier(cfg)
    if summary.get("interrupted"):
        print(f"interrupted at step {summary['steps']}; checkpoint saved. Re-run the same command to resume.")
        return 143
    val = summary.get("val")
    if val:
        print(f"held-out accuracy: {val['acc1']:.2%} (top-5 {val['acc5']:.2%}) on {val['num_samples']} "
              f"images; {summary['epochs']} epochs in {summary['train_seconds']:.0f}s; run: {cfg.out}")
    if "val_flip_tta" in summary:
        print(f"with flip test-time augmentation: {summary['val_flip_tta']['acc1']:.2%}")
    return 0


def default_out(cfg) -> str:
    from pathlib import Path

    data = Path(cfg.data.path).name if cfg.data.path else ("scenes" if cfg.dense else "digits")
    task = f"{cfg.dense.task}-" if cfg.dense else ""
    return str(Path("runs") / f"{task}{data}-{cfg.model}")
