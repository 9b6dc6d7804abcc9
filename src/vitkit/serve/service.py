"""The model a server serves: one pipeline per endpoint the checkpoint's kind answers, all sharing one
model, and the facts the page shows about it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..infer.images import describe_model, load_model_for, model_kind
from .endpoints import ENDPOINTS, ENDPOINTS_BY_KIND

log = logging.getLogger(__name__)


@dataclass
class Service:
    """The model behind the server: one pipeline per endpoint it answers (all sharing one model), what
    ``GET /v1/model`` shows, and the encoder's (depth, heads) for checking attention options."""

    pipelines: dict[str, Callable[..., Any]]
    info: dict[str, Any]
    encoder_shape: tuple[int, int] | None = None
    what: str = "this model"


def load_service(checkpoint: str | Path, device: str = "auto", dtype: str | None = None) -> Service:
    """The pipelines for every endpoint the checkpoint's model answers (`endpoints.ENDPOINTS_BY_KIND`).

    Raises:
        UsageError: the checkpoint holds a model the server cannot show (the message says what it is).
    """
    raise NotImplementedError  # wired to vitkit.pipeline once it lands
