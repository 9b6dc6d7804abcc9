"""Model registry: model types (config class → builder) and named presets (name → config).

`create_model("vit_base_patch16_224", num_classes=10)` looks a preset up, applies overrides with type checks
(`vitkit.config.replace_config`) and builds it. Every model family registers its type and presets here when
its module is imported (`vitkit.models` imports them all).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..config import config_from_dict, config_to_dict, replace_config


@dataclass(frozen=True)
class ModelType:
    name: str
    config_cls: type
    build: Callable[[Any], nn.Module]


_TYPES: dict[str, ModelType] = {}
_PRESETS: dict[str, tuple[str, Any]] = {}  # preset name → (type name, config)


def register_model_type(name: str, config_cls: type, build: Callable[[Any], nn.Module]) -> None:
    """Declare a model family: `build(config)` makes a module from a `config_cls` instance."""
    _TYPES[name] = ModelType(name, config_cls, build)


def register_model(name: str, config: Any) -> None:
    """Register a preset: a name for a config instance of a registered model type."""
    type_name = model_type_of(config)
    if name in _PRESETS:
        raise ValueError(f"model {name!r} is already registered")
    _PRESETS[name] = (type_name, config)


def model_type_of(config: Any) -> str:
    for t in _TYPES.values():
        if type(config) is t.config_cls:
            return t.name
    raise TypeError(f"{type(config).__name__} is not a registered model config")


def list_models(pattern: str = "*") -> list[str]:
    """Sorted preset names matching a shell-style `pattern`."""
    return sorted(n for n in _PRESETS if fnmatch.fnmatch(n, pattern))


def get_model_config(name: str, **overrides: Any) -> Any:
    """The config of preset `name` with `overrides` applied (not built)."""
    if name not in _PRESETS:
        close = difflib.get_close_matches(name, _PRESETS, n=5, cutoff=0.5)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise KeyError(f"unknown model {name!r}{hint}. "
                       "`vitkit models` or vitkit.list_models() lists them all")
    _, config = _PRESETS[name]
    return replace_config(config, overrides)


def build_model(config: Any) -> nn.Module:
    """Build a module from a config instance of any registered model type."""
    return _TYPES[model_type_of(config)].build(config)


def create_model(name: str, features_only: bool = False, out_indices: Sequence[int] | None = None,
                 **overrides: Any) -> nn.Module:
    """Build preset `name`, with config fields overridden by keyword (nested: ``encoder={"dim": 64}``).

    With `features_only`, a ViT-family preset (plain, hybrid, DINOv2) is built without its head and wrapped
    in a `vitkit.models.features.FeatureBackbone`: forward gives one map (B, C_i, H / s_i, W / s_i) per entry
    of `out_indices` (block indices; a hybrid numbers its ResNet stages first, then its blocks; None: four
    levels, DPT's taps) and `feature_info` gives each map's channels and stride.

    Raises:
        KeyError: unknown name (close matches listed) or unknown config field.
        TypeError: an override of the wrong type, or `features_only` on a model that is not a ViT.
    """
    if not features_only:
        if out_indices is not None:
            raise ValueError("out_indices needs features_only=True")
        return build_model(get_model_config(name, **overrides))
    from .features import FeatureBackbone  # features imports the ViT, whose module imports this registry

    model = build_model(get_model_config(name, **overrides))
    if hasattr(model, "reset_classifier") and "num_classes" not in overrides:
        model.reset_classifier(0)  # a backbone needs no head
    return FeatureBackbone(model, out_indices)


def config_to_json_dict(config: Any) -> dict[str, Any]:
    """{"model_type": ..., **fields}: the form saved in config.json."""
    return {"model_type": model_type_of(config), **config_to_dict(config)}


def config_from_json_dict(data: dict[str, Any]) -> Any:
    """Inverse of `config_to_json_dict` (a ``vitkit_version`` key, written by save_pretrained, is ignored)."""
    data = dict(data)
    data.pop("vitkit_version", None)
    type_name = data.pop("model_type", None)
    if type_name not in _TYPES:
        raise ValueError(f"config.json names model_type {type_name!r}; known: {', '.join(sorted(_TYPES))}")
    return config_from_dict(_TYPES[type_name].config_cls, data)


def with_fields(config: Any, **changes: Any) -> Any:
    """dataclasses.replace, for building preset tables."""
    return dataclasses.replace(config, **changes)
