"""`vitkit serve`'s web app: a JSON API over the model's pipelines, and a page that uses it.

    app = create_app(load_service("runs/cifar"), ServeConfig(max_batch=8))
    # uvicorn.run(app, host="127.0.0.1", port=8000)

Routes: ``GET /`` the page, ``GET /static/<file>`` its script and style, ``GET /healthz``, ``GET /v1/model``
(what the model is and which endpoints it answers), ``POST /v1/<endpoint>`` (`endpoints.ENDPOINTS`; an
endpoint the model does not answer is a 404 that lists the ones it does). Statuses: 413 body too large,
415 content type, 422 bad input (a message naming the field), 503 queue full (with Retry-After); a failure
inside the server is a 500 whose body says nothing about the server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from ..errors import UsageError
from .batching import MicroBatcher, QueueFull
from .endpoints import ENDPOINTS, AttentionOptions, Options
from .guard import GuardMiddleware
from .inputs import DEFAULT_MAX_PIXELS, BadInput, decode_upload, fit_side, read_request
from .service import Service

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}


@dataclass
class ServeConfig:
    """How the server batches and what it accepts (`vitkit serve --help` documents each)."""

    max_batch: int = 8
    batch_window_ms: float = 5.0
    queue_size: int = 64
    max_upload_mb: float = 10.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_side: int = 1024

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.batch_window_ms < 0 or self.queue_size < 1:
            raise ValueError(f"--max-batch and --queue-size must be ≥ 1 and --batch-window-ms ≥ 0 (got "
                             f"{self.max_batch}, {self.batch_window_ms:g}, {self.queue_size})")
        if self.max_upload_mb <= 0 or self.max_pixels < 1 or self.max_side < 1:
            raise ValueError(f"--max-upload-mb, --max-pixels and --max-side must be > 0 (got "
                             f"{self.max_upload_mb:g}, {self.max_pixels}, {self.max_side})")


def create_app(service: Service, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app serving `service` (see the module docstring for its routes)."""
    config = config or ServeConfig()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.batcher = MicroBatcher(config.max_batch, config.batch_window_ms / 1000, config.queue_size)
        try:
            yield
        finally:
            await app.state.batcher.close()

    app = FastAPI(title="vitkit", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(GuardMiddleware, max_body_bytes=round(config.max_upload_mb * 2**20))
    _add_error_handlers(app)
    _add_page_routes(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "endpoints": list(service.pipelines)}

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        return {**service.info, "endpoints": list(service.pipelines)}

    @app.post("/v1/{endpoint}")
    async def predict(endpoint: str, request: Request) -> dict[str, Any]:
        return await answer(endpoint, request, service, config)

    return app


async def answer(endpoint: str, request: Request, service: Service, config: ServeConfig) -> dict[str, Any]:
    """``POST /v1/<endpoint>``: read and check the request, decode the image on a thread, wait for its place
    in a batch, encode the result on a thread."""
    start = time.perf_counter()
    if endpoint not in service.pipelines:
        known = "" if endpoint in ENDPOINTS else f"there is no endpoint /v1/{endpoint}; "
        raise HTTPException(404, f"{known}the model served is {service.what}; it answers: "
                                 f"{', '.join(service.pipelines)}")
    spec, pipe = ENDPOINTS[endpoint], service.pipelines[endpoint]
    data, fields = await read_request(request)
    options = check_options(spec.options, fields, service)
    preprocess = getattr(pipe, "preprocess", None)
    load = preprocess.load if spec.decode == "storage" and preprocess is not None else None
    image = await asyncio.to_thread(decode_upload, data, config.max_pixels, load)
    extra = {}
    if load is None and max(image.size) > config.max_side:  # answered at its own size: bound it
        extra = {"resized_from": [image.height, image.width]}
        image = await asyncio.to_thread(fit_side, image, config.max_side)
    key = (endpoint, tuple(sorted(options.model_dump().items())))
    run = partial(_run, pipe, options, spec.call_per_image)
    try:
        result, batch = await request.app.state.batcher.submit(key, run, image)
    except UsageError as e:  # the pipeline refused the options (the same for the whole batch)
        raise BadInput(str(e)) from None
    payload = await asyncio.to_thread(spec.to_json, result)
    batch = 1 if spec.call_per_image else batch  # how many images the model call that answered it held
    return {**payload, **extra, "options": options.model_dump(), "batch_size": batch,
            "latency_ms": round((time.perf_counter() - start) * 1000, 3)}


def _run(pipe: Callable[..., Any], options: Options, per_image: bool, images: list[Any]) -> list[Any]:
    """One pipeline call on a batch of images, or one per image (on the batcher's worker thread)."""
    kwargs = options.model_dump(exclude_none=True)
    if per_image:
        return [pipe([image], **kwargs)[0] for image in images]
    return pipe(images, **kwargs)


def check_options(kind: type[Options], fields: dict[str, Any], service: Service) -> Options:
    """The request's option fields as `kind`, range-checked against the model.

    Raises:
        BadInput: an unknown field or a bad value (the message names it).
    """
    try:
        options = kind.model_validate(fields)
    except ValidationError as e:
        raise BadInput("; ".join(_describe_error(err) for err in e.errors())) from None
    if isinstance(options, AttentionOptions) and options.method == "rollout" and (
            options.head is not None or options.layer != -1):
        raise BadInput("layer and head pick one layer's attention: give them with method=cls")
    if isinstance(options, AttentionOptions) and service.encoder_shape:
        depth, heads = service.encoder_shape
        if not -depth <= options.layer < depth:
            raise BadInput(f"layer: {options.layer} is out of range; the encoder has {depth} blocks "
                           f"({-depth}..{depth - 1}, negative counts from the end)")
        if options.head is not None and options.head >= heads:
            raise BadInput(f"head: {options.head} is out of range; the encoder has {heads} heads "
                           f"(0..{heads - 1})")
    return options


def _describe_error(err: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in err.get("loc", ())) or "options"
    if err.get("type") == "extra_forbidden":
        return f"{where}: unknown option"
    return f"{where}: {err.get('msg', 'invalid value')}"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BadInput)
    async def bad_input(request: Request, e: BadInput) -> JSONResponse:
        return _error(e.status, str(e))

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, e: QueueFull) -> JSONResponse:
        return _error(503, str(e), {"Retry-After": str(e.retry_after)})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        return _error(422, "; ".join(_describe_error(err) for err in e.errors()))

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception) -> JSONResponse:
        log.exception("request %s %s failed", request.method, request.url.path)
        return _error(500, "internal server error (the server's log has the details)")


def _add_page_routes(app: FastAPI) -> None:
    """The page and its two files, from a fixed list: no request path ever reaches the file system."""
    files = {name: (STATIC / name).read_bytes() for name in STATIC_FILES}
    index = (STATIC / "index.html").read_bytes()

    @app.get("/")
    async def page() -> Response:
        return Response(index, media_type="text/html; charset=utf-8", headers={"cache-control": "no-cache"})

    @app.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in files:
            raise HTTPException(404, "not found")
        return Response(files[name], media_type=STATIC_FILES[name], headers={"cache-control": "no-cache"})
