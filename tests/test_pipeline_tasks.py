"""The dense, MAE and attention pipelines on tiny random models saved to disk: result kinds, shapes at the
input image's size, one image vs a list, batching that changes nothing, and their options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import vitkit
from vitkit.errors import UsageError
from vitkit.infer.dense import depth_image
from vitkit.models import create_model


def saved(tmp_path, model, name="model"):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # away from zero-initialised heads
    return vitkit.save_pretrained(model.eval(), tmp_path / name)


def image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_depth_estimation(tmp_path):
    path = saved(tmp_path, create_model("dpt_tiny_depth"))
    pipe = vitkit.pipeline("depth-estimation", path, device="cpu", batch_size=2, max_side=32)
    one = pipe(image(20, 27))
    assert one["depth"].shape == (20, 27) and one["depth"].dtype == np.float32
    assert one["kind"] == "disparity" and "image" not in one
    coloured = pipe(image(20, 27), colorize=True)["image"]
    assert coloured.shape == (20, 27, 3) and coloured.dtype == np.uint8
    assert np.array_equal(coloured, depth_image(one))
    inputs = [image(20, 27), image(33, 17, 1), image(20, 27, 2)]  # two input sizes in one batch
    many = pipe(inputs)
    assert [r["depth"].shape for r in many] == [(20, 27), (33, 17), (20, 27)]
    for result, x in zip(many, inputs, strict=True):
        np.testing.assert_allclose(result["depth"], pipe(x)["depth"], atol=1e-5)
    assert pipe.describe()["labels"] == [] and json.dumps(pipe.describe())


def test_image_segmentation(tmp_path):
    model = create_model("dpt_tiny_segment")
    model.config.encoder.preprocess.label_names = ("sky", "road", "car", "tree")
    path = saved(tmp_path, model)
    pipe = vitkit.pipeline("image-segmentation", path, device="cpu", max_side=32)
    result = pipe([image(20, 27)])[0]
    labels = result["labels"]
    assert labels.shape == (20, 27) and labels.dtype == np.int64 and labels.min() >= 0 and labels.max() < 4
    assert result["class_names"] == ["sky", "road", "car", "tree"] == pipe.describe()["labels"]
    assert result["present"] == [result["class_names"][i] for i in np.unique(labels)]
    assert result["overlay"].shape == (20, 27, 3) and result["overlay"].dtype == np.uint8
    plain = pipe(image(20, 27), alpha=0.0)["overlay"]
    assert np.array_equal(plain, image(20, 27))  # alpha 0: the image itself


def test_dense_squash_reads_the_models_size(tmp_path):
    model = create_model("dpt_tiny_depth", encoder={"preprocess": {"resize": "squash"}})
    pipe = vitkit.pipeline("depth-estimation", model, device="cpu")
    assert pipe.preprocess.dense_size((20, 27), 8, 512) == (64, 64)
    assert pipe(image(20, 27))["depth"].shape == (20, 27)
    fit = vitkit.pipeline("depth-estimation", create_model("dpt_tiny_depth"), device="cpu")
    assert fit.preprocess.dense_size((24, 28), 8, 512) == (24, 32)  # patch multiples, aspect kept
    assert fit.preprocess.dense_size((200, 270), 8, 64) == (48, 64)


def tiny_mae():
    return create_model("mae_vit_tiny_patch4_32", encoder={"depth": 1, "dim": 32, "num_heads": 2},
                        decoder_dim=16, decoder_num_heads=2, decoder_depth=1, mask_ratio=0.5)


def test_mae_reconstruction(tmp_path):
    path = saved(tmp_path, tiny_mae())
    pipe = vitkit.pipeline("mae-reconstruction", path, device="cpu", batch_size=2)
    assert pipe.options["mask_ratio"] == 0.5  # the model's
    inputs = [image(40, 50), image(32, 32, 1), image(60, 30, 2)]
    results = pipe(inputs, seed=3)
    for r in results:
        assert set(r) == {"original", "masked", "reconstruction", "reconstruction_visible", "loss"}
        assert all(r[k].shape == (32, 32, 3) and r[k].dtype == np.uint8 for k in r if k != "loss")
        assert isinstance(r["loss"], float) and r["loss"] > 0
    again = vitkit.pipeline("mae-reconstruction", path, device="cpu", batch_size=1)(inputs, seed=3)
    for a, b in zip(results, again, strict=True):  # batching changes nothing: image i uses seed + i
        assert np.array_equal(a["masked"], b["masked"]) and a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    alone = pipe(inputs[1], seed=4)
    assert np.array_equal(alone["masked"], results[1]["masked"])
    hidden = (pipe(inputs[0], mask_ratio=0.0)["masked"] != results[0]["original"]).any()
    assert not hidden  # nothing masked: the masked panel is the original
    with pytest.raises(UsageError, match="mask_ratio"):
        pipe(inputs[0], mask_ratio=1.0)


def tiny_vit(**overrides):
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch4_32", depth=2, dim=32, num_heads=2, num_classes=3, **overrides)
    torch.nn.init.normal_(model.head.weight)
    return model.eval()


@pytest.mark.parametrize("overrides", [{}, {"class_token": False, "pool": "avg"}])
def test_attention(tmp_path, overrides):
    path = saved(tmp_path, tiny_vit(**overrides))
    pipe = vitkit.pipeline("attention", path, device="cpu")
    result = pipe(image(40, 50))
    assert result["map"].shape == (40, 50) and result["map"].dtype == np.float32
    assert 0 <= result["map"].min() and result["map"].max() <= 1 and result["map"].max() > 0.9
    assert result["grid"] == [8, 8] and result["patch_map"].shape == (8, 8)
    assert result["overlay"].shape == (40, 50, 3) and result["overlay"].dtype == np.uint8
    assert result["prediction"]["label"].startswith("class ") and 0 < result["prediction"]["score"] <= 1
    shows = "[CLS]" if not overrides else "mean attention"
    assert shows in result["titles"][0]
    mean = pipe(image(40, 50), method="cls", layer=0)["patch_map"]
    heads = [pipe(image(40, 50), method="cls", layer=0, head=h)["patch_map"] for h in range(2)]
    np.testing.assert_allclose(mean, (heads[0] + heads[1]) / 2, atol=1e-6)
    with pytest.raises(UsageError, match="method='cls'"):
        pipe(image(40, 50), head=0)
    with pytest.raises(UsageError, match="out of range"):
        pipe(image(40, 50), method="cls", head=2)
    assert len(pipe([image(40, 50), image(20, 20)])) == 2


def test_attention_map_covers_only_what_a_crop_shows():
    model = tiny_vit(preprocess={"crop_pct": 0.5})
    result = vitkit.pipeline("attention", model, device="cpu")(image(40, 80))
    top, left, height, width = vitkit.transforms_for(model).region((40, 80))
    assert (top, left, height, width) == pytest.approx((10, 30, 20, 20))  # shorter side 40 → crop half
    outside = result["map"].copy()
    outside[10:30, 30:50] = 0
    assert not outside.any() and result["map"][10:30, 30:50].max() == pytest.approx(1.0)


def test_an_hf_dpt_reads_images_as_hfs_processor_does(tmp_path):
    """An HF DPT + DPTImageProcessor: squashed input equal to HF's pixel values, depth equal to HF's
    prediction resized (bilinear) to the image, on a non-square image."""
    transformers = pytest.importorskip("transformers")
    import torch.nn.functional as F
    from PIL import Image

    config = transformers.DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                    intermediate_size=64, image_size=64, patch_size=16,
                                    backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32],
                                    fusion_hidden_size=16)
    torch.manual_seed(0)
    hf = transformers.DPTForDepthEstimation(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp_path / "hf")
    processor = transformers.DPTImageProcessor(size={"height": 64, "width": 64})
    processor.save_pretrained(tmp_path / "hf")
    picture = Image.fromarray(image(48, 72))
    pipe = vitkit.pipeline("depth-estimation", tmp_path / "hf", device="cpu")
    assert (pipe.preprocess.config.resize, pipe.preprocess.config.interpolation) == ("squash", "bicubic")
    pixels = processor(picture, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(pipe.preprocess.load_dense(picture, 16, 512)[1], pixels[0], atol=1e-5, rtol=0)
    with torch.no_grad():
        theirs = F.interpolate(hf(pixels).predicted_depth[:, None], size=(48, 72), mode="bilinear")[0, 0]
    np.testing.assert_allclose(pipe(picture)["depth"], theirs.numpy(), rtol=1e-4, atol=1e-4)
