"""The held-out figures a run logs are computed with the model's evaluation preprocessing (`eval_split`),
as `vitkit eval` computes them: crop_pct below 1 and the squash policy included, not on the centre squares
training stores."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vitkit.cli.main import main
from vitkit.config import replace_config
from vitkit.data import build_datasets
from vitkit.data.datasets import DataConfig, resolve_data
from vitkit.data.transforms import normalize
from vitkit.infer.images import eval_dataset, input_transform, predict_logits
from vitkit.infer.preprocess import transforms_for
from vitkit.models import VisionTransformer, ViTConfig
from vitkit.runconfig import TrainConfig
from vitkit.rundir import RunDir
from vitkit.tasks.base import eval_split
from vitkit.weights import load_pretrained, save_pretrained

CPU = torch.device("cpu")


def image_folder(root: Path, per_class: int = 10) -> Path:
    """root/<a|b>/<i>.png: non-square RGB images with detail near the borders (so a crop changes logits)."""
    rng = np.random.default_rng(0)
    for c in "ab":
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            h, w = 24 + 4 * (i % 3), 40 - 3 * (i % 4)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def tiny(resize: str, crop_pct: float) -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(image_size=(16, 16), patch_size=4, num_classes=2, dim=16, depth=1,
                                        num_heads=2))
    model.config.preprocess = replace_config(model.config.preprocess, resize=resize, crop_pct=crop_pct,
                                             label_names=("a", "b"))
    torch.nn.init.normal_(model.head.weight)
    return model.eval()


@pytest.mark.parametrize("resize, crop_pct, redecoded", [("crop", 1.0, False), ("crop", 0.5, True),
                                                         ("squash", 1.0, True)])
@pytest.mark.parametrize("in_memory", ["always", "never"])
def test_eval_split_scores_as_vitkit_eval(tmp_path, resize, crop_pct, redecoded, in_memory):
    data = image_folder(tmp_path / "data")
    model = tiny(resize, crop_pct)
    cfg = TrainConfig(data=resolve_data(DataConfig(path=str(data), val_fraction=0.3, in_memory=in_memory),
                                        3, 16))
    splits = build_datasets(cfg.data)  # what training decodes: 16×16 centre squares
    val, transform = eval_split(cfg, splits, model)
    assert (val is splits.val) == (not redecoded)
    got, targets = predict_logits(model, val, transform, CPU)

    run = RunDir(tmp_path / "run")  # `vitkit eval` of a run on that data: its val split, its preprocessing
    save_pretrained(model, run.checkpoint("last"))
    run.write_config({"data": {"path": str(data), "val_fraction": 0.3}})
    pre = transforms_for(model)
    dataset, _, split, _ = eval_dataset(run.checkpoint("last"), None, None, pre)
    want, want_targets = predict_logits(model, dataset, input_transform(pre), CPU)
    assert split == "val" and len(want) == 6 and torch.equal(targets, want_targets)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)

    storage, _ = predict_logits(model, splits.val, lambda b, g: (normalize(b[0], pre.config.mean,
                                                                            pre.config.std), b[1]), CPU)
    assert torch.allclose(storage, want, atol=1e-4) == (not redecoded)  # the old way differs when it should


def test_a_run_logs_what_vitkit_eval_reports(tmp_path, capsys):
    """End to end: a classifier whose preprocessing centre-crops half the image. The val loss the run logs
    (and picks its best checkpoint by) is the cross-entropy of the logits `vitkit eval` computes, and the
    summary's held-out accuracy is what `vitkit eval RUN` prints."""
    data = image_folder(tmp_path / "data", per_class=12)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--data", str(data), "--model", "vit_tiny_patch4_32",
                 "--set", "data.image_size=16", "--set", "model_args.dim=16", "--set", "model_args.depth=1",
                 "--set", "model_args.num_heads=2", "--set", "model_args.preprocess.crop_pct=0.5",
                 "--set", "data.val_fraction=0.5", "--set", "optim.warmup_epochs=0", "--lr", "1e-2",
                 "--epochs", "3", "--batch-size", "4", "--device", "cpu", "--no-amp"]) == 0
    capsys.readouterr()
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last_val = [row for row in logged if row["split"] == "val"][-1]

    model = load_pretrained(out / "checkpoints" / "last").eval()
    pre = transforms_for(model)
    dataset, _, split, _ = eval_dataset(out / "checkpoints" / "last", None, None, pre)
    logits, targets = predict_logits(model, dataset, input_transform(pre), CPU)
    assert split == "val" and len(targets) == 12
    assert abs(last_val["loss"] - math.log(2)) > 1e-3  # the head has learnt something: inputs matter
    assert F.cross_entropy(logits, targets).item() == pytest.approx(last_val["loss"], abs=1e-5)

    summary = json.loads((out / "summary.json").read_text())
    assert main(["eval", "--checkpoint", str(out / "checkpoints" / "last"), "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_samples"] == summary["val"]["num_samples"] == 12
    assert result["acc1"] == pytest.approx(summary["val"]["acc1"])
    assert result["confusion"] == summary["val"]["confusion"]
