"""`vitkit train`: parse options into a TrainConfig, call `vitkit.tasks.run`, print where the run got to
(`report_run`, shared by pretrain, finetune and linprobe)."""

from __future__ import annotations

import argparse
import os

TRAIN_EPILOG = """\
precedence: defaults < --config FILE.yaml < the options above < --set key=value.
examples:
  vitkit train                                   # small ViT on the built-in digits set, ~3 min on 2 cores
  vitkit train --data cifar10/ --config configs/cifar10.yaml --out runs/cifar10
  vitkit train --set optim.lr=5e-4 --set augment.mixup_alpha=0.8 --set model_args.drop_path_rate=0.1
  torchrun --nproc_per_node=2 -m vitkit train --data photos/ --batch-size 256 --strategy fsdp
  vitkit train --config runs/cifar10/config.yaml --out runs/again   # any earlier run (any task), again
Re-running the same command (same --out) resumes from RUN/checkpoints/last, and refuses, changing nothing,
when a setting that decides the result differs. SIGTERM and Ctrl-C save a checkpoint first (exit 143 / 130).
Exit codes: 0 done, 1 the run failed (in use, disk full, diverged), 2 a mistake in what was asked."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train",
                       help="train a classifier or (--task) a DPT; no arguments: a small ViT on digits",
                       description="Train a ViT classifier on an image folder or a built-in set (or, with "
                                   "--task depth|segment, a DPT on dense pairs or built-in scenes), with "
                                   "automatic resume, held-out evaluation, figures and a report in --out.",
                       epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["classify", "depth", "segment"], default=None,
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
    add_strategy_option(p)
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard events (extra: tensorboard)")
    p.set_defaults(func=run_train)


def add_strategy_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strategy", choices=["ddp", "fsdp"], default=None,
                   help="data parallelism under torchrun: ddp (every process holds the whole model) or fsdp "
                        "(FSDP2: parameters, gradients and optimizer state sharded per block; sharded "
                        "checkpoints) (default: ddp)")


def run_train(args: argparse.Namespace) -> int:
    from ..config import parse_set_items, replace_config
    from ..runconfig import load_train_config

    options = {"data.path": args.data, "model": args.model, "epochs": args.epochs,
               "batch_size": args.batch_size,
               "optim.lr": args.lr, "out": args.out, "seed": args.seed, "device": args.device,
               "compile": args.compile, "amp": args.amp, "data.num_workers": args.workers,
               "data.strict": args.strict_data or None, "tensorboard": args.tensorboard or None,
               "task.kind": None if args.task is None else args.task, "strategy": args.strategy}
    given = {k: v for k, v in options.items() if v is not None}
    cfg = load_train_config(args.config, {**given, **parse_set_items(args.set)})
    if not cfg.out:
        cfg = replace_config(cfg, out=default_out(cfg))
    return report_run(cfg)


def report_run(cfg) -> int:
    """Run `cfg` through `vitkit.tasks.run` and print where it got to: the last and the best checkpoint's
    figures, or how to resume an interrupted run. Returns the exit code (128 + signal when interrupted)."""
    from ..engine.runtime import signal_exit_code
    from ..tasks import is_main_process, run

    summary = run(cfg)
    if summary.get("interrupted"):
        print(f"interrupted ({summary['interrupted']}) at step {summary['steps']}; checkpoint saved in "
              f"{summary['last']['checkpoint']}. Re-run the same command to resume.")
        return signal_exit_code(summary["interrupted"])
    if not is_main_process():
        return 0  # rank 0 reports
    print(f"{summary['task']}: {summary['epochs']} epochs, {summary['steps']} steps in "
          f"{summary['train_seconds']:.0f}s; run: {os.path.abspath(cfg.out)}")
    val, last = summary.get("val") or {}, f"last ({summary['last']['checkpoint']}, epoch {summary['epochs']})"
    if "acc1" in val:
        print(f"{last}: held-out accuracy {val['acc1']:.2%} (top-5 {val['acc5']:.2%}) "
              f"on {val['num_samples']} images")
    elif val:
        print(f"{last}: held-out " + ", ".join(
            f"{k} {v:.4f}" for k, v in val.items() if isinstance(v, float)))
    if "val_flip_tta" in summary:
        print(f"  with flip test-time augmentation: {summary['val_flip_tta']['acc1']:.2%}")
    best = summary.get("best")
    if best:
        print(f"best ({best['checkpoint']}, epoch {best['epoch']}): {best['metric']} {best['value']:.4f}; "
              "commands given the run directory load this one")
    for export in ("encoder", "classifier"):
        if export in summary:
            print(f"{export}: {summary[export]}")
    return 0


def default_out(cfg) -> str:
    from pathlib import Path

    kind = cfg.task.kind
    data = Path(cfg.data.path).name if cfg.data.path else ("scenes" if kind in ("depth", "segment")
                                                           else "digits")
    prefix = "" if kind == "classify" else f"{kind}-"
    return str(Path("runs") / f"{prefix}{data}-{cfg.model}")

