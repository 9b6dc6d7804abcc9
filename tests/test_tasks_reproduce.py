"""A run is its directory: RUN/config.yaml is the resolved config, and `vitkit train --config RUN/config.yaml
--out NEW` trains the same weights bit for bit (1 thread, deterministic) for every task."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file

from vitkit.cli.main import main

FAST = ["--epochs", "1", "--set", "deterministic=true", "--set", "threads=1", "--set", "report=false",
        "--set", "amp=false"]
VIT = ["--set", "model_args.depth=1", "--set", "model_args.dim=32", "--set", "model_args.num_heads=2"]
MAE = ["--data", "digits", "--batch-size", "128", "--set", "model_args.encoder.depth=1",
       "--set", "model_args.encoder.dim=32", "--set", "model_args.encoder.num_heads=2",
       "--set", "model_args.decoder_dim=16", "--set", "model_args.decoder_depth=1",
       "--set", "model_args.decoder_num_heads=2"]
DENSE = ["--task", "depth", "--batch-size", "8", "--set", "task.train_scenes=16",
         "--set", "task.val_scenes=8", "--set", "task.scene_size=32",
         "--set", "model_args.encoder.depth=2", "--set", "model_args.encoder.dim=32",
         "--set", "model_args.encoder.num_heads=2", "--set", "model_args.block_taps=[0,0,1,1]",
         "--set", "model_args.features=[8,16,32,32]", "--set", "model_args.fusion_dim=16"]


def weights(run) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last" / "model.safetensors"))


def rerun_matches(run, tmp_path) -> dict:
    """Re-run RUN from its config.yaml in a new folder; assert identical final weights; return the config."""
    again = tmp_path / "again"
    assert main(["train", "--config", str(run / "config.yaml"), "--out", str(again)]) == 0
    first, second = weights(run), weights(again)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first), "re-run from config.yaml differs"
    return yaml.safe_load((run / "config.yaml").read_text())


@pytest.fixture(scope="module")
def mae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mae") / "run"
    assert main(["pretrain", "--method", "mae", "--out", str(out), *MAE, *FAST]) == 0
    return out


def test_classify_reproduces_and_records_what_ran(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out is recorded as an absolute path
    assert main(["train", "--out", "run", "--batch-size", "128", *VIT, *FAST]) == 0
    cfg = rerun_matches(tmp_path / "run", tmp_path)
    assert cfg["out"] == str(tmp_path / "run")
    data = cfg["data"]
    assert data["path"] == "builtin:digits" and data["channels"] == 1 and data["val_fraction"] == 0.2
    assert (data["image_size"] == 16 and cfg["model"] == "vit_micro_patch4_16"
            and cfg["task"]["kind"] == "classify")
    # the comparison can fail: another seed trains other weights
    assert main(["train", "--config", "run/config.yaml", "--out", "seed1", "--seed", "1"]) == 0
    assert not torch.equal(weights(tmp_path / "run")["head.weight"],
                           weights(tmp_path / "seed1")["head.weight"])


def test_a_folder_is_recorded_absolute_and_never_shadowed_by_a_builtin(tmp_path, monkeypatch):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "digits" / c).mkdir(parents=True)
        for i in range(12):
            shade = 40 * i if c == "a" else 255 - 20 * i
            Image.new("L", (8, 8), shade).save(tmp_path / "digits" / c / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", "digits", "--out", "run", "--batch-size", "8", *VIT, *FAST]) == 0
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["data"]["path"] == str(tmp_path / "digits")  # the folder, not the built-in set
    monkeypatch.chdir(tmp_path / "run")  # from elsewhere, the config still names the same folder
    rerun_matches(tmp_path / "run", tmp_path)


def test_depth_reproduces_and_rerun_keeps_its_metrics(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *DENSE, *FAST]) == 0
    first = (run / "summary.json").read_text()
    assert main(["train", "--out", str(run), *DENSE, *FAST]) == 0  # a finished run, re-run
    import json

    before, after = json.loads(first), json.loads((run / "summary.json").read_text())
    assert after["val"] == before["val"] and "abs_rel" in after["val"]
    assert after["train_seconds"] == before["train_seconds"]  # the run's time, not the re-run's
    cfg = rerun_matches(run, tmp_path)
    assert cfg["model"] == "dpt_tiny_depth" and cfg["task"]["kind"] == "depth"


def test_pretrain_reproduces_and_records_the_mask_ratio(mae_run, tmp_path):
    cfg = rerun_matches(mae_run, tmp_path)
    assert cfg["task"] == {**cfg["task"], "kind": "pretrain", "method": "mae", "mask_ratio": 0.75}
    assert cfg["augment"]["crop_scale"] == [0.2, 1.0] and cfg["augment"]["hflip"] == 0.5


@pytest.mark.parametrize("kind", ["finetune", "linprobe"])
def test_finetune_and_linprobe_reproduce_from_their_config(mae_run, tmp_path, kind):
    run = tmp_path / "run"
    assert main([kind, "--from", str(mae_run), "--out", str(run), "--data", "digits", "--batch-size", "128",
                 "--label-fraction", "0.5", *FAST]) == 0
    cfg = rerun_matches(run, tmp_path)
    assert cfg["model"] is None and cfg["task"]["init"].startswith(str(mae_run / "checkpoints"))
    assert (cfg["task"]["label_fraction"] == 0.5
            and cfg["task"]["pool"] == ("avg" if kind == "finetune" else "cls"))
