"""Process-wide run settings the trainer switches on and off: seeds, deterministic algorithms, SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import threading
from typing import Any, Iterator

import numpy as np
import torch

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
    """Set by SIGTERM while installed (`catch_sigterm`), so the loop can finish a step and checkpoint."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def catch_sigterm(self) -> Iterator["StopFlag"]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers can only be installed from the main thread
            return

        def request(signum: int, frame: Any) -> None:
            log.warning("SIGTERM: finishing this step and writing a checkpoint")
            self.requested = True

        previous = signal.signal(signal.SIGTERM, request)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)
