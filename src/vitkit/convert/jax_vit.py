"""The original JAX ``.npz`` checkpoints of google-research/vision_transformer → vitkit VisionTransformer.

Layout (optionally under an ``opt/target/`` prefix), with Flax kernels stored input-first::

    embedding/kernel (p, p, C, D) HWIO · embedding/bias · cls (1, 1, D) (absent for GAP models)
    Transformer/posembed_input/pos_embedding (1, 1 + N, D) · Transformer/encoder_norm/{scale, bias}
    Transformer/encoderblock_i/LayerNorm_0 (pre-attention) · LayerNorm_2 (pre-MLP)
        MultiHeadDotProductAttention_1/{query, key, value}/kernel (D, H, d), bias (H, d)
        MultiHeadDotProductAttention_1/out/kernel (H, d, D), bias (D,)
        MlpBlock_3/Dense_0/kernel (D, hidden) · MlpBlock_3/Dense_1/kernel (hidden, D)
    pre_logits/kernel (D, R) (21k models) · head/kernel (R or D, classes)

The mapping goes to the timm layout (the heads come from the query kernel's shape) and on through
`vitkit.convert.timm_vit`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..models.vit import ViTConfig
from . import register_state_dict_format
from .timm_vit import timm_to_vitkit

_PREFIXES = ("", "opt/target/")


def _prefix(sd: dict[str, Tensor]) -> str | None:
    for prefix in _PREFIXES:
        if f"{prefix}embedding/kernel" in sd and f"{prefix}Transformer/posembed_input/pos_embedding" in sd:
            return prefix
    return None


def is_jax_vit(state_dict: dict[str, Tensor]) -> bool:
    return _prefix(state_dict) is not None


def _dense(kernel: Tensor) -> Tensor:
    return kernel.T.contiguous()  # Flax (in, out) → torch (out, in)


def jax_to_timm(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], int]:
    """JAX .npz arrays → (timm-layout state dict, number of heads)."""
    prefix = _prefix(sd)
    if prefix is None:
        raise ValueError("not a google-research/vision_transformer checkpoint (no embedding/kernel)")
    w = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    out: dict[str, Tensor] = {
        "patch_embed.proj.weight": w.pop("embedding/kernel").permute(3, 2, 0, 1).contiguous(),  # HWIO → OIHW
        "patch_embed.proj.bias": w.pop("embedding/bias"),
        "pos_embed": w.pop("Transformer/posembed_input/pos_embedding"),
        "norm.weight": w.pop("Transformer/encoder_norm/scale"),
        "norm.bias": w.pop("Transformer/encoder_norm/bias"),
    }
    if "cls" in w:
        out["cls_token"] = w.pop("cls")
    for ours, theirs in (("pre_logits.fc", "pre_logits"), ("head", "head")):
        if f"{theirs}/kernel" in w:
            out[f"{ours}.weight"] = _dense(w.pop(f"{theirs}/kernel"))
            out[f"{ours}.bias"] = w.pop(f"{theirs}/bias")
    heads, i = 0, 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in w:
        src, dst = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        attn = f"{src}MultiHeadDotProductAttention_1/"
        for ours, theirs in (("norm1", "LayerNorm_0"), ("norm2", "LayerNorm_2")):
            out[f"{dst}{ours}.weight"] = w.pop(f"{src}{theirs}/scale")
            out[f"{dst}{ours}.bias"] = w.pop(f"{src}{theirs}/bias")
        qkv = [w.pop(f"{attn}{n}/kernel") for n in ("query", "key", "value")]  # each (D, H, d)
        heads = qkv[0].shape[1]
        out[f"{dst}attn.qkv.weight"] = torch.cat([k.flatten(1).T for k in qkv]).contiguous()  # (3·H·d, D)
        if f"{attn}query/bias" in w:
            out[f"{dst}attn.qkv.bias"] = torch.cat(
                [w.pop(f"{attn}{n}/bias").reshape(-1) for n in ("query", "key", "value")])  # (H, d) → (H·d)
        proj = w.pop(f"{attn}out/kernel")  # (H, d, D)
        out[f"{dst}attn.proj.weight"] = proj.flatten(0, 1).T.contiguous()  # (H·d, D) → (D, H·d)
        out[f"{dst}attn.proj.bias"] = w.pop(f"{attn}out/bias")
        for r in range(2):
            out[f"{dst}mlp.fc{r + 1}.weight"] = _dense(w.pop(f"{src}MlpBlock_3/Dense_{r}/kernel"))
            out[f"{dst}mlp.fc{r + 1}.bias"] = w.pop(f"{src}MlpBlock_3/Dense_{r}/bias")
        i += 1
    out.update(w)  # leftovers (optimizer state, unknown layers) are reported as unexpected
    return out, heads


def jax_to_vitkit(sd: dict[str, Tensor], overrides: dict[str, Any]) -> tuple[ViTConfig, dict[str, Tensor]]:
    """JAX .npz state dict → (ViTConfig, vitkit state dict). GAP models (no ``cls``) pool by averaging."""
    timm_sd, heads = jax_to_timm(sd)
    overrides = dict(overrides)
    if "model" not in overrides:
        overrides.setdefault("num_heads", heads)
    return timm_to_vitkit(timm_sd, overrides)


register_state_dict_format("jax", is_jax_vit, jax_to_vitkit)
