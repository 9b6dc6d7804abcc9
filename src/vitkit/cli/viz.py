"""`vitkit attention`, `vitkit figures`, `vitkit report`: look inside a model or a run."""

from __future__ import annotations

import argparse

from ..rundir import RunDir
from .infer import add_checkpoint_argument, add_images_argument, print_outputs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attention", help="attention overlays on images (PNG)",
                       description="Write one PNG per image: the input and its attention maps. Maps "
                                   "show the [CLS] token's attention, or for models without [CLS] the mean "
                                   "attention each patch receives.")
    add_checkpoint_argument(p, "a model with a ViT encoder")
    add_images_argument(p)
    p.add_argument("--method", default="rollout", choices=["rollout", "cls", "heads"],
                   help="rollout: through all layers; cls: one layer, heads averaged; "
                        "heads: one map per head")
    p.add_argument("--layer", type=int, default=-1,
                   help="block for cls/heads, in -depth..depth-1 (negative counts from the end)")
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
    add_checkpoint_argument(p, "a model with a ViT encoder")
    add_images_argument(p, "*", "; they give the attention distances (none: Gaussian noise)")
    p.add_argument("--max-images", type=int, default=128,
                   help="images used at most, spread over those given (default 128)")
    p.add_argument("--out", default="figures", help="output folder (default: ./figures)")
    p.set_defaults(func=run_figures)

    p = sub.add_parser("report", help="one self-contained HTML page for a training run",
                       description=f"Write RUN_DIR/{RunDir.REPORT}: config, curves, metrics, and what "
                                   "the run's model makes of held-out images (predictions with attention "
                                   "overlays, MAE reconstructions, dense predictions); sections with nothing "
                                   "to show are left out.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (vitkit train, pretrain, finetune, "
                   "linprobe --out)")
    p.add_argument("--samples", type=int, default=8, help="held-out images shown (default 8)")
    p.add_argument("--out", default=None, help=f"output HTML path (default: RUN_DIR/{RunDir.REPORT})")
    p.set_defaults(func=run_report)


def run_attention(args: argparse.Namespace) -> int:
    from ..viz.overlays import save_attention_overlays

    return print_outputs(save_attention_overlays(args.checkpoint, args.images, args.out, args.method,
                                                 args.layer, args.head_fusion, args.discard_ratio))


def run_figures(args: argparse.Namespace) -> int:
    from ..viz.figures import write_figure7_from_files

    return print_outputs(write_figure7_from_files(args.checkpoint, args.images, args.out, args.max_images))


def run_report(args: argparse.Namespace) -> int:
    from ..viz.report import write_report

    print(write_report(args.run_dir, args.out, args.samples))
    return 0
