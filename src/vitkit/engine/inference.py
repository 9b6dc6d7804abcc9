"""Evaluation and prediction with a trained checkpoint: `vitkit eval` and `vitkit predict` as library
calls."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from ..data.transforms import normalize
from .augment import eval_transform_for
from .metrics import classification_summary

log = logging.getLogger(__name__)


class FlipTTA(nn.Module):
    """Test-time augmentation by mirroring: the mean of ``model(x)`` and ``model(x flipped left-right)``.

    Only for models trained with horizontal flips (``augment.hflip > 0``); digits and text are not
    mirror-symmetric. Costs two forward passes per image.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) → the mean of the two outputs (B, K)."""
        return (self.model(images) + self.model(images.flip(-1))) / 2


@torch.no_grad()
def predict_logits(model: nn.Module, dataset: Any, transform: Callable | None, device: torch.device,
                   amp: bool = False, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """fp32 logits (N, K) and targets (N,) of a dataset of ``(image uint8, target)``, in dataset order."""
    from ..data import ImageLoader

    was_training = model.training
    model.eval()
    logits, targets = [], []
    for images, labels in ImageLoader(dataset, batch_size):
        images, labels = images.to(device), labels.to(device)
        if transform is not None:
            images, labels = transform((images, labels), torch.Generator(device=device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits.append(model(images).float().cpu())
        targets.append(labels.cpu())
    model.train(was_training)
    return torch.cat(logits), torch.cat(targets)


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The model a ``--checkpoint`` value names (see `vitkit.rundir.resolve_model_path`), in eval mode."""
    from ..weights import load_pretrained

    return load_pretrained(checkpoint).to(device).eval()


def evaluate_checkpoint(checkpoint: str | Path, data: str | None = None, *, batch_size: int = 256,
                        device: str = "auto", split: str = "val", amp: bool = False,
                        flip_tta: bool = False) -> dict[str, Any]:
    """Top-1/top-5 and per-class accuracy of a checkpoint on a folder of class subfolders (or a built-in set).

    Args:
        checkpoint: a checkpoint or run directory.
        data: a folder of class subfolders, DATA/ with train/ and val/, or a built-in name; None = the default
            built-in set.
        split: "val" (the held-out split, as in training) or "train".
        flip_tta: average the logits of each image and its mirror image (`FlipTTA`).
    """
    from ..data import DataConfig, build_datasets
    from .distributed import resolve_device

    dev = resolve_device(device)
    model = load_model(checkpoint, dev)
    cfg = model.config
    splits = build_datasets(DataConfig(path=data, channels=cfg.in_chans, image_size=cfg.image_size[0]),
                            progress=False)
    names = list(cfg.preprocess.label_names) or list(splits.classes)
    if list(splits.classes) != names[: len(splits.classes)]:
        raise ValueError(f"the data's classes {splits.classes} differ from the checkpoint's labels {names}")
    dataset = splits.val if split == "val" else splits.train
    if dataset is None:
        raise ValueError(f"{data} has no held-out split; use split='train' to evaluate a folder as a whole")
    logits, targets = predict_logits(FlipTTA(model) if flip_tta else model, dataset,
                                     eval_transform_for(cfg.preprocess), dev, amp, batch_size)
    return classification_summary(logits, targets, names)


def predict_images(checkpoint: str | Path, images: Sequence[str | Path], *, top_k: int = 5,
                   device: str = "auto") -> list[dict[str, Any]]:
    """Top-k labels with probabilities for image files: ``[{"image", "top": [{"label", "index",
    "prob"}]}]``."""
    from ..data import decode_image
    from .distributed import resolve_device

    dev = resolve_device(device)
    model = load_model(checkpoint, dev)
    cfg = model.config
    pre = cfg.preprocess
    results = []
    for path in images:
        image = decode_image(path, channels=cfg.in_chans, size=cfg.image_size[0], crop_pct=pre.crop_pct)
        with torch.no_grad():
            probs = model(normalize(image[None].to(dev), pre.mean, pre.std)).float().softmax(-1)[0]
        top = probs.topk(min(top_k, probs.numel()))
        results.append({"image": str(path), "top": [
            {"label": pre.label_names[i] if i < len(pre.label_names) else str(i), "index": i, "prob": p}
            for p, i in zip(top.values.tolist(), top.indices.tolist())]})
    return results
