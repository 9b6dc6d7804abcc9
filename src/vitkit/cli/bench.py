"""`vitkit bench MODEL`: images/s, TFLOP/s and share of the matmul peak, optionally side by side with HF."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="time a model's training step or inference (optionally against HF transformers)",
        description="Time a training step (forward + cross-entropy/MAE loss + backward + AdamW) or "
                    "inference, interleaved (random order per round) with the HF transformers equivalents "
                    "(--hf) and "
                    "a square bf16 / fp32 matmul that gives the peak. Prints one JSON line per candidate, "
                    "then a table.")
    p.add_argument("model", help="registered model name (see `vitkit models`), a ViT or an MAE")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32], metavar="B")
    p.add_argument("--dtype", choices=["bf16", "fp32", "bf16-weights"], default="bf16",
                   help="bf16 = autocast over fp32 weights; "
                        "bf16-weights = model cast to bf16 (inference only)")
    p.add_argument("--mode", choices=["train", "infer"], default="train")
    p.add_argument("--hf", action="store_true", help="also time HF transformers (attention: --hf-attn)")
    p.add_argument("--hf-attn", nargs="+", default=["sdpa", "eager"], metavar="IMPL")
    p.add_argument("--compile", action="store_true", help="also time vitkit with torch.compile'd blocks")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="model config override, e.g. --set depth=6 (repeatable)")
    p.add_argument("--out", default=None, help="also append the JSON lines to this file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import BenchConfig, format_table, run_benchmark
    from ..config import parse_set_items

    cfg = BenchConfig(model=args.model, batch_sizes=tuple(args.batch_sizes), precision=args.dtype,
                      mode=args.mode, hf=args.hf, hf_attn=tuple(args.hf_attn), compile=args.compile,
                      grad_checkpointing=args.grad_checkpointing, rounds=args.rounds, warmup=args.warmup,
                      device=args.device, threads=args.threads, overrides=parse_set_items(args.overrides))
    rows = run_benchmark(cfg)
    lines = [json.dumps(r) for r in rows]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "a") as f:
            f.write("".join(line + "\n" for line in lines))
    print(format_table(rows))
    return 0
