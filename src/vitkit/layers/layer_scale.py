"""LayerScale (Touvron et al., "Going deeper with Image Transformers", ICCV 2021): a learned per-channel scale
on each residual branch, initialised small so deep networks start close to the identity.

Shapes: B batch · T tokens · D width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LayerScale(nn.Module):
    """x (..., D) → x · γ, with γ (D,) initialised to `init_value` (DeiT III 1e-6, DINOv2 1e-5)."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.init_value = init_value
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma

    def extra_repr(self) -> str:
        return f"init_value={self.init_value}"
