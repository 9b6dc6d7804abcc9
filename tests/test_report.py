"""The HTML run report: built from fake run directories of each task, checked as text and rendered in
headless Chromium."""

import json
import logging
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
from vitkit.errors import UsageError
from vitkit.models import VisionTransformer, ViTConfig, create_model
from vitkit.models.probe import LinearProbe, LinearProbeConfig
from vitkit.rundir import RunDir
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
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(run / "figures" / "attention_distance.png")
    return run


def section(page: str, key: str) -> str:
    match = re.search(rf'<section id="{key}">(.*?)</section>', page, re.S)
    assert match, f"section {key} missing"
    return match.group(1)


def sections(page: str) -> list[str]:
    return re.findall(r'<section id="(\w+)">', page)


CLASSIFY = ["config", "curves", "metrics", "confusion", "samples", "figures"]


def test_report_of_a_classify_run(tmp_path):
    run = make_run(tmp_path)
    path = write_report(run)
    assert path == RunDir(run).report
    page = path.read_text()
    assert sections(page) == CLASSIFY  # no reconstructions or dense predictions for a classifier
    for key, title in SECTIONS:
        if key in CLASSIFY:
            assert f"<h2>{title}</h2>" in section(page, key) and f'href="#{key}"' in page
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
    assert "figures/attention_distance.png" in others
    assert "figures/curves.png" not in others  # shown once, in its own section
    assert not re.search(r'(src|href)="(https?:|file:|//)', page)  # self-contained


def test_sections_without_material_are_left_out(tmp_path, caplog):
    run = RunDir(make_run(tmp_path, data_reachable=False))
    with caplog.at_level(logging.WARNING):
        page = write_report(run.root).read_text()
    assert sections(page) == [key for key in CLASSIFY if key != "samples"]
    assert any("Sample predictions" in r.getMessage() and "gone" in r.getMessage() for r in caplog.records)
    shutil.rmtree(run.checkpoints)
    run.summary.unlink()
    run.metrics.unlink()
    page = write_report(run.root).read_text()
    assert sections(page) == ["config", "curves", "figures"]  # curves: the PNG the first report drew
    assert "<section" not in write_report(tmp_path).read_text()  # not a run at all: still a page
    with pytest.raises(UsageError, match="not a run directory"):
        write_report(tmp_path / "missing")


def test_a_run_it_cannot_fully_show_still_gets_a_report(tmp_path, caplog):
    run = RunDir(make_run(tmp_path))
    (run.checkpoint("best") / "model.safetensors").write_bytes(b"torn")
    run.config.write_text("data: [unclosed")
    with caplog.at_level(logging.WARNING):
        page = write_report(run.root).read_text()
    assert "samples" not in sections(page) and "metrics" in sections(page)
    assert any("left out" in r.getMessage() for r in caplog.records)


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
    assert total == loaded == 1 + 4 + 1  # curves, 4 samples, 1 other figure (confusion is a table)
    for key, title in SECTIONS:
        assert (f'<section id="{key}"><h2>{title}</h2>' in dom) == (key in CLASSIFY)
    assert 'id="render-warning"></div>' in dom  # the failure banner stayed empty


def test_many_classes_confusion_is_an_image(tmp_path):
    pytest.importorskip("matplotlib")
    run = RunDir(tmp_path / "run")
    K = 40
    run.write_summary({"val": {"acc1": 0.5, "confusion": np.eye(K, dtype=int).tolist(),
                               "labels": [f"c{i}" for i in range(K)]}})
    page = write_report(run.root).read_text()
    confusion = section(page, "confusion")
    assert "<table" not in confusion and confusion.count("data:image/png;base64,") == 1
    assert run.figure("confusion.png").exists()
    assert sections(page) == ["metrics", "confusion"]  # not again under other figures


def test_a_dense_run_shows_its_predictions(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_config({"model": "dpt_tiny_depth", "data": {"path": None}})
    vitkit.save_pretrained(vitkit.create_model("dpt_tiny_depth"), run.checkpoint("last"))
    run.figures.mkdir()
    Image.fromarray(np.full((8, 24, 3), 90, np.uint8)).save(run.figure("dense_examples.png"))
    page = write_report(run.root).read_text()
    assert sections(page) == ["config", "dense"]  # no samples, confusion or a repeat under other figures
    assert section(page, "dense").count("data:image/png;base64,") == 1


def image_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_an_mae_pretrain_run_shows_reconstructions_and_its_loss(tmp_path):
    run = RunDir(tmp_path / "run")
    data = image_folder(tmp_path / "data")
    run.write_config({"model": "mae", "data": {"path": str(data), "val_fraction": 0.4}})
    mae = create_model("mae_vit_tiny_patch4_32", encoder={"depth": 1, "dim": 32, "num_heads": 2},
                       decoder_dim=16, decoder_num_heads=2, decoder_depth=1)
    vitkit.save_pretrained(mae, run.checkpoint("last"))
    vitkit.save_pretrained(mae.export_encoder(), run.export("encoder"))
    run.metrics.write_text("".join(json.dumps({"step": s, "split": split, "loss": 1 / s}) + "\n"
                                   for s in (1, 2, 3) for split in ("train", "val")))
    run.write_summary({"method": "mae", "val": {"loss": 0.3}})
    page = write_report(run.root).read_text()
    assert sections(page) == ["config", "curves", "metrics", "reconstructions"]
    shown = section(page, "reconstructions")
    assert shown.count("<figure") == 4 and "mask ratio 0.75" in shown.lower()  # 40 % of 10 held out
    assert section(page, "curves").count("data:image/png;base64,") == 1


@pytest.mark.parametrize("exported", [True, False])
def test_a_linprobe_run_shows_its_confusion_and_predictions(tmp_path, exported):
    run = RunDir(make_run(tmp_path))
    shutil.rmtree(run.checkpoints)
    encoder = create_model("vit_tiny_patch4_32", image_size=16, depth=1, dim=16, num_heads=2, num_classes=0)
    probe = LinearProbe(LinearProbeConfig(encoder=encoder.config, num_classes=2))
    probe.train()(torch.randn(8, 3, 16, 16))  # BatchNorm statistics
    vitkit.save_pretrained(probe, run.checkpoint("best"))
    if exported:
        vitkit.save_pretrained(probe.eval().to_classifier(), run.export("classifier"))
    page = write_report(run.root).read_text()
    assert sections(page) == CLASSIFY
    samples = section(page, "samples")
    assert samples.count("<figure") == 4 and ("predicted cat" in samples or "predicted dog" in samples)
    assert ("exported classifier" in samples) == exported


def test_the_report_spells_no_run_file_name():
    """Run file names live in vitkit.rundir only (RunDir); the report modules use its names."""
    import vitkit.viz.curves
    import vitkit.viz.report
    import vitkit.viz.samples

    for module in (vitkit.viz.report, vitkit.viz.samples, vitkit.viz.curves):
        text = Path(module.__file__).read_text()
        for name in (RunDir.METRICS, RunDir.SUMMARY, RunDir.CONFIG, RunDir.REPORT, f'"{RunDir.CHECKPOINTS}"'):
            assert name not in text, (module.__name__, name)
