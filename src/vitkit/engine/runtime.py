"""Process-wide run settings the trainer switches on and off: seeds, deterministic algorithms, SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import os
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


def configure_backends(deterministic: bool, device: torch.device) -> None:
    """Process-wide numerics for a run on `device`; call before CUDA is first used.

    deterministic: ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (cuBLAS refuses deterministic mode without it; it must
    be set before the first cuBLAS call), cuDNN benchmark off. Otherwise on CUDA: TF32 matmuls and
    convolutions (``set_float32_matmul_precision("high")``) and ``cudnn.benchmark``.

    What is exact on a GPU with deterministic=true: matmuls, convolutions, attention (math and efficient
    SDPA), AdamW, reductions in a fixed order, so a resumed run repeats an uninterrupted one. What is not:
    ops without a deterministic CUDA kernel (bilinear-interpolate backward, used by position-embedding
    resampling and DPT; nll_loss2d forward, used by segmentation; cumsum; nanmedian) run their
    nondeterministic kernels with a warning (`torch.use_deterministic_algorithms(True, warn_only=True)`),
    and NCCL all-reduces can sum in another order when the number of processes changes.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cuda.matmul.allow_tf32 = not deterministic
        torch.backends.cudnn.allow_tf32 = not deterministic
        torch.set_float32_matmul_precision("highest" if deterministic else "high")


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool, device: torch.device | None = None) -> Iterator[None]:
    """Turn on `torch.use_deterministic_algorithms` for the block (if `enabled`), restoring it after. On CUDA
    ops without a deterministic kernel warn instead of raising (see `configure_backends`)."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    warn_only = device is not None and device.type == "cuda"
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


def crash_for_test(step: int, rank: int) -> None:
    """Test hook for restart tests: ``VITKIT_TEST_CRASH=STEP:RANK:MARKER`` makes rank RANK (``*``: every
    rank) exit with status 3 right after optimizer step STEP (after that step's checkpoint, if any), once:
    it creates the file MARKER (per rank: MARKER.RANK) and does nothing while it exists."""
    spec = os.environ.get("VITKIT_TEST_CRASH")
    if not spec:
        return
    at, who, marker = spec.split(":", 2)
    done = f"{marker}.{rank}"
    if int(at) == step and who in ("*", str(rank)) and not os.path.exists(done):
        open(done, "w").close()
        log.warning("VITKIT_TEST_CRASH: rank %d exits at step %d", rank, step)
        os._exit(3)


def dump_for_test(state: dict[str, torch.Tensor], rank: int) -> None:
    """Test hook: ``VITKIT_TEST_DUMP=DIR`` writes each rank's final weights (its shards under FSDP) to
    DIR/rank<RANK>.safetensors, so a test can compare the ranks of a multi-process run."""
    folder = os.environ.get("VITKIT_TEST_DUMP")
    if folder:
        from safetensors.torch import save_file

        os.makedirs(folder, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
                  os.path.join(folder, f"rank{rank}.safetensors"))


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
