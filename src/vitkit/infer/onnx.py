"""Inference with an ONNX file `vitkit export` wrote: onnxruntime runs the graph, no torch model is built.

The file's ``vitkit.*`` metadata (`vitkit.export.onnx`) says what the graph computes, the input size and the
preprocessing; images go through the same evaluation preprocessing as `vitkit predict` (`storage_size`, then
`model_input`), so an image gets the same top-1 label from the file as from its checkpoint.

    classifier = OnnxClassifier("model.onnx")        # load once
    logits = classifier(images)                       # normalised float images (B, C, H, W) → (B, K)
    rows = classifier.predict(["cat.jpg"], top_k=5)   # what `vitkit predict --onnx` prints

Shapes: B batch · C channels · (H, W) image · K classes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import PreprocessConfig, config_from_dict
from ..data import decode_image
from ..errors import UsageError
from ..export.onnx import INPUT_NAME, read_onnx_metadata, require_onnx_packages
from .images import FileOutputs, model_input, predict_files, storage_size


@dataclass(frozen=True)
class InputSpec:
    """What the evaluation preprocessing reads from a model config: its input size and `PreprocessConfig`."""

    image_size: tuple[int, int]
    preprocess: PreprocessConfig
    in_chans: int = 3


def session_options(threads: int | None = None) -> Any:
    """onnxruntime session options for inference: every graph optimisation, `threads` intra-op threads
    (default: torch's thread count, so both runtimes get the same CPU share)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    return options


def providers_for(device: str) -> list[str]:
    """onnxruntime execution providers for a ``--device`` value: cpu, cuda, or auto (every available one)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "auto":
        return available
    wanted = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}.get(device.split(":")[0])
    if wanted is None or wanted not in available:
        raise UsageError(f"onnxruntime cannot run on {device!r} here (providers: {', '.join(available)}); "
                         "use --device cpu")
    return [wanted, "CPUExecutionProvider"] if wanted != "CPUExecutionProvider" else [wanted]


class OnnxModel:
    """An exported vitkit model in an onnxruntime session, with its metadata; `__call__` runs a batch.

    Attributes:
        path: the file. task: "classifier", "encoder", "depth" or "segment". output: the output's name.
        spec: input size and preprocessing. labels: a name per output class (classifiers, segmentation).
        metadata: every ``vitkit.*`` entry, as stored (strings).
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
        config = json.loads(self.metadata["vitkit.config"])
        in_chans = (config.get("encoder") or config).get("in_chans", 3)
        preprocess = config_from_dict(PreprocessConfig, json.loads(self.metadata["vitkit.preprocess"]))
        self.spec = InputSpec(tuple(json.loads(self.metadata["vitkit.input_size"])), preprocess, in_chans)
        self.session = ort.InferenceSession(str(self.path), session_options(threads),
                                            providers=providers_for(device))

    def describe(self) -> str:
        size = "×".join(map(str, self.spec.image_size))
        return (f"{self.path} (ONNX {self.task}, {size} input, exported by vitkit "
                f"{self.metadata.get('vitkit.version', '?')})")

    def __call__(self, images: Tensor | np.ndarray) -> np.ndarray:
        """Preprocessed float images (B, C, H, W) → the graph's output as a float32 array."""
        array = images.detach().cpu().float().numpy() if isinstance(images, Tensor) else images
        return self.session.run([self.output], {INPUT_NAME: np.ascontiguousarray(array, np.float32)})[0]

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 images (B, C, H, W) → the model's input (`vitkit.infer.images.model_input`)."""
        return model_input(images, self.spec)

    def read_image(self, path: str | Path) -> Tensor:
        """One image file → the model's input (1, C, h, w), decoded as `vitkit predict` decodes it."""
        image = decode_image(path, channels=self.spec.in_chans, size=storage_size(self.spec))  # (C, H, W)
        return self.preprocess(image[None])


class OnnxClassifier(OnnxModel):
    """An exported classifier: `__call__` gives logits (B, K); `predict` gives top-k labels per image file."""

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        super().__init__(path, device, threads)
        if self.task != "classifier":
            raise UsageError(f"{path} holds a vitkit {self.task} model, not a classifier; predict needs a "
                             "classifier (export one with `vitkit export CKPT --format onnx`)")

    @property
    def label_names(self) -> list[str]:
        return self.labels

    def image_logits(self, path: str | Path) -> Tensor:
        """fp32 logits (K,) of one image file."""
        return torch.from_numpy(self(self.read_image(path)))[0]

    def predict(self, images: Sequence[str | Path], top_k: int = 5) -> FileOutputs:
        """Top-k labels per image file, as `vitkit.infer.images.predict_images` returns them."""
        return predict_files(images, self.image_logits, self.label_names, top_k)
