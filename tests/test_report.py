"""The HTML run report: built from a fake run directory, checked as text and rendered in headless Chromium."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import vitkit
from vitkit.config import PreprocessConfig
from vitkit.models import ViTConfig, VisionTransformer
from vitkit.viz.report import SECTIONS, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")


def make_run(root: Path, data_reachable: bool = True) -> Path:
    """A run directory as `vitkit train --out` leaves it, with a 2-class image folder as its data."""
    data = root / "data"
    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog"]):
        (data / name).mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 255, (20 + i, 24 - i, 3), dtype=np.uint8) // (1 + c)  # mixed sizes
            Image.fromarray(pixels).save(data / name / f"{i}.png")
    run = root / "run"
    run.mkdir()
    config = {"model": "tiny", "epochs": 2, "batch_size": 4,
              "data": {"path": str(data if data_reachable else root / "gone"), "val_fraction": 0.4,
                       "in_memory": True, "workers": 0}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    lines = []
    for step in range(1, 11):
        lines.append({"step": step, "epoch": (step - 1) // 5, "split": "train", "loss": 1.0 / step,
                      "lr": 1e-3 * step / 10, "acc1": step / 10})
        if step % 5 == 0:
            lines.append({"step": step, "epoch": step // 5 - 1, "split": "val", "loss": 1.2 / step,
                          "acc1": 0.6})
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 11, "spl')
    summary = {"val": {"acc1": 0.75, "acc5": 1.0, "num_samples": 4, "per_class_acc": {"cat": 1.0, "dog": 0.5},
                       "confusion": [[2, 0], [1, 1]], "labels": ["cat", "dog"]},
               "epochs": 2, "best_acc1": 0.75}
    (run / "summary.json").write_text(json.dumps(summary))
    cfg = ViTConfig(image_size=(16, 16), patch_size=4, num_classes=2, dim=32, depth=2, num_heads=2,
                    preprocess=PreprocessConfig(label_names=("cat", "dog")))
    torch.manual_seed(0)
    vitkit.save_pretrained(VisionTransformer(cfg), run / "checkpoints" / "best")
    (run / "figures").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(run / "figures" / "mae_reconstruction.png")
    (run / "samples").mkdir()
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(run / "samples" / "depth_0.png")
    return run


def section(page: str, key: str) -> str:
    match = re.search(rf'<section id="{key}">(.*?)</section>', page, re.S)
    assert match, f"section {key} missing"
    return match.group(1)


def test_report_has_every_section_with_content(tmp_path):
    run = make_run(tmp_path)
    path = write_report(run)
    assert path == run / "report.html"
    page = path.read_text()
    for key, title in SECTIONS:
        assert f"<h2>{title}</h2>" in section(page, key)
    assert "val_fraction" in section(page, "config")
    assert section(page, "curves").count("data:image/png;base64,") == 1
    assert (run / "figures" / "curves.png").exists()
    metrics = section(page, "metrics")
    assert "val.acc1" in metrics and "0.75" in metrics and "val.per_class_acc.dog" in metrics
    confusion = section(page, "confusion")
    assert "<table" in confusion and ">cat</th>" in confusion
    samples = section(page, "samples")
    assert samples.count("<figure") == 4  # 40 % of 10 images held out by the data module's seeded split
    assert "true " in samples and "predicted " in samples and "checkpoint" in samples.lower()
    others = section(page, "figures")
    assert "figures/mae_reconstruction.png" in others and "samples/depth_0.png" in others
    assert "figures/curves.png" not in others  # shown once, in its own section
    assert not re.search(r'(src|href)="(https?:|file:|//)', page)  # self-contained


def test_report_degrades_without_data_checkpoint_or_summary(tmp_path):
    run = make_run(tmp_path, data_reachable=False)
    page = write_report(run).read_text()
    assert "could not be reached" in section(page, "samples")
    shutil.rmtree(run / "checkpoints")
    (run / "summary.json").unlink()
    (run / "metrics.jsonl").unlink()
    page = write_report(run).read_text()
    assert "No checkpoint" in section(page, "samples")
    assert "summary.json not found" in section(page, "metrics")
    assert "No confusion matrix" in section(page, "confusion")
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "missing")


def render(html_path: Path, tmp_path: Path) -> tuple[str, list[str]]:
    """Load a page in headless Chromium; return the DOM after load and the console lines it logged."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run",
           f"--user-data-dir={tmp_path / 'ud'}",
           "--enable-logging=stderr", "--v=0", "--dump-dom", html_path.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


@needs_chromium
def test_console_check_catches_errors(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><p>x</p><script>throw new Error('boom')</script></body></html>")
    _, console = render(bad, tmp_path)
    assert any("boom" in line for line in console)


@needs_chromium
def test_report_renders_in_chromium_without_console_errors(tmp_path):
    page = write_report(make_run(tmp_path))
    dom, console = render(page, tmp_path)
    assert console == []
    images = re.search(r'data-images="(\d+) loaded (\d+)"', dom)
    assert images, "the report's load handler did not run"
    total, loaded = map(int, images.groups())
    assert total == loaded == 1 + 4 + 2  # curves, 4 samples, 2 other figures (confusion is a table)
    for key, title in SECTIONS:
        assert f'<section id="{key}"><h2>{title}</h2>' in dom
    assert 'id="render-warning"></div>' in dom  # the failure banner stayed empty


def test_many_classes_confusion_is_an_image(tmp_path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    run.mkdir()
    K = 40
    (run / "summary.json").write_text(json.dumps({"val": {"acc1": 0.5, "confusion": np.eye(K, dtype=int).tolist(),
                                                          "labels": [f"c{i}" for i in range(K)]}}))
    page = write_report(run).read_text()
    confusion = section(page, "confusion")
    assert "<table" not in confusion and confusion.count("data:image/png;base64,") == 1
    assert (run / "figures" / "confusion.png").exists()
    assert "confusion.png" not in section(page, "figures")


def test_dense_run_without_image_folder_shows_no_samples(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"model": "dpt_tiny_depth", "data": {"path": None}}))
    vitkit.save_pretrained(vitkit.create_model("dpt_tiny_depth"), run / "checkpoints" / "last")
    page = write_report(run).read_text()
    assert "The checkpoint is a DPT, not a classifier" in section(page, "samples")
