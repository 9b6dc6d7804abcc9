"""Converter registry: foreign checkpoint layouts ↔ vitkit configs and state dicts.

Two kinds of converters, each a pair of pure functions living in its own module under ``vitkit.convert``:

* HF transformers directories, keyed by the ``model_type`` string of their config.json::

      register_hf_converter(("vit",), to_vitkit, from_vitkit)
      to_vitkit(hf_config: dict, state_dict) -> (vitkit_config, state_dict)
      from_vitkit(vitkit_config, state_dict) -> (hf_config: dict, state_dict)   # optional (export)

  `from_vitkit` must raise `TypeError` for a vitkit config class it does not handle (so
  `vitkit.save_pretrained( ..., format="hf")` can find the exporter for a model) and `ValueError` with a clear
  message for a config of its class that the HF architecture cannot express.

* Bare state-dict files (timm layout, JAX .npz, official MAE checkpoints), keyed by a format name::

      register_state_dict_format("timm", detect, to_vitkit)
      detect(state_dict) -> bool
      to_vitkit(state_dict, overrides: dict) -> (vitkit_config, state_dict)

  Detectors of specific formats are tried first, then those registered with ``generic=True`` (the timm ViT
  layout, which other layouts extend), each group in registration order; the first match wins.
  `load_pretrained(path, format=NAME)` skips detection.

Adding a converter: write ``vitkit/convert/<name>.py`` calling the register functions at import, then add ONE
import line to `_import_converters` below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

StateDict = dict[str, Tensor]
HFToVitkit = Callable[[dict[str, Any], StateDict], tuple[Any, StateDict]]
HFFromVitkit = Callable[[Any, StateDict], tuple[dict[str, Any], StateDict]]
Detect = Callable[[StateDict], bool]
StateDictToVitkit = Callable[[StateDict, dict[str, Any]], tuple[Any, StateDict]]


@dataclass(frozen=True)
class HFConverter:
    model_type: str
    to_vitkit: HFToVitkit
    from_vitkit: HFFromVitkit | None


@dataclass(frozen=True)
class StateDictFormat:
    name: str
    detect: Detect
    to_vitkit: StateDictToVitkit
    generic: bool = False


_HF: dict[str, HFConverter] = {}
_FORMATS: dict[str, StateDictFormat] = {}


def register_hf_converter(model_types: tuple[str, ...], to_vitkit: HFToVitkit,
                          from_vitkit: HFFromVitkit | None = None) -> None:
    """Register converters for HF config.json ``model_type`` strings (e.g. ``("vit",)``)."""
    if isinstance(model_types, str):
        model_types = (model_types,)
    for model_type in model_types:
        _HF[model_type] = HFConverter(model_type, to_vitkit, from_vitkit)


def register_state_dict_format(name: str, detect: Detect, to_vitkit: StateDictToVitkit,
                               generic: bool = False) -> None:
    """Register a bare state-dict layout: `detect` recognises it, `to_vitkit` maps it. A `generic` layout is
    detected only after every specific one failed, whatever the import order."""
    _FORMATS[name] = StateDictFormat(name, detect, to_vitkit, generic)


def _import_converters() -> None:
    """Import every converter module once (each registers itself on import). One line per module."""
    from . import (
        hf_bit,  # noqa: F401  HF "bit" (BiT ResNetV2)
        hf_deit,  # noqa: F401  HF "deit" (distilled)
        hf_depth_anything,  # noqa: F401  HF "depth_anything" (DPT on DINOv2)
        hf_dinov2,  # noqa: F401  HF "dinov2", "dinov2_with_registers"
        hf_dinov3,  # noqa: F401  HF "dinov3_vit"
        hf_dpt,  # noqa: F401  HF "dpt" (DPT depth / segmentation, ViT and hybrid)
        hf_vit,  # noqa: F401  HF "vit"
        hf_vit_mae,  # noqa: F401  HF "vit_mae"
        jax_vit,  # noqa: F401  "jax" (google-research/vision_transformer .npz)
        mae_official,  # noqa: F401  "mae" (facebookresearch/mae checkpoints)
        timm_hybrid,  # noqa: F401  "timm_hybrid" (timm R50+ViT hybrids)
        timm_vit,  # noqa: F401  "timm"
    )


def hf_model_types() -> list[str]:
    """HF ``model_type`` strings vitkit can load."""
    _import_converters()
    return sorted(_HF)


def get_hf_converter(model_type: str) -> HFConverter:
    """The converter for an HF ``model_type``; KeyError lists the supported ones."""
    _import_converters()
    if model_type not in _HF:
        raise KeyError(f"no converter for HF model_type {model_type!r}; supported: {', '.join(sorted(_HF))}")
    return _HF[model_type]


def hf_exporters() -> list[HFConverter]:
    """Converters that can write HF directories, in registration order."""
    _import_converters()
    return [c for c in _HF.values() if c.from_vitkit is not None]


def state_dict_formats() -> list[str]:
    """Names of the registered state-dict layouts, in detection order."""
    return [fmt.name for fmt in _in_detection_order()]


def _in_detection_order() -> list[StateDictFormat]:
    _import_converters()
    formats = list(_FORMATS.values())
    return [f for f in formats if not f.generic] + [f for f in formats if f.generic]


def get_state_dict_format(name: str) -> StateDictFormat:
    _import_converters()
    if name not in _FORMATS:
        raise KeyError(f"unknown state-dict format {name!r}; known: {', '.join(_FORMATS)}")
    return _FORMATS[name]


def detect_state_dict_format(state_dict: StateDict) -> StateDictFormat | None:
    """The first registered format whose detector accepts `state_dict`, or None."""
    for fmt in _in_detection_order():
        if fmt.detect(state_dict):
            return fmt
    return None


__all__ = ["HFConverter", "StateDictFormat", "detect_state_dict_format", "get_hf_converter",
           "get_state_dict_format", "hf_exporters", "hf_model_types", "register_hf_converter",
           "register_state_dict_format", "state_dict_formats"]
