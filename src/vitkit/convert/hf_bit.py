"""HF transformers BiT (model_type "bit": BitModel, BitBackbone, BitForImageClassification) ↔ vitkit ResNetV2.

HF key layout (``bit.`` prefix under BitBackbone / BitForImageClassification; DPT-Hybrid nests the same under
``dpt.embeddings.backbone.bit.``)::

    embedder.convolution · embedder.norm (bottleneck only)
    encoder.stages.i.layers.j.{conv1, norm1, conv2, norm2, conv3, norm3, downsample.conv, downsample.norm}
    norm (preactivation only) · classifier.1 (BitForImageClassification)

vitkit's ResNetV2 uses timm's names: stem.conv · stem.norm · stages.i.blocks.j.* · norm · head.

Config: HF `global_padding="SAME"` with `embedding_dynamic_padding=True` (the ViT-hybrid / DPT-hybrid setting)
is vitkit's padding "same"; `global_padding=None` with `embedding_dynamic_padding=False` (BiT's default) is
"symmetric". Other combinations, dilated stages (`output_stride` below the natural stride) and activations
other than ReLU raise `ValueError`.

The config and state-dict halves are public pure functions so the DPT-Hybrid converter can reuse them with its
own prefix.
"""

from __future__ import annotations

import re
from typing import Any

from torch import Tensor

from ..models.resnetv2 import ResNetV2Config, make_div
from . import register_hf_converter

_LAYER_TYPES = {"bottleneck": "bottleneck", "preactivation": "preact"}
# (global_padding, embedding_dynamic_padding) → vitkit padding
_PADDINGS = {("SAME", True): "same", (None, False): "symmetric"}

# HF name pattern → vitkit name (applied after the prefix is stripped); the reverse is derived below
_TO_VITKIT = [
    (r"^embedder\.convolution\.", "stem.conv."),
    (r"^embedder\.norm\.", "stem.norm."),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.", r"stages.\1.blocks.\2."),
    (r"^norm\.", "norm."),
]
_TO_HF = [
    (r"^stem\.conv\.", "embedder.convolution."),
    (r"^stem\.norm\.", "embedder.norm."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.", r"encoder.stages.\1.layers.\2."),
    (r"^norm\.", "norm."),
]


def _rename(key: str, rules: list[tuple[str, str]]) -> str | None:
    for pattern, repl in rules:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    return None


def bit_config_to_resnetv2(bit_config: dict[str, Any], num_classes: int = 0) -> ResNetV2Config:
    """HF BitConfig (as a config.json dict) → ResNetV2Config.

    Raises:
        ValueError: a setting vitkit's ResNetV2 does not implement (named in the message).
    """
    layer_type = bit_config.get("layer_type", "preactivation")
    if layer_type not in _LAYER_TYPES:
        raise ValueError(f"HF Bit layer_type={layer_type!r} is not supported; known: {sorted(_LAYER_TYPES)}")
    act = bit_config.get("hidden_act", "relu")
    if act != "relu":
        raise ValueError(f"HF Bit hidden_act={act!r} is not supported (vitkit's ResNetV2 uses ReLU)")
    global_padding = bit_config.get("global_padding")
    global_padding = global_padding.upper() if isinstance(global_padding, str) else None
    dynamic = bool(bit_config.get("embedding_dynamic_padding", False))
    if (global_padding, dynamic) not in _PADDINGS:
        raise ValueError(f"HF Bit global_padding={global_padding!r} with "
                         f"embedding_dynamic_padding={dynamic} is not supported; vitkit reads ('SAME', True) "
                         "as padding='same' and (None, False) as 'symmetric'")
    depths = tuple(int(d) for d in bit_config.get("depths", (3, 4, 6, 3)))
    natural_stride = 4 * 2 ** (len(depths) - 1)
    if bit_config.get("output_stride", 32) < natural_stride:
        raise ValueError(f"HF Bit output_stride={bit_config['output_stride']} below the natural stride "
                         f"{natural_stride} needs dilated stages, which vitkit's ResNetV2 does not implement")
    width = int(bit_config.get("width_factor", 1))
    hidden_sizes = bit_config.get("hidden_sizes", (256, 512, 1024, 2048))
    return ResNetV2Config(
        layers=depths,
        channels=tuple(make_div(h * width) for h in hidden_sizes),
        stem_width=int(bit_config.get("embedding_size", 64)),
        block=_LAYER_TYPES[layer_type],
        padding=_PADDINGS[(global_padding, dynamic)],
        in_chans=int(bit_config.get("num_channels", 3)),
        num_groups=int(bit_config.get("num_groups", 32)),
        drop_path_rate=float(bit_config.get("drop_path_rate", 0.0)),
        num_classes=num_classes,
    )


def resnetv2_config_to_bit(cfg: ResNetV2Config) -> dict[str, Any]:
    """ResNetV2Config → HF BitConfig fields (a config.json dict with model_type "bit").

    Raises:
        ValueError: epsilons or a bottleneck ratio other than HF Bit's fixed ones (1e-8, 1e-5, 0.25).
    """
    if (cfg.ws_eps, cfg.gn_eps, cfg.bottle_ratio) != (1e-8, 1e-5, 0.25):
        raise ValueError("HF Bit fixes ws_eps=1e-8, gn_eps=1e-5 and bottle_ratio=0.25; got "
                         f"{cfg.ws_eps}, {cfg.gn_eps}, {cfg.bottle_ratio}")
    same = cfg.padding == "same"
    n = len(cfg.layers)
    return {
        "model_type": "bit",
        "num_channels": cfg.in_chans,
        "embedding_size": cfg.stem_width,
        "hidden_sizes": list(cfg.channels),
        "depths": list(cfg.layers),
        "layer_type": "preactivation" if cfg.block == "preact" else "bottleneck",
        "hidden_act": "relu",
        "global_padding": "SAME" if same else None,
        "embedding_dynamic_padding": same,
        "num_groups": cfg.num_groups,
        "drop_path_rate": cfg.drop_path_rate,
        "output_stride": 32 if n <= 4 else 4 * 2 ** (n - 1),
        "width_factor": 1,
        "out_features": [f"stage{i}" for i in range(1, n + 1)],
    }


def bit_state_dict_to_resnetv2(state_dict: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """HF Bit weights under `prefix` (e.g. "bit." or "dpt.embeddings.backbone.bit.") → ResNetV2 keys.

    Keys outside `prefix` are skipped; keys inside it that are not Bit weights raise `KeyError`."""
    out = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        new = _rename(key[len(prefix):], _TO_VITKIT)
        if new is None:
            raise KeyError(f"unexpected HF Bit weight {key!r}")
        out[new] = value
    return out


def resnetv2_state_dict_to_bit(state_dict: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """ResNetV2 trunk keys → HF Bit keys, each prefixed with `prefix` (head.* are left out)."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("head."):
            continue
        new = _rename(key, _TO_HF)
        if new is None:
            raise KeyError(f"{key!r} is not a ResNetV2 weight")
        out[prefix + new] = value
    return out


def bit_to_vitkit(hf_config: dict[str, Any], state_dict: dict[str, Tensor]) -> tuple[ResNetV2Config,
                                                                                      dict[str, Tensor]]:
    """An HF "bit" directory (BitModel, BitBackbone or BitForImageClassification) → ResNetV2 config + weights.

    A BitForImageClassification loads with its head (num_classes = its label count); BitModel and BitBackbone
    load as a trunk (num_classes = 0; `forward` returns pooled features, `forward_features` HF's
    last_hidden_state, `forward_stages` BitBackbone's feature maps)."""
    prefix = "bit." if any(k.startswith("bit.") for k in state_dict) else ""
    head = state_dict.get("classifier.1.weight")
    cfg = bit_config_to_resnetv2(hf_config, num_classes=0 if head is None else int(head.shape[0]))
    sd = bit_state_dict_to_resnetv2(state_dict, prefix)
    if head is not None:
        sd["head.weight"], sd["head.bias"] = head, state_dict["classifier.1.bias"]
    return cfg, sd


def bit_from_vitkit(cfg: Any, state_dict: dict[str, Tensor]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """ResNetV2 → an HF BitModel directory (BitForImageClassification when the model has a head).

    Raises:
        TypeError: `cfg` is not a ResNetV2Config (another exporter's model).
    """
    if not isinstance(cfg, ResNetV2Config):
        raise TypeError(f"the Bit exporter handles ResNetV2Config, not {type(cfg).__name__}")
    hf_config = resnetv2_config_to_bit(cfg)
    if cfg.num_classes > 0:
        hf_config["architectures"] = ["BitForImageClassification"]
        hf_config["num_labels"] = cfg.num_classes
        head = {"classifier.1.weight": state_dict["head.weight"],
                "classifier.1.bias": state_dict["head.bias"]}
        return hf_config, resnetv2_state_dict_to_bit(state_dict, prefix="bit.") | head
    hf_config["architectures"] = ["BitModel"]
    return hf_config, resnetv2_state_dict_to_bit(state_dict)


register_hf_converter(("bit",), bit_to_vitkit, bit_from_vitkit)
