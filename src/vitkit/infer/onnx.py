"""Inference with an ONNX file `vitkit export` wrote: onnxruntime runs the graph, no torch model is built.

The file's ``vitkit.*`` metadata (`vitkit.export.onnx`) says what the graph computes, the input size and the
preprocessing; images go through vitkit's one evaluation preprocessing (`infer.preprocess.Preprocess`, what
`vitkit.transforms_for` returns for the checkpoint), so an image gets the same top-1 label from the file as
from its checkpoint.

    classifier = OnnxClassifier("model.onnx")         # load once
    classifier("cat.jpg")                              # [{"label", "index", "score"}, ...] as the pipeline
    logits = classifier.logits(batch)                  # normalised float images (B, C, H, W) → (B, K)
    rows = classifier.predict(["photos/"], top_k=5)    # what `vitkit predict --onnx` prints

`onnx_engine(model, device, dtype)` is what ``vitkit.pipeline(..., engine="onnx")`` runs: the model exported
once (static size, dynamic batch) into ``$VITKIT_CACHE/onnx`` (default ``~/.cache/vitkit/onnx``), in a folder
named by a hash of its config, weights and the vitkit and torch versions, and reused while it reads back.

Shapes: B batch · C channels · (H, W) image · K classes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import PreprocessConfig, config_from_dict
from ..errors import UsageError, require
from ..export.onnx import INPUT_NAME, export_onnx, read_onnx_metadata, require_onnx_packages
from ..models.registry import config_to_json_dict
from .images import FileOutputs, expand_images, map_images
from .pipeline import top_classes
from .preprocess import Preprocess, split_inputs

log = logging.getLogger(__name__)


def session_options(threads: int | None = None) -> Any:
    """onnxruntime session options for inference: every graph optimisation, `threads` intra-op threads
    (default: torch's thread count, so both runtimes get the same CPU share), and no spin-waiting: by default
    onnxruntime's idle threads keep spinning after a run, which on 2 cores made the next torch call (decoding,
    preprocessing, another model) 30–80 ms slower for a ~2% faster back-to-back run
    (benchmarks/infer_peers.py's method notes)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def providers_for(device: str) -> list[Any]:
    """onnxruntime execution providers for a ``--device`` value: cpu, cuda, cuda:N (that GPU: onnxruntime's
    ``device_id``), or auto (every available one)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "auto":
        return available
    kind, _, index = device.partition(":")
    wanted = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}.get(kind)
    if wanted is None or wanted not in available or (index and (kind != "cuda" or not index.isdigit())):
        raise UsageError(f"onnxruntime cannot run on {device!r} here (providers: {', '.join(available)}); "
                         "use --device cpu")
    if wanted == "CPUExecutionProvider":
        return [wanted]
    return [(wanted, {"device_id": int(index or 0)}), "CPUExecutionProvider"]


class OnnxModel:
    """An exported vitkit model in an onnxruntime session, with its metadata; `run` runs a batch.

    Attributes:
        path: the file. task: "classifier", "encoder", "depth" or "segment". output: the output's name.
        preprocess: the evaluation preprocessing the metadata describes (a `Preprocess`: any image → input).
        labels: a name per output class (classifiers, segmentation). metadata: every ``vitkit.*`` entry.
    """

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        require_onnx_packages("onnxruntime")
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no such ONNX file: {self.path}")
        self.metadata = read_onnx_metadata(self.path)
        self.task = self.metadata["vitkit.task"]
        self.output = self.metadata["vitkit.output"]
        self.labels: list[str] = json.loads(self.metadata.get("vitkit.labels", "[]"))
        self.preprocess = preprocess_from_metadata(self.metadata)
        self.session = ort.InferenceSession(str(self.path), session_options(threads),
                                            providers=providers_for(device))

    def describe(self) -> str:
        size = "×".join(map(str, self.preprocess.image_size))
        return (f"{self.path} (ONNX {self.task}, {size} input, exported by vitkit "
                f"{self.metadata.get('vitkit.version', '?')})")

    def run(self, images: Tensor | np.ndarray) -> np.ndarray:
        """Preprocessed float images (B, C, H, W) → the graph's output as a float32 array."""
        array = images.detach().cpu().float().numpy() if isinstance(images, Tensor) else images
        return self.session.run([self.output], {INPUT_NAME: np.ascontiguousarray(array, np.float32)})[0]

    def forward(self, images: Tensor) -> Tensor:
        """Preprocessed float images (B, C, H, W) → the graph's output as an fp32 tensor on the CPU."""
        return torch.from_numpy(self.run(images))


def preprocess_from_metadata(metadata: dict[str, str]) -> Preprocess:
    """The `Preprocess` an exported file's metadata describes: its PreprocessConfig, input size, channels."""
    config = json.loads(metadata["vitkit.config"])
    channels = (config.get("encoder") or config).get("in_chans", 3)
    pre = config_from_dict(PreprocessConfig, json.loads(metadata["vitkit.preprocess"]))
    h, w = json.loads(metadata["vitkit.input_size"])
    return Preprocess(pre, (int(h), int(w)), int(channels))


class OnnxClassifier(OnnxModel):
    """An exported classifier. Calling it on images (anything `vitkit.transforms_for` reads: paths, Pillow
    images, arrays, tensors, or a list) gives each image's top-k classes as the image-classification pipeline
    does; `logits` runs a preprocessed batch; `predict` gives `vitkit predict`'s rows for image files."""

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None,
                 batch_size: int = 8, top_k: int = 5) -> None:
        """`top_k`: how many classes a call returns unless it says otherwise."""
        super().__init__(path, device, threads)
        if self.task != "classifier":
            raise UsageError(f"{path} holds a vitkit {self.task} model, not a classifier; predict needs a "
                             "classifier (export one with `vitkit export CKPT --format onnx`)")
        require(batch_size >= 1, f"batch_size must be ≥ 1 (got {batch_size})")
        self.batch_size, self.top_k = batch_size, top_k

    @property
    def label_names(self) -> list[str]:
        return self.labels

    def logits(self, images: Tensor | np.ndarray) -> Tensor:
        """Preprocessed float images (B, C, H, W) → fp32 logits (B, K)."""
        return torch.from_numpy(self.run(images))

    def __call__(self, inputs: Any, top_k: int | None = None) -> list:
        """One image → its top-k ``[{"label", "index", "score"}]``; a list of images → one such list each."""
        images, single = split_inputs(inputs)
        require(bool(images), "no images given")
        results = []
        for start in range(0, len(images), self.batch_size):
            logits = self.logits(self.preprocess(images[start:start + self.batch_size]))
            results += top_classes(logits, self.labels, self.top_k if top_k is None else top_k)
        return results[0] if single else results

    def predict(self, images: Sequence[str | Path], top_k: int = 5) -> FileOutputs:
        """Top-k labels per image file (folders: the images under them), as
        `vitkit.infer.images.predict_images` returns them; unreadable files are listed in `unreadable`."""
        require(top_k >= 1, f"top-k must be ≥ 1 (got {top_k})")

        def predict(path: Path) -> dict[str, Any]:
            return {"image": str(path), "top": [{"label": t["label"], "index": t["index"], "prob": t["score"]}
                                                for t in self(path, top_k=top_k)]}

        return map_images(expand_images(images), predict)


def onnx_engine(model: nn.Module, device: torch.device, dtype: torch.dtype) -> OnnxModel:
    """`model` (a classifier) as an onnxruntime session on `device`, from its cached export (`cached_export`).

    Raises:
        UsageError: the onnx packages are missing, or a dtype other than float32 was asked.
    """
    name = str(dtype).removeprefix("torch.")
    require(dtype == torch.float32, f"the onnx engine runs float32 only, not {name}; use engine='torch' "
            f"for {name}")
    require_onnx_packages("onnx", "onnxscript", "onnxruntime")
    return OnnxModel(cached_export(model), device=str(device))


def onnx_cache() -> Path:
    """Where exported models are cached: ``$VITKIT_CACHE/onnx``, by default ``~/.cache/vitkit/onnx``."""
    return Path(os.environ.get("VITKIT_CACHE") or Path.home() / ".cache" / "vitkit") / "onnx"


def model_digest(model: nn.Module) -> str:
    """A hash of what an export of `model` depends on: its config, every weight and buffer, and the vitkit
    and torch versions (a checkpoint overwritten in place gets a new one)."""
    from .. import __version__

    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(config_to_json_dict(model.config), sort_keys=True).encode())
    digest.update(f"vitkit {__version__} torch {torch.__version__}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name} {tuple(tensor.shape)} {tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cached_export(model: nn.Module) -> Path:
    """The ONNX file of `model` in `onnx_cache()`: reused when present and readable, else exported (static
    size, dynamic batch) into a temporary folder that is then renamed into place."""
    folder = onnx_cache() / model_digest(model)
    path = folder / "model.onnx"
    if _readable(path, model):
        return path
    folder.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder, ignore_errors=True)  # an unreadable earlier export
    scratch = Path(tempfile.mkdtemp(prefix=f"{folder.name}.", dir=folder.parent))
    try:
        log.info("exporting %s to ONNX once, into %s", type(model).__name__, folder)
        export_onnx(model, scratch / "model.onnx")
        try:
            scratch.rename(folder)
        except OSError:  # another process put its export there first
            if not _readable(path, model):
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path


def _readable(path: Path, model: nn.Module) -> bool:
    """Whether `path` is a vitkit export of a model with `model`'s config."""
    try:
        config = json.loads(read_onnx_metadata(path)["vitkit.config"])
    except Exception:  # missing, partial or foreign: export again
        return False
    return config == json.loads(json.dumps(config_to_json_dict(model.config)))
