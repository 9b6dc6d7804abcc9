"""`vitkit eval` and `vitkit predict` on run directories built by hand (no training): which data and split are
scored, one preprocessing path for both, what a checkpoint holds, best vs last."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.cli.main import main
from vitkit.config import PreprocessConfig
from vitkit.engine.checkpoint import STATE_JSON
from vitkit.errors import UsageError
from vitkit.infer.images import (
    eval_dataset,
    evaluate_checkpoint,
    image_logits,
    input_transform,
    load_classifier,
    predict_images,
    predict_logits,
)
from vitkit.infer.preprocess import transforms_for
from vitkit.models import VisionTransformer, ViTConfig, create_model
from vitkit.models.probe import LinearProbe, LinearProbeConfig
from vitkit.rundir import RunDir


def image_folder(root: Path, per_class: int, seed: int) -> Path:
    """root/<a|b>/<i>.png, RGB images of mixed, non-square sizes."""
    rng = np.random.default_rng(seed)
    for c in "ab":
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (20 + 3 * i % 11, 30 - i % 7, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.png")
    return root


def tiny_classifier(crop_pct: float = 1.0, label_names: tuple[str, ...] = ("a", "b")) -> VisionTransformer:
    """A 2-class ViT with a random head (a fresh head is zero: every image would score alike)."""
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(image_size=(16, 16), patch_size=4, num_classes=2, dim=16, depth=1,
                                        num_heads=2, preprocess=PreprocessConfig(crop_pct=crop_pct,
                                                                                 label_names=label_names)))
    torch.nn.init.normal_(model.head.weight)
    return model


def make_run(root: Path, model: torch.nn.Module, data: Path, name: str = "best", epoch: int = 3) -> RunDir:
    """A run directory as training leaves it: config.yaml naming `data`, and one checkpoint."""
    run = RunDir(root / "run")
    vitkit.save_pretrained(model, run.checkpoint(name))
    (run.checkpoint(name) / STATE_JSON).write_text(json.dumps({"epoch": epoch, "best": 0.75}))
    run.write_config({"model": "tiny", "data": {"path": str(data), "val_fraction": 0.2, "split_seed": 0}})
    return run


@pytest.fixture
def setup(tmp_path):
    train = image_folder(tmp_path / "train_data", 10, seed=0)
    test = image_folder(tmp_path / "test_data", 10, seed=1)
    return make_run(tmp_path, tiny_classifier(), train), train, test


def test_eval_scores_a_separate_folder_whole_and_the_run_data_on_its_held_out_split(setup, capsys):
    run, train, test = setup
    result = evaluate_checkpoint(run.root, str(test), device="cpu")
    assert (result["split"], result["num_samples"]) == ("all", 20)  # not the 10 % a re-split would leave
    assert result["checkpoint"] == str(run.checkpoint("best"))
    for data in (str(train), None):  # the run's own data, named or by default: its held-out 20 %
        result = evaluate_checkpoint(run.root, data, device="cpu")
        assert (result["split"], result["num_samples"]) == ("val", 4)
    assert evaluate_checkpoint(run.root, str(train), split="all", device="cpu")["num_samples"] == 20
    assert evaluate_checkpoint(run.root, str(train), split="train", device="cpu")["num_samples"] == 16
    with pytest.raises(UsageError, match="--split all"):
        evaluate_checkpoint(run.root, str(test), split="val", device="cpu")

    assert main(["eval", "--checkpoint", str(run.root), "--data", str(test), "--json"]) == 0
    out, err = capsys.readouterr()
    shown = json.loads(out)
    assert (shown["num_samples"], shown["split"]) == (20, "all")
    assert shown["checkpoint"] == str(run.checkpoint("best"))
    assert f"checkpoint {run.checkpoint('best')} (best val acc1 0.75, epoch 3)" in err
    assert main(["eval", "--checkpoint", str(run.root), "--device", "cpu"]) == 0
    assert "(4 images: the val split of " in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(run.root), "--data", str(test), "--split", "val"]) != 0
    assert "use --split all" in capsys.readouterr().err


def test_eval_without_data_needs_a_run(tmp_path):
    vitkit.save_pretrained(tiny_classifier(), tmp_path / "model")
    with pytest.raises(UsageError, match="give --data"):
        evaluate_checkpoint(tmp_path / "model", device="cpu")


@pytest.mark.parametrize("crop_pct", [1.0, 0.75])
def test_eval_and_predict_preprocess_alike(tmp_path, crop_pct):
    """The logits predict computes for an image file equal those eval computes for it, crop_pct included."""
    test = image_folder(tmp_path / "test", 3, seed=2)
    model = tiny_classifier(crop_pct).eval()
    vitkit.save_pretrained(model, tmp_path / "model")
    pre = transforms_for(model)
    dataset, _, split, _ = eval_dataset(tmp_path / "model", str(test), None, pre)
    eval_logits, targets = predict_logits(model, dataset, input_transform(pre), torch.device("cpu"))
    files = sorted(test.glob("*/*.png"))  # the folder's sample order: classes, then files, sorted
    assert split == "all" and targets.tolist() == [0, 0, 0, 1, 1, 1]
    predicted = torch.stack([image_logits(model, f) for f in files])
    torch.testing.assert_close(predicted, eval_logits, atol=1e-5, rtol=1e-5)
    rows = predict_images(tmp_path / "model", [test], top_k=2, device="cpu")
    probs = torch.tensor([[t["prob"] for t in sorted(r["top"], key=lambda t: t["index"])] for r in rows])
    torch.testing.assert_close(probs, eval_logits.softmax(-1), atol=1e-5, rtol=1e-5)
    if crop_pct < 1:  # the crop matters, so the equality above is not a coincidence
        uncropped = tiny_classifier(1.0).eval()
        assert not torch.allclose(image_logits(uncropped, files[0]), predicted[0], atol=1e-4)


@pytest.mark.parametrize("build, says", [
    (lambda: create_model("mae_vit_tiny_patch4_32", encoder={"depth": 1, "dim": 32, "num_heads": 2},
                          decoder_dim=16, decoder_num_heads=2, decoder_depth=1), "vitkit reconstruct"),
    (lambda: create_model("dpt_tiny_depth"), "vitkit depth"),
    (lambda: create_model("dpt_tiny_segment"), "vitkit segment"),
    (lambda: create_model("vit_tiny_patch4_32", depth=1, dim=32, num_heads=2, num_classes=0),
     "vitkit finetune --from"),
])
def test_predict_and_eval_refuse_what_is_not_a_classifier(tmp_path, capsys, build, says):
    vitkit.save_pretrained(build(), tmp_path / "model")
    image = image_folder(tmp_path / "images", 1, seed=0) / "a" / "0.png"
    for command in (["predict", str(image)], ["eval", "--data", str(tmp_path / "images")]):
        assert main([*command, "--checkpoint", str(tmp_path / "model"), "--device", "cpu"]) != 0
        err = capsys.readouterr().err
        assert says in err and "needs a classifier" in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1


def test_a_linear_probe_predicts_with_its_run_labels(setup):
    run, train, _ = setup
    encoder = create_model("vit_tiny_patch4_32", depth=1, dim=16, num_heads=2, num_classes=0)
    probe = LinearProbe(LinearProbeConfig(encoder=encoder.config, num_classes=2))
    probe.train()(torch.randn(8, 3, 32, 32))  # BatchNorm statistics
    vitkit.save_pretrained(probe, run.checkpoint("best"))
    run.write_summary({"val": {"labels": ["cat", "dog"]}})
    classifier = load_classifier(run.root, device="cpu")
    assert isinstance(classifier.model, VisionTransformer) and classifier.label_names == ["cat", "dog"]
    image = train / "a" / "0.png"
    row = predict_images(classifier, [image], top_k=2)[0]
    assert {t["label"] for t in row["top"]} == {"cat", "dog"}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(classifier.model(x), probe.eval()(x), atol=1e-4, rtol=1e-4)
    probs = image_logits(classifier.model, image).softmax(-1)
    assert row["top"][0]["prob"] == pytest.approx(probs.max().item(), abs=1e-6)


def test_top_k_must_be_positive(setup, capsys):
    run, train, _ = setup
    for k in ("0", "-3"):
        assert main(["predict", "--checkpoint", str(run.root), str(train / "a" / "0.png"), "--top-k", k]) != 0
        assert "top-k must be ≥ 1" in capsys.readouterr().err


def test_a_run_is_scored_with_its_best_checkpoint_else_its_last(setup, tmp_path, capsys):
    run, train, _ = setup
    image = str(train / "a" / "0.png")
    vitkit.save_pretrained(tiny_classifier(), run.checkpoint("last"))
    (run.checkpoint("last") / STATE_JSON).write_text(json.dumps({"epoch": 5, "best": 0.75}))
    assert main(["predict", "--checkpoint", str(run.root), image]) == 0
    assert f"checkpoint {run.checkpoint('best')} (best val acc1 0.75, epoch 3)" in capsys.readouterr().err
    only_last = make_run(tmp_path / "other", tiny_classifier(), train, name="last", epoch=2)
    assert main(["predict", "--checkpoint", str(only_last.root), image]) == 0
    assert "(last, epoch 2; the run saved no best checkpoint)" in capsys.readouterr().err
