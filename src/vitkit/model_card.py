"""Model cards: the README.md that `vitkit.save_pretrained` writes beside config.json and the weights.

YAML front matter the Hugging Face Hub reads (``library_name``, ``tags``, ``pipeline_tag``, ``license`` and,
for a run's export, ``datasets``, a ``model-index`` with the held-out figures and the recipe), then what the
model is (architecture, parameters, input, preprocessing), how to load and run it, and how it was made. A
README.md that vitkit did not write (no `MARKER` line) is left alone.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .models.registry import model_type_of
from .rundir import run_of

log = logging.getLogger(__name__)

CARD_NAME = "README.md"
MARKER = "<!-- model card written by vitkit save_pretrained; delete this line to keep your edits -->"
METRIC_NAMES = {"acc1": "top-1 accuracy", "acc5": "top-5 accuracy", "loss": "loss", "miou": "mIoU",
                "pixel_acc": "pixel accuracy", "abs_rel": "AbsRel", "delta1": "δ1"}


@dataclass
class ModelCard:
    """What a card says beyond the model itself: how it was made (a training run fills this in).

    license: an SPDX id or "other" (the default: vitkit cannot know the weights' terms).
    dataset: what it was trained on; metrics: held-out figures by metric name (``acc1`` as a fraction);
    metrics_note: which weights and split the figures are for; recipe: the key training settings;
    base_model: the checkpoint training started from.
    """

    license: str = "other"
    dataset: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    metrics_note: str = ""
    recipe: dict[str, Any] = field(default_factory=dict)
    base_model: str | None = None


def write_model_card(directory: str | Path, config: Any, params: int, card: ModelCard | None = None,
                     format: str = "vitkit") -> Path | None:
    """Write DIRECTORY/README.md for the model `config` describes; None (nothing written) when a README.md
    that vitkit did not write is there. `format` is the directory's layout ("vitkit" or "hf")."""
    path = Path(directory) / CARD_NAME
    if path.is_file() and MARKER not in path.read_text(errors="replace"):
        log.info("%s exists and was not written by vitkit: left as it is", path)
        return None
    card = card or ModelCard()
    kind, tags = model_kind(config)
    meta: dict[str, Any] = {"library_name": "transformers" if format == "hf" else "vitkit",
                            "license": card.license, "tags": ["vitkit", "vision-transformer", *tags]}
    meta["pipeline_tag"] = kind
    if card.dataset:
        meta["datasets"] = [card.dataset]
    if card.base_model and card.base_model.startswith("hf-hub:"):
        meta["base_model"] = card.base_model[len("hf-hub:"):].partition("@")[0]  # a repo id, no revision
    name = _model_name(path.parent)
    if card.metrics:
        meta["model-index"] = [_model_index(name, kind, card)]
    if card.recipe:
        meta["vitkit_recipe"] = card.recipe
    body = [MARKER, f"# {name}", "", *_description(config, params, kind), "",
            *_usage(config, kind, format), *_training(card)]
    text = ("---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"
            + "\n".join(body).rstrip() + "\n")
    if not path.is_file() or path.read_text(errors="replace") != text:  # a re-run changes no file
        path.write_text(text)
    return path


def model_kind(config: Any) -> tuple[str, list[str]]:
    """(Hub pipeline tag, extra tags) of a model config."""
    model_type = model_type_of(config)
    if model_type == "dpt":
        if config.task == "depth":
            return "depth-estimation", ["dpt", "depth-estimation"]
        return "image-segmentation", ["dpt", "semantic-segmentation"]
    if model_type in ("mae", "mpp"):
        name = "masked-autoencoder" if model_type == "mae" else "masked-patch-prediction"
        return "image-feature-extraction", [name, "self-supervised"]
    if getattr(config, "num_classes", 0):
        return "image-classification", ["image-classification"]
    return "image-feature-extraction", ["feature-extraction"]


def _model_name(folder: Path) -> str:
    """A folder's name, with its run's for a run's checkpoint or export (``digits/checkpoints/best``); a
    checkpoint being written in its temporary sibling (``.last.tmp-XXXX``) by the name it will have."""
    folder = folder.resolve()
    final = re.fullmatch(r"\.(.+)\.tmp-.*", folder.name)
    name = final.group(1) if final else folder.name
    run = run_of(folder)
    return f"{run.root.name}/{folder.parent.relative_to(run.root) / name}" if run else name


def _model_index(name: str, kind: str, card: ModelCard) -> dict[str, Any]:
    metrics = [{"type": key, "name": METRIC_NAMES.get(key, key), "value": float(value)}
               for key, value in card.metrics.items()]
    dataset = card.dataset or "unknown"
    return {"name": name, "results": [{"task": {"type": kind}, "dataset": {"name": dataset, "type": dataset},
                                       "metrics": metrics}]}


def _description(config: Any, params: int, kind: str) -> list[str]:
    encoder = getattr(config, "encoder", config)
    model_type = model_type_of(config)
    lines = [f"A vitkit `{model_type}` model for {kind.replace('-', ' ')}, {params / 1e6:.2f} M parameters."]
    if hasattr(encoder, "dim"):
        stem = ("a ResNetV2 trunk (hybrid)" if encoder.backbone is not None
                else "a convolutional stem" if encoder.conv_stem is not None else "patch embedding")
        lines += ["", f"- encoder: ViT, width {encoder.dim}, depth {encoder.depth}, "
                  f"{encoder.num_heads} heads, MLP ratio {encoder.mlp_ratio:g}, "
                  f"patch {encoder.patch_size} with {stem}",
                  f"- input: {encoder.in_chans} × {encoder.image_size[0]} × {encoder.image_size[1]} "
                  "(other sizes that are multiples of the patch work: position embeddings are resampled)"]
    pre = getattr(encoder, "preprocess", None)
    if pre is not None:
        crop = f", centre crop {pre.crop_pct:g}" if pre.crop_pct != 1.0 else ""
        pixels = "grey" if getattr(encoder, "in_chans", 3) == 1 else "RGB"
        lines.append(f"- preprocessing: {pixels} pixels in [0, 1], {pre.interpolation} resize{crop}, "
                     f"mean {list(pre.mean)}, std {list(pre.std)}")
        if pre.label_names:
            shown = ", ".join(pre.label_names[:10]) + (", ..." if len(pre.label_names) > 10 else "")
            lines.append(f"- classes ({len(pre.label_names)}): {shown}")
    return lines


_OUTPUT = {"image-classification": "logits (1, classes)", "depth-estimation": "depth (1, H, W)",
           "image-segmentation": "logits (1, classes, H, W)"}
_COMMAND = {"image-classification": "vitkit predict --checkpoint DIR image.jpg --top-k 5",
            "depth-estimation": "vitkit depth --checkpoint DIR image.jpg --out depth/",
            "image-segmentation": "vitkit segment --checkpoint DIR image.jpg --out masks/"}
_HF_CLASS = {"image-classification": "AutoModelForImageClassification",
             "depth-estimation": "AutoModelForDepthEstimation",
             "image-segmentation": "AutoModelForSemanticSegmentation"}


def _usage(config: Any, kind: str, format: str) -> list[str]:
    encoder = getattr(config, "encoder", config)
    size = getattr(encoder, "image_size", (224, 224))
    shape = ", ".join(map(str, (getattr(encoder, "in_chans", 3), *size)))
    output = _OUTPUT.get(kind, "MAE / MPP outputs (loss, pred, ...)" if hasattr(config, "encoder")
                         else "pooled features (1, width)" if hasattr(config, "dim") else "features")
    python = ["import torch, vitkit", "",
              'model = vitkit.load_pretrained("DIR")   # DIR: this folder, or "hf-hub:ORG/NAME" on the Hub',
              f"images = torch.rand(1, {shape})      # pixels in [0, 1], normalised by the mean / std above",
              f"out = model(images)                     # {output}"]
    if format == "hf":
        cls = _HF_CLASS.get(kind, "AutoModel")
        python += ["", f"from transformers import {cls}   # the folder is in the transformers layout too",
                   f'hf_model = {cls}.from_pretrained("DIR")']
    command = _COMMAND.get(kind, "vitkit finetune --from DIR --data IMAGES/ --out runs/finetune")
    return ["## Usage", "", "```python", *python, "```", "", "```bash", command, "```", ""]


def _training(card: ModelCard) -> list[str]:
    if not (card.metrics or card.recipe or card.dataset):
        return []
    lines = ["## Training", ""]
    if card.dataset:
        start = f", starting from `{card.base_model}`" if card.base_model else ""
        lines.append(f"Data: `{card.dataset}`{start}.")
    if card.metrics:
        note = f" ({card.metrics_note})" if card.metrics_note else ""
        lines += ["", f"| metric{note} | value |", "|---|---|"]
        lines += [f"| {METRIC_NAMES.get(k, k)} | {v:.4g} |" for k, v in card.metrics.items()]
    if card.recipe:
        lines += ["", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | `{v}` |" for k, v in card.recipe.items()]
    return lines
