"""`vitkit models`: list the registered models with parameters, GFLOPs and resolution."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list available models",
                       description="List registered models: parameters, "
                                   "forward GFLOPs per image, input size.")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'vit_base*'")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..models import list_models
    from ..models.summary import summarize_model

    names = list_models(args.pattern)
    if not names:
        print(f"no model matches {args.pattern!r}")
        return 1
    rows = [summarize_model(n) for n in names]
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    print(f"{'name':<32} {'params (M)':>11} {'GFLOPs':>9} {'input':>9}")
    for r in rows:
        print(f"{r['name']:<32} {r['params'] / 1e6:>11.2f} {r['gflops']:>9.2f} {r['input']:>9}")
    return 0
