"""`vitkit attention`, `vitkit figures`, `vitkit report`: look inside a model or a run."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attention", help="attention overlays on images (PNG)",
                       description="Write one PNG per image: the input and its attention maps. Maps "
                                   "show the [CLS] token's attention, or for models without [CLS] the mean "
                                   "attention each patch receives.")
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint directory or file (anything load_pretrained reads)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--method", default="rollout", choices=["rollout", "cls", "heads"],
                   help="rollout: through all layers; cls: one layer, heads averaged; "
                        "heads: one map per head")
    p.add_argument("--layer", type=int, default=-1, help="block for cls/heads (negative counts from the end)")
    p.add_argument("--head-fusion", default="mean", choices=["mean", "max", "min"],
                   help="rollout head fusion")
    p.add_argument("--discard-ratio", type=float, default=0.9,
                   help="rollout: share of lowest weights dropped")
    p.add_argument("--out", default="attention", help="output folder (default: ./attention)")
    p.set_defaults(func=run_attention)

    p = sub.add_parser("figures", help="the ViT paper's Figure 7 panels (PNG)",
                       description="Embedding-filter principal components, position-embedding similarity "
                                   "and mean attention distance per head (needs matplotlib: the `plot` "
                                   "extra).")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or file")
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="images or folders for the attention distances (default: Gaussian noise)")
    p.add_argument("--max-images", type=int, default=128,
                   help="images used at most, spread over those given (default 128)")
    p.add_argument("--out", default="figures", help="output folder (default: ./figures)")
    p.set_defaults(func=run_figures)

    p = sub.add_parser("report", help="one self-contained HTML page for a training run",
                       description="Write RUN_DIR/report.html: config, curves, metrics, confusion matrix, "
                                   "sample predictions with attention overlays, and the run's other figures.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a `vitkit train --out` directory")
    p.add_argument("--samples", type=int, default=8, help="held-out images shown (default 8)")
    p.add_argument("--out", default=None, help="output HTML path (default: RUN_DIR/report.html)")
    p.set_defaults(func=run_report)


def run_attention(args: argparse.Namespace) -> int:
    from .. import load_pretrained
    from ..viz.overlays import save_attention_overlays

    paths = save_attention_overlays(load_pretrained(args.checkpoint), args.images, args.out, args.method,
                                    args.layer, args.head_fusion, args.discard_ratio)
    for path in paths:
        print(path)
    return 0


def _expand(items: list[str], limit: int) -> list[Path]:
    from ..data import IMAGE_EXTENSIONS

    paths: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif item.exists():
            paths.append(item)
        else:
            raise FileNotFoundError(f"no such image or folder: {item}")
    if len(paths) <= limit:
        return paths
    step = len(paths) / limit  # spread over the (sorted, so class-grouped) list rather than take the first few
    return [paths[int(i * step)] for i in range(limit)]


def run_figures(args: argparse.Namespace) -> int:
    from .. import load_pretrained
    from ..viz.figures import write_figure7_from_files

    paths = write_figure7_from_files(load_pretrained(args.checkpoint), _expand(args.images, args.max_images),
                                     args.out)
    for path in paths.values():
        print(path)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from ..viz.report import write_report

    print(write_report(args.run_dir, args.out, args.samples))
    return 0
