"""`vitkit serve`: a local web page and JSON API over a checkpoint's pipelines, with micro-batching.

    from vitkit.serve import ServeConfig, create_app, load_service
    app = create_app(load_service("runs/cifar"), ServeConfig(max_batch=8))

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart).
"""

from .app import ServeConfig, create_app
from .service import Service, load_service

__all__ = ["ServeConfig", "Service", "create_app", "load_service"]
