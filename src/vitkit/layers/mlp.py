"""The transformer MLPs: the ViT paper's GELU MLP and the gated SwiGLU of DINOv2 / DINOv3's large models.

Shapes: (..., D) in and out; H hidden width.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Mlp(nn.Module):
    """Two-layer perceptron with exact (erf) GELU, as in the ViT paper and its reference code:
    Linear → GELU → dropout → Linear → dropout (D → H → D)."""

    def __init__(self, dim: int, hidden_dim: int, out_dim: int | None = None, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim or dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def swiglu_hidden_dim(dim: int, mlp_ratio: float) -> int:
    """DINOv2's SwiGLU width: 2/3 of the GELU MLP's int(mlp_ratio·D), rounded up to a multiple of 8
    (ViT-g/14: D 1536 → 4096), so the three matrices hold about as many weights as the two of `Mlp`."""
    return (int(int(dim * mlp_ratio) * 2 / 3) + 7) // 8 * 8


class SwiGLU(nn.Module):
    """Gated MLP (Shazeer, "GLU Variants Improve Transformer", 2020): fc2(SiLU(x·W_gate) ⊙ (x·W_up)).

    The gate and up projections are packed in one Linear `fc1` (2·H, D), gate rows first: DINOv2's `w12`
    (HF Dinov2 `weights_in`, timm `SwiGLUPacked`). HF DINOv3's separate gate_proj / up_proj stack onto it.
    """

    def __init__(self, dim: int, hidden_dim: int, out_dim: int | None = None, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim or dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.fc1(x).chunk(2, dim=-1)  # (..., 2·H) → 2 × (..., H)
        return self.drop(self.fc2(self.drop(F.silu(gate) * up)))
