"""Known accelerators' dense bf16 peak (tensor cores, no sparsity), the denominator of MFU.

MFU = achieved model FLOP/s (``models.summary.forward_flops`` × 3 for a training step) / this peak. A
self-timed matmul is no substitute: it measures what the library reaches, not what the chip offers.
"""

from __future__ import annotations

import torch

# (substring of torch.cuda.get_device_name, dense bf16 TFLOP/s); the first match wins, so the more specific
# names come first (H100 PCIe before H100, L40S and L40 before L4)
DENSE_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.0), ("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
    ("H800", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0),
    ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("RTX 4090", 165.0), ("RTX A6000", 155.0),
)


def dense_bf16_peak_tflops(device: torch.device | str | None = None, name: str | None = None) -> float | None:
    """The table's peak for `device`'s GPU (or the device `name`); None for a CPU or a GPU not listed."""
    if name is None:
        device = torch.device(device or "cuda")
        if device.type != "cuda" or not torch.cuda.is_available():
            return None
        name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in DENSE_BF16_TFLOPS if key in name), None)
