"""`vitkit eval` and `vitkit predict`, and the options and output every command that reads a checkpoint and
image files shares (`vitkit attention`, `figures`, `depth`, `segment` use them too)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from ..rundir import ACCEPTED

RUN_PICKS = "a run directory stands for its exported classifier, else its best checkpoint, else its last"


def add_checkpoint_argument(p: argparse.ArgumentParser, what: str) -> None:
    """The ``--checkpoint`` option, saying what the command needs and which values name it."""
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help=f"{what}: {ACCEPTED}; {RUN_PICKS}")


def add_images_argument(p: argparse.ArgumentParser, nargs: str = "+", note: str = "") -> None:
    """The IMAGE arguments: files, or folders standing for every image under them."""
    p.add_argument("images", nargs=nargs, metavar="IMAGE",
                   help=f"image files (jpg, png, webp, bmp, gif) or folders (every image under them){note}")


def print_outputs(outputs: list, line: Callable[[Any], str] = str) -> int:
    """Print one line per output; the exit status: 1 when an image could not be read (each one was logged
    on its own line), else 0."""
    for output in outputs:
        print(line(output))
    sys.stdout.flush()
    return 1 if getattr(outputs, "unreadable", None) else 0


def register(sub: argparse._SubParsersAction) -> None:
    from ..infer.images import SPLITS

    p = sub.add_parser("eval", help="top-1/top-5 and per-class accuracy of a classifier",
                       description="Score a classifier on a folder of class subfolders or a built-in set. "
                                   "On the data its run trained on, the held-out split is scored (as in "
                                   "training); any other data is scored whole.")
    add_checkpoint_argument(p, "the classifier")
    p.add_argument("--data", metavar="PATH", help="a folder of class subfolders (or DATA/train and DATA/val) "
                   "or a built-in name; default: the data the checkpoint's run trained on")
    p.add_argument("--split", choices=SPLITS, default=None,
                   help="all: every image; val: the held-out split (as in training); train: the rest. "
                        "Default: val on the run's own data, all on any other data")
    p.add_argument("--flip-tta", action="store_true",
                   help="average each image's logits with its mirror image's (for models trained with flips)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--json", action="store_true",
                   help="print the full result as JSON (with the confusion matrix, split and checkpoint)")
    p.set_defaults(func=run_eval)

    p = sub.add_parser("predict", help="top-k labels with probabilities for images",
                       description="Classify image files with a trained classifier, or with an ONNX file "
                                   "`vitkit export` wrote (run by onnxruntime alone).")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="CKPT", help=f"the classifier: {ACCEPTED}; {RUN_PICKS}")
    source.add_argument("--onnx", metavar="MODEL.onnx",
                        help="an exported classifier (`vitkit export CKPT --format onnx`); preprocessing "
                             "and labels come from its metadata")
    add_images_argument(p)
    p.add_argument("--top-k", type=int, default=5, help="labels to show per image (≥ 1)")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.set_defaults(func=run_predict)


def run_eval(args: argparse.Namespace) -> int:
    from ..infer.images import evaluate_checkpoint, load_classifier

    classifier = load_classifier(args.checkpoint, args.device)
    print(f"checkpoint {classifier.describe()}", file=sys.stderr)
    r = evaluate_checkpoint(classifier, args.data, split=args.split, batch_size=args.batch_size,
                            flip_tta=args.flip_tta)
    if args.json:
        print(json.dumps(r))
        return 0
    scope = "all of" if r["split"] == "all" else f"the {r['split']} split of"
    print(f"top-1 {r['acc1']:.2%}  top-5 {r['acc5']:.2%}  ({r['num_samples']} images: {scope} {r['data']})")
    for name, acc in r["per_class_acc"].items():
        print(f"  {name:<24} {'-' if acc is None else f'{acc:.2%}'}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from ..infer.images import load_classifier, predict_images

    if args.onnx:
        from ..infer.onnx import OnnxClassifier

        onnx_classifier = OnnxClassifier(args.onnx, args.device)
        print(f"onnx model {onnx_classifier.describe()}", file=sys.stderr)
        rows = onnx_classifier.predict(args.images, top_k=args.top_k)
    else:
        classifier = load_classifier(args.checkpoint, args.device)
        print(f"checkpoint {classifier.describe()}", file=sys.stderr)
        rows = predict_images(classifier, args.images, top_k=args.top_k)
    if args.json:
        return print_outputs(rows, json.dumps)
    return print_outputs(rows, lambda r: r["image"] + ":  " + "  ".join(f"{t['label']} {t['prob']:.3f}"
                                                                       for t in r["top"]))
