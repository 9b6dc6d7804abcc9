"""Image folders, the seeded split, the loader, built-in sets and the real CIFAR-10 tarball."""

from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.data import (
    DataConfig,
    ImageFolder,
    ImageLoader,
    InMemoryImages,
    UnreadableImage,
    build_datasets,
    find_samples,
    load_builtin,
    split_indices,
)
from vitkit.errors import UsageError

CIFAR_TARBALL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-train.tar.gz"
BAD_KINDS = ("truncated.jpg", "empty.jpg", "text.jpg", "bomb.png")


def _write_good(path: Path, value: int, size=(8, 8)) -> None:
    Image.new("RGB", size, (value, value, value)).save(path)


def _write_bad(path: Path) -> None:
    if path.name == "truncated.jpg":
        buf = io.BytesIO()
        noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(noise).save(buf, "JPEG")
        path.write_bytes(buf.getvalue()[:300])
    elif path.name == "empty.jpg":
        path.write_bytes(b"")
    elif path.name == "text.jpg":
        path.write_text("not an image")
    else:  # bomb.png: large enough to exceed the lowered MAX_IMAGE_PIXELS the tests set
        Image.new("RGB", (200, 200)).save(path)


@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    """root/{cat,dog}/ with 6 good images each, plus every bad kind in dog/; a low bomb limit."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    root = tmp_path / "pets"
    for c, name in enumerate(("dog", "cat")):
        (root / name).mkdir(parents=True)
        for i in range(6):
            _write_good(root / name / f"{i}.png", 40 * c + i)
    for bad in BAD_KINDS:
        _write_bad(root / "dog" / bad)
    (root / "cat" / "notes.txt").write_text("ignored: not an image suffix")
    return root


def test_find_samples_sorted_classes_and_suffixes(folder):
    samples, classes = find_samples(folder)
    assert classes == ["cat", "dog"]
    assert len(samples) == 12 + len(BAD_KINDS)
    assert all(target == (1 if "/dog/" in path else 0) for path, target in samples)
    with pytest.raises(ValueError, match="lack"):
        find_samples(folder, classes=["cat"])


def test_load_skips_and_counts_every_bad_kind(folder, caplog):
    data = ImageFolder.from_root(folder)
    with caplog.at_level(logging.WARNING):
        memory = data.load(workers=0, progress=False)
    assert isinstance(memory, InMemoryImages)
    assert memory.images.shape == (12, 3, 8, 8) and memory.images.dtype == torch.uint8
    assert sorted(Path(s.path).name for s in memory.skipped) == sorted(BAD_KINDS)
    reasons = {Path(s.path).name: s.reason for s in memory.skipped}
    assert "truncated" in reasons["truncated.jpg"].lower() and "0 bytes" in reasons["empty.jpg"]
    assert "decompression bomb" in reasons["bomb.png"]
    for bad in BAD_KINDS:  # each is logged with its path
        assert any(bad in r.getMessage() for r in caplog.records)
    assert memory.targets.tolist().count(0) == 6 and memory.targets.tolist().count(1) == 6


def test_load_in_worker_processes_matches_in_process(folder):
    data = ImageFolder.from_root(folder)
    serial = data.load(workers=0, progress=False)
    from vitkit.data import folder as folder_module

    chunks = [([p for p, _ in data.samples], 3, None, (255, 255, 255), False)]
    parallel = [r for results in folder_module._map_chunks(chunks * 2, workers=2) for r in results]
    assert len(parallel) == 2 * len(data)
    decoded = [r for r in parallel[: len(data)] if not isinstance(r, folder_module.SkippedSample)]
    assert torch.equal(torch.from_numpy(np.stack(decoded)), serial.images)


def test_strict_mode_raises(folder):
    with pytest.raises(UnreadableImage):
        ImageFolder.from_root(folder, strict=True).load(workers=0, progress=False)
    with pytest.raises(UnreadableImage):
        build_datasets(DataConfig(path=str(folder), strict=True, val_fraction=0.0), progress=False)


def test_streaming_loader_skips_and_counts(folder):
    data = ImageFolder.from_root(folder)
    loader = ImageLoader(data, batch_size=4, shuffle=True, seed=3)
    seen = [t for _, targets in loader.epoch(0) for t in targets.tolist()]
    assert len(seen) == 12 and loader.num_skipped == len(BAD_KINDS)
    assert sorted(Path(p).name for p in loader.skipped) == sorted(BAD_KINDS)
    list(loader.epoch(1))
    assert loader.num_skipped == len(BAD_KINDS)  # the same files again are not double counted
    workers = ImageLoader(data, batch_size=4, shuffle=True, seed=3, num_workers=2)
    assert sorted(t for _, y in workers.epoch(0) for t in y.tolist()) == sorted(seen)
    assert workers.num_skipped == len(BAD_KINDS)


def test_mixed_sizes_need_a_storage_size(tmp_path):
    for name, size in (("a", (8, 8)), ("b", (10, 6))):
        (tmp_path / name).mkdir()
        _write_good(tmp_path / name / "0.png", 10, size)
    with pytest.raises(ValueError, match="storage size"):
        ImageFolder.from_root(tmp_path).load(workers=0, progress=False)
    memory = ImageFolder.from_root(tmp_path, size=6).load(workers=0, progress=False)
    assert memory.images.shape == (2, 3, 6, 6)


def test_build_datasets_split_and_train_val_layouts(folder, tmp_path):
    cfg = DataConfig(path=str(folder), val_fraction=0.34, split_seed=1)
    a, b = build_datasets(cfg, progress=False), build_datasets(cfg, progress=False)
    assert a.classes == ["cat", "dog"] and isinstance(a.train, InMemoryImages)
    assert torch.equal(a.val.images, b.val.images) and len(a.val) + len(a.train) == 12
    streamed = build_datasets(DataConfig(path=str(folder), in_memory="never"), progress=False)
    assert isinstance(streamed.train, ImageFolder)
    root = tmp_path / "ds"
    for split, n in (("train", 4), ("val", 2)):
        for name in ("x", "y"):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                _write_good(root / split / name / f"{i}.png", i)
    splits = build_datasets(DataConfig(path=str(root), channels=1), progress=False)
    assert (len(splits.train), len(splits.val)) == (8, 4) and splits.train.images.shape[1] == 1
    alone = build_datasets(DataConfig(path=str(root / "train"), val_fraction=0.25), progress=False)
    assert (len(alone.train), len(alone.val)) == (6, 2)
    with pytest.raises(UsageError, match="built-in"):
        build_datasets(DataConfig(path=str(tmp_path / "nope")))


def test_split_is_deterministic_stratified_and_a_partition():
    targets = np.repeat(np.arange(5), [10, 20, 30, 3, 1])
    train, val = split_indices(targets, 0.2, seed=7)
    again = split_indices(targets, 0.2, seed=7)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert not np.array_equal(val, split_indices(targets, 0.2, seed=8)[1])
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(targets)))
    assert np.bincount(targets[val], minlength=5).tolist() == [2, 4, 6, 1, 0]
    with pytest.raises(ValueError):
        split_indices(targets, 1.0)


def test_loader_order_resume_and_ddp_shards():
    data = InMemoryImages(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).clone(),
                          torch.arange(10), [str(i) for i in range(10)])
    single = ImageLoader(data, batch_size=4, shuffle=True, drop_last=True, seed=5)
    assert len(single) == 2
    epoch0 = [y.tolist() for _, y in single.epoch(0)]
    assert epoch0 == [y.tolist() for _, y in single.epoch(0)]
    assert epoch0 != [y.tolist() for _, y in single.epoch(1)]
    assert [y.tolist() for _, y in single.epoch(0, start_batch=1)] == epoch0[1:]
    ranks = [ImageLoader(data, batch_size=2, shuffle=True, drop_last=True, seed=5, rank=r, world_size=2)
             for r in range(2)]
    steps = zip(*[[y for _, y in r.epoch(0)] for r in ranks], strict=False)
    per_step = [sum((y.tolist() for y in step), []) for step in steps]
    assert per_step == epoch0  # two processes see exactly the samples of the one-process global batch
    ordered = ImageLoader(data, batch_size=4)
    assert [y.tolist() for _, y in ordered] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    padded = [ImageLoader(data, batch_size=3, rank=r, world_size=2) for r in range(2)]
    assert [len(list(p.epoch(0))) for p in padded] == [2, 2]


@pytest.mark.parametrize("name, shape, n_val", [("digits", (1, 8, 8), 359), ("mnist", (1, 28, 28), 1000)])
def test_builtin_datasets_fixed_held_out_split(name, shape, n_val):
    train, val = load_builtin(name, "train"), load_builtin(name, "val")
    assert tuple(train.images.shape[1:]) == shape and len(val) == n_val
    assert train.images.dtype == torch.uint8 and int(train.images.max()) == 255
    assert torch.equal(val.targets, load_builtin(name, "val").targets)
    assert np.bincount(val.targets.numpy()).min() >= n_val // 10 - 1  # stratified
    assert load_builtin(name, "val", channels=3).images.shape[1] == 3
    with pytest.raises(KeyError, match="choose from"):
        load_builtin("imagenet")


def test_default_data_is_digits_and_resizable():
    splits = build_datasets(DataConfig(channels=1))
    assert splits.num_classes == 10 and tuple(splits.train.images.shape[1:]) == (1, 8, 8)
    big = build_datasets(DataConfig(path="mnist", channels=3, image_size=32))
    assert tuple(big.val.images.shape[1:]) == (3, 32, 32)


def _extract(root: Path, limit: int | None) -> Path:
    """Extract the tarball (or its first `limit` files: the stream is read only that far) into `root`."""
    if not CIFAR_TARBALL.is_file():
        pytest.skip(f"CIFAR-10 tarball not found at {CIFAR_TARBALL}")
    with tarfile.open(CIFAR_TARBALL) as tar:
        files = 0
        for member in tar:
            tar.extract(member, root, filter="data")
            files += member.isfile()
            if limit is not None and files >= limit:
                break
    return root


def test_cifar10_tarball_subset_as_an_ordinary_folder(tmp_path):
    root = _extract(tmp_path, limit=3000)
    splits = build_datasets(DataConfig(path=str(root), val_fraction=0.1), progress=False)
    assert splits.train.images.shape[1:] == (3, 32, 32) and len(splits.train) + len(splits.val) == 3000
    assert splits.skipped == [] and 0 < len(splits.val) < 350


@pytest.mark.slow
def test_cifar10_tarball_as_an_ordinary_folder(tmp_path):
    root = _extract(tmp_path, limit=None)
    splits = build_datasets(DataConfig(path=str(root), val_fraction=0.1, split_seed=0), progress=False)
    assert splits.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                              "truck"]
    assert splits.train.images.shape == (45000, 3, 32, 32) and splits.val.images.shape == (5000, 3, 32, 32)
    assert np.bincount(splits.val.targets.numpy()).tolist() == [500] * 10
    assert splits.skipped == []
    # the in-memory copy equals a direct decode of the same file
    samples, _ = find_samples(root / "train")
    _, val_idx = split_indices([t for _, t in samples], 0.1, seed=0)
    first = ImageFolder([samples[val_idx[0]]], splits.classes)[0][0]
    assert torch.equal(first, splits.val.images[0])
