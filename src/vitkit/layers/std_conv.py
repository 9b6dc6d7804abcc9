"""Weight-standardised convolution (Qiao et al., "Micro-Batch Training with Batch-Channel Normalization and
Weight Standardization", 2019), as used by BiT's ResNetV2 (Kolesnikov et al., "Big Transfer", ECCV 2020).

Each output filter is standardised to zero mean and unit variance over its (C_in/groups)·k·k weights before
the convolution, so GroupNorm can replace BatchNorm at any batch size.

Padding comes in two flavours, named after what they do:
  * "same": TensorFlow SAME — output side ceil(H / stride); the total padding k_eff − stride (or k_eff − H mod
    stride) is split with the extra pixel at the bottom/right. Static when it does not depend on H, else
    computed per input (`pad_same`).
  * "symmetric": PyTorch style, ((stride − 1) + dilation·(k − 1)) // 2 on every side.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

Padding = Literal["same", "symmetric"]


def same_padding(size: int, kernel_size: int, stride: int, dilation: int = 1) -> int:
    """Total TF-SAME padding along one side of length `size` (output side ceil(size / stride)).

    Integer arithmetic (ceil as a negated floor division): a symbolic `size` (ONNX export with dynamic height
    and width) stays an integer expression, which halves the time the exporter spends on a hybrid's trunk.
    """
    return max((-(-size // stride) - 1) * stride + (kernel_size - 1) * dilation + 1 - size, 0)


def pad_same(x: Tensor, kernel_size: int, stride: int, dilation: int = 1, value: float = 0.0) -> Tensor:
    """Pad (B, C, H, W) for TF SAME: half the padding left/top, the rest (one more if odd) right/bottom."""
    ph = same_padding(x.shape[-2], kernel_size, stride, dilation)
    pw = same_padding(x.shape[-1], kernel_size, stride, dilation)
    if ph or pw:
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2], value=value)
    return x


def static_padding(kernel_size: int, stride: int, dilation: int, padding: Padding) -> int | None:
    """Symmetric padding when it is input-independent for `padding`; None when SAME needs `pad_same`."""
    symmetric = ((stride - 1) + dilation * (kernel_size - 1)) // 2
    if padding == "symmetric":
        return symmetric
    if padding == "same":
        return symmetric if stride == 1 and (dilation * (kernel_size - 1)) % 2 == 0 else None
    raise ValueError(f"padding must be 'same' or 'symmetric', got {padding!r}")


class StdConv2d(nn.Conv2d):
    """Conv2d whose filters are standardised on the fly: w ← (w − mean) / sqrt(var + eps), per output channel.

    Args:
        in_chans, out_chans, kernel_size, stride, dilation, groups, bias: as nn.Conv2d (square kernels).
        padding: "same" (TF SAME, dynamic where needed) or "symmetric" (PyTorch style).
        eps: added to the biased filter variance (BiT, timm's hybrid and HF Bit use 1e-8).
    """

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int, stride: int = 1,
                 padding: Padding = "same", dilation: int = 1, groups: int = 1, bias: bool = False,
                 eps: float = 1e-8) -> None:
        static = static_padding(kernel_size, stride, dilation, padding)
        super().__init__(in_chans, out_chans, kernel_size, stride=stride, padding=static or 0,
                         dilation=dilation, groups=groups, bias=bias)
        self.dynamic_same = static is None
        self.eps = eps

    def standardized_weight(self) -> Tensor:
        """The filters (O, I/g, k, k) standardised over each output channel's I/g·k·k weights."""
        flat = self.weight.reshape(1, self.out_channels, -1)  # (1, O, I/g·k·k): batch_norm stats per O
        flat = F.batch_norm(flat, None, None, training=True, momentum=0.0, eps=self.eps)
        return flat.reshape_as(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C_in, H, W) → (B, C_out, H', W')."""
        if self.dynamic_same:
            x = pad_same(x, self.kernel_size[0], self.stride[0], self.dilation[0])
        return F.conv2d(x, self.standardized_weight(), self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def extra_repr(self) -> str:
        dynamic = ", padding=same(dynamic)" if self.dynamic_same else ""
        return f"{super().extra_repr()}, eps={self.eps}{dynamic}"
