"""timm model directories (``timm/<architecture>.<tag>`` Hub repos, `timm.models.push_to_hf_hub`) → vitkit.

Such a directory holds the weights in the timm layout (``model.safetensors`` or ``pytorch_model.bin``) and a
config.json naming the architecture instead of describing it::

    {"architecture": "vit_base_patch16_224", "num_classes": 1000, "global_pool": "token",
     "label_names": [...],                                         (some repos; or inside pretrained_cfg)
     "pretrained_cfg": {"input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 0.9,
                        "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], ...}}

The architecture maps to the vitkit preset of the same name (or the one ``model=NAME`` names), which supplies
what the weights do not store — the number of heads; the grid comes from ``input_size``. The state-dict layout
converter (timm ViT, hybrid, MAE encoder) reads everything else off the shapes, and width, depth, patch, MLP
ratio and channels must then agree with the preset, so heads are never guessed. An architecture with no vitkit
preset is refused with what to pass instead.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..config import replace_config
from ..errors import UsageError
from ..models.registry import get_model_config, list_models
from ..models.vit import ViTConfig
from . import detect_state_dict_format

_POOL = {"token": "cls", "avg": "avg"}  # timm global_pool → vitkit pool ("" or absent: from the weights)
_CHECKED = ("dim", "depth", "patch_size", "mlp_ratio", "in_chans")


def is_timm_config(data: dict[str, Any]) -> bool:
    """True for a timm model directory's config.json."""
    return "architecture" in data and "model_type" not in data


def timm_dir_to_vitkit(data: dict[str, Any], state: dict[str, Tensor],
                       preset: str | None = None) -> tuple[ViTConfig, dict[str, Tensor]]:
    """(config, vitkit state dict) of a timm directory's config.json `data` and timm-layout `state`.

    Raises:
        UsageError: an architecture without a vitkit preset (and no `preset` given), weights in no timm ViT
            layout, or weights whose shapes disagree with the preset.
    """
    arch = str(data["architecture"])
    name = preset or arch
    if name not in list_models():
        raise UsageError(f"timm architecture {arch!r} is not a vitkit preset; pass model=NAME with the "
                         "vitkit preset of the same architecture (`vitkit models`), or load the weights file "
                         "alone with num_heads=N")
    reference = get_model_config(name)
    layout = detect_state_dict_format(state)
    if not isinstance(reference, ViTConfig) or layout is None:
        raise UsageError(f"timm architecture {arch!r}: the weights are not a timm ViT that vitkit reads")
    pretrained_cfg = data.get("pretrained_cfg") or {}
    size = tuple(pretrained_cfg.get("input_size", (0, *reference.image_size)))[1:]
    cfg, state = layout.to_vitkit(state, {"num_heads": reference.num_heads, "image_size": size})
    differ = [f"{k} {getattr(cfg, k)} (preset {getattr(reference, k)})" for k in _CHECKED
              if getattr(cfg, k) != getattr(reference, k)]
    if differ:
        raise UsageError(f"timm architecture {arch!r}: the weights do not match vitkit's {name}: "
                         f"{', '.join(differ)}; pass model=NAME with the matching preset")
    return replace_config(cfg, _pooling(data, arch) | _preprocessing(data, pretrained_cfg, cfg)), state


def _pooling(data: dict[str, Any], arch: str) -> dict[str, Any]:
    pool = data.get("global_pool") or ""
    if pool and pool not in _POOL:
        raise UsageError(f"timm architecture {arch!r}: global_pool {pool!r} has no vitkit equivalent "
                         f"(vitkit pools with {', '.join(_POOL)})")
    return {"pool": _POOL[pool]} if pool else {}


def _preprocessing(data: dict[str, Any], pretrained_cfg: dict[str, Any], cfg: ViTConfig) -> dict[str, Any]:
    """preprocess.* changes from the pretrained_cfg (mean, std, interpolation, crop_pct, label names)."""
    changes: dict[str, Any] = {}
    if "mean" in pretrained_cfg and "std" in pretrained_cfg:
        changes["preprocess.mean"] = tuple(float(v) for v in pretrained_cfg["mean"])
        changes["preprocess.std"] = tuple(float(v) for v in pretrained_cfg["std"])
    if pretrained_cfg.get("interpolation") in ("bicubic", "bilinear", "nearest"):
        changes["preprocess.interpolation"] = pretrained_cfg["interpolation"]
    if pretrained_cfg.get("crop_pct"):
        changes["preprocess.crop_pct"] = float(pretrained_cfg["crop_pct"])
    labels = data.get("label_names") or pretrained_cfg.get("label_names") or ()
    if cfg.num_classes and len(labels) == cfg.num_classes:
        changes["preprocess.label_names"] = tuple(str(n) for n in labels)
    return changes
