"""`vitkit serve`: a local web page and JSON API over a checkpoint (the `serve` extra: FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import sys

from ..errors import UsageError
from .infer import add_checkpoint_argument

EXTRA = "vitkit serve needs the serve extra: pip install 'vitkit[serve]'"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="a local web page and JSON API over a checkpoint",
                       description="Serve a checkpoint on this machine: a page to drop images on and a JSON "
                                   "API (POST /v1/classify, attention, depth, segment or reconstruct, as the "
                                   "model allows; GET /v1/model). Concurrent requests are micro-batched.")
    add_checkpoint_argument(p, "a classifier, an MAE or a DPT (depth or segmentation)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; any other address "
                        "exposes the server to the network, with no authentication)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--max-batch", type=int, default=8, help="requests run as one batch at most (default: 8)")
    p.add_argument("--batch-window-ms", type=float, default=5.0,
                   help="how long a request waits for others to batch with (default: 5 ms)")
    p.add_argument("--queue-size", type=int, default=64,
                   help="requests waiting at most; more are answered 503 with Retry-After (default: 64)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest request body (default: 10 MB)")
    p.add_argument("--max-pixels", type=int, default=25_000_000,
                   help="largest image, in pixels, decoded (default: 25000000, e.g. 5000×5000)")
    p.add_argument("--max-side", type=int, default=1024,
                   help="images are reduced to this longer side before attention, depth, segmentation and "
                        "MAE (their results come at the image's size; replies say resized_from) "
                        "(default: 1024)")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto, cuda when available)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="run the model under this autocast dtype (default: float32; float16 on CUDA only)")
    p.add_argument("--engine", default="auto", choices=["auto", "torch", "onnx"],
                   help="what runs /v1/classify: onnx (onnxruntime, on the model exported once to "
                        "~/.cache/vitkit/onnx), torch, or auto: onnx when the onnx extra is installed and "
                        "the model runs in float32 on the CPU, else torch; the other endpoints always run "
                        "on torch (default: auto)")
    p.set_defaults(func=run_serve)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UsageError(EXTRA) from None
    if not (importlib.util.find_spec("python_multipart") or importlib.util.find_spec("multipart")):
        raise UsageError(EXTRA)
    from ..serve import ServeConfig, create_app, load_service

    config = ServeConfig(args.max_batch, args.batch_window_ms, args.queue_size, args.max_upload_mb,
                         args.max_pixels, args.max_side)
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be in 1..65535 (got {args.port})")
    service = load_service(args.checkpoint, args.device, args.dtype, args.engine)
    if not is_loopback(args.host):
        print(f"vitkit serve: warning: listening on {args.host} makes the server reachable from other "
              "machines, without authentication", file=sys.stderr)
    engines = service.info.get("engines", {})
    endpoints = ", ".join(f"{name} ({engines.get(name, 'torch')})" for name in service.pipelines)
    print(f"vitkit serve: {service.what} on http://{args.host}:{args.port}/ (endpoints: {endpoints})",
          file=sys.stderr)
    uvicorn.run(create_app(service, config), host=args.host, port=args.port, log_level="info",
                server_header=False)
    return 0
