"""HF preprocessor_config.json on import: what vitkit reproduces exactly is read (DPT's under the encoder),
what it cannot is a warning and a LoadReport note, printed once by `vitkit predict` and the pipelines."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

import vitkit
from vitkit.cli.main import main
from vitkit.convert.hf_preprocess import with_hf_preprocessing


def hf_dir(tmp_path, name, processor, **overrides):
    """A tiny vitkit preset in the transformers layout, with `processor` as its preprocessor_config.json."""
    folder = tmp_path / name
    vitkit.save_pretrained(vitkit.create_model(name, **overrides), folder, format="hf")
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


def vit_processor(**settings):
    return {"image_processor_type": "ViTImageProcessor", "do_resize": True,
            "size": {"height": 32, "width": 32}, "resample": 3, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6], **settings}


def test_a_processor_vitkit_reproduces_loads_without_notes(tmp_path, caplog):
    folder = hf_dir(tmp_path, "vit_tiny_patch4_32", vit_processor())
    with caplog.at_level(logging.INFO, logger="vitkit.weights"):
        model, report = vitkit.load_checkpoint(folder)
    assert report.preprocessing_notes == [] and not any(r.levelno >= logging.WARNING for r in caplog.records)
    pre = model.config.preprocess
    assert pre.mean == (0.1, 0.2, 0.3) and pre.std == (0.4, 0.5, 0.6) and pre.interpolation == "bicubic"


def test_center_crop_warns_and_is_reported_not_mapped(tmp_path, caplog):
    processor = vit_processor(size={"shortest_edge": 36}, do_center_crop=True,
                              crop_size={"height": 32, "width": 32}, resample=1)
    folder = hf_dir(tmp_path, "vit_tiny_patch4_32", processor)
    with caplog.at_level(logging.WARNING, logger="vitkit.weights"):
        model, report = vitkit.load_checkpoint(folder)
    notes = report.preprocessing_notes
    assert [n.split(":")[0].split("=")[0] for n in notes] == ["resample", "size", "do_center_crop"]
    assert "resizes the whole image to 32×32" in notes[2] and "lanczos" in notes[0]
    assert model.config.preprocess.resize == "squash"  # the converter's policy, not a guessed crop
    assert model.config.preprocess.mean == (0.1, 0.2, 0.3)  # what can be read still is
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "do_center_crop=true" in warned[0] and "preprocessing:" in str(report)


def test_vitkit_predict_and_the_pipeline_print_the_warning_once(tmp_path, capsys, caplog):
    processor = vit_processor(do_center_crop=True, crop_size={"height": 32, "width": 32})
    folder = hf_dir(tmp_path, "vit_tiny_patch4_32", processor, num_classes=3)
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", "--checkpoint", str(folder), str(tmp_path / "a.png"), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert (captured.err + caplog.text).count("do_center_crop=true") == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        pipe = vitkit.pipeline("image-classification", folder, device="cpu")
        pipe([np.zeros((20, 20, 3), np.uint8)] * 2)
    assert caplog.text.count("do_center_crop=true") == 1


def test_dpt_reads_mean_and_std_under_its_encoder_and_notes_the_aspect_resize(tmp_path):
    processor = {"image_processor_type": "DPTImageProcessor", "do_resize": True, "keep_aspect_ratio": True,
                 "ensure_multiple_of": 14, "size": {"height": 64, "width": 64}, "resample": 2,
                 "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                 "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    model, report = vitkit.load_checkpoint(hf_dir(tmp_path, "dpt_tiny_depth", processor))
    pre = model.config.encoder.preprocess
    assert pre.mean == (0.485, 0.456, 0.406) and pre.std == (0.229, 0.224, 0.225)
    assert pre.interpolation == "bilinear"
    [note] = report.preprocessing_notes
    assert note.startswith("keep_aspect_ratio=true, ensure_multiple_of=14") and "(patch 8)" in note


def test_rescaling_and_no_normalisation_fold_into_mean_and_std():
    cfg = vitkit.create_model("vit_tiny_patch4_32").config
    raw = {"do_rescale": False, "image_mean": [127.5] * 3, "image_std": [63.75] * 3, "size": 32}
    folded, notes = with_hf_preprocessing(cfg, raw)  # HF: (x − 127.5) / 63.75 on 8-bit x
    assert notes == [] and folded.preprocess.mean == pytest.approx((0.5,) * 3)
    assert folded.preprocess.std == pytest.approx((0.25,) * 3)
    x = np.arange(256.0)
    vitkit_input = (x / 255 - folded.preprocess.mean[0]) / folded.preprocess.std[0]
    np.testing.assert_allclose(vitkit_input, (x - 127.5) / 63.75, atol=1e-12)
    plain, notes = with_hf_preprocessing(cfg, {"do_normalize": False, "rescale_factor": 1 / 127.5})
    assert notes == [] and plain.preprocess.mean == (0.0,) * 3  # HF: x / 127.5
    np.testing.assert_allclose((x / 255 - 0) / plain.preprocess.std[0], x / 127.5, atol=1e-12)


@pytest.mark.parametrize("settings,setting", [
    ({"do_resize": False}, "do_resize=false"),
    ({"size": {"height": 48, "width": 48}}, "size=48×48"),
    ({"do_pad": True, "size_divisor": 32}, "do_pad=true"),
])
def test_each_setting_vitkit_cannot_reproduce_is_named(setting, settings):
    cfg = vitkit.create_model("vit_tiny_patch4_32").config
    _, notes = with_hf_preprocessing(cfg, {"size": {"height": 32, "width": 32}, **settings})
    assert len(notes) == 1 and notes[0].startswith(setting) and "vitkit" in notes[0]
