"""`vitkit pretrain | finetune | linprobe | reconstruct`: self-supervised pretraining and its evaluation.

Each subcommand parses its options into the engine's TrainConfig (defaults < --config FILE.yaml < options <
--set key=value) and calls one function of `vitkit.selfsup` (or `vitkit.viz.reconstruction`).
"""

from __future__ import annotations

import argparse
import json

DEFAULT_PRESETS = {"mae": "mae_vit_tiny_patch4_32", "mpp": "mpp_vit_tiny_patch4_32"}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="PATH", help="image folder (labels ignored for pretraining) or built-in name")
    p.add_argument("--epochs", type=int, help="passes over the training set")
    p.add_argument("--batch-size", type=int, help="images per optimizer step")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--out", metavar="DIR", required=True, help="run directory")
    p.add_argument("--seed", type=int, help="seed for initialisation, data order and augmentation")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML file of TrainConfig fields")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override any TrainConfig field by dotted key, e.g. optim.weight_decay=0 (repeatable)")


def _train_config(args: argparse.Namespace, **extra):
    from ..config import parse_set_items
    from ..engine.config import load_train_config

    options = {"data.path": args.data, "epochs": args.epochs, "batch_size": args.batch_size, "optim.lr": args.lr,
               "out": args.out, "seed": args.seed, "device": args.device, **extra}
    given = {k: v for k, v in options.items() if v is not None}
    return load_train_config(args.config, {**given, **parse_set_items(args.set)})


def _evaluation_parser(sub: argparse._SubParsersAction, name: str, help: str, pool: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("--from", dest="checkpoint", required=True, metavar="CKPT",
                   help="pretrain run directory, checkpoint directory or file; 'scratch' for a random --model")
    p.add_argument("--model", metavar="NAME", help="ViT preset used with --from scratch")
    p.add_argument("--pool", choices=["cls", "avg"], default=pool, help=f"features pooled from (default {pool})")
    p.add_argument("--label-fraction", type=float, default=1.0, help="share of training labels used (stratified)")
    p.add_argument("--allow-pickle", action="append", default=[], metavar="NAME",
                   help="global a trusted pickle checkpoint may use, e.g. argparse.Namespace (repeatable)")
    _common(p)
    return p


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="self-supervised pretraining (MAE or masked patch prediction)",
                       description="Pretrain an encoder without labels; DIR/encoder holds it as a plain ViT.")
    p.add_argument("--method", choices=sorted(DEFAULT_PRESETS), default="mae", help="objective (default mae)")
    p.add_argument("--model", metavar="NAME", help="mae_* or mpp_* preset (default: the tiny CIFAR-size one)")
    p.add_argument("--mask-ratio", type=float, help="MAE: share of patches hidden (default: the preset's, 0.75)")
    _common(p)
    p.set_defaults(func=run_pretrain)
    p = _evaluation_parser(sub, "finetune", "fine-tune a pretrained encoder as a classifier", "avg")
    p.add_argument("--layer-decay", type=float, help="layer-wise lr decay, e.g. 0.75")
    p.add_argument("--drop-path", type=float, help="stochastic depth rate")
    p.add_argument("--mixup", type=float, help="mixup alpha")
    p.add_argument("--cutmix", type=float, help="cutmix alpha")
    p.add_argument("--smoothing", type=float, help="label smoothing")
    p.set_defaults(func=run_finetune)
    p = _evaluation_parser(sub, "linprobe", "train a linear probe on a frozen encoder", "cls")
    p.add_argument("--no-cache", action="store_true", help="run the encoder every batch (for augmentation)")
    p.set_defaults(func=run_linprobe)
    p = sub.add_parser("reconstruct", help="MAE reconstructions: original | masked | reconstruction | pasted",
                       description="Write the MAE paper's four-panel figure per image as DIR/<stem>_mae.png.")
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="pretrain run or full MAE checkpoint")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--mask-ratio", type=float, default=0.75, help="share of patches hidden (default 0.75)")
    p.add_argument("--seed", type=int, default=0, help="mask seed")
    p.add_argument("--out", default="reconstructions", metavar="DIR", help="output folder")
    p.add_argument("--allow-pickle", action="append", default=[], metavar="NAME", help="see finetune")
    p.set_defaults(func=run_reconstruct)


def run_pretrain(args: argparse.Namespace) -> int:
    from ..selfsup import pretrain

    cfg = _train_config(args, model=args.model or DEFAULT_PRESETS[args.method])
    summary = pretrain(cfg, mask_ratio=args.mask_ratio, method=args.method)
    print(f"pretrained {summary['model']} for {summary['epochs']} epochs in {summary['train_seconds']:.0f}s; "
          f"val {json.dumps(summary['val'])}; encoder: {summary.get('encoder')}")
    return 0


def _report(summary: dict) -> int:
    val = summary.get("val") or {}
    print(f"held-out accuracy {val.get('acc1', float('nan')):.2%} on {val.get('num_samples', 0)} images "
          f"({summary['train_images']} training images, {summary['train_seconds']:.0f}s)")
    return 0


def run_finetune(args: argparse.Namespace) -> int:
    from ..selfsup import finetune

    cfg = _train_config(args, model=args.model, **{
        "optim.layer_decay": args.layer_decay, "model_args.drop_path_rate": args.drop_path,
        "augment.mixup_alpha": args.mixup, "augment.cutmix_alpha": args.cutmix,
        "augment.label_smoothing": args.smoothing})
    checkpoint = None if args.checkpoint == "scratch" else args.checkpoint
    return _report(finetune(checkpoint, cfg, pool=args.pool, label_fraction=args.label_fraction,
                            allow_pickle=tuple(args.allow_pickle)))


def run_linprobe(args: argparse.Namespace) -> int:
    from ..selfsup import linprobe

    checkpoint = None if args.checkpoint == "scratch" else args.checkpoint
    return _report(linprobe(checkpoint, _train_config(args, model=args.model), pool=args.pool,
                            label_fraction=args.label_fraction, cache=not args.no_cache,
                            allow_pickle=tuple(args.allow_pickle)))


def run_reconstruct(args: argparse.Namespace) -> int:
    from ..viz.reconstruction import save_reconstructions

    for path in save_reconstructions(args.checkpoint, args.images, args.out, args.mask_ratio, args.seed,
                                     tuple(args.allow_pickle)):
        print(path)
    return 0
