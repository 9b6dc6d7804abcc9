"""Data: decoding, datasets (folders, built-ins, WebDataset shards, Hugging Face datasets), seeded loaders,
batched augmentation.

Datasets yield ``(image uint8 (C, H, W), target int)``; `ImageLoader` batches them into
``(images uint8 (B, C, H, W), targets int64 (B,))`` in a seeded, resumable order; `Augment` turns a batch into
normalised float images and soft targets on whatever device the batch is on.

    splits = build_datasets(DataConfig(path="cifar/", channels=3))
    loader = ImageLoader(splits.train, 256, shuffle=True, drop_last=True, seed=0)
    augment = Augment(augment_preset("light"), num_classes=10, mean=..., std=...)
    for images, targets in loader.epoch(0):
        images, soft_targets = augment(images.to(device), targets.to(device), generator)

Shards stream through the same loader (`vitkit.data.stream`: per-rank and per-worker splits, a shuffle
buffer, equal epochs on every rank, mid-epoch resume); `write_shards` makes them from an image folder.
"""

from .builtin import BUILTIN_DATASETS, DEFAULT_BUILTIN, list_builtin_datasets, load_builtin
from .datasets import DataConfig, DataSplits, build_datasets
from .decode import UnreadableImage, decode_image, open_image
from .folder import (
                     IMAGE_EXTENSIONS,
                     ImageFolder,
                     InMemoryImages,
                     SkippedSample,
                     collate_samples,
                     find_samples,
)
from .loader import ImageLoader
from .mix import mix_batch, smooth_one_hot
from .shard_writer import write_shards
from .shards import expand_sources
from .split import split_indices
from .transforms import (
                     AUGMENT_PRESETS,
                     Augment,
                     AugmentConfig,
                     augment_preset,
                     normalize,
                     prepare_eval,
                     resize_images,
)
from .webdataset import WebDatasetImages, open_shards

__all__ = [
    "AUGMENT_PRESETS", "Augment", "AugmentConfig", "augment_preset", "mix_batch", "normalize", "prepare_eval",
    "resize_images", "smooth_one_hot",
    "BUILTIN_DATASETS", "DEFAULT_BUILTIN", "DataConfig", "DataSplits", "IMAGE_EXTENSIONS", "ImageFolder",
    "ImageLoader", "InMemoryImages", "SkippedSample", "UnreadableImage", "build_datasets", "collate_samples",
    "decode_image", "find_samples", "list_builtin_datasets", "load_builtin", "open_image", "split_indices",
    "WebDatasetImages", "expand_sources", "open_shards", "write_shards",
]
