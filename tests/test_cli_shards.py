"""`vitkit shards` (image folder → WebDataset shards + index, and its one-line errors), then `vitkit train` on
those shards and on a saved Hugging Face dataset."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitkit.cli.main import main
from vitkit.data.hfdata import pick_columns
from vitkit.errors import UsageError

TINY = ["--model", "vit_tiny_patch2_28", "--set", "data.image_size=8", "--set", "model_args.dim=16",
        "--set", "model_args.depth=1", "--set", "model_args.num_heads=2", "--device", "cpu",
        "--set", "report=false", "--epochs", "1", "--batch-size", "8"]


@pytest.fixture
def folder(tmp_path) -> Path:
    """3 classes x 10 images (JPEG and PNG, 12×10) whose brightness depends on the class."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog", "eel"]):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(10):
            pixels = (rng.integers(0, 60, (10, 12, 3)) + 90 * c).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{i}.{'jpg' if i % 2 else 'png'}")
    return tmp_path / "images"


def test_shards_written_with_index_and_original_bytes(folder, tmp_path, capsys):
    out = tmp_path / "shards"
    assert main(["shards", str(folder), str(out), "--shard-size", "8", "--shuffle", "--seed", "1"]) == 0
    assert "train with: vitkit train --data" in capsys.readouterr().out
    index = json.loads((out / "classes.json").read_text())
    assert index["classes"] == ["cat", "dog", "eel"] and index["class_counts"] == [10, 10, 10]
    assert index["shards"] == {f"shards-{i:06d}.tar": n for i, n in enumerate([8, 8, 8, 6])}
    with tarfile.open(out / "shards-000000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    image_name = next(n for n in members if n.endswith((".jpg", ".png")))
    key = image_name.split(".")[0]
    original = folder / members[f"{key}.path"].decode()
    assert members[image_name] == original.read_bytes()  # bytes kept as they were
    assert int(members[f"{key}.cls"]) == ["cat", "dog", "eel"].index(original.parent.name)


def test_shards_errors_are_one_line_exit_2(folder, tmp_path, capsys):
    out = str(tmp_path / "shards")
    assert main(["shards", str(tmp_path / "nope"), out, "--shard-size", "8"]) == 2
    assert main(["shards", str(folder), out, "--shard-size", "0"]) == 2
    assert main(["shards", str(folder), out, "--shard-size", "8"]) == 0
    assert main(["shards", str(folder), out, "--shard-size", "8"]) == 2  # would overwrite
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3 and "does not exist" in errors[0] and "--overwrite" in errors[2]
    assert main(["shards", str(folder), out, "--shard-size", "16", "--overwrite"]) == 0
    assert sorted(p.name for p in Path(out).glob("*.tar")) == ["shards-000000.tar", "shards-000001.tar"]
    (tmp_path / "split" / "train").mkdir(parents=True)
    (tmp_path / "split" / "val").mkdir()
    assert main(["shards", str(tmp_path / "split"), str(tmp_path / "o2"), "--shard-size", "8"]) == 2
    assert "convert each one" in capsys.readouterr().err


def test_train_on_converted_shards(folder, tmp_path):
    out = tmp_path / "shards"
    assert main(["shards", str(folder), str(out), "--shard-size", "8", "--shuffle"]) == 0
    run = tmp_path / "run"
    code = main(["train", "--data", str(out / "shards-{000000..000003}.tar"), "--out", str(run),
                 "--set", f"data.val_path={out / 'shards-000003.tar'}", "--set", "data.shuffle_buffer=16",
                 "--set", "data.num_workers=2", *TINY])
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 30 // 8 and summary["val"]["num_samples"] == 6
    assert summary["val"]["labels"] == ["cat", "dog", "eel"]


def _saved_hf(folder: Path, where: Path, **extra_columns) -> Path:
    import datasets

    paths = sorted(str(p) for p in folder.rglob("*.*"))
    table = datasets.Dataset.from_dict({"picture": paths, "kind": [Path(p).parent.name for p in paths],
                                        **extra_columns})
    table = table.cast_column("picture", datasets.Image()).class_encode_column("kind")
    table.save_to_disk(str(where))
    return where


def test_train_on_saved_hf_dataset(folder, tmp_path):
    pytest.importorskip("datasets")
    saved = _saved_hf(folder, tmp_path / "hf")
    run = tmp_path / "run"
    assert main(["train", "--data", f"hf:{saved}", "--out", str(run), "--set", "data.val_fraction=0.2",
                 *TINY]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["val"]["labels"] == ["cat", "dog", "eel"] and summary["val"]["num_samples"] == 6
    assert summary["steps"] == 24 // 8


def test_hf_columns_detected_or_refused(folder, tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=["a", "b"]),
                                  "id": datasets.Value("int64")})
    assert pick_columns(features) == ("img", "y", ["a", "b"])
    two = datasets.Features({**features, "thumb": datasets.Image()})
    with pytest.raises(UsageError, match="set data.image_column"):
        pick_columns(two)
    assert pick_columns(two, image_column="thumb")[0] == "thumb"
    with pytest.raises(UsageError, match="no column is the label"):
        pick_columns(datasets.Features({"img": datasets.Image(), "id": datasets.Value("int64")}))
    with pytest.raises(UsageError, match="not a column"):
        pick_columns(features, label_column="nope")
    saved = _saved_hf(folder, tmp_path / "hf2", thumb=[None] * 30)
    assert main(["train", "--data", f"hf:{saved}", "--out", str(tmp_path / "r"), *TINY]) == 0  # thumb: str
    assert main(["train", "--data", f"hf:{tmp_path / 'missing'}", "--out", str(tmp_path / "r2"), *TINY]) == 2
