"""The dense bf16 peak table behind MFU: device names as torch reports them."""

from __future__ import annotations

import pytest
import torch

from vitkit.hardware import dense_bf16_peak_tflops


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L4", 121.0), ("NVIDIA L40S", 362.0),
    ("Tesla T4", None)])
def test_peak_by_device_name(name, peak):
    assert dense_bf16_peak_tflops(name=name) == peak


def test_no_peak_for_a_cpu():
    assert dense_bf16_peak_tflops(torch.device("cpu")) is None
