"""`vitkit export`: a checkpoint to a deployment format (ONNX), checked against the torch model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..rundir import ACCEPTED
from .infer import RUN_PICKS

TOLERANCE = 1e-4  # fp32: max |onnxruntime − torch| allowed by the check after export


def register(sub: argparse._SubParsersAction) -> None:
    from ..export import FORMATS

    p = sub.add_parser("export", help="export a model to ONNX (preprocessing and labels in its metadata)",
                       description="Export a classifier, encoder (also an MAE's) or DPT model to ONNX with "
                                   "the dynamo exporter, then check onnxruntime against torch on random "
                                   "inputs.")
    p.add_argument("checkpoint", metavar="CKPT", help=f"the model: {ACCEPTED}; {RUN_PICKS}")
    p.add_argument("--format", default="onnx",
                   help=f"output format, one of: {', '.join(FORMATS)} (default: onnx)")
    p.add_argument("--out", metavar="PATH", default=None, help="output file (default: model.onnx in the "
                   "checkpoint's folder, or beside a weights file)")
    p.add_argument("--dynamic", action="store_true",
                   help="dynamic height and width (multiples of the patch) as well as batch "
                   "(default: only the batch is dynamic)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset version (default: the exporter's)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the onnxruntime-vs-torch check (batch 1 and 5, and a second size if dynamic)")
    p.set_defaults(func=run_export)


def default_out(model_path: Path) -> Path:
    return (model_path if model_path.is_dir() else model_path.parent) / "model.onnx"


def run_export(args: argparse.Namespace) -> int:
    from ..errors import RunFailure, UsageError
    from ..export import FORMATS, export_onnx
    from ..rundir import resolve_model_path
    from ..weights import load_pretrained

    if args.format not in FORMATS:
        raise UsageError(f"unknown export format {args.format!r}; choose one of: {', '.join(FORMATS)}")
    model_path = resolve_model_path(args.checkpoint)
    out = export_onnx(model_path, Path(args.out) if args.out else default_out(model_path),
                      dynamic=args.dynamic, opset=args.opset)
    print(f"wrote {out}", file=sys.stderr)
    if args.no_check:
        return 0
    worst = check_export(load_pretrained(model_path), out, args.dynamic)
    print(f"onnxruntime vs torch (fp32): max abs diff {worst:.2e}", file=sys.stderr)
    if worst > TOLERANCE:
        raise RunFailure(f"the exported graph differs from the torch model by {worst:.2e} (> {TOLERANCE:g}); "
                         "please report it with the checkpoint's config.json")
    print(out)
    return 0


def check_export(model, path: Path, dynamic: bool) -> float:
    """The largest max-abs difference over random inputs at batch 1 and 5 (and 3/4 of each side + 1 patch
    when `dynamic`)."""
    import torch

    from ..export import onnx_max_abs_diff
    from ..export.onnx import export_target

    target = export_target(model)
    h, w = target.encoder.image_size
    p = target.patch_size
    sizes = [(1, h, w), (5, h, w)]
    if dynamic:
        sizes.append((2, max(p, h * 3 // 4 // p * p), w + p))
    gen = torch.Generator().manual_seed(0)
    return max(onnx_max_abs_diff(model, path, torch.randn(b, target.encoder.in_chans, hh, ww, generator=gen))
               for b, hh, ww in sizes)
