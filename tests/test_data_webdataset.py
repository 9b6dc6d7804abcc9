"""WebDataset shards built with tarfile: read back (no extra needed), skipping a corrupt sample, and trained
on end to end by `vitkit train`."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from vitkit.cli.main import main
from vitkit.data import DataConfig, ImageLoader, build_datasets
from vitkit.data.shard_writer import add_member


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 6), (value, 0, 0)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def shards(tmp_path) -> Path:
    """Two shards of 5 samples (targets i % 3, red = 10·i); sample 7 holds a truncated PNG."""
    for s in range(2):
        with tarfile.open(tmp_path / f"train-{s:03d}.tar", "w") as tar:
            for i in range(5 * s, 5 * s + 5):
                add_member(tar, f"{i:05d}.png", _png(10 * i)[:40] if i == 7 else _png(10 * i))
                add_member(tar, f"{i:05d}.cls", str(i % 3).encode())
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    return tmp_path


def test_shards_read_decode_and_skip(shards):
    splits = build_datasets(DataConfig(path=str(shards / "train-{000..001}.tar"), val_path=str(shards)))
    assert splits.classes == ["a", "b", "c"] and len(splits.train) == 10
    loader = ImageLoader(splits.train, batch_size=4, shuffle=True, seed=1)
    seen = {}
    for images, targets in loader.epoch(0):
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 6, 6)
        for image, target in zip(images, targets, strict=True):
            seen[int(image[0, 0, 0]) // 10] = int(target)
    assert sorted(seen) == [0, 1, 2, 3, 4, 5, 6, 8, 9]  # sample 7 skipped
    assert all(t == i % 3 for i, t in seen.items())
    assert loader.num_skipped == 1 and "00007" in next(iter(loader.skipped))
    ranks = [ImageLoader(splits.train, batch_size=8, rank=r, world_size=2) for r in range(2)]
    per_rank = [sorted(int(i[0, 0, 0]) // 10 for x, _ in r.epoch(0) for i in x) for r in ranks]
    assert sorted(per_rank[0] + per_rank[1]) == [0, 1, 2, 3, 4, 5, 6, 8, 9] and all(per_rank)


def test_strict_shards_raise(shards):
    from vitkit.data import UnreadableImage

    splits = build_datasets(DataConfig(path=str(shards), strict=True))
    with pytest.raises(UnreadableImage):
        list(ImageLoader(splits.train, batch_size=4).epoch(0))


def test_train_cli_on_shards(tmp_path, capsys):
    """`vitkit train --data 'train-{000..001}.tar'` with held-out shards: one epoch, then every held-out
    sample evaluated. Shards carry an ``epoch`` number: the trainer once took them for a loader and failed."""
    for split, shards, per_shard in (("train", 2, 24), ("val", 1, 12)):
        (tmp_path / split).mkdir()
        for s in range(shards):
            with tarfile.open(tmp_path / split / f"{split}-{s:03d}.tar", "w") as tar:
                for i in range(per_shard * s, per_shard * (s + 1)):
                    add_member(tar, f"{i:05d}.png", _png(80 * (i % 3) + i % 7))
                    add_member(tar, f"{i:05d}.cls", str(i % 3).encode())
    out = tmp_path / "run"
    code = main(["train", "--data", str(tmp_path / "train" / "train-{000..001}.tar"), "--out", str(out),
                 "--set", f"data.val_path={tmp_path / 'val'}", "--epochs", "1", "--batch-size", "8",
                 "--model", "vit_tiny_patch2_28", "--set", "data.image_size=8", "--set", "model_args.dim=16",
                 "--set", "model_args.depth=1", "--set", "model_args.num_heads=2", "--device", "cpu",
                 "--set", "report=false"])
    assert code == 0
    assert "held-out accuracy" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 48 // 8 and summary["val"]["num_samples"] == 12
    assert 0.0 <= summary["val"]["acc1"] <= 1.0 and summary["val"]["labels"] == ["0", "1", "2"]
