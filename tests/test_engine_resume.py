"""Process-level engine tests: SIGKILL mid-epoch + resume is bit-exact, SIGTERM checkpoints, and a 2-process
DDP run matches a 1-process run with the same global batch. Each runs `python -m vitkit train` in
subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

TINY = ["--model", "vit_tiny_patch2_28", "--set", "data.image_size=8", "--set", "model_args.dim=16",
        "--set", "model_args.depth=2", "--set", "model_args.num_heads=2", "--device", "cpu",
        "--set", "report=false"]
PER_CLASS = 128  # 3 classes → 345 train / 39 val images after the 10 % split


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A small image folder (3 classes of 8×8 grey PNGs); cheaper to start on than a built-in set."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c, name in enumerate(["bars", "dots", "plain"]):
        (root / name).mkdir()
        for i in range(PER_CLASS):
            pixels = rng.integers(0, 90, (8, 8)) + 70 * c
            pixels[:, ::4] += 40 * (c == 0)
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8), mode="L").save(root / name / f"{i}.png")
    return root


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def train_cmd(out: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vitkit", "train", "--out", str(out), "--data", str(data), *TINY, *extra]


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / "last" / "model.safetensors"))


def train_entries(out: Path) -> list[dict]:
    entries = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    keys = [(e["step"], e["split"]) for e in entries]
    assert len(keys) == len(set(keys)), "metrics.jsonl repeats a step"
    timings = ("img_per_s", "epoch_seconds")
    return [{k: v for k, v in e.items() if k not in timings} for e in entries]


def checkpoint_state(out: Path) -> dict:
    try:
        return json.loads((out / "checkpoints" / "last" / "train_state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"step": -1}


def checkpoint_step(out: Path) -> int:
    return checkpoint_state(out)["step"]


def wait_for_checkpoint(proc: subprocess.Popen, out: Path, min_step: int, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step = checkpoint_step(out)
        if step >= min_step:
            return step
        assert proc.poll() is None, f"training exited early:\n{proc.communicate()[0]}"
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("no checkpoint appeared in time")


# Determinism-relevant randomness on: augmentation (shift + mixup), drop-path, bf16 autocast.
RESUME_ARGS = ("--epochs", "2", "--batch-size", "8", "--set", "ckpt_every=4", "--set", "deterministic=true",
               "--set", "augment.crop_padding=1", "--set", "augment.mixup_alpha=0.4",
               "--set", "model_args.drop_path_rate=0.1", "--set", "log_every=1")


def test_sigkill_mid_epoch_then_resume_is_bit_exact(tmp_path, folder):
    full, killed = tmp_path / "full", tmp_path / "killed"
    reference = subprocess.Popen(train_cmd(full, folder, *RESUME_ARGS), env=env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    victim = subprocess.Popen(train_cmd(killed, folder, *RESUME_ARGS), env=env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    wait_for_checkpoint(victim, killed, min_step=4)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    state = checkpoint_state(killed)
    assert state["epoch"] == 0 and state["batch_in_epoch"] > 0, "the kill must land mid-epoch"
    resumed = subprocess.run(train_cmd(killed, folder, *RESUME_ARGS), env=env(), capture_output=True,
                             text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from" in resumed.stderr
    assert reference.wait(timeout=240) == 0, reference.communicate()[0]
    a, b = weights(full), weights(killed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    assert train_entries(full) == train_entries(killed)


def test_sigterm_writes_checkpoint_and_exits(tmp_path, folder):
    proc = subprocess.Popen(train_cmd(tmp_path, folder, "--epochs", "500", "--batch-size", "8"), env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    while not (tmp_path / "metrics.jsonl").exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 143, output
    assert "checkpoint saved" in output
    assert checkpoint_step(tmp_path) > 0


def test_two_process_ddp_matches_one_process(tmp_path, folder):
    # no randomness that differs by rank: no augmentation draws, no drop-path
    args = ("--epochs", "2", "--batch-size", "32", "--no-amp", "--set", "model_args.drop_path_rate=0.0",
            "--set", "augment.crop_scale=null", "--set", "log_every=1")
    single = subprocess.Popen(train_cmd(tmp_path / "one", folder, *args), env=env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    ddp_cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "vitkit", "train", "--out", str(tmp_path / "two"), "--data", str(folder), *TINY, *args]
    try:
        ddp = subprocess.run(ddp_cmd, env=env(), capture_output=True, text=True, timeout=180)
    finally:
        single_out = single.communicate(timeout=180)[0]
    assert single.returncode == 0, single_out
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr
    assert ddp.stderr.count("rank 1 of 2") == 1
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in one:
        # Float noise of the other reduction order (~1e-7) is amplified by Adam only where the true gradient
        # is zero (the key part of qkv.bias: softmax ignores it), to ~3e-5.
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-4, msg=f"{k} differs")
    assert not torch.equal(one["head.weight"], torch.zeros_like(one["head.weight"]))  # it did train
    # Clipping (at norm 1) and Adam both hide a gradient of the wrong scale from the weights; the pre-clip
    # norm of the all-reduced gradient, logged every step, does not: a sum over ranks would double it.
    norms = [{e["step"]: e["grad_norm"] for e in train_entries(tmp_path / run) if e["split"] == "train"}
             for run in ("one", "two")]
    assert list(norms[1]) == list(norms[0]) == list(range(1, 21))  # only rank 0 wrote, every step
    assert norms[1] == pytest.approx(norms[0], rel=1e-3)
