"""Every command that reads image files and a checkpoint: folders expand to their images, an unreadable file
is reported on one line while the others are still written, the same --checkpoint values everywhere, clear
refusals and option checks."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.cli.main import build_parser, main
from vitkit.errors import UsageError
from vitkit.models import VisionTransformer, ViTConfig, create_model
from vitkit.rundir import ACCEPTED, RunDir
from vitkit.viz.reconstruction import save_reconstructions

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Two good images in a nested folder, a file that is not an image, and checkpoints of every kind."""
    root = tmp_path_factory.mktemp("files")
    rng = np.random.default_rng(0)
    (root / "photos" / "sub").mkdir(parents=True)
    for name in ("photos/one.png", "photos/sub/two.jpg"):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(root / name)
    (root / "photos" / "notes.txt").write_text("not an image, and not picked up from the folder")
    (root / "broken.png").write_bytes(b"not a png")
    torch.manual_seed(0)
    vit = VisionTransformer(ViTConfig(image_size=(16, 16), patch_size=4, num_classes=3, dim=16, depth=2,
                                      num_heads=2))
    vitkit.save_pretrained(vit, RunDir(root / "run").checkpoint("best"))  # a run directory, as training makes
    models = {"depth": create_model("dpt_tiny_depth"), "segment": create_model("dpt_tiny_segment"),
              "mae": create_model("mae_vit_tiny_patch4_32", encoder={"depth": 1, "dim": 32, "num_heads": 2},
                                  decoder_dim=16, decoder_num_heads=2, decoder_depth=1)}
    for name, model in models.items():
        vitkit.save_pretrained(model, root / name)
    return {"root": root, "run": root / "run", **{name: root / name for name in models}}


COMMANDS = {  # command → (checkpoint, options, files written per good image)
    "predict": ("run", [], 0),
    "attention": ("run", ["--method", "heads"], 1),
    "figures": ("run", [], 0),
    "depth": ("depth", ["--max-side", "64"], 2),
    "segment": ("segment", ["--max-side", "64"], 2),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_folders_expand_and_a_bad_file_spoils_only_itself(files, tmp_path, capsys, caplog, command):
    checkpoint, options, per_image = COMMANDS[command]
    out = tmp_path / "out"
    args = [command, "--checkpoint", str(files[checkpoint]), str(files["root"] / "photos"),
            str(files["root"] / "broken.png"), str(files["root"] / "gone.png"), *options]
    with caplog.at_level(logging.WARNING):
        code = main(args if command == "predict" else [*args, "--out", str(out)])
    assert code == 1
    stdout, stderr = capsys.readouterr()
    assert "Traceback" not in stderr
    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([p for p in problems if "broken.png" in p]) == 1 and any("gone.png" in p for p in problems)
    assert any("not an image" in p for p in problems) and any("no such file" in p for p in problems)
    lines = stdout.splitlines()
    if command == "predict":
        assert [line.split(":")[0] for line in lines] == [str(files["root"] / "photos" / "one.png"),
                                                          str(files["root"] / "photos" / "sub" / "two.jpg")]
    elif command == "figures":
        assert len(lines) == 3 and all(Path(line).is_file() for line in lines)
    else:
        assert len(lines) == 2 * per_image and all(Path(line).is_file() for line in lines)
        assert {Path(line).name.split("_")[0] for line in lines} == {"one", "two"}


def test_all_good_files_exit_zero(files, tmp_path):
    assert main(["attention", "--checkpoint", str(files["run"]), str(files["root"] / "photos"),
                 "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one_rollout.png", "two_rollout.png"]


def test_reconstruct_skips_a_bad_file(files, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        written = save_reconstructions(files["mae"], [files["root"] / "photos", files["root"] / "broken.png"],
                                       tmp_path)
    assert [p.name for p in written] == ["one_mae.png", "two_mae.png"] and all(p.is_file() for p in written)
    assert [u.path for u in written.unreadable] == [str(files["root"] / "broken.png")]
    assert any("broken.png" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("command, checkpoint, says", [
    ("attention", "resnet", "a ResNetV2 (no ViT encoder)"),
    ("figures", "resnet", "a ResNetV2 (no ViT encoder)"),
    ("depth", "segment", "use `vitkit segment`"),
    ("segment", "depth", "use `vitkit depth`"),
    ("reconstruct", "run", "needs an MAE"),
])
def test_a_model_the_command_cannot_use_is_refused_in_one_line(files, tmp_path, capsys, command, checkpoint,
                                                                 says):
    if checkpoint == "resnet" and not (files["root"] / "resnet").exists():
        from vitkit.models.resnetv2 import ResNetV2, ResNetV2Config

        config = ResNetV2Config(layers=(1, 1), channels=(16, 32), stem_width=8, num_groups=8)
        vitkit.save_pretrained(ResNetV2(config), files["root"] / "resnet")
    path, photos = files["root"] / checkpoint, files["root"] / "photos"
    assert main([command, "--checkpoint", str(path), str(photos), "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_attention_layer_out_of_range_names_the_valid_range(files, tmp_path, capsys):
    from vitkit.viz.overlays import compute_attention_maps

    args = ["attention", "--checkpoint", str(files["run"]), str(files["root"] / "photos"), "--method", "cls",
            "--out", str(tmp_path)]
    assert main([*args, "--layer", "2"]) != 0
    assert "--layer takes -2..1" in capsys.readouterr().err
    assert main([*args, "--layer", "-2"]) == 0
    model = vitkit.load_pretrained(files["run"])
    with pytest.raises(UsageError, match="-2..1"):
        compute_attention_maps(model, torch.zeros(1, 3, 16, 16), "heads", layer=-3)


def test_every_command_says_what_checkpoint_accepts():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in ("eval", "predict", "attention", "figures", "depth", "segment"):
        option = next(a for a in sub.choices[name]._actions if "--checkpoint" in a.option_strings)
        assert ACCEPTED in option.help and "best checkpoint, else its last" in option.help, name
