"""Registers experiment (Darcet et al., "Vision Transformers Need Registers", ICLR 2024) on CIFAR-10: the same
small ViT trained with 0 and with 4 register tokens; val accuracy of both, and two figures.

    python benchmarks/registers_cifar10.py                  # 2 runs of the real setting (see --epochs)
    python benchmarks/registers_cifar10.py --quick          # smoke run: 30 images a class, 1 epoch, tiny ViT

Model: vit_tiny_patch4_32 (32-px, patch 4 → 8×8 grid, dim 192, depth 6, 3 heads), fp32, trained by
`vitkit.tasks.run` with a TrainConfig (recipe close to configs/cifar10.yaml, patchify stem). The tarball
(train/<class>/*.jpg) is extracted to a temporary folder and split 90 / 10 (seeded, stratified): the 10 % is
the held-out split that both the accuracy and the figures use.

Figures (in --out, default: the temporary folder, so pass --out to keep them):
  * registers_cls_attention.png: the last block's [CLS] attention to the patches (mean over heads) for a few
    held-out images, without and with registers side by side;
  * registers_token_norms.png: histogram of the L2 norms of the last block's output tokens (before the final
    norm) over the held-out images: patch tokens without registers, patch tokens and register tokens with.

Figures are printed, never asserted. Time: --epochs sets the budget. The default 3 epochs is ≈ 8 min a run
if fp32 training runs at ≈ 300 img/s on 2 cores (an estimate: 45k images × 3 / 300 img/s, not measured, since
the machine it was written on was shared; `vitkit bench vit_tiny_patch4_32 --dtype fp32` tells, and each
run's epoch line prints img/s).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_cifar10 import TARBALL, extract  # noqa: E402  (the same tarball, extracted the same way)

QUICK_MODEL = {"dim": 64, "depth": 2, "num_heads": 2}


def train_config(data: Path, out: Path, registers: int, args: argparse.Namespace):
    from vitkit.config import replace_config
    from vitkit.runconfig import TrainConfig

    model_args = {"num_register_tokens": registers, **(QUICK_MODEL if args.quick else {})}
    return replace_config(TrainConfig(), {
        "model": "vit_tiny_patch4_32", "model_args": model_args, "epochs": args.epochs,
        "batch_size": 128, "amp": False, "out": str(out), "report": False, "seed": args.seed,
        "data": {"path": str(data), "val_fraction": 0.1, "image_size": 32},
        "augment": {"crop_scale": None, "crop_padding": 4, "hflip": 0.5, "label_smoothing": 0.1},
        "optim": {"lr": 2e-3, "min_lr": 1e-5, "weight_decay": 0.05, "clip_grad": 1.0,
                  "warmup_epochs": min(1.0, 0.3 * args.epochs)}})


@torch.no_grad()
def last_block(model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the last block's output tokens (B, T, D) before the final norm, its attention (B, H, T, T))."""
    from vitkit.viz.record import record_attention

    with record_attention(model, layers=-1) as rec:
        tokens = model.forward_intermediates(images, [-1])[0]
    return tokens, rec[-1]


def cls_attention_figure(models: dict[int, torch.nn.Module], images: torch.Tensor, shown: torch.Tensor,
                         path: Path) -> None:
    """Rows: images; columns: the image, then the [CLS] → patch attention of each model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vitkit.viz.analysis import patch_map

    maps = {}
    for r, model in models.items():
        grid = (images.shape[-2] // model.patch_size, images.shape[-1] // model.patch_size)
        _, attn = last_block(model, images)
        maps[r] = patch_map(attn.mean(1), grid, model.num_prefix_tokens)  # (B, gh, gw)
    n = len(images)
    fig, axes = plt.subplots(n, 1 + len(models), figsize=(2.2 * (1 + len(models)), 2.2 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(shown[i].permute(1, 2, 0).numpy())
        for j, (r, m) in enumerate(maps.items(), start=1):
            axes[i, j].imshow(m[i].numpy(), cmap="inferno")
            if i == 0:
                axes[i, j].set_title(f"[CLS] attention, {r} registers", fontsize=8)
        for ax in axes[i]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def token_norm_figure(models: dict[int, torch.nn.Module], images: torch.Tensor, path: Path) -> dict:
    """Histogram of last-block token norms: patches (every model) and registers (models with them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norms: dict[str, torch.Tensor] = {}
    for r, model in models.items():
        tokens, _ = last_block(model, images)
        P, R = model.num_prefix_tokens, r
        norms[f"patches, {r} registers"] = tokens[:, P:].norm(dim=-1).flatten()
        if R:
            norms[f"registers, {r} registers"] = tokens[:, P - R:P].norm(dim=-1).flatten()  # after [CLS]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = torch.linspace(0, max(v.max().item() for v in norms.values()), 61).numpy()  # shared by all series
    for name, values in norms.items():
        ax.hist(values.numpy(), bins=bins, alpha=0.5, density=True, label=name)
    ax.set_xlabel("L2 norm of the last block's output token")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return {name: (v.median().item(), v.max().item()) for name, v in norms.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tarball", type=Path, default=TARBALL.resolve(), help="default: %(default)s")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (default: %(default)s)")
    p.add_argument("--registers", type=int, default=4, help="registers of the second run (default: 4)")
    p.add_argument("--per-class", type=int, help="only this many images a class (default: all 5000)")
    p.add_argument("--images", type=int, default=6, help="held-out images in the attention figure")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument("--out", type=Path, help="folder for runs and figures (default: a temporary one)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 30 images a class, 1 epoch, a 2-block 64-wide ViT")
    args = p.parse_args()
    if args.quick:
        args.epochs, args.per_class = 1, args.per_class or 30
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from vitkit.data.transforms import normalize
    from vitkit.rundir import resolve_model_path
    from vitkit.tasks import run
    from vitkit.tasks.base import labelled_splits
    from vitkit.weights import load_pretrained

    if not args.tarball.exists():
        raise SystemExit(f"{args.tarball} not found; pass --tarball")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        data = Path(tmp) / "cifar"
        extract(args.tarball, data, args.per_class)
        models, accuracy, cfg = {}, {}, None
        for r in (0, args.registers):
            cfg = train_config(data, out / f"run_{r}reg", r, args)
            t0 = time.perf_counter()
            summary = run(cfg)
            accuracy[r] = summary["val"]["acc1"]
            print(f"{r} registers: val acc1 {accuracy[r]:.4f}  ({summary['params']:,} parameters, "
                  f"{time.perf_counter() - t0:.0f}s)", flush=True)
            models[r] = load_pretrained(resolve_model_path(cfg.out, prefer=("last",))).eval()
        _, splits = labelled_splits(cfg, 3, 32)  # the held-out split both runs were scored on
        n = min(len(splits.val), 512)
        shown = torch.stack([splits.val[i][0] for i in range(n)])  # uint8 (n, 3, 32, 32)
        pre = models[0].config.preprocess
        images = normalize(shown, pre.mean, pre.std)
        cls_attention_figure(models, images[:args.images], shown[:args.images],
                             out / "registers_cls_attention.png")
        stats = token_norm_figure(models, images, out / "registers_token_norms.png")
        print("\nlast-block token norms over", n, "held-out images (median, max):")
        for name, (median, top) in stats.items():
            print(f"  {name:<24} {median:8.2f} {top:8.2f}")
        print(f"\nval acc1: {accuracy[0]:.4f} without registers, {accuracy[args.registers]:.4f} with "
              f"{args.registers}")
        print(f"figures: {out / 'registers_cls_attention.png'}, {out / 'registers_token_norms.png'}")


if __name__ == "__main__":
    main()
