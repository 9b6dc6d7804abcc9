"""Pure analyses of attention weights and learned embeddings (no model calls, no plotting).

Shapes: B batch · H heads · L layers · T = P + N tokens (P prefix tokens such as [CLS] first, then
N = gh·gw patches in row-major order) · D width · C channels · p patch side.

- `patch_map`: what one query sees on the patch grid — the [CLS] row, or, for a model without [CLS], the mean
  attention each patch *receives* from all patch queries.
- `attention_rollout`: Abnar & Zuidema, "Quantifying Attention Flow in Transformers" (ACL 2020).
- `mean_attention_distance`: the ViT paper's Figure 7 (right).
- `position_similarity`: Figure 7 (centre).
- `filter_principal_components`: Figure 7 (left).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

HeadFusion = Literal["mean", "max", "min"]


def _check_square(weights: Tensor, name: str = "weights") -> None:
    if weights.ndim < 2 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"{name} must end in (T, T), got shape {tuple(weights.shape)}")


def _check_tokens(tokens: int, grid: tuple[int, int], num_prefix_tokens: int) -> None:
    if tokens != num_prefix_tokens + grid[0] * grid[1]:
        raise ValueError(f"{tokens} tokens do not match {num_prefix_tokens} prefix tokens + a "
                         f"{grid[0]}×{grid[1]} patch grid ({num_prefix_tokens + grid[0] * grid[1]} tokens)")


def patch_map(attention: Tensor, grid: tuple[int, int], num_prefix_tokens: int = 1) -> Tensor:
    """Attention as a map on the patch grid.

    With a [CLS] token (num_prefix_tokens ≥ 1): the first token's attention to each patch (its row of the
    matrix over patch keys). Without one: the mean attention each patch receives from all patch queries
    (column means over patch rows), since no single token summarises the image.

    Args:
        attention: (..., T, T) weights of one layer, e.g. (B, H, T, T), or a rollout (B, T, T).
        grid: (gh, gw) patch grid.
        num_prefix_tokens: P, tokens before the patches.

    Returns:
        (..., gh, gw), not renormalised (with [CLS], the mass on prefix tokens is left out).
    """
    _check_square(attention, "attention")
    _check_tokens(attention.shape[-1], grid, num_prefix_tokens)
    P = num_prefix_tokens
    if P > 0:
        values = attention[..., 0, P:]  # (..., N)
    else:
        values = attention.mean(dim=-2)  # (..., N): mean over queries of attention received
    return values.reshape(*values.shape[:-1], grid[0], grid[1])  # (..., N) → (..., gh, gw)


def patch_map_title(num_prefix_tokens: int) -> str:
    """What `patch_map` shows, for figure titles."""
    return ("[CLS] attention to patches" if num_prefix_tokens > 0
            else "mean attention received per patch (no [CLS] token)")


def fuse_heads(weights: Tensor, head_fusion: HeadFusion = "mean") -> Tensor:
    """(B, H, T, T) → (B, T, T) by the mean, max or min over heads."""
    fusions = {"mean": lambda w: w.mean(dim=1), "max": lambda w: w.amax(dim=1),
               "min": lambda w: w.amin(dim=1)}
    if head_fusion not in fusions:
        raise KeyError(f"unknown head fusion {head_fusion!r}; choose from {', '.join(fusions)}")
    if weights.ndim != 4:
        raise ValueError(f"expected weights (B, H, T, T), got shape {tuple(weights.shape)}")
    return fusions[head_fusion](weights)


def attention_rollout(weights: Sequence[Tensor], head_fusion: HeadFusion = "mean",
                      discard_ratio: float = 0.0) -> Tensor:
    """Attention rollout: how much each output token draws on each input token through all layers.

    Per layer: fuse heads; zero the lowest `discard_ratio` fraction of the fused matrix's entries (per
    sample); add the identity for the residual connection and renormalise rows, A = (W + I) / rowsum(W + I)
    (equal to 0.5·W + 0.5·I when rows of W sum to 1, as in the paper); then multiply, R = A_L · … · A_1.

    Args:
        weights: per layer, in forward order, (B, H, T, T).
        head_fusion: "mean", "max" or "min".
        discard_ratio: in [0, 1).

    Returns:
        R (B, T, T) with rows summing to 1; row t is output token t's attribution over input tokens.
    """
    if not weights:
        raise ValueError("attention_rollout needs the weights of at least one layer")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must lie in [0, 1), got {discard_ratio}")
    rollout = None
    for layer in weights:
        fused = fuse_heads(layer.float(), head_fusion)  # (B, T, T)
        B, T, _ = fused.shape
        if discard_ratio > 0:
            flat = fused.reshape(B, T * T)
            k = int(T * T * discard_ratio)
            if k > 0:
                lowest = flat.topk(k, dim=-1, largest=False).indices
                flat = flat.scatter(-1, lowest, 0.0)
            fused = flat.reshape(B, T, T)
        a = fused + torch.eye(T, device=fused.device, dtype=fused.dtype)
        a = a / a.sum(dim=-1, keepdim=True)
        if rollout is not None and rollout.shape != a.shape:
            raise ValueError(f"layers disagree in shape: {tuple(rollout.shape)} vs {tuple(a.shape)}")
        rollout = a if rollout is None else a @ rollout
    return rollout


def patch_distances(grid: tuple[int, int], patch_size: int = 1) -> Tensor:
    """Euclidean distances (N, N) between patch centres of a (gh, gw) grid, in pixels (patch_size a step)."""
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    centres = torch.stack([rows.flatten(), cols.flatten()], dim=1).double() * patch_size  # (N, 2)
    return torch.cdist(centres, centres)


def mean_attention_distance(weights: Tensor, grid: tuple[int, int], patch_size: int,
                            num_prefix_tokens: int = 1) -> Tensor:
    """Mean attention distance per head (the ViT paper, Figure 7 right).

    For every patch query, the attention-weighted mean pixel distance between its patch and the key patches;
    averaged over queries and the batch. Only patch→patch weights count: prefix tokens have no position, so
    each query's weights over patch keys are renormalised to sum to 1 first.

    Args:
        weights: (B, H, T, T) of one layer.
        grid: (gh, gw) patch grid.
        patch_size: pixels per patch step (the distance unit).
        num_prefix_tokens: P.

    Returns:
        (H,) distances in pixels.
    """
    _check_square(weights)
    if weights.ndim != 4:
        raise ValueError(f"expected weights (B, H, T, T), got shape {tuple(weights.shape)}")
    _check_tokens(weights.shape[-1], grid, num_prefix_tokens)
    P = num_prefix_tokens
    patch = weights[..., P:, P:].double()  # (B, H, N, N)
    patch = patch / patch.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    dist = patch_distances(grid, patch_size).to(patch.device)  # (N, N)
    per_query = (patch * dist).sum(dim=-1)  # (B, H, N)
    return per_query.mean(dim=(0, 2)).float()


def position_similarity(pos_embed: Tensor, grid: tuple[int, int]) -> Tensor:
    """Cosine similarity between the position embeddings of every pair of patches (Figure 7 centre).

    Args:
        pos_embed: (N, D) or (1, N, D) patch position embeddings, row-major over `grid`.
        grid: (gh, gw).

    Returns:
        (gh, gw, gh, gw): entry [i, j] is the (gh, gw) tile of position (i, j)'s similarity to all positions.
    """
    pos = pos_embed.reshape(-1, pos_embed.shape[-1]).float()  # (N, D)
    if pos.shape[0] != grid[0] * grid[1]:
        raise ValueError(f"{pos.shape[0]} position embeddings do not form a {grid[0]}×{grid[1]} grid")
    unit = pos / pos.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (unit @ unit.T).reshape(grid[0], grid[1], grid[0], grid[1])  # (N, N) → (gh, gw, gh, gw)


def filter_principal_components(filters: Tensor, num_components: int = 28) -> tuple[Tensor, Tensor]:
    """Principal components of the patch-embedding filters (Figure 7 left).

    The D filters (C, p, p) are flattened to vectors of length C·p·p, centred, and decomposed by SVD.

    Args:
        filters: (D, C, p, p) patch-projection weights.
        num_components: how many components to return (at most min(D, C·p·p)).

    Returns:
        components (K, C, p, p), unit-norm, in decreasing order of variance, and the fraction of variance each
        explains (K,).
    """
    if filters.ndim != 4:
        raise ValueError(f"expected filters (D, C, p, p), got shape {tuple(filters.shape)}")
    D, C, ph, pw = filters.shape
    flat = filters.detach().reshape(D, C * ph * pw).double()  # (D, C·p·p)
    flat = flat - flat.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(flat, full_matrices=False)
    k = min(num_components, vh.shape[0])
    variance = s**2
    explained = variance[:k] / variance.sum().clamp_min(1e-30)
    return vh[:k].reshape(k, C, ph, pw).float(), explained.float()  # (K, C·p·p) → (K, C, p, p)
