"""Inference against its peers (issue 15 item 2, issue 18 items 2–3): vitkit eager fp32 / bf16 autocast /
torch.compile, HF transformers' ViTForImageClassification (eager, sdpa, compiled) with the same weights, and
onnxruntime fp32 and int8 (dynamic quantization) on the file `vitkit export` writes, timed interleaved in ONE
process run.

    python benchmarks/infer_peers.py                                  # ViT-S/16 and ViT-B/16, batch 1 and 8
    python benchmarks/infer_peers.py --quick                          # 3 rounds, 20 latency calls, 64 images
    python benchmarks/infer_peers.py --quick --models vit_tiny_patch4_32 --images 40   # smoke run
    python benchmarks/infer_peers.py --out peers.jsonl

Method:
* Every candidate of every model and batch size is built first, warmed up (the first call's time is kept:
  for compiled candidates it is the compile time), then timed in --rounds rounds
  (`vitkit.bench.run_candidates`); each round closes with a bf16 and an fp32 square matmul, so the
  host's matmul peaks are measured under the same load. Throughput is the median round. Each round (and
  each latency pass) runs the candidates in a new seeded random order: with a rotated fixed list every
  candidate follows the same neighbour, and onnxruntime's default spin-waiting threads made the torch call
  after an onnxruntime run 30–80 ms slower, which once showed as "vitkit eager trails HF at batch 1".
  vitkit's onnxruntime sessions (`vitkit.infer.onnx.session_options`) do not spin.
* Batch-1 latency: --latency-calls warm calls per batch-1 candidate, interleaved call by call; p50 and p99.
* Ratios: each candidate's img/s over the best peer's (HF or onnxruntime; also over the best fp32 peer) at the
  same model and batch.
* Compile time = first call − median call. Inductor caches compiled graphs on disk, so a second run reports
  less; set TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 to time a cold compile.
* Agreement: every candidate's logits on --images real photos (the CIFAR-10 training JPEGs from
  ../shared/data, decoded and preprocessed as `vitkit predict` does, upsampled to 224) against vitkit fp32:
  top-1 agreement and max |logit difference|. The encoder weights are random (speed does not depend on
  them), so the head is fitted: a ridge-regression classifier on the fp32 [CLS] features of half the images
  (CIFAR labels; its accuracy on the other half is printed), which gives logits data-driven margins instead
  of the near-ties a random head makes. Say so when quoting the agreement.
* Peak bound: ViT-S/16 batch-1 latency against GFLOPs ÷ the measured bf16 matmul peak (the fastest a
  bf16 forward could be on this host; the fp32 peak where bf16 is emulated); the target line prints the
  ratio.
* bf16 on a CPU without native bf16 matmuls (no avx512_bf16 / AMX) is emulated and far slower than fp32:
  when the measured bf16 peak is below the fp32 one the bf16 candidate is skipped with a printed reason
  (--force-bf16 runs it anyway).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vitkit.bench import (
    Candidate,
    compile_model,
    device_name,
    matmul_step,
    peak_size,
    run_candidates,
    shuffled_orders,
    time_call,
)
from vitkit.models.registry import build_model, get_model_config
from vitkit.models.summary import forward_flops
from vitkit.weights import save_pretrained

log = logging.getLogger("infer_peers")
TARBALL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-train.tar.gz"
DEVICE = torch.device("cpu")  # onnxruntime's CPU provider is the peer; every candidate runs on the CPU
# one static graph per batch size for compiled candidates (no switch to a dynamic-batch graph on the second)
torch._dynamo.config.automatic_dynamic_shapes = False


# ---- data and the fitted head ------------------------------------------------------------------------------
def cifar_images(tarball: Path, n: int, model: nn.Module) -> tuple[Tensor, Tensor]:
    """`n` CIFAR-10 training JPEGs (balanced over classes) → model inputs (n, C, H, W), preprocessed as
    `vitkit predict` does (`vitkit.transforms_for`), and labels (n,)."""
    from vitkit import transforms_for

    per_class, kept, files, labels = -(-n // 10), {}, [], []
    with tarfile.open(tarball) as tar:
        for member in tar:
            cls = Path(member.name).parent.name
            if not member.isfile() or kept.get(cls, 0) >= per_class or len(files) >= n:
                continue
            kept[cls] = kept.get(cls, 0) + 1
            files.append(tar.extractfile(member).read())  # encoded JPEG bytes
            labels.append(cls)
    names = sorted(set(labels))
    return transforms_for(model)(files), torch.tensor([names.index(c) for c in labels])


@torch.no_grad()
def fit_head(model: nn.Module, images: Tensor, labels: Tensor, ridge: float = 1.0) -> float:
    """Replace the head with a ridge-regression classifier on the fp32 pooled features of the even-numbered
    images; return its top-1 accuracy on the odd-numbered ones (held out)."""
    feats = torch.cat([model.forward_head(model.forward_features(x), pre_logits=True)
                       for x in images.split(32)])  # (n, D)
    fit, held = feats[0::2], feats[1::2]
    a = torch.cat([fit, torch.ones(len(fit), 1)], 1)  # (n/2, D + 1)
    y = torch.nn.functional.one_hot(labels[0::2], model.head.out_features).float() * 2 - 1  # ±1 targets
    w = torch.linalg.solve(a.T @ a + ridge * torch.eye(a.shape[1]), a.T @ y)  # (D + 1, K)
    model.head.weight.copy_(w[:-1].T)
    model.head.bias.copy_(w[-1])
    return (model.head(held).argmax(-1) == labels[1::2]).float().mean().item()


# ---- candidates --------------------------------------------------------------------------------------------
def measured_peaks(n: int, reps: int = 3) -> dict[str, float]:
    """Best-of-`reps` TFLOP/s of a square n×n bf16 and fp32 matmul (before the run, to decide on bf16)."""
    peaks = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        step, flops = matmul_step(n, dtype, DEVICE)
        step()
        peaks[name] = max(flops / time_call(step, DEVICE) / 1e12 for _ in range(reps))
    return peaks


def torch_logits(model: nn.Module, amp: bool = False, hf: bool = False):
    def run(x: Tensor) -> Tensor:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=amp):
            out = model(pixel_values=x).logits if hf else model(x)
        return out.float()
    return run


def ort_logits(session: Any):
    def run(x: Tensor) -> Tensor:
        return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    return run


def build_runners(name: str, model: nn.Module, args: argparse.Namespace, tmp: Path,
                  peaks: dict[str, float]) -> dict[str, tuple[Any, str]]:
    """impl → (logits function on a batch (B, C, H, W), precision) for one model."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from vitkit.export import export_onnx
    from vitkit.infer.onnx import session_options

    runners: dict[str, tuple[Any, str]] = {"vitkit": (torch_logits(model), "fp32")}
    if peaks["bf16"] >= peaks["fp32"] or args.force_bf16:
        runners["vitkit-bf16"] = (torch_logits(model, amp=True), "bf16")
    else:
        print(f"skipping vitkit-bf16 for {name}: the measured bf16 matmul peak ({peaks['bf16']:.3f} TFLOP/s) "
              f"is below fp32 ({peaks['fp32']:.3f}): this CPU emulates bf16 (no avx512_bf16/AMX); "
              "--force-bf16 runs it anyway", flush=True)
    if not args.no_compile:
        runners["vitkit+compile"] = (torch_logits(compile_model(copy.deepcopy(model), "infer")), "fp32")
    if not args.no_hf:
        from transformers import ViTForImageClassification

        hf_dir = save_pretrained(model, tmp / f"{name}-hf", format="hf")  # the same weights, HF's layout
        for attn in ("eager", "sdpa"):
            hf = ViTForImageClassification.from_pretrained(hf_dir, attn_implementation=attn).eval()
            runners[f"hf-{attn}"] = (torch_logits(hf, hf=True), "fp32")
        if not args.no_compile:
            runners["hf-sdpa+compile"] = (torch_logits(compile_model(hf, "infer"), hf=True), "fp32")
    fp32_path = export_onnx(model, tmp / f"{name}.onnx")
    int8_path = tmp / f"{name}.int8.onnx"
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    for impl, path, precision in (("ort", fp32_path, "fp32"), ("ort-int8", int8_path, "int8")):
        session = ort.InferenceSession(str(path), session_options(torch.get_num_threads()),
                                       providers=["CPUExecutionProvider"])
        runners[impl] = (ort_logits(session), precision)
    return runners


def candidates_for(name: str, runners: dict[str, tuple[Any, str]], cfg: Any, batch: int) -> list[Candidate]:
    x = torch.randn(batch, cfg.in_chans, *cfg.image_size, generator=torch.Generator().manual_seed(batch))
    flops = forward_flops(cfg)
    return [Candidate(name, impl, (lambda fn=fn: fn(x)), flops, batch, "infer", precision, cfg.dim)
            for impl, (fn, precision) in runners.items()]


def agreement(runners: dict[str, tuple[Any, str]], images: Tensor, batch: int) -> dict[str, dict[str, float]]:
    """impl → top-1 agreement and max |logit diff| against vitkit fp32 (batches of `batch`, padded)."""
    pad = (-len(images)) % batch
    padded = torch.cat([images, images[:pad]]) if pad else images
    logits = {impl: torch.cat([fn(x) for x in padded.split(batch)])[: len(images)]
              for impl, (fn, _) in runners.items()}
    ref = logits["vitkit"]
    return {impl: {"top1_agree": round((out.argmax(-1) == ref.argmax(-1)).float().mean().item(), 4),
                   "max_logit_diff": float(f"{(out - ref).abs().max().item():.3g}")}
            for impl, out in logits.items() if impl != "vitkit"}


def latencies(candidates: list[Candidate], calls: int) -> dict[tuple[str, str], tuple[float, float]]:
    """(model, impl) → (p50, p99) ms over `calls` warm calls, interleaved call by call in a new random
    order each time (`shuffled_orders`)."""
    times: dict[tuple[str, str], list[float]] = {(c.model, c.impl): [] for c in candidates}
    for order in shuffled_orders(len(candidates), calls, seed=1):
        for i in order:
            c = candidates[i]
            times[c.model, c.impl].append(time_call(c.step, DEVICE) * 1e3)
    return {key: (float(np.percentile(t, 50)), float(np.percentile(t, 99))) for key, t in times.items()}


# ---- report ------------------------------------------------------------------------------------------------
PEERS = ("hf-", "ort")


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """vs_best_peer: img/s over the fastest peer (HF or onnxruntime, int8 included) at the same model and
    batch; vs_best_fp32_peer: over the fastest fp32 peer (the same numerics)."""
    for row in rows:
        peers = [r for r in rows if r["impl"].startswith(PEERS) and (r["model"], r["batch"]) ==
                 (row["model"], row["batch"])]
        fp32 = [r for r in peers if r["precision"] == "fp32"]
        for key, group in (("best_peer", peers), ("best_fp32_peer", fp32)):
            best = max(group, key=lambda r: r["img_s"], default=None)
            row[key] = best["impl"] if best else None
            row[f"vs_{key}"] = round(row["img_s"] / best["img_s"], 3) if best else None


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = ["model", "impl", "precision", "batch", "img_s", "p50_ms", "p99_ms", "compile_s", "vs_best_peer",
            "vs_best_fp32_peer", "top1_agree", "max_logit_diff"]
    table = [cols] + [["-" if r.get(c) is None else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    r = rows[0]
    print(f"{r['device']}, {r['threads']} threads, torch {r['torch']}: matmul {r['peak_n']}² peaks in this "
          "run, "
          f"best (median) TFLOP/s: bf16 {r['peak_bf16_tflops']} ({r['peak_bf16_tflops_median']}), "
          f"fp32 {r['peak_fp32_tflops']} ({r['peak_fp32_tflops_median']})")


def bound_targets(rows: list[dict[str, Any]], goal: float) -> list[dict[str, Any]]:
    """ViT-S/16 (or the first model) batch-1 p50 latency over its peak bound: GFLOPs ÷ the faster measured
    matmul peak (bf16 where the host has native bf16; fp32 where bf16 is emulated, since no forward can then
    be faster than the fp32 matmuls allow)."""
    out = []
    for row in rows:
        if (row["batch"] != 1 or row.get("p50_ms") is None or row["precision"] == "int8"
                or not row["model"].startswith(rows[0]["model"])):
            continue  # int8 matmuls are not bounded by the float peaks measured here
        dtype = "bf16" if row["peak_bf16_tflops"] >= row["peak_fp32_tflops"] else "fp32"
        bound_ms = row["gflops_per_img"] / row[f"peak_{dtype}_tflops"]  # GFLOP / TFLOP/s = ms
        ratio = row["p50_ms"] / bound_ms
        what = f"{row['model']} b1 {row['impl']}: p50 latency / {dtype} peak bound ({bound_ms:.2f} ms)"
        out.append({"target": what, "measured": round(ratio, 3), "goal": goal,
                    "unit": "× bound (lower is better)", "met": ratio <= goal, "p50_ms": row["p50_ms"],
                    "bound": dtype, "note": None if dtype == "bf16" else
                    "bf16 is emulated on this host (bf16 peak < fp32): bounded by the fp32 matmul peak"})
    return out


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vit_small_patch16_224", "vit_base_patch16_224"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    p.add_argument("--rounds", type=int, default=15, help="throughput rounds")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--latency-calls", type=int, default=200, help="warm batch-1 calls per candidate")
    p.add_argument("--images", type=int, default=300, help="CIFAR-10 images for the agreement check")
    p.add_argument("--tarball", type=Path, default=TARBALL.resolve())
    p.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads")
    p.add_argument("--bound-goal", type=float, default=1.3,
                   help="target: batch-1 p50 latency ≤ this × the peak bound (issue 18: 1.3)")
    p.add_argument("--peak-n", type=int, default=None,
                   help="side of the per-round peak matmuls (default: ~4·D; 1024 keeps rounds short "
                        "where bf16 is emulated: a 3072³ bf16 matmul takes over a minute there)")
    p.add_argument("--force-bf16", action="store_true", help="run bf16 even where it is emulated")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--no-hf", action="store_true")
    p.add_argument("--quick", action="store_true", help="3 rounds, 1 warm-up, 20 latency calls, 64 images")
    p.add_argument("--out", type=Path, help="append the JSON rows to this file")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.warmup, args.latency_calls, args.images = 3, 1, 20, min(args.images, 64)
    return args


def measure(args: argparse.Namespace, tmp: Path) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Build every candidate, time them in one interleaved run, then measure latency and agreement."""
    candidates, checks, accuracy = [], [], {}
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(get_model_config(name, num_classes=10)).eval()
        images, labels = cifar_images(args.tarball, args.images, model)
        accuracy[name] = fit_head(model, images, labels)
        t0 = time.perf_counter()
        runners = build_runners(name, model, args, tmp,
                                measured_peaks(args.peak_n or peak_size(model.config.dim)))
        print(f"{name}: built {len(runners)} candidates in {time.perf_counter() - t0:.0f}s; fitted head "
              f"top-1 {accuracy[name]:.1%} on {len(images) // 2} held-out CIFAR images (random encoder)",
              flush=True)
        checks.append((name, runners, images))
        candidates += [c for b in args.batch_sizes for c in candidates_for(name, runners, model.config, b)]
    rows = run_candidates(candidates, args.rounds, args.warmup, "cpu",  # warm-up first: compile times
                          peak_n=args.peak_n)
    lat = latencies([c for c in candidates if c.batch == 1], args.latency_calls)
    timed = {(r["model"], r["impl"]) for r in rows}  # a candidate that failed to compile was dropped
    agree = {name: agreement({k: v for k, v in runners.items() if (name, k) in timed}, images,
                             max(args.batch_sizes))
             for name, runners, images in checks}
    for row in rows:
        p50, p99 = lat.get((row["model"], row["impl"]), (None, None)) if row["batch"] == 1 else (None, None)
        row["p50_ms"], row["p99_ms"] = (None, None) if p50 is None else (round(p50, 2), round(p99, 2))
        row.update(agree[row["model"]].get(row["impl"], {}))
        row["head_top1_heldout"] = round(accuracy[row["model"]], 4)
        if row["precision"] == "int8":  # no int8 matmul peak is measured: a share of the bf16 one would lie
            row["frac_peak"] = row["frac_peak_best"] = None
    add_ratios(rows)
    return rows, accuracy


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.tarball.exists():
        sys.exit(f"{args.tarball} not found (the CIFAR-10 JPEGs for the agreement check); pass --tarball")
    with tempfile.TemporaryDirectory() as tmp:
        rows, _ = measure(args, Path(tmp))
    for row in rows:
        print(json.dumps(row))
    print_table(rows)
    for target in bound_targets(rows, args.bound_goal):
        print(json.dumps(target))
    print(f"agreement: vs vitkit fp32 on {args.images} CIFAR-10 images, ridge-fitted head on a random "
          f"encoder ({device_name(DEVICE)})")
    if args.out:
        with args.out.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
