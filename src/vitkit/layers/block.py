"""Pre-norm transformer encoder block: x + DropPath(γ₁·Attn(LN(x))), then x + DropPath(γ₂·MLP(LN(x))).

γ is LayerScale where configured, else the identity; the MLP is any module (D → D) handed in (the GELU `Mlp`
by default, `SwiGLU` for DINOv2-g and DINOv3's large models).
"""

from __future__ import annotations

from torch import Tensor, nn

from .attention import Attention, NormFactory
from .drop import DropPath
from .layer_scale import LayerScale
from .mlp import Mlp


class Block(nn.Module):
    """One encoder block (ViT paper eq. 2–3).

    Args:
        dim: token width D.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of D.
        qkv_bias: bias on the fused qkv projection.
        drop: dropout after the attention projection and in the MLP.
        attn_drop: dropout on attention weights.
        drop_path: stochastic depth rate of this block.
        eps: LayerNorm epsilon (1e-6 in the ViT paper's code).
        mlp: the MLP module; None builds `Mlp(dim, int(dim · mlp_ratio))`.
        layer_scale_init: LayerScale's initial γ on both branches; None for no LayerScale.
        qk_norm: norm factory for QK-norm in the attention (`Attention`); None for none.

    State-dict keys: norm1, attn.*, ls1.gamma, norm2, mlp.*, ls2.gamma (timm's names).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, eps: float = 1e-6, *,
                 mlp: nn.Module | None = None, layer_scale_init: float | None = None,
                 qk_norm: NormFactory | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop,
                              qk_norm=qk_norm)
        self.ls1 = nn.Identity() if layer_scale_init is None else LayerScale(dim, layer_scale_init)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop) if mlp is None else mlp
        self.ls2 = nn.Identity() if layer_scale_init is None else LayerScale(dim, layer_scale_init)

    def forward(self, x: Tensor, mask: Tensor | None = None,
                rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x (B, T, D) → (B, T, D); mask and rope (cos, sin) as in `Attention`."""
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x), mask, rope=rope)))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
