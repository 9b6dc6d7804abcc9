"""Self-supervised CLI and recipes end to end on a tiny model and the built-in digits (3-channel, 32 px)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.cli.main import main
from vitkit.models import create_model
from vitkit.models.probe import LinearProbe, LinearProbeConfig
from vitkit.viz.reconstruction import reconstruct, reconstruction_figure

pytest.importorskip("vitkit.engine.trainer")

TINY = ["--set", "model_args.encoder.depth=1", "--set", "model_args.encoder.dim=32",
        "--set", "model_args.encoder.num_heads=2"]
RUN = ["--data", "digits", "--epochs", "1", "--batch-size", "128", "--set", "amp=false"]


@pytest.fixture(scope="module")
def mae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mae")
    assert main(["pretrain", "--method", "mae", "--out", str(out), *RUN, *TINY,
                 "--set", "model_args.decoder_dim=16", "--set", "model_args.decoder_num_heads=2",
                 "--set", "model_args.decoder_depth=1"]) == 0
    return out


def test_pretrain_writes_full_checkpoint_and_encoder(mae_run) -> None:
    summary = json.loads((mae_run / "summary.json").read_text())
    assert summary["method"] == "mae" and summary["steps"] > 0 and np.isfinite(summary["val"]["loss"])
    assert json.loads((mae_run / "checkpoints" / "last" / "config.json").read_text())["model_type"] == "mae"
    assert json.loads((mae_run / "encoder" / "config.json").read_text())["model_type"] == "vit"


def test_finetune_and_linprobe_from_pretrain(mae_run, tmp_path, capsys) -> None:
    assert main(["finetune", "--from", str(mae_run), "--out", str(tmp_path / "ft"), *RUN,
                 "--layer-decay", "0.75", "--drop-path", "0.1", "--label-fraction", "0.2"]) == 0
    assert "held-out accuracy" in capsys.readouterr().out
    ft = json.loads((tmp_path / "ft" / "summary.json").read_text())
    assert ft["pool"] == "avg" and 0 < ft["train_images"] < 400 and 0 <= ft["val"]["acc1"] <= 1
    assert main(["linprobe", "--from", str(mae_run), "--out", str(tmp_path / "lp"), *RUN]) == 0
    lp = json.loads((tmp_path / "lp" / "summary.json").read_text())
    assert lp["cached"] and lp["pool"] == "cls" and "classifier" in lp


def test_pretrain_refuses_a_method_model_mismatch(tmp_path, capsys) -> None:
    assert main(["pretrain", "--method", "mpp", "--model", "mae_vit_tiny_patch4_32", "--out", str(tmp_path),
                 *RUN]) == 2
    assert "not an MPP model" in capsys.readouterr().err


def test_reconstruct_writes_four_panel_pngs(mae_run, tmp_path) -> None:
    images = []
    for i, color in enumerate([(255, 0, 0), (0, 128, 255)]):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((48, 40, 3), color, np.uint8)).save(path)
        images.append(str(path))
    assert main(["reconstruct", "--checkpoint", str(mae_run), *images, "--out", str(tmp_path / "rec"),
                 "--mask-ratio", "0.5"]) == 0
    png = np.asarray(Image.open(tmp_path / "rec" / "img0_mae.png"))
    assert png.shape[1] > 4 * 160 and png.shape[2] == 3
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    assert main(["reconstruct", "--checkpoint", str(mae_run), str(broken), images[1], "--out",
                 str(tmp_path / "rec2")]) == 1  # one bad file: exit 1, the good one still written
    assert (tmp_path / "rec2" / "img1_mae.png").is_file()


def test_reconstruction_panels() -> None:
    model = create_model("mae_vit_tiny_patch4_32", encoder={"depth": 1, "dim": 32, "num_heads": 2},
                         decoder_dim=16, decoder_num_heads=2, norm_pix_loss=True)
    images = torch.rand(2, 3, 32, 32)
    rec = reconstruct(model, images, mask_ratio=0.75, seed=3)
    again = reconstruct(model, images, mask_ratio=0.75, seed=3)
    assert torch.equal(rec.mask, again.mask) and rec.mask.sum() == 2 * 48
    hidden = rec.mask[0].reshape(8, 8).repeat_interleave(4, 0).repeat_interleave(4, 1).bool()  # (32, 32)
    # visible pixels are the original in "masked" and "pasted"; hidden ones are grey / reconstructed
    torch.testing.assert_close(rec.masked[0][:, ~hidden], images[0][:, ~hidden])
    torch.testing.assert_close(rec.pasted[0][:, ~hidden], images[0][:, ~hidden])
    assert torch.allclose(rec.masked[0][:, hidden], torch.tensor(0.45))
    torch.testing.assert_close(rec.pasted[0][:, hidden], rec.reconstruction[0][:, hidden])
    figure = reconstruction_figure(rec, 1)
    assert figure.dtype == np.uint8 and figure.shape[1] > figure.shape[0] * 3


def test_linear_probe_folds_into_a_vit() -> None:
    encoder_cfg = create_model("vit_tiny_patch4_32", depth=1, dim=32, num_heads=2).config
    probe = LinearProbe(LinearProbeConfig(encoder=encoder_cfg, num_classes=5, pool="avg"))
    images = torch.randn(8, 3, 32, 32)
    probe.train()
    for _ in range(3):  # update the BatchNorm running statistics
        probe(images)
    assert not any(p.requires_grad for p in probe.encoder.parameters()) and not probe.encoder.training
    probe.eval()
    with torch.no_grad():
        features = probe.features(images)
        torch.testing.assert_close(probe(features), probe(images))
        torch.testing.assert_close(probe.to_classifier().eval()(images), probe(images), atol=1e-4, rtol=1e-4)
