"""ONNX export of vitkit models, with the preprocessing and labels a runtime needs stored in the file.

What is exported, by what a checkpoint holds (`vitkit.infer.images.model_kind`):

* a ViT or hybrid classifier (a linear probe is folded into one first): images → ``logits`` (B, K);
* a ViT encoder without a head, or the encoder of an MAE / MPP model (no masking): images → ``tokens``
  (B, T, D) after the final norm, as `VisionTransformer.forward_features` returns them;
* a DPT: images → ``depth`` (B, H, W) or segmentation ``logits`` (B, K, H, W).

The graph comes from the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, which needs onnxscript).
The batch is always dynamic; ``dynamic=True`` makes height and width dynamic too (multiples of the patch),
and then the position-embedding resampling is in the graph (an ONNX Resize). The TorchScript exporter
(``dynamo=False``) is not used: it traces the patch grid as constants, so a dynamic-size graph from it fails
on any other size. A dynamic export of a hybrid is slower (about 40 s for a tiny 2-stage trunk on one CPU
core, against seconds for a static one): the exporter reasons symbolically about every TF-SAME padded
convolution of the ResNet trunk.

Metadata (ONNX ``metadata_props``, strings; see `METADATA_KEYS`): ``vitkit.preprocess`` (the encoder config's
`PreprocessConfig` as JSON, every field), ``vitkit.config`` (the model config as ``config.json`` holds it),
``vitkit.task``, ``vitkit.input_size`` ([H, W]), ``vitkit.labels`` (a name per output class, JSON),
``vitkit.output``, ``vitkit.dynamic`` (the dynamic axes) and ``vitkit.version``.

Shapes: B batch · C channels · H, W image sides · T tokens · D width · K classes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import config_to_dict
from ..errors import UsageError
from ..models.dpt import DPT
from ..models.probe import LinearProbe
from ..models.registry import config_to_json_dict
from ..models.vit import VisionTransformer, ViTConfig

log = logging.getLogger(__name__)

FORMATS = ("onnx",)
INSTALL_HINT = "pip install 'vitkit[onnx]'"
INPUT_NAME = "images"
METADATA_KEYS = ("vitkit.version", "vitkit.task", "vitkit.output", "vitkit.input_size", "vitkit.dynamic",
                 "vitkit.preprocess", "vitkit.labels", "vitkit.config")
# position-embedding resampling modes that export to an ONNX Resize (antialiasing does not)
RESIZE_MODES = ("bicubic", "bilinear", "nearest")


class EncoderFeatures(nn.Module):
    """A ViT encoder as a module returning its tokens: images (B, C, H, W) → (B, T, D), final norm applied."""

    def __init__(self, encoder: VisionTransformer) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, images: Tensor) -> Tensor:
        return self.encoder.forward_features(images)


@dataclass
class ExportTarget:
    """What goes into the graph: the module, its task kind, output name, encoder config, label names and the
    patch size (total stride of the patch embedder: the input sides are multiples of it)."""

    module: nn.Module
    task: str
    output: str
    encoder: ViTConfig
    config: Any
    labels: list[str]
    patch_size: int


def export_target(model: nn.Module, labels: list[str] | None = None,
                  source: Path | None = None) -> ExportTarget:
    """The module to export for `model` and how to describe it (see the module docstring). A classifier's
    labels: `labels`, else those saved with it (`saved_label_names`: its config, else the run of `source`),
    else the class indices.

    Raises:
        UsageError: a model vitkit cannot export (anything without a ViT encoder).
    """
    if isinstance(model, LinearProbe):
        model = model.to_classifier()
    if isinstance(model, DPT):
        cfg = model.config
        names = list(cfg.encoder.preprocess.label_names) if cfg.task == "segment" else []
        return ExportTarget(model, cfg.task, "depth" if cfg.task == "depth" else "logits", cfg.encoder, cfg,
                            names, model.encoder.patch_size)
    if isinstance(model, VisionTransformer) and model.config.num_classes > 0:
        cfg = model.config
        from ..infer.images import saved_label_names

        k = cfg.num_classes
        names = labels or saved_label_names(model, source)
        return ExportTarget(model, "classifier", "logits", cfg, cfg,
                            names if len(names) == k else [str(i) for i in range(k)], model.patch_size)
    encoder = model if isinstance(model, VisionTransformer) else getattr(model, "encoder", None)
    if not isinstance(encoder, VisionTransformer):
        raise UsageError(f"cannot export a {type(model).__name__}: vitkit exports ViT and hybrid "
                         "classifiers, ViT encoders (also an MAE's or MPP model's), linear probes and DPT "
                         "models")
    return ExportTarget(EncoderFeatures(encoder), "encoder", "tokens", encoder.config, model.config, [],
                        encoder.patch_size)


def require_onnx_packages(*names: str) -> None:
    """Raise a one-line `UsageError` naming the install command when one of `names` cannot be imported."""
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            raise UsageError(f"ONNX support needs the {name} package: {INSTALL_HINT}") from None


def dynamic_shapes(target: ExportTarget, dynamic: bool) -> dict[str, dict[int, Any]]:
    """torch.export dynamic axes of the input: batch always; height and width (multiples of the patch) when
    `dynamic`. Raises UsageError when the position-embedding resampling cannot be expressed in ONNX."""
    Dim = torch.export.Dim
    axes: dict[int, Any] = {0: Dim("batch", min=1, max=1 << 16)}
    if dynamic:
        enc = target.encoder
        if enc.pos_embed == "learn" and (enc.pos_antialias or enc.pos_interp not in RESIZE_MODES):
            how = "antialiased " if enc.pos_antialias else f"{enc.pos_interp!r} "
            raise UsageError(f"this model resamples position embeddings with {how}interpolation, which ONNX "
                             "Resize cannot express; export without --dynamic (fixed input size)")
        axes[2] = target.patch_size * Dim("grid_h", min=1, max=1024)  # (H, W) = p·(gh, gw)
        axes[3] = target.patch_size * Dim("grid_w", min=1, max=1024)
    return {INPUT_NAME: axes}


def onnx_metadata(target: ExportTarget, dynamic: bool) -> dict[str, str]:
    """The ``metadata_props`` written into the file (all values strings; JSON where structured)."""
    from .. import __version__

    return {
        "vitkit.version": __version__,
        "vitkit.task": target.task,
        "vitkit.output": target.output,
        "vitkit.input_size": json.dumps(list(target.encoder.image_size)),
        "vitkit.dynamic": json.dumps(["batch", "height", "width"] if dynamic else ["batch"]),
        "vitkit.preprocess": json.dumps(config_to_dict(target.encoder.preprocess)),
        "vitkit.labels": json.dumps(target.labels),
        "vitkit.config": json.dumps(config_to_json_dict(target.config)),
    }


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the exporter's noise that says nothing about this model: a warning per torchvision operator
    it would register (torchvision is optional) and torch-internal deprecation warnings."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def export_onnx(model: nn.Module | str | Path, path: str | Path, *, dynamic: bool = False,
                opset: int | None = None, labels: list[str] | None = None) -> Path:
    """Export `model` (a module or anything `vitkit.load_pretrained` reads) to an ONNX file at `path`.

    The model is exported in fp32 on the CPU, in eval mode; the file passes ``onnx.checker.check_model``.

    Args:
        dynamic: dynamic height and width as well as batch (sides stay multiples of the patch).
        opset: ONNX opset version; None = the exporter's default.
        labels: class names for a classifier (default: those saved with it, `saved_label_names`, else the
            class indices).

    Raises:
        UsageError: the onnx / onnxscript packages are missing, the model cannot be exported, or a dynamic
            size was asked of a model whose position-embedding resampling ONNX cannot express.
    """
    require_onnx_packages("onnx", "onnxscript")
    import onnx

    source = None
    if not isinstance(model, nn.Module):
        from ..rundir import resolve_model_path
        from ..weights import load_pretrained

        source = resolve_model_path(model)
        model = load_pretrained(source)
    target = export_target(model, labels, source)
    module = copy.deepcopy(target.module).float().cpu().eval()  # the caller's model stays where it is
    enc = target.encoder
    images = torch.randn(2, enc.in_chans, *enc.image_size)  # batch 2: 0/1 sizes would be specialised
    shapes = dynamic_shapes(target, dynamic)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), quiet_exporter():
        program = torch.onnx.export(module, (images,), dynamo=True, input_names=[INPUT_NAME],
                                    output_names=[target.output], dynamic_shapes=shapes,
                                    opset_version=opset, verbose=False)
    program.model.metadata_props.update(onnx_metadata(target, dynamic))
    # written and checked in a scratch folder beside `path`, then moved into place: an interrupted or
    # failed export never leaves a broken file where a good one was (nor a stray external-data file)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        program.save(str(scratch / path.name))
        onnx.checker.check_model(str(scratch / path.name), full_check=True)
        for part in sorted(scratch.iterdir(), key=lambda f: f == scratch / path.name):  # the graph last
            os.replace(part, path.parent / part.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("exported %s (%s, output %r) to %s", type(model).__name__, target.task, target.output, path)
    return path


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``vitkit.*`` metadata of an exported file (without loading its weights)."""
    require_onnx_packages("onnx")
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    if "vitkit.task" not in meta:
        raise UsageError(f"{path} was not exported by vitkit (no vitkit.* metadata); export it with "
                         "`vitkit export CKPT --format onnx`")
    return meta


def onnx_max_abs_diff(model: nn.Module, path: str | Path, images: Tensor) -> float:
    """max |onnxruntime(images) − torch(images)| in fp32 on the CPU, for `model` and the file exported from
    it (the torch side runs what `export_target` exported: an MAE's encoder features, ...)."""
    require_onnx_packages("onnxruntime")
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        module = copy.deepcopy(export_target(model).module).float().cpu().eval()
        expected = module(images).numpy()
    got = session.run(None, {INPUT_NAME: images.numpy()})[0]
    return float(abs(got - expected).max())
