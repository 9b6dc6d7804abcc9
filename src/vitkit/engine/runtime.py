"""Process-wide run settings the trainer switches on and off: seeds, deterministic algorithms, SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run natively on `device` (CUDA, or a CPU with AVX-512 BF16 / AMX); elsewhere
    torch emulates them, at a small fraction of the fp32 speed."""
    if device.type != "cpu":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True  # cannot tell: do not warn


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Turn on `torch.use_deterministic_algorithms` for the block (if `enabled`), restoring it after."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled or previous)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


class StopFlag:
    """Set to the signal's name by SIGTERM or SIGINT while installed (`catch_signals`), so the loop can finish
    a step and checkpoint; a second SIGINT stops at once (KeyboardInterrupt)."""

    SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}

    def __init__(self) -> None:
        self.requested: str | None = None

    @contextlib.contextmanager
    def catch_signals(self) -> Iterator[StopFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers can only be installed from the main thread
            return

        def request(signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            if self.requested == "SIGINT" and name == "SIGINT":
                raise KeyboardInterrupt
            log.warning("%s: finishing this step and writing a checkpoint", name)
            self.requested = name

        previous = {sig: signal.signal(sig, request) for sig in self.SIGNALS.values()}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def signal_exit_code(name: str) -> int:
    """The shell's exit status for a process stopped by signal `name`: 128 + its number (SIGTERM 143,
    SIGINT 130)."""
    return 128 + StopFlag.SIGNALS[name].value
