"""Optimizer construction: AdamW parameter groups without weight decay on norms, biases, position embeddings
and tokens; layer-wise learning-rate decay (BEiT / MAE fine-tuning) for any encoder with ``blocks.<i>.``
parameters.

Each group carries ``lr_scale``; the trainer sets ``group["lr"] = schedule(step) * group["lr_scale"]``.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
# Parameters that come before the first block: they share layer id 0 under layer decay.
_EMBEDDING_WORDS = ("patch_embed", "cls_token", "pos_embed", "mask_token", "dist_token", "reg_token")


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full parameter names that must not be decayed: 1-d tensors (norm weights, biases) and every name a
    (sub)module lists in its ``no_weight_decay()`` (tokens, position embeddings), prefixed by its path."""
    names = {n for n, p in model.named_parameters() if p.ndim <= 1}
    for prefix, module in model.named_modules():
        listed = getattr(module, "no_weight_decay", None)
        if callable(listed):
            names |= {f"{prefix}.{n}" if prefix else n for n in listed()}
    return names


def num_layers_for_decay(model: nn.Module) -> int:
    """Number of encoder blocks found in parameter names (``blocks.<i>.``)."""
    ids = [int(m.group(1)) for n, _ in model.named_parameters() if (m := _BLOCK.search(n))]
    return max(ids) + 1 if ids else 0


def layer_id(name: str, num_layers: int) -> int:
    """Layer index of a parameter for layer decay: 0 for embeddings and tokens, i + 1 for ``blocks.i``,
    num_layers + 1 for everything after the encoder (final norm, head)."""
    if m := _BLOCK.search(name):
        return int(m.group(1)) + 1
    if any(word in name for word in _EMBEDDING_WORDS):
        return 0
    return num_layers + 1


def layer_decay_scales(model: nn.Module, layer_decay: float) -> dict[str, float]:
    """Learning-rate multiplier per parameter name: ``layer_decay ** (num_layers + 1 − layer_id)``, so the
    head learns at the full rate and each block below it at `layer_decay` times the one above."""
    L = num_layers_for_decay(model)
    return {n: layer_decay ** (L + 1 - layer_id(n, L)) for n, _ in model.named_parameters()}


def build_param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None,
                       lr_scale: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """AdamW parameter groups.

    Args:
        model: the module whose trainable parameters (``requires_grad``) are grouped.
        weight_decay: applied to every parameter except those in `no_weight_decay_names(model)`.
        layer_decay: if given, multiply each parameter's lr by `layer_decay_scales(model, layer_decay)`.
        lr_scale: extra lr multipliers by parameter-name prefix, e.g. ``{"head": 10.0}``; the longest matching
            prefix wins.

    Returns:
        One group per distinct (weight decay, lr scale): dicts with ``params``, ``weight_decay``, ``lr_scale``
        and ``names`` (parameter names, for inspection).
    """
    skip = no_weight_decay_names(model)
    depth_scales = layer_decay_scales(model, layer_decay) if layer_decay is not None else {}
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = 0.0 if name in skip else weight_decay
        scale = depth_scales.get(name, 1.0) * _prefix_scale(name, lr_scale or {})
        group = groups.setdefault((decay, scale), {"params": [], "names": [], "weight_decay": decay,
                                                   "lr_scale": scale})
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def _prefix_scale(name: str, lr_scale: dict[str, float]) -> float:
    matches = [p for p in lr_scale if name == p or name.startswith(p + ".")]
    return lr_scale[max(matches, key=len)] if matches else 1.0


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.05,
                    betas: tuple[float, float] = (0.9, 0.999),
                    layer_decay: float | None = None, lr_scale: dict[str, float] | None = None,
                    fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over `build_param_groups`; every group starts at ``lr * lr_scale``. `fused`: one fused kernel
    (the trainer's choice on CUDA); otherwise the multi-tensor (``foreach``) implementation."""
    groups = build_param_groups(model, weight_decay, layer_decay, lr_scale)
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay, fused=bool(fused),
                             foreach=not fused)
