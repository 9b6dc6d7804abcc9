"""ONNX export (`vitkit export`, `vitkit.export.export_onnx`) and ONNX inference (`vitkit predict --onnx`,
`OnnxClassifier`): the checker passes, onnxruntime matches torch to 1e-4 in fp32 at batch 1 and 5 (and at a
second size when dynamic), the metadata round-trips, the CLI prints what torch's predict prints, and mistakes
are one-line errors (exit 2)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnx", reason="ONNX export tests need onnx: pip install 'vitkit[onnx]'")
pytest.importorskip("onnxscript", reason="ONNX export tests need onnxscript: pip install 'vitkit[onnx]'")
pytest.importorskip("onnxruntime", reason="ONNX export tests need onnxruntime: pip install 'vitkit[onnx]'")

import onnx  # noqa: E402

import vitkit  # noqa: E402
from vitkit.cli.main import main  # noqa: E402
from vitkit.config import PreprocessConfig, config_to_dict  # noqa: E402
from vitkit.errors import UsageError  # noqa: E402
from vitkit.export import export_onnx, onnx_max_abs_diff, read_onnx_metadata  # noqa: E402
from vitkit.export.onnx import export_target  # noqa: E402
from vitkit.infer.onnx import OnnxClassifier  # noqa: E402
from vitkit.models.dpt import DPT, DPTConfig  # noqa: E402
from vitkit.models.mae import MAEConfig, MaskedAutoencoder  # noqa: E402
from vitkit.models.registry import build_model, config_from_json_dict  # noqa: E402
from vitkit.models.resnetv2 import ResNetV2Config  # noqa: E402
from vitkit.models.vit import RopeConfig, ViTConfig  # noqa: E402

TOL = 1e-4
PRE = PreprocessConfig(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), crop_pct=0.875,
                       label_names=("ant", "bee", "cat", "dog"), resize="squash")
TINY = {"image_size": (32, 32), "patch_size": 8, "dim": 32, "depth": 2, "num_heads": 2}
TRUNK = ResNetV2Config(layers=(1, 1), channels=(16, 32), stem_width=8, num_groups=8)


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Give zero-initialised weights (heads, [CLS]; not biases) random values, so outputs differ by input;
    a DPT's convolutions get LeCun-normal weights and positive biases, so its ReLU-ended depth is not ~0."""
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(std=0.5)
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and isinstance(model, DPT):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="linear")  # std 1/√fan_in
                if m.bias is not None:
                    m.bias.fill_(0.1)
        if isinstance(model, DPT) and model.config.task == "depth":
            model.head.conv3.weight.abs_()  # on ReLU features: depth > 0 everywhere before the final ReLU
    return model.eval()


def _model(kind: str) -> torch.nn.Module:
    encoder = ViTConfig(**TINY, num_classes=0)
    dpt = {"encoder": encoder, "block_taps": (0, 1), "features": (8, 16), "strides": (4, 8), "fusion_dim": 8}
    builders = {
        "vit": lambda: build_model(ViTConfig(**TINY, num_classes=4, preprocess=PRE)),
        "hybrid": lambda: build_model(ViTConfig(**{**TINY, "patch_size": 1, "depth": 1}, num_classes=4,
                                                backbone=TRUNK)),
        "mae": lambda: MaskedAutoencoder(MAEConfig(encoder=ViTConfig(**TINY, num_classes=0,
                                                                     pos_embed="sincos"),
                                                   decoder_dim=16, decoder_depth=1, decoder_num_heads=2)),
        "registers": lambda: build_model(ViTConfig(**TINY, num_classes=4, num_register_tokens=2,
                                                   layer_scale_init=0.1, qk_norm=True)),
        "rope": lambda: build_model(ViTConfig(**TINY, num_classes=4, pos_embed="none", rope=RopeConfig())),
        "depth": lambda: DPT(DPTConfig(**dpt)),
        "segment": lambda: DPT(DPTConfig(**dpt, task="segment", num_classes=3)),
    }
    return _randomise(builders[kind]())


def _check_against_torch(model: torch.nn.Module, path, sizes) -> None:
    onnx.checker.check_model(str(path), full_check=True)
    gen = torch.Generator().manual_seed(1)
    for batch, h, w in sizes:
        images = torch.randn(batch, 3, h, w, generator=gen)
        assert onnx_max_abs_diff(model, path, images) <= TOL, (batch, h, w)
    with torch.no_grad():  # the outputs compared are not ~0 (an absolute tolerance would then say nothing)
        out = export_target(model).module(images)
    assert out.abs().mean() > 0.05 and (out != 0).float().mean() > 0.3


FIXED = [(1, 32, 32), (5, 32, 32)]
OTHER = [(2, 24, 40), (1, 48, 16)]  # grids 3×5 and 6×2 for a 4×4 model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, path) of `kind` exported once per module (exports take seconds), keyed by (kind, dynamic)."""
    cache = {}

    def get(kind: str, dynamic: bool):
        if (kind, dynamic) not in cache:
            model = _model(kind)
            path = tmp_path_factory.mktemp("onnx") / f"{kind}.onnx"
            cache[kind, dynamic] = model, export_onnx(model, path, dynamic=dynamic)
        return cache[kind, dynamic]
    return get


@pytest.mark.parametrize("kind, dynamic", [
    ("vit", False), ("vit", True), ("hybrid", False), ("mae", True), ("depth", False), ("segment", False),
    pytest.param("depth", True, marks=pytest.mark.slow),
    pytest.param("segment", True, marks=pytest.mark.slow),
    pytest.param("hybrid", True, marks=pytest.mark.slow),  # ~40 s: symbolic TF-SAME padding in the trunk
    pytest.param("registers", True, marks=pytest.mark.slow),  # + LayerScale and QK-norm
    pytest.param("rope", True, marks=pytest.mark.slow),  # rotary positions computed in the graph
])
def test_onnxruntime_matches_torch(exported, kind, dynamic):
    model, path = exported(kind, dynamic)
    _check_against_torch(model, path, FIXED + (OTHER if dynamic else []))
    if kind == "vit" and dynamic:  # the learned position embeddings are resampled inside the graph
        assert "Resize" in {node.op_type for node in onnx.load(str(path)).graph.node}
    if kind == "vit" and not dynamic:  # a static export keeps its size: another one is refused, not wrong
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        with pytest.raises(Exception, match="(?i)dimension|shape"):
            session.run(None, {"images": np.zeros((1, 3, 24, 40), np.float32)})


def test_explicit_attention_path_exports_in_fp32(tmp_path, monkeypatch):
    import vitkit.layers.attention as attention

    monkeypatch.setattr(attention, "use_explicit_attention", lambda q: True)
    model = _model("vit")
    path = export_onnx(model, tmp_path / "m.onnx", dynamic=True)
    _check_against_torch(model, path, FIXED + OTHER[:1])


def test_metadata_round_trips(exported):
    model, path = exported("vit", False)
    meta = read_onnx_metadata(path)
    assert json.loads(meta["vitkit.preprocess"]) == config_to_dict(PRE)  # every field, as the config holds it
    assert config_from_json_dict(json.loads(meta["vitkit.config"])) == model.config
    assert meta["vitkit.task"] == "classifier" and meta["vitkit.output"] == "logits"
    assert json.loads(meta["vitkit.input_size"]) == [32, 32]
    assert json.loads(meta["vitkit.labels"]) == list(PRE.label_names)
    assert json.loads(meta["vitkit.dynamic"]) == ["batch"]
    assert meta["vitkit.version"] == vitkit.__version__
    runner = OnnxClassifier(path, device="cpu")
    assert runner.preprocess == vitkit.transforms_for(model)  # the same evaluation preprocessing
    assert runner.preprocess.config.resize == "squash"


def test_onnx_classifier_runs_like_the_classification_pipeline(exported):
    model, path = exported("vit", False)
    runner = OnnxClassifier(path, device="cpu", batch_size=2)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (20 + 4 * i, 28, 3), dtype=np.uint8) for i in range(3)]
    expected = vitkit.pipeline("image-classification", model, device="cpu", top_k=2)(images)
    got = runner(images, top_k=2)
    assert [[t["label"] for t in r] for r in got] == [[t["label"] for t in r] for r in expected]
    assert np.allclose([t["score"] for r in got for t in r], [t["score"] for r in expected for t in r],
                       atol=1e-5)
    assert runner(images[0], top_k=1)[0]["label"] == expected[0][0]["label"]  # one image → one result


@pytest.fixture(scope="module")
def classifier_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx_predict")
    rng = np.random.default_rng(0)
    (root / "photos").mkdir()
    for i in range(6):  # noisy flat colours of several sizes: the random classifier tells them apart
        pixels = rng.integers(0, 255, 3) + rng.normal(0, 40, (40 + 8 * i, 56, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / f"photos/{i}.png")
    torch.manual_seed(0)
    model = _model("vit")
    model.config.preprocess = vitkit.replace_config(PRE, resize="crop")  # scale + centre crop (vitkit's own)
    vitkit.save_pretrained(model, root / "ckpt")
    return root


def test_predict_onnx_prints_what_torch_predict_prints(classifier_files, capsys):
    root = classifier_files
    assert main(["export", str(root / "ckpt"), "--format", "onnx", "--out", str(root / "m.onnx")]) == 0
    assert "max abs diff" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(root / "ckpt"), str(root / "photos"), "--json"]) == 0
    torch_rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["predict", "--onnx", str(root / "m.onnx"), str(root / "photos"), "--json"]) == 0
    onnx_rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(onnx_rows) == len(torch_rows) == 6
    for a, b in zip(torch_rows, onnx_rows, strict=True):
        assert a["image"] == b["image"] and [t["label"] for t in a["top"]] == [t["label"] for t in b["top"]]
        assert np.allclose([t["prob"] for t in a["top"]], [t["prob"] for t in b["top"]], atol=1e-5)
    assert len({r["top"][0]["label"] for r in torch_rows}) > 1  # the comparison can tell labels apart
    printed = {}
    for source in (["--checkpoint", str(root / "ckpt")], ["--onnx", str(root / "m.onnx")]):
        assert main(["predict", *source, str(root / "photos"), "--top-k", "2"]) == 0
        printed[source[0]] = [line.split() for line in capsys.readouterr().out.splitlines()]
    for a, b in zip(printed["--checkpoint"], printed["--onnx"], strict=True):  # "IMAGE:  label p  label p"
        assert a[0::2] == b[0::2] and np.allclose(list(map(float, a[2::2])), list(map(float, b[2::2])),
                                                  atol=1.5e-3)


def _one_line_error(capsys, argv, says):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1, err


def test_mistakes_are_one_line_errors(classifier_files, exported, tmp_path, capsys, monkeypatch):
    root = classifier_files
    _one_line_error(capsys, ["export", str(root / "ckpt"), "--format", "tflite"], "unknown export format")
    from vitkit.models.resnetv2 import ResNetV2

    vitkit.save_pretrained(ResNetV2(TRUNK), tmp_path / "resnet")
    _one_line_error(capsys, ["export", str(tmp_path / "resnet"), "--out", str(tmp_path / "r.onnx")],
                    "cannot export a ResNetV2")
    _one_line_error(capsys, ["predict", "--onnx", str(tmp_path / "missing.onnx"), str(root / "photos")],
                    "no such ONNX file")
    _, depth = exported("depth", False)
    _one_line_error(capsys, ["predict", "--onnx", str(depth), str(root / "photos")],
                    "not a classifier")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    _one_line_error(capsys, ["export", str(root / "ckpt"), "--out", str(tmp_path / "x.onnx")],
                    "pip install 'vitkit[onnx]'")


def test_antialiased_position_resampling_refuses_a_dynamic_export(tmp_path):
    model = _randomise(build_model(ViTConfig(**TINY, num_classes=4, pos_antialias=True)))
    with pytest.raises(UsageError, match="export without --dynamic"):
        export_onnx(model, tmp_path / "m.onnx", dynamic=True)


def test_a_failed_export_leaves_the_file_it_replaces(exported, tmp_path, monkeypatch):
    """The file is written and checked beside the target and moved into place only then: an export that
    fails (here: the checker) or is interrupted keeps the earlier file byte for byte, and leaves no
    scratch."""
    _, good = exported("vit", False)
    target = tmp_path / "model.onnx"
    target.write_bytes(good.read_bytes())

    def broken(*args, **kwargs):
        raise KeyboardInterrupt  # as Ctrl-C while checking

    monkeypatch.setattr(onnx.checker, "check_model", broken)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(_model("rope"), target)
    assert target.read_bytes() == good.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    monkeypatch.undo()
    assert export_onnx(_model("rope"), target) == target and target.read_bytes() != good.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_onnxruntime_providers_follow_the_device(monkeypatch):
    """`--device cuda:1` runs on that GPU (onnxruntime's device_id), not on GPU 0; what onnxruntime cannot
    run on is refused in one line."""
    import onnxruntime as ort

    from vitkit.infer.onnx import providers_for

    gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: gpu)
    assert providers_for("cuda:1") == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert providers_for("cuda") == [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    for device in ("cpu:1", "cuda:x", "mps"):
        with pytest.raises(UsageError, match="use --device cpu"):
            providers_for(device)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(UsageError, match="cannot run on 'cuda:0'"):
        providers_for("cuda:0")
