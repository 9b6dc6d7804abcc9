"""`vitkit pretrain | finetune | linprobe | reconstruct`: self-supervised pretraining and its evaluation.

Each training subcommand parses its options into a TrainConfig with its task section (defaults < --config
FILE.yaml < options < --set key=value) and calls `vitkit.tasks.run`, as `vitkit train` does; `reconstruct`
calls `vitkit.viz.reconstruction`.
"""

from __future__ import annotations

import argparse

from .train import add_strategy_option

DEFAULT_PRESETS = {"mae": "mae_vit_tiny_patch4_32", "mpp": "mpp_vit_tiny_patch4_32"}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="PATH",
                   help="image folder (labels ignored for pretraining) or built-in name")
    p.add_argument("--epochs", type=int, help="passes over the training set")
    p.add_argument("--batch-size", type=int, help="images per optimizer step")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--out", metavar="DIR", required=True, help="run directory")
    p.add_argument("--seed", type=int, help="seed for initialisation, data order and augmentation")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML file of TrainConfig fields")
    add_strategy_option(p)
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override any TrainConfig field by dotted key, "
                        "e.g. optim.weight_decay=0 (repeatable)")


def _train_config(args: argparse.Namespace, **extra):
    from ..config import parse_set_items
    from ..runconfig import load_train_config

    options = {"data.path": args.data, "epochs": args.epochs, "batch_size": args.batch_size,
               "optim.lr": args.lr, "out": args.out, "seed": args.seed, "device": args.device,
               "strategy": args.strategy, **extra}
    given = {k: v for k, v in options.items() if v is not None}
    return load_train_config(args.config, {**given, **parse_set_items(args.set)})


def _evaluation_parser(sub: argparse._SubParsersAction, name: str, help: str,
                       pool: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("--from", dest="checkpoint", required=True, metavar="CKPT",
                   help="pretrain run directory, checkpoint directory or file; "
                        "'scratch' for a random --model")
    p.add_argument("--model", metavar="NAME", help="ViT preset used with --from scratch")
    p.add_argument("--pool", choices=["cls", "avg"], help=f"features pooled from (default {pool})")
    p.add_argument("--label-fraction", type=float,
                   help="share of training labels used (stratified; default 1)")
    p.add_argument("--allow-pickle", action="append", default=[], metavar="NAME",
                   help="global a trusted pickle checkpoint may use, e.g. argparse.Namespace (repeatable)")
    _common(p)
    return p


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="self-supervised pretraining (MAE or masked patch prediction)",
                       description="Pretrain an encoder without labels; DIR/encoder holds it as a plain ViT.")
    p.add_argument("--method", choices=sorted(DEFAULT_PRESETS), default="mae", help="objective (default mae)")
    p.add_argument("--model", metavar="NAME", help="mae_* or mpp_* preset (default: the tiny CIFAR-size one)")
    p.add_argument("--mask-ratio", type=float,
                   help="MAE: share of patches hidden (default: the preset's, 0.75)")
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
    from .train import report_run

    return report_run(_train_config(args, model=args.model or DEFAULT_PRESETS[args.method], **{
        "task.kind": "pretrain", "task.method": args.method, "task.mask_ratio": args.mask_ratio}))


def _evaluation_options(args: argparse.Namespace, kind: str) -> dict:
    """The task section of `finetune` / `linprobe`; --model only goes with --from scratch."""
    from ..errors import UsageError

    scratch = args.checkpoint == "scratch"
    if args.model and not scratch:
        raise UsageError(f"--model is for --from scratch; the encoder of {args.checkpoint} decides the model")
    return {"model": args.model if scratch else None, "task.kind": kind,
            "task.init": None if scratch else args.checkpoint, "task.pool": args.pool,
            "task.label_fraction": args.label_fraction, "task.allow_pickle": args.allow_pickle or None}


def run_finetune(args: argparse.Namespace) -> int:
    from .train import report_run

    return report_run(_train_config(args, **_evaluation_options(args, "finetune"), **{
        "optim.layer_decay": args.layer_decay, "model_args.drop_path_rate": args.drop_path,
        "augment.mixup_alpha": args.mixup, "augment.cutmix_alpha": args.cutmix,
        "augment.label_smoothing": args.smoothing}))


def run_linprobe(args: argparse.Namespace) -> int:
    from .train import report_run

    return report_run(_train_config(args, **_evaluation_options(args, "linprobe"),
                                    **{"task.cache": False if args.no_cache else None}))


def run_reconstruct(args: argparse.Namespace) -> int:
    from ..viz.reconstruction import save_reconstructions
    from .infer import print_outputs

    paths = save_reconstructions(args.checkpoint, args.images, args.out, args.mask_ratio, args.seed,
                                 tuple(args.allow_pickle))
    return print_outputs(paths)
