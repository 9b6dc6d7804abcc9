"""`vitkit train / eval / predict` end to end on a tiny model and the built-in digits set."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitkit.cli.main import build_parser, main

TINY = ["--model", "vit_tiny_patch2_28", "--set", "data.image_size=8", "--set", "model_args.dim=32",
        "--set", "model_args.depth=2", "--set", "model_args.num_heads=2", "--device", "cpu", "--no-amp"]
RUN = ["--epochs", "2", "--batch-size", "64", "--lr", "3e-3", "--set", "optim.warmup_epochs=0.5",
       "--set", "augment.crop_scale=null", *TINY]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--out", str(out), *RUN]) == 0
    return out


def test_train_writes_the_run_directory(run_dir, capsys):
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "checkpoints/last/model.safetensors",
                 "checkpoints/last/config.json", "checkpoints/last/train_state.json",
                 "checkpoints/best/model.safetensors"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    from vitkit.data import load_builtin

    num_train, num_val = len(load_builtin("digits", "train", 1)), len(load_builtin("digits", "val", 1))
    assert summary["val"]["num_samples"] == num_val and summary["steps"] == 2 * (num_train // 64)
    assert summary["val"]["acc1"] > 0.3  # two epochs are far above chance (0.1)
    assert len(summary["val"]["confusion"]) == 10


def _snapshot(run: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and modification time of every checkpoint file, and the bytes of metrics.jsonl."""
    files = sorted((run / "checkpoints").rglob("*.*"))
    return {**{str(f.relative_to(run)): (f.read_bytes(), f.stat().st_mtime_ns) for f in files},
            "metrics.jsonl": ((run / "metrics.jsonl").read_bytes(), 0)}


def test_rerun_resumes_finished_run(run_dir, capsys):
    """A finished run, run again, loads its checkpoint and trains no further: no epoch, no new log line, and
    no checkpoint rewritten (a run that started over would rewrite all three, with new timings)."""
    capsys.readouterr()
    before, summary = _snapshot(run_dir), json.loads((run_dir / "summary.json").read_text())
    assert main(["train", "--out", str(run_dir), *RUN]) == 0
    out = capsys.readouterr().out
    assert "held-out accuracy" in out
    assert not re.search(r"^epoch \d+/\d+", out, re.M)  # the progress display prints a line per trained epoch
    assert _snapshot(run_dir) == before
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == summary["steps"]


def test_longer_rerun_continues_from_the_saved_step(tmp_path, capsys):
    """Asked for more epochs, a run continues from its checkpoint: epoch 1's log lines stay as they were
    (timings included) and only epoch 2 is trained."""
    out = tmp_path / "run"
    run = [*RUN, "--set", "log_every=1"]
    assert main(["train", "--out", str(out), *run, "--epochs", "1"]) == 0
    first = (out / "metrics.jsonl").read_text()
    steps = json.loads((out / "summary.json").read_text())["steps"]
    capsys.readouterr()
    assert main(["train", "--out", str(out), *run, "--epochs", "2"]) == 0
    text = capsys.readouterr().out
    assert "epoch 1/2" not in text and f"epoch 2/2  step {2 * steps} " in text
    after = (out / "metrics.jsonl").read_text()
    assert after.startswith(first)
    train_steps = [e["step"] for e in map(json.loads, after.splitlines()) if e["split"] == "train"]
    assert train_steps == list(range(1, 2 * steps + 1))


def test_eval_matches_training_summary(run_dir, capsys):
    assert main(["eval", "--checkpoint", str(run_dir), "--data", "digits", "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert result["acc1"] == pytest.approx(summary["val"]["acc1"])
    assert set(result["per_class_acc"]) == {str(i) for i in range(10)}
    assert main(["eval", "--checkpoint", str(run_dir / "checkpoints" / "last"), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("top-1 ") and "top-5" in text and len(text.splitlines()) == 11


def test_flip_tta_in_summary_and_eval(run_dir, tmp_path, capsys):
    """A run trained with flips also reports flip TTA, and `vitkit eval --flip-tta` agrees with it; a run
    without flips does not report it."""
    assert "val_flip_tta" not in json.loads((run_dir / "summary.json").read_text())
    out = tmp_path / "flips"
    assert main(["train", "--out", str(out), *RUN, "--epochs", "1", "--set", "augment.hflip=0.5"]) == 0
    assert "with flip test-time augmentation" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert main(["eval", "--checkpoint", str(out), "--data", "digits", "--json", "--device", "cpu",
                 "--flip-tta"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["acc1"] == pytest.approx(summary["val_flip_tta"]["acc1"])


def test_flip_tta_averages_the_mirror_image():
    import torch

    from vitkit.infer.images import FlipTTA

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 3))
    x = torch.randn(5, 2, 4, 4)
    expected = (model(x) + model(x.flip(-1))) / 2
    assert torch.allclose(FlipTTA(model)(x), expected)
    assert not torch.allclose(FlipTTA(model)(x), model(x), atol=1e-3)
    assert torch.allclose(FlipTTA(model)(x), FlipTTA(model)(x.flip(-1)), atol=1e-6)  # mirror-invariant


def test_predict_top_k_json(run_dir, tmp_path, capsys):
    from vitkit.data import load_builtin

    val = load_builtin("digits", "val", 1)
    paths = []
    for i in range(2):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(val.images[i, 0].numpy().astype(np.uint8), mode="L").save(path)
        paths.append(str(path))
    assert main(["predict", "--checkpoint", str(run_dir), *paths, "--top-k", "3", "--json",
                 "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in rows] == paths
    for r in rows:
        probs = [t["prob"] for t in r["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert all(t["label"] == str(t["index"]) for t in r["top"])


def test_every_train_option_is_explained():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in ("train", "eval", "predict"):
        for action in sub.choices[name]._actions:
            assert action.help, f"vitkit {name} {action.option_strings} has no help"


def test_bad_override_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path), "--set", "optim.lrr=1"]) == 2  # a usage mistake
    assert "did you mean lr" in capsys.readouterr().err


@pytest.mark.parametrize("task, metric", [("depth", "abs_rel"), ("segment", "dataset_miou")])
def test_train_task_runs_a_dense_model(tmp_path, capsys, task, metric):
    out = tmp_path / task
    code = main(["train", "--task", task, "--epochs", "1", "--batch-size", "8", "--out", str(out),
                 "--set", "task.train_scenes=16", "--set", "task.val_scenes=8", "--set", "report=false"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == task and summary["model"].startswith("dpt_")
    assert np.isfinite(summary["val"][metric])
    assert f"{task}: 1 epochs" in capsys.readouterr().out
    import yaml

    assert yaml.safe_load((out / "config.yaml").read_text())["task"]["kind"] == task  # saved with the run
