"""The CLI's error contract on the training side: a user mistake or an environment failure prints one line
(no traceback) and exits 2 (usage) or 1 (failure); nothing already on disk is lost; interrupted runs save a
checkpoint and exit 130 (SIGINT) or 143 (SIGTERM)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from vitkit.cli.main import main
from vitkit.rundir import RunDir

VIT = ["--batch-size", "128", "--set", "model_args.depth=1", "--set", "model_args.dim=32",
       "--set", "model_args.num_heads=2", "--set", "report=false", "--set", "amp=false"]


def fails(capsys, argv: list[str], code: int, words: str) -> str:
    """Run `vitkit ARGV`; assert the exit code, one error line containing `words`, and no traceback."""
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and words in err, err
    return err


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished one-epoch digits run."""
    out = tmp_path_factory.mktemp("done") / "run"
    assert main(["train", "--out", str(out), "--epochs", "1", *VIT]) == 0
    return out


@pytest.mark.parametrize("setting, words", [
    ("epochs=-1", "epochs must be >= 1"), ("eval_every=0", "eval_every must be >= 1"),
    ("log_every=0", "log_every must be >= 1"), ("optim.accum_steps=0", "optim.accum_steps must be >= 1"),
    ("optim.lrr=1", "did you mean lr"), ("task.kind=nope", "is not one of"),
    ("best_weights=ema", "needs an EMA")])
def test_bad_config_values_are_usage_errors(tmp_path, capsys, setting, words):
    fails(capsys, ["train", "--out", str(tmp_path / "run"), "--set", setting], 2, words)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_bad_paths_devices_and_files(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1\n")
    fails(capsys, ["train", "--config", str(bad), "--out", str(tmp_path / "r")], 2, "not valid YAML")
    fails(capsys, ["train", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "r")],
          2, "no such")
    fails(capsys, ["train", "--device", "cuda:7" if torch.cuda.is_available() else "cuda",
                   "--out", str(tmp_path / "r")], 2, "--device")
    fails(capsys, ["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")], 2, "neither")
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    fails(capsys, ["train", "--out", str(afile), "--epochs", "1", *VIT], 2, "is a file")
    assert afile.read_text() == "keep me"


def _folder(root, classes: dict[str, int]) -> None:
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("L", (8, 8), 10 * i).save(root / name / f"{i}.png")


def test_data_no_classifier_can_learn_from_is_refused(tmp_path, capsys):
    _folder(tmp_path / "nested" / "images", {"cat": 6})  # DIR/images/<class>: one class seen
    fails(capsys, ["train", "--data", str(tmp_path / "nested"), "--out", str(tmp_path / "r1"), *VIT], 2,
          "one class, 'images'")
    _folder(tmp_path / "holey", {"a": 6, "b": 6})
    (tmp_path / "holey" / "c").mkdir()
    (tmp_path / "holey" / "c" / "broken.png").write_bytes(b"not an image")
    fails(capsys, ["train", "--data", str(tmp_path / "holey"), "--out", str(tmp_path / "r2"), *VIT], 2,
          "'c' have no readable training image")


def test_a_refused_resume_changes_nothing_on_disk(done, capsys):
    before = snapshot(done)
    fails(capsys, ["train", "--out", str(done), "--epochs", "1", *VIT, "--batch-size", "64"], 2,
          "batch_size: 128 → 64")
    assert snapshot(done) == before


def test_a_finished_run_rerun_trains_nothing(done, capsys):
    before = snapshot(done / "checkpoints")
    lines = (done / "metrics.jsonl").read_text()
    assert main(["train", "--out", str(done), "--epochs", "1", *VIT]) == 0
    assert snapshot(done / "checkpoints") == before and (done / "metrics.jsonl").read_text() == lines


def test_a_run_in_use_is_refused_and_stale_temp_folders_are_cleaned(done, capsys):
    lock = RunDir(done).root / RunDir.LOCK
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))  # a live process
    try:
        fails(capsys, ["train", "--out", str(done), "--epochs", "1", *VIT], 1, f"process {os.getppid()}")
    finally:
        lock.unlink()
    stale = done / "checkpoints" / ".last.tmp-dead"
    stale.mkdir()
    lock.write_text(json.dumps({"pid": 2**22 + 7, "host": socket.gethostname()}))  # a process that is gone
    assert main(["train", "--out", str(done), "--epochs", "1", *VIT]) == 0
    assert not stale.exists() and not lock.exists()


def test_a_full_disk_during_save_keeps_the_last_checkpoint(done, tmp_path, capsys, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(done, run)
    before = snapshot(run / "checkpoints" / "last")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(run))

    monkeypatch.setattr("safetensors.torch.save_file", disk_full)
    fails(capsys, ["train", "--out", str(run), "--epochs", "2", *VIT], 1, "No space left on device")
    assert snapshot(run / "checkpoints" / "last") == before


def test_a_diverging_run_stops_with_exit_1(tmp_path, capsys):
    fails(capsys, ["train", "--out", str(tmp_path / "r"), "--epochs", "1", *VIT, "--lr", "1e30",
                   "--set", "optim.clip_grad=null", "--set", "optim.warmup_epochs=0",
                   "--set", "max_nonfinite=1"],
          1, "non-finite")


def test_label_smoothing_is_applied_once_in_finetuning(tmp_path):
    from vitkit.runconfig import load_train_config
    from vitkit.tasks import finetune

    cfg = load_train_config(None, {"task.kind": "finetune", "model": "vit_micro_patch4_16",
                                   "out": str(tmp_path), "augment.label_smoothing": 0.1})
    parts = finetune.build(cfg)
    assert parts.objective.label_smoothing == 0.0  # the augmentation's soft targets carry the 0.1
    images, targets = parts.train.get_batch(torch.arange(4))
    _, soft = parts.train_transform((images, targets), torch.Generator().manual_seed(0))
    assert soft.max().item() == pytest.approx(0.9 + 0.1 / 10)


@pytest.mark.parametrize("command, sig, code",
                         [("train", signal.SIGINT, 130), ("pretrain", signal.SIGTERM, 143)])
def test_interrupted_runs_save_and_exit_with_the_signal(tmp_path, command, sig, code):
    argv = {"train": [], "pretrain": ["--data", "digits", "--set", "model_args.encoder.depth=1",
                                      "--set", "model_args.decoder_depth=1"]}[command]
    cmd = [sys.executable, "-m", "vitkit", command, "--out", str(tmp_path / "run"), "--epochs", "50",
           "--batch-size", "16", "--set", "log_every=1", "--set", "report=false", *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    metrics = tmp_path / "run" / "metrics.jsonl"
    while not metrics.exists() or not metrics.stat().st_size:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
        time.sleep(0.2)
    proc.send_signal(sig)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == code, output
    assert "Traceback" not in output and "checkpoint saved" in output
    assert (tmp_path / "run" / "checkpoints" / "last" / "train_state.json").is_file()


def test_a_run_with_nothing_held_out_or_logged_still_finishes(tmp_path, capsys):
    """No val split and fewer steps than log_every: no curves to draw, which must not fail the run."""
    _folder(tmp_path / "data", {"a": 10, "b": 10})
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(out), "--epochs", "2",
                 "--batch-size", "8", "--set", "data.val_fraction=0", "--set", "model_args.depth=1",
                 "--set", "amp=false"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["best"] is None and not summary["val"]
    assert "Traceback" not in capsys.readouterr().err


def test_a_run_refused_before_writing_leaves_no_folder(tmp_path, capsys):
    _folder(tmp_path / "data", {"a": 3, "b": 3})
    fails(capsys, ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                   "--batch-size", "64", "--set", "data.val_fraction=0"], 2, "lower --batch-size")
    assert not (tmp_path / "run").exists()


def test_ctrl_c_during_start_up_is_one_line(capsys, monkeypatch):
    """`import vitkit` does not import torch (the public names load on first use), so the `vitkit` script's
    own import is instant and the seconds of importing torch and the commands happen inside `main`, where a
    Ctrl-C is "interrupted" and exit 130 rather than a traceback."""
    code = ("import sys, vitkit; "
            "print('torch' in sys.modules, callable(vitkit.create_model), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "True"]

    import vitkit.cli.main as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert main(["train", "--help"]) == 130
    assert capsys.readouterr().err == "vitkit: interrupted\n"
