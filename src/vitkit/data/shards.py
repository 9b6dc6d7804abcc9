"""WebDataset shard sources: naming them, reading them as a stream of samples, and the index beside them.

A *source* names tar shards in one of these forms:

* a local ``.tar`` file, or a directory holding ``*.tar`` files (sorted by name);
* a glob, ``shards/train-*.tar``;
* a brace list, ``shards/train-{000000..000009}.tar`` (ranges keep their zero padding; ``{a,b}`` lists too);
* a ``pipe:`` URL, ``pipe:cat /data/train-{000..009}.tar`` or ``pipe:curl -s https://host/x.tar``: the
  command's standard output is read as the tar stream (braces expand into one command per shard).

A sample is the group of consecutive tar members sharing a *key* (the member name up to the first dot of its
base name): ``n01440764_10026.jpg`` + ``n01440764_10026.cls`` (the class index as text). Nothing here needs
the ``webdataset`` package: members are read with `tarfile` in stream mode, so pipes work like files.

The index (``classes.json``, written by ``vitkit shards``) beside the shards holds the class names, the number
of samples per shard and per class; without one, class names come from a ``classes.txt`` (one per line) or
are the indices, and the shards are counted by reading their tar headers once.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import re
import shlex
import signal
import subprocess
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .folder import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

SHARD_INDEX = "classes.json"
CLASS_NAMES = "classes.txt"
IMAGE_KEYS = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)
LABEL_KEYS = ("cls", "cls.txt", "label")
PIPE = "pipe:"
_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` → ``a-000.tar a-001.tar a-002.tar``; ``{x,y}`` lists; groups expand in turn."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    span = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if span:
        first, last = span.groups()
        width = len(first) if first.startswith("0") or len(first) == len(last) else 0
        step = 1 if int(last) >= int(first) else -1
        items = [str(i).zfill(width) for i in range(int(first), int(last) + step, step)]
    else:
        items = body.split(",")
    head, tail = pattern[:match.start()], pattern[match.end():]
    return [expanded for item in items for expanded in expand_braces(head + item + tail)]


def is_pipe(url: str) -> bool:
    return url.startswith(PIPE)


def looks_like_shards(spec: str) -> bool:
    """True when `spec` names shards (a pipe, a ``.tar`` file/glob/brace list, or a directory of only
    ``.tar`` files) rather than an image folder or a built-in set."""
    if is_pipe(spec) or ("{" in spec or any(c in spec for c in "*?[")) and spec.endswith(".tar"):
        return True
    path = Path(spec)
    if path.is_file():
        return path.suffix == ".tar"
    return path.is_dir() and any(path.glob("*.tar")) and not any(c.is_dir() for c in path.iterdir())


def expand_sources(spec: str) -> list[str]:
    """The shard URLs `spec` names (see the module docstring), in order.

    Raises:
        FileNotFoundError: no shard matches, or a named local shard is missing.
    """
    urls: list[str] = []
    for item in expand_braces(spec):
        path = Path(item)
        if is_pipe(item):
            urls.append(item)
        elif path.is_dir():
            urls.extend(sorted(str(p) for p in path.glob("*.tar")))
        elif any(c in item for c in "*?["):
            urls.extend(sorted(glob.glob(item)))
        else:
            urls.append(item)
    missing = [u for u in urls if not is_pipe(u) and not Path(u).is_file()]
    if not urls or missing:
        detail = f"; missing {missing[:3]}" if missing else ""
        raise FileNotFoundError(f"no WebDataset shards at {spec!r}{detail}; give a .tar file, a directory of "
                                "them, a glob, a brace list (train-{000..009}.tar) or a pipe: command")
    return urls


def local_path(url: str) -> Path | None:
    """The local file a URL reads: the path itself, or the last argument of a ``pipe:`` command that is a
    file (``pipe:cat /data/x.tar`` → /data/x.tar); None when there is none."""
    if not is_pipe(url):
        return Path(url)
    words = shlex.split(url[len(PIPE):])
    return next((Path(w) for w in reversed(words) if Path(w).is_file()), None)


@contextmanager
def open_stream(url: str) -> Iterator[IO[bytes]]:
    """A binary stream of one shard: the file, or a ``pipe:`` command's stdout (its exit status checked)."""
    if not is_pipe(url):
        with open(url, "rb") as f:
            yield f
        return
    proc = subprocess.Popen(url[len(PIPE):], shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield proc.stdout
    finally:
        proc.stdout.close()  # a reader that stops early ends the command with SIGPIPE, which is no failure
        code = proc.wait()
        error = proc.stderr.read().decode(errors="replace").strip()
        proc.stderr.close()
        if code not in (0, -signal.SIGPIPE, 128 + signal.SIGPIPE):
            raise OSError(f"{url!r} exited with status {code}: {error[-300:]}")


def split_name(member: str) -> tuple[str, str]:
    """(key, extension) of a tar member: ``dir/n0144_7.cls.txt`` → (``dir/n0144_7``, ``cls.txt``)."""
    folder, _, base = member.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def iter_samples(url: str) -> Iterator[dict[str, bytes | str]]:
    """Samples of one shard in stored order: ``{"__key__", "__url__", ext: bytes, ...}``."""
    sample: dict = {}
    with open_stream(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, ext = split_name(member.name)
            if sample and sample["__key__"] != key:
                yield sample
                sample = {}
            if not sample:
                sample = {"__key__": key, "__url__": url}
            sample[ext] = tar.extractfile(member).read()
    if sample:
        yield sample


@dataclasses.dataclass
class ShardIndex:
    """What is known about a set of shards before reading them.

    Attributes:
        classes: class names, index = target.
        shard_counts: samples per shard (same order as the URLs), or None when unknown.
        class_counts: samples per class, when the index records them.
    """

    classes: list[str]
    shard_counts: list[int] | None
    class_counts: list[int] | None = None

    @property
    def num_samples(self) -> int | None:
        return sum(self.shard_counts) if self.shard_counts is not None else None


def load_index(urls: Sequence[str], classes: Sequence[str] | None = None, count: bool = True) -> ShardIndex:
    """The `ShardIndex` of `urls`: from ``classes.json`` beside the first shard when it covers them all,
    else by counting (reading every shard's tar headers once; skipped with ``count=False``).

    Raises:
        ValueError: a class index outside the class names.
    """
    where = local_path(urls[0])
    folder = where.parent if where is not None else None
    saved = _read_json_index(folder / SHARD_INDEX) if folder is not None else None
    names = [Path(u).name if not is_pipe(u) else (local_path(u) or Path(u)).name for u in urls]
    if saved is not None and all(n in saved["shards"] for n in names):
        counts = [int(saved["shards"][n]) for n in names]
        return ShardIndex(list(classes or saved["classes"]), counts, saved.get("class_counts"))
    if saved is not None:
        log.warning("%s does not list every shard given; counting the shards instead", folder / SHARD_INDEX)
    counts, largest = count_samples(urls) if count else (None, -1)
    if classes is None:
        names_file = folder / CLASS_NAMES if folder is not None else None
        if saved is not None:
            classes = saved["classes"]
        elif names_file is not None and names_file.is_file():
            classes = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        else:
            classes = [str(i) for i in range(largest + 1)]
    if not classes:
        raise ValueError(f"{urls[0]}: no class names (no {SHARD_INDEX} or {CLASS_NAMES} beside the "
                         "shards, which were not counted); add a classes.txt or unset data.samples_per_epoch")
    if largest >= len(classes):
        raise ValueError(f"{urls[0]}: class index {largest} but only {len(classes)} class names")
    return ShardIndex(list(classes), counts)


def count_samples(urls: Sequence[str]) -> tuple[list[int], int]:
    """(samples with an image per shard, largest class index seen), reading each shard once."""
    counts, largest = [], -1
    if any(is_pipe(u) for u in urls):
        log.info("counting the samples of %d shards by reading them once; set data.samples_per_epoch (or "
                 "write an index with `vitkit shards`) to skip this", len(urls))
    for url in urls:
        n = 0
        for sample in iter_samples(url):
            n += any(k in sample for k in IMAGE_KEYS)
            label = next((sample[k] for k in LABEL_KEYS if k in sample), None)
            if label is not None:
                try:
                    largest = max(largest, int(bytes(label).decode().strip()))
                except ValueError:
                    pass  # reported as a bad sample when read
        counts.append(n)
    return counts, largest


def _read_json_index(path: Path) -> dict | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or "classes" not in data or "shards" not in data:
        raise ValueError(f"{path} is not a vitkit shard index (expected 'classes' and 'shards' keys)")
    return data
