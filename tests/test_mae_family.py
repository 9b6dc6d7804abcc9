"""MAE with the modern blocks: an encoder with register tokens and LayerScale pretrains through the CLI's
pretrain task, and its exported encoder computes the MAE encoder's features on unmasked input."""

from __future__ import annotations

import json

import pytest
import torch

import vitkit
from vitkit.cli.main import main

pytest.importorskip("vitkit.engine.trainer")

MODERN = ["--set", "model_args.encoder.num_register_tokens=2",
          "--set", "model_args.encoder.layer_scale_init=0.1"]


def test_mae_with_registers_and_layer_scale_pretrains_and_exports(tmp_path):
    out = tmp_path / "run"
    assert main(["pretrain", "--method", "mae", "--out", str(out), "--data", "digits", "--epochs", "1",
                 "--batch-size", "256", "--set", "amp=false", "--set", "model_args.encoder.depth=1",
                 "--set", "model_args.encoder.dim=32", "--set", "model_args.encoder.num_heads=2",
                 "--set", "model_args.decoder_dim=16", "--set", "model_args.decoder_num_heads=2",
                 "--set", "model_args.decoder_depth=1", *MODERN]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] > 0 and torch.isfinite(torch.tensor(summary["val"]["loss"]))
    mae = vitkit.load_pretrained(out / "checkpoints" / "last")
    encoder = vitkit.load_pretrained(out / "encoder")
    assert encoder.config.num_register_tokens == 2 and encoder.config.layer_scale_init == 0.1
    gamma = mae.encoder.blocks[0].ls1.gamma
    assert not torch.allclose(gamma, torch.full_like(gamma, 0.1))  # LayerScale trained
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        latent, _, _ = mae.forward_encoder(images, mask_ratio=0.0)  # (B, 1 + 2 + N, D)
        assert latent.shape[1] == 3 + 64
        torch.testing.assert_close(encoder.forward_features(images), latent, atol=1e-5, rtol=0)


def test_mae_refuses_a_rope_encoder():
    with pytest.raises(ValueError, match="RoPE"):
        vitkit.create_model("mae_vit_tiny_patch4_32", encoder={"rope": {"theta": 100.0}, "pos_embed": "none"})
