"""`vitkit.pipeline` and `vitkit.transforms_for`: every input kind, one image vs a list, the classification
pipeline against `vitkit predict`, and parity with `transformers.pipeline` on an HF model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.config import PreprocessConfig
from vitkit.errors import UsageError
from vitkit.infer.images import image_logits, predict_images
from vitkit.infer.preprocess import UnreadableInput
from vitkit.models import VisionTransformer, ViTConfig


def tiny_classifier(crop_pct: float = 1.0, **preprocess) -> VisionTransformer:
    torch.manual_seed(0)
    pre = PreprocessConfig(crop_pct=crop_pct, **preprocess)
    model = VisionTransformer(ViTConfig(image_size=(16, 16), patch_size=4, num_classes=3, dim=16, depth=1,
                                        num_heads=2, preprocess=pre))
    torch.nn.init.normal_(model.head.weight)
    return model.eval()


@pytest.fixture
def saved(tmp_path):
    model = tiny_classifier(0.875, label_names=("cat", "dog", "fox"))
    vitkit.save_pretrained(model, tmp_path / "model")
    return model, tmp_path / "model"


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (20, 27, 3), dtype=np.uint8)  # (H, W, 3), not square


def test_every_input_kind_gives_the_same_input(tmp_path, saved, rgb):
    model, _ = saved
    pre = vitkit.transforms_for(model)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    expected = pre(tmp_path / "x.png")
    assert expected.shape == (3, 16, 16) and expected.dtype == torch.float32
    kinds = [str(tmp_path / "x.png"), (tmp_path / "x.png").read_bytes(), Image.fromarray(rgb), rgb,
             rgb.astype(np.float64) / 255, torch.from_numpy(rgb), torch.from_numpy(rgb).permute(2, 0, 1),
             torch.from_numpy(rgb).permute(2, 0, 1).float() / 255]
    for image in kinds:
        torch.testing.assert_close(pre(image), expected, atol=0, rtol=0)
    batch = pre(np.stack([rgb, rgb]))  # a 4-D array is a batch
    assert batch.shape == (2, 3, 16, 16)
    torch.testing.assert_close(batch[1], expected)


def test_grey_rgba_and_palette_images_become_the_models_channels(rgb):
    pre = vitkit.transforms_for(tiny_classifier())
    rgba = Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]))
    torch.testing.assert_close(pre(rgba), pre(rgb))  # opaque alpha changes nothing
    clear = pre(Image.fromarray(np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])))
    torch.testing.assert_close(clear, torch.ones_like(clear))  # transparent → white → (1 − 0.5) / 0.5
    grey = rgb[..., 0]
    x = pre(grey)
    assert x.shape == (3, 16, 16) and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert pre(Image.fromarray(rgb).convert("P")).shape == (3, 16, 16)
    assert pre(torch.from_numpy(grey)[None]).shape == (3, 16, 16)  # (1, H, W)


@pytest.mark.parametrize("bad, says", [
    (object(), "cannot read a object"),
    (np.zeros((4, 5, 7), np.uint8), "is not an image"),
    (np.full((4, 5), 2.0), "in \\[0, 1\\]"),
    (np.zeros((4, 5), np.int64), "ambiguous"),
    ([], "no images"),
])
def test_bad_input_is_one_usage_error(bad, says):
    with pytest.raises(UsageError, match=says) as info:
        vitkit.transforms_for(tiny_classifier())(bad)
    assert "\n" not in str(info.value)


def test_an_unreadable_file_is_a_usage_error_and_an_unreadable_image(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    pipe = vitkit.pipeline("image-classification", tiny_classifier(), device="cpu")
    with pytest.raises(UnreadableInput, match="bad.png") as info:
        pipe(tmp_path / "bad.png")
    assert isinstance(info.value, UsageError)


def test_classification_single_vs_list_and_options(saved, rgb):
    model, path = saved
    pipe = vitkit.pipeline("image-classification", path, device="cpu", batch_size=2)
    one = pipe(rgb)
    assert sorted(r["label"] for r in one) == ["cat", "dog", "fox"]  # top 5 of 3 classes: all, best first
    assert [r["score"] for r in one] == sorted((r["score"] for r in one), reverse=True)
    assert sum(r["score"] for r in one) == pytest.approx(1.0, abs=1e-6)
    logits = image_logits(model, rgb)
    assert one[0]["index"] == int(logits.argmax()) and one[0]["score"] == pytest.approx(
        logits.softmax(-1).max().item(), abs=1e-6)
    images = [rgb, rgb[::-1], rgb[:, ::-1], rgb[:10]]  # 4 images in batches of 2
    many = pipe(images, top_k=1)

    def same(a, b):  # a batch of 2 and a batch of 1 round differently in the last bits of a score
        return ((a["index"], a["label"]) == (b["index"], b["label"])
                and a["score"] == pytest.approx(b["score"], abs=1e-6))

    assert len(many) == 4 and all(len(r) == 1 for r in many) and same(many[0][0], one[0])
    assert all(same(r[0], pipe(image, top_k=1)[0]) for r, image in zip(many, images, strict=True))
    with pytest.raises(UsageError, match="takes no option topk"):
        pipe(rgb, topk=2)
    with pytest.raises(UsageError, match="top_k must be"):
        pipe(rgb, top_k=0)


def test_describe_is_json(saved):
    _, path = saved
    d = vitkit.pipeline("image-classification", path, device="cpu").describe()
    assert json.loads(json.dumps(d)) == d
    assert d["labels"] == ["cat", "dog", "fox"] and d["image_size"] == [16, 16] and d["patch_size"] == 4
    assert d["preprocessing"]["resize"] == "crop" and d["preprocessing"]["crop_pct"] == 0.875
    assert d["dtype"] == "float32" and d["device"] == "cpu" and d["parameters"] > 0


def test_bf16_autocast_only_when_asked(saved, rgb):
    _, path = saved
    pipe = vitkit.pipeline("image-classification", path, device="cpu", dtype="bfloat16")
    assert pipe.dtype == torch.bfloat16 and next(pipe.model.parameters()).dtype == torch.float32
    fp32 = vitkit.pipeline("image-classification", path, device="cpu")(rgb)
    assert pipe(rgb)[0]["score"] == pytest.approx(fp32[0]["score"], abs=0.05)
    with pytest.raises(UsageError, match="dtype"):
        vitkit.pipeline("image-classification", path, device="cpu", dtype="int8")


def test_unknown_task_and_wrong_model_are_refused(saved):
    _, path = saved
    with pytest.raises(UsageError, match="unknown task"):
        vitkit.pipeline("classify", path)
    with pytest.raises(UsageError, match="needs a DPT depth model"):
        vitkit.pipeline("depth-estimation", path)


def test_predict_uses_the_pipeline_preprocessing(tmp_path, saved, rgb):
    """`vitkit predict` (a file) and the pipeline (the same pixels as an array) score alike, crop_pct too."""
    model, path = saved
    Image.fromarray(rgb).save(tmp_path / "x.png")
    row = predict_images(path, [tmp_path / "x.png"], top_k=3, device="cpu")[0]
    piped = vitkit.pipeline("image-classification", path, device="cpu")(rgb, top_k=3)
    assert [(t["label"], t["prob"]) for t in row["top"]] == [(t["label"], t["score"]) for t in piped]
    full = vitkit.pipeline("image-classification", tiny_classifier(1.0), device="cpu")(rgb, top_k=3)
    assert [t["score"] for t in full] != pytest.approx([t["score"] for t in piped], abs=1e-4)


def test_squash_resizes_without_cropping(rgb):
    pre = vitkit.transforms_for(tiny_classifier(resize="squash", interpolation="bilinear"))
    assert pre.storage_size == (16, 16)
    squashed = np.array(Image.fromarray(rgb).resize((16, 16), Image.Resampling.BILINEAR))
    expected = torch.from_numpy(squashed).permute(2, 0, 1).float() / 255 * 2 - 1
    torch.testing.assert_close(pre(rgb), expected, atol=1e-6, rtol=0)


# ---- parity with transformers ------------------------------------------------------------------------------
transformers = pytest.importorskip("transformers")


@pytest.fixture
def hf_dir(tmp_path):
    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, image_size=32, patch_size=8, num_labels=5,
                                    attn_implementation="eager")
    model = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))  # beyond the init's near-zero head: scores differ per class
    model.save_pretrained(tmp_path / "hf")
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def test_pipeline_matches_transformers_on_a_non_square_image(hf_dir, tmp_path):
    """An HF ViT + its ViTImageProcessor (PIL bilinear squash): vitkit's pipeline gives HF's probabilities."""
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    hf = transformers.pipeline("image-classification", model=str(hf_dir), device="cpu")
    theirs = {r["label"]: r["score"] for r in hf(image, top_k=5)}
    pipe = vitkit.pipeline("image-classification", hf_dir, device="cpu", top_k=5)
    assert pipe.describe()["preprocessing"]["resize"] == "squash"
    assert pipe.describe()["preprocessing"]["interpolation"] == "bilinear"
    ours = {r["label"].replace("class ", "LABEL_"): r["score"] for r in pipe(image)}
    assert ours.keys() == theirs.keys()
    for label, score in theirs.items():
        assert ours[label] == pytest.approx(score, abs=1e-4)
    processed = hf.image_processor(image, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(pipe.preprocess(image), processed, atol=1e-5, rtol=0)
    cropping = vitkit.load_pretrained(hf_dir, preprocess={"resize": "crop"})  # the test can tell them apart
    cropped = vitkit.pipeline("image-classification", cropping, device="cpu")(image)
    assert max(abs(r["score"] - theirs[r["label"].replace("class ", "LABEL_")]) for r in cropped) > 1e-3
    image.save(tmp_path / "x.png")  # a file too, as `vitkit predict` reads it
    assert predict_images(hf_dir, [tmp_path / "x.png"], top_k=1, device="cpu")[0]["top"][0]["prob"] == \
        pytest.approx(max(theirs.values()), abs=1e-4)


def test_squash_survives_a_round_trip_through_hf_export(hf_dir, tmp_path):
    model = vitkit.load_pretrained(hf_dir)
    vitkit.save_pretrained(model, tmp_path / "ours")  # vitkit format keeps the policy
    assert vitkit.load_pretrained(tmp_path / "ours").config.preprocess.resize == "squash"
    vitkit.save_pretrained(model, tmp_path / "back", format="hf")
    again = vitkit.load_pretrained(tmp_path / "back").config.preprocess
    assert (again.resize, again.interpolation, again.mean) == ("squash", "bilinear", (0.5, 0.5, 0.5))


def test_eval_squashes_as_predict_does(hf_dir, tmp_path):
    """`vitkit eval` of a squash model decodes each file as the pipeline does (not at a square storage)."""
    from vitkit.infer.images import evaluate_checkpoint

    rng = np.random.default_rng(3)
    files = []
    for c, sizes in (("0", [(48, 64), (30, 50)]), ("1", [(64, 40), (33, 33)])):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i, size in enumerate(sizes):
            files.append((tmp_path / "data" / c / f"{i}.png", int(c)))
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(files[-1][0])
    result = evaluate_checkpoint(hf_dir, str(tmp_path / "data"), device="cpu")
    pipe = vitkit.pipeline("image-classification", hf_dir, device="cpu", top_k=1)
    confusion = np.zeros((5, 5), int)
    for path, target in files:
        confusion[target, pipe(path)[0]["index"]] += 1
    assert result["num_samples"] == 4 and result["confusion"] == confusion.tolist()


def test_a_one_channel_model_reads_colour_images(rgb):
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(image_size=(16, 16), patch_size=4, num_classes=3, dim=16, depth=1,
                                        num_heads=2, in_chans=1, preprocess=PreprocessConfig(mean=(0.5,),
                                                                                             std=(0.5,))))
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    pre = vitkit.transforms_for(model)
    assert pre(rgb).shape == (1, 16, 16)
    torch.testing.assert_close(pre(rgb), pre(grey))  # Pillow's RGB → L, whatever the input kind
    result = vitkit.pipeline("attention", model, device="cpu")(rgb)
    assert result["overlay"].shape == (*rgb.shape[:2], 3)


def test_onnx_engine_agrees_with_torch_and_reuses_its_export(saved, rgb, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from vitkit.export import onnx as export

    monkeypatch.setenv("VITKIT_CACHE", str(tmp_path / "cache"))
    _, path = saved
    images = [rgb, rgb[::-1], rgb[:, ::-1], rgb[:10]]
    want = vitkit.pipeline("image-classification", path, device="cpu", top_k=3)(images)
    pipe = vitkit.pipeline("image-classification", path, device="cpu", top_k=3, engine="onnx", batch_size=3)
    got = pipe(images)
    assert len({r[0]["index"] for r in want}) > 1  # the head tells these images apart
    for a, b in zip(got, want, strict=True):
        assert [t["label"] for t in a] == [t["label"] for t in b]
        np.testing.assert_allclose([t["score"] for t in a], [t["score"] for t in b], rtol=0, atol=1e-4)
    assert pipe.describe()["engine"] == "onnx" and pipe.describe()["labels"] == ["cat", "dog", "fox"]
    files = list((tmp_path / "cache" / "onnx").glob("*/model.onnx"))
    assert len(files) == 1 and [p.name for p in files[0].parent.parent.iterdir()] == [files[0].parent.name]

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr("vitkit.infer.onnx.export_onnx", no_export)
    again = vitkit.pipeline("image-classification", path, device="cpu", top_k=3, engine="onnx")(images)
    assert again == got  # the cached file, same numbers
    other = vitkit.load_pretrained(path)
    with torch.no_grad():
        other.head.bias.add_(1.0)  # the same config with other weights: another file
    monkeypatch.setattr("vitkit.infer.onnx.export_onnx", export.export_onnx)
    vitkit.pipeline("image-classification", other, device="cpu", engine="onnx")
    assert len(list((tmp_path / "cache" / "onnx").glob("*/model.onnx"))) == 2


def test_an_exported_onnx_file_is_a_classification_pipeline(saved, rgb, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from vitkit.export import export_onnx

    _, path = saved
    onnx_path = export_onnx(path, tmp_path / "model.onnx")
    images = [rgb, rgb[::-1], rgb[:, ::-1]]
    want = vitkit.pipeline("image-classification", path, device="cpu", top_k=2)(images)
    pipe = vitkit.pipeline("image-classification", onnx_path, device="cpu", top_k=2, batch_size=2)
    got = pipe(images)
    assert len({r[0]["index"] for r in want}) > 1
    for a, b in zip(got, want, strict=True):
        assert [t["label"] for t in a] == [t["label"] for t in b] and len(a) == 2
        np.testing.assert_allclose([t["score"] for t in a], [t["score"] for t in b], rtol=0, atol=1e-4)
    assert len(pipe(rgb, top_k=1)) == 1  # one image → one result; a call's top_k wins
    for task, kwargs, message in (("depth-estimation", {}, "image-classification only"),
                                  ("image-classification", {"dtype": "bfloat16"}, "float32 only"),
                                  ("image-classification", {"topk": 3}, "no option topk")):
        with pytest.raises(UsageError, match=message):
            vitkit.pipeline(task, onnx_path, device="cpu", **kwargs)
    with pytest.raises(FileNotFoundError, match="no such ONNX file"):
        vitkit.pipeline("image-classification", tmp_path / "none.onnx", device="cpu")


def test_onnx_engine_refusals(saved, monkeypatch):
    import sys

    _, path = saved
    with pytest.raises(UsageError, match="float32 only") as info:
        vitkit.pipeline("image-classification", path, device="cpu", dtype="bfloat16", engine="onnx")
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="image-classification only"):
        vitkit.pipeline("attention", path, device="cpu", engine="onnx")
    with pytest.raises(UsageError, match="engine 'tf'"):
        vitkit.pipeline("image-classification", path, device="cpu", engine="tf")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(UsageError, match=r"pip install 'vitkit\[onnx\]'") as info:
        vitkit.pipeline("image-classification", path, device="cpu", engine="onnx")
    assert "\n" not in str(info.value)
