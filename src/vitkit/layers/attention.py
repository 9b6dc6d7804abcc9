"""Multi-head self-attention, one implementation for every vitkit model.

Shapes: B batch · T tokens · D width · H heads · d = D / H head width.

The seed's attention: one fused qkv projection to 3·D, per-head scaled dot product with an optional mask,
output projection; xavier-uniform weights and zero biases. Two optional parts, both modules handed in:
a norm applied to each head's queries and keys (QK-norm, Dehghani et al., "Scaling Vision Transformers to
22 Billion Parameters", 2023) and rotary position embeddings on the patch tokens (`rope.apply_rope`).
The fused path runs `F.scaled_dot_product_attention`; the explicit path computes the weights itself and
hands them back (`return_weights=True`) or to the observer that `vitkit.record_attention` installs for one
``with`` block.

Which kernel runs is decided per call by `use_explicit_attention` (device, dtype, sequence length): both
compute the same function, so the choice is about speed and memory only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rope import apply_rope

AttentionObserver = Callable[[Tensor], None]
NormFactory = Callable[[int], nn.Module]  # width → norm, e.g. functools.partial(nn.LayerNorm, eps=1e-6)


def additive_mask(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Turn a boolean mask (True = may attend) into an additive one (0 or -inf); float masks pass through."""
    if mask is None or mask.dtype != torch.bool:
        return None if mask is None else mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))


def explicit_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                       dropout_p: float = 0.0) -> tuple[Tensor, Tensor]:
    """Scaled dot-product attention that also returns the weights.

    Args:
        q, k, v: (B, H, T, d).
        mask: broadcastable to (B, H, T, T); boolean (True = may attend) or additive.
        dropout_p: dropout on the weights used for the output (the returned weights are before dropout).

    Returns:
        out (B, H, T, d) and weights (B, H, T, T), rows summing to 1.
    """
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, H, T, T)
    bias = additive_mask(mask, scores.dtype)
    if bias is not None:
        scores = scores + bias
    weights = scores.softmax(dim=-1)
    used = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    return used @ v, weights


# Longest sequence for which CPU bf16 takes the explicit path, which materialises the (B, H, T, T) weights
# and keeps them for the backward pass when training (the fused kernel does not): that memory grows as T².
EXPLICIT_MAX_TOKENS = 1024


def use_explicit_attention(q: Tensor) -> bool:
    """The attention-kernel policy: True where `explicit_attention` beats `F.scaled_dot_product_attention`.

    Measured with interleaved A/B runs (torch 2.13, 2-core AVX512-BF16 CPU, bf16 autocast):
    - training (one attention layer with its qkv and output projections, forward + backward): the CPU
      flash-attention backward is 1.4–3.5× slower than softmax(QKᵀ)V done with two batched matmuls at T = 65
      and 197. Whole training steps, SDPA time over explicit time: small 32×32 ViT b128 1.77×,
      ViT-S/16 b8 1.32×, ViT-B/16 b8 1.06× (1.18× fastest rounds).
    - inference (the attention op alone, `inference_mode`): the flash kernel takes 2.0× the explicit time at
      T = 197 (B 8–32, H 6–12) and 2.7× at T = 65 (B 256, H 3); at T = 577 the two are on par (0.95×). Whole
      forward passes, SDPA time over explicit time (median of 10 interleaved rounds): ViT-S/16 b8 1.23×, b32
      1.21×; ViT-B/16 b8 1.10×, b32 1.09×.
    In fp32 the two are on par, so SDPA is kept there (exact numerics, no T×T weights); on CUDA the flash /
    efficient kernels win. The explicit bf16 path rounds the softmax weights to bf16 (max abs error ≈ 0.01 on
    unit-scale inputs against ≈ 0.003 for the fused kernel), well inside what bf16 autocast already costs.

    Args:
        q: queries (B, H, T, d) as they reach the kernel (their dtype is the compute dtype under autocast).
    """
    return (q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16)
            and q.shape[-2] <= EXPLICIT_MAX_TOKENS)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection.

    Args:
        dim: token width D.
        num_heads: H; D must be divisible by H.
        qkv_bias: bias on the qkv projection.
        attn_drop: dropout on attention weights.
        proj_drop: dropout after the output projection.
        qk_norm: builds the norm applied to each head's queries and keys (width d); None for none.

    State-dict keys: qkv, proj, and q_norm / k_norm when `qk_norm` is given (timm's names).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, qk_norm: NormFactory | None = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = qk_norm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = qk_norm(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        # Set only by vitkit.record_attention for the length of its `with` block; routes this layer through
        # the explicit path and passes it the weights (B, H, T, T).
        self.observer: AttentionObserver | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for linear in (self.qkv, self.proj):
            nn.init.xavier_uniform_(linear.weight)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)

    def forward(self, x: Tensor, mask: Tensor | None = None, return_weights: bool = False,
                rope: tuple[Tensor, Tensor] | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """x (B, T, D), mask broadcastable to (B, H, T, T) → out (B, T, D) [, weights (B, H, T, T)].

        `rope`: (cos, sin), each (N, d), rotating the last N tokens' queries and keys (`apply_rope`)."""
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, d)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        dropout_p = self.attn_drop if self.training else 0.0
        if return_weights or self.observer is not None or use_explicit_attention(q):
            out, weights = explicit_attention(q, k, v, mask, dropout_p)
            if self.observer is not None:
                self.observer(weights)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
            weights = None
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, T, D)))  # (B, H, T, d) → (B, T, D)
        return (out, weights) if return_weights else out
