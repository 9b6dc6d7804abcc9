"""The model a server serves: one pipeline per endpoint the checkpoint's kind answers, all sharing one
model, and the facts the page shows about it. The classify endpoint can run on onnxruntime
(`classify_engine`); the others need what only torch gives (attention weights, masking, dense heads) and run
on torch."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import config_to_dict
from ..engine.distributed import resolve_device
from ..errors import UsageError, require
from ..export.onnx import require_onnx_packages
from ..infer.images import describe_model, load_model_for, model_kind
from ..infer.preprocess import vision_encoder
from .endpoints import ENDPOINTS, ENDPOINTS_BY_KIND

log = logging.getLogger(__name__)


@dataclass
class Service:
    """The model behind the server: one pipeline per endpoint it answers (all sharing one model), what
    ``GET /v1/model`` shows, and the encoder's (depth, heads) for checking attention options."""

    pipelines: dict[str, Callable[..., Any]]
    info: dict[str, Any]
    encoder_shape: tuple[int, int] | None = None
    what: str = "a model"


ENGINE_CHOICES = ("auto", "torch", "onnx")
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def classify_engine(engine: str, device: str, dtype: str | None) -> str:
    """The engine of the classify endpoint: `engine`, or for auto onnx when the onnx packages are installed
    and the model runs in float32 on the CPU (where onnxruntime is the faster), else torch.

    Raises:
        UsageError: onnx asked without the onnx packages or with a dtype other than float32 (checked here:
            `load_service` leaves out an endpoint whose pipeline refuses the model, which is not the case).
    """
    require(engine in ENGINE_CHOICES, f"engine {engine!r} is not one of {', '.join(ENGINE_CHOICES)}")
    if engine == "onnx":
        require(dtype in (None, "float32"), f"--engine onnx runs float32 only, not {dtype}; "
                "use --engine torch")
        require_onnx_packages(*ONNX_PACKAGES)
    if engine != "auto":
        return engine
    installed = all(importlib.util.find_spec(name) is not None for name in ONNX_PACKAGES)
    on_cpu = resolve_device(device).type == "cpu" and dtype in (None, "float32")
    return "onnx" if installed and on_cpu else "torch"


def load_service(checkpoint: str | Path, device: str = "auto", dtype: str | None = None,
                 engine: str = "auto") -> Service:
    """Load the checkpoint's model once and build a pipeline on it for every endpoint its kind answers
    (`endpoints.ENDPOINTS_BY_KIND`); classify runs on `classify_engine(engine, ...)`, the others on torch.

    Raises:
        UsageError: the checkpoint holds a model the server cannot show (the message says what it is).
    """
    from ..infer.pipeline import pipeline

    model, path = load_model_for(checkpoint, tuple(ENDPOINTS_BY_KIND), "a model vitkit serve can show",
                                 resolve_device(device))
    classify = classify_engine(engine, device, dtype)
    pipelines = {}
    for name in ENDPOINTS_BY_KIND[model_kind(model)]:
        task = ENDPOINTS[name].task
        chosen = classify if task == "image-classification" else "torch"
        try:
            pipelines[name] = pipeline(task, model, device=device, dtype=dtype, path=path, engine=chosen)
        except UsageError as e:  # this model cannot do the task after all
            log.info("no /v1/%s: %s", name, e)
    if not pipelines:
        raise UsageError(f"{checkpoint} holds {describe_model(model)[0]}, for which the server has no "
                         "endpoint; serve a classifier, an MAE or a DPT")
    return service_of(pipelines)


def service_of(pipelines: dict[str, Any]) -> Service:
    """A `Service` over pipelines that share one model: ``GET /v1/model`` shows the first one's
    `describe()`, the encoder's depth and heads, and the engine of each endpoint (``engines``)."""
    first = next(iter(pipelines.values()))
    encoder = vision_encoder(first.model)
    depth, heads = len(encoder.blocks), encoder.config.num_heads
    engines = {name: getattr(pipe, "engine", "torch") for name, pipe in pipelines.items()}
    info = {**first.describe(), "config": config_to_dict(first.model.config),
            "encoder": {"depth": depth, "num_heads": heads}, "engines": engines}
    return Service(pipelines, info, (depth, heads), info.get("what", "a model"))
