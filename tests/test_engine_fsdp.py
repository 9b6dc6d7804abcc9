"""FSDP2 and multi-process plumbing in one or two local processes: an FSDP run equals a DDP run, its sharded
checkpoint resumes and exports, rank 0's save failure reaches every rank, ranks agree on the step count,
metrics reduce on the training device, and each rank has its own RNG stream."""

from __future__ import annotations

import copy
import itertools
import os
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_engine import make_trainer, tiny_data, tiny_model

from vitkit import load_pretrained
from vitkit.engine import OptimConfig, dcp, metrics, runtime
from vitkit.engine.distributed import agree_to_step, rank_seed, run_on_main
from vitkit.engine.metrics import MeanMetrics
from vitkit.errors import RunFailure, UsageError
from vitkit.models.probe import LinearProbe, LinearProbeConfig
from vitkit.tasks.linprobe import extract_features


@pytest.fixture
def one_process_group():
    """FSDP joins a one-member group in process; leave none behind for the tests after."""
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_fsdp_one_process_matches_ddp_and_exports(tmp_path, one_process_group):
    runs = {}
    for strategy in ("ddp", "fsdp"):
        torch.manual_seed(0)
        trainer = make_trainer(tmp_path / strategy, strategy=strategy, epochs=2,
                               optim=OptimConfig(ema_decay=0.9))
        trainer.fit()
        trainer.consolidate()  # FSDP: whole modules on rank 0
        runs[strategy] = trainer
    ddp, fsdp = runs["ddp"], runs["fsdp"]
    for a, b in ((ddp.model, fsdp.model), (ddp.ema.module, fsdp.ema.module)):
        wa, wb = _weights(a), _weights(b)
        assert not isinstance(next(iter(wb.values())), torch.distributed.tensor.DTensor)
        for k in wa:
            torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6, msg=k)
    last = tmp_path / "fsdp" / "checkpoints" / "last"
    assert dcp.is_sharded_checkpoint(last) and (last / "dcp" / "__0_0.distcp").is_file()
    exported = _weights(load_pretrained(last))
    for k, v in _weights(fsdp.model).items():
        torch.testing.assert_close(exported[k], v.cpu(), rtol=0, atol=0, msg=k)


def test_fsdp_crash_then_resume_matches_uninterrupted(tmp_path, monkeypatch, one_process_group):
    torch.manual_seed(0)
    model = tiny_model()
    reference = make_trainer(tmp_path / "ref", model=copy.deepcopy(model), strategy="fsdp", ckpt_every=4)
    reference.fit()
    reference.consolidate()

    def crash(step: int, rank: int) -> None:
        if step == 6:
            raise RuntimeError("crash")

    monkeypatch.setattr(runtime, "crash_for_test", crash)
    with pytest.raises(RuntimeError, match="crash"):
        make_trainer(tmp_path / "run", model=copy.deepcopy(model), strategy="fsdp", ckpt_every=4).fit()
    monkeypatch.undo()
    resumed = make_trainer(tmp_path / "run", model=copy.deepcopy(model), strategy="fsdp", ckpt_every=4)
    assert resumed.resume() and resumed.step == 4
    resumed.fit()
    resumed.consolidate()
    a, b = _weights(reference.model), _weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fsdp_refuses_a_ddp_checkpoint(tmp_path, one_process_group):
    make_trainer(tmp_path, epochs=1).fit()
    with pytest.raises(UsageError, match="strategy"):
        make_trainer(tmp_path, epochs=1, strategy="fsdp").fit()


def test_fp16_with_fsdp_is_refused(tmp_path):
    with pytest.raises(UsageError, match="amp_dtype=fp16"):
        make_trainer(tmp_path, strategy="fsdp", amp=True, amp_dtype="fp16")


def test_mean_metrics_reduce_on_the_training_device(monkeypatch):
    seen = []
    monkeypatch.setattr(metrics, "all_reduce_sum", lambda t: seen.append(t.device) or t)
    meter = MeanMetrics("cpu")
    meter.update({"loss": torch.tensor(2.0), "acc1": 0.5}, 2)
    meter.update({"loss": torch.tensor(4.0), "acc1": 1.0}, 2)
    assert meter.compute() == {"acc1": 0.75, "loss": 3.0}
    assert seen == [torch.device("cpu")]
    assert isinstance(meter.means()["loss"], torch.Tensor)  # no host sync before compute


def test_rank_seeds_differ_and_keep_rank_zero():
    assert rank_seed(5, 0) == 5 * 7919
    assert len({rank_seed(5, r, 10) for r in range(8)}) == 8


# ---- two processes (gloo, CPU) -----------------------------------------------------------------------------
def _two_rank_worker(rank: int, store_path: str, out: str, results: dict) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store_path, 2), rank=rank, world_size=2)
    try:
        trainer = make_trainer(Path(out), epochs=1)
        draws = [torch.zeros(4) for _ in range(2)]
        dist.all_gather(draws, torch.rand(4))  # the global RNG after setup: masks, dropout, drop path
        results[f"rng_differs_{rank}"] = not torch.equal(draws[0], draws[1])
        results[f"agree_{rank}"] = agree_to_step(have_batch=rank == 0, stop=False, device=torch.device("cpu"))
        results[f"stop_{rank}"] = agree_to_step(True, stop=rank == 1, device=torch.device("cpu"))

        def fail_on_rank_0() -> None:
            raise OSError(28, "No space left on device")

        try:
            run_on_main(fail_on_rank_0, "writing the checkpoint")
        except OSError as e:
            results[f"save_{rank}"] = f"own {e.strerror}"
        except RunFailure as e:
            results[f"save_{rank}"] = str(e)
        trainer.step = 1
        trainer.save()  # a working save still completes on both ranks
        results[f"saved_{rank}"] = True
        features = extract_features(tiny_probe(), tiny_data(21), torch.device("cpu"), batch_size=8)
        results[f"features_{rank}"] = (features.features, features.targets)
        uneven = make_trainer(Path(out) / "uneven", epochs=1)
        uneven.train_data = UnevenLoader(uneven.train_data, batches=3 + rank)  # rank 1 has one batch more
        uneven.fit()  # would hang at rank 1's extra step without the per-step agreement
        results[f"uneven_steps_{rank}"] = uneven.step
    finally:
        dist.destroy_process_group()


class UnevenLoader:
    """The first `batches` batches of a loader: ranks whose loaders disagree on the batch count."""

    def __init__(self, loader, batches: int) -> None:
        self.loader, self.batches = loader, batches

    def __len__(self) -> int:
        return self.batches

    def epoch(self, epoch: int, start_batch: int = 0):
        return itertools.islice(self.loader.epoch(epoch, start_batch), self.batches - start_batch)


def tiny_probe() -> LinearProbe:
    torch.manual_seed(0)
    return LinearProbe(LinearProbeConfig(encoder=tiny_model().config, num_classes=3))


@pytest.mark.slow
def test_two_ranks_agree_on_steps_failures_and_have_own_rng(tmp_path):
    results = mp.Manager().dict()
    ctx = mp.start_processes(_two_rank_worker, args=(str(tmp_path / "store"), str(tmp_path / "run"), results),
                             nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 150
    while not ctx.join(timeout=5):  # True once both ranks have exited (raises if one failed)
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the two ranks did not finish: a hang")
    assert results["rng_differs_0"] and results["rng_differs_1"]
    assert results["agree_0"] == results["agree_1"] == (False, False)  # rank 1 has no batch: both stop
    assert results["stop_0"] == results["stop_1"] == (True, True)
    assert results["save_0"] == "own No space left on device"
    assert "failed on rank 0: OSError" in results["save_1"]
    assert results["saved_0"] and results["saved_1"]
    assert results["uneven_steps_0"] == results["uneven_steps_1"] == 3  # the shortest rank's count
    # the linear probe's feature pass: each rank encodes its share, both end with every image in order
    alone = extract_features(tiny_probe(), tiny_data(21), torch.device("cpu"), batch_size=8)
    for rank in (0, 1):
        features, targets = results[f"features_{rank}"]
        assert torch.equal(targets, alone.targets)
        torch.testing.assert_close(features, alone.features, rtol=1e-5, atol=1e-6)
