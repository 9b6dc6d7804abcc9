"""vitkit: Vision Transformers in PyTorch — ViT, hybrid, MAE, masked patch prediction and DPT.

The public names below are imported on first use (PEP 562), so ``import vitkit`` and the ``vitkit`` command
start without importing torch: the command imports it inside `vitkit.cli.main.main`, where a Ctrl-C during
start-up is a one-line "interrupted" (exit 130), not a traceback from the middle of ``import torch``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name → the module that defines it
_EXPORTS = {
    "PreprocessConfig": ".config", "replace_config": ".config",
    "Pipeline": ".infer.pipeline", "pipeline": ".infer.pipeline",
    "transforms_for": ".infer.preprocess",
    "ModelCard": ".model_card",
    "VisionTransformer": ".models", "ViTConfig": ".models", "build_model": ".models",
    "get_model_config": ".models", "list_models": ".models",
    "record_attention": ".viz.record",
    "create_model": ".weights", "load_checkpoint": ".weights", "load_pretrained": ".weights",
    "save_pretrained": ".weights",
}

__all__ = ["ModelCard", "Pipeline", "PreprocessConfig", "ViTConfig", "VisionTransformer", "build_model",
           "create_model", "get_model_config", "list_models", "load_checkpoint", "load_pretrained",
           "pipeline", "record_attention", "replace_config", "save_pretrained", "transforms_for"]
assert sorted(__all__) == sorted(_EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see
    from .config import PreprocessConfig, replace_config
    from .infer.pipeline import Pipeline, pipeline
    from .infer.preprocess import transforms_for
    from .model_card import ModelCard
    from .models import VisionTransformer, ViTConfig, build_model, get_model_config, list_models
    from .viz.record import record_attention
    from .weights import create_model, load_checkpoint, load_pretrained, save_pretrained


def __getattr__(name: str) -> Any:
    """A public name (imported from its module once, then cached here), or a subpackage
    (``vitkit.models``)."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise  # the submodule exists but something it imports does not
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
