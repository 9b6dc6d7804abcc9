"""MAE interop via vitkit.load_pretrained: HF ViTMAE directories (load, save back), official checkpoints."""

from __future__ import annotations

import argparse

import pytest
import torch

from vitkit.errors import UsageError
from vitkit.models import create_model
from vitkit.models.mae import MaskedAutoencoder
from vitkit.models.vit import VisionTransformer

weights = pytest.importorskip("vitkit.weights")
transformers = pytest.importorskip("transformers")

from test_mae import tiny_hf  # noqa: E402


def tiny_mae() -> MaskedAutoencoder:
    return create_model("mae_vit_tiny_patch4_32", encoder={"depth": 2, "dim": 32, "num_heads": 2},
                        decoder_dim=16, decoder_num_heads=2).eval()


def test_hf_directory_loads_and_saves_back(tmp_path) -> None:
    hf = tiny_hf(norm_pix_loss=True)
    hf.save_pretrained(tmp_path / "hf")
    model, report = weights.load_checkpoint(tmp_path / "hf")
    assert isinstance(model, MaskedAutoencoder) and report.format == "hf:vit_mae" and report.clean
    assert model.config.norm_pix_loss
    images, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    model.eval()
    with torch.no_grad():
        expected = hf(pixel_values=images, noise=noise)
        out = model(images, noise=noise)
    torch.testing.assert_close(out.loss, expected.loss, atol=1e-4, rtol=0)
    weights.save_pretrained(model, tmp_path / "back", format="hf")
    again = transformers.ViTMAEForPreTraining.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(pixel_values=images, noise=noise).logits, out.pred,
                                   atol=1e-4, rtol=0)



def test_hf_decoder_position_table_that_is_not_sincos_is_refused_under_strict(tmp_path, caplog) -> None:
    hf = tiny_hf()
    with torch.no_grad():
        hf.decoder.decoder_pos_embed.normal_(std=0.5)  # a learned table: vitkit's decoder computes sin-cos
    hf.save_pretrained(tmp_path)
    with caplog.at_level("WARNING", logger="vitkit.convert"):
        with pytest.raises(UsageError, match=r"strict=True(?s:.*)unexpected: +decoder.pos_embed.weight"):
            weights.load_pretrained(tmp_path)
    assert "decoder.decoder_pos_embed is not the fixed 2-D sin-cos table" in caplog.text
    assert "cannot hold a stored table" in caplog.text
    model, report = weights.load_checkpoint(tmp_path, strict=False)
    assert report.unexpected == ["decoder.pos_embed.weight"] and not report.missing
    images, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    with torch.no_grad():
        expected = hf(pixel_values=images, noise=noise)
        latent, _, _ = model.forward_encoder(images, 0.75, noise)
        torch.testing.assert_close(latent, hf.vit(pixel_values=images, noise=noise).last_hidden_state,
                                   atol=1e-4, rtol=0)  # the encoder is exact
        assert (model(images, noise=noise).pred - expected.logits).abs().max() > 1e-2  # the decoder is not

def test_vitkit_checkpoint_keeps_the_decoder(tmp_path) -> None:
    model = tiny_mae()
    weights.save_pretrained(model, tmp_path / "full")
    loaded = weights.load_pretrained(tmp_path / "full").eval()
    assert isinstance(loaded, MaskedAutoencoder)
    images, noise = torch.randn(1, 3, 32, 32), torch.rand(1, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images, noise=noise).pred, model(images, noise=noise).pred)


def official_state_dict(model: MaskedAutoencoder, decoder: bool = True) -> dict[str, torch.Tensor]:
    """The facebookresearch/mae key layout for a vitkit MAE (what models_mae.py's state_dict holds)."""
    dim, grid = model.config.encoder.dim, (8, 8)
    from vitkit.layers import sincos_pos_embed_2d

    def table(d: int) -> torch.Tensor:
        return torch.cat([torch.zeros(1, d), sincos_pos_embed_2d(d, grid)])[None]

    sd = {"pos_embed": table(dim)}
    for k, v in model.state_dict().items():
        if k.startswith("encoder."):
            sd[k[len("encoder."):]] = v
        elif decoder and k.startswith("decoder.blocks."):
            sd["decoder_blocks." + k[len("decoder.blocks."):]] = v
        elif decoder:
            name = k[len("decoder."):]
            sd[name if name == "mask_token" else f"decoder_{name}"] = v
    if decoder:
        sd["decoder_pos_embed"] = table(model.config.decoder_dim)
    return sd


def save_official(path, state_dict) -> None:
    torch.save({"model": state_dict, "epoch": 799,
                "args": argparse.Namespace(model="mae_vit_tiny", norm_pix_loss=False)}, path)


def test_official_checkpoint_refused_by_default_then_loaded(tmp_path) -> None:
    model = tiny_mae()
    path = tmp_path / "checkpoint-799.pth"
    save_official(path, official_state_dict(model))
    with pytest.raises(ValueError, match=r"allow_pickle=\('argparse.Namespace',\)"):
        weights.load_pretrained(path)
    # head counts are not in the weights: a release-size decoder (512 wide) gets 16, else pass them
    loaded, report = weights.load_checkpoint(path, allow_pickle=("argparse.Namespace",),
                                             encoder={"num_heads": 2}, decoder_num_heads=2)
    assert report.format == "mae" and report.clean and isinstance(loaded, MaskedAutoencoder)
    assert loaded.config.encoder.pos_embed == "sincos" and loaded.config.decoder_depth == 2
    assert loaded.config.encoder.preprocess.mean == (0.485, 0.456, 0.406)  # MAE's ImageNet normalisation
    loaded.eval()
    images, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images, noise=noise).pred, model(images, noise=noise).pred)



def test_official_checkpoint_head_counts_are_never_guessed(tmp_path) -> None:
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": official_state_dict(tiny_mae())}, path)  # 32-wide encoder, 16-wide decoder
    with pytest.raises(UsageError, match=r"width 32, depth 2.*pass encoder=\{'num_heads': N\} \(or model="):
        weights.load_pretrained(path, decoder_num_heads=2)
    with pytest.raises(UsageError, match=r"width 16, depth 2.*pass decoder_num_heads=N \(or model=NAME\)"):
        weights.load_pretrained(path, encoder={"num_heads": 2})
    for given in ({"encoder": {"num_heads": 2}}, {"encoder.num_heads": 2}):
        model = weights.load_pretrained(path, decoder_num_heads=2, **given)
        assert (model.config.encoder.num_heads, model.config.decoder_num_heads) == (2, 2)
    torch.save({"model": official_state_dict(tiny_mae(), decoder=False)}, path)  # encoder only
    with pytest.raises(UsageError, match=r"pass num_heads=N \(or model=NAME\)"):
        weights.load_pretrained(path)


def test_official_decoder_position_table_that_is_not_sincos_is_refused_under_strict(tmp_path) -> None:
    sd = official_state_dict(tiny_mae())
    sd["decoder_pos_embed"] = sd["decoder_pos_embed"] + 0.1 * torch.randn_like(sd["decoder_pos_embed"])
    torch.save({"model": sd}, tmp_path / "learned.pth")
    heads = {"encoder": {"num_heads": 2}, "decoder_num_heads": 2}
    with pytest.raises(UsageError, match=r"unexpected: +decoder.pos_embed.weight"):
        weights.load_pretrained(tmp_path / "learned.pth", **heads)
    _, report = weights.load_checkpoint(tmp_path / "learned.pth", strict=False, **heads)
    assert report.unexpected == ["decoder.pos_embed.weight"]

def test_official_full_checkpoint_into_a_vit_reports_decoder_keys(tmp_path) -> None:
    model = tiny_mae()
    path = tmp_path / "full.pth"
    save_official(path, official_state_dict(model))
    vit, report = weights.load_checkpoint(path, allow_pickle=("argparse.Namespace",), strict=False,
                                          model="vit_tiny_patch4_32", depth=2, dim=32, num_heads=2,
                                          num_classes=0)
    assert isinstance(vit, VisionTransformer)
    assert "decoder_embed.weight" in report.unexpected and "mask_token" in report.unexpected
    assert any(k.startswith("decoder_blocks.") for k in report.unexpected) and not report.missing
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(vit.eval().forward_features(x), model.encoder.forward_features(x))


def test_official_encoder_only_and_finetuned(tmp_path) -> None:
    model = tiny_mae()
    path = tmp_path / "mae_pretrain.pth"
    torch.save({"model": official_state_dict(model, decoder=False)}, path)
    vit, report = weights.load_checkpoint(path, num_heads=2)
    assert report.format == "mae" and report.clean and vit.config.pos_embed == "sincos"
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(vit.eval().forward_features(x), model.encoder.forward_features(x))
    # fine-tuned: learned positions, fc_norm + head, no final norm (models_vit.py with global_pool)
    ft = {k: v for k, v in official_state_dict(model, decoder=False).items() if not k.startswith("norm.")}
    ft["pos_embed"] = ft["pos_embed"] + 0.01 * torch.randn_like(ft["pos_embed"])
    ft.update({"fc_norm.weight": torch.ones(32), "fc_norm.bias": torch.zeros(32),
               "head.weight": torch.randn(10, 32), "head.bias": torch.zeros(10)})
    save_official(tmp_path / "ft.pth", ft)
    clf, report = weights.load_checkpoint(tmp_path / "ft.pth", allow_pickle=("argparse.Namespace",),
                                          num_heads=2)
    assert report.clean and clf.config.pool == "avg" and clf.config.num_classes == 10
    assert clf(x).shape == (1, 10)
    loaded_mae, report = weights.load_checkpoint(tmp_path / "ft.pth", allow_pickle=("argparse.Namespace",),
                                                 format="mae", model="mae_vit_tiny_patch4_32", strict=False,
                                                 encoder={"depth": 2, "dim": 32, "num_heads": 2})
    assert {"encoder.head.weight", "encoder.fc_norm.weight"} <= set(report.unexpected)
    assert any(k.startswith("decoder.") for k in report.missing)
