"""Side-by-side speed benchmark: vitkit against HF transformers, timed interleaved in one process.

Every candidate (vitkit, HF with ``attn_implementation="sdpa"`` and ``"eager"``, optionally vitkit with
compiled blocks) is built from the same config, warmed up, then timed in rounds: each round runs every
candidate once, in a new seeded random order, then a square bf16 and fp32 matmul that give the hardware
peak under the same load. Throughput is the median over rounds; the FLOP count
(`models.summary.forward_flops`, training = 3 × forward) turns it into TFLOP/s and a fraction of that peak.
Rows are plain dicts (one JSON line each); `format_table` prints them.

    rows = run_benchmark(BenchConfig("vit_tiny_patch4_32", batch_sizes=(256,), precision="bf16",
                                     mode="train"))
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hardware import dense_bf16_peak_tflops
from .models.mae import MAEConfig
from .models.mpp import MPPConfig
from .models.registry import build_model, get_model_config
from .models.summary import forward_flops
from .models.vit import ViTConfig

log = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "bf16-weights"]
Mode = Literal["train", "infer"]


@dataclass
class BenchConfig:
    """What to benchmark.

    precision: "fp32"; "bf16" = autocast with fp32 weights (the training recipe);
    "bf16-weights" = the model cast to bf16, inference only.
    `overrides` go to the model config (e.g. ``{"decoder_depth": 1}`` for an MAE).
    """

    model: str = "vit_tiny_patch4_32"
    batch_sizes: tuple[int, ...] = (256,)
    precision: Precision = "bf16"
    mode: Mode = "train"
    hf: bool = True
    hf_attn: tuple[str, ...] = ("sdpa", "eager")
    compile: bool = False
    grad_checkpointing: bool = False
    rounds: int = 5
    warmup: int = 2
    device: str = "auto"
    threads: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # name of the model in the rows; default: model (+ overrides)


@dataclass
class Candidate:
    """One timed thing: a closure running a whole step on fixed inputs."""

    model: str
    impl: str
    step: Callable[[], None]
    flops_per_image: float  # of one step (training counts 3 × forward)
    batch: int
    mode: Mode
    precision: Precision
    dim: int
    first_step_s: float = float("nan")
    step_mem_gib: float = float("nan")
    times: list[float] = field(default_factory=list)


# ---- hardware ----------------------------------------------------------------------------------------------
def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds one `fn()` takes, the device synchronised before and after (CUDA runs asynchronously)."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (getrusage; KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def _current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


@contextlib.contextmanager
def track_memory(device: torch.device, out: list[float]):
    """Append the memory (GiB) the block added at its peak over what was in use before it: CUDA allocator
    peak, or RSS sampled every 5 ms on CPU."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        yield
        out.append((torch.cuda.max_memory_allocated(device) - before) / 2**30)
        return
    before = _current_rss_bytes()
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], _current_rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        out.append((max(peak[0], _current_rss_bytes()) - before) / 2**30)


def matmul_step(n: int, dtype: torch.dtype, device: torch.device) -> tuple[Callable[[], None], float]:
    """A square n×n matmul as a step closure, and its FLOPs (2n³)."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    return (lambda: torch.mm(a, b)), 2.0 * n**3


def peak_size(dim: int) -> int:
    """Side of the square matmul used as the peak: about the model's MLP width (4·D), within [1024, 4096]."""
    return int(min(4096, max(1024, round(4 * dim / 256) * 256)))


# ---- candidates --------------------------------------------------------------------------------------------
def hf_model(cfg: Any, attn: str) -> nn.Module:
    """The HF transformers equivalent of a vitkit config (same architecture, random init), or ValueError."""
    import transformers

    from .convert import get_hf_converter
    from .convert.hf_vit_mae import config_from_vitkit

    if isinstance(cfg, ViTConfig):
        with torch.device("meta"):
            state = build_model(cfg).state_dict()
        hf_cfg, _ = get_hf_converter("vit").from_vitkit(cfg, state)
    else:
        hf_cfg = config_from_vitkit(cfg)
    hf_cfg = {k: v for k, v in hf_cfg.items() if k not in ("architectures",)}
    cls = getattr(transformers, "ViTForImageClassification" if isinstance(cfg, ViTConfig)
                  else "ViTMAEForPreTraining")
    config = transformers.AutoConfig.for_model(**hf_cfg, attn_implementation=attn)
    model = cls(config)
    if model.config._attn_implementation != attn:
        raise ValueError(f"transformers ignored attn_implementation={attn!r}")
    return model


def _step(model: nn.Module, forward: Callable[[nn.Module, Tensor, Tensor], Tensor], images: Tensor,
          targets: Tensor, mode: Mode, precision: Precision, device: torch.device) -> Callable[[], None]:
    def amp() -> contextlib.AbstractContextManager:
        return (torch.autocast(device.type, torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())

    if mode == "infer":
        model.eval()

        def infer() -> None:
            with torch.inference_mode(), amp():
                forward(model, images, targets)
        return infer
    model.train()
    fused = device.type in ("cpu", "cuda")  # one fused AdamW kernel for every candidate alike
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=fused)

    def train() -> None:
        with amp():
            loss = forward(model, images, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return train


def _classify(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(model(images).float(), targets)


def _classify_hf(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(model(pixel_values=images).logits.float(), targets)


def _mae(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    return model(images).loss  # an MAE's or an MPP model's self-supervised loss


def _mae_hf(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    return model(pixel_values=images).loss


def build_candidates(cfg: BenchConfig, batch: int) -> list[Candidate]:
    """vitkit (and its compiled variant) plus the HF equivalents for one model and batch size."""
    device = resolve_device(cfg.device)
    if cfg.precision == "bf16-weights" and cfg.mode == "train":
        raise ValueError("precision 'bf16-weights' is for inference; train with 'bf16' (autocast) or 'fp32'")
    model_cfg = get_model_config(cfg.model, **cfg.overrides)
    is_vit = isinstance(model_cfg, ViTConfig)
    if not is_vit and not isinstance(model_cfg, (MAEConfig, MPPConfig)):
        raise ValueError(f"{cfg.model}: the benchmark handles ViT classifiers, MAEs and MPP models")
    enc = model_cfg if is_vit else model_cfg.encoder
    label = cfg.label or cfg.model + "".join(f",{k}={v}" for k, v in cfg.overrides.items())
    flops = forward_flops(model_cfg) * (3 if cfg.mode == "train" else 1)
    gen = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16 if cfg.precision == "bf16-weights" else torch.float32
    images = torch.randn(batch, enc.in_chans, *enc.image_size, generator=gen).to(device, dtype)
    targets = torch.randint(0, max(enc.num_classes, 1), (batch,), generator=gen).to(device)

    def prepare(model: nn.Module) -> nn.Module:
        model = model.to(device, dtype)
        if cfg.grad_checkpointing:
            if hasattr(model, "gradient_checkpointing_enable"):  # HF
                model.gradient_checkpointing_enable()
            else:
                for m in model.modules():
                    if hasattr(m, "set_grad_checkpointing"):
                        m.set_grad_checkpointing(True)
        return model

    torch.manual_seed(0)
    out = []
    variants = [("vitkit", False)] + ([("vitkit+compile", True)] if cfg.compile else [])
    for impl, compiled in variants:
        model = prepare(build_model(copy.deepcopy(model_cfg)))
        if compiled:
            model = compile_model(model, cfg.mode)
        step = _step(model, _classify if is_vit else _mae, images, targets, cfg.mode, cfg.precision, device)
        out.append(Candidate(label, impl, step, flops, batch, cfg.mode, cfg.precision, enc.dim))
    if cfg.hf:
        for attn in cfg.hf_attn:
            try:
                model = prepare(hf_model(model_cfg, attn))
            except (ValueError, ImportError) as e:
                log.warning("no HF %s candidate for %s: %s", attn, label, e)
                continue
            step = _step(model, _classify_hf if is_vit else _mae_hf, images, targets, cfg.mode, cfg.precision,
                         device)
            out.append(Candidate(label, f"hf-{attn}", step, flops, batch, cfg.mode, cfg.precision, enc.dim))
    return out


def compile_model(model: nn.Module, mode: Mode) -> nn.Module:
    """torch.compile for a benchmark: for training every transformer Block in place (identical blocks share
    one graph, so compilation does not grow with depth); for inference the whole model with inductor's
    `freezing` (weights folded in as constants and pre-packed for the matmul library)."""
    if mode == "infer":
        return torch.compile(model, options={"freezing": True})
    from .layers import Block

    for m in model.modules():
        if isinstance(m, Block):
            m.compile()
    return model


# ---- timing ------------------------------------------------------------------------------------------------
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = "cpu"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            info = f.read()
        name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                     if ln.startswith("model name")), name)
        flags = [x for x in ("amx_bf16", "avx512_bf16") if f" {x}" in info]
        name += f" [{torch.backends.cpu.get_cpu_capability()}{''.join(' ' + x for x in flags)}]"
    return name


def warm_up(candidates: Sequence[Candidate], warmup: int, device: torch.device) -> list[Candidate]:
    """Run each candidate's warm-up steps, recording its first-step time and peak memory. A compiled
    candidate that fails to compile is dropped with a warning (the eager ones still run); any other
    failure is raised."""
    ready = []
    for c in candidates:
        mem: list[float] = []
        try:
            with track_memory(device, mem):
                for i in range(max(warmup, 1)):
                    t0 = time.perf_counter()
                    c.step()
                    _sync(device)
                    if i == 0:
                        c.first_step_s = time.perf_counter() - t0
        except Exception as e:
            if "compile" not in c.impl:
                raise
            log.warning("dropping %s %s: compilation failed: %s", c.model, c.impl, e)
            continue
        c.step_mem_gib = mem[0]
        log.info("warmed up %s %s (first step %.2fs)", c.model, c.impl, c.first_step_s)
        ready.append(c)
    return ready


def shuffled_orders(n: int, rounds: int, seed: int = 0) -> list[list[int]]:
    """`rounds` seeded random orders of n candidates. Not a rotation: rotating a fixed list keeps every
    candidate behind the same neighbour each round, and a neighbour that leaves the CPU busy (onnxruntime's
    spinning threads) would slow the same candidate every time."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=generator).tolist() for _ in range(rounds)]


def time_interleaved(candidates: Sequence[Candidate], rounds: int, device: torch.device,
                     peak_n: int) -> dict[str, list[float]]:
    """Time `rounds` rounds of warmed-up candidates, each in a new random order (`shuffled_orders`), each
    closed by a bf16 and an fp32 n×n matmul (repeated to last ≥ 50 ms); return each round's matmul TFLOP/s
    by dtype."""
    matmuls = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        run, flops = matmul_step(peak_n, dtype, device)
        run()
        t0 = time.perf_counter()
        run()
        _sync(device)
        reps = max(1, round(0.05 / max(time.perf_counter() - t0, 1e-6)))
        matmuls[name] = (run, flops, reps)
    peaks: dict[str, list[float]] = {name: [] for name in matmuls}
    for r, order in enumerate(shuffled_orders(len(candidates), rounds)):
        for i in order:
            c = candidates[i]
            c.times.append(time_call(c.step, device))
        for name, (run, flops, reps) in matmuls.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                run()
            _sync(device)
            peaks[name].append(flops * reps / (time.perf_counter() - t0) / 1e12)
        log.info("round %d/%d done", r + 1, rounds)
    return peaks


def run_candidates(candidates: Sequence[Candidate], rounds: int = 5, warmup: int = 2, device: str = "auto",
                   peak_n: int | None = None) -> list[dict[str, Any]]:
    """Time candidates interleaved and return one row per candidate (see the module docstring)."""
    dev = resolve_device(device)
    peak_n = peak_n or peak_size(max(c.dim for c in candidates))
    candidates = warm_up(candidates, warmup, dev)
    peaks = time_interleaved(candidates, rounds, dev, peak_n)
    try:
        import transformers
        hf_version = transformers.__version__
    except ImportError:
        hf_version = None
    meta = {"device": device_name(dev), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": hf_version, "peak_n": peak_n}
    for name, rates in peaks.items():
        meta[f"peak_{name}_tflops"] = _sig(max(rates))
        meta[f"peak_{name}_tflops_median"] = _sig(statistics.median(rates))
    table_peak = dense_bf16_peak_tflops(dev)  # MFU: against the chip's dense bf16 peak (a known GPU)
    meta["dense_bf16_peak_tflops"] = table_peak
    rows = []
    for c in candidates:
        med, best = statistics.median(c.times), min(c.times)
        rates = peaks["fp32" if c.precision == "fp32" else "bf16"]
        tflops = c.flops_per_image * c.batch / med / 1e12
        tflops_best = c.flops_per_image * c.batch / best / 1e12
        rows.append({
            "model": c.model, "impl": c.impl, "mode": c.mode, "precision": c.precision, "batch": c.batch,
            "img_s": round(c.batch / med, 2), "img_s_best": round(c.batch / best, 2),
            "step_ms": round(med * 1e3, 2), "step_ms_min": round(best * 1e3, 2), "rounds": len(c.times),
            "gflops_per_img": float(f"{c.flops_per_image / 1e9:.6g}"), "tflops": _sig(tflops),
            # median step over median matmul (same load), and fastest step over fastest matmul
            "frac_peak": _sig(tflops / statistics.median(rates)),
            "frac_peak_best": _sig(tflops_best / max(rates)), "first_step_s": round(c.first_step_s, 3),
            "mfu": _sig(tflops / table_peak) if table_peak and c.precision != "fp32" else None,
            "compile_s": round(c.first_step_s - med, 3) if "compile" in c.impl else None,
            "step_mem_gib": round(c.step_mem_gib, 3), "peak_rss_gib": round(peak_rss_gib(), 3), **meta})
    for row in rows:  # vitkit / HF on the same model, batch, mode and precision
        key = (row["model"], row["batch"], row["mode"], row["precision"])
        hf = {r["impl"]: r["img_s"] for r in rows if r["impl"].startswith("hf-")
              and (r["model"], r["batch"], r["mode"], r["precision"]) == key}
        row["vs_hf_best"] = round(row["img_s"] / max(hf.values()), 3) if hf else None
        for impl, value in hf.items():
            row[f"vs_{impl}"] = round(row["img_s"] / value, 3)
    return rows


def run_benchmark(cfg: BenchConfig) -> list[dict[str, Any]]:
    """Benchmark one model at each batch size of `cfg` (each batch size is one interleaved run)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rows = []
    for batch in cfg.batch_sizes:
        candidates = build_candidates(cfg, batch)
        rows += run_candidates(candidates, cfg.rounds, cfg.warmup, cfg.device)
        del candidates
    return rows


_COLUMNS = [("model", "{}"), ("impl", "{}"), ("mode", "{}"), ("precision", "{}"), ("batch", "{}"),
            ("img_s", "{:.1f}"), ("step_ms", "{:.0f}"), ("tflops", "{:.3f}"), ("frac_peak", "{:.0%}"),
            ("mfu", "{:.1%}"), ("step_mem_gib", "{:.2f}"), ("vs_hf_best", "{:.2f}")]
_HEADERS = {"img_s": "img/s", "step_ms": "ms/step", "tflops": "TFLOP/s", "frac_peak": "%peak",
            "mfu": "MFU",
            "step_mem_gib": "mem GiB", "vs_hf_best": "vs HF"}


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table of benchmark rows, with the matmul peaks and the machine underneath."""
    table = [[_HEADERS.get(k, k) for k, _ in _COLUMNS]]
    table += [["-" if r.get(k) is None else fmt.format(r[k]) for k, fmt in _COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) if i < 4 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(line, widths, strict=False)))
             for line in table]
    notes = dict.fromkeys(
        f"{r['device']}, {r['threads']} threads, torch {r['torch']}, transformers {r['transformers']}: "
        f"matmul {r['peak_n']}² best (median) TFLOP/s: bf16 {r['peak_bf16_tflops']:.3f} "
        f"({r['peak_bf16_tflops_median']:.3f}), fp32 {r['peak_fp32_tflops']:.3f} "
        f"({r['peak_fp32_tflops_median']:.3f})"
        for r in rows)
    rss = max((r["peak_rss_gib"] for r in rows), default=0.0)
    return "\n".join(lines + list(notes) + [
        (f"process peak RSS {rss:.2f} GiB; mem GiB = memory a candidate's warm-up steps added at their peak "
        "(activations, gradients, optimizer state; not the weights): sampled RSS on CPU, allocator on CUDA")])


def _sig(x: float, digits: int = 4) -> float:
    """`x` to `digits` significant figures (a tiny model's TFLOP/s must not round to 0)."""
    return float(f"{x:.{digits}g}")
