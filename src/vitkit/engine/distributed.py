"""Process groups and data sharding for `torchrun` (DDP: gloo on CPU, NCCL on CUDA); no-ops in one process.

Data sharding lives in the loader (`vitkit.data.ImageLoader`): each global batch is split into contiguous rank
slices, so N processes see exactly the samples of a 1-process run with the same global batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import RunFailure, UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """"auto" → this process's CUDA device if there is one, else CPU; other names pass to torch.device."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here (torch {torch.__version__}, "
                         f"{'no GPU found' if torch.backends.cuda.is_built() else 'built without CUDA'}); "
                         "use --device cpu or auto")
    if device.type == "cuda" and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type not in ("cpu", "cuda", "mps", "xpu"):
        raise UsageError(f"--device {name}: vitkit runs on cpu or cuda")
    return device


def local_rank() -> int:
    """This process's rank on its machine as `torchrun` sets it (cuda:LOCAL_RANK); 0 outside torchrun."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def process_rank() -> int:
    """This process's rank as `torchrun` sets it (0 outside torchrun), readable before the group exists."""
    return int(os.environ.get("RANK", "0"))


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group that `torchrun` describes in the environment (WORLD_SIZE > 1), else do
    nothing."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(process_rank(), world, local_rank())
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=restart_store(), rank=info.rank, world_size=world)
    log.info("rank %d of %d on %s", info.rank, info.world_size, device)
    return info


def restart_store() -> dist.Store | None:
    """The key-value store for the process group: torchrun's (env://) as it is (None), except when its
    elastic agent hosts it (``TORCHELASTIC_USE_AGENT_STORE``): then a view of it under one prefix per restart.

    The agent's store outlives restarts, and without the prefix the workers of restart k can read the
    addresses that the workers of restart k − 1 published (seen with torch 2.13 and gloo: the restarted rank 0
    dialled the dead rank 1's port and the group never formed).
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          int(os.environ["WORLD_SIZE"]), is_master=False)
    return dist.PrefixStore(f"vitkit/restart_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes (in place); identity without a process group."""
    if dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_object(obj: object) -> object:
    """Rank 0's `obj` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather_object(obj: object) -> list[object]:
    """Every rank's `obj`, in rank order (``[obj]`` without a process group)."""
    if not dist.is_initialized():
        return [obj]
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def run_on_main(fn: Callable[[], None], what: str) -> None:
    """Run `fn` on rank 0 alone and tell every rank whether it failed (a broadcast where a barrier was), so
    a failure on rank 0 (disk full while saving) stops every rank instead of leaving them waiting.

    Raises:
        RunFailure: on the other ranks, when `fn` failed on rank 0 (which re-raises its own exception).
    """
    error: BaseException | None = None
    if not dist.is_initialized() or dist.get_rank() == 0:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below, after the others have been told
            error = e
    message = broadcast_object(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    if message is not None:
        raise RunFailure(f"{what} failed on rank 0: {message}")


def agree_to_step(have_batch: bool, stop: bool, device: torch.device) -> tuple[bool, bool]:
    """(every rank has a batch, some rank was asked to stop), the same on every rank: one all-reduce.

    This keeps the ranks in step when their loaders disagree (a stream that runs dry first, a batch that
    could not be read at all): the epoch ends on every rank at the first step where any rank has no batch,
    i.e. every rank trains on the shortest rank's number of batches.
    """
    if not dist.is_initialized():
        return have_batch, stop
    flags = torch.tensor([float(not have_batch), float(stop)], device=device)
    missing, stops = all_reduce_sum(flags).tolist()
    return missing == 0, stops > 0


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The global-RNG seed of rank > 0 (masks, dropout, drop path differ per rank; rank 0 keeps the run's
    seed stream, so one process matches a 1-process run). Initialisation happens before, from `seed` alone."""
    return seed * 7919 + rank * 104_729 + step


def all_gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Every rank's `rows` (same shape on each rank, on the backend's device) concatenated in rank order
    along dim 0; `rows` itself without a process group."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return rows
    out = rows.new_empty((dist.get_world_size() * rows.shape[0], *rows.shape[1:]))
    dist.all_gather_into_tensor(out, rows.contiguous())
    return out
