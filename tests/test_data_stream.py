"""Streaming WebDataset shards: sources, disjoint splits over 2 ranks x 2 workers, equal epochs on every rank,
bad samples skipped and counted, the mid-epoch resume guarantee (exact without a shuffle buffer, at most B
repeats and drops per worker with one), the Trainer checkpointing that position, and batches reaching the
training device as uint8 with the batched augmentation running there."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vitkit.config import PreprocessConfig
from vitkit.data import DataConfig, ImageLoader, InMemoryImages, build_datasets, normalize
from vitkit.data.shard_writer import add_member
from vitkit.data.shards import expand_braces, expand_sources
from vitkit.data.stream import ShardReader
from vitkit.data.webdataset import open_shards
from vitkit.engine import TrainConfig, Trainer
from vitkit.engine.distributed import DistInfo
from vitkit.engine.trainer import as_loader
from vitkit.errors import UsageError
from vitkit.models import VisionTransformer, ViTConfig
from vitkit.objectives import ClassificationObjective


def _png(sample_id: int) -> bytes:
    """A 4×4 image whose first pixel spells the sample id (red = id mod 256, green = id // 256)."""
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (sample_id % 256, sample_id // 256, 0)).save(buf, "PNG")
    return buf.getvalue()


def make_shards(root: Path, counts: list[int], bad: dict[int, str] | None = None) -> Path:
    """Shards ``s-000.tar``, ... holding counts[i] samples with consecutive ids, target id % 3; `bad` maps an
    id to how it is broken: ``truncated`` image, ``nolabel``, or a ``badlabel``."""
    bad = bad or {}
    root.mkdir(parents=True, exist_ok=True)
    sample_id = 0
    for s, n in enumerate(counts):
        with tarfile.open(root / f"s-{s:03d}.tar", "w") as tar:
            for _ in range(n):
                kind, key = bad.get(sample_id), f"{sample_id:05d}"
                image = _png(sample_id)
                add_member(tar, f"{key}.png", image[:30] if kind == "truncated" else image)
                if kind != "nolabel":
                    add_member(tar, f"{key}.cls", b"x" if kind == "badlabel" else str(sample_id % 3).encode())
                sample_id += 1
    (root / "classes.txt").write_text("a\nb\nc\n")
    return root


def ids(images: torch.Tensor) -> list[int]:
    return (images[:, 0, 0, 0].long() + 256 * images[:, 1, 0, 0].long()).tolist()


def epoch_ids(loader: ImageLoader, epoch: int, start: int = 0, stop: int | None = None) -> list[list[int]]:
    out = []
    for images, _ in loader.epoch(epoch, start):
        out.append(ids(images))
        if stop is not None and len(out) == stop:
            break
    return out


def test_sources_dir_glob_brace_and_pipe(tmp_path):
    root = make_shards(tmp_path / "sh", [3, 3, 3, 3])
    names = [str(root / f"s-{i:03d}.tar") for i in range(4)]
    assert expand_sources(str(root)) == names
    assert expand_sources(str(root / "s-*.tar")) == names
    assert expand_sources(str(root / "s-{000..003}.tar")) == names
    assert expand_sources(f"pipe:cat {root}/s-{{000..001}}.tar") == [f"pipe:cat {n}" for n in names[:2]]
    assert expand_braces("a{8..10}{x,y}") == ["a8x", "a8y", "a9x", "a9y", "a10x", "a10y"]
    with pytest.raises(FileNotFoundError, match="missing"):
        expand_sources(str(root / "s-{000..004}.tar"))
    piped = build_datasets(DataConfig(path=f"pipe:cat {root}/s-{{000..003}}.tar"))
    assert piped.classes == ["a", "b", "c"] and len(piped.train) == 12  # classes.txt found beside the files
    seen = sorted(i for batch in epoch_ids(ImageLoader(piped.train, 5), 0) for i in batch)
    assert seen == list(range(12))
    with pytest.raises(OSError, match="exited with status"):
        open_shards(f"pipe:cat {root}/missing.tar")


@pytest.mark.parametrize("num_shards", [8, 2])  # 8 ≥ 4 readers: shards split; 2 < 4: samples split
def test_two_ranks_two_workers_read_disjoint_sets(tmp_path, num_shards):
    data = open_shards(str(make_shards(tmp_path, [40 // num_shards] * num_shards)))
    groups: dict[tuple[int, int], list[int]] = {}
    for rank in range(2):
        reader = ShardReader(data, 3, shuffle=True, seed=5, rank=rank, world_size=2, skips=(0, 0))
        for batch in DataLoader(reader, batch_size=None, num_workers=2, collate_fn=lambda b: b):
            groups.setdefault((rank, batch["worker"]), []).extend(ids(batch["images"]))
    assert sorted(groups) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    every = [i for g in groups.values() for i in g]
    assert sorted(every) == list(range(40))  # disjoint (no id twice) and complete


def test_every_rank_yields_the_same_number_of_batches(tmp_path):
    """Uneven shards (7+3+9+2+5 = 26 samples): every rank stops at 26 // (3 · 2) = 4 full batches; a declared
    samples_per_epoch of 40 gives 6 (readers start their shards over)."""
    data = open_shards(str(make_shards(tmp_path, [7, 3, 9, 2, 5])), shuffle_buffer=4)
    for declared, expected in ((None, 4), (40, 6)):
        data.samples_per_epoch = declared
        for epoch in range(2):
            for rank in range(2):
                loader = ImageLoader(data, 3, shuffle=True, drop_last=True, num_workers=2, rank=rank,
                                     world_size=2)
                batches = epoch_ids(loader, epoch)
                assert len(loader) == expected and [len(b) for b in batches] == [3] * expected


def test_bad_samples_skipped_counted_and_named(tmp_path, caplog):
    bad = {5: "truncated", 11: "nolabel", 17: "badlabel"}
    data = open_shards(str(make_shards(tmp_path, [10, 10])))
    loader = ImageLoader(data, 4, num_workers=2)
    with caplog.at_level(logging.WARNING):
        seen = sorted(i for batch in epoch_ids(loader, 0) for i in batch)
    assert seen == list(range(20))
    make_shards(tmp_path, [10, 10], bad)
    loader = ImageLoader(open_shards(str(tmp_path)), 4, num_workers=2)
    with caplog.at_level(logging.WARNING):
        seen = sorted(i for batch in epoch_ids(loader, 0) for i in batch)
    assert seen == sorted(set(range(20)) - set(bad))
    assert loader.num_skipped == 3 and all(any(f"{i:05d}" in k for k in loader.skipped) for i in bad)
    assert "skipped 3 bad samples" in caplog.text and "00005" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        epoch_ids(loader, 1)
    assert "epoch 1: skipped 3 bad samples" in caplog.text and loader.num_skipped == 3  # distinct samples
    train = ImageLoader(open_shards(str(tmp_path)), 4, drop_last=True, num_workers=2)
    assert [len(b) for b in epoch_ids(train, 0)] == [4] * 5  # bad samples replaced: batches stay full


EVERY_SHARD_STARTS_BAD = {0: "truncated", 7: "nolabel", 14: "badlabel", 21: "truncated", 28: "nolabel",
                          35: "truncated"}  # for shards of 7: every reader meets bad samples from the start


def test_errors_in_workers_arrive_whole(tmp_path):
    """Errors raised in DataLoader workers reach the caller as themselves, without the worker's traceback."""
    from vitkit.data import UnreadableImage

    make_shards(tmp_path, [6] * 4, {i: "truncated" for i in range(24)})
    with pytest.raises(UsageError, match="no readable sample") as refused:
        epoch_ids(ImageLoader(open_shards(str(tmp_path)), 4, drop_last=True, num_workers=2), 0)
    assert "Traceback" not in str(refused.value)
    with pytest.raises(UnreadableImage, match="not an image"):
        epoch_ids(ImageLoader(open_shards(str(tmp_path), strict=True), 4, num_workers=2), 0)


def _resumed(data, k: int, epoch: int = 1) -> list[list[int]]:
    """The first k batches of `epoch`, a checkpoint of the loader's state, then a fresh loader resuming."""
    first = ImageLoader(data, 4, shuffle=True, drop_last=True, num_workers=2, seed=3)
    before = epoch_ids(first, epoch, stop=k)
    state = {"ranks": [first.state_dict()]}
    bad_before = sum(state["ranks"][0]["emitted"]) - 4 * k
    assert bad_before > 0 or data.shuffle_buffer  # the emitted counts include the bad samples
    second = ImageLoader(data, 4, shuffle=True, drop_last=True, num_workers=2, seed=3)
    second.load_state_dict(state)
    return before + epoch_ids(second, epoch, start=k)


@pytest.mark.parametrize("k", [3, 4])  # a resume on an odd batch rotates which worker serves which stream
def test_resume_without_buffer_is_exact(tmp_path, k):
    data = open_shards(str(make_shards(tmp_path, [7] * 6, EVERY_SHARD_STARTS_BAD)))
    full = epoch_ids(ImageLoader(data, 4, shuffle=True, drop_last=True, num_workers=2, seed=3), 1)
    assert _resumed(data, k) == full


def test_uncounted_pipe_shards_with_a_declared_epoch_resume_exactly(tmp_path):
    """No index, a declared samples_per_epoch: nothing is read up front; a resume skips sample by sample."""
    root = make_shards(tmp_path, [7] * 6, EVERY_SHARD_STARTS_BAD)
    splits = build_datasets(DataConfig(path=f"pipe:cat {root}/s-{{000..005}}.tar", samples_per_epoch=20,
                                       shuffle_buffer=0))
    data = splits.train
    assert data.shard_counts is None
    full = epoch_ids(ImageLoader(data, 4, shuffle=True, drop_last=True, num_workers=2, seed=3), 1)
    assert len(full) == 5 and _resumed(data, 3) == full


def test_resume_with_buffer_repeats_and_drops_at_most_b_per_worker(tmp_path):
    buffer, workers = 5, 2
    data = open_shards(str(make_shards(tmp_path, [7] * 6, {9: "nolabel"})), shuffle_buffer=buffer,
                       samples_per_epoch=24)
    full = epoch_ids(ImageLoader(data, 4, shuffle=True, drop_last=True, num_workers=2, seed=3), 1)
    for k in (1, 2, 3):
        resumed = _resumed(data, k)
        assert len(resumed) == len(full) == 6
        for w in range(workers):  # batch j of an epoch comes from worker j mod W, resumed or not
            uninterrupted = [i for j, b in enumerate(full) if j % workers == w for i in b]
            got = Counter(i for j, b in enumerate(resumed) if j % workers == w for i in b)
            repeats = sum(n - 1 for n in got.values())
            dropped = len(set(uninterrupted) - set(got))
            assert len(set(uninterrupted)) == len(uninterrupted)
            assert repeats <= buffer and dropped <= buffer


def test_resume_refuses_another_layout(tmp_path):
    data = open_shards(str(make_shards(tmp_path, [6] * 4)))
    loader = ImageLoader(data, 4, drop_last=True, num_workers=2)
    epoch_ids(loader, 0, stop=1)
    with pytest.raises(UsageError, match="workers 2 → 1"):
        ImageLoader(data, 4, drop_last=True, num_workers=1).load_state_dict({"ranks": [loader.state_dict()]})
    with pytest.raises(UsageError, match="saved by 1 processes"):
        ImageLoader(data, 2, drop_last=True, num_workers=2, rank=1, world_size=2).load_state_dict(
            {"ranks": [loader.state_dict()]})


# ---- through the Trainer -----------------------------------------------------------------------------------
def tiny_model() -> VisionTransformer:
    preprocess = PreprocessConfig((0.5,) * 3, (0.5,) * 3)
    return VisionTransformer(ViTConfig(image_size=(4, 4), patch_size=2, in_chans=3, num_classes=3, dim=16,
                                       depth=1, num_heads=2, preprocess=preprocess))


class Recorder:
    """A train transform that records the sample ids of each batch, checks where and as what the batch
    arrives, and asks the trainer to stop (as SIGTERM would) after `stop_after` steps."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.seen: list[list[int]] = []
        self.stop_after, self.trainer = stop_after, None

    def __call__(self, batch, generator):
        images, targets = batch
        assert images.dtype == torch.uint8 and images.device == self.trainer.device
        assert generator.device == self.trainer.device  # augmentation randomness lives on the device
        self.seen.append(ids(images))
        if self.stop_after is not None and len(self.seen) == self.stop_after:
            self.trainer.stop.requested = "SIGTERM"
        return normalize(images, (0.5,) * 3, (0.5,) * 3), targets


def run(out, data, stop_after=None) -> tuple[Trainer, list[list[int]]]:
    cfg = TrainConfig(epochs=2, batch_size=4, out=str(out), amp=False, device="cpu", log_every=100,
                      report=False)
    cfg.data.num_workers = 2
    recorder = Recorder(stop_after)
    trainer = Trainer(tiny_model(), ClassificationObjective(), data, None, cfg, out, train_transform=recorder)
    recorder.trainer = trainer
    trainer.fit()
    return trainer, recorder.seen


def test_stream_position_checkpointed_and_resumed_exactly(tmp_path):
    data = open_shards(str(make_shards(tmp_path / "shards", [7] * 6, EVERY_SHARD_STARTS_BAD)),
                       shuffle_buffer=0)
    _, full = run(tmp_path / "full", data)
    assert len(full) == 2 * (42 // 4)  # the epoch length counts samples, bad ones included
    trainer, before = run(tmp_path / "cut", data, stop_after=13)  # mid-way through epoch 2, on an odd batch
    assert trainer.interrupted == "SIGTERM"
    state = json.loads((tmp_path / "cut" / "checkpoints" / "last" / "train_state.json").read_text())["data"]
    assert state["ranks"][0]["epoch"] == 1 and state["ranks"][0]["batches"] == 13 - 10
    assert sum(state["ranks"][0]["emitted"]) > 3 * 4  # bad samples count as emitted
    _, after = run(tmp_path / "cut", data)
    assert before + after == full


def test_loader_pins_for_cuda_only():
    cfg = TrainConfig(batch_size=4)
    images = InMemoryImages(torch.zeros(8, 3, 4, 4, dtype=torch.uint8), torch.zeros(8, dtype=torch.long),
                            ["a", "b"])
    assert as_loader(images, cfg, DistInfo(), True, pin_memory=True).pin_memory == torch.cuda.is_available()
    assert not as_loader(images, cfg, DistInfo(), True, pin_memory=False).pin_memory
