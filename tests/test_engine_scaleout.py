"""Scale-out under `torchrun` on one machine (gloo, CPU, loopback): a sharded FSDP checkpoint written by two
ranks resumes on one and on two; two launchers acting as two nodes train like one process; an elastic job
whose rank dies once restarts from its last checkpoint with no step logged twice. Each runs `vitkit train`
in subprocesses (slow)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import test_engine_resume
import torch
from safetensors.torch import load_file
from test_engine_resume import TINY, env, train_cmd, train_entries, weights

pytestmark = pytest.mark.slow
folder = test_engine_resume.folder  # the image-folder fixture

# no randomness that differs by rank or run: no augmentation draws, no drop-path, fp32
SAME_EVERYWHERE = ("--epochs", "1", "--batch-size", "32", "--no-amp",
                   "--set", "model_args.drop_path_rate=0.0", "--set", "augment.crop_scale=null",
                   "--set", "log_every=1", "--set", "ckpt_every=4")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(out: Path, data: Path, *launcher: str, extra: tuple[str, ...] = (), **env_vars: str
             ) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "vitkit", "train",
           "--out", str(out), "--data", str(data), *TINY, *SAME_EVERYWHERE, *extra]
    return subprocess.Popen(cmd, env={**env(), **env_vars}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    try:
        output = proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        output = proc.communicate()[0]
        pytest.fail(f"timed out:\n{output[-3000:]}")
    return proc.returncode, output


def standalone(n: int) -> tuple[str, ...]:
    return ("--standalone", f"--nproc-per-node={n}")


def assert_close_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float = 1e-4) -> None:
    assert a.keys() == b.keys()
    for k in a:
        # Float noise of another reduction order is amplified by Adam only where the true gradient is zero
        # (the key part of qkv.bias), to ~3e-5; elsewhere the runs agree to ~1e-6.
        torch.testing.assert_close(b[k], a[k], rtol=tol, atol=tol, msg=f"{k} differs")


def test_fsdp_checkpoint_of_two_ranks_resumes_on_one_and_on_two(tmp_path, folder):
    fsdp = ("--strategy", "fsdp")
    crash = str(tmp_path / "crashed")
    reference = torchrun(tmp_path / "ref", folder, *standalone(2), extra=fsdp)
    victim = torchrun(tmp_path / "run", folder, *standalone(2), extra=fsdp, VITKIT_TEST_CRASH=f"6:*:{crash}")
    code, output = finish(victim)
    assert code != 0 and Path(f"{crash}.0").exists(), output[-3000:]
    last = tmp_path / "run" / "checkpoints" / "last"
    shards = sorted(p.name for p in (last / "dcp").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"]  # one shard per rank
    shutil.copytree(tmp_path / "run", tmp_path / "run2")
    on_one = torchrun(tmp_path / "run", folder, *standalone(1), extra=fsdp)
    on_two = torchrun(tmp_path / "run2", folder, *standalone(2), extra=fsdp)
    for proc in (reference, on_one, on_two):
        code, output = finish(proc)
        assert code == 0, output[-3000:]
    ref = weights(tmp_path / "ref")
    assert_close_weights(ref, weights(tmp_path / "run2"), tol=1e-6)  # same ranks: the same sums
    assert_close_weights(ref, weights(tmp_path / "run"))  # resharded 2 → 1
    steps = [e["step"] for e in train_entries(tmp_path / "run") if e["split"] == "train"]
    assert steps == list(range(1, 11))


def test_two_launchers_as_two_nodes_match_one_process(tmp_path, folder):
    port = free_port()
    nodes = [torchrun(tmp_path / "two", folder, "--nnodes=2", f"--node-rank={r}", "--nproc-per-node=1",
                      "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=scaleout",
                      VITKIT_TEST_DUMP=str(tmp_path / "dump")) for r in (0, 1)]
    single = subprocess.Popen(train_cmd(tmp_path / "one", folder, *SAME_EVERYWHERE), env=env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for proc in (*nodes, single):
        code, output = finish(proc)
        assert code == 0, output[-3000:]
    rank0, rank1 = (load_file(str(tmp_path / "dump" / f"rank{r}.safetensors")) for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), "the ranks' parameters differ"
    assert_close_weights(weights(tmp_path / "one"), weights(tmp_path / "two"))


def test_elastic_restart_resumes_from_the_last_checkpoint(tmp_path, folder):
    crash = str(tmp_path / "crashed")
    proc = torchrun(tmp_path / "run", folder, "--nnodes=1", "--nproc-per-node=2", "--max-restarts=3",
                    "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}",
                    "--monitor-interval=0.5", VITKIT_TEST_CRASH=f"6:1:{crash}")
    code, output = finish(proc)
    assert code == 0, output[-3000:]
    assert Path(f"{crash}.1").exists(), "rank 1 never died"
    assert "at epoch 0, step 4 (torchrun restart 1)" in output
    steps = [e["step"] for e in train_entries(tmp_path / "run") if e["split"] == "train"]
    assert steps == list(range(1, 11))  # steps 5 and 6 ran twice, and are logged once
