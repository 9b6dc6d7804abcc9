"""Which weights a run keeps and exports: the best checkpoint on raw or EMA weights, label names on every
exported classifier."""

from __future__ import annotations

import json

import torch
import yaml
from safetensors.torch import load_file

from vitkit import load_pretrained
from vitkit.cli.main import main

FAST = ["--epochs", "1", "--batch-size", "128", "--set", "report=false", "--set", "amp=false",
        "--set", "model_args.depth=1", "--set", "model_args.dim=32", "--set", "model_args.num_heads=2"]


def test_best_weights_ema_selects_and_saves_the_ema(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *FAST, "--set", "optim.ema_decay=0.9",
                 "--set", "best_weights=ema"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best"]["metric"] == "ema_acc1" and "ema_acc1" in summary["last"]["val"]
    best = load_file(str(run / "checkpoints" / "best" / "model.safetensors"))
    state = load_file(str(run / "checkpoints" / "last" / "train_state.safetensors"))
    raw = load_file(str(run / "checkpoints" / "last" / "model.safetensors"))
    assert all(torch.equal(best[k], state[f"ema.{k}"]) for k in best)  # the EMA, not a copy of last
    assert not all(torch.equal(best[k], raw[k]) for k in best)
    card = read_card(run / "checkpoints" / "best")  # the run's facts: data, best score, recipe
    assert card["datasets"] == ["builtin:digits"] and card["vitkit_recipe"]["optim.ema_decay"] == 0.9
    scores = card["model-index"][0]["results"][0]["metrics"]
    assert scores == [{"type": "acc1", "name": "top-1 accuracy", "value": summary["best"]["value"]}]


def test_a_linear_probe_exports_a_classifier_with_label_names(tmp_path):
    pre = tmp_path / "pre"
    assert main(["pretrain", "--out", str(pre), "--data", "digits", "--epochs", "1", "--batch-size", "128",
                 "--set", "report=false", "--set", "model_args.encoder.depth=1",
                 "--set", "model_args.encoder.dim=32", "--set", "model_args.encoder.num_heads=2",
                 "--set", "model_args.decoder_dim=16", "--set", "model_args.decoder_depth=1",
                 "--set", "model_args.decoder_num_heads=2"]) == 0
    assert main(["linprobe", "--from", str(pre), "--out", str(tmp_path / "lp"), "--data", "digits",
                 "--epochs", "1", "--batch-size", "128", "--set", "report=false"]) == 0
    classifier = load_pretrained(tmp_path / "lp")  # a run directory resolves to its exported classifier
    assert classifier.config.preprocess.label_names == tuple(str(i) for i in range(10))
    assert not classifier.training
    encoder_card, classifier_card = read_card(pre / "encoder"), read_card(tmp_path / "lp" / "classifier")
    assert encoder_card["pipeline_tag"] == "image-feature-extraction"
    assert encoder_card["vitkit_recipe"]["task.method"] == "mae"
    assert classifier_card["pipeline_tag"] == "image-classification"
    assert classifier_card["vitkit_recipe"]["task.kind"] == "linprobe"
    assert classifier_card["model-index"][0]["results"][0]["metrics"][0]["type"] == "acc1"


def read_card(folder):
    """The YAML front matter of FOLDER/README.md."""
    return yaml.safe_load((folder / "README.md").read_text().split("---\n")[1])
