"""Hub names (``hf-hub:ORG/NAME[@REV]``), offline: each test builds a Hugging Face cache under tmp_path in the
layout huggingface_hub reads (models--ORG--NAME/refs/<rev>, snapshots/<commit>/<files>) and sets
HF_HUB_OFFLINE, so nothing is downloaded; what loads must compute what the source model computes."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
from safetensors.torch import save_file

import vitkit
from vitkit import hub
from vitkit.cli.main import main
from vitkit.errors import UsageError

constants = pytest.importorskip("huggingface_hub.constants")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty offline Hugging Face cache (env for subprocesses, constants for this process)."""
    root = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(root))
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root / "hub"))
    return root / "hub"


def put_in_cache(cache, repo_id, source, commit=COMMIT, ref="main"):
    """Copy the files of folder `source` into the cache as repo `repo_id` at `commit`, named by `ref`."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(source, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)


def randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            base = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
    return module.eval()


def assert_close(a, b):
    assert a.shape == b.shape and (a - b).abs().max().item() <= 1e-4


# ---- (a) HF ViT, (b) HF DPT --------------------------------------------------------------------------------
def test_hf_vit_from_the_cache_computes_what_hf_computes(cache, tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=64, image_size=32, patch_size=8, num_labels=5,
                                    attn_implementation="eager")
    hf = randomise(transformers.ViTForImageClassification(config))
    hf.save_pretrained(tmp_path / "src")
    put_in_cache(cache, "org/tiny-vit", tmp_path / "src")
    images = torch.randn(2, 3, 32, 32)
    for name in ("hf-hub:org/tiny-vit", f"hf-hub:org/tiny-vit@{COMMIT}"):
        model, report = vitkit.load_checkpoint(name)
        assert report.format == "hf:vit" and report.clean and str(cache) in report.path
        with torch.no_grad():
            assert_close(model(images), hf(pixel_values=images).logits)


def test_hf_dpt_from_the_cache_computes_what_hf_computes(cache, tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                    intermediate_size=64, image_size=64, patch_size=16,
                                    backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32],
                                    fusion_hidden_size=16)
    hf = randomise(transformers.DPTForDepthEstimation(config))
    hf.save_pretrained(tmp_path / "src")
    put_in_cache(cache, "org/tiny-dpt", tmp_path / "src", ref="v1")
    model = vitkit.load_pretrained("hf-hub:org/tiny-dpt@v1")
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert_close(model(images), hf(pixel_values=images).predicted_depth)


# ---- (c) a timm repo ---------------------------------------------------------------------------------------
def timm_repo(folder, arch="vit_micro_patch4_16", **extra):
    """A timm-style repo of a random vit_micro_patch4_16 (timm key names, config.json naming the
    architecture); returns the source model. Its 4 heads at width 96 are in no size table: they must come from
    the preset."""
    model = randomise(vitkit.create_model("vit_micro_patch4_16"), seed=1)
    state = {k: v for k, v in model.state_dict().items() if k not in ("pos_embed.weight", "cls_pos_embed")}
    state["pos_embed"] = torch.cat([model.state_dict()["cls_pos_embed"],
                                    model.state_dict()["pos_embed.weight"]], dim=1)  # (1, 1 + N, D)
    folder.mkdir(parents=True)
    save_file(state, str(folder / "model.safetensors"))
    labels = [f"digit {i}" for i in range(10)]
    config = {"architecture": arch, "num_classes": 10, "global_pool": "token",
              "pretrained_cfg": {"input_size": [1, 16, 16], "interpolation": "bilinear", "crop_pct": 0.875,
                                 "mean": [0.4], "std": [0.3], "label_names": labels}, **extra}
    (folder / "config.json").write_text(json.dumps(config))
    return model


def test_timm_repo_loads_through_its_architectures_preset(cache, tmp_path):
    source = timm_repo(tmp_path / "src")
    put_in_cache(cache, "timm/vit_micro_patch4_16.test", tmp_path / "src")
    model, report = vitkit.load_checkpoint("hf-hub:timm/vit_micro_patch4_16.test")
    assert report.format == "timm-dir" and report.clean
    assert model.config.num_heads == 4
    pre = model.config.preprocess
    assert (pre.mean, pre.std, pre.interpolation, pre.crop_pct) == ((0.4,), (0.3,), "bilinear", 0.875)
    assert pre.label_names[3] == "digit 3"
    images = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(images), source(images))


def test_a_repo_with_pickled_weights_only_loads_them(cache, tmp_path):
    from safetensors.torch import load_file

    source = timm_repo(tmp_path / "src")
    weights = tmp_path / "src" / "model.safetensors"
    torch.save(load_file(str(weights)), tmp_path / "src" / "pytorch_model.bin")
    weights.unlink()
    put_in_cache(cache, "org/bin-only", tmp_path / "src")
    model = vitkit.load_pretrained("hf-hub:org/bin-only")
    images = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(images), source(images))


def test_a_repo_without_weights_says_so(cache, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text("{}")
    put_in_cache(cache, "org/no-weights", tmp_path / "src")
    with pytest.raises(UsageError, match="has no config.json with model.safetensors or pytorch_model.bin"):
        vitkit.load_pretrained("hf-hub:org/no-weights")


def test_timm_architecture_without_a_preset_is_refused_unless_named(cache, tmp_path):
    source = timm_repo(tmp_path / "src", arch="vit_pico_patch4_16")
    with pytest.raises(UsageError, match="model=NAME"):
        vitkit.load_pretrained(tmp_path / "src")
    model = vitkit.load_pretrained(tmp_path / "src", model="vit_micro_patch4_16")
    images = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(images), source(images))


def test_timm_weights_that_disagree_with_the_preset_are_refused(tmp_path):
    timm_repo(tmp_path / "src", arch="vit_tiny_patch4_32")
    with pytest.raises(UsageError, match="do not match vitkit's vit_tiny_patch4_32: dim 96"):
        vitkit.load_pretrained(tmp_path / "src")


# ---- create_model(pretrained=...) --------------------------------------------------------------------------
def test_create_model_pretrained_by_hub_name_table_and_path(cache, tmp_path, monkeypatch):
    source = timm_repo(tmp_path / "src")
    put_in_cache(cache, "timm/vit_micro_patch4_16.test", tmp_path / "src")
    monkeypatch.setitem(hub.PRETRAINED, "vit_micro_patch4_16", "hf-hub:timm/vit_micro_patch4_16.test")
    images = torch.randn(2, 1, 16, 16)
    for pretrained in (True, "hf-hub:timm/vit_micro_patch4_16.test", tmp_path / "src",
                       tmp_path / "src" / "model.safetensors"):
        model = vitkit.create_model("vit_micro_patch4_16", pretrained=pretrained)
        with torch.no_grad():
            assert torch.equal(model(images), source(images)), pretrained
    fresh_head = vitkit.create_model("vit_micro_patch4_16", pretrained=True, num_classes=3)
    assert fresh_head.head.out_features == 3 and not fresh_head.head.weight.any()
    with pytest.raises(UsageError, match="no known pretrained weights"):
        vitkit.create_model("vit_tiny_patch4_32", pretrained=True)


def test_a_run_records_a_hub_name_pinned_to_its_commit(cache, tmp_path):
    from vitkit.rundir import model_reference

    timm_repo(tmp_path / "src")
    put_in_cache(cache, "timm/vit_micro_patch4_16.test", tmp_path / "src")
    name = "hf-hub:timm/vit_micro_patch4_16.test"
    assert model_reference(name) == f"{name}@{COMMIT}"
    assert model_reference(tmp_path / "src") == str((tmp_path / "src").resolve())


def test_create_model_refuses_a_directory_of_another_architecture(tmp_path):
    vitkit.save_pretrained(vitkit.create_model("vit_micro_patch4_16"), tmp_path / "micro")
    with pytest.raises(UsageError, match="does not hold a vit_tiny_patch4_32"):
        vitkit.create_model("vit_tiny_patch4_32", pretrained=tmp_path / "micro")


# ---- what goes wrong says what to do -----------------------------------------------------------------------
def test_a_repo_missing_from_the_cache_names_the_cache(cache):
    with pytest.raises(UsageError, match=f"not found in the Hugging Face cache at {cache}.*local path"):
        vitkit.load_pretrained("hf-hub:org/absent")


def test_malformed_names_and_missing_extra_are_one_line_errors(cache, monkeypatch):
    for bad in ("hf-hub:justname", "hf-hub:a/b/c", "hf-hub:org/name@"):
        with pytest.raises(UsageError, match="expected hf-hub:ORG/NAME"):
            vitkit.load_pretrained(bad)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as without the extra
    with pytest.raises(UsageError, match=r"pip install 'vitkit\[hub\]'"):
        vitkit.load_pretrained("hf-hub:org/name")


def test_cli_takes_hub_names_wherever_it_takes_a_checkpoint(cache, tmp_path, capsys):
    from PIL import Image

    timm_repo(tmp_path / "src")
    put_in_cache(cache, "timm/vit_micro_patch4_16.test", tmp_path / "src")
    Image.new("L", (16, 16), 128).save(tmp_path / "grey.png")
    assert main(["predict", "--checkpoint", "hf-hub:timm/vit_micro_patch4_16.test", "--top-k", "2",
                 str(tmp_path / "grey.png")]) == 0
    assert "digit" in capsys.readouterr().out
    assert main(["predict", "--checkpoint", "hf-hub:org/absent", str(tmp_path / "grey.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not found in the Hugging Face cache" in err
