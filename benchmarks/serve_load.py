"""Load-test `vitkit serve` on loopback: throughput, latency, refusals, memory, and what micro-batching buys.

    python benchmarks/serve_load.py            # vit_small_patch16_224, 16 clients, 400 requests
    python benchmarks/serve_load.py --model vit_tiny_patch4_32 --requests 40 --clients 4   # a smoke run
    python benchmarks/serve_load.py --checkpoint runs/cifar --max-batch 16

Starts `vitkit serve` as a subprocess on 127.0.0.1 (a randomly initialised classifier unless
--checkpoint), sends --requests POST /v1/classify requests from --clients concurrent clients (bounded in count
and by --max-seconds), and prints throughput, p50/p99 latency, 503s, the mean batch the server ran, and the
server's RSS before and after. It then does the same with --max-batch 1 (one image per model call) and
prints the speedup of micro-batching.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_checkpoint(model: str, folder: Path) -> Path:
    import vitkit

    path = folder / model
    vitkit.save_pretrained(vitkit.create_model(model, num_classes=10), path)
    return path


def test_images(n: int, size: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


async def load(url: str, images: list[bytes], requests: int, clients: int, max_seconds: float) -> dict:
    import httpx

    latencies, statuses, batches = [], [], []
    sent = 0
    deadline = time.monotonic() + max_seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < requests and time.monotonic() < deadline:
            image = images[sent % len(images)]
            sent += 1
            start = time.perf_counter()
            response = await http.post(f"{url}/v1/classify", files={"image": ("x.png", image, "image/png")})
            latencies.append(time.perf_counter() - start)
            statuses.append(response.status_code)
            if response.status_code == 200:
                batches.append(response.json()["batch_size"])

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"requests": len(statuses), "seconds": seconds, "throughput": len(statuses) / seconds,
            "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "ok": statuses.count(200), "503": statuses.count(503),
            "other": len(statuses) - statuses.count(200) - statuses.count(503),
            "mean_batch": float(np.mean(batches)) if batches else float("nan")}


def run_server(args: argparse.Namespace, checkpoint: Path, max_batch: int, images: list[bytes]) -> dict:
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "vitkit", "serve", "--checkpoint", str(checkpoint), "--port", str(port),
           "--max-batch", str(max_batch), "--batch-window-ms", str(args.batch_window_ms),
           "--queue-size", str(args.queue_size), "--device", args.device]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the server did not start")
        asyncio.run(load(url, images, args.clients, args.clients, 60))  # warm-up: one round
        before = rss_mib(server.pid)
        result = asyncio.run(load(url, images, args.requests, args.clients, args.max_seconds))
        return {**result, "rss_before": before, "rss_after": rss_mib(server.pid), "max_batch": max_batch}
    finally:
        server.terminate()
        server.wait(30)


def show(r: dict) -> None:
    print(f"max-batch {r['max_batch']:>2}: {r['requests']} requests in {r['seconds']:.1f} s = "
          f"{r['throughput']:.1f} req/s; latency p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms; "
          f"200: {r['ok']}, 503: {r['503']}, other: {r['other']}; mean batch {r['mean_batch']:.2f}; "
          f"server RSS {r['rss_before']:.0f} → {r['rss_after']:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a classifier (default: a random --model)")
    parser.add_argument("--model", default="vit_small_patch16_224",
                        help="registered model used when no --checkpoint")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--batch-window-ms", type=float, default=5.0)
    parser.add_argument("--queue-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224, help="side of the uploaded PNGs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-seconds", type=float, default=300, help="stop sending after this long")
    parser.add_argument("--no-baseline", action="store_true", help="skip the --max-batch 1 run")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1] / "src"))
    images = test_images(16, args.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(args.checkpoint) if args.checkpoint else make_checkpoint(args.model, Path(tmp))
        batched = run_server(args, checkpoint, args.max_batch, images)
        show(batched)
        if not args.no_baseline and args.max_batch > 1:
            single = run_server(args, checkpoint, 1, images)
            show(single)
            print(f"micro-batching speedup (throughput, max-batch {args.max_batch} over 1): "
                  f"{batched['throughput'] / single['throughput']:.2f}x")


if __name__ == "__main__":
    main()
