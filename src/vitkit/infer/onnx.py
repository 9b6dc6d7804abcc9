"""Inference with an ONNX file `vitkit export` wrote: onnxruntime runs the graph, no torch model is built.

The file's ``vitkit.*`` metadata (`vitkit.export.onnx`) says what the graph computes, the input size and the
preprocessing; images go through vitkit's one evaluation preprocessing (`infer.preprocess.Preprocess`, what
`vitkit.transforms_for` returns for the checkpoint), so an image gets the same top-1 label from the file as
from its checkpoint.

    classifier = OnnxClassifier("model.onnx")         # load once
    classifier("cat.jpg")                              # [{"label", "index", "score"}, ...] as the pipeline
    logits = classifier.logits(batch)                  # normalised float images (B, C, H, W) → (B, K)
    rows = classifier.predict(["photos/"], top_k=5)    # what `vitkit predict --onnx` prints

Shapes: B batch · C channels · (H, W) image · K classes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import PreprocessConfig, config_from_dict
from ..errors import UsageError, require
from ..export.onnx import INPUT_NAME, read_onnx_metadata, require_onnx_packages
from .images import FileOutputs, expand_images, map_images
from .preprocess import Preprocess, split_inputs


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
                 batch_size: int = 8) -> None:
        super().__init__(path, device, threads)
        if self.task != "classifier":
            raise UsageError(f"{path} holds a vitkit {self.task} model, not a classifier; predict needs a "
                             "classifier (export one with `vitkit export CKPT --format onnx`)")
        self.batch_size = batch_size

    @property
    def label_names(self) -> list[str]:
        return self.labels

    def logits(self, images: Tensor | np.ndarray) -> Tensor:
        """Preprocessed float images (B, C, H, W) → fp32 logits (B, K)."""
        return torch.from_numpy(self.run(images))

    def __call__(self, inputs: Any, top_k: int = 5) -> list:
        """One image → its top-k ``[{"label", "index", "score"}]``; a list of images → one such list each."""
        require(top_k >= 1, f"top_k must be ≥ 1 (got {top_k})")
        images, single = split_inputs(inputs)
        results = []
        for start in range(0, len(images), self.batch_size):
            probs = self.logits(self.preprocess(images[start:start + self.batch_size])).softmax(-1)
            top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
            results += [[{"label": self.labels[i], "index": i, "score": p}
                         for p, i in zip(values, indices, strict=True)]
                        for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True)]
        return results[0] if single else results

    def predict(self, images: Sequence[str | Path], top_k: int = 5) -> FileOutputs:
        """Top-k labels per image file (folders: the images under them), as
        `vitkit.infer.images.predict_images` returns them; unreadable files are listed in `unreadable`."""
        require(top_k >= 1, f"top-k must be ≥ 1 (got {top_k})")

        def predict(path: Path) -> dict[str, Any]:
            return {"image": str(path), "top": [{"label": t["label"], "index": t["index"], "prob": t["score"]}
                                                for t in self(path, top_k=top_k)]}

        return map_images(expand_images(images), predict)
