"""MAE: parity with HF ViTMAEForPreTraining, masking conventions, non-square inputs, encoder export."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from vitkit.convert.hf_vit_mae import from_vitkit, to_vitkit
from vitkit.layers import patchify, sincos_pos_embed_2d, unpatchify
from vitkit.models import build_model, create_model, get_model_config
from vitkit.models.mae import MAEConfig, MaskedAutoencoder, mae_config

transformers = pytest.importorskip("transformers")


def tiny_hf(norm_pix_loss: bool = False, image_size: int = 32, patch: int = 8):
    """A random tiny HF MAE whose fixed position tables hold 2-D sin-cos values (as hub checkpoints do)."""
    cfg = transformers.ViTMAEConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=image_size, patch_size=patch, decoder_hidden_size=24, decoder_num_hidden_layers=2,
        decoder_num_attention_heads=3, decoder_intermediate_size=48, norm_pix_loss=norm_pix_loss,
        mask_ratio=0.75, layer_norm_eps=1e-6)
    torch.manual_seed(0)
    model = transformers.ViTMAEForPreTraining(cfg).eval()
    grid = (image_size // patch,) * 2
    with torch.no_grad():
        tables = ((model.vit.embeddings.position_embeddings, 32), (model.decoder.decoder_pos_embed, 24))
        for table, dim in tables:
            table.copy_(torch.cat([torch.zeros(1, dim), sincos_pos_embed_2d(dim, grid)])[None])
        for p in model.parameters():  # HF leaves tokens at zero: make every weight count
            if p.abs().sum() == 0 and p.requires_grad:
                p.normal_(std=0.02)
    return model


def to_ours(hf_model) -> MaskedAutoencoder:
    cfg, sd = to_vitkit(hf_model.config.to_dict(), hf_model.state_dict())
    model = build_model(cfg).eval()
    model.load_state_dict(sd, strict=True)
    return model


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_parity_with_hf(norm_pix_loss: bool) -> None:
    hf = tiny_hf(norm_pix_loss)
    ours = to_ours(hf)
    assert ours.config.encoder.pos_embed == "sincos"
    images = torch.randn(3, 3, 32, 32)
    noise = torch.rand(3, 16)
    with torch.no_grad():
        theirs = hf(pixel_values=images, noise=noise)
        mine = ours(images, mask_ratio=0.75, noise=noise)
    assert torch.equal(mine.mask, theirs.mask)
    assert torch.equal(mine.ids_restore, theirs.ids_restore)
    assert mine.mask.sum(1).tolist() == [12, 12, 12]
    torch.testing.assert_close(mine.pred, theirs.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(mine.loss, theirs.loss, atol=1e-4, rtol=0)


def test_hub_layout_round_trip_through_hf(tmp_path) -> None:
    """from_vitkit writes the hub layout; HF loads it and computes the same outputs."""
    ours = to_ours(tiny_hf())
    hf_cfg, hf_sd = from_vitkit(ours.config, ours.state_dict())
    (tmp_path / "config.json").write_text(json.dumps(hf_cfg))
    save_file({k: v.contiguous() for k, v in hf_sd.items()}, str(tmp_path / "model.safetensors"))
    hf = transformers.ViTMAEForPreTraining.from_pretrained(tmp_path).eval()
    images, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    with torch.no_grad():
        theirs = hf(pixel_values=images, noise=noise).logits
        torch.testing.assert_close(theirs, ours(images, noise=noise).pred, atol=1e-4, rtol=0)
    # and back again, exactly
    cfg2, sd2 = to_vitkit(hf_cfg, hf_sd)
    assert cfg2 == ours.config
    assert set(sd2) == set(ours.state_dict())
    assert all(torch.equal(sd2[k], v) for k, v in ours.state_dict().items())


def test_non_sincos_encoder_table_kept_as_learned() -> None:
    hf = tiny_hf()
    with torch.no_grad():
        hf.vit.embeddings.position_embeddings.zero_()  # what a freshly initialised HF model holds
    ours = to_ours(hf)
    assert ours.config.encoder.pos_embed == "learn"
    images, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(images, noise=noise).loss, hf(pixel_values=images, noise=noise).loss,
                                   atol=1e-4, rtol=0)


def tiny_mae(**overrides) -> MaskedAutoencoder:
    return create_model("mae_vit_tiny_patch4_32", **{"encoder": {"depth": 2, "dim": 32, "num_heads": 2},
                                                    "decoder_dim": 16, "decoder_num_heads": 2, **overrides})


def test_mask_ratio_zero_means_no_masking_no_shuffle() -> None:
    model = tiny_mae().eval()
    images = torch.randn(2, 3, 32, 32)
    out = model(images, mask_ratio=0.0)
    assert out.mask.sum() == 0
    assert torch.equal(out.ids_restore, torch.arange(64).expand(2, -1))
    with torch.no_grad():  # the encoder saw every patch in order: same latent as the plain ViT forward
        latent, _, _ = model.forward_encoder(images, 0.0)
        torch.testing.assert_close(latent, model.encoder.forward_features(images))
    # no hidden patch: the loss is the reconstruction error over all patches
    torch.testing.assert_close(out.loss, ((out.pred - patchify(images, 4)) ** 2).mean())


def test_loss_counts_hidden_patches_only() -> None:
    model = tiny_mae().eval()
    images = torch.randn(2, 3, 32, 32)
    noise = torch.rand(2, 64)
    out = model(images, noise=noise)
    visible = out.mask == 0
    # change only visible patches of the target, keeping the predictions: the loss must not move
    target = patchify(images, 4)
    target[visible] += 10.0
    changed = unpatchify(target, 4, (8, 8))
    torch.testing.assert_close(model.forward_loss(changed, out.pred, out.mask), out.loss)
    target[~visible] += 1.0
    assert model.forward_loss(unpatchify(target, 4, (8, 8)), out.pred, out.mask) != out.loss


def test_non_square_inputs() -> None:
    """vitkit computes sin-cos positions for the actual 2-D grid (HF resamples its decoder table in 1-D)."""
    model = tiny_mae().eval()
    images = torch.randn(2, 3, 16, 40)  # grid 4 × 10
    noise = torch.rand(2, 40)
    with torch.no_grad():
        out = model(images, noise=noise)
    assert out.pred.shape == (2, 40, 48) and out.mask.shape == (2, 40) and out.mask.sum() == 2 * 30
    # the decoder's positions for this grid are exactly the 2-D table of that grid
    torch.testing.assert_close(model.decoder.pos_embed((4, 10))[0], sincos_pos_embed_2d(16, (4, 10)))
    # deterministic given the noise: a rebuilt copy gives the same loss
    ref = MaskedAutoencoder(model.config).eval()
    ref.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ref(images, noise=noise).loss, out.loss)
    with pytest.raises(ValueError, match="multiples of the patch size"):
        model(torch.randn(1, 3, 30, 32))


def test_export_encoder_round_trip(tmp_path) -> None:
    model = tiny_mae().eval()
    images = torch.randn(2, 3, 32, 32)
    vit = model.export_encoder().eval()
    assert vit.config.pos_embed == "learn"
    with torch.no_grad():
        torch.testing.assert_close(vit.forward_features(images), model.encoder.forward_features(images))
    fixed = model.export_encoder(learnable_pos_embed=False)
    assert fixed.config.pos_embed == "sincos"
    weights = pytest.importorskip("vitkit.weights")
    weights.save_pretrained(vit, tmp_path / "enc")
    loaded = weights.load_pretrained(tmp_path / "enc").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_features(images), vit.forward_features(images))


def test_presets() -> None:
    cfg = get_model_config("mae_vit_base_patch16")
    sizes = (cfg.encoder.dim, cfg.encoder.depth, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_num_heads)
    assert sizes == (768, 12, 512, 8, 16)
    assert get_model_config("mae_vit_huge_patch14").encoder.patch_size == 14
    assert isinstance(get_model_config("mae_vit_tiny_patch4_32"), MAEConfig)
    assert mae_config("L/16").encoder.pos_embed == "sincos"
