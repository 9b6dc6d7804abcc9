"""Pieces every HF transformers ViT-family converter shares (ViT, DeiT, DINOv2, DINOv3): config fields read
the same way, and the per-block key moves, q/k/v fused into vitkit's one qkv projection and split back.

Not a converter itself (registers nothing).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

StateDict = dict[str, Tensor]


def hf_patch_size(value: Any) -> int:
    """HF's patch_size (an int or a square [p, p]) → p; ValueError for non-square patches."""
    if isinstance(value, int):
        return value
    if value[0] != value[1]:
        raise ValueError(f"non-square patches {value} are not supported")
    return int(value[0])


def hf_labels(names: tuple[str, ...], num_classes: int) -> dict[str, Any]:
    """id2label / label2id for an exported config (HF's placeholders when there are no names)."""
    labels = names or tuple(f"LABEL_{i}" for i in range(num_classes))
    return {"id2label": {str(i): n for i, n in enumerate(labels)},
            "label2id": {n: i for i, n in enumerate(labels)}}


def strip_prefix(sd: StateDict, prefix: str) -> StateDict:
    """Remove a base-model prefix ("vit.", "dinov2.") where keys carry it; others pass as they are."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}


def move(sd: StateDict, out: StateDict, names: dict[str, str], src: str, dst: str,
         params: tuple[str, ...] = ("weight", "bias")) -> None:
    """Pop f"{src}{theirs}.{p}" from `sd` into out[f"{dst}{ours}.{p}"] for every (ours → theirs) in `names`
    and p in `params` that `sd` holds."""
    for ours, theirs in names.items():
        for p in params:
            if f"{src}{theirs}.{p}" in sd:
                out[f"{dst}{ours}.{p}"] = sd.pop(f"{src}{theirs}.{p}")


def fuse_qkv(sd: StateDict, out: StateDict, src: str, dst: str, names: tuple[str, str, str]) -> None:
    """Pop q, k, v projections f"{src}{name}.{p}" and store them stacked as out[f"{dst}qkv.{p}"].

    A missing bias among present ones (DINOv3's key projection has none) is filled with zeros: a bias on
    the keys alone is the zero vector in vitkit's fused projection."""
    q, k, v = (sd.pop(f"{src}{n}.weight") for n in names)
    out[f"{dst}qkv.weight"] = torch.cat([q, k, v], dim=0)  # 3 × (D, D) → (3·D, D), q k v order
    biases = [sd.pop(f"{src}{n}.bias", None) for n in names]
    if any(b is not None for b in biases):
        biases = [torch.zeros(w.shape[0], dtype=w.dtype) if b is None else b
                  for b, w in zip(biases, (q, k, v), strict=True)]
        out[f"{dst}qkv.bias"] = torch.cat(biases, dim=0)


def split_qkv(sd: StateDict, out: StateDict, src: str, dst: str, names: tuple[str, str, str]) -> None:
    """Inverse of `fuse_qkv`: sd[f"{src}qkv.{p}"] (3·D, ...) → out[f"{dst}{name}.{p}"], 3 × (D, ...)."""
    for p in ("weight", "bias"):
        if f"{src}qkv.{p}" in sd:
            for name, t in zip(names, sd[f"{src}qkv.{p}"].chunk(3, dim=0), strict=True):
                out[f"{dst}{name}.{p}"] = t


def refuse_unless_exportable(family: str, problems: list[str]) -> None:
    """ValueError naming every part HF's `family` cannot express, when there is any."""
    if problems:
        raise ValueError(f"HF transformers' {family} cannot express this model: " + "; ".join(problems)
                         + ". Save it in vitkit format instead (format='vitkit').")


def hf_cls_and_positions(sd: StateDict) -> StateDict:
    """vitkit's [CLS] and position embeddings → HF's ``embeddings.{cls_token, position_embeddings}``, the
    [CLS] position first (HF ViT, DINOv2)."""
    return {"embeddings.cls_token": sd["cls_token"],
            # (1, 1, D) + (1, N, D) → (1, 1 + N, D)
            "embeddings.position_embeddings": torch.cat([sd["cls_pos_embed"], sd["pos_embed.weight"]], dim=1)}


def rename_keys(sd: StateDict, rules: list[tuple[str, str]]) -> StateDict:
    """Every key with each (regex, replacement) of `rules` applied in turn (e.g. transformers ≥ 5's in-memory
    module names → the saved ones)."""
    out = {}
    for key, value in sd.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out
