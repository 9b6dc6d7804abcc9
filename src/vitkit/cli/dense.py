"""`vitkit depth` and `vitkit segment`: dense predictions of a trained (or converted) DPT on image files.

Training is `vitkit train --task depth|segment`: `vitkit.tasks.run` with the task in `vitkit.tasks.dense`.
"""

from __future__ import annotations

import argparse

from .infer import add_checkpoint_argument, add_images_argument, print_outputs


def register(sub: argparse._SubParsersAction) -> None:
    for name, what, outputs in (
            ("depth", "monocular depth",
             "OUT/<stem>_depth.png (coloured) and OUT/<stem>_depth.npy (raw float32)"),
            ("segment", "semantic segmentation",
             "OUT/<stem>_overlay.png and OUT/<stem>_mask.png (index PNG)")):
        p = sub.add_parser(name, help=f"{what} of images with a DPT checkpoint",
                           description=f"Predict {what} for each IMAGE and write {outputs}.")
        add_images_argument(p)
        add_checkpoint_argument(p, f"a DPT {name} model")
        p.add_argument("--out", default=".", metavar="DIR", help="output folder (default: current folder)")
        p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
        p.add_argument("--max-side", type=int, default=512,
                       help="longest image side fed to the model (resized to multiples of the patch)")
        p.set_defaults(func=run, task=name)


def run(args: argparse.Namespace) -> int:
    from ..infer.dense import predict_depth_files, predict_segment_files

    predict = predict_depth_files if args.task == "depth" else predict_segment_files
    return print_outputs(predict(args.checkpoint, args.images, args.out, device=args.device,
                                 max_side=args.max_side))
