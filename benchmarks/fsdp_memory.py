"""Per-rank training memory: FSDP2 over N ranks against one DDP rank (issue 17; target: FSDP-2 per-rank
parameter + optimizer state ≤ 55 % of DDP's).

    python benchmarks/fsdp_memory.py                                   # ViT-L/16 and ViT-H/14, 2 ranks
    python benchmarks/fsdp_memory.py --models vit_tiny_patch16_224 --batch 2     # a quick check

One training step (bf16 autocast forward, backward, AdamW step) of the model sharded the Trainer's way
(`vitkit.engine.fsdp.shard_model`: one unit per block, then the root) in N spawned processes (gloo on CPU,
NCCL on CUDA), and of the whole model in one process (what every DDP rank holds). Per rank it reports the
bytes of the local tensors it keeps: parameters, gradients and AdamW state (exp_avg, exp_avg_sq, step),
summed over distinct storages; and the peak the whole step added (model build included) over what was in use
before it (`vitkit.bench.track_memory`: the CUDA allocator's peak, or RSS sampled every 5 ms on CPU).
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F


def state_bytes(tensors) -> int:
    """Bytes of the distinct storages behind `tensors` (local shards of DTensors)."""
    from vitkit.engine.fsdp import local

    seen: dict[int, int] = {}
    for t in tensors:
        if t is None:
            continue
        storage = local(t).untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def measure(model_name: str, batch: int, device: torch.device, shard: bool) -> dict:
    from vitkit.bench import track_memory

    peak: list[float] = []
    with track_memory(device, peak):
        sizes = train_step_state(model_name, batch, device, shard)
    gib = 2**30
    params, grads, optim = sizes
    return {"params_gib": params / gib, "grads_gib": grads / gib, "optim_gib": optim / gib,
            "param_optim_gib": (params + optim) / gib, "all_gib": (params + grads + optim) / gib,
            "peak_gib": peak[0]}


def train_step_state(model_name: str, batch: int, device: torch.device, shard: bool) -> tuple[int, int, int]:
    """Bytes of (parameters, gradients, optimizer state) this rank holds after one training step."""
    from vitkit.engine.fsdp import mixed_precision, shard_model
    from vitkit.engine.optim import build_optimizer
    from vitkit.engine.runtime import native_bf16
    from vitkit.models import create_model

    # Emulated bf16 (a CPU without avx512_bf16/AMX) would take hours for ViT-L: fp32 there; the fp32
    # parameters, gradients and AdamW states measured are the same.
    amp = native_bf16(device)
    torch.manual_seed(0)
    model = create_model(model_name).to(device)
    if shard:
        shard_model(model, mixed_precision(amp, torch.bfloat16))
    optimizer = build_optimizer(model, 1e-4, fused=device.type == "cuda")
    size = model.config.image_size
    images = torch.randn(batch, model.config.in_chans, *size, device=device)
    targets = torch.zeros(batch, dtype=torch.long, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        loss = F.cross_entropy(model(images), targets)
    loss.backward()
    optimizer.step()
    return (state_bytes(model.parameters()), state_bytes(p.grad for p in model.parameters()),
            state_bytes(v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)))


def _rank(rank: int, world: int, store: str, model: str, batch: int, use_cuda: bool, out: dict) -> None:
    device = torch.device("cuda", rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if use_cuda else "gloo", store=dist.FileStore(store, world), rank=rank,
                            world_size=world)
    try:
        out[rank] = measure(model, batch, device, shard=True)
    finally:
        dist.destroy_process_group()


def fsdp_ranks(model: str, batch: int, world: int, use_cuda: bool) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = mp.Manager().dict()
        mp.start_processes(_rank, args=(world, os.path.join(tmp, "store"), model, batch, use_cuda, out),
                           nprocs=world, start_method="spawn")
        return [out[r] for r in range(world)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vit_large_patch16_224", "vit_huge_patch14_224"])
    p.add_argument("--batch", type=int, default=2, help="images per rank in the measured step")
    p.add_argument("--ranks", type=int, default=2, help="FSDP processes (CUDA: one GPU each)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = p.parse_args()
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if use_cuda and torch.cuda.device_count() < args.ranks:
        sys.exit(f"--ranks {args.ranks} needs {args.ranks} GPUs; {torch.cuda.device_count()} here "
                 "(use --device cpu, or fewer --ranks)")
    for name in args.models:
        ddp = measure(name, args.batch, torch.device("cuda" if use_cuda else "cpu"), shard=False)
        ranks = fsdp_ranks(name, args.batch, args.ranks, use_cuda)
        worst = max(ranks, key=lambda r: r["param_optim_gib"])
        ratio = worst["param_optim_gib"] / ddp["param_optim_gib"]
        print(json.dumps({"model": name, "batch": args.batch, "ranks": args.ranks, "ddp": ddp, "fsdp": ranks,
                          "param_optim_ratio": ratio}))
        print(f"{name}: per-rank params+optimizer {ddp['param_optim_gib']:.3f} GiB (DDP, 1 rank) → "
              f"{worst['param_optim_gib']:.3f} GiB (FSDP, {args.ranks} ranks) = {ratio:.0%} (target ≤ 55%); "
              f"params+grads+optimizer {ddp['all_gib']:.3f} → {worst['all_gib']:.3f} GiB; step peak "
              f"{ddp['peak_gib']:.3f} → {max(r['peak_gib'] for r in ranks):.3f} GiB")


if __name__ == "__main__":
    main()
