"""Inference with a trained checkpoint: `vitkit eval` and `vitkit predict` as library calls, and what every
command that reads image files or a checkpoint shares.

* What a checkpoint holds (`model_kind`, `load_model_for`): commands refuse a model they cannot use with one
  line that says what it is and which command takes it.
* Images → model input (`infer.preprocess`: `transforms_for`, `model_input`): eval and predict decode at the
  same storage size and then go through the same function, so an image scores the same in both.
* Image files (`expand_images`, `map_images`): folders expand to the images under them; a file that cannot be
  read is logged on one line and set aside, and the other files are still processed.

Shapes: B batch · C channels · (H, W) image · K classes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, Dataset

from ..config import replace_config
from ..data import (
    DEFAULT_BUILTIN,
    IMAGE_EXTENSIONS,
    DataConfig,
    DataSplits,
    ImageLoader,
    UnreadableImage,
    build_datasets,
)
from ..data.datasets import BUILTIN_PREFIX, builtin_name
from ..engine.checkpoint import STATE_JSON
from ..engine.distributed import resolve_device
from ..engine.metrics import classification_summary
from ..errors import UsageError, require
from ..models.dpt import DPT
from ..models.mae import MaskedAutoencoder
from ..models.mpp import MaskedPatchPrediction
from ..models.probe import LinearProbe
from ..models.vit import VisionTransformer
from ..rundir import RunDir, resolve_model_path, run_of
from .preprocess import Preprocess, model_input, preprocessed, transforms_for

log = logging.getLogger(__name__)

T = TypeVar("T")
SPLITS = ("all", "val", "train")

_FINETUNE = "train a classifier on it first (`vitkit finetune --from CKPT` or `vitkit linprobe --from CKPT`)"
KINDS: dict[str, tuple[str, str]] = {  # kind → (what such a checkpoint is, what to use it with)
    "classifier": ("a ViT classifier", "use `vitkit predict` or `vitkit eval`"),
    "encoder": ("a ViT encoder without a classification head", _FINETUNE),
    "probe": ("a linear probe on a frozen encoder", "use `vitkit predict` or `vitkit eval`"),
    "mae": ("an MAE pretraining model (encoder + pixel decoder, no classifier)",
            f"{_FINETUNE}, or draw its reconstructions with `vitkit reconstruct`"),
    "mpp": ("a masked-patch-prediction pretraining model (no classifier)", _FINETUNE),
    "depth": ("a DPT depth model", "use `vitkit depth`"),
    "segment": ("a DPT segmentation model", "use `vitkit segment`"),
    "other": ("no ViT encoder", "vitkit's inference commands read ViT, hybrid, MAE, MPP and DPT models"),
}
ENCODER_KINDS = tuple(kind for kind in KINDS if kind != "other")  # models with a ViT that sees the image


# ---- what a checkpoint holds -------------------------------------------------------------------------------
def model_kind(model: nn.Module) -> str:
    """The key of `KINDS` that describes `model`."""
    if isinstance(model, DPT):
        return model.config.task
    if isinstance(model, VisionTransformer):
        return "classifier" if model.config.num_classes > 0 else "encoder"
    types = {LinearProbe: "probe", MaskedAutoencoder: "mae", MaskedPatchPrediction: "mpp"}
    return types.get(type(model), "other")


def load_model_for(checkpoint: str | Path, kinds: Collection[str], wanted: str,
                   device: str | torch.device = "cpu",
                   allow_pickle: Sequence[str] = ()) -> tuple[nn.Module, Path]:
    """The model a ``--checkpoint`` value names (see `vitkit.rundir.resolve_model_path`), in eval mode on
    `device`, and the model path it resolved to.

    Raises:
        UsageError: the model's kind is not one of `kinds`; the message says what it is (`wanted` names what
            was needed) and which command takes it.
    """
    from ..weights import load_pretrained

    path = resolve_model_path(checkpoint)
    model = load_pretrained(path, allow_pickle=tuple(allow_pickle))
    if model_kind(model) not in kinds:
        what, instead = describe_model(model)
        raise UsageError(f"{checkpoint} holds {what}, but this command needs {wanted}; "
                         f"{instead.replace('CKPT', str(checkpoint))}")
    return model.to(device).eval(), path


def describe_model(model: nn.Module) -> tuple[str, str]:
    """(what `model` is, which commands take it), for messages that refuse it."""
    kind = model_kind(model)
    what, instead = KINDS[kind]
    return (f"a {type(model).__name__} ({what})" if kind == "other" else what), instead


def describe_checkpoint(path: str | Path) -> str:
    """A model path as the line naming it reads: a run's best checkpoint as ``<path> (best val acc1 0.912,
    epoch 7)``, from its training state (classification runs pick best by val acc1), its last one as ``<path>
    (last, epoch 9)``, an export as ``<path> (the run's exported classifier)``."""
    path = Path(path)
    run = run_of(path)
    folder = path.parent if path.is_file() else path
    if run is None:
        return str(path)
    if folder.name in RunDir.EXPORTS:
        return f"{path} (the run's exported {folder.name})"
    try:
        state = json.loads((folder / STATE_JSON).read_text())
    except (OSError, json.JSONDecodeError):
        state = {}
    epoch = f"epoch {state['epoch']}" if "epoch" in state else "epoch unknown"
    if folder.name == "best" and isinstance(state.get("best"), (int, float)):
        return f"{path} (best val acc1 {state['best']:.4g}, {epoch})"
    lacks_best = folder.name == "last" and not run.checkpoint("best").is_dir()
    return f"{path} ({folder.name}, {epoch}{'; the run saved no best checkpoint' if lacks_best else ''})"


@dataclass
class Classifier:
    """A ViT classifier ready for inference, where it came from, and a name for each of its K outputs."""

    model: VisionTransformer
    path: Path
    label_names: list[str]

    def describe(self) -> str:
        return describe_checkpoint(self.path)


def load_classifier(checkpoint: str | Path, device: str | torch.device = "auto") -> Classifier:
    """The classifier a ``--checkpoint`` value names; a linear probe is folded into a plain ViT classifier.

    Label names: see `saved_label_names`; the class indices where there are none.

    Raises:
        UsageError: the checkpoint holds no classifier (an MAE, an encoder, a DPT); the message says what
            to use instead.
    """
    model, path = load_model_for(checkpoint, ("classifier", "probe"), "a classifier", resolve_device(device))
    if isinstance(model, LinearProbe):
        model = model.to_classifier().eval()
    return Classifier(model, path, saved_label_names(model, path) or
                      [str(i) for i in range(model.config.num_classes)])


def saved_label_names(model: VisionTransformer, path: Path | None) -> list[str]:
    """A classifier's class names: from its config, else from its run's summary (a linear probe's exported
    classifier); [] when neither names every class."""
    k = model.config.num_classes
    names = list(model.config.preprocess.label_names)
    run = run_of(path) if path is not None and len(names) != k else None
    if run is not None:
        names = list(((run.read_summary() or {}).get("val") or {}).get("labels") or [])
    return names if len(names) == k else []


# ---- images → model input (eval and predict alike: `infer.preprocess`) -------------------------------------
def input_transform(preprocess: Preprocess) -> Callable[[Any, torch.Generator], Any]:
    """`model_input` as a batch transform of (images at storage size, targets) for `predict_logits`."""
    def transform(batch: Any, generator: torch.Generator) -> Any:
        images, targets = batch
        return model_input(images, preprocess.config, preprocess.image_size), targets

    return transform


# ---- image files -------------------------------------------------------------------------------------------
class FileOutputs(list):
    """Outputs made from image files: a list with one output per readable file, in input order; `unreadable`
    holds the files that could not be read (`UnreadableImage`: path and reason)."""

    def __init__(self, outputs: Iterable = (), unreadable: Iterable[UnreadableImage] = ()) -> None:
        super().__init__(outputs)
        self.unreadable: list[UnreadableImage] = list(unreadable)


def expand_images(items: Iterable[str | Path]) -> list[Path]:
    """The image files `items` name: a file as given, a folder as the images under it (sorted, recursive).

    Raises:
        UsageError: a folder without images.
    """
    paths: list[Path] = []
    for item in map(Path, items):
        if not item.is_dir():
            paths.append(item)
            continue
        found = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        require(bool(found), f"{item} is a folder without images ({', '.join(IMAGE_EXTENSIONS)})")
        paths += found
    return paths


def map_images(paths: Sequence[Path], fn: Callable[[Path], T]) -> FileOutputs:
    """``fn(path)`` for each image file; a file `fn` cannot read (unreadable or missing) is logged as one
    warning line naming it and why, and listed in `unreadable`, while the others go on."""
    out = FileOutputs()
    for path in paths:
        try:
            out.append(fn(path))
        except (UnreadableImage, FileNotFoundError) as e:
            failure = e if isinstance(e, UnreadableImage) else UnreadableImage(str(path), "no such file")
            log.warning("cannot read %s: %s", failure.path, failure.reason)
            out.unreadable.append(failure)
    return out


def write_each_image(images: Iterable[str | Path], out_dir: str | Path,
                     write: Callable[[Path, Path], Sequence[Path]]) -> FileOutputs:
    """``write(image, OUT/<stem>)`` → the paths it wrote, for each image file `images` name (folders
    expanded; stems made unique by `viz.colormap.output_stems`). Returns every written path; unreadable files
    are listed in `unreadable` (see `map_images`)."""
    from ..viz.colormap import output_stems

    paths = expand_images(images)
    prefixes = dict(zip(paths, (Path(out_dir) / stem for stem in output_stems(paths)), strict=False))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    written = map_images(paths, lambda path: write(path, prefixes[path]))
    return FileOutputs([p for paths_of_one in written for p in paths_of_one], written.unreadable)


# ---- evaluation --------------------------------------------------------------------------------------------
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


def data_config(section: dict[str, Any], channels: int, image_size: int, **fields: Any) -> DataConfig:
    """A `DataConfig` from a run config's ``data`` section (keys DataConfig lacks are ignored), read with the
    model's `channels` at `image_size`, never strict; `fields` override the rest."""
    known = {k: v for k, v in section.items() if k in DataConfig.__dataclass_fields__ and k != "strict"}
    return replace_config(DataConfig(), {**known, "channels": channels, "image_size": image_size,
                                         "strict": False, **fields})


def _data_key(path: str | None) -> str:
    """A data argument as it compares: a built-in name as it is, a path resolved (None: the default set)."""
    path = path or DEFAULT_BUILTIN
    name = builtin_name(path)  # "digits" and a run config's "builtin:digits" are the same set
    return BUILTIN_PREFIX + name if name is not None else str(Path(path).expanduser().resolve())


def eval_splits(section: dict[str, Any], preprocess: Preprocess, **fields: Any) -> DataSplits:
    """The splits of the data a run config's ``data`` section describes, each image decoded as `preprocess`
    reads it: "crop" at its storage size (shorter side, centre square), "squash" from the native size, one
    image at a time (`preprocessed`). Batches of either go through `input_transform(preprocess)`.
    `fields` override the section (e.g. ``in_memory="never"``)."""
    if preprocess.config.resize == "crop":
        cfg = data_config(section, preprocess.channels, preprocess.storage_size, **fields)
        return build_datasets(cfg, progress=False)
    cfg = data_config(section, preprocess.channels, None, **{**fields, "in_memory": "never"})
    splits = build_datasets(cfg, progress=False)
    return DataSplits(preprocessed(splits.train, preprocess),
                      None if splits.val is None else preprocessed(splits.val, preprocess), splits.classes)


def eval_dataset(model_path: Path, data: str | None, split: str | None, preprocess: Preprocess
                 ) -> tuple[Dataset, list[str], str, str]:
    """The images `vitkit eval` scores, decoded as `preprocess` reads them (`eval_splits`): (dataset, class
    names, split, where the data is).

    The checkpoint's own run's data (`data` None, or the same folder or built-in name) is split as in
    training and scored on "val" by default; any other data is scored whole ("all") by default.

    Raises:
        UsageError: no data to default to, an unknown split, or "val" on data with no held-out split.
    """
    run = run_of(model_path)
    section = (run.read_config().get("data") or {}) if run else {}
    require(data is not None or run is not None, f"{model_path} is not inside a run directory, so there is "
            "no training data to score it on; give --data")
    own = run is not None and (data is None or _data_key(data) == _data_key(section.get("path")))
    split = split or ("val" if own else "all")
    require(split in SPLITS, f"unknown split {split!r}; one of {', '.join(SPLITS)}")
    section = section if own else {"path": data, "val_fraction": 0.0}
    splits = eval_splits(section, preprocess)
    where = section.get("path") or f"{DEFAULT_BUILTIN} (built-in)"
    if split == "val":
        require(splits.val is not None, f"{where} has no held-out split (no val/ folder beside train/"
                f"{', and the run held nothing out' if own else ''}); use --split all to score all of it")
        return splits.val, splits.classes, split, where
    if split == "train" or splits.val is None:
        return splits.train, splits.classes, split, where
    return ConcatDataset([splits.train, splits.val]), splits.classes, split, where


def evaluate_checkpoint(checkpoint: str | Path | Classifier, data: str | None = None, *,
                        split: str | None = None, batch_size: int = 256, device: str = "auto",
                        amp: bool = False, flip_tta: bool = False) -> dict[str, Any]:
    """Top-1/top-5 and per-class accuracy of a classifier on a folder of class subfolders or a built-in set.

    Args:
        checkpoint: what `load_classifier` reads (a run directory: its best checkpoint, else last), or one.
        data: a folder of class subfolders, DATA/ with train/ and val/, or a built-in name; None = the data of
            the checkpoint's run.
        split: "all", "val" or "train"; None = "val" on the run's own data, "all" on any other data (see
            `eval_dataset`).
        flip_tta: average the logits of each image and its mirror image (`FlipTTA`).

    Returns:
        `classification_summary` (acc1, acc5, num_samples, per_class_acc, confusion, labels) plus ``split``,
        ``data``, ``checkpoint`` (the model path) and ``checkpoint_description`` (what it is).
    """
    classifier = checkpoint if isinstance(checkpoint, Classifier) else load_classifier(checkpoint, device)
    model, preprocess = classifier.model, transforms_for(classifier.model)
    dataset, classes, split, where = eval_dataset(classifier.path, data, split, preprocess)
    names = classifier.label_names
    if list(classes) != names[: len(classes)]:
        raise UsageError(f"the data's classes {classes} differ from the checkpoint's labels {names}")
    device = next(model.parameters()).device
    logits, targets = predict_logits(FlipTTA(model) if flip_tta else model, dataset,
                                     input_transform(preprocess), device, amp, batch_size)
    return {**classification_summary(logits, targets, names), "split": split, "data": where,
            "checkpoint": str(classifier.path), "checkpoint_description": classifier.describe()}


# ---- prediction --------------------------------------------------------------------------------------------
@torch.no_grad()
def image_logits(model: VisionTransformer, image: Any) -> Tensor:
    """fp32 logits (K,) of one image (see `infer.preprocess.INPUTS`), preprocessed as `evaluate_checkpoint`
    preprocesses its images (`transforms_for`)."""
    device = next(model.parameters()).device
    return model(transforms_for(model)(image)[None].to(device)).float()[0].cpu()


def predict_images(checkpoint: str | Path | Classifier, images: Sequence[str | Path], *, top_k: int = 5,
                   device: str = "auto") -> FileOutputs:
    """Top-k labels with probabilities per image file (folders: the images under them), as
    ``{"image", "top": [{"label", "index", "prob"}]}`` (the image-classification pipeline's results; classes
    without names are their indices); unreadable files are listed in `unreadable`."""
    from .pipeline import ClassificationPipeline

    require(top_k >= 1, f"top-k must be ≥ 1 (got {top_k})")
    classifier = checkpoint if isinstance(checkpoint, Classifier) else load_classifier(checkpoint, device)
    pipe = ClassificationPipeline(classifier.model, device=next(classifier.model.parameters()).device,
                                  path=classifier.path, batch_size=1, top_k=top_k,
                                  label_names=classifier.label_names)

    def predict(path: Path) -> dict[str, Any]:
        return {"image": str(path), "top": [{"label": t["label"], "index": t["index"], "prob": t["score"]}
                                            for t in pipe(path)]}

    return map_images(expand_images(images), predict)
