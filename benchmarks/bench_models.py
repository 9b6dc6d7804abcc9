"""The performance suite of issue 7: vitkit against HF transformers, interleaved in one process per suite.

    python benchmarks/bench_models.py                      # every suite, each in its own process (clean RSS)
    python benchmarks/bench_models.py --suite small mae    # some suites
    python benchmarks/bench_models.py --quick              # 1 warm-up, 3 rounds, smaller batches (smoke)
    python benchmarks/bench_models.py --out results.jsonl  # also append the JSON lines to a file

Suites (targets from the issue in brackets):
  small   32×32 ViT (dim 192, depth 6, patch 4), training step, batch 256, bf16 autocast (+ compiled blocks)
          and fp32  [bf16: ≥ 2× the better HF attention, ≥ 50% of the bf16 matmul peak]
  s16     ViT-S/16 224: training bf16, batch 32  [≥ 1.5× HF]; inference bf16 at batch 8 and 32
          [≥ 1.3× HF, ≥ 70%]
  b16     ViT-B/16 224: the same
  mae     MAE (B/16 encoder, 8×512 decoder, 75% masking) and its 1-block-decoder variant against the
          full-token ViT-B/16 step, vitkit and HF  [speedup ≥ 95% of the FLOP ratio; 1-block decoder ≥ 3.4×]
  memory  ViT-L/16 training at batch 32, gradient checkpointing + bf16  [peak RSS ≤ 24 GiB]
  cuda    on a GPU only: ViT-B/16 bf16 training (eager and compiled) and inference  [≥ 50% MFU, ahead of HF]

Each suite prints JSON lines (one per candidate; benchmarks/README.md describes the fields), a table, and a
`target` line per target of the issue saying what was measured against what was asked.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from typing import Any

import torch

from vitkit.bench import BenchConfig, build_candidates, format_table, run_candidates

SUITES = ("small", "s16", "b16", "mae", "memory", "cuda")


def _rows(configs: list[BenchConfig], batch: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Candidates of several configs at one batch size, timed together (one interleaved run with the first
    config's rounds and warm-up steps)."""
    candidates = [c for cfg in configs for c in build_candidates(cfg, batch)]
    return run_candidates(candidates, configs[0].rounds, configs[0].warmup, args.device)


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def _target(name: str, value: float | None, goal: float, unit: str = "×") -> dict[str, Any]:
    met = value is not None and value >= goal
    measured = None if value is None else round(value, 3)
    return {"target": name, "measured": measured, "goal": goal, "unit": unit, "met": met}


def suite_small(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    batch = 64 if args.quick else 256
    common = {"model": "vit_tiny_patch4_32", "mode": "train", "rounds": args.rounds, "warmup": args.warmup}
    rows = _rows([BenchConfig(precision="bf16", compile=not args.no_compile, **common)], batch, args)
    rows += _rows([BenchConfig(precision="fp32", **common)], batch, args)
    vk = _find(rows, impl="vitkit", precision="bf16")
    best = max((r for r in rows if r["impl"].startswith("vitkit") and r["precision"] == "bf16"),
               key=lambda r: r["img_s"])
    return rows, [_target("small ViT train bf16: vitkit / best HF", vk["vs_hf_best"], 2.0),
                  _target("small ViT train bf16: vitkit share of bf16 peak", vk["frac_peak"], 0.5, "of peak"),
                  _target(f"small ViT train bf16: {best['impl']} / best HF", best["vs_hf_best"], 2.0),
                  _target(f"small ViT train bf16: {best['impl']} share of peak", best["frac_peak"], 0.5,
                          "of peak")]


def suite_size(model: str, args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    common = {"model": model, "rounds": args.rounds, "warmup": args.warmup}
    rows = _rows([BenchConfig(mode="train", precision="bf16", **common)], 16 if args.quick else 32, args)
    train = _find(rows, impl="vitkit")
    targets = [_target(f"{model} train bf16: vitkit / best HF", train["vs_hf_best"], 1.5)]
    for batch in (8,) if args.quick else (8, 32):
        for precision in ("bf16", "bf16-weights"):
            compiled = precision == "bf16-weights" and not args.no_compile  # frozen whole-model compile
            cfg = BenchConfig(mode="infer", precision=precision, compile=compiled, **common)
            part = _rows([cfg], batch, args)
            for vk in (r for r in part if r["impl"].startswith("vitkit")):
                name = f"{model} infer {precision} b{batch} {vk['impl']}"
                targets += [_target(f"{name} / best HF", vk["vs_hf_best"], 1.3),
                            _target(f"{name}: share of peak", vk["frac_peak"], 0.7, "of peak")]
            rows += part
    return rows, targets


def suite_mae(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    batch = 8 if args.quick else 32
    common = {"mode": "train", "precision": "bf16", "rounds": args.rounds, "warmup": args.warmup}
    configs = [BenchConfig(model="vit_base_patch16_224", label="ViT-B/16 full tokens", **common),
               BenchConfig(model="mae_vit_base_patch16", label="MAE-B 8x512 decoder", **common),
               BenchConfig(model="mae_vit_base_patch16", label="MAE-B 1x512 decoder",
                           overrides={"decoder_depth": 1}, **common)]
    rows = _rows(configs, batch, args)
    targets = []
    for impl in ("vitkit", "hf-sdpa", "hf-eager"):
        vit = _find(rows, impl=impl, model="ViT-B/16 full tokens")
        for label in ("MAE-B 8x512 decoder", "MAE-B 1x512 decoder"):
            mae = _find(rows, impl=impl, model=label)
            if not (vit and mae):
                continue
            speedup = mae["img_s"] / vit["img_s"]
            flop_ratio = vit["gflops_per_img"] / mae["gflops_per_img"]
            mae.update(speedup_vs_vit=round(speedup, 3), flop_ratio_vs_vit=round(flop_ratio, 3),
                       speedup_over_flop_ratio=round(speedup / flop_ratio, 3))
            if impl == "vitkit":
                targets.append(_target(f"{label}: step speedup / FLOP ratio ({flop_ratio:.2f}x)",
                                       speedup / flop_ratio, 0.95, "of FLOP ratio"))
                if "1x512" in label:
                    targets.append(_target(f"{label}: step speedup over ViT-B", speedup, 3.4))
    return rows, targets


def suite_memory(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    batch = 8 if args.quick else 32
    # rounds and warm-up cut short: a step takes minutes on a CPU
    cfg = BenchConfig(model="vit_large_patch16_224", mode="train", precision="bf16", grad_checkpointing=True,
                      hf=args.memory_hf, rounds=min(args.rounds, 2), warmup=1)
    rows = _rows([cfg], batch, args)
    vk = _find(rows, impl="vitkit")
    peak = vk["peak_rss_gib"]  # the whole process: this suite runs alone in it
    if torch.cuda.is_available() and args.device != "cpu":
        peak = vk["step_mem_gib"]  # allocator peak on the GPU
    name = f"ViT-L/16 train b{batch} bf16 + checkpointing: 24 GiB minus peak memory ({peak:.2f})"
    return rows, [_target(name, 24 - peak, 0.0, "GiB headroom")]


def suite_cuda(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if not torch.cuda.is_available():
        logging.getLogger("bench_models").info("no CUDA device: the cuda suite is skipped")
        return [], []
    common = {"model": "vit_base_patch16_224", "rounds": args.rounds, "warmup": max(args.warmup, 3)}
    rows = _rows([BenchConfig(mode="train", precision="bf16", compile=not args.no_compile, **common)],
                 64 if args.quick else 256, args)
    rows += _rows([BenchConfig(mode="infer", precision="bf16", compile=not args.no_compile, **common)],
                  64 if args.quick else 256, args)
    train = [r for r in rows if r["mode"] == "train" and r["impl"].startswith("vitkit")]
    best = max(train, key=lambda r: r["img_s"])
    mfu = best["tflops"] / args.gpu_peak_tflops if args.gpu_peak_tflops else best["frac_peak"]
    name = f"ViT-B/16 GPU train bf16 ({best['impl']})"
    return rows, [_target(f"{name}: model-FLOP utilisation", mfu, 0.5, "MFU"),
                  _target(f"{name}: / best HF", best["vs_hf_best"], 1.0)]


def run_suite(name: str, args: argparse.Namespace) -> None:
    fn = {"small": suite_small, "s16": lambda a: suite_size("vit_small_patch16_224", a),
          "b16": lambda a: suite_size("vit_base_patch16_224", a), "mae": suite_mae, "memory": suite_memory,
          "cuda": suite_cuda}[name]
    rows, targets = fn(args)
    lines = [json.dumps({"suite": name, **r}) for r in rows + targets]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "a") as f:
            f.write("".join(line + "\n" for line in lines))
    if rows:
        print(format_table(rows))
    for t in targets:
        print(f"target [{'met' if t['met'] else 'NOT met'}] {t['target']}: {t['measured']} {t['unit']} "
              f"(asked >= {t['goal']})")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", nargs="+", choices=SUITES, default=list(SUITES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="smaller batches, 1 warm-up, 3 rounds")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile candidates")
    parser.add_argument("--memory-hf", action="store_true", help="time HF in the memory suite too")
    parser.add_argument("--gpu-peak-tflops", type=float, default=None,
                        help="dense bf16 peak of the GPU for MFU (default: the measured matmul peak)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.warmup = min(args.rounds, 3), 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if len(args.suite) == 1:
        run_suite(args.suite[0], args)
        return 0
    passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
    rest = _drop_suite_args(passthrough)
    status = 0
    for name in args.suite:  # one process per suite, so each peak RSS is its own
        status |= subprocess.call([sys.executable, __file__, "--suite", name, *rest])
    return status


def _drop_suite_args(argv: list[str]) -> list[str]:
    out, skipping = [], False
    for a in argv:
        if a == "--suite":
            skipping = True
            continue
        if skipping and not a.startswith("--"):
            continue
        skipping = False
        out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
