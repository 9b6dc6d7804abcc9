"""Model cards: save_pretrained's README.md (front matter the Hub reads, description, usage), a run's facts on
its exports and checkpoints, and a user's own README.md left alone."""

from __future__ import annotations

import pytest
import yaml

import vitkit
from vitkit.model_card import MARKER, ModelCard
from vitkit.runconfig import load_train_config
from vitkit.tasks.base import run_card


def read_card(folder):
    text = (folder / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


@pytest.mark.parametrize("name,overrides,kind", [
    ("vit_micro_patch4_16", {}, "image-classification"),
    ("vit_micro_patch4_16", {"num_classes": 0}, "image-feature-extraction"),
    ("dpt_tiny_depth", {}, "depth-estimation"),
    ("dpt_tiny_segment", {}, "image-segmentation"),
    ("mae_vit_tiny_patch4_32", {}, "image-feature-extraction"),
])
def test_card_front_matter_and_body_follow_the_model(tmp_path, name, overrides, kind):
    model = vitkit.create_model(name, **overrides)
    vitkit.save_pretrained(model, tmp_path)
    meta, body = read_card(tmp_path)
    assert meta["library_name"] == "vitkit" and meta["pipeline_tag"] == kind and meta["license"] == "other"
    assert "vision-transformer" in meta["tags"] and "model-index" not in meta  # no run: no figures
    params = sum(p.numel() for p in model.parameters())
    assert f"{params / 1e6:.2f} M parameters" in body and MARKER in body
    assert 'vitkit.load_pretrained("DIR")' in body
    assert vitkit.load_pretrained(tmp_path).config == model.config  # the card does not disturb loading


def test_classifier_card_describes_input_preprocessing_and_cli(tmp_path):
    vitkit.save_pretrained(vitkit.create_model("vit_tiny_patch4_32"), tmp_path)
    _, body = read_card(tmp_path)
    assert "width 192, depth 6, 3 heads" in body and "3 × 32 × 32" in body
    assert "mean [0.4914, 0.4822, 0.4465]" in body and "vitkit predict --checkpoint DIR" in body


def test_hf_export_card_is_for_transformers(tmp_path):
    model = vitkit.create_model("vit_micro_patch4_16", in_chans=3, preprocess={"mean": (0.5,) * 3,
                                                                              "std": (0.5,) * 3})
    vitkit.save_pretrained(model, tmp_path, format="hf")
    meta, body = read_card(tmp_path)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-classification"
    assert "AutoModelForImageClassification.from_pretrained" in body


def test_run_facts_become_dataset_metrics_and_recipe(tmp_path):
    card = ModelCard(license="mit", dataset="builtin:digits", metrics={"acc1": 0.975, "loss": 0.1},
                     metrics_note="held-out, epoch 3", recipe={"epochs": 3, "optim.lr": 0.001},
                     base_model="hf-hub:org/encoder@" + "0" * 40)
    vitkit.save_pretrained(vitkit.create_model("vit_micro_patch4_16"), tmp_path / "m", card=card)
    meta, body = read_card(tmp_path / "m")
    assert meta["license"] == "mit" and meta["datasets"] == ["builtin:digits"]
    assert meta["base_model"] == "org/encoder"
    result = meta["model-index"][0]["results"][0]
    assert result["task"]["type"] == "image-classification"
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"acc1": 0.975, "loss": 0.1}
    assert meta["vitkit_recipe"] == {"epochs": 3, "optim.lr": 0.001}
    assert "| top-1 accuracy | 0.975 |" in body and "| optim.lr | `0.001` |" in body


def test_run_card_takes_the_recipe_from_the_run_config_without_local_paths():
    cfg = load_train_config(None, {"epochs": 7, "data.path": "/home/me/data/flowers", "optim.lr": 1e-3})
    card = run_card(cfg, {"acc1": 0.5, "confusion": [[1]], "ema_acc5": 0.9}, "held-out")
    assert card.dataset == "flowers" and card.metrics == {"acc1": 0.5, "acc5": 0.9}
    assert card.recipe["epochs"] == 7 and card.recipe["optim.lr"] == 1e-3 and card.recipe["task.kind"]
    assert "/home/me" not in str(card)


def test_a_readme_vitkit_did_not_write_is_kept(tmp_path):
    (tmp_path / "README.md").write_text("# my notes\n")
    vitkit.save_pretrained(vitkit.create_model("vit_micro_patch4_16"), tmp_path)
    assert (tmp_path / "README.md").read_text() == "# my notes\n"
    (tmp_path / "README.md").unlink()
    vitkit.save_pretrained(vitkit.create_model("vit_micro_patch4_16"), tmp_path)
    vitkit.save_pretrained(vitkit.create_model("vit_micro_patch4_16", num_classes=0), tmp_path)
    assert read_card(tmp_path)[0]["pipeline_tag"] == "image-feature-extraction"  # its own card: rewritten


def test_a_runs_models_are_named_by_run_even_while_a_checkpoint_is_written(tmp_path):
    from vitkit.rundir import RunDir

    run = RunDir(tmp_path / "digits")
    run.root.mkdir()
    run.config.write_text("epochs: 1\n")
    for folder in (run.checkpoints / ".last.tmp-x1y2", run.export("classifier")):
        vitkit.save_pretrained(vitkit.create_model("vit_micro_patch4_16"), folder)
    assert "# digits/checkpoints/last\n" in read_card(run.checkpoints / ".last.tmp-x1y2")[1]
    assert "# digits/classifier\n" in read_card(run.export("classifier"))[1]
